"""Benchmark of ``paper_checks.py score``: pairs/s and tokens/s, memory, and the scoring loop beside a bare
batched forward pass over the same tokens.

    python benchmarks/bench_score.py [--models tiny gpt2-124m] [--pairs N] [--batch-size B] [--device D] [--dtype T]
    # on a GPU:  python benchmarks/bench_score.py --device cuda --dtype bfloat16 --pairs 1024 --batch-size 32

Models are built locally from a config with random weights (no download): ``tiny`` (2 layers, width 32,
a 60-token vocabulary) and ``gpt2-124m`` (GPT-2 small: 12 layers, width 768, 12 heads, vocabulary
50257, 124M parameters). The data are random sentences over the tiny word-level vocabulary (seed 0),
prompts of 20-60 words and completions of 20-120, about 150 tokens per sequence. Speed matters for the
LM's forward pass, not for which token ids it sees.

For each model: (1) :func:`dpo_rlhf_checks.score.score_pairs` end to end (tokenize, batch, forward,
log-softmax, sum) as one reference model; (2) :func:`score.sequence_logps`, the scoring loop alone; (3) a
bare ``model(input_ids, attention_mask)`` over exactly the same padded batches, building the batches
outside the timer. The ratio (2)/(3) is the loop's overhead; the target is <= 1.5. Memory: peak RSS of the
process (CPU) or ``torch.cuda.max_memory_allocated`` (GPU). Timings on a shared machine vary; the
best of ``--repeats`` runs is reported.

``--processes 1 2``: the command itself, once per process count, as a user runs it: ``python -m
dpo_rlhf_checks.score`` for 1 and ``accelerate launch --multi_gpu --num_processes P -m dpo_rlhf_checks.score``
for P > 1 (on a machine without GPUs that is torchrun with gloo on CPU; ``--cpu`` would start one process).
Each process gets ``--threads`` torch threads. Reported: the scoring time the command measures itself
(forward passes and the gather; ``timing.logps_s``), the whole command's wall time (Python start, imports,
model loading, process group), and whether the outputs are byte-identical.

``--resume``: the command run whole, and interrupted after 4 of 8 chunks then resumed with ``--resume``;
the extra time of the pair of runs and whether the outputs are byte-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, like bench_lm.py

from dpo_rlhf_checks import score as S
from dpo_rlhf_checks.integrations import tiny

MODELS = {
    "tiny": {},
    "gpt2-124m": {"vocab_size": 50257, "n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024},
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_forward(model, seqs: S.Sequences, batch_size: int, pad_id: int, device) -> float:
    """Seconds of model(input_ids, attention_mask) over the same length-sorted padded batches; padding untimed."""
    batches = [S._pad_right([seqs.ids[i] for i in idx], pad_id, device)
               for idx in S.length_sorted_batches([len(s) for s in seqs.ids], 2 * batch_size)]
    _sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        for ids, mask in batches:
            model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    _sync(device)
    return time.perf_counter() - t


def compare_processes(args, counts: list[int]) -> int:
    """Run the score command with 1, 2, ... processes on the same data; report speed and equality."""
    root = Path(__file__).resolve().parents[1]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        tmp = Path(tmp)
        tok = tiny.build_tokenizer()
        for name in args.models:
            tiny.build_causal_lm(tmp / name, tokenizer=tok, seed=0, **MODELS[name])
            n = args.pairs or (256 if name == "tiny" else 32)
            data = tiny.write_jsonl(tmp / f"{name}.jsonl", tiny.preference_rows(
                n, seed=0, prompt_words=(20, 60), completion_words=(20, 120)))
            outputs = {}
            for p in counts:
                out = tmp / f"{name}-{p}.jsonl"
                score = ["-m", "dpo_rlhf_checks.score", "--model", str(tmp / name), "--data", str(data), "--out",
                         str(out), "--batch-size", str(args.batch_size), "--dtype", args.dtype, "--device",
                         args.device, "--max-length", "0", "--no-progress", "--json"]
                if p == 1:
                    cmd = [sys.executable, *score]
                else:
                    with socket.socket() as sock:
                        sock.bind(("127.0.0.1", 0))
                        port = sock.getsockname()[1]
                    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                           str(p), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "--main_process_port", str(port), *score]
                env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS=str(args.threads))
                best = None
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    wall = time.perf_counter() - t
                    if proc.returncode != 0:
                        print(proc.stderr[-2000:], file=sys.stderr)
                        return 1
                    timing = json.loads(proc.stdout)["timing"]
                    if best is None or timing["logps_s"] < best[0]:
                        best = (timing["logps_s"], wall, timing["sequences_per_process"])
                outputs[p] = out.read_bytes()
                logps_s, wall, per = best
                print(f"{name}, {n} pairs, {p} process(es) x {args.threads} thread(s): scoring {logps_s:.2f} s = "
                      f"{n / logps_s:.1f} pairs/s; whole command {wall:.1f} s; sequences per process {per}")
            same = all(o == outputs[counts[0]] for o in outputs.values())
            failures += not same
            print(f"  outputs byte-identical across process counts: {same}")
    return 0 if failures == 0 else 1


def resume_overhead(args) -> int:
    """The score command run whole, and run interrupted at half its chunks then resumed: the extra CPU time, and
    whether the two outputs are byte-identical. In-process, so the numbers leave out Python's start-up."""
    from dpo_rlhf_checks.cli import main as cli_main

    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        tmp = Path(tmp)
        tok = tiny.build_tokenizer()
        for name in args.models:
            tiny.build_causal_lm(tmp / name, tokenizer=tok, seed=0, **MODELS[name])
            n = args.pairs or (256 if name == "tiny" else 32)
            chunk = max(1, n // 8)
            data = tiny.write_jsonl(tmp / f"{name}.jsonl", tiny.preference_rows(
                n, seed=0, prompt_words=(20, 60), completion_words=(20, 120)))

            def run(out, *extra):
                argv = ["score", "--model", str(tmp / name), "--data", str(data), "--out", str(out), "--batch-size",
                        str(args.batch_size), "--max-length", "0", "--no-progress", "--chunk-pairs", str(chunk),
                        "--device", args.device, "--dtype", args.dtype, *extra]
                t = time.process_time()  # CPU time of this process: on a shared machine, steadier than wall time
                code = cli_main(argv)
                return code, time.process_time() - t

            run(tmp / "warm-up.jsonl")  # first-call costs (imports, allocator) out of the comparison
            code, whole = run(tmp / "whole.jsonl")
            real, calls = S.sequence_logps, {"n": 0}

            def stop_at_half(*a, **k):
                calls["n"] += 1
                if calls["n"] == 5:  # chunks 1-4 written, chunk 5 interrupted
                    raise KeyboardInterrupt
                return real(*a, **k)

            S.sequence_logps = stop_at_half
            try:
                code_a, first = run(tmp / "cut.jsonl")
            finally:
                S.sequence_logps = real
            code_b, second = run(tmp / "cut.jsonl", "--resume")
            same = (tmp / "cut.jsonl").read_bytes() == (tmp / "whole.jsonl").read_bytes()
            failures += not (same and code == 0 and code_a == 130 and code_b == 0)
            print(f"{name}, {n} pairs in 8 chunks, CPU seconds: whole run {whole:.2f} s; interrupted after 4 chunks "
                  f"{first:.2f} s "
                  f"+ resumed {second:.2f} s = {first + second:.2f} s (overhead {first + second - whole:+.2f} s, "
                  f"{(first + second) / whole - 1:+.0%}: one more model load and tokenization); byte-identical: {same}")
    return 0 if failures == 0 else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    p.add_argument("--pairs", type=int, default=None, help="pairs per model (default: 256 tiny, 32 gpt2-124m)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass (default 8)")
    p.add_argument("--device", choices=S.DEVICES, default="auto")
    p.add_argument("--dtype", choices=tuple(S.DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared 2-core machine 2 threads ran 16x slower)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per measurement, best reported (default 2)")
    p.add_argument("--processes", type=int, nargs="+", default=None, metavar="P",
                   help="instead: run the score command with P processes each (e.g. 1 2), compare speed and output")
    p.add_argument("--resume", action="store_true",
                   help="instead: the cost of an interrupted-and-resumed score run against a whole one")
    args = p.parse_args(argv)
    if args.resume:
        return resume_overhead(args)
    if args.processes:
        if any(q < 1 for q in args.processes):
            p.error("--processes: each count must be >= 1")
        return compare_processes(args, args.processes)
    torch.set_num_threads(args.threads)
    config = S.ScoreConfig(batch_size=args.batch_size, max_length=None, device=args.device, dtype=args.dtype)
    device = config.torch_device()
    print(f"device {device}, dtype {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size} pairs ({2 * args.batch_size} sequences), best of {args.repeats}")
    tok = tiny.build_tokenizer()
    failures = 0
    for name in args.models:
        n = args.pairs or (256 if name == "tiny" else 32)
        rows = tiny.preference_rows(n, seed=0, prompt_words=(20, 60), completion_words=(20, 120))
        model, _ = tiny.build_causal_lm(tokenizer=tok, seed=0, **MODELS[name])
        model = model.to(device=device, dtype=S.DTYPES[args.dtype])
        n_params = sum(q.numel() for q in model.parameters())
        pairs = [S.tokenize_pair(tok, r) for r in rows]
        seqs = S.build_sequences(pairs, [f"row {i + 1}" for i in range(n)], config)
        tokens = sum(len(s) for s in seqs.ids)
        scored = int(seqs.n_completion.sum())
        pad = tok.eos_token_id
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        # warm-up (allocator, kernels) on a few pairs, untimed
        S.sequence_logps(model, S.Sequences(seqs.ids[:4], seqs.n_prompt[:4], seqs.n_completion[:4],
                                            seqs.truncated[:4]), batch_size=2, pad_id=pad, device=device)
        end_to_end, loop, bare = [], [], []
        for _ in range(args.repeats):
            _sync(device)
            t = time.perf_counter()
            res = S.score_pairs(model, tok, rows, config=config, device=device)
            _sync(device)
            end_to_end.append(time.perf_counter() - t)
            t = time.perf_counter()
            S.sequence_logps(model, seqs, batch_size=args.batch_size, pad_id=pad, device=device)
            _sync(device)
            loop.append(time.perf_counter() - t)
            bare.append(bare_forward(model, seqs, args.batch_size, pad, device))
        e2e, lp, bf = min(end_to_end), min(loop), min(bare)
        mem = (f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda"
               else f"peak RSS {_rss_mib():.0f} MiB (whole process so far)")
        ratio = lp / bf
        ok = ratio <= 1.5
        failures += not ok
        assert np.all(res.columns["ref_chosen_logps"] < 0)
        print(f"{name}: {n_params:,} parameters; {n} pairs, {tokens} tokens ({tokens / (2 * n):.0f} per sequence, "
              f"{scored} completion tokens scored)")
        print(f"  score end to end: {e2e:.3f} s = {n / e2e:.1f} pairs/s, {tokens / e2e:.0f} tokens/s "
              f"(tokenizing {res.timing['tokenize_s']:.3f} s)")
        print(f"  scoring loop:     {lp:.3f} s = {n / lp:.1f} pairs/s, {tokens / lp:.0f} tokens/s")
        print(f"  bare forward:     {bf:.3f} s = {n / bf:.1f} pairs/s, {tokens / bf:.0f} tokens/s")
        print(f"  loop / bare forward = {ratio:.2f} (target <= 1.5: {'met' if ok else 'NOT met'}); {mem}")
        del model
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
