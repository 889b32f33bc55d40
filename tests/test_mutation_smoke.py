"""Runs tests/mutation_smoke.py (slow: a dozen runs of the command line in a copy of the repository)."""

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_mutation_smoke():
    script = Path(__file__).with_name("mutation_smoke.py")
    proc = subprocess.run([sys.executable, str(script), "--no-lm"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all cases behave" in proc.stdout
