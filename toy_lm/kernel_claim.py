"""The claim ``lm-kernel-prediction`` (beyond the paper; docs/theory.md §17): the linearised LM against the LM.

numeric:   the analytic reductions of toy_lm/kernel.py's dynamics, with no LM: K = P I on each pair is the tabular
           prediction (toy_lm.tabular.run_tabular, SGD and Adam), and a rank-1 shared component follows its closed
           forms (IPO's linear recurrence; ordered DPO's flow time, toy_bandits.dynamics.ordered_pair_flow_time).
training:  the LM stage's DPO cells against the plain linearisation (literal) and the re-linearised one (the
           registry's amendment, evaluated only where the literal fails): per cell the mean over seeds of observed
           minus predicted fraction in U, within +- KERNEL.margin by the t-interval over seeds with the looks and
           budget of toy_lm/design.py; per optimizer the time-in-U slope within KERNEL.slope_se standard errors of
           the LM's. The own/cross decomposition, the squeezing effect and the table against the tabular prediction
           are descriptive evidence: they decide nothing.

The numbers of the design are fixed here and in the registry's text before any run (tests/toy_lm/test_kernel_claim.py
checks that they agree).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from dpo_rlhf_checks.result import CheckContext, MethodResult
from toy_lm.design import DESIGN, config_looks, decide_bound, seed_interval
from toy_lm.kernel import (KernelPrediction, decomposition, linearise_seed, mass_changes, predict_seed, run_linearised,
                           squeezing)


@dataclass(frozen=True)
class KernelDesign:
    """The pre-registered numbers of lm-kernel-prediction.

    methods: the compared cells are every (beta, optimizer) of the config with these methods (ordered, BT labels).
    margin: |mean over seeds of observed - predicted fraction in U| must be < this (interval inside (-margin, margin)).
    slope_se: the predicted time-in-U slope must lie within slope_se LM standard errors of the LM's slope.
    relinearise_every: the amendment's re-linearisation period, in LM steps.
    """

    methods: tuple[str, ...] = ("dpo", "dpo_bt")
    margin: float = 0.05
    slope_se: float = 2.0
    relinearise_every: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


KERNEL = KernelDesign()
VARIANTS = ("linear", "relin")

Key = tuple[float, str, str]

_LIN: dict[tuple, object] = {}  # (id(stage), seed) -> SeedLinearisation
_PRED: dict[tuple, KernelPrediction] = {}  # (id(stage), key, seed, relin) -> KernelPrediction
_DECISIONS: dict[tuple, dict] = {}  # (id(stage), variant, name) -> outcome


def kernel_keys(cfg) -> list[Key]:
    return [(b, o, m) for m in KERNEL.methods for b in cfg.betas for o in cfg.optimizers if m in cfg.methods]


def _run_of(stage, seed):
    return next(r for r in stage.runs if r.seed == seed)


def seed_lin(stage, seed: int):
    """The seed's linearisation at its reference (J of every tracked response), cached per stage."""
    lk = (id(stage), seed)
    if lk not in _LIN:
        run = _run_of(stage, seed)
        with _stage_threads(stage):
            _LIN[lk] = linearise_seed(run.reference, run.task, stage.device)
    return _LIN[lk]


def _stage_threads(stage):
    """torch's CPU threads set to the stage's (TOY_LM_THREADS, default 1) while the kernel work runs, as the stage's
    own training runs. Measured on this 2-core machine under load: a lone LM run of the default cell took 2.8-9.9 CPU
    s at torch's default 2 threads and 0.14-0.16 at 1 thread; the plain Adam prediction 1.6-3.3 against 0.63."""
    import torch

    from toy_lm.stage import _Threads

    return _Threads(stage.threads, torch.device(stage.device))


def prediction(stage, key: Key, seed: int, relin: bool) -> KernelPrediction:
    """The linearised (and, with ``relin``, re-linearised) prediction of one seed's run of a cell, cached per stage."""
    ck = (id(stage), key, seed, relin)
    if ck not in _PRED:
        run = _run_of(stage, seed)
        lin = seed_lin(stage, seed)
        beta, opt, method = key
        plain = prediction(stage, key, seed, relin=False).linear_run if relin else None
        with _stage_threads(stage):
            _PRED[ck] = predict_seed(method, beta, opt, run.records[key], run.task, run.reference, run.ref_logps,
                                     stage.cfg, seed, lin, device=stage.device,
                                     relinearise_every=KERNEL.relinearise_every if relin else None, plain=plain)
    return _PRED[ck]


def _cmp(stage, key, seed, variant):
    pred = prediction(stage, key, seed, relin=variant == "relin")
    return pred.linear if variant == "linear" else pred.relin


def _cell(key) -> str:
    beta, opt, method = key
    return f"beta {beta:g} {opt} {method}"


def kernel_looks(cfg) -> tuple[list[int], int]:
    """The seeds at each look and the number of planned looks K: lm-dpo-failure's (the config's look schedule)."""
    sizes = config_looks(cfg)
    return sizes, len(sizes)


def evaluate_fraction(stage, variant: str) -> dict[str, dict]:
    """Each compared cell's outcome for ``variant``: mean over seeds of observed - predicted fraction in U, decided
    within +- KERNEL.margin at the first look whose interval clears it (toy_lm/design.py's looks, level 1 - alpha/K),
    else undecided after the last look."""
    from toy_lm.stage import extend

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    cfg = stage.cfg
    sizes, k = kernel_looks(cfg)
    level = 1.0 - DESIGN.alpha / k
    keys = kernel_keys(cfg)
    pending = [key for key in keys if (id(stage), variant, _cell(key)) not in _DECISIONS]
    for look, n in enumerate(sizes, 1):
        if not pending:
            break
        extend(stage, pending, n, predict=False)
        still = []
        for key in pending:
            seeds = stage.planned_seeds[:n]
            values = []
            for s in seeds:
                c = _cmp(stage, key, s, variant)
                values.append(c.observed_frac_in_U - c.predicted_frac_in_U)
            iv = seed_interval(values, level, resolution=1.0 / cfg.n_train_prompts)
            decided = decide_bound("within", KERNEL.margin, iv["lo"], iv["hi"]) if len(values) >= 2 else None
            out = {"name": f"{variant} {_cell(key)}", "cell": list(key), "variant": variant, "decided": decided,
                   "look": look, "n_seeds": len(values), "seeds": seeds, "values": values, "mean": iv["mean"],
                   "interval": [iv["lo"], iv["hi"]], "level": level, "test": "within", "bound": KERNEL.margin,
                   "interval_method": iv["method"] + f", level 1 - alpha/K = 1 - {DESIGN.alpha:g}/{k}"}
            if decided is not None or look == len(sizes):
                _DECISIONS[(id(stage), variant, _cell(key))] = out
            else:
                still.append(key)
        pending = still
        print(f"[lm-kernel] {variant}: look {look} ({n} seeds), {len(pending)} cell(s) undecided", file=sys.stderr,
              flush=True)
    return {_cell(key): _DECISIONS[(id(stage), variant, _cell(key))] for key in keys}


def time_in_U_slopes(stage, optimizer: str, variant: str) -> dict:
    """The time-in-U slope of the LM and of ``variant``'s prediction for ordered DPO under ``optimizer``, over every
    seed each beta level's cell has, on the same misranked pairs, by the time-in-U law's estimator (Tobit, one
    intercept per beta level, censored at steps + 1; toy_lm.stage.time_in_U_fits)."""
    from toy_lm.stage import fit_number, time_in_U_fits

    cfg = stage.cfg
    horizon = cfg.steps + 1
    h, t_lm, t_k, grp = [], [], [], []
    for gi, beta in enumerate(cfg.betas):
        key = (beta, optimizer, "dpo")
        for run in stage.runs_with(key):
            c = _cmp(stage, key, run.seed, variant)
            v = c.violated
            if not v.any():
                continue
            h.append(beta * -c.delta_ref[v])
            t_lm.append(c.obs_cross[v].astype(float))
            t_k.append(c.pred_cross[v].astype(float))
            grp.append(np.full(int(v.sum()), gi))
    if not h:
        return {"lm_slope": None, "lm_stderr": None, "pred_slope": None, "pred_stderr": None, "n_pairs": 0,
                "decided": None}
    h, t_lm, t_k, grp = (np.concatenate(a) for a in (h, t_lm, t_k, grp))
    tf = time_in_U_fits(h, t_lm, t_k, grp, horizon)
    fits, use = tf["fits"], tf["use"]
    # a fit that did not converge gives no number, so it cannot decide the comparison (decided None below)
    out = {"lm_slope": fit_number(fits["lm"], "slope"), "lm_stderr": fit_number(fits["lm"], "stderr"),
           "pred_slope": fit_number(fits["pred"], "slope"), "pred_stderr": fit_number(fits["pred"], "stderr"),
           "fits": {k: {n: f[n] for n in ("converged", "reason", "iterations", "dropped")} for k, f in fits.items()},
           "n_pairs": int(use.sum()), "n_lm_censored": int(tf["lm_censored"][use].sum()),
           "n_pred_censored": int(tf["pred_censored"][use].sum()), "seeds": sorted({r.seed for b in cfg.betas
                                                                                  for r in stage.runs_with((b, optimizer, "dpo"))})}
    if None in (out["lm_slope"], out["lm_stderr"], out["pred_slope"]):
        out["decided"] = None
    else:
        out["decided"] = bool(abs(out["pred_slope"] - out["lm_slope"]) <= KERNEL.slope_se * out["lm_stderr"])
    return out


def describe(stage, variant: str = "linear") -> dict:
    """Descriptive evidence per compared cell, means over the seeds that have it: the own/cross decomposition of the
    misranked pairs' change of delta, the squeezing effect, where the train prompts' mass went (LM and linear)."""
    out = {}
    for key in kernel_keys(stage.cfg):
        rows = []
        for run in stage.runs_with(key):
            pred = prediction(stage, key, run.seed, relin=variant == "relin")
            kr = pred.linear_run if variant == "linear" else pred.relin_run
            cmp = pred.linear if variant == "linear" else pred.relin
            p = run.task.n_train
            b = kr.z.shape[1]  # the re-linearised run tracks the train rows only
            row = {"decomposition": decomposition(kr, cmp.delta_ref, cmp.obs_delta),
                   "squeezing": squeezing(kr, pred.kinds[:b], p)}
            if b == len(pred.kinds):
                row["mass_linear"] = mass_changes(pred.z0, kr.z[-1], pred.kinds, p)
            if pred.lm_z_end is not None:
                row["mass_lm"] = mass_changes(pred.z0, pred.lm_z_end, pred.kinds, p)
            rows.append(row)
        out[_cell(key)] = _mean_dicts(rows)
    return out


def _mean_dicts(rows: list[dict]) -> dict:
    """Field-wise mean over rows of nested dicts of numbers (None where every row has None)."""
    if not rows:
        return {}
    out = {}
    for k, v in rows[0].items():
        if isinstance(v, dict):
            out[k] = _mean_dicts([r[k] for r in rows if k in r])
        else:
            vals = [r[k] for r in rows if r.get(k) is not None]
            out[k] = float(np.mean(vals)) if vals else None
    return out


def cell_table(stage, variants=("linear",)) -> list[dict]:
    """Per compared cell: the LM's observed fraction in U, the tabular prediction's and each variant's (means over the
    seeds the cell has), and each variant's per-pair agreement of U membership."""
    rows = []
    for key in kernel_keys(stage.cfg):
        runs = stage.runs_with(key)
        tab = [stage.comparisons.get(key, {}).get(r.seed) for r in runs]
        tab = [c for c in tab if c is not None and not c.clock_saturated]
        row = {"cell": _cell(key), "seeds": [r.seed for r in runs],
               "observed": float(np.mean([r.records[key].in_U[-1].mean() for r in runs])),
               "tabular": float(np.mean([c.predicted_frac_in_U for c in tab])) if tab else None}
        for v in variants:
            cs = [_cmp(stage, key, r.seed, v) for r in runs]
            row[v] = float(np.mean([c.predicted_frac_in_U for c in cs]))
            row[f"{v}_agreement"] = float(np.mean([c.agreement for c in cs]))
            row[f"{v}_rmse_delta_end"] = float(np.sqrt(np.mean([np.mean((c.pred_delta - c.obs_delta) ** 2) for c in cs])))
        rows.append(row)
    return rows


def table_markdown(rows: list[dict], variants=("linear",)) -> str:
    fmt = (lambda x: "n/a" if x is None else f"{x:.3f}")
    head = "| cell | seeds | LM observed | tabular | " + " | ".join(
        {"linear": "linearised", "relin": "re-linearised"}[v] + " (agreement, rmse delta)" for v in variants) + " |"
    lines = [head, "|" + "---|" * (4 + len(variants))]
    for r in rows:
        lines.append(f"| {r['cell']} | {len(r['seeds'])} | {fmt(r['observed'])} | {fmt(r['tabular'])} | " + " | ".join(
            f"{fmt(r[v])} ({r[v + '_agreement']:.2f}, {r[v + '_rmse_delta_end']:.2f})" for v in variants) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The methods


def _reductions() -> dict:
    """The analytic reductions, on instances drawn here (seeded): each returns its largest deviation and tolerance."""
    from toy_bandits.dynamics import ordered_pair_flow_time
    from toy_lm.tabular import run_tabular

    rng = np.random.default_rng(0)
    p = 6
    ref = np.log(rng.dirichlet(np.ones(4), size=p))[:, :3]
    q = rng.uniform(0.3, 0.9, size=p)
    z0 = np.concatenate([ref[:, 0], ref[:, 1]])
    out = {}
    for method, params in (("dpo", {}), ("dpo_bt", {}), ("cpo_clip", {"margin": 0.0}), ("ipo", {})):
        tab = run_tabular(method, ref, n_tokens=4, beta=1.5, params=params, q=q, optimizer="sgd", lr=0.3,
                          groups=np.zeros(p, int), stop_objective=np.array([-np.inf]), max_steps=30)
        lin = run_linearised(method, beta=1.5, params=params, q=q, ref_logp_w=ref[:, 0], ref_logp_l=ref[:, 1], z0=z0,
                             kernel=p * np.eye(2 * p), optimizer="sgd", lr=0.3, steps=30, n_tokens=4)
        out[f"identity_sgd_{method}"] = {"max_abs_diff": float(np.abs(lin.delta - tab.delta).max()), "tol": 1e-12,
                                         "moved": float(np.abs(lin.delta[-1] - lin.delta[0]).max())}
        tab = run_tabular(method, ref, n_tokens=4, beta=1.5, params=params, q=q, optimizer="adam", lr=0.05,
                          groups=np.zeros(p, int), stop_objective=np.array([-np.inf]), max_steps=30)
        lin = run_linearised(method, beta=1.5, params=params, q=q, ref_logp_w=ref[:, 0], ref_logp_l=ref[:, 1], z0=z0,
                             jacobian=np.eye(2 * p), optimizer="adam", lr=0.05, steps=30, n_tokens=4)
        out[f"identity_adam_{method}"] = {"max_abs_diff": float(np.abs(lin.delta - tab.delta).max()), "tol": 1e-6,
                                          "moved": float(np.abs(lin.delta[-1] - lin.delta[0]).max())}
    # rank-1 shared component, IPO: x_t = lam_perp^t (x0 - mean) + lam_par^t mean, x = h - 1/(2 beta)
    beta, a, b, eta = 0.8, 0.7, 0.25, 0.4
    u = np.concatenate([np.ones(p), -np.ones(p)])
    kern = a * np.eye(2 * p) + b * np.outer(u, u)
    zs = z0 + rng.normal(0, 0.5, 2 * p)
    lin = run_linearised("ipo", beta=beta, params={}, q=q, ref_logp_w=ref[:, 0], ref_logp_l=ref[:, 1], z0=zs,
                         kernel=kern, optimizer="sgd", lr=eta, steps=25, n_tokens=4)
    h = lin.delta - (ref[:, 0] - ref[:, 1])
    x0 = h[0] - 1 / (2 * beta)
    lp, lq = 1 - 4 * eta * a / p, 1 - 4 * eta * (a + 2 * b * p) / p
    closed = np.stack([1 / (2 * beta) + lp ** t * (x0 - x0.mean()) + lq ** t * x0.mean() for t in range(26)])
    # both modes must be exercised, or the check cannot see an error in one: the start varies across pairs (its
    # part off the shared mode, x0 - mean, is what lam_perp acts on) and the shared mean moves
    out["rank1_ipo_closed_form"] = {"max_abs_diff": float(np.abs(h - closed).max()), "tol": 1e-11,
                                    "moved": float(min(np.abs(x0 - x0.mean()).max(), abs(h[-1].mean() - h[0].mean())))}
    # rank-1, ordered DPO, identical pairs: crossing step = flow time / (eta (a + 2 b P) / P), Euler O(eta)
    p2, beta2, a2, b2, eta2, dref = 8, 1.0, 0.5, 0.3, 0.02, -2.0
    ref2 = np.tile(np.log([0.1, 0.1 * math.exp(-dref), 0.05]), (p2, 1))
    u2 = np.concatenate([np.ones(p2), -np.ones(p2)])
    lin = run_linearised("dpo", beta=beta2, params={}, q=np.ones(p2), ref_logp_w=ref2[:, 0], ref_logp_l=ref2[:, 1],
                         z0=np.concatenate([ref2[:, 0], ref2[:, 1]]), kernel=a2 * np.eye(2 * p2) + b2 * np.outer(u2, u2),
                         optimizer="sgd", lr=eta2, steps=3000, n_tokens=4)
    crossed = int(np.argmax(lin.delta[:, 0] > 0)) if (lin.delta[:, 0] > 0).any() else None
    expected = float(ordered_pair_flow_time(np.array([dref]), beta2)[0]) / (eta2 * (a2 + 2 * b2 * p2) / p2)
    out["rank1_dpo_flow_time"] = {"max_abs_diff": (abs(crossed - expected) / expected) if crossed else math.inf,
                                  "tol": 0.01, "moved": float(lin.delta[-1, 0] - lin.delta[0, 0]),
                                  "crossing_step": crossed, "closed_form_step": expected}
    return out


def lm_kernel_numeric(ctx: CheckContext) -> MethodResult:
    """Numeric: the kernel dynamics' analytic reductions (no LM). Literal: every reduction within its tolerance (and
    the run moved, so the agreement is not the trivial one). The amendment keeps them as stated."""
    red = _reductions()
    ok = {k: bool(v["max_abs_diff"] <= v["tol"] and abs(v["moved"]) > 0.1) for k, v in red.items()}
    literal = all(ok.values())
    failed = [k for k, v in ok.items() if not v]
    summary = (f"{sum(ok.values())}/{len(ok)} reductions hold: K = P I is the tabular prediction (SGD max diff "
               f"{max(v['max_abs_diff'] for k, v in red.items() if k.startswith('identity_sgd')):.1e}, Adam "
               f"{max(v['max_abs_diff'] for k, v in red.items() if k.startswith('identity_adam')):.1e}); rank-1 IPO "
               f"closed form {red['rank1_ipo_closed_form']['max_abs_diff']:.1e}; rank-1 DPO flow time rel. error "
               f"{red['rank1_dpo_flow_time']['max_abs_diff']:.2e}")
    return MethodResult(literal=literal, amended=literal, summary=summary, evidence={"reductions": red},
                        depends_on=("toy_lm.kernel", "toy_lm.kernel_claim._reductions", "toy_lm.tabular",
                                    "toy_lm.train.make_optimizer",
                                    "toy_lm.train.uses_mean", "toy_bandits.dynamics.ordered_pair_flow_time"),
                        counterexample=None if literal else {"reductions_that_fail": failed})


def lm_kernel_training(ctx: CheckContext) -> MethodResult:
    """Training: the LM stage's DPO cells against the linearised prediction (literal) and, where the literal fails,
    the re-linearised one (the registry's amendment). Both tests three-valued; inconclusive when what decides is
    still undecided after the seed budget."""
    from toy_lm.claims import _evidence_common
    from toy_lm.design import and3
    from toy_lm.decide import line
    from toy_lm.stage import get_stage

    from dpo_rlhf_checks.registry import get_claim

    stage = get_stage(ctx)
    t0 = time.perf_counter()
    frac = {"linear": evaluate_fraction(stage, "linear")}
    slopes = {"linear": {o: time_in_U_slopes(stage, o, "linear") for o in stage.cfg.optimizers}}
    literal = and3([o["decided"] for o in frac["linear"].values()] + [s["decided"] for s in slopes["linear"].values()])
    amended = None
    variants = ("linear",)
    if literal is not True:
        frac["relin"] = evaluate_fraction(stage, "relin")
        slopes["relin"] = {o: time_in_U_slopes(stage, o, "relin") for o in stage.cfg.optimizers}
        amended = and3([o["decided"] for o in frac["relin"].values()] + [s["decided"] for s in slopes["relin"].values()])
        variants = VARIANTS
    from figures.kernel import kernel_figures
    from toy_lm.kernel_forecast import forecast

    fc = forecast(stage, lambda seed: seed_lin(stage, seed).jacobian)
    figures = kernel_figures(stage, ctx.fig_dir, variants=variants)
    seconds = time.perf_counter() - t0
    needed = "linear" if literal is None or literal is True else "relin"
    inconclusive = None
    if literal is None or (literal is False and amended is None):
        undecided = [line(o) for o in frac[needed].values() if o["decided"] is None]
        undecided += [f"time-in-U slope {o} ({needed}): {_no_fit(s)}" for o, s in slopes[needed].items()
                      if s["decided"] is None]
        inconclusive = f"still undecided after the seed budget ({stage.cfg.max_seeds} seeds): " + "; ".join(undecided)
    failed = [line(o) for o in frac["linear"].values() if o["decided"] is False]
    failed += [f"time-in-U slope {o}: linearised {s['pred_slope']:.3f} vs LM {s['lm_slope']:.3f} +- "
               f"{KERNEL.slope_se:g} x {s['lm_stderr']:.3f}" for o, s in slopes["linear"].items() if s["decided"] is False]
    rows = cell_table(stage, variants)
    ev = _evidence_common(stage)
    ev.update({"kernel_design": KERNEL.to_dict(), "fraction_comparisons": {v: list(o.values()) for v, o in frac.items()},
               "time_in_U_slopes": slopes, "table": rows, "table_markdown": table_markdown(rows, variants),
               "decomposition_and_squeezing": describe(stage, "linear"),
               "kernel_seconds": round(seconds, 2),
               "forecast": fc, "forecast_role": "descriptive: decides no verdict (pre-registered in "
                                                   "toy_lm/kernel_forecast.py; gates score's forecast column)",
               "jacobian": _jacobian_sizes(stage)})
    n_dec = sum(o["decided"] is not None for v in frac.values() for o in v.values())
    n_all = sum(len(v) for v in frac.values())
    summary = (f"{n_dec}/{n_all} fraction comparisons decided; " + "; ".join(line(o) for o in frac["linear"].values())
               + "; slopes " + ", ".join(
                   f"{o}: linearised {_f(s['pred_slope'])} vs LM {_f(s['lm_slope'])} (se {_f(s['lm_stderr'])})"
                   for o, s in slopes["linear"].items()))
    counterexample = {"comparisons_that_fail": failed} if literal is False else None
    return MethodResult(literal=literal, amended=amended, summary=summary, evidence=ev,
                        depends_on=_DEPS, counterexample=counterexample,
                        amended_statement=get_claim("lm-kernel-prediction").amendment if (literal is False and amended)
                        else None, inconclusive=inconclusive, figures=figures)


def evidence_markdown(ev: dict) -> str:
    """The training method's deciding slope comparisons and the forecast's validation, as Markdown (lm-map's report
    prints them under the claim's verdict; the fraction comparisons are in the summary line)."""
    lines = [f"Fraction in U, per compared cell: mean over seeds of observed - predicted, its interval (level "
             f"1 - alpha/K) and the decision within +-{KERNEL.margin:g} at the first look that decides (re-linearised: "
             "evaluated because the literal did not hold):", "",
             "| variant | cell | seeds | mean | interval | decided |", "|---|---|---|---|---|---|"]
    for v, outs in ev.get("fraction_comparisons", {}).items():
        for o in outs:
            lo, hi = o["interval"]
            dec = {True: "within", False: "outside", None: "undecided"}[o["decided"]]
            lines.append(f"| {v} | {_cell(tuple(o['cell']))} | {o['n_seeds']} | {_f(o['mean'])} | "
                         f"[{lo:.3f}, {hi:.3f}] | {dec} |")
    lines += ["", "Time-in-U slopes (ordered DPO, misranked train pairs, every seed the claim's looks trained; Tobit, "
             f"decided when |predicted - LM| <= {KERNEL.slope_se:g} LM standard errors, undecided when a fit did not "
             "converge):", "", "| variant | optimizer | LM slope (se) | predicted slope (se) | abs. difference | "
             f"{KERNEL.slope_se:g} LM se | decided | pairs (LM / predicted censored) |", "|---|---|---|---|---|---|---|---|"]
    for v, by_opt in ev.get("time_in_U_slopes", {}).items():
        for o, s in by_opt.items():
            diff = (abs(s["pred_slope"] - s["lm_slope"]) if None not in (s["pred_slope"], s["lm_slope"]) else None)
            bound = KERNEL.slope_se * s["lm_stderr"] if s["lm_stderr"] is not None else None
            lines.append(f"| {v} | {o} | {_f(s['lm_slope'])} ({_f(s['lm_stderr'])}) | {_f(s['pred_slope'])} "
                         f"({_f(s['pred_stderr'])}) | {_f(diff)} | {_f(bound)} | "
                         f"{s['decided'] if s['decided'] is not None else 'undecided: ' + _no_fit(s)} | "
                         f"{s['n_pairs']} ({s.get('n_lm_censored', 0)} / {s.get('n_pred_censored', 0)}) |")
    fc = ev.get("forecast") or {}
    if fc.get("gain_kernel"):
        g, g2 = fc["gain_kernel"], fc["gain_secondary"]
        auc = (lambda k: f"{np.mean(fc[k]):.3f} (per seed {min(fc[k]):.3f}-{max(fc[k]):.3f})")
        lines += ["", f"Pre-training forecast (toy_lm/kernel_forecast.py, pre-registered; {len(fc['seeds'])} seeds): "
                  f"AUC for 'in U at the end' of the misranked train pairs, mean over the DPO cells per seed, then over "
                  f"seeds: beta |delta_ref| alone {auc('per_seed_auc_baseline')}, with the own-kernel term "
                  f"{auc('per_seed_auc_kernel')}. Gain of the kernel score {g['mean']:+.3f}, "
                  f"{100 * g['level']:.0f}% interval [{g['lo']:+.3f}, {g['hi']:+.3f}]; secondary (own + cross drift, "
                  f"descriptive) {g2['mean']:+.3f} [{g2['lo']:+.3f}, {g2['hi']:+.3f}]. "
                  + ("A gain (interval above 0): `score`'s forecast column is earned." if fc["gain"] else
                     "No gain (the interval reaches 0): `score` keeps its columns.")]
    elif fc:
        lines += ["", f"Pre-training forecast: not evaluated ({fc.get('reason', 'no seeds')})."]
    return "\n".join(lines) + "\n"


def _no_fit(s: dict) -> str:
    """Why a time-in-U slope comparison has no decision: which Tobit fit did not converge, and what it reported."""
    if not s.get("n_pairs"):
        return "no misranked pair in these cells"
    bad = [f"the {'LM' if k == 'lm' else 'predicted'} times' fit did not converge ({f['reason']})"
           for k, f in s.get("fits", {}).items() if not f["converged"]]
    return "; ".join(bad) or "no slope"


def _f(x):
    return "n/a" if x is None else f"{x:.3f}"


def _jacobian_sizes(stage) -> dict:
    lins = [v for (sid, _), v in _LIN.items() if sid == id(stage)]
    if not lins:
        return {}
    j = lins[0].jacobian
    return {"rows": int(j.shape[0]), "params": int(j.shape[1]), "megabytes_float64": round(j.numel() * 8 / 2**20, 1),
            "seconds_per_seed_mean": round(float(np.mean([x.seconds for x in lins])), 2), "seeds": len(lins),
            "device": stage.device}


_DEPS = ("toy_lm.kernel", "toy_lm.kernel_claim", "toy_lm.kernel_forecast", "toy_lm.stage", "toy_lm.train",
         "toy_lm.config", "toy_lm.model", "toy_lm.task", "toy_lm.tabular", "toy_lm.predict", "dpo_rlhf_checks.losses", "toy_lm.design",
         "toy_lm.claims", "toy_lm.decide", "toy_lm.ceiling", "figures", "toy_bandits.dynamics",
         "toy_lm.map_progress")  # in lm-map the stage's records are saved (and on --resume read back) through it


def map_section(stage, variants=VARIANTS) -> tuple[str, dict]:
    """The lm-map report's section on the linearised LM (Markdown, and its JSON): per compared cell the LM against the
    tabular, linearised and re-linearised predictions (means over every seed the cell has), the time-in-U slopes, and
    the own/cross decomposition. Descriptive here: the verdict is lm-kernel-prediction's, in ``--all``."""
    rows = cell_table(stage, variants)
    slopes = {v: {o: time_in_U_slopes(stage, o, v) for o in stage.cfg.optimizers} for v in variants}
    desc = describe(stage, "linear")
    lines = ["## Linearised LM (empirical NTK) against the LM", "",
             "Fraction of train pairs in U at the end, mean over seeds: the LM, the tabular prediction (loss-matched "
             "clock), the linearised LM (J at the reference; the run's loss, optimizer, step size and steps) and the "
             f"re-linearised one (J again every {KERNEL.relinearise_every} steps at the LM's parameters); agreement = "
             "per-pair agreement of U membership, rmse = root mean square of predicted - observed delta at the end "
             "(docs/theory.md §17).", "", table_markdown(rows, variants), "",
             "| optimizer | variant | LM slope (se) | predicted slope (se) | within 2 LM se | pairs |", "|---|---|---|---|---|---|"]
    for v, by_opt in slopes.items():
        for o, s in by_opt.items():
            lines.append(f"| {o} | {v} | {_f(s['lm_slope'])} ({_f(s['lm_stderr'])}) | {_f(s['pred_slope'])} "
                         f"({_f(s['pred_stderr'])}) | {s.get('decided')} | {s['n_pairs']} |")
    lines += ["", "Own/cross decomposition of the misranked pairs' change of delta (linearised, mean over seeds): "
              "own = the pair's own gradient's share, cross = the other pairs'; out_by_cross / kept_in_by_cross = "
              "fraction of misranked pairs carried out of U / kept in U by the cross share (the own share alone "
              "would have ended the other way).", "",
              "| cell | own | cross | out_by_own | out_by_cross | kept_in_by_cross | in_both | pushdown on chosen | "
              "pushdown on other |", "|---|---|---|---|---|---|---|---|---|"]
    for cell, d in desc.items():
        dec, sq = d["decomposition"], d["squeezing"]
        lines.append(f"| {cell} | {_f(dec['own_mean'])} | {_f(dec['cross_mean'])} | {_f(dec['out_by_own'])} | "
                     f"{_f(dec['out_by_cross'])} | {_f(dec['kept_in_by_cross'])} | {_f(dec['in_both'])} | "
                     f"{_f(sq['pushdown_on_chosen'])} | {_f(sq['pushdown_on_other'])} |")
    return "\n".join(lines) + "\n", {"table": rows, "time_in_U_slopes": slopes, "decomposition_and_squeezing": desc,
                                     "design": KERNEL.to_dict()}
