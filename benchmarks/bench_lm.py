#!/usr/bin/env python
"""Throughput of the LM stage: map cells per second, and tokens per second of one preference run and the SFT.

    python benchmarks/bench_lm.py                        # default config on CPU (1 thread)
    python benchmarks/bench_lm.py --config map           # the full regime map's cells/s on this CPU
    python benchmarks/bench_lm.py --config large --device cuda --steps 200    # the GPU run, one call
    python benchmarks/bench_lm.py --config large --device cpu --steps 2 --sft-steps 2   # proves the large path runs
    python benchmarks/bench_lm.py --no-map               # tokens/s of one run only
    python benchmarks/bench_lm.py --replicas --no-map    # seed-cells/s: lone seeds (before) vs batched replicas (after)
    python benchmarks/bench_lm.py --kernel --no-map      # J of the linearised LM (toy_lm/kernel.py): size and time

Map cells: one cell-method is (beta, optimizer, method) over all seeds of the config, trained and predicted
(toy_lm.stage.run_stage); cells/s = cell-methods / stage wall time (SFT and tabular prediction included), and
runs/s = cell-methods x seeds / training time.

Replicas (--replicas): the first look of the stage (every cell of every seed of the config, SFT included,
prediction excluded) trained with ``batch_replicas = 1`` (each seed alone: before) and with all seeds as one
batched model (after, toy_lm.train.train_preference_batched); seed-cells/s = seeds x cells / training time,
wall and process CPU time (the CPU time is the fairer number on a loaded machine).

Counts: a preference step processes 2 P sequences of the train split (chosen and rejected; P pairs),
a tokens/step figure of 2 P x padded length (padding included, as the GPU computes it) and the response
tokens alone. Prints parameters, tokens per step, device, seed, wall time, tokens/s and, on CUDA, the
peak memory (torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toy_lm.config import load_config  # noqa: E402
from toy_lm.model import resolve_device  # noqa: E402
from toy_lm.task import make_task  # noqa: E402
from toy_lm.train import all_logps, train_preference, train_reference  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _kernel(cfg, task, ref, lp, args, dev) -> None:
    """J of every tracked response at the reference (toy_lm.kernel.linearise_seed, float64, vmap of per-row
    gradients), the kernel K = J J^T, and one plain and one re-linearised prediction of a DPO run (SGD and Adam);
    wall and CPU seconds (the process's, so a loaded machine shows as wall >> CPU)."""
    from toy_lm.kernel import linearise_seed, predict_seed

    _sync(dev)
    c0 = time.process_time()
    lin = linearise_seed(ref, task, dev)
    _sync(dev)
    j = lin.jacobian
    print(f"kernel: J {tuple(j.shape)} (responses x parameters: {task.n_train} train pairs x 2, "
          f"{j.shape[0] - 2 * task.n_train} other tracked responses), float64 {j.numel() * 8 / 2**20:.1f} MiB, "
          f"{lin.seconds:.2f} s wall, {time.process_time() - c0:.2f} s CPU on {dev}")
    t0 = time.perf_counter()
    k = j @ j.T
    print(f"kernel: K = J J^T {tuple(k.shape)} in {time.perf_counter() - t0:.3f} s")
    beta = max(cfg.betas)
    for opt in cfg.optimizers:
        rec = train_preference("dpo", task, ref, lp, cfg, args.seed, dev, beta=beta, optimizer=opt)
        for every in (None, 10):
            t0, c0 = time.perf_counter(), time.process_time()
            predict_seed("dpo", beta, opt, rec, task, ref, lp, cfg, args.seed, lin, device=dev, relinearise_every=every)
            print(f"kernel: {'re-linearised every 10 steps (incl. a lone LM run)' if every else 'linearised'} "
                  f"prediction, dpo beta {beta:g} {opt}, {cfg.steps} steps: {time.perf_counter() - t0:.2f} s wall, "
                  f"{time.process_time() - c0:.2f} s CPU")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="default, large, or a JSON config file")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--steps", type=int, default=None, help="preference steps to time (default: the config's)")
    parser.add_argument("--sft-steps", type=int, default=None, help="reference SFT steps (default: the config's)")
    parser.add_argument("--method", default="dpo", help="loss to time (default: dpo)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-map", action="store_true", help="skip the map timing (tokens/s of one run only)")
    parser.add_argument("--replicas", action="store_true", help="seed-cells/s with lone seeds vs batched replicas")
    parser.add_argument("--kernel", action="store_true", help="J (responses x parameters) of the linearised LM: size, "
                                                              "time, and one linearised run's time")
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    changes = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.sft_steps is not None:
        changes["sft_steps"] = args.sft_steps
    cfg = cfg.replace(**changes)
    if args.method not in cfg.methods:
        parser.error(f"--method must be one of {cfg.methods}")
    dev = resolve_device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(args.threads)
    task = make_task(cfg, args.seed)
    p, (n, k, s) = task.n_train, tuple(task.tokens.shape)
    resp_tokens = 2 * p * task.response_tokens
    print(f"config={args.config} device={dev} seed={args.seed} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}")
    if dev.type == "cuda":
        print(f"gpu={torch.cuda.get_device_name(dev)}")
        torch.cuda.reset_peak_memory_stats(dev)

    _sync(dev)
    t0 = time.perf_counter()
    ref = train_reference(task, cfg, args.seed, dev)
    _sync(dev)
    sft_s = time.perf_counter() - t0
    print(f"params={sum(p_.numel() for p_ in ref.parameters()):,} block_size={task.block_size} "
          f"vocab={task.vocab_size} pairs={p} heldout={n - p}")
    sft_tok = cfg.sft_steps * n * k * s
    print(f"reference SFT: {cfg.sft_steps} steps x {n * k} seqs x {s} tokens in {sft_s:.2f} s = "
          f"{sft_tok / max(sft_s, 1e-9):,.0f} tokens/s")
    lp = all_logps(ref, task, dev)
    _sync(dev)
    t0 = time.perf_counter()
    beta, opt = max(cfg.betas), cfg.optimizers[0]
    train_preference(args.method, task, ref, lp, cfg, args.seed, dev, beta=beta, optimizer=opt)
    _sync(dev)
    pref_s = time.perf_counter() - t0
    # steps + 1 forward passes (the last records the final state), steps backward passes.
    padded = (cfg.steps + 1) * 2 * p * s
    print(f"preference ({args.method}, beta {beta:g}, {opt}): {cfg.steps} steps, {2 * p * s} padded tokens/step "
          f"({resp_tokens} response tokens), in {pref_s:.2f} s = {padded / max(pref_s, 1e-9):,.0f} tokens/s padded, "
          f"{(cfg.steps + 1) * resp_tokens / max(pref_s, 1e-9):,.0f} response tokens/s, "
          f"{cfg.steps / max(pref_s, 1e-9):.1f} steps/s")
    if not args.no_map:
        from toy_lm.stage import run_stage

        _sync(dev)
        stage = run_stage(cfg, seed_offset=args.seed, device=args.device, threads=args.threads if dev.type == "cpu"
                          else None)
        _sync(dev)
        n_cells = len(stage.keys)
        print(f"map: {n_cells} cell-methods ({len(cfg.betas)} betas x {len(cfg.optimizers)} optimizers x "
              f"{len(cfg.methods)} methods) x {len(cfg.seeds)} seeds in {stage.seconds:.1f} s "
              f"({stage.seconds_training:.1f} s training incl. SFT, {stage.seconds_prediction:.1f} s prediction) = "
              f"{n_cells / stage.seconds:.3f} cells/s, {n_cells * len(cfg.seeds) / stage.seconds_training:.2f} runs/s")
    if args.replicas:
        _replicas(cfg, args, dev)
    if args.kernel:
        _kernel(cfg, task, ref, lp, args, dev)
    if dev.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(dev) / 2**20:.1f} MiB")
    return 0


def _replicas(cfg, args, dev: torch.device) -> None:
    """Seed-cells per second of the stage's first-look training: each seed alone, then the seeds batched."""
    import io

    from toy_lm.stage import LMStage, _train_seeds

    n_cells = len(cfg.betas) * len(cfg.optimizers) * len(cfg.methods)
    seeds = [args.seed + s for s in cfg.seeds]
    rates = {}
    for label, replicas in (("before (each seed alone)", 1), (f"after ({len(seeds)} seeds batched)", len(seeds))):
        c = cfg.replace(batch_replicas=replicas)
        stage = LMStage(cfg=c, device=str(dev), runs=[], seconds=0.0, threads=torch.get_num_threads())
        _sync(dev)
        w0, c0 = time.perf_counter(), time.process_time()
        _train_seeds(stage, seeds, stage.keys, dev, None)
        _sync(dev)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        rates[replicas] = len(seeds) * n_cells / cpu
        print(f"replicas {label}: {len(seeds)} seeds x {n_cells} cells (SFT included) in {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU = {len(seeds) * n_cells / wall:.2f} seed-cells/s wall, "
              f"{len(seeds) * n_cells / cpu:.2f} seed-cells/s CPU")
    print(f"speed-up (CPU time): {rates[len(seeds)] / rates[1]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
