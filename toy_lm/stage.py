"""The whole LM stage, run once per process and shared by the methods of both LM claims.

For each seed: draw the task and train the reference (SFT) once; then train every method in every cell
(beta level x optimizer; the method's labels, ordered or Bradley-Terry, make the third axis) from it.
Then the tabular prediction of each cell and method, all seeds in one batch (toy_lm/predict.py), and the
per-cell summary (``regimes``) and the time-in-U law of the LM (docs/theory.md §14). That is the first look;
:func:`extend` adds seeds (up to ``max_seeds``) in the cells an undecided pre-registered comparison reads
(toy_lm/decide.py). Seed replicas train as one batched model (toy_lm.train.train_preference_batched).
The result is cached in-process, keyed on the settings that change it.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from toy_lm.config import BT_METHODS, PRESETS, LMConfig, labels_of, lm_threads, load_config
from toy_lm.design import DESIGN, config_looks
from toy_lm.model import SeqLogps, TinyGPT, resolve_device
from toy_lm.predict import Comparison, compare_cell, own_delta, predict_cell
from toy_lm.task import L, W, Task, make_task
from toy_lm.train import RunRecord, all_logps, build_model, train_preference_batched, train_reference_batched

# A cell is in the slow regime when the median beta |delta_ref| of its misranked train pairs is at least this
# (docs/theory.md §14: the flow needs time ~ e^H / (2 beta^2) to leave U; at H = 5 that is ~150 / (2 beta^2)).
SLOW_SCALE = 5.0  # descriptive label of a cell ("slow"/"fast"); the judged cells are fixed by beta (toy_lm/design.py)
TOL_FRAC_IN_U = DESIGN.tol_frac_in_U  # the summaries' descriptive within_tol; decisions: toy_lm/design.py


Key = tuple[float, str, str]  # (beta, optimizer, method)


@dataclass
class SeedRun:
    """Everything one seed produced: the task, the reference, and one record per (beta, optimizer, method)."""

    seed: int
    task: Task
    ref_logps: SeqLogps
    reference: TinyGPT | None = None
    records: dict[Key, RunRecord] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def delta_ref(self) -> np.ndarray:
        """(P,) the reference's summed delta on the train pairs."""
        tr = self.task.split("train")
        return (self.ref_logps.sum[tr, W] - self.ref_logps.sum[tr, L]).double().numpy()


@dataclass
class LMStage:
    """The stage: every seed trained so far and the tabular predictions.

    runs: the seeds in look order; the first ``len(cfg.seeds)`` (the first look) have every cell, the extra seeds of
        later looks only the cells an undecided comparison read (toy_lm/design.py).
    comparisons: (beta, optimizer, method) -> seed -> the tabular prediction of that run.
    regimes, time_in_U_law: per-cell summaries over every seed that has the cell (refreshed after each look).
    decisions: the evaluated pre-registered comparisons, by name (toy_lm/decide.py).
    looks: one entry per extension: the seeds added, the cells trained, seconds.
    """

    cfg: LMConfig
    device: str
    runs: list[SeedRun]
    seconds: float
    threads: int | None
    comparisons: dict[Key, dict[int, Comparison]] = field(default_factory=dict)
    regimes: list[dict] = field(default_factory=list)
    time_in_U_law: dict = field(default_factory=dict)
    seconds_training: float = 0.0
    seconds_prediction: float = 0.0
    seed_offset: int = 0
    decisions: dict = field(default_factory=dict)
    looks: list[dict] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def planned_seeds(self) -> list[int]:
        """Every seed the budget allows, in look order (:func:`planned_seeds`)."""
        return planned_seeds(self.cfg, self.seed_offset)

    @property
    def keys(self) -> list[Key]:
        return [(b, o, m) for b in self.cfg.betas for o in self.cfg.optimizers for m in self.cfg.methods]

    def runs_with(self, key: Key) -> list[SeedRun]:
        """The runs (seeds) that trained this cell, in look order."""
        return [r for r in self.runs if key in r.records]

    def comps(self, key: Key) -> list[Comparison]:
        """The predictions of this cell, in look order (one per seed that has it)."""
        by_seed = self.comparisons.get(key, {})
        return [by_seed[r.seed] for r in self.runs_with(key) if r.seed in by_seed]

    def regime(self, beta: float, optimizer: str, method: str) -> dict:
        for r in self.regimes:
            if (r["beta"], r["optimizer"], r["method"]) == (beta, optimizer, method):
                return r
        raise KeyError((beta, optimizer, method))


def planned_seeds(cfg: LMConfig, seed_offset: int = 0) -> list[int]:
    """Every seed the budget allows, in look order: the config's, then max(seeds) + 1, ... up to cfg.max_seeds seeds
    in all, each plus the offset (the run's --seed). The LM stage and the U-atlas's LM rows both draw from it."""
    extra = [max(cfg.seeds) + 1 + i for i in range(cfg.max_seeds - len(cfg.seeds))]
    return [seed_offset + s for s in (*cfg.seeds, *extra)]


def quick_config(cfg: LMConfig) -> LMConfig:
    """The --quick pass: fewer seeds (two at the first look, a budget of at most 6, two per look) and SFT steps; the
    same task, cells, losses, preference steps and pre-registered comparisons (more of them may end undecided).

    The preference steps are kept: the verdicts are about where the dynamics are at the end of training (halving
    them left the CPO variants short of crossing, and changed the verdicts).
    """
    seeds = cfg.seeds[:2]
    return cfg.replace(sft_steps=max(1, int(cfg.sft_steps * 0.8)), seeds=seeds,
                       max_seeds=max(len(seeds), min(cfg.max_seeds, 6)), seed_step=min(cfg.seed_step, 2))


def stage_config(ctx) -> LMConfig:
    cfg = load_config(ctx.lm_config)
    return quick_config(cfg) if ctx.quick else cfg


class _Threads:
    """torch's CPU threads set for the stage's work and restored afterwards (None: left alone)."""

    def __init__(self, threads: int | None, dev: torch.device):
        self.threads, self.dev, self.old = threads, dev, torch.get_num_threads()

    def __enter__(self):
        if self.threads is not None and self.dev.type == "cpu":
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        if self.threads is not None and self.dev.type == "cpu":
            torch.set_num_threads(self.old)


def _train_seeds(stage: LMStage, seeds: list[int], keys: list[Key], dev: torch.device, bar=None,
                 progress=None) -> None:
    """Make every seed of ``seeds`` have every cell of ``keys`` trained. A new seed is drawn and its reference trained
    first; the references of all new seeds are trained as one batched model, and so is each cell over the seeds
    that lack it (seed replicas, :func:`toy_lm.train.train_preference_batched`; ``cfg.batch_replicas`` caps the
    replicas per batch). ``progress`` (a :class:`toy_lm.map_progress.MapProgress`, lm-map's ``--resume``): each
    finished unit (a chunk's references, a cell's chunk of records) is saved there, and one saved earlier is loaded
    instead of trained."""
    cfg = stage.cfg
    have = {r.seed for r in stage.runs}
    new = [s for s in seeds if s not in have]
    for i in range(0, len(new), cfg.batch_replicas):
        chunk = new[i:i + cfg.batch_replicas]
        t0 = time.perf_counter()
        tasks = [make_task(cfg, seed) for seed in chunk]
        if bar is not None:
            bar.set_postfix_str(f"seeds {chunk} reference SFT")
        references = None
        if progress is not None:  # a resumed map: the finished unit's weights, in fresh models of the same shape
            references = [build_model(task, cfg, seed, dev) for task, seed in zip(tasks, chunk)]
            if not progress.load_references(chunk, references):
                references = None
        if references is None:
            references = train_reference_batched(tasks, cfg, chunk, dev)
            if progress is not None:
                progress.save_references(chunk, references, time.perf_counter() - t0)
        seconds = (time.perf_counter() - t0) / len(chunk)
        for seed, task, reference in zip(chunk, tasks, references):
            run = SeedRun(seed=seed, task=task, ref_logps=all_logps(reference, task, dev), reference=reference)
            run.seconds["sft"] = seconds
            stage.runs.append(run)
            if bar is not None:
                bar.update(1)
    by_seed = {r.seed: r for r in stage.runs}
    for key in keys:
        todo = [by_seed[s] for s in seeds if key not in by_seed[s].records]
        beta, opt, method = key
        for i in range(0, len(todo), cfg.batch_replicas):
            chunk = todo[i:i + cfg.batch_replicas]
            if bar is not None:
                bar.set_postfix_str(f"seeds {[r.seed for r in chunk]} beta {beta:g} {opt} {method}")
            chunk_seeds = [r.seed for r in chunk]
            recs = progress.load_records(key, chunk_seeds) if progress is not None else None
            if recs is None:
                t0 = time.perf_counter()
                recs = train_preference_batched(method, [r.task for r in chunk], [r.reference for r in chunk],
                                                [r.ref_logps for r in chunk], cfg, chunk_seeds, dev, beta=beta,
                                                optimizer=opt)
                if progress is not None:
                    progress.save_records(key, chunk_seeds, recs, time.perf_counter() - t0)
            for r, rec in zip(chunk, recs):
                r.records[key] = rec
            if bar is not None:
                bar.update(len(chunk))


def _predict(stage: LMStage, keys: list[Key], seeds: list[int], bar=None, progress=None) -> None:
    """The tabular prediction of every cell of ``keys`` for the runs of ``seeds`` that have it and lack one (all
    seeds of a cell in one batch: the instances are independent, so a seed's prediction does not depend on the
    batch it is in). ``progress``: as in :func:`_train_seeds`, one unit per cell."""
    for key in keys:
        by_seed = stage.comparisons.setdefault(key, {})
        todo = [r for r in stage.runs_with(key) if r.seed in seeds and r.seed not in by_seed]
        if not todo:
            continue
        beta, opt, method = key
        if bar is not None:
            bar.set_postfix_str(f"tabular prediction beta {beta:g} {opt} {method}")
        todo_seeds = [r.seed for r in todo]
        preds = progress.load_predictions(key, todo_seeds) if progress is not None else None
        if preds is None:
            t0 = time.perf_counter()
            preds = predict_cell(method, beta, opt, [(r.records[key], r.ref_logps, r.task) for r in todo], stage.cfg)
            if progress is not None:
                progress.save_predictions(key, todo_seeds, preds, time.perf_counter() - t0)
        for r, c in zip(todo, preds):
            by_seed[r.seed] = c
        if bar is not None:
            bar.update(1)


def refresh_summaries(stage: LMStage) -> None:
    """Recompute ``regimes`` and ``time_in_U_law`` over every seed now trained (and predicted)."""
    stage.regimes = [cell_summary(stage, *key) for key in stage.keys]
    stage.time_in_U_law = {opt: time_in_U_law(stage, opt) for opt in stage.cfg.optimizers}


def run_stage(cfg: LMConfig, seed_offset: int = 0, device: str = "auto", threads: int | None = 1,
              stream=None, progress=None) -> LMStage:
    """The first look: train the reference and every (beta, optimizer, method) for each seed ``seed_offset + s`` of
    ``cfg.seeds``; predict; summarise. Later looks (:func:`extend`) add seeds up to ``cfg.max_seeds``.

    threads: torch CPU threads during the stage (1 by default: at this model size extra threads add
    synchronisation, not speed); the previous setting is restored afterwards. None leaves it alone.
    stream: where the header line and the tqdm progress bar go (default stderr).
    progress: a :class:`toy_lm.map_progress.MapProgress` (lm-map): every finished unit is saved in it, and the units
    it already holds are loaded, not computed (their seconds, as recorded, are counted in the stage's).
    """
    stream = stream if stream is not None else sys.stderr
    dev = resolve_device(device)
    seeds = [seed_offset + s for s in cfg.seeds]
    n_cells = len(cfg.betas) * len(cfg.optimizers) * len(cfg.methods)
    first = make_task(cfg, seeds[0])
    n_params = TinyGPT(first.vocab_size, first.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd).n_params()
    stage = LMStage(cfg=cfg, device=str(dev), runs=[], seconds=0.0, threads=threads, seed_offset=seed_offset)
    start = time.perf_counter()
    with _Threads(threads, dev):
        print(f"[lm] {n_params:,} parameters, {cfg.n_train_prompts} train pairs ({2 * cfg.n_train_prompts * first.block_size} "
              f"tokens/step), {cfg.n_heldout_prompts} held-out; cells: beta {list(cfg.betas)} x {list(cfg.optimizers)} x "
              f"{len(cfg.methods)} methods, {cfg.steps} steps each; device {dev}, threads {torch.get_num_threads()}, "
              f"seeds {seeds} (budget {cfg.max_seeds} seeds, looks at {config_looks(cfg)} seeds)", file=stream, flush=True)
        stage.threads = torch.get_num_threads()
        bar = tqdm(total=len(seeds) * (1 + n_cells) + n_cells, desc="[lm] stage", unit="run", file=stream,
                   dynamic_ncols=True, mininterval=0.5 if getattr(stream, "isatty", lambda: False)() else 10.0)
        try:
            _train_seeds(stage, seeds, stage.keys, dev, bar, progress=progress)
            stage.seconds_training = time.perf_counter() - start
            t1 = time.perf_counter()
            _predict(stage, stage.keys, seeds, bar, progress=progress)
            refresh_summaries(stage)
            stage.seconds_prediction = time.perf_counter() - t1
        finally:
            bar.close()
    stage.seconds = time.perf_counter() - start
    if progress is not None:  # the loaded units' time, as spent by the run that computed them
        stage.seconds_training += progress.loaded["ref"] + progress.loaded["train"]
        stage.seconds_prediction += progress.loaded["predict"]
        stage.seconds += sum(progress.loaded.values())
    return stage


def extend(stage: LMStage, keys: list[Key], n_seeds: int, predict: bool) -> None:
    """Make the first ``n_seeds`` planned seeds have every cell of ``keys`` trained (and predicted when ``predict``);
    a seed beyond the first look is drawn and its reference trained on first use. Refreshes the summaries when
    anything was added; the time goes to ``stage.looks``."""
    seeds = stage.planned_seeds[:n_seeds]
    keys = [k for k in stage.keys if k in set(keys)]
    missing = [(s, k) for s in seeds for k in keys
               if not any(r.seed == s and k in r.records for r in stage.runs)]
    missing_pred = predict and any(s not in stage.comparisons.get(k, {}) for s in seeds for k in keys)
    if not missing and not missing_pred:
        return
    dev = torch.device(stage.device)
    t0 = time.perf_counter()
    with _Threads(stage.threads, dev):
        _train_seeds(stage, seeds, keys, dev)
        t1 = time.perf_counter()
        if predict:
            _predict(stage, keys, seeds)
        refresh_summaries(stage)
    seconds = time.perf_counter() - t0
    stage.seconds_training += t1 - t0
    stage.seconds_prediction += seconds - (t1 - t0)
    stage.seconds += seconds
    stage.looks.append({"n_seeds": n_seeds, "cells_trained": len(missing), "cells": [list(k) for k in keys],
                        "predicted": bool(predict), "seconds": round(seconds, 2)})


_CACHE: dict[tuple, LMStage] = {}


def _cache_key(ctx) -> tuple:
    path = Path(ctx.lm_config)
    stamp = path.stat().st_mtime_ns if ctx.lm_config not in PRESETS and path.is_file() else None
    return (ctx.lm_config, stamp, bool(ctx.quick), int(ctx.seed), ctx.device)


def get_stage(ctx) -> LMStage:
    """The stage of this context's settings, trained on first use and then shared by every LM method.

    CPU threads: ``TOY_LM_THREADS`` (default 1).
    """
    key = _cache_key(ctx)
    if key not in _CACHE:
        threads = lm_threads()  # TOY_LM_THREADS, validated: one line naming it when bad
        _CACHE[key] = run_stage(stage_config(ctx), seed_offset=ctx.seed, device=ctx.device, threads=threads)
    return _CACHE[key]


# ----------------------------------------------------------------------------------------------
# Per-cell summaries


def scale_of(stage: LMStage, beta: float) -> dict:
    """beta |delta_ref| over the misranked train pairs of every seed: median (the cell's scale), min, max."""
    mags = np.concatenate([-r.delta_ref[r.delta_ref < 0] for r in stage.runs])
    if mags.size == 0:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": float(beta * np.median(mags)), "min": float(beta * mags.min()), "max": float(beta * mags.max())}


def cell_summary(stage: LMStage, beta: float, optimizer: str, method: str) -> dict:
    """One entry of ``regimes``: the cell's scale, predicted against observed, loss, time in U, held-out accuracy."""
    cfg, key = stage.cfg, (beta, optimizer, method)
    predicted = stage.comparisons.get(key, {})
    runs = [r for r in stage.runs_with(key) if r.seed in predicted]
    comps = [predicted[r.seed] for r in runs]
    recs = [r.records[key] for r in runs]
    n_tok = stage.runs[0].task.response_tokens
    cmp = compare_cell(comps, TOL_FRAC_IN_U)
    scale = scale_of(stage, beta)
    viol = [c.violated for c in comps]
    steps = cfg.steps
    # "Leaves U" from the per-step records: a misranked pair has left U when delta > 0 at some step.
    ever_in_U = np.concatenate([rec.in_U[:, v].any(axis=0) for rec, v in zip(recs, viol)])
    crossed = np.concatenate([c.obs_cross[v] <= steps for c, v in zip(comps, viol)])
    aligned_end = np.concatenate([rec.delta_sum[-1, v] > 0 for rec, v in zip(recs, viol)])
    in_U_end = np.concatenate([c.obs_in_U[v] for c, v in zip(comps, viol)])
    n_viol = int(ever_in_U.size)
    frac = (lambda x: float(np.mean(x)) if n_viol else None)
    own_end = [own_delta(rec.delta_sum[-1], method, n_tok) for rec in recs]
    pred_own = [own_delta(c.pred_delta, method, n_tok) for c in comps]
    return {
        "beta": beta, "beta_delta_ref_scale": scale["median"], "beta_delta_ref_range": [scale["min"], scale["max"]],
        "regime": "slow" if scale["median"] >= SLOW_SCALE else "fast",
        "optimizer": optimizer, "labels": labels_of(method), "method": method, "seeds": [r.seed for r in runs],
        "delta": "per-token mean" if method == "cpo_easy" else "summed",
        **cmp,
        "predicted_frac_in_U_per_seed": [c.predicted_frac_in_U for c in comps],
        "observed_frac_in_U_per_seed": [c.observed_frac_in_U for c in comps],
        "clock_saturated_per_seed": [c.clock_saturated for c in comps],
        "sign_agreement": float(np.mean([c.sign_agreement for c in comps])),
        "mean_final_loss": float(np.mean([rec.objective[-1] for rec in recs])),
        "initial_loss": float(np.mean([rec.objective[0] for rec in recs])),
        "frac_loss_below_log2": float(np.mean([np.mean(rec.loss[-1] < math.log(2)) for rec in recs])),
        "frac_delta_ge_margin": float(np.mean([np.mean(d >= cfg.margin) for d in own_end])),
        "frac_delta_ge_margin_worst_seed": float(min(np.mean(d >= cfg.margin) for d in own_end)),
        "predicted_frac_delta_ge_margin": float(np.mean([np.mean(d >= cfg.margin) for d in pred_own])),
        "certified_fraction": float(np.mean([rec.certified[-1].mean() for rec in recs])),
        "train_ranking_accuracy": float(np.mean([(rec.delta_sum[-1] >= 0).mean() for rec in recs])),
        "heldout_ranking_accuracy": float(np.mean([rec.heldout_ranking_accuracy[-1] for rec in recs])),
        "heldout_ranking_accuracy_ref": float(np.mean([rec.heldout_ranking_accuracy[0] for rec in recs])),
        "misranked_pairs": n_viol,
        "misranked_ever_in_U": frac(ever_in_U),
        "misranked_left_U": frac(crossed),
        "misranked_left_U_and_aligned_at_end": frac(crossed & aligned_end),
        "misranked_in_U_at_end": frac(in_U_end),
        "time_in_U_median_uncensored": (float(np.median(np.concatenate([c.obs_cross[v] for c, v in zip(comps, viol)])
                                                        [crossed])) if crossed.any() else None),
        "time_in_U_n_censored": int((~crossed).sum()),
    }


def censored_fit(x: np.ndarray, y: np.ndarray, group: np.ndarray, censored: np.ndarray, limit: float,
                 max_iter: int = 200, tol: float = 1e-10) -> dict:
    """Maximum-likelihood fit of y = a_g + slope x + eps, eps ~ N(0, s^2), one intercept per group, y right-censored
    at ``limit`` (Tobit): a censored point contributes log P(y > limit) = log Phi((a_g + slope x - limit) / s).

    Newton's method in Olsen's parametrisation (theta = (a, slope) / s, tau = 1 / s; Olsen 1978, Econometrica 46,
    1211), where the log-likelihood is globally concave, with the exact gradient and Hessian and a backtracking line
    search: it reaches the maximum whenever one exists, and says so by its own test, Newton decrement
    g^T (-H)^-1 g / 2 <= ``tol`` (the ascent a quadratic model still promises). The slope's standard error is from the
    exact observed information, by the delta method on slope = theta_slope / tau (at the maximum, the same as
    inverting the Hessian in (a, slope, s)). This replaced BFGS on finite-difference gradients, whose stop test
    failed with "precision loss" at the maximum on the kernel claim's data and whose ``hess_inv`` is an update
    estimate, not the inverse Hessian.

    A group with no uncensored point has no maximum: its intercept runs to +inf and its points' likelihood to 1.
    The supremum over the other parameters is then the likelihood without that group, so its points are left out
    (``dropped``: how many). Anything else that does not end in the test above (no maximum, e.g. s -> 0 when every
    uncensored point is fitted exactly, or the iteration limit) returns ``converged`` False and NaN estimates.

    Returns {"slope", "stderr", "converged", "reason", "iterations", "decrement", "dropped", "n", "n_censored"}.
    """
    from scipy.special import log_ndtr
    from scipy.stats import norm

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    group, censored = np.asarray(group), np.asarray(censored, dtype=bool)
    if not (x.shape == y.shape == group.shape == censored.shape) or x.ndim != 1:
        raise ValueError(f"x, y, group, censored must be 1-d of one length, got shapes {x.shape}, {y.shape}, "
                         f"{group.shape}, {censored.shape}")
    out = {"slope": math.nan, "stderr": math.nan, "converged": False, "reason": None, "iterations": 0,
           "decrement": math.nan, "dropped": 0, "n": int(x.size), "n_censored": int(censored.sum())}
    live = np.isin(group, np.unique(group[~censored]))  # groups with at least one uncensored point
    out["dropped"] = int((~live).sum())
    x, y, group, censored = x[live], y[live], group[live], censored[live]
    groups = np.unique(group)
    n_obs = int((~censored).sum())
    if n_obs < len(groups) + 2:
        out["reason"] = f"not identified: {n_obs} uncensored points for {len(groups)} intercepts, a slope and a scale"
        return out
    if np.ptp(x) == 0:
        out["reason"] = "not identified: x is constant"
        return out
    gi = np.searchsorted(groups, group)
    design = np.zeros((x.size, len(groups) + 1))  # (n, G + 1): one-hot intercepts, then x
    design[np.arange(x.size), gi] = 1.0
    design[:, -1] = x
    obs = ~censored
    xo, yo, xc = design[obs], y[obs], design[~obs]
    k = design.shape[1]

    def loglik(theta, tau):  # Olsen: uncensored log tau - (tau y - X theta)^2 / 2, censored log Phi(X theta - tau L)
        if not tau > 0:
            return -math.inf
        r = tau * yo - xo @ theta
        return float(yo.size * math.log(tau) - 0.5 * r @ r + log_ndtr(xc @ theta - tau * limit).sum())

    def grad_hess(theta, tau):
        r = tau * yo - xo @ theta
        u = xc @ theta - tau * limit
        lam = np.exp(norm.logpdf(u) - log_ndtr(u))  # phi / Phi, in logs: u may be far below 0
        wc = np.hstack([xc, -limit * np.ones((xc.shape[0], 1))])  # d u / d (theta, tau)
        g = np.concatenate([xo.T @ r, [yo.size / tau - r @ yo]]) + wc.T @ lam
        h = np.zeros((k + 1, k + 1))
        h[:k, :k] = -xo.T @ xo
        h[:k, k] = h[k, :k] = xo.T @ yo
        h[k, k] = -yo.size / tau ** 2 - yo @ yo
        h -= (wc * (lam * (u + lam))[:, None]).T @ wc  # d^2 log Phi / du^2 = -lam (u + lam) < 0
        return g, h

    s0 = max(float(np.std(yo)), 0.1)
    tau = 1.0 / s0
    theta = np.concatenate([[float(np.mean(yo[gi[obs] == j])) / s0 for j in range(len(groups))], [0.0]])
    ll = loglik(theta, tau)
    for it in range(1, max_iter + 1):
        g, h = grad_hess(theta, tau)
        try:
            step = np.linalg.solve(-h, g)
        except np.linalg.LinAlgError:
            out.update(iterations=it, reason=f"singular Hessian at s = {1 / tau:.3g}")
            return out
        dec = float(g @ step) / 2
        out.update(iterations=it, decrement=dec)
        if not np.isfinite(dec) or dec < 0:
            out["reason"] = f"Hessian not negative definite at s = {1 / tau:.3g} (no maximum, or lost to rounding)"
            return out
        if dec <= tol:
            break
        t = 1.0
        while t > 1e-12:
            cand_theta, cand_tau = theta + t * step[:k], tau + t * step[k]
            cand = loglik(cand_theta, cand_tau)
            if cand >= ll + 0.25 * t * 2 * dec:  # Armijo on the Newton direction, g^T step = 2 dec
                break
            t /= 2
        else:
            out["reason"] = f"line search found no ascent at s = {1 / tau:.3g}"
            return out
        theta, tau, ll = cand_theta, cand_tau, cand
    else:
        out["reason"] = f"no maximum within {max_iter} Newton steps (decrement {out['decrement']:.2e}, s = {1 / tau:.3g})"
        return out
    g, h = grad_hess(theta, tau)
    cov = np.linalg.inv(-h)
    d = np.zeros(k + 1)  # d slope / d (theta, tau), slope = theta_x / tau
    d[k - 1], d[k] = 1.0 / tau, -theta[k - 1] / tau ** 2
    var = float(d @ cov @ d)
    out.update(slope=float(theta[k - 1] / tau), stderr=math.sqrt(var) if var > 0 else math.nan,
               converged=bool(var > 0), reason=None if var > 0 else "non-positive variance")
    return out


def fit_number(fit: dict, key: str) -> float | None:
    """``fit[key]`` (e.g. "slope", "stderr") of a :func:`censored_fit` result, or None when the fit did not converge or
    the number is not finite: a fit that failed reports no number, whatever its last iterate was."""
    return fit[key] if fit["converged"] and math.isfinite(fit[key]) else None


def time_in_U_fits(h: np.ndarray, t_lm: np.ndarray, t_pred: np.ndarray, group: np.ndarray, horizon: int) -> dict:
    """The time-in-U law's estimator, one for the tabular theory (:func:`time_in_U_law`) and the kernel predictions
    (``toy_lm.kernel_claim.time_in_U_slopes``): the LM's and the prediction's times of the same misranked pairs, both
    censored at ``horizon`` (steps + 1: not left U by the run's end), pairs with a time of 0 left out (a misranked
    pair starts in U: both times are >= 1 step), log(time) against H = beta |delta_ref| by :func:`censored_fit`
    (Tobit, one intercept per beta level in ``group``). Returns the censored times, their censoring flags, the mask of
    the pairs used and the two fits ("lm", "pred")."""
    t_lm, t_pred = np.minimum(t_lm, horizon), np.minimum(t_pred, horizon)
    cens, pred_cens = t_lm >= horizon, t_pred >= horizon
    use = (t_lm > 0) & (t_pred > 0)
    limit = math.log(horizon)
    fits = {"lm": censored_fit(h[use], np.log(t_lm[use]), group[use], cens[use], limit),
            "pred": censored_fit(h[use], np.log(t_pred[use]), group[use], pred_cens[use], limit)}
    return {"t_lm": t_lm, "t_pred": t_pred, "lm_censored": cens, "pred_censored": pred_cens, "use": use, "fits": fits}


def time_in_U_law(stage: LMStage, optimizer: str) -> dict:
    """Slope of log(time in U) against beta |delta_ref| for ordered-pair DPO under ``optimizer``, LM beside theory.
    Descriptive: it decides no verdict (the registry's statements do not mention it).

    Per misranked train pair of every seed and beta level: H = beta |delta_ref|. The LM's time in U is the first LM
    step with delta > 0; the theory's is the tabular prediction's (the run's optimizer, every candidate, started
    at the reference) first crossing mapped to LM steps by the same loss-matched clock (``Comparison.pred_cross``).
    Both are censored at the same horizon, steps + 1 (a pair that has not crossed by the run's end), and both
    are fitted by the same estimator, :func:`time_in_U_fits`: maximum likelihood with one intercept per beta
    level and the censored pairs as censored (Tobit). Nothing is dropped: dropping censored pairs biases a slope
    towards 0, since the long times are the censored ones. A fit that does not converge is reported as None.
    """
    cfg = stage.cfg
    horizon = cfg.steps + 1
    h, t_lm, t_th, grp = [], [], [], []
    for gi, beta in enumerate(cfg.betas):
        comps = [c for c in stage.comps((beta, optimizer, "dpo")) if c.violated.any()]
        if not comps:
            continue
        h.append(np.concatenate([beta * -c.delta_ref[c.violated] for c in comps]))
        t_lm.append(np.concatenate([c.obs_cross[c.violated] for c in comps]).astype(float))
        t_th.append(np.concatenate([c.pred_cross[c.violated] for c in comps]).astype(float))
        grp.append(np.full(h[-1].size, gi))
    if not h:
        return {"descriptive": True, "fitted_slope": None, "stderr": None, "theory_slope": None,
                "theory_stderr": None, "n_pairs": 0, "n_censored": 0, "n_theory_censored": 0}
    h, t_lm, t_th, grp = (np.concatenate(a) for a in (h, t_lm, t_th, grp))
    tf = time_in_U_fits(h, t_lm, t_th, grp, horizon)
    t_lm, t_th, cens, th_cens, use = tf["t_lm"], tf["t_pred"], tf["lm_censored"], tf["pred_censored"], tf["use"]
    lm_fit, th_fit = tf["fits"]["lm"], tf["fits"]["pred"]
    estimator = ("log(time in U) = a_beta + slope * beta |delta_ref| + N(0, s^2), one intercept per beta level, "
                 f"maximum likelihood with pairs that have not left U by step {cfg.steps} censored at {horizon} "
                 "(Tobit); the same estimator and horizon for the LM and the theory")
    return {"descriptive": True, "fitted_slope": fit_number(lm_fit, "slope"), "stderr": fit_number(lm_fit, "stderr"),
            "theory_slope": fit_number(th_fit, "slope"), "theory_stderr": fit_number(th_fit, "stderr"),
            "n_pairs": int(use.sum()), "n_censored": int(cens[use].sum()), "n_theory_censored": int(th_cens[use].sum()),
            "horizon": horizon, "fit": estimator,
            "points": {"h": h.tolist(), "t_lm": t_lm.tolist(), "censored": cens.tolist(), "t_theory": t_th.tolist(),
                       "theory_censored": th_cens.tolist(), "beta_level": grp.tolist()}}


def reference_summary(run: SeedRun, cfg: LMConfig) -> dict:
    """How the trained reference came out: measured delta_ref against the corpus design."""
    task, lp = run.task, run.ref_logps
    delta_ref = (lp.sum[:, W] - lp.sum[:, L]).numpy()
    tr = task.split("train")
    d_tr = delta_ref[tr]
    return {
        "seed": run.seed,
        "corr_designed_measured_delta_ref": float(np.corrcoef(task.designed_log_ratio, delta_ref)[0, 1]),
        "rmse_designed_measured_delta_ref": float(np.sqrt(np.mean((task.designed_log_ratio - delta_ref) ** 2))),
        "mass_on_candidates": float(np.exp(lp.sum.numpy()).sum(axis=1).mean()),
        "frac_train_ref_prefers_y_l": float(np.mean(d_tr < 0)),
        # RLHF optimum delta* = delta_ref + dr / beta (docs/theory.md §1): where it is < 0 the assumption fails.
        "frac_train_assumption_fails_per_beta": {f"{b:g}": float(np.mean(d_tr + task.dr[tr] / b < 0))
                                                 for b in cfg.betas},
        "delta_ref_train_min_max": [float(d_tr.min()), float(d_tr.max())],
        "sft_seconds": round(run.seconds["sft"], 2),
    }


def save_records(stage: LMStage, path: Path) -> Path:
    """Write every per-pair, per-step record to one ``.npz`` (keys ``seed{s}/b{beta}/{optimizer}/{method}/{field}``)."""
    arrays = {}
    for run in stage.runs:
        arrays[f"seed{run.seed}/delta_ref"] = run.delta_ref
        arrays[f"seed{run.seed}/q_hat"] = run.task.q_hat[run.task.split("train")]
        for key, rec in run.records.items():
            beta, opt, method = key
            base = f"seed{run.seed}/b{beta:g}/{opt}/{method}"
            for name in ("objective", "loss", "delta_sum", "delta_mean", "chosen_logp", "in_U", "certified", "target",
                         "heldout_steps", "heldout_delta_sum"):
                arrays[f"{base}/{name}"] = getattr(rec, name)
            cmp = stage.comparisons.get(key, {}).get(run.seed)
            if cmp is not None:
                arrays[f"{base}/pred_delta"] = cmp.pred_delta
                arrays[f"{base}/clock"] = cmp.clock
                arrays[f"{base}/pred_cross"] = cmp.pred_cross
                arrays[f"{base}/obs_cross"] = cmp.obs_cross
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


__all__ = ["BT_METHODS", "SLOW_SCALE", "TOL_FRAC_IN_U", "LMStage", "SeedRun", "get_stage", "run_stage", "extend",
           "reference_summary", "save_records", "cell_summary", "time_in_U_law", "time_in_U_fits", "fit_number"]
