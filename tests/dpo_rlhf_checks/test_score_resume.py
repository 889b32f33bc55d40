"""Long ``score`` jobs lose nothing (issue 20, section 3): the output is written a chunk at a time with a
progress record; a run stopped by SIGINT, SIGTERM or SIGKILL leaves whole lines and says how to resume,
and ``--resume`` gives a file byte-identical to a run that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from dpo_rlhf_checks import score as S  # noqa: E402
from dpo_rlhf_checks.cli import main as cli_main  # noqa: E402
from dpo_rlhf_checks.integrations import tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N, CHUNK = 30, 4  # 8 chunks


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tiny.build_scoring_folder(root, N)
    args = _args(root, root / "whole.jsonl")
    assert cli_main(["score", *args]) == 0  # the uninterrupted run
    return root


def _args(root, out):
    return ["--model", str(root / "pol"), "--ref-model", str(root / "ref"), "--reward-model", str(root / "rm"),
            "--data", str(root / "data.jsonl"), "--out", str(out), "--batch-size", "3", "--chunk-pairs", str(CHUNK),
            "--no-progress"]


def _whole_lines(path):
    data = Path(path).read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.decode().splitlines()]


def test_sigint_in_process_then_resume_is_byte_identical(root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "o.jsonl"
    calls = {"n": 0}
    real = S.sequence_logps

    def interrupt_at_the_7th(*a, **k):  # 2 models x 3 chunks done, then Ctrl-C in the 4th chunk
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(S, "sequence_logps", interrupt_at_the_7th)
    assert cli_main(["score", *_args(root, out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: interrupted (SIGINT): 12 of {N} pairs are in {out} (whole lines); rerun the same "
                       "command with --resume to score the rest")
    assert [r["pair"] for r in _whole_lines(out)] == list(range(1, 13))
    record = json.loads(S.progress_path(out).read_text())
    assert record["chunks_done"] == 3 and record["bytes"] == out.stat().st_size
    monkeypatch.setattr(S, "sequence_logps", real)
    assert cli_main(["score", *_args(root, out), "--resume"]) == 0
    assert "resuming at pair 13 of 30 (chunk 4 of 8)" in capsys.readouterr().err
    assert out.read_bytes() == (root / "whole.jsonl").read_bytes()
    assert not S.progress_path(out).exists()  # finished: the record is gone


def test_lines_written_after_the_last_record_are_cut_on_resume(root, tmp_path):
    """A crash between writing a chunk and saving the record: the record is the truth."""
    out = tmp_path / "o.jsonl"
    whole = (root / "whole.jsonl").read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(whole[:8]) + whole[8][:25])  # 2 chunks, then part of a line
    fp_run = tmp_path / "fp.jsonl"
    args = _args(root, fp_run)
    # a real record for this command: interrupt a run after 2 chunks
    calls = {"n": 0}
    real = S.sequence_logps

    def stop(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    S.sequence_logps = stop
    try:
        assert cli_main(["score", *args]) == 130
    finally:
        S.sequence_logps = real
    record = json.loads(S.progress_path(fp_run).read_text())
    assert record["chunks_done"] == 2
    S.progress_path(out).write_text(json.dumps(record))
    assert cli_main(["score", *_args(root, out), "--resume"]) == 0
    assert out.read_bytes() == (root / "whole.jsonl").read_bytes()


def test_resume_refuses_another_run_and_a_missing_record(root, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    assert cli_main(["score", *_args(root, out), "--resume"]) == 2
    assert "no progress record" in capsys.readouterr().err
    S.progress_path(out).write_text(json.dumps({"format": S.PROGRESS_FORMAT, "fingerprint": "x",
                                                "settings": {"batch_size": 5}}))
    out.write_text("")
    assert cli_main(["score", *_args(root, out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --resume: ") and "is from a different run (settings differ:" in err[-1]
    assert out.read_bytes() == b""  # untouched


def _slow_run(root, out, delay):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(Path(__file__).with_name("score_slow_run.py")), str(delay), *_args(root, out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_chunks(proc, out, k, timeout=120):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        path = S.progress_path(out)
        if path.exists():
            try:
                if json.loads(path.read_text())["chunks_done"] >= k:
                    return
            except (ValueError, KeyError):
                pass  # renamed into place between two reads
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run did not reach chunk %d" % k)


@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -9),  # in CI; the other two ~25 s each on a busy machine
                                       pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow),
                                       pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)])
def test_a_killed_subprocess_resumes_to_the_same_bytes(root, tmp_path, sig, code):
    out = tmp_path / "o.jsonl"
    proc = _slow_run(root, out, 0.3)
    _wait_for_chunks(proc, out, 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    if sig != signal.SIGKILL:
        assert err.strip().splitlines()[-1].startswith("error: interrupted (")
        assert "--resume" in err and "Traceback" not in err
    kept = _whole_lines(out)  # whole lines only
    assert 2 * CHUNK <= len(kept) < N
    assert cli_main(["score", *_args(root, out), "--resume"]) == 0
    assert out.read_bytes() == (root / "whole.jsonl").read_bytes()


def test_ctrl_c_while_loading_is_one_line(root, tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "load_causal_lm", interrupted)
    assert cli_main(["score", *_args(root, tmp_path / "o.jsonl")]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["error: interrupted (SIGINT) before any pair was written"]
