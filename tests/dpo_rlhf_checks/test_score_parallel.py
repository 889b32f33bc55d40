"""``score`` past one process: data parallel under ``accelerate launch`` (2 CPU processes, gloo), out of memory
(the batch halves and the run goes on), and ``--device-map auto`` (accelerate's big-model loading).

Bound of the 2-process test, fixed before the run: each process computes whole batches of exactly the
sequences a single process batches together (:func:`score.shard_of`), and the gather is a sum in which
every entry comes from one process, so the columns agree to float32 rounding of a completion's sum,
|diff| <= 1e-6 * max(1, |logp|); measured: 0.0 (byte-identical files) on this machine.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import torch  # noqa: E402

from dpo_rlhf_checks import score as S  # noqa: E402
from dpo_rlhf_checks.cli import main as cli_main  # noqa: E402
from dpo_rlhf_checks.integrations import tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N = 20


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tiny.build_scoring_folder(root, N)
    return root


def _read(path):
    return [json.loads(line) for line in open(path)]


def _free_port() -> int:
    with socket.socket() as s:  # torchrun's default 29500 may be taken by another run on this machine
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _columns(rows, names):
    return {k: np.array([r[k] for r in rows], dtype=float) for k in names}


def test_shards_partition_the_batches_and_give_back_the_single_process_batches():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, 37).tolist()
    whole = S.length_sorted_batches(lengths, 6)
    for world in (1, 2, 3, 5):
        shares = [S.shard_of(lengths, 6, r, world) for r in range(world)]
        assert sorted(np.concatenate(shares).tolist()) == list(range(37))  # each sequence exactly once
        for r, share in enumerate(shares):  # re-cut at the batch size: the very batches one process forms
            recut = [share[i:i + 6].tolist() for i in range(0, len(share), 6)]
            assert recut == [b.tolist() for b in whole[r::world]]


def test_two_processes_under_accelerate_launch_equal_one(root, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 on a CPU-only machine: torchrun, 2 processes, gloo.

    (``accelerate launch --cpu --num_processes 2`` starts ONE process in accelerate 1.15 unless MPI is set up
    with --mpirun_hostfile; the README says so.)
    """
    common = ["--model", str(root / "pol"), "--ref-model", str(root / "ref"), "--reward-model", str(root / "rm"),
              "--data", str(root / "data.jsonl"), "--batch-size", "3", "--no-progress", "--device", "cpu"]
    assert cli_main(["score", *common, "--out", str(tmp_path / "one.jsonl")]) == 0
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "dpo_rlhf_checks.score", *common,
           "--out", str(tmp_path / "two.jsonl"), "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["settings"]["processes"] == 2
    per_process = report["timing"]["sequences_per_process"]
    assert sum(per_process) == 2 * (2 * N)  # policy and reference, each sequence by exactly one process
    assert min(per_process) >= 2 * N // 2 - 2 * 6  # round-robin over longest-first batches: balanced to a batch
    names = ("ref_chosen_logps", "ref_rejected_logps", "chosen_logps", "rejected_logps", "chosen_reward",
             "rejected_reward", "chosen_length", "rejected_length", "prompt_length")
    one, two = _read(tmp_path / "one.jsonl"), _read(tmp_path / "two.jsonl")
    assert [r["pair"] for r in two] == list(range(1, N + 1))  # one output, in input order
    a, b = _columns(one, names), _columns(two, names)
    for k in names:
        diff = np.abs(a[k] - b[k])
        assert np.all(diff <= 1e-6 * np.maximum(1.0, np.abs(a[k]))), (k, diff.max())
    assert "2 processes" in proc.stderr


class _OOMAbove:
    """A forward pre-hook that raises a CUDA-style out-of-memory error for batches above ``limit`` sequences."""

    def __init__(self, limit):
        self.limit, self.seen = limit, []

    def __call__(self, module, args, kwargs):
        n = kwargs["input_ids"].shape[0]
        self.seen.append(n)
        if n > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (batch of {n})")


def test_out_of_memory_halves_the_batch_and_goes_on(root):
    model, tok = tiny.build_causal_lm(seed=0)
    rows = tiny.preference_rows(N, seed=3)
    cfg = S.ScoreConfig(batch_size=8, max_length=None)
    base = S.score_pairs(model, tok, rows, config=cfg, device=torch.device("cpu"))
    hook = _OOMAbove(5)
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    told = []
    try:
        res = S.score_pairs(model, tok, rows, config=cfg, device=torch.device("cpu"), log=told.append)
    finally:
        handle.remove()
    assert hook.seen[:3] == [16, 8, 4]  # 16 sequences fail, 8 fail, 4 run
    assert max(hook.seen[2:]) <= 4
    assert res.settings["batch_sequences_used"] == 4 and res.settings["batch_sequences"] == 16
    assert told == ["model: out of memory at a batch of 16 sequences: retrying at 8",
                    "model: out of memory at a batch of 8 sequences: retrying at 4"]
    for k in ("ref_chosen_logps", "ref_rejected_logps"):
        np.testing.assert_allclose(res.columns[k], base.columns[k], rtol=0, atol=1e-5)


def test_out_of_memory_is_reported_by_the_command(root, tmp_path, monkeypatch, capsys):
    load = S.load_causal_lm
    limit = {"n": 3}

    def load_with_small_memory(*a, **k):
        model, tok = load(*a, **k)
        model.register_forward_pre_hook(_OOMAbove(limit["n"]), with_kwargs=True)
        return model, tok

    monkeypatch.setattr(S, "load_causal_lm", load_with_small_memory)
    args = ["score", "--model", str(root / "ref"), "--data", str(root / "data.jsonl"), "--out",
            str(tmp_path / "o.jsonl"), "--no-progress", "--batch-size", "4"]
    assert cli_main(args) == 0
    cap = capsys.readouterr()
    assert "score: model: out of memory at a batch of 8 sequences: retrying at 4" in cap.err
    assert "out of memory: the batch was halved to 2 sequences (asked: 8, 4 pairs)" in cap.out
    assert len(_read(tmp_path / "o.jsonl")) == N
    limit["n"] = 0  # not even one sequence fits: one line, exit 2
    assert cli_main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: out of memory even at a batch of one")


def test_device_map_auto_reaches_from_pretrained(root, tmp_path, monkeypatch, capsys):
    import transformers

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def recording(cls, *a, **k):
        seen.append(k.get("device_map"))
        return real(cls, *a, **k)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(recording))
    base = ["score", "--model", str(root / "pol"), "--ref-model", str(root / "ref"), "--data",
            str(root / "data.jsonl"), "--no-progress", "--device", "cpu"]
    assert cli_main(base + ["--out", str(tmp_path / "plain.jsonl")]) == 0
    assert cli_main(base + ["--out", str(tmp_path / "mapped.jsonl"), "--device-map", "auto"]) == 0
    assert seen == [None, None, "auto", "auto"]
    assert "device map auto (cpu)" in capsys.readouterr().err
    names = ("ref_chosen_logps", "chosen_logps", "rejected_logps")
    a, b = _columns(_read(tmp_path / "plain.jsonl"), names), _columns(_read(tmp_path / "mapped.jsonl"), names)
    for k in names:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6)


def test_device_map_refused_under_data_parallel(root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(S, "_parallel_state", lambda device: (S.Parallel(0, 2), None))
    assert cli_main(["score", "--model", str(root / "ref"), "--data", str(root / "data.jsonl"), "--out",
                     str(tmp_path / "o.jsonl"), "--device-map", "auto", "--no-progress"]) == 2
    assert "--device-map auto spreads one model" in capsys.readouterr().err
