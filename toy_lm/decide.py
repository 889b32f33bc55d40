"""Seed-level values of the pre-registered comparisons and their sequential evaluation (toy_lm/design.py).

:func:`evaluate` walks the planned looks for a list of comparisons: at each look it makes sure the cells they
read are trained (and predicted, where the quantity needs the tabular prediction) for the first n seeds
(:func:`toy_lm.stage.extend`), computes each comparison's interval at level 1 - alpha / K, and fixes the
comparisons whose interval clears the bound. The outcome of a comparison is cached on the stage by name, and
depends only on the comparison and the seeds (never on which method asked first).
"""

from __future__ import annotations

import numpy as np

from toy_lm.ceiling import ceiling_fraction
from toy_lm.design import DESIGN, QUANTITIES, LMDesign, Spec, config_looks, decide_bound, seed_interval
from toy_lm.predict import own_delta
from toy_lm.stage import LMStage, extend
from toy_lm.tabular import tabular_minimiser_reaches
from toy_lm.task import L, W


def seed_value(stage: LMStage, spec: Spec, seed: int) -> float | None:
    """The seed-level value of ``spec`` for one seed (None when that seed's prediction saturated its clock)."""
    cfg = stage.cfg
    run = next(r for r in stage.runs if r.seed == seed)
    rec = run.records[spec.key]
    beta, _, method = spec.key
    q = spec.quantity
    n_tok = run.task.response_tokens
    frac_ge_m = float(np.mean(own_delta(rec.delta_sum[-1].astype(np.float64), method, n_tok) >= cfg.margin))
    if q == "obs_frac_in_U":
        return float(rec.in_U[-1].mean())
    if q == "final_loss":
        return float(rec.objective[-1])
    if q == "shortfall_vs_one":
        return 1.0 - frac_ge_m
    tr = run.task.split("train")
    if q == "shortfall_vs_ceiling":
        ceiling = ceiling_fraction(method, beta, cfg.loss_params(method), run.task.q_hat[tr], run.delta_ref, cfg.margin)
        return ceiling - frac_ge_m
    cmp = stage.comparisons[spec.key][seed]
    if cmp.clock_saturated:
        return None
    if q == "obs_minus_pred_frac_in_U":
        return cmp.observed_frac_in_U - cmp.predicted_frac_in_U
    if q == "pred_frac_in_U":
        return cmp.predicted_frac_in_U
    pred_ge_m = float(np.mean(own_delta(cmp.pred_delta, method, n_tok) >= cfg.margin))
    if q == "pred_shortfall_vs_one":
        return 1.0 - pred_ge_m
    if q == "pred_shortfall_vs_ceiling":
        lp = run.ref_logps.sum[tr].double().numpy()
        reach = tabular_minimiser_reaches(method, beta, cfg.loss_params(method), run.task.q_hat[tr], lp[:, W], lp[:, L],
                                          cfg.margin)
        return float(reach.mean()) - pred_ge_m
    raise ValueError(f"unknown quantity {q!r}")


def _outcome(stage: LMStage, spec: Spec, n: int, look: int, n_planned: int, alpha: float) -> dict:
    level = 1.0 - alpha / n_planned
    seeds = stage.planned_seeds[:n]
    raw = {s: seed_value(stage, spec, s) for s in seeds}
    values = [v for v in raw.values() if v is not None]
    is_fraction, _, what = QUANTITIES[spec.quantity]
    resolution = 1.0 / stage.cfg.n_train_prompts if is_fraction else None
    if values:
        iv = seed_interval(values, level, resolution)
    else:
        iv = {"mean": None, "lo": -np.inf, "hi": np.inf, "n": 0, "sd": None, "sd_used": None, "level": level,
              "method": "no seed gave a value"}
    decided = decide_bound(spec.test, spec.bound, iv["lo"], iv["hi"]) if len(values) >= 2 else None
    return {"name": spec.name, "cell": list(spec.key), "quantity": spec.quantity, "what": what, "test": spec.test,
            "bound": spec.bound, "decided": decided, "look": look, "n_seeds": len(values), "seeds": seeds,
            "excluded_seeds": [s for s, v in raw.items() if v is None], "values": values, "mean": iv["mean"],
            "interval": [iv["lo"], iv["hi"]], "level": level, "interval_method": iv["method"] + f", level 1 - alpha/K = 1 - {alpha:g}/{n_planned} (Bonferroni over "
                                                                "the planned looks)"}


def evaluate(stage: LMStage, specs: list[Spec], design: LMDesign = DESIGN) -> dict[str, dict]:
    """Each comparison's outcome: decided at the first look whose interval clears its bound, else undecided after
    the last look (``"decided": None``). Trains what the looks need (:func:`toy_lm.stage.extend`)."""
    cfg = stage.cfg
    sizes = config_looks(cfg)
    n_planned = len(sizes)
    pending = [s for s in specs if s.name not in stage.decisions]
    for look, n in enumerate(sizes, 1):
        if not pending:
            break
        for needs_pred in (False, True):
            keys = [s.key for s in pending if QUANTITIES[s.quantity][1] == needs_pred]
            if keys:
                extend(stage, keys, n, predict=needs_pred)
        still = []
        for spec in pending:
            out = _outcome(stage, spec, n, look, n_planned, design.alpha)
            if out["decided"] is not None or look == len(sizes):
                stage.decisions[spec.name] = out
            else:
                still.append(spec)
        pending = still
    return {s.name: stage.decisions[s.name] for s in specs}


def line(out: dict) -> str:
    """One readable line: 'name: mean 0.43 [0.38, 0.49] (n 3) at_least 0.1 -> True'."""
    lo, hi = out["interval"]
    mean = "n/a" if out["mean"] is None else f"{out['mean']:.3f}"
    verdict = {True: "holds", False: "fails", None: "undecided"}[out["decided"]]
    return (f"{out['name']}: mean {mean} [{lo:.3f}, {hi:.3f}] (n {out['n_seeds']}) {out['test'].replace('_', ' ')} "
            f"{out['bound']:.3g} -> {verdict}")
