"""benchmarks/peak_run.py: a command's own peak memory, not its parent's (how the benchmarks measure memory)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from peak_run import run_measured  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM needs Linux /proc")


def test_the_peak_is_the_commands_own(tmp_path):
    script = tmp_path / "alloc.py"
    script.write_text("import sys\nimport numpy as np\nx = np.ones(int(sys.argv[1]) * 2**17)  # MB\n"
                      "print(int(x.sum()))\nsys.exit(int(sys.argv[2]))\n")
    ballast = np.ones(400 * 2**17)  # 400 MB in this (the parent) process: a forked child's ru_maxrss would count it
    small, peak_small = run_measured([str(script), "10", "0"], tmp_path)
    big, peak_big = run_measured([str(script), "300", "3"], tmp_path)
    assert small.returncode == 0 and small.stdout.strip() == str(10 * 2**17)
    assert big.returncode == 3  # the script's exit code is kept
    assert peak_big - peak_small == pytest.approx(290e6 * 1.048576, rel=0.1)
    assert peak_small < 350e6 < ballast.nbytes
