"""The whole LM stage, run once per process and shared by the methods of both LM claims.

For each seed: draw the task and train the reference (SFT) once; then train every method in every cell
(beta level x optimizer; the method's labels, ordered or Bradley-Terry, make the third axis) from it.
Then the tabular prediction of each cell and method, all seeds in one batch (toy_lm/predict.py), and the
per-cell summary (``regimes``) and the time-in-U law of the LM (docs/theory.md §14).
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
from toy_lm.model import SeqLogps, TinyGPT, resolve_device
from toy_lm.predict import Comparison, compare_cell, own_delta, predict_cell
from toy_lm.tabular import time_to_leave_U
from toy_lm.task import L, W, Task, make_task
from toy_lm.train import RunRecord, all_logps, train_preference, train_reference

# A cell is in the slow regime when the median beta |delta_ref| of its misranked train pairs is at least this
# (docs/theory.md §14: the flow needs time ~ e^H / (2 beta^2) to leave U; at H = 5 that is ~150 / (2 beta^2)).
SLOW_SCALE = 5.0
TOL_FRAC_IN_U = 0.10  # |predicted - observed| fraction of train pairs in U counted as agreement


Key = tuple[float, str, str]  # (beta, optimizer, method)


@dataclass
class SeedRun:
    """Everything one seed produced: the task, the reference, and one record per (beta, optimizer, method)."""

    seed: int
    task: Task
    ref_logps: SeqLogps
    records: dict[Key, RunRecord] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def delta_ref(self) -> np.ndarray:
        """(P,) the reference's summed delta on the train pairs."""
        tr = self.task.split("train")
        return (self.ref_logps.sum[tr, W] - self.ref_logps.sum[tr, L]).double().numpy()


@dataclass
class LMStage:
    cfg: LMConfig
    device: str
    runs: list[SeedRun]
    seconds: float
    threads: int
    comparisons: dict[Key, list[Comparison]] = field(default_factory=dict)
    regimes: list[dict] = field(default_factory=list)
    time_in_U_law: dict = field(default_factory=dict)
    seconds_training: float = 0.0
    seconds_prediction: float = 0.0

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def keys(self) -> list[Key]:
        return [(b, o, m) for b in self.cfg.betas for o in self.cfg.optimizers for m in self.cfg.methods]

    def regime(self, beta: float, optimizer: str, method: str) -> dict:
        for r in self.regimes:
            if (r["beta"], r["optimizer"], r["method"]) == (beta, optimizer, method):
                return r
        raise KeyError((beta, optimizer, method))


def quick_config(cfg: LMConfig) -> LMConfig:
    """The --quick pass: fewer seeds (two) and SFT steps; the same task, cells, losses, preference steps and thresholds.

    The preference steps are kept: the verdicts are about where the dynamics are at the end of training (halving
    them left the CPO variants short of crossing, and changed the verdicts).
    """
    return cfg.replace(sft_steps=max(1, int(cfg.sft_steps * 0.8)), seeds=cfg.seeds[:2])


def stage_config(ctx) -> LMConfig:
    cfg = load_config(ctx.lm_config)
    return quick_config(cfg) if ctx.quick else cfg


def run_stage(cfg: LMConfig, seed_offset: int = 0, device: str = "auto", threads: int | None = 1,
              stream=None) -> LMStage:
    """Train the reference and every (beta, optimizer, method) for each seed ``seed_offset + s``; predict; summarise.

    threads: torch CPU threads during the stage (1 by default: at this model size extra threads add
    synchronisation, not speed); the previous setting is restored afterwards. None leaves it alone.
    stream: where the header line and the tqdm progress bar go (default stderr).
    """
    stream = stream if stream is not None else sys.stderr
    dev = resolve_device(device)
    old_threads = torch.get_num_threads()
    if threads is not None and dev.type == "cpu":
        torch.set_num_threads(threads)
    seeds = [seed_offset + s for s in cfg.seeds]
    n_cells = len(cfg.betas) * len(cfg.optimizers) * len(cfg.methods)
    first = make_task(cfg, seeds[0])
    n_params = TinyGPT(first.vocab_size, first.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd).n_params()
    print(f"[lm] {n_params:,} parameters, {cfg.n_train_prompts} train pairs ({2 * cfg.n_train_prompts * first.block_size} "
          f"tokens/step), {cfg.n_heldout_prompts} held-out; cells: beta {list(cfg.betas)} x {list(cfg.optimizers)} x "
          f"{len(cfg.methods)} methods, {cfg.steps} steps each; device {dev}, threads {torch.get_num_threads()}, "
          f"seeds {seeds}", file=stream, flush=True)
    start = time.perf_counter()
    runs: list[SeedRun] = []
    bar = tqdm(total=len(seeds) * (1 + n_cells) + n_cells, desc="[lm] stage", unit="run", file=stream,
               dynamic_ncols=True, mininterval=0.5 if getattr(stream, "isatty", lambda: False)() else 10.0)
    try:
        for seed in seeds:
            t0 = time.perf_counter()
            task = make_task(cfg, seed)
            bar.set_postfix_str(f"seed {seed} reference SFT")
            reference = train_reference(task, cfg, seed, dev)
            run = SeedRun(seed=seed, task=task, ref_logps=all_logps(reference, task, dev))
            run.seconds["sft"] = time.perf_counter() - t0
            bar.update(1)
            for beta, opt, method in [(b, o, m) for b in cfg.betas for o in cfg.optimizers for m in cfg.methods]:
                bar.set_postfix_str(f"seed {seed} beta {beta:g} {opt} {method}")
                run.records[(beta, opt, method)] = train_preference(method, task, reference, run.ref_logps, cfg, seed,
                                                                    dev, beta=beta, optimizer=opt)
                bar.update(1)
            runs.append(run)
        t_train = time.perf_counter() - start
        stage = LMStage(cfg=cfg, device=str(dev), runs=runs, seconds=0.0, threads=torch.get_num_threads())
        t1 = time.perf_counter()
        for key in stage.keys:
            beta, opt, method = key
            bar.set_postfix_str(f"tabular prediction beta {beta:g} {opt} {method}")
            stage.comparisons[key] = predict_cell(method, beta, opt, [(r.records[key], r.ref_logps, r.task) for r in runs],
                                                  cfg)
            bar.update(1)
        stage.regimes = [cell_summary(stage, *key) for key in stage.keys]
        stage.time_in_U_law = {opt: time_in_U_law(stage, opt) for opt in cfg.optimizers}
        stage.seconds_prediction = time.perf_counter() - t1
        stage.seconds_training = t_train
    finally:
        bar.close()
        if threads is not None and dev.type == "cpu":
            torch.set_num_threads(old_threads)
    stage.seconds = time.perf_counter() - start
    return stage


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
    comps = stage.comparisons[key]
    recs = [r.records[key] for r in stage.runs]
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
        "optimizer": optimizer, "labels": labels_of(method), "method": method, "seeds": stage.seeds,
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


def _within_slope(x: np.ndarray, y: np.ndarray, group: np.ndarray) -> tuple[float, float]:
    """OLS slope of y on x with one intercept per group (within-group demeaning), and its standard error."""
    xd, yd = x.astype(float).copy(), y.astype(float).copy()
    for g in np.unique(group):
        m = group == g
        xd[m] -= xd[m].mean()
        yd[m] -= yd[m].mean()
    sxx = float(np.sum(xd ** 2))
    n_groups = len(np.unique(group))
    dof = len(x) - n_groups - 1
    if sxx <= 0 or dof < 1:
        return math.nan, math.nan
    slope = float(np.sum(xd * yd) / sxx)
    resid = yd - slope * xd
    return slope, float(math.sqrt(np.sum(resid ** 2) / dof / sxx))


def _censored_slope(x: np.ndarray, y: np.ndarray, group: np.ndarray, censored: np.ndarray,
                    limit: float) -> tuple[float, float]:
    """Maximum-likelihood slope of y on x with one intercept per group, y right-censored at ``limit`` (Tobit).

    y = a_g + slope x + eps, eps ~ N(0, s^2); a censored point contributes log P(y > limit). Returns the slope and
    its standard error from the inverse Hessian of the negative log-likelihood (BFGS's estimate).
    """
    from scipy.optimize import minimize
    from scipy.stats import norm

    groups = np.unique(group)
    gi = np.searchsorted(groups, group)
    obs = ~censored

    def nll(theta):
        a, slope, log_s = theta[: len(groups)], theta[len(groups)], theta[-1]
        s = math.exp(log_s)
        mu = a[gi] + slope * x
        ll = norm.logpdf(y[obs], mu[obs], s).sum() + norm.logsf(limit, mu[~obs], s).sum()
        return -ll

    a0 = [float(np.mean(y[gi == k])) for k in range(len(groups))]
    res = minimize(nll, np.array(a0 + [0.0, math.log(max(float(np.std(y)), 0.1))]), method="BFGS")
    if not res.success and not np.isfinite(res.fun):
        return math.nan, math.nan
    se = float(math.sqrt(res.hess_inv[len(groups), len(groups)])) if res.hess_inv[len(groups), len(groups)] > 0 \
        else math.nan
    return float(res.x[len(groups)]), se


def time_in_U_law(stage: LMStage, optimizer: str) -> dict:
    """Slope of log(time in U) against beta |delta_ref| for ordered-pair DPO under ``optimizer``, LM beside theory.

    Per misranked train pair of every seed and beta level: H = beta |delta_ref|; the LM's time in U is the first
    step with delta > 0 (from the per-step records; censored when it never happens within the run). The fit
    has one intercept per beta level (the theory's time is e^H / (2 beta^2) for large H, so only the slope in H
    is comparable across levels). fitted_slope: maximum likelihood with the censored pairs as censored (Tobit;
    dropping them biases the slope towards 0, since the long times are the censored ones);
    fitted_slope_uncensored_ols: OLS over the uncensored pairs alone. theory_slope: OLS on the theory's times
    (toy_lm.tabular.time_to_leave_U, the run's optimizer) of the LM's uncensored pairs; theory_slope_all_pairs: on
    every pair (the theory's times are uncensored, but for Adam's eps stall).
    """
    cfg = stage.cfg
    h, t_lm, t_th, grp, cens = [], [], [], [], []
    for gi, beta in enumerate(cfg.betas):
        comps = [c for c in stage.comparisons[(beta, optimizer, "dpo")] if c.violated.any()]
        if not comps:
            continue
        dref = np.concatenate([c.delta_ref[c.violated] for c in comps])
        h.append(beta * -dref)
        t_lm.append(np.concatenate([c.obs_cross[c.violated] for c in comps]).astype(float))
        cens.append(t_lm[-1] > cfg.steps)
        t_th.append(time_to_leave_U(dref, beta, optimizer, cfg.tabular_lr(optimizer, beta)))  # all seeds in one batch
        grp.append(np.full(dref.size, gi))
    if not h:
        return {"fitted_slope": None, "stderr": None, "theory_slope": None, "n_pairs": 0, "n_censored": 0}
    h, t_lm, t_th, grp, cens = (np.concatenate(a) for a in (h, t_lm, t_th, grp, cens))
    ok = ~cens & (t_lm > 0)
    ols, ols_se = _within_slope(h[ok], np.log(t_lm[ok]), grp[ok])
    use = t_lm > 0
    slope, se = _censored_slope(h[use], np.log(np.minimum(t_lm[use], cfg.steps + 1)), grp[use], cens[use],
                                math.log(cfg.steps + 1))
    th_ok = ok & np.isfinite(t_th) & (t_th > 0)
    th_slope, _ = _within_slope(h[th_ok], np.log(t_th[th_ok]), grp[th_ok])
    all_ok = np.isfinite(t_th) & (t_th > 0)  # Adam: a pair whose gradient falls below Adam's eps never crosses
    th_all, _ = _within_slope(h[all_ok], np.log(t_th[all_ok]), grp[all_ok])
    nan_none = (lambda x: None if x is None or not math.isfinite(x) else x)
    return {"fitted_slope": nan_none(slope), "stderr": nan_none(se), "theory_slope": nan_none(th_slope),
            "fitted_slope_uncensored_ols": nan_none(ols), "stderr_uncensored_ols": nan_none(ols_se),
            "theory_slope_all_pairs": nan_none(th_all), "n_pairs": int(ok.sum()), "n_censored": int(cens.sum()),
            "n_theory_censored": int((~np.isfinite(t_th)).sum()),
            "h_range_uncensored": [float(h[ok].min()), float(h[ok].max())] if ok.any() else None,
            "fit": "log(time in U) = a_beta + slope * beta |delta_ref| + N(0, s^2), one intercept per beta level, "
                   "maximum likelihood with pairs that never leave U censored at steps + 1 (Tobit)",
            "points": {"h": h.tolist(), "t_lm": t_lm.tolist(), "censored": cens.tolist(), "t_theory": t_th.tolist(),
                       "beta_level": grp.tolist()}}


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
    for run, in zip(stage.runs):
        arrays[f"seed{run.seed}/delta_ref"] = run.delta_ref
        arrays[f"seed{run.seed}/q_hat"] = run.task.q_hat[run.task.split("train")]
    for key in stage.keys:
        beta, opt, method = key
        for run, cmp in zip(stage.runs, stage.comparisons[key]):
            rec = run.records[key]
            base = f"seed{run.seed}/b{beta:g}/{opt}/{method}"
            for name in ("objective", "loss", "delta_sum", "delta_mean", "chosen_logp", "in_U", "certified", "target",
                         "heldout_steps", "heldout_delta_sum"):
                arrays[f"{base}/{name}"] = getattr(rec, name)
            arrays[f"{base}/pred_delta"] = cmp.pred_delta
            arrays[f"{base}/clock"] = cmp.clock
            arrays[f"{base}/pred_cross"] = cmp.pred_cross
            arrays[f"{base}/obs_cross"] = cmp.obs_cross
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


__all__ = ["BT_METHODS", "SLOW_SCALE", "TOL_FRAC_IN_U", "LMStage", "SeedRun", "get_stage", "run_stage",
           "reference_summary", "save_records", "cell_summary", "time_in_U_law"]
