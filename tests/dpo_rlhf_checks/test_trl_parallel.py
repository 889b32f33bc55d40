"""ScoreAuditCallback in a 2-process TRL run (accelerate launch, gloo on CPU): every process scores its share
of the eval set, the main process alone audits and writes; the audit covers every pair once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("callback_2proc.py")


@pytest.mark.slow
def test_callback_scores_on_every_rank_and_audits_once(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), str(SCRIPT), str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=400)
    assert one.returncode == 0, one.stderr[-3000:]
    r0 = json.loads((tmp_path / "two" / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "two" / "rank1.json").read_text())
    alone = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert r0["world"] == r1["world"] == 2 and alone["world"] == 1
    assert r0["sequences_scored"] + r1["sequences_scored"] == 2 * 24 and min(r0["sequences_scored"],
                                                                             r1["sequences_scored"]) > 0
    assert r1["audit"] is None  # audited once, on the main process
    assert r0["audit"]["n_pairs"] == 24
    assert sorted(p.name for p in (tmp_path / "two").glob("audit-step*.json")) == ["audit-step2.json"]
    # the sharded scoring of the policy equals a one-process scoring of the same final policy
    assert r0["audit"]["policy_ranking_accuracy"] == pytest.approx(r0["policy_ranking_accuracy_alone"], abs=1e-12)
    assert alone["audit"]["policy_ranking_accuracy"] == pytest.approx(alone["policy_ranking_accuracy_alone"],
                                                                      abs=1e-12)
    # the frozen reference gives the same numbers in both runs (the training differs: global batch 8 against 4)
    assert r0["audit"]["reference_ranking_accuracy"] == alone["audit"]["reference_ranking_accuracy"]
