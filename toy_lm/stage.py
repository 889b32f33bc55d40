"""The whole LM stage, run once per process and shared by the checks that read it.

For each seed: draw the task, train the reference (SFT), then train every method from it and
compare each run with the tabular prediction. The result is cached in-process, keyed on the
settings that change it, so ``check_lm_dpo_failure`` and ``check_lm_cpo_fix`` share one run.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from toy_lm.config import PRESETS, LMConfig, load_config
from toy_lm.model import SeqLogps, TinyGPT, resolve_device
from toy_lm.predict import Comparison, predict
from toy_lm.task import L, W, Task, make_task
from toy_lm.train import RunRecord, all_logps, train_preference, train_reference, uses_mean


class Progress:
    """A hand-written progress line on stderr: ``[lm] 42% seed 2/3 dpo step 30/60  12.3 s``.

    On a terminal the line is redrawn in place; otherwise one line per finished phase.
    """

    def __init__(self, total: int, stream=None):
        self.total, self.done = max(1, total), 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, advance: int, label: str, force: bool = False) -> None:
        self.done += advance
        now = time.perf_counter()
        if self.tty and (force or now - self._last > 0.2):
            self._last = now
            pct = 100 * self.done / self.total
            print(f"\r[lm] {pct:3.0f}% {label:<38s} {now - self.start:6.1f} s", end="", file=self.stream, flush=True)
        elif not self.tty and force:
            pct = 100 * self.done / self.total
            print(f"[lm] {pct:3.0f}% {label} ({now - self.start:.1f} s)", file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)


@dataclass
class SeedRun:
    """Everything one seed produced."""

    seed: int
    task: Task
    ref_logps: SeqLogps
    records: dict[str, RunRecord] = field(default_factory=dict)
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class LMStage:
    cfg: LMConfig
    device: str
    runs: list[SeedRun]
    seconds: float
    threads: int

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


def quick_config(cfg: LMConfig) -> LMConfig:
    """The --quick pass: fewer SFT and preference steps; same task, losses, seeds and tolerances."""
    return cfg.replace(sft_steps=max(1, int(cfg.sft_steps * 0.8)), steps=max(1, cfg.steps // 2),
                       tabular_steps=max(1, cfg.tabular_steps // 2))


def stage_config(ctx) -> LMConfig:
    cfg = load_config(ctx.lm_config)
    return quick_config(cfg) if ctx.quick else cfg


def run_stage(cfg: LMConfig, seed_offset: int = 0, device: str = "auto", threads: int | None = 1,
              stream=None) -> LMStage:
    """Train the reference and every method for each seed ``seed_offset + s``, s in cfg.seeds.

    threads: torch CPU threads during the stage (1 by default: at this model size extra threads add
    synchronisation, not speed); the previous setting is restored afterwards. None leaves it alone.
    """
    dev = resolve_device(device)
    old_threads = torch.get_num_threads()
    if threads is not None and dev.type == "cpu":
        torch.set_num_threads(threads)
    seeds = [seed_offset + s for s in cfg.seeds]
    progress = Progress(len(seeds) * (cfg.sft_steps + len(cfg.methods) * cfg.steps), stream)
    first = make_task(cfg, seeds[0])
    n_params = TinyGPT(first.vocab_size, first.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd).n_params()
    print(f"[lm] {n_params:,} parameters, {cfg.n_train_prompts} train pairs ({2 * cfg.n_train_prompts * first.block_size} "
          f"tokens/step), {cfg.n_heldout_prompts} held-out, {len(cfg.methods)} methods x {cfg.steps} steps, "
          f"beta {cfg.beta:g}, device {dev}, threads {torch.get_num_threads()}, seeds {seeds}",
          file=progress.stream, flush=True)
    start = time.perf_counter()
    runs = []
    try:
        for i, seed in enumerate(seeds, 1):
            t0 = time.perf_counter()
            task = make_task(cfg, seed)
            progress.update(0, f"seed {i}/{len(seeds)} reference SFT", force=True)
            reference = train_reference(task, cfg, seed, dev)
            progress.update(cfg.sft_steps, f"seed {i}/{len(seeds)} reference done", force=True)
            run = SeedRun(seed=seed, task=task, ref_logps=all_logps(reference, task, dev))
            run.seconds["sft"] = time.perf_counter() - t0
            for method in cfg.methods:
                t0 = time.perf_counter()
                label = f"seed {i}/{len(seeds)} {method}"
                record = train_preference(method, task, reference, run.ref_logps, cfg, seed, dev,
                                          progress=lambda s, lab=label: progress.update(1, f"{lab} step {s}/{cfg.steps}"))
                run.records[method] = record
                run.comparisons[method] = predict(method, record, run.ref_logps, task, cfg)
                run.seconds[method] = time.perf_counter() - t0
                progress.update(0, f"{label} done", force=True)
            runs.append(run)
    finally:
        progress.close()
        if threads is not None and dev.type == "cpu":
            torch.set_num_threads(old_threads)
    return LMStage(cfg=cfg, device=str(dev), runs=runs, seconds=time.perf_counter() - start,
                   threads=threads if threads is not None else old_threads)


_CACHE: dict[tuple, LMStage] = {}


def _cache_key(ctx) -> tuple:
    path = Path(ctx.lm_config)
    stamp = path.stat().st_mtime_ns if ctx.lm_config not in PRESETS and path.is_file() else None
    return (ctx.lm_config, stamp, bool(ctx.quick), int(ctx.seed), ctx.device)


def get_stage(ctx) -> LMStage:
    """The stage of this context's settings, trained on first use and then shared.

    CPU threads: ``TOY_LM_THREADS`` (default 1).
    """
    key = _cache_key(ctx)
    if key not in _CACHE:
        threads = int(os.environ.get("TOY_LM_THREADS", "1"))
        _CACHE[key] = run_stage(stage_config(ctx), seed_offset=ctx.seed, device=ctx.device, threads=threads)
    return _CACHE[key]


# ----------------------------------------------------------------------------------------------
# Summaries shared by both checks


def reference_summary(run: SeedRun, cfg: LMConfig) -> dict:
    """How the trained reference came out: measured delta_ref against the corpus design."""
    task, lp = run.task, run.ref_logps
    delta_ref = (lp.sum[:, W] - lp.sum[:, L]).numpy()
    tr = task.split("train")
    d_tr = delta_ref[tr]
    dstar = d_tr + task.dr[tr] / cfg.beta  # RLHF optimum delta* = delta_ref + dr / beta (THEORY §1)
    return {
        "seed": run.seed,
        "corr_designed_measured_delta_ref": float(np.corrcoef(task.designed_log_ratio, delta_ref)[0, 1]),
        "rmse_designed_measured_delta_ref": float(np.sqrt(np.mean((task.designed_log_ratio - delta_ref) ** 2))),
        "mass_on_candidates": float(np.exp(lp.sum.numpy()).sum(axis=1).mean()),
        "frac_train_ref_prefers_y_l": float(np.mean(d_tr < 0)),
        "frac_train_assumption_fails": float(np.mean(dstar < 0)),
        "delta_ref_train_min_max": [float(d_tr.min()), float(d_tr.max())],
        "frac_heldout_ref_prefers_y_l": float(np.mean(delta_ref[task.split("heldout")] < 0)),
        "sft_seconds": round(run.seconds["sft"], 2),
    }


def _own_delta(record: RunRecord, method: str) -> np.ndarray:
    return record.delta_mean if uses_mean(method) else record.delta_sum


def method_summary(stage: LMStage, method: str) -> dict:
    """Per-method evidence over seeds: means, per-seed values and spread."""
    cfg = stage.cfg
    per_seed: dict[str, list] = {k: [] for k in (
        "predicted_frac_in_U", "observed_frac_in_U", "agreement", "certified_fraction", "heldout_ranking_accuracy",
        "heldout_ranking_accuracy_ref", "train_ranking_accuracy", "frac_delta_ge_margin", "initial_objective",
        "final_objective", "chosen_logp_change", "max_observed_frac_in_U", "spearman_crossing", "kendall_crossing",
        "clock_saturated", "certifies_at_log2", "bt_objective_gap", "seconds")}
    confusion: dict[str, int] = {}
    for run in stage.runs:
        rec, cmp = run.records[method], run.comparisons[method]
        own = _own_delta(rec, method)
        per_seed["predicted_frac_in_U"].append(cmp.predicted_frac_in_U)
        per_seed["observed_frac_in_U"].append(cmp.observed_frac_in_U)
        per_seed["agreement"].append(cmp.agreement)
        per_seed["certified_fraction"].append(float(rec.certified[-1].mean()))
        per_seed["heldout_ranking_accuracy"].append(float(rec.heldout_ranking_accuracy[-1]))
        per_seed["heldout_ranking_accuracy_ref"].append(float(rec.heldout_ranking_accuracy[0]))
        per_seed["train_ranking_accuracy"].append(float(rec.train_ranking_accuracy[-1]))
        per_seed["frac_delta_ge_margin"].append(float(np.mean(own[-1] >= cfg.margin)))
        per_seed["initial_objective"].append(float(rec.objective[0]))
        per_seed["final_objective"].append(float(rec.objective[-1]))
        per_seed["chosen_logp_change"].append(float(rec.chosen_logp[-1].mean() - rec.chosen_logp[0].mean()))
        per_seed["max_observed_frac_in_U"].append(float(rec.in_U.mean(axis=1).max()))
        rank = cmp.rank_correlation()
        per_seed["spearman_crossing"].append(rank["spearman"])
        per_seed["kendall_crossing"].append(rank["kendall"])
        per_seed["clock_saturated"].append(cmp.clock_saturated)
        # Target T >= m on every pair <=> "loss < log 2 proves delta > m" (critical_loss(T, m) >= log 2).
        finite_t = np.isfinite(rec.target).all()
        per_seed["certifies_at_log2"].append(float(np.mean(rec.target >= cfg.margin)) if finite_t else None)
        if method == "dpo_bt":
            q = run.task.q_hat[run.task.split("train")]
            with np.errstate(divide="ignore", invalid="ignore"):
                entropy = -(np.where(q > 0, q * np.log(q), 0) + np.where(q < 1, (1 - q) * np.log1p(-q), 0))
            per_seed["bt_objective_gap"].append(float(rec.objective[-1] - entropy.mean()))
        else:
            per_seed["bt_objective_gap"].append(None)
        per_seed["seconds"].append(round(run.seconds[method], 2))
        for k, v in cmp.confusion.items():
            confusion[k] = confusion.get(k, 0) + v

    def agg(values):
        vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if not vals:
            return None
        arr = np.asarray(vals, dtype=float)
        return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                "min": float(arr.min()), "max": float(arr.max())}

    out = {key: (agg(per_seed[key]) or {}).get("mean") for key in (
        "predicted_frac_in_U", "observed_frac_in_U", "agreement", "certified_fraction", "heldout_ranking_accuracy")}
    out["seeds"] = stage.seeds
    out["delta"] = "per-token mean" if uses_mean(method) else "summed"
    out["spread"] = {k: agg(v) for k, v in per_seed.items() if k not in ("clock_saturated", "seconds")}
    out["per_seed"] = per_seed
    out["confusion_sign_at_end"] = confusion
    return out


def save_records(stage: LMStage, path: Path) -> Path:
    """Write every per-pair, per-step record of the stage to one ``.npz`` (keys ``seed{s}/{method}/{field}``)."""
    arrays = {}
    for run in stage.runs:
        tr = run.task.split("train")
        arrays[f"seed{run.seed}/delta_ref"] = (run.ref_logps.sum[tr, W] - run.ref_logps.sum[tr, L]).numpy()
        arrays[f"seed{run.seed}/q_hat"] = run.task.q_hat[tr]
        for method, rec in run.records.items():
            for name in ("objective", "loss", "delta_sum", "delta_mean", "chosen_logp", "in_U", "certified", "target",
                         "heldout_steps", "heldout_delta_sum"):
                arrays[f"seed{run.seed}/{method}/{name}"] = getattr(rec, name)
            cmp = run.comparisons[method]
            arrays[f"seed{run.seed}/{method}/pred_delta"] = cmp.pred_delta
            arrays[f"seed{run.seed}/{method}/clock"] = cmp.clock
            arrays[f"seed{run.seed}/{method}/pred_cross"] = cmp.pred_cross
            arrays[f"seed{run.seed}/{method}/obs_cross"] = cmp.obs_cross
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path
