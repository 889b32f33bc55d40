"""Numeric, convex and simulation evidence for the equivalence, undesirable-space and certificate claims.

Each check gathers its own evidence (at least two independent methods, agreeing within a
stated tolerance), then merges the symbolic check of the same name from :mod:`theory.claims`
(imported lazily, inside the function; absent or not-checked symbolic results are recorded and
left out of the verdict). The verdict is computed by :func:`decide` from measured booleans:

    literal  = every method's literal test passed,
    amended  = every method's amended test passed.

Readings (THEORY.md §4): (a) population, BT labels q = sigma(dr); (b) ordered pair, deterministic
labels; (c) alignment of the policy DPO converges to. delta is always the *summed* log-probability
difference here (tabular policies: one "token"), except where the per-token mean is named.
"""

from __future__ import annotations

import importlib
import math
import time
from typing import Any

import numpy as np

from dpo_rlhf_checks.result import VERDICTS, CheckContext, CheckResult, decide

LOG2 = math.log(2.0)


# --------------------------------------------------------------------------------------------------
# Merging with the symbolic checks
# --------------------------------------------------------------------------------------------------

def _symbolic(name: str, ctx: CheckContext) -> tuple[CheckResult | None, dict[str, Any]]:
    """Run ``theory.claims.<name>`` if it exists; (result or None, its evidence entry)."""
    try:
        module = importlib.import_module("theory.claims")
    except ModuleNotFoundError as err:
        if err.name in ("theory", "theory.claims"):
            return None, {"available": False, "reason": "theory.claims is not present"}
        raise
    func = getattr(module, name, None)
    if func is None:
        return None, {"available": False, "reason": f"theory.claims has no {name}"}
    result = func(ctx)
    entry = {"available": True, "verdict": result.verdict, "methods": list(result.methods),
             "summary": result.summary, "evidence": result.evidence, "counterexample": result.counterexample,
             "amended_statement": result.amended_statement}
    if result.verdict == VERDICTS[3]:  # not checked: no evidence to merge
        return None, {**entry, "available": False}
    return result, entry


def _merge(name: str, ctx: CheckContext, *, methods: list[str], numeric: dict[str, Any], literal: bool,
           amended: bool, summary: str, counterexample: dict | None, amended_statement: str | None,
           figures: list[str]) -> CheckResult:
    """Combine this module's evidence with the symbolic check's into one computed verdict."""
    sym, sym_entry = _symbolic(name, ctx)
    all_methods = list(methods)
    sym_literal = sym_amended = True
    if sym is not None:
        all_methods += [m for m in sym.methods if m not in all_methods]
        sym_literal = sym.verdict == VERDICTS[0]
        sym_amended = sym.verdict in VERDICTS[:2]
        agree = (sym_literal == bool(literal)) and (sym_amended == bool(amended or literal))
        sym_entry["agrees_with_numeric"] = agree
        summary += f" | symbolic: {sym.verdict}" + ("" if agree else " (DISAGREES with numeric)")
    verdict = decide(bool(literal) and sym_literal, bool(amended or literal) and sym_amended)
    if verdict == VERDICTS[0]:
        counterexample, amended_statement = None, None
    elif counterexample is None and sym is not None:
        counterexample = sym.counterexample
    if verdict == VERDICTS[1] and not amended_statement and sym is not None:
        amended_statement = sym.amended_statement
    return CheckResult(verdict=verdict, methods=all_methods, summary=summary,
                       evidence={"symbolic": sym_entry, "numeric": numeric}, counterexample=counterexample,
                       amended_statement=amended_statement, figures=figures)


def _figures(func_name: str, *args, **kwargs) -> list[str]:
    from figures import map_figures

    return getattr(map_figures, func_name)(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# Instances
# --------------------------------------------------------------------------------------------------

def _population_instances(beta: float, rng: np.random.Generator):
    """K = 4, all 6 pairs. Pair (0, 1) has delta_ref in {-2, -1} and delta* in {-1, -0.4, 0.4, 1}.

    Half violate the assumption for pair (0, 1); rewards of responses 2, 3 are beta N(0, 1).
    Returns pi_ref (8, 4), reward (8, 4), pairs (8, 6, 2).
    """
    combos = [(d, s) for d in (-2.0, -1.0) for s in (-1.0, -0.4, 0.4, 1.0)]
    pi_ref, reward = [], []
    for delta_ref, delta_star in combos:
        p0 = 0.6 / (1.0 + math.exp(-delta_ref))  # p0 / p1 = e^{delta_ref}, p0 + p1 = 0.6
        pi_ref.append([p0, 0.6 - p0, 0.25, 0.15])
        reward.append([beta * (delta_star - delta_ref), 0.0, *(beta * rng.standard_normal(2))])
    pairs = np.array([[(i, j) for i in range(4) for j in range(i + 1, 4)]] * len(combos))
    return np.array(pi_ref), np.array(reward), pairs


# --------------------------------------------------------------------------------------------------
# equiv-population
# --------------------------------------------------------------------------------------------------

def check_equiv_population(ctx: CheckContext) -> CheckResult:
    """Reading (a): the BT-labelled DPO loss is minimised at pi*, with or without the assumption.

    Methods: (1) "simulation": gradient descent (:func:`toy_bandits.dynamics.train_tabular`, labels="bt",
    all 6 pairs of K = 4 responses labelled q = sigma(dr)) converges to the Gibbs policy pi*; tolerance
    |delta_T - delta*| <= 1e-6 on every pair, |pi_T - pi*| <= 1e-6. (2) "numeric": the 1-D minimiser of
    the population loss l_q(h) (:func:`dpo_rlhf_checks.losses.dpo_bt_loss`) by bounded Brent search is
    h = dr, tolerance 1e-6; and the phase diagram agrees with the per-point closed form.
    """
    import torch
    from scipy.optimize import minimize_scalar

    from dpo_rlhf_checks.losses import dpo_bt_loss
    from toy_bandits.dynamics import train_tabular
    from toy_bandits.maps import phase_diagram
    from toy_bandits.rlhf import gibbs_policy

    rng = np.random.default_rng(ctx.seed)
    tol = 1e-6
    betas = (0.5, 2.0) if ctx.quick else (0.5, 1.0, 2.0)
    rows_out, worst_delta, worst_pi = [], 0.0, 0.0
    for beta in betas:
        pi_ref, reward, pairs = _population_instances(beta, rng)
        rows = np.arange(pi_ref.shape[0])[:, None]
        dr = reward[rows, pairs[..., 0]] - reward[rows, pairs[..., 1]]  # (N, P)
        q = 1.0 / (1.0 + np.exp(-dr))
        # The objective's Hessian in theta is at most beta^2/4 * 4 (Laplacian of K4) / 6 pairs = beta^2/6:
        # lr = 8/beta^2 is below the stability limit 12/beta^2; 1500 steps reach ~1e-13 on these instances.
        traj = train_tabular(pi_ref, pairs, "dpo", beta=beta, steps=1500, lr=8.0 / beta**2, labels="bt", q=q,
                             record_every=1500)
        pi_star = gibbs_policy(pi_ref, reward, beta)
        delta_star = traj.delta_ref + dr / beta  # (N, P) closed form, THEORY.md §1
        err_delta = np.abs(traj.delta[-1] - delta_star)
        err_pi = np.abs(traj.policy - pi_star).max(axis=1)
        worst_delta, worst_pi = max(worst_delta, err_delta.max()), max(worst_pi, err_pi.max())
        for n in range(pi_ref.shape[0]):
            rows_out.append({"beta": beta, "pi_ref": pi_ref[n], "reward": reward[n], "delta_ref_01": traj.delta_ref[n, 0],
                             "dr_01": dr[n, 0], "delta_star_01": delta_star[n, 0], "delta_T_01": traj.delta[-1, n, 0],
                             "assumption_holds_01": bool(delta_star[n, 0] > 0),
                             "max_err_delta": err_delta[n].max(), "max_err_pi": err_pi[n],
                             "converged_to_pi_star": bool(err_delta[n].max() <= tol and err_pi[n] <= tol),
                             "limit_prefers_y_w": bool(traj.delta[-1, n, 0] > 0)})

    # Method 2: the 1-D population loss in h = beta (delta - delta_ref), minimised by Brent's method.
    brent_err = []
    for dr in np.linspace(-4, 4, 9 if ctx.quick else 33):
        q = 1.0 / (1.0 + math.exp(-dr))

        def l_q(h, q=q):
            z = torch.full((1,), -30.0, dtype=torch.float64)  # valid log-probabilities; only differences matter
            return float(dpo_bt_loss(z + h, z, z, z, beta=1.0, q=q).losses[0])

        res = minimize_scalar(l_q, bounds=(-20.0, 20.0), method="bounded", options={"xatol": 1e-10})
        brent_err.append(abs(res.x - dr))
    brent_max = float(max(brent_err))

    # The phase diagram (population reading) against the per-point closed form on random points.
    d_grid, s_grid = np.linspace(-6, 6, 1000), np.linspace(-6, 6, 1000)
    t0 = time.perf_counter()
    pd = phase_diagram(d_grid, s_grid, margin=0.5)
    pd_seconds = time.perf_counter() - t0
    ia, ib = rng.integers(0, 1000, 500), rng.integers(0, 1000, 500)
    point = d_grid[ia] + s_grid[ib]
    pd_agree = bool(np.all(pd.dpo_misaligned[ia, ib] == (point < 0))
                    and np.all(pd.assumption_fails[ia, ib] == (point <= 0))
                    and np.allclose(pd.delta_cpo[ia, ib], np.maximum(point, 0.5), atol=1e-12))

    holds = [r for r in rows_out if r["assumption_holds_01"]]
    fails = [r for r in rows_out if not r["assumption_holds_01"]]
    equiv_when_holds = all(r["converged_to_pi_star"] for r in holds)
    equiv_when_fails = all(r["converged_to_pi_star"] for r in fails)
    aligned_iff_assumption = all(r["limit_prefers_y_w"] == r["assumption_holds_01"] for r in rows_out)
    methods_agree = brent_max <= tol and worst_delta <= tol
    # Literal "equivalent iff the assumption holds": equivalence on the holding instances and NOT on the failing.
    literal = equiv_when_holds and not any(r["converged_to_pi_star"] for r in fails)
    amended = equiv_when_holds and equiv_when_fails and methods_agree and aligned_iff_assumption and pd_agree
    cx = None
    if fails:
        r = fails[0]
        cx = {"reading": "population (BT labels q = sigma(dr))", "pi_ref": r["pi_ref"], "reward": r["reward"],
              "beta": r["beta"], "pair": [0, 1], "delta_ref": r["delta_ref_01"], "dr": r["dr_01"],
              "delta_star": r["delta_star_01"], "assumption_holds": False,
              "delta_after_gradient_descent": r["delta_T_01"], "max_abs_err_policy_vs_pi_star": r["max_err_pi"],
              "note": "the assumption fails, yet the BT-labelled DPO minimiser is exactly pi* (equivalence holds)"}
    figures = _figures("phase_diagram_figure", pd, ctx.fig_dir)
    numeric = {"tolerance": tol, "instances": rows_out, "max_abs_err_delta_vs_closed_form": worst_delta,
               "max_abs_err_policy_vs_gibbs": worst_pi, "brent_max_abs_err_h_minus_dr": brent_max,
               "equivalent_when_assumption_holds": equiv_when_holds,
               "equivalent_when_assumption_fails": equiv_when_fails,
               "limit_aligned_iff_assumption": aligned_iff_assumption,
               "phase_diagram": {"grid": [1000, 1000], "seconds": pd_seconds, "agrees_with_closed_form": pd_agree,
                                 "fraction_misaligned": float(pd.dpo_misaligned.mean()),
                                 "fraction_pi_star_in_U": float(pd.pi_star_in_U.mean()),
                                 "margin": pd.margin, "cpo_meets_margin_everywhere": bool(pd.cpo_meets_margin.all())}}
    summary = (f"population DPO converges to pi* on {len(holds)} holding and {len(fails)} failing instances "
               f"(max |delta-delta*| {worst_delta:.1e}, Brent {brent_max:.1e}; tol {tol:g}): equivalence is "
               f"unconditional, the assumption decides only alignment")
    return _merge("check_equiv_population", ctx, methods=["numeric", "simulation"], numeric=numeric,
                  literal=literal, amended=amended, summary=summary, counterexample=cx,
                  amended_statement=("Reading (a): for every instance (assumption or not), the BT-labelled population "
                                     "DPO loss is minimised exactly at delta = delta* = delta_ref + dr/beta, i.e. at "
                                     "the RLHF optimum pi* (all pairs of a BT-consistent graph: at pi* itself). DPO and "
                                     "RLHF are equivalent unconditionally; the assumption decides only whether that "
                                     "common optimum prefers y_w (reading (c))."),
                  figures=figures)


# --------------------------------------------------------------------------------------------------
# equiv-ordered-pair
# --------------------------------------------------------------------------------------------------

def _ordered_grad_at(delta: float, delta_ref: float, beta: float) -> float:
    """dl/d delta of the ordered-pair DPO loss at delta, by autograd through dpo_loss."""
    import torch

    from dpo_rlhf_checks.losses import dpo_loss

    # Valid log-probabilities (<= 0) with the requested differences; the loss sees only the differences.
    base, base_ref = -abs(delta) - 1.0, -abs(delta_ref) - 1.0
    pc = torch.tensor([base + delta], dtype=torch.float64, requires_grad=True)  # policy log pi(y_w)
    pr = torch.tensor([base], dtype=torch.float64)
    rc = torch.tensor([base_ref + delta_ref], dtype=torch.float64)
    rr = torch.tensor([base_ref], dtype=torch.float64)
    loss = dpo_loss(pc, pr, rc, rr, beta=beta).losses.sum()
    (grad,) = torch.autograd.grad(loss, pc)
    return float(grad[0])


def check_equiv_ordered_pair(ctx: CheckContext) -> CheckResult:
    """Reading (b): ordered-pair DPO has no finite minimiser and pi* is never stationary.

    Methods: (1) "numeric": dl/d delta at delta* by autograd through dpo_loss vs the closed form
    -beta sigma(-dr) (tol 1e-12), nonzero on every instance; loss > 0 and strictly decreasing on a delta grid.
    (2) "simulation": train_tabular with ordered labels: loss strictly decreasing, delta strictly increasing
    at every step, delta passes delta* (overshoots pi*); the time to leave U (delta reaches 0) against
    the gradient-flow closed form t = (H + e^H - 1)/(2 beta^2), H = -beta delta_ref (tol |t - t_ode| <=
    lr + 0.02 t_ode) and against an independent numpy recurrence (tol: the same step).
    """
    from toy_bandits.dynamics import first_crossing, ordered_pair_flow_time, train_tabular

    beta, lr = 1.0, 0.05
    cases = [(-3.0, 1.0), (-1.0, 2.0), (0.5, 1.0), (-2.0, 0.5), (1.0, -0.5)]  # (delta_ref, dr)
    grads = []
    for delta_ref, dr in cases:
        delta_star = delta_ref + dr / beta
        g = _ordered_grad_at(delta_star, delta_ref, beta)
        closed = -beta / (1.0 + math.exp(dr))  # -beta sigma(-dr)
        grads.append({"delta_ref": delta_ref, "dr": dr, "beta": beta, "delta_star": delta_star,
                      "assumption_holds": delta_star > 0, "grad_at_pi_star": g, "closed_form": closed,
                      "stationary": abs(g) <= 1e-12})
    grad_err = max(abs(g["grad_at_pi_star"] - g["closed_form"]) for g in grads)
    delta_grid = np.linspace(-10, 60, 701)
    import torch

    from dpo_rlhf_checks.losses import dpo_loss

    z = torch.zeros(delta_grid.size, dtype=torch.float64)
    losses = dpo_loss(torch.as_tensor(delta_grid - 61.0), z - 61.0, z - 1.0, z - 1.0, beta=beta).losses.numpy()
    no_finite_minimiser = bool(np.all(np.diff(losses) < 0) and np.all(losses > 0))

    # Simulation: pairs in U at the reference, deeper and deeper.
    d_refs = np.array([-0.5, -1.0, -2.0, -3.0]) if ctx.quick else np.array([-0.5, -1.0, -2.0, -3.0, -4.0])
    p0 = 0.9 / (1.0 + np.exp(-d_refs))
    pi_ref = np.stack([p0, 0.9 - p0, np.full_like(p0, 0.1)], axis=1)
    t_ode = ordered_pair_flow_time(d_refs, beta)
    steps = int(1.3 * t_ode.max() / lr) + 10
    traj = train_tabular(pi_ref, np.array([[[0, 1]]] * d_refs.size), "dpo", beta=beta, steps=steps, lr=lr)
    cross = first_crossing(traj)[:, 0]
    # Independent recurrence: delta_{k+1} = delta_k + 2 lr beta sigma(-beta (delta_k - delta_ref)).
    rec = np.full(d_refs.size, -1)
    dlt = d_refs.copy()
    for k in range(steps + 1):
        newly = (dlt >= 0) & (rec < 0)
        rec[newly] = k
        dlt = dlt + 2 * lr * beta / (1.0 + np.exp(beta * (dlt - d_refs)))
    t_meas = cross * lr
    ode_ok = bool(np.all(cross >= 0) and np.all(np.abs(t_meas - t_ode) <= lr + 0.02 * t_ode))
    rec_ok = bool(np.all(rec == cross))
    loss_dec = bool(np.all(np.diff(traj.loss[:, :, 0], axis=0) < 0))
    delta_inc = bool(np.all(np.diff(traj.delta[:, :, 0], axis=0) > 0))
    steps_in_U = traj.in_U[:, :, 0].sum(axis=0)
    below_log2_in_U = bool(np.all((traj.loss[:, :, 0] < LOG2)[traj.in_U[:, :, 0]]))

    holds = [g for g in grads if g["assumption_holds"]]
    fails = [g for g in grads if not g["assumption_holds"]]
    # Literal "equivalent iff the assumption": pi* stationary where it holds, not where it fails.
    literal = all(g["stationary"] for g in holds) and not any(g["stationary"] for g in fails)
    amended = (not any(g["stationary"] for g in grads) and grad_err <= 1e-12 and no_finite_minimiser and ode_ok
               and rec_ok and loss_dec and delta_inc and below_log2_in_U)
    g0 = holds[0]
    cx = {"reading": "ordered pair (deterministic label)", "beta": beta, "delta_ref": g0["delta_ref"], "dr": g0["dr"],
          "delta_star": g0["delta_star"], "assumption_holds": True, "dl_ddelta_at_pi_star": g0["grad_at_pi_star"],
          "loss_at_delta_ref_plus_60": float(losses[-1]),
          "note": "the assumption holds, yet pi* is not a stationary point of l and l has no finite minimiser"}
    figures = _figures("crossing_figure", d_refs, t_meas, t_ode, beta, lr, ctx.fig_dir)
    numeric = {"gradient_at_pi_star": grads, "grad_max_abs_err": grad_err, "tolerance_grad": 1e-12,
               "loss_strictly_decreasing_positive_on_grid": no_finite_minimiser,
               "loss_at_grid_end": float(losses[-1]), "delta_grid": [float(delta_grid[0]), float(delta_grid[-1])],
               "training": {"beta": beta, "lr": lr, "steps": steps, "delta_ref": d_refs, "crossing_step": cross,
                            "crossing_time": t_meas, "ode_time": t_ode, "recurrence_step": rec,
                            "tolerance_time": "|t - t_ode| <= lr + 0.02 t_ode", "ode_agrees": ode_ok,
                            "recurrence_agrees": rec_ok, "loss_strictly_decreasing": loss_dec,
                            "delta_strictly_increasing": delta_inc, "steps_in_U": steps_in_U,
                            "loss_below_log2_whenever_in_U": below_log2_in_U,
                            "final_delta": traj.delta[-1, :, 0]}}
    summary = (f"ordered-pair DPO: dl/ddelta at pi* = -beta sigma(-dr) != 0 on all {len(grads)} instances "
               f"(autograd vs closed form {grad_err:.1e}); loss -> 0 only as delta -> inf; time in U "
               f"{t_meas.tolist()} vs ODE {np.round(t_ode, 3).tolist()}")
    return _merge("check_equiv_ordered_pair", ctx, methods=["numeric", "simulation"], numeric=numeric,
                  literal=literal, amended=amended, summary=summary, counterexample=cx,
                  amended_statement=("Reading (b): for every instance, with or without the assumption, the ordered-pair "
                                     "loss l = softplus(-beta(delta - delta_ref)) is strictly decreasing in delta, has "
                                     "no finite minimiser (inf l = 0 as delta -> inf), and pi* is never stationary "
                                     "(dl/ddelta at pi* = -beta sigma(-dr) != 0). Training drives delta up "
                                     "monotonically; a pair with delta_ref < 0 stays in U for a gradient-flow time "
                                     "(H + e^H - 1)/(2 beta^2), H = -beta delta_ref (tabular softmax, one pair)."),
                  figures=figures)


# --------------------------------------------------------------------------------------------------
# undesirable-space
# --------------------------------------------------------------------------------------------------

def check_undesirable_space(ctx: CheckContext) -> CheckResult:
    """THEORY.md §6 (and the §7 bridge for U_eps), by a simplex grid, random instances and CVXPY.

    Methods: (1) "numeric": 3-simplex cell-centroid grid (n = 300, 90 000 cells): the cells with DPO loss
    (dpo_rlhf_checks.losses.dpo_loss) < log 2 and pi(y_w) < pi(y_l) are exactly the cells with
    delta_ref < delta < 0, and their area share matches max(0, 1/2 - sigma(delta_ref)) within 2/n.
    (2) "simulation": random instances (Dirichlet(1) references on K = 4, N(0, 1) rewards, a uniform pair
    labelled by reward order, beta log-uniform in [0.05, 20]): pi* (Gibbs, log space) is in U on every
    instance with beta delta_ref + dr < 0; random points of U all have loss < log 2; violation rates by
    Monte Carlo vs quadrature (within 4.5 standard errors). (3) "convex": U_eps by CVXPY (CLARABEL): its
    emptiness boundary equals l_crit = softplus(beta delta_ref) within 1e-6, and the RLHF-best and
    KL-closest policies in U_eps match their KKT closed forms within 1e-5.
    """
    import torch

    from dpo_rlhf_checks.losses import critical_loss, dpo_loss
    from toy_bandits.maps import (UEpsProblem, delta_at_loss, pair_target_policy, random_pair_instances,
                                  simplex_region, violation_rates)
    from toy_bandits.rlhf import gibbs_policy, log_gibbs_policy

    rng = np.random.default_rng(ctx.seed + 1)
    # (1) simplex grid, for several references.
    n_grid = 150 if ctx.quick else 300
    simplex_rows = []
    for d_ref in (-2.0, -0.7, 0.0, 0.8):
        p0 = 0.8 / (1.0 + math.exp(-d_ref))
        reg = simplex_region([p0, 0.8 - p0, 0.2], n=n_grid)
        simplex_rows.append({"delta_ref": d_ref, "region_equals_U_cells": bool(np.array_equal(reg.region, reg.in_U)),
                             "n_cells_in_region": int(reg.region.sum()), "area_fraction": reg.area_fraction,
                             "analytic_fraction": reg.analytic_fraction, "tolerance": reg.tolerance,
                             "agrees": abs(reg.area_fraction - reg.analytic_fraction) <= reg.tolerance,
                             "nonempty": bool(reg.region.any()), "max_loss_in_U": float(reg.loss[reg.in_U].max())
                             if reg.in_U.any() else None})
    nonempty_iff_grid = all(r["nonempty"] == (r["delta_ref"] < 0) for r in simplex_rows)
    grid_ok = all(r["region_equals_U_cells"] and r["agrees"] for r in simplex_rows)
    fig_ref = np.array([0.8 / (1 + math.exp(0.7)), 0.8 - 0.8 / (1 + math.exp(0.7)), 0.2])
    fig_reg = simplex_region(fig_ref, n=n_grid)
    fig_reward = np.array([0.4, 0.0, -0.3])  # dr = 0.4 < 0.7 = -delta_ref at beta = 1: pi* in U
    fig_star = gibbs_policy(fig_ref, fig_reward, 1.0)

    # (2) random instances.
    n_inst = 5000 if ctx.quick else 20000
    log_ref, reward, w, l = random_pair_instances(n_inst, 4, rng)
    beta = np.exp(rng.uniform(math.log(0.05), math.log(20.0), size=n_inst))
    rows = np.arange(n_inst)
    delta_ref = log_ref[rows, w] - log_ref[rows, l]
    dr = reward[rows, w] - reward[rows, l]
    log_star = log_gibbs_policy(np.exp(log_ref), reward, beta)
    delta_star = log_star[rows, w] - log_star[rows, l]
    fails_strict = beta * delta_ref + dr < 0
    star_in_U = (delta_ref < delta_star) & (delta_star < 0)
    pi_star_in_U_ok = bool(np.all(star_in_U[fails_strict & (dr > 0)]))
    closed_vs_gibbs = float(np.max(np.abs(delta_star - (delta_ref + dr / beta))))
    # random points of U (delta uniform in (delta_ref, 0)) have loss < log 2
    neg = delta_ref < 0
    frac = rng.uniform(1e-9, 1 - 1e-9, size=int(neg.sum()))
    d_u = delta_ref[neg] * frac
    base = -np.abs(d_u) - 1.0
    t = lambda x: torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64))  # noqa: E731
    loss_u = dpo_loss(t(base + d_u), t(base), t(log_ref[rows, w][neg]), t(log_ref[rows, l][neg]),
                      beta=1.0).losses.numpy()
    # The sign of l - log 2 does not depend on beta; evaluate at the instances' betas too.
    loss_u_beta = np.logaddexp(0.0, -beta[neg] * (d_u - delta_ref[neg]))
    loss_below = bool(np.all(loss_u < LOG2) and np.all(loss_u_beta < LOG2))
    # violation rates: Monte Carlo vs quadrature
    betas_v = np.array([0.05, 0.2, 1.0, 5.0, 20.0])
    ks_v = np.array([2, 5, 20])
    n_v = 4000 if ctx.quick else 20000
    rates = violation_rates(betas_v, ks_v, n_samples=n_v, seed=ctx.seed, concentration="1")
    rates_k = violation_rates(betas_v, ks_v, n_samples=n_v, seed=ctx.seed + 7, concentration="1/K")
    z_max = float(max(np.max(np.abs(r.mc - r.exact) / r.mc_se) for r in (rates, rates_k)))
    rates_ok = z_max <= 4.5

    # (3) CVXPY U_eps.
    cvx_cases = [(np.array([0.1, 0.6, 0.3]), np.array([1.0, 0.0, 0.5]), 1.0),
                 (np.array([0.05, 0.25, 0.3, 0.4]), np.array([0.5, 0.0, 0.2, -0.4]), 0.3),
                 (np.array([0.5, 0.2, 0.3]), np.array([0.0, 0.3, 0.1]), 2.0)]
    if ctx.quick:
        cvx_cases = cvx_cases[:2]
    cvx_rows = []
    for pi_ref_c, reward_c, beta_c in cvx_cases:
        prob = UEpsProblem(pi_ref_c, reward_c, beta_c, 0, 1)
        boundary = prob.emptiness_boundary()
        l_crit = float(critical_loss(torch.tensor(prob.delta_ref), beta=beta_c))
        d_star = prob.delta_ref + (reward_c[0] - reward_c[1]) / beta_c
        l_star = float(np.logaddexp(0.0, -beta_c * (d_star - prob.delta_ref)))
        best_err = closest_err = 0.0
        eps_list = [l_crit + 0.02, 0.5 * (l_crit + LOG2), LOG2 + 0.1, l_crit - 0.02]
        nonempty_pattern = []
        for eps in eps_list:
            if eps <= 0:
                continue
            sol = prob.solve(eps)
            nonempty_pattern.append((eps, sol.nonempty, eps >= l_crit))
            if sol.nonempty:
                d_eps = float(delta_at_loss(eps, prob.delta_ref, beta_c))
                cf_best = pair_target_policy(pi_ref_c, reward_c, beta_c, 0, 1, float(np.clip(d_star, d_eps, 0.0)))
                cf_close = pair_target_policy(pi_ref_c, np.zeros_like(reward_c), 1.0, 0, 1,
                                              float(np.clip(prob.delta_ref, d_eps, 0.0)))
                best_err = max(best_err, float(np.abs(sol.best - cf_best).max()))
                closest_err = max(closest_err, float(np.abs(sol.closest - cf_close).max()))
        cvx_rows.append({"pi_ref": pi_ref_c, "reward": reward_c, "beta": beta_c, "delta_ref": prob.delta_ref,
                         "delta_star": d_star, "loss_at_pi_star": l_star, "emptiness_boundary_cvxpy": boundary,
                         "l_crit": l_crit, "boundary_err": abs(boundary - l_crit),
                         "nonempty_pattern_eps_cvxpy_bridge": nonempty_pattern,
                         "best_vs_closed_form": best_err, "closest_vs_closed_form": closest_err})
    cvx_ok = all(r["boundary_err"] <= 1e-6 and r["best_vs_closed_form"] <= 1e-5 and r["closest_vs_closed_form"] <= 1e-5
                 and all(a == b for _, a, b in r["nonempty_pattern_eps_cvxpy_bridge"]) for r in cvx_rows)
    u_eps_nonempty_iff = all((r["l_crit"] < LOG2) == (r["delta_ref"] < 0) for r in cvx_rows)

    # The boundary case of the literal statement: beta delta_ref + dr = 0 exactly (assumption fails as an equality).
    tie_ref = np.array([0.25, 0.5, 0.25])
    tie_reward = np.array([math.log(2.0), 0.0, 0.0])
    tie_log_star = log_gibbs_policy(tie_ref, tie_reward, 1.0)
    tie_delta_ref = math.log(0.25) - math.log(0.5)
    tie_dstar_closed = tie_delta_ref + math.log(2.0)
    tie = {"pi_ref": tie_ref, "reward": tie_reward, "beta": 1.0, "delta_ref": tie_delta_ref, "dr": math.log(2.0),
           "beta_delta_ref_plus_dr": tie_dstar_closed, "assumption_holds": tie_dstar_closed > 0,
           "pi_star": np.exp(tie_log_star), "delta_star_gibbs": float(tie_log_star[0] - tie_log_star[1]),
           "pi_star_in_U": bool(tie_delta_ref < tie_dstar_closed < 0)}

    strict_ok = (nonempty_iff_grid and grid_ok and pi_star_in_U_ok and loss_below and closed_vs_gibbs <= 1e-9
                 and rates_ok and cvx_ok and u_eps_nonempty_iff)
    literal = strict_ok and tie["pi_star_in_U"]
    figures = (_figures("simplex_figure", fig_reg, fig_ref, fig_star, ctx.fig_dir)
               + _figures("bridge_figure", (-3.0, -1.0, 0.0, 1.0), 1.0, ctx.fig_dir)
               + _figures("violation_rate_figure", rates, ctx.fig_dir)
               + _figures("violation_rate_figure", rates_k, ctx.fig_dir))
    numeric = {
        "simplex_grid": {"cells": n_grid**2, "rows": simplex_rows, "nonempty_iff_delta_ref_negative": nonempty_iff_grid},
        "random_instances": {"n": n_inst, "distribution": "pi_ref ~ Dirichlet(1,1,1,1), r ~ N(0,1) iid, uniform pair "
                             "labelled by reward order, beta log-uniform [0.05, 20]",
                             "n_fail_strict_dr_positive": int(np.sum(fails_strict & (dr > 0))),
                             "pi_star_in_U_all_of_them": pi_star_in_U_ok,
                             "max_abs_delta_star_gibbs_minus_closed_form": closed_vs_gibbs,
                             "points_of_U_checked": int(neg.sum()), "all_have_loss_below_log2": loss_below,
                             "max_loss_on_U_minus_log2": float(max(loss_u.max(), loss_u_beta.max()) - LOG2)},
        "violation_rates": {"distributions": "pi_ref ~ Dirichlet(a) on K responses (a = 1, and a = 1/K), r ~ N(0,1) iid, "
                            "uniform pair labelled by reward order; violation = beta delta_ref + dr < 0 (= pi* in U)",
                            "betas": betas_v, "ks": ks_v, "n_per_cell": n_v, "dirichlet_1_mc": rates.mc,
                            "dirichlet_1_quadrature": rates.exact, "dirichlet_1_over_K_mc": rates_k.mc,
                            "dirichlet_1_over_K_quadrature": rates_k.exact, "max_z_score": z_max,
                            "tolerance": "|MC - quadrature| <= 4.5 standard errors",
                            "note": "with Dirichlet(1) the rate does not depend on K: pi(y_w)/(pi(y_w)+pi(y_l)) ~ U(0,1)"},
        "cvxpy_U_eps": {"solver": "CLARABEL", "cases": cvx_rows, "tolerance_boundary": 1e-6,
                        "tolerance_policy": 1e-5, "all_ok": cvx_ok},
        "tie_case": tie,
    }
    summary = (f"grid: region == U cells, area vs 1/2-sigma(delta_ref) within 2/n; pi* in U on all "
               f"{int(np.sum(fails_strict & (dr > 0)))} random strict-failure instances; U_eps empty iff eps < l_crit "
               f"(max err {max(r['boundary_err'] for r in cvx_rows):.1e}); tie beta*delta_ref+dr=0 puts pi* on U's boundary")
    return _merge("check_undesirable_space", ctx, methods=["numeric", "simulation", "convex"], numeric=numeric,
                  literal=literal, amended=strict_ok, summary=summary,
                  counterexample={"tie": tie, "note": "the assumption fails (as an equality) and dr > 0, but pi* ties "
                                  "(delta* = 0) and so is not in the open set U"},
                  amended_statement=("U = {delta_ref < delta_pi < 0} is non-empty iff delta_ref < 0; every pi in U has "
                                     "DPO loss < log 2 yet prefers y_l (on the 3-simplex U is the wedge of area share "
                                     "1/2 - sigma(delta_ref)); when the assumption fails strictly (beta delta_ref + dr "
                                     "< 0) and dr > 0, pi* lies in U; at the tie beta delta_ref + dr = 0, pi* is on the "
                                     "boundary delta = 0. U_eps = {l <= eps, pi(y_w) <= pi(y_l)} is empty iff "
                                     "eps < l_crit = softplus(beta delta_ref)."),
                  figures=figures)
