"""Convex, numeric and simulation methods of the data-set-level claims (docs/theory.md §13).

Each public function is one method ``fn(ctx) -> MethodResult`` of one claim in the registry; none calls
another method. ``run_all()`` runs every method of the five claims and prints them (benchmarks/run_dataset_claims.py).
"""

from __future__ import annotations

import math
import time

import numpy as np

from dpo_rlhf_checks.registry import get_claim
from dpo_rlhf_checks.result import CheckContext, MethodResult

# ---------------------------------------------------------------------------------------------------------------
# dataset-ordered-minimiser
# ---------------------------------------------------------------------------------------------------------------

H_TOL_CVX = 1e-5  # CVXPY (CLARABEL at tolerance 1e-12) solves the logistic loss to ~1e-7 in theta here
H_TOL_MM = 1e-7
BETA_CVX = 0.7  # CVXPY solves in theta = beta u; h = theta difference / beta is compared at this beta


def _graph_suite(ctx: CheckContext):
    from toy_bandits.dataset import named_graphs, random_labels

    suite = dict(named_graphs())
    rng = np.random.default_rng(ctx.seed + 1310)
    for i in range(6 if ctx.quick else 16):
        k = int(rng.integers(3, 6))
        suite[f"random #{i} (K={k})"] = (k, random_labels(rng, k, int(rng.integers(2, 3 * k))))
    return suite


def _logodds_mismatch(labels, h_scaled: dict) -> tuple[float, dict | None]:
    """max |beta h_ij - log(n_ij/n_ji)| over finite pairs labelled both ways; and the worst pair."""
    worst, where = 0.0, None
    for (i, j), n in labels.items():
        if (j, i) in labels and h_scaled.get((i, j)) is not None:
            err = abs(h_scaled[(i, j)] - math.log(n / labels[(j, i)]))
            if err > worst:
                worst, where = err, {"pair": (i, j), "beta_h": h_scaled[(i, j)], "log(n_ij/n_ji)": math.log(n / labels[(j, i)])}
    return worst, where


def dataset_minimiser_convex(ctx: CheckContext) -> MethodResult:
    """CVXPY on the empirical loss: existence by CVXPY's status on the recession LP (a typed "unbounded"), the
    minimiser by the exponential cone; against the graph condition and the Newton minimiser
    (:func:`toy_bandits.dataset.empirical_minimiser`), on 9 named graphs and random multigraphs (K = 3..5).
    Literal: every data set has a finite minimiser and beta h = log(n_ij/n_ji) on pairs labelled both ways.
    Amended: CVXPY's existence = the strong-connectivity condition, same divergent pairs, |h_cvx - h_Newton| <= 1e-5
    at beta = 0.7 (CVXPY solves for theta = beta u).
    """
    from toy_bandits.dataset import cvx_empirical_minimiser, empirical_minimiser, merge_labels, win_graph

    rows, agree_exist, agree_div, max_err = [], True, True, 0.0
    n_unbounded, logodds_worst, logodds_where, first_unbounded = 0, 0.0, None, None
    for name, (K, raw) in _graph_suite(ctx).items():
        labels = merge_labels(raw, K)
        cvx = cvx_empirical_minimiser(labels, K)
        graph = win_graph(labels, K)
        opt = empirical_minimiser(labels, K, beta=BETA_CVX)
        exist_ok = (cvx.status == "finite") == graph.finite
        div_ok = set(cvx.divergent) == set(graph.divergent)
        # compare theta differences on the non-divergent pairs (per-SCC constants are free)
        errs = [abs((cvx.theta[i] - cvx.theta[j]) / BETA_CVX - opt.h[(i, j)]) for (i, j) in labels
                if opt.h[(i, j)] is not None]
        err = max(errs) if errs else 0.0
        agree_exist &= exist_ok
        agree_div &= div_ok
        max_err = max(max_err, err)
        n_unbounded += cvx.status == "unbounded"
        if cvx.status == "unbounded" and first_unbounded is None:
            first_unbounded = {"graph": name, "labels": raw, "cvxpy_lp_status": cvx.lp_status,
                               "divergent_pairs": list(cvx.divergent)}
        scaled = {p: (None if p in cvx.divergent else float(cvx.theta[p[0]] - cvx.theta[p[1]])) for p in labels}
        lw, where = _logodds_mismatch(labels, scaled)
        if lw > logodds_worst:
            logodds_worst, logodds_where = lw, {"graph": name, "labels": raw, **where}
        rows.append({"graph": name, "K": K, "cvxpy": cvx.status, "lp_status": cvx.lp_status,
                     "strongly_connected_components": graph.finite, "divergent": list(cvx.divergent),
                     "max_h_err_vs_newton": err})
    literal = bool(n_unbounded == 0 and logodds_worst <= H_TOL_CVX)
    amended = bool(agree_exist and agree_div and max_err <= H_TOL_CVX)
    cex = None if literal else {"no_finite_minimiser": first_unbounded, "pooled_not_pair_logodds": logodds_where}
    summary = (f"{len(rows)} graphs: {n_unbounded} unbounded (CVXPY LP status), existence = strong connectivity on "
               f"all: {agree_exist}, divergent pairs equal: {agree_div}, max |h_cvx - h_newton| = {max_err:.1e}; "
               f"max |beta h - log(n_ij/n_ji)| = {logodds_worst:.3f}")
    return MethodResult(literal=literal, amended=amended, summary=summary,
                        evidence={"graphs": rows, "tolerance": H_TOL_CVX},
                        depends_on=(
                            "toy_bandits.dataset._arrays", "toy_bandits.dataset._newton_scores",
                            "toy_bandits.dataset.cvx_empirical_minimiser",
                            "toy_bandits.dataset.empirical_minimiser", "toy_bandits.dataset.merge_labels",
                            "toy_bandits.dataset.win_graph", "toy_bandits.dataset_claims._logodds_mismatch",
                        ), counterexample=cex,
                        amended_statement=(get_claim("dataset-ordered-minimiser").amendment
                                           if amended else None))


def dataset_minimiser_numeric(ctx: CheckContext) -> MethodResult:
    """Zermelo/Hunter MM (:func:`toy_bandits.dataset.bt_mm_fit`): it converges (log-likelihood gradient <= 1e-10)
    exactly on the strongly connected graphs, and its MLE is a stationary point of the empirical loss written with the
    toolkit's per-pair :func:`dpo_rlhf_checks.losses.dpo_loss` (torch autograd, |grad| <= 1e-8), at a policy
    log pi = log pi_ref + theta/beta for random pi_ref and beta. Literal and amended as in the convex method.
    """
    import torch

    from dpo_rlhf_checks.losses import dpo_loss
    from toy_bandits.dataset import bt_mm_fit, merge_labels, win_graph

    rng = np.random.default_rng(ctx.seed + 1320)
    rows, agree, worst_grad, n_div, logodds_worst, where = [], True, 0.0, 0, 0.0, None
    for name, (K, raw) in _graph_suite(ctx).items():
        labels = merge_labels(raw, K)
        fit = bt_mm_fit(labels, K, max_iter=4000)
        finite = win_graph(labels, K).finite
        agree &= fit.converged == finite
        n_div += not fit.converged
        grad_max = None
        if fit.converged:
            beta = float(10 ** rng.uniform(-1, 1))
            log_ref = np.log(rng.dirichlet(np.ones(K)))
            z = log_ref + fit.theta / beta
            log_pi = torch.tensor(z - np.logaddexp.reduce(z), dtype=torch.float64, requires_grad=True)
            ref = torch.tensor(log_ref, dtype=torch.float64)
            w = torch.tensor([p[0] for p in labels])
            l = torch.tensor([p[1] for p in labels])
            n = torch.tensor(list(labels.values()), dtype=torch.float64)
            total = (n * dpo_loss(log_pi[w], log_pi[l], ref[w], ref[l], beta=beta).losses).sum()
            (g,) = torch.autograd.grad(total, log_pi)
            grad_max = float(g.abs().max())
            worst_grad = max(worst_grad, grad_max)
            scaled = {p: float(fit.theta[p[0]] - fit.theta[p[1]]) for p in labels}
            lw, wh = _logodds_mismatch(labels, scaled)
            if lw > logodds_worst:
                logodds_worst, where = lw, {"graph": name, "labels": raw, **wh}
        rows.append({"graph": name, "mm_converged": fit.converged, "strongly_connected": finite,
                     "iterations": fit.iterations, "spread": fit.spread, "dpo_grad_max": grad_max})
    literal = bool(n_div == 0 and logodds_worst <= H_TOL_MM)
    amended = bool(agree and worst_grad <= 1e-8)
    first_div = next((r for r in rows if not r["mm_converged"]), None)
    cex = None if literal else {"mm_diverges": first_div, "pooled_not_pair_logodds": where}
    summary = (f"MM converged on {len(rows) - n_div}/{len(rows)} graphs, = strong connectivity on all: {agree}; "
               f"max |grad dpo_loss| at the MLE {worst_grad:.1e}; max |beta h - log(n_ij/n_ji)| = {logodds_worst:.3f}")
    return MethodResult(literal=literal, amended=amended, summary=summary, evidence={"graphs": rows},
                        depends_on=(
                            "dpo_rlhf_checks.losses.dpo_loss", "dpo_rlhf_checks.losses._rewards",
                            "dpo_rlhf_checks.losses._softplus", "toy_bandits.dataset._arrays",
                            "toy_bandits.dataset.bt_mm_fit", "toy_bandits.dataset.merge_labels",
                            "toy_bandits.dataset.win_graph", "toy_bandits.dataset_claims._logodds_mismatch",
                        ), counterexample=cex,
                        amended_statement=get_claim("dataset-ordered-minimiser").amendment if amended else None)


def _bt_dataset(rng, K, n, beta):  # noqa: N803
    """Random pi_ref, reward and n BT labels on every pair of K responses."""
    pi_ref = rng.dirichlet(np.full(K, 0.7))
    reward = rng.normal(0.0, 1.0, K)
    raw = []
    for i in range(K):
        for j in range(i + 1, K):
            q = 1.0 / (1.0 + math.exp(-(reward[i] - reward[j])))
            k = int(rng.binomial(n, q))
            if k:
                raw.append([i, j, k])
            if n - k:
                raw.append([j, i, n - k])
    return pi_ref, reward, raw


def dataset_minimiser_simulation(ctx: CheckContext) -> MethodResult:
    """The data-set version of the paper's condition, by simulation: K = 4 responses, every pair labelled n times by
    BT(r). Per data set: does a finite minimiser exist (graph condition), and at the optimum found by BFGS on the
    loss (scipy, from u = 0) which human-preferred pairs are ranked the wrong way; predicted per pair by (literal)
    beta delta_ref + log(n_ij/n_ji) > 0, (amended) beta delta_ref + beta h_MLE > 0 with h_MLE from
    :func:`toy_bandits.dataset.empirical_minimiser`, and (pi*'s condition) beta delta_ref + dr > 0.
    """
    from scipy.optimize import minimize

    from toy_bandits.dataset import empirical_minimiser, merge_labels

    rng = np.random.default_rng(ctx.seed + 1330)
    ns = (1, 3, 10, 30, 100)
    per_n = 40 if ctx.quick else 120
    K, beta = 4, 1.0  # noqa: N806
    out, literal_mis, amended_mis, worst_example = [], 0, 0, None
    for n in ns:
        finite, pairs_checked, dis_pistar, lit_bad, am_bad = 0, 0, 0, 0, 0
        for _ in range(per_n):
            pi_ref, reward, raw = _bt_dataset(rng, K, n, beta)
            labels = merge_labels(raw, K)
            opt = empirical_minimiser(labels, K, beta)
            if opt.status != "finite":
                continue
            finite += 1
            w = np.array([p[0] for p in labels]); l = np.array([p[1] for p in labels])  # noqa: E702
            cnt = np.array(list(labels.values()), dtype=float)

            def f(u):
                x = beta * (u[w] - u[l])
                g = np.zeros(K)
                s = cnt * 0.5 * (1 - np.tanh(x / 2))
                np.add.at(g, w, -beta * s); np.add.at(g, l, beta * s)  # noqa: E702
                return float(np.sum(cnt * np.logaddexp(0, -x))), g

            res = minimize(f, np.zeros(K), jac=True, method="BFGS", options={"gtol": 1e-10})
            log_ref = np.log(pi_ref)
            for i in range(K):
                for j in range(K):
                    if reward[i] <= reward[j]:
                        continue  # i is the human-preferred response of the pair
                    bdr = beta * (log_ref[i] - log_ref[j])
                    u_diff = res.x[i] - res.x[j]
                    ranks_i = bdr + beta * u_diff > 0
                    if abs(bdr + beta * u_diff) < 1e-6:
                        continue  # a tie at solver precision decides nothing
                    pairs_checked += 1
                    n_ij, n_ji = labels.get((i, j), 0), labels.get((j, i), 0)
                    lit = bdr + math.log(n_ij / n_ji) > 0 if n_ij and n_ji else n_ij > 0
                    h_mle = opt.u[i] - opt.u[j]
                    am = bdr + beta * h_mle > 0
                    dis_pistar += bool(ranks_i) != (bdr + (reward[i] - reward[j]) > 0)
                    if lit != ranks_i:
                        lit_bad += 1
                        if worst_example is None or (worst_example["log(n_ij/n_ji)"] is None and n_ij and n_ji):
                            worst_example = {"n": n, "pi_ref": pi_ref.round(4).tolist(), "labels": raw, "pair": (i, j),
                                             "beta_delta_ref": float(bdr), "log(n_ij/n_ji)": math.log(n_ij / n_ji)
                                             if n_ij and n_ji else None, "beta_h_at_optimum": float(beta * u_diff),
                                             "beta_h_mle": float(beta * h_mle)}
                    am_bad += int(am != ranks_i)
        literal_mis += lit_bad
        amended_mis += am_bad
        out.append({"n": n, "datasets": per_n, "finite_fraction": finite / per_n, "pairs": pairs_checked,
                    "wrong_vs_pi_star_fraction": dis_pistar / max(pairs_checked, 1),
                    "pair_logodds_rule_errors": lit_bad, "mle_rule_errors": am_bad})
    no_finite = next((r for r in out if r["finite_fraction"] < 1), None)
    literal = bool(no_finite is None and literal_mis == 0)
    amended = bool(amended_mis == 0)
    figs: list[str] = []
    try:
        from figures.dataset_figures import dataset_simulation_figure
        figs = dataset_simulation_figure(out, ctx.fig_dir)
    except ImportError:
        pass
    cex = None if literal else {"data_sets_without_finite_minimiser": no_finite, "pair_logodds_rule_fails": worst_example}
    summary = "; ".join(f"n={r['n']}: finite {r['finite_fraction']:.2f}, vs pi* {r['wrong_vs_pi_star_fraction']:.3f}"
                        for r in out) + f"; pair-log-odds rule errors {literal_mis}, MLE rule errors {amended_mis}"
    return MethodResult(literal=literal, amended=amended, summary=summary, evidence={"per_n": out, "K": K, "beta": beta},
                        depends_on=(
                            "toy_bandits.dataset.empirical_minimiser", "toy_bandits.dataset._arrays",
                            "toy_bandits.dataset._newton_scores", "toy_bandits.dataset.merge_labels",
                            "toy_bandits.dataset.win_graph", "toy_bandits.dataset_claims._bt_dataset",
                        ), counterexample=cex,
                        amended_statement=(get_claim("dataset-ordered-minimiser").amendment
                                           if amended else None), figures=figs)


# ---------------------------------------------------------------------------------------------------------------
# finite-label-sign
# ---------------------------------------------------------------------------------------------------------------


_FL_POINTS = ((-0.1, 0.5), (0.2, -0.1), (-2.0, 1.0), (-1.0, 3.0), (0.5, 0.5), (-3.0, 2.0), (1.0, -2.5), (-0.5, 0.2))


def finite_label_numeric(ctx: CheckContext) -> MethodResult:
    """Exact binomial: P_n by a log-space sum (:func:`toy_bandits.finite_labels.p_wrong`), by mpmath at 50 digits with
    integer binomial coefficients, and by scipy's binomial cdf/sf, agreeing to 1e-10 (relative); then over n = 1..2000
    on 8 points of (beta delta_ref, dr): literal = P_n <= 1/2 and non-increasing in n everywhere; amended = P_n lies
    between the method-of-types lower bound and the Chernoff upper bound everywhere (both sides: a P_n too small fails
    as surely as one too large), and P_n (vs the human preference) at n = 20000 within 1e-3 of its predicted limit.
    """
    from toy_bandits.finite_labels import (chernoff_bound, chernoff_lower_bound, n_needed, p_wrong, p_wrong_many,
                                           p_wrong_mpmath)

    agree_err = 0.0
    for bdr, dr in _FL_POINTS:
        for n in (1, 2, 5, 20, 60):
            exact = p_wrong_mpmath(n, bdr, dr)
            for v in (p_wrong(n, bdr, dr), float(p_wrong_many(np.array([n]), bdr, dr)[0])):
                agree_err = max(agree_err, float(abs(v - exact) / max(exact, 1e-300)))
    ns = np.arange(1, 2001)
    rows, mono_cex, half_cex, bound_ok, limit_ok, bound_miss = [], None, None, True, True, None
    for bdr, dr in _FL_POINTS:
        p = p_wrong_many(ns, bdr, dr)
        up = np.flatnonzero(np.diff(p) > 1e-12)
        if up.size and mono_cex is None:
            i = int(up[0])
            mono_cex = {"beta_delta_ref": bdr, "dr": dr, "n": int(ns[i]), "P_n": float(p[i]),
                        "n+1": int(ns[i + 1]), "P_n+1": float(p[i + 1])}
        if p.max() > 0.5 and half_cex is None:
            i = int(np.argmax(p))
            half_cex = {"beta_delta_ref": bdr, "dr": dr, "n": int(ns[i]), "P_n": float(p[i])}
        bound, lower = chernoff_bound(ns, bdr, dr), chernoff_lower_bound(ns, bdr, dr)
        inside = (p <= bound * (1 + 1e-9) + 1e-300) & (p >= lower * (1 - 1e-9))
        bound_ok &= bool(np.all(inside))
        if not inside.all() and bound_miss is None:
            i = int(np.flatnonzero(~inside)[0])
            bound_miss = {"beta_delta_ref": bdr, "dr": dr, "n": int(ns[i]), "P_n": float(p[i]),
                          "lower": float(lower[i]), "upper": float(bound[i])}
        limit = float((bdr + dr > 0) != (dr > 0))
        p_h = p_wrong(20000, bdr, dr, against="human")
        limit_ok &= abs(p_h - limit) <= 1e-3
        n_ex, n_ch = n_needed(0.01, bdr, dr)
        rows.append({"beta_delta_ref": bdr, "dr": dr, "P_1": float(p[0]), "P_10": float(p[9]), "P_100": float(p[99]),
                     "P_1000": float(p[999]), "max_P": float(p.max()), "monotone": not up.size,
                     "P_human_n20000": p_h, "human_limit": limit, "n_needed_eps0.01": n_ex, "n_chernoff_eps0.01": n_ch})
    literal = bool(mono_cex is None and half_cex is None)
    amended = bool(bound_ok and limit_ok and agree_err <= 1e-10)
    figs = _finite_label_figure(ctx)
    cex = None if literal else {"not_monotone": mono_cex, "above_one_half": half_cex}
    summary = (f"exact three ways agree to {agree_err:.1e}; monotone on {sum(r['monotone'] for r in rows)}/{len(rows)} "
               f"points (first rise {mono_cex['n'] if mono_cex else '-'}->{mono_cex['n+1'] if mono_cex else '-'}: "
               f"{mono_cex['P_n'] if mono_cex else 0:.4f}->{mono_cex['P_n+1'] if mono_cex else 0:.4f}); "
               f"max P {max(r['max_P'] for r in rows):.3f}; types <= P_n <= Chernoff: {bound_ok}; "
               f"human limit: {limit_ok}")
    return MethodResult(literal=literal, amended=amended, summary=summary,
                        evidence={"points": rows, "three_way_rel_err": agree_err, "first_outside_bounds": bound_miss},
                        depends_on=(
                            "toy_bandits.dataset_claims._finite_label_figure",
                            "toy_bandits.finite_labels.chernoff_bound", "toy_bandits.finite_labels._kl_t_q",
                            "toy_bandits.finite_labels._sigma", "toy_bandits.finite_labels.log_binom_pmf",
                            "toy_bandits.finite_labels.min_winning_count", "toy_bandits.finite_labels.n_needed",
                            "toy_bandits.finite_labels.p_wrong", "toy_bandits.finite_labels.p_wrong_many",
                            "toy_bandits.finite_labels.p_wrong_mpmath", "toy_bandits.finite_labels.ranks_first",
                            "toy_bandits.finite_labels._target_sign",
                            "toy_bandits.finite_labels.chernoff_lower_bound",
                            "toy_bandits.finite_labels.empirical_sign",),
                        counterexample=cex,
                        amended_statement=(get_claim("finite-label-sign").amendment
                                           if amended else None), figures=figs)


def _finite_label_figure(ctx: CheckContext) -> list[str]:
    from toy_bandits.finite_labels import n_needed, p_wrong_many

    try:
        from figures.dataset_figures import finite_label_figure
    except ImportError:
        return []
    ns = np.arange(1, 501)
    pts = ((-0.1, 0.5), (-2.0, 3.0), (0.2, -0.1), (-1.0, 3.0))
    curves = {rf"$\beta\delta_{{ref}}$={b:g}, $\Delta r$={d:g}": (ns, p_wrong_many(ns, b, d)) for b, d in pts}
    eps = np.array([0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001])
    need = {}
    for b, d in pts:
        pairs = [n_needed(float(e), b, d) for e in eps]
        need[rf"$\beta\delta_{{ref}}+\Delta r$={b + d:g}"] = (eps, [p[0] for p in pairs], [p[1] for p in pairs])
    return finite_label_figure(curves, need, ctx.fig_dir)


def finite_label_simulation(ctx: CheckContext) -> MethodResult:
    """Monte Carlo: R label sets of n Bernoulli(sigma(dr)) draws; for each the per-label loss
    sum_labels softplus(-+beta h) is minimised numerically over h (scipy bounded search on [-60, 60]; |h| > 59 reads as
    infinite) and the pair is ranked by delta_ref + h. Frequencies against the exact P_n within 4.5 standard errors;
    literal = no rise P_{n+1} > P_n beyond 4.5 combined standard errors and no P_n above 1/2 beyond 4.5 SE;
    amended = lower bound - 4.5 SE <= frequency <= Chernoff bound + 4.5 SE at every point (both sides) and agreement
    with the exact value.
    """
    from scipy.optimize import minimize_scalar

    from toy_bandits.finite_labels import chernoff_bound, chernoff_lower_bound, p_wrong

    rng = np.random.default_rng(ctx.seed + 1340)
    reps = 1500 if ctx.quick else 4000
    beta = 1.0
    rows, rises, above, agree, bound_ok = [], [], [], True, True
    for bdr, dr in _FL_POINTS[:4]:
        q = 1.0 / (1.0 + math.exp(-dr))
        prev = None
        for n in (1, 2, 3, 4, 10, 30):
            wins = (rng.random((reps, n)) < q).sum(axis=1)  # R label sets of n labels each
            first = {}
            for k in np.unique(wins):
                # minimise k softplus(-beta h) + (n - k) softplus(beta h) over h (the per-label loss summed)
                res = minimize_scalar(lambda h: k * np.logaddexp(0, -beta * h) + (n - k) * np.logaddexp(0, beta * h),
                                      bounds=(-60.0, 60.0), method="bounded", options={"xatol": 1e-10})
                h = res.x if abs(res.x) < 59 else math.copysign(math.inf, res.x)
                d_opt = bdr / beta + h  # delta_ref + h = delta
                first[int(k)] = 0 if abs(d_opt) < 1e-6 else int(np.sign(d_opt))  # a tie ranks neither first
            signs = np.array([first[int(k)] for k in wins])
            freq = float(np.mean(signs != np.sign(bdr + dr)))  # a tie is unlike a strictly ordered pi*
            exact = p_wrong(n, bdr, dr)
            se = math.sqrt(max(exact * (1 - exact), 1.0 / reps) / reps)
            agree &= abs(freq - exact) <= 4.5 * se
            lo_b, up_b = float(chernoff_lower_bound(n, bdr, dr)), float(chernoff_bound(n, bdr, dr))
            bound_ok &= lo_b - 4.5 * se <= freq <= up_b + 4.5 * se
            if freq - 0.5 > 4.5 * se:
                above.append({"beta_delta_ref": bdr, "dr": dr, "n": n, "freq": freq})
            if prev is not None and prev[0] + 1 == n:
                se2 = math.sqrt(prev[2] ** 2 + se ** 2)
                if freq - prev[1] > 4.5 * se2:
                    rises.append({"beta_delta_ref": bdr, "dr": dr, "n": prev[0], "freq_n": prev[1], "n+1": n,
                                  "freq_n+1": freq, "se": se2})
            prev = (n, freq, se)
            rows.append({"beta_delta_ref": bdr, "dr": dr, "n": n, "freq": freq, "exact": exact, "se": se})
    literal = bool(not rises and not above)
    amended = bool(agree and bound_ok)
    cex = None if literal else {"rise": rises[0] if rises else None, "above_one_half": above[0] if above else None}
    summary = (f"{len(rows)} (point, n) cells x {reps} label sets: MC = exact within 4.5 SE on all: {agree}; "
               f"significant rises with n: {len(rises)}; significantly above 1/2: {len(above)}; "
               f"within types/Chernoff bounds: {bound_ok}")
    return MethodResult(literal=literal, amended=amended, summary=summary, evidence={"cells": rows, "reps": reps},
                        depends_on=(
                            "toy_bandits.finite_labels.chernoff_bound", "toy_bandits.finite_labels._kl_t_q",
                            "toy_bandits.finite_labels._sigma", "toy_bandits.finite_labels.log_binom_pmf",
                            "toy_bandits.finite_labels.min_winning_count", "toy_bandits.finite_labels.p_wrong",
                            "toy_bandits.finite_labels.ranks_first", "toy_bandits.finite_labels._target_sign",
                            "toy_bandits.finite_labels.chernoff_lower_bound",
                            "toy_bandits.finite_labels.empirical_sign",), counterexample=cex,
                        amended_statement=(get_claim("finite-label-sign").amendment
                                           if amended else None))


# ---------------------------------------------------------------------------------------------------------------
# listwise-equivalence
# ---------------------------------------------------------------------------------------------------------------


def _list_instance(rng, k, ordered_ref: bool):
    reward = np.sort(rng.normal(0.0, 1.5, k))[::-1]  # ranking 0 > 1 > ... > k-1 is the human (reward) order
    pi_ref = rng.dirichlet(np.full(k, 0.8))
    if ordered_ref:
        pi_ref = np.sort(pi_ref)[::-1]
    beta = float(10 ** rng.uniform(-0.7, 0.5))
    return np.log(pi_ref), reward, np.arange(k), beta


def listwise_convex(ctx: CheckContext) -> MethodResult:
    """CVXPY, k = 4 and 5. (i) The minimiser of the expected Plackett-Luce DPO loss (rankings ~ PL(r), exact
    enumeration) against the Gibbs policy (:func:`toy_bandits.rlhf.log_gibbs_policy`), |log pi - log pi*| <= 1e-5, and
    its order against the adjacent pairwise conditions. (ii) For references ordered like the human ranking (random
    ones, and one so far apart that no misordered policy gets below log 3!), the infimum of L over policies
    misordering an adjacent pair (CVXPY, box |s| <= 40) against softplus(beta delta_ref) (<= 1e-5) and log k!, and
    the rule's empty/nonempty decision against it. Literal: (i) holds and no ordered reference has a misordered
    policy below log k!.
    """
    import math as _m

    from toy_bandits.listwise import cvx_misordered_infimum, cvx_population_minimiser, listwise_U_nonempty, \
        misordered_infimum, pi_star_agrees
    from toy_bandits.rlhf import log_gibbs_policy

    rng = np.random.default_rng(ctx.seed + 1360)
    cases = [4] * (2 if ctx.quick else 4) + [5] * (1 if ctx.quick else 2)
    pop_err, order_ok, n_agree, rows = 0.0, True, 0, []
    for k in cases:
        log_ref, reward, ranking, beta = _list_instance(rng, k, ordered_ref=False)
        s = cvx_population_minimiser(reward)
        z = log_ref + s / beta
        log_pi = z - np.logaddexp.reduce(z)
        err = float(np.max(np.abs(log_pi - log_gibbs_policy(np.exp(log_ref), reward, beta))))
        pop_err = max(pop_err, err)
        agrees = bool(np.all(np.diff(log_pi[ranking]) < 0))
        pred = pi_star_agrees(log_ref, reward, ranking, beta)
        order_ok &= agrees == pred
        n_agree += agrees
        rows.append({"k": k, "beta": beta, "max_logpi_err_vs_gibbs": err, "optimum_agrees": agrees, "adjacent_rule": pred})
    inf_err, u_rows, ordered_but_U, decision_ok, ordered_ok = 0.0, [], None, True, True
    instances = [_list_instance(rng, k, ordered_ref=True) for k in [3, 4] * (2 if ctx.quick else 3)]
    # and one reference ordered so far apart that no misordered policy gets below log 3! (softplus(2.197) = 2.31 >
    # 1.79): the decision rule must say "empty" there too, so decision_ok can fail either way
    instances.append((np.log(np.array([0.9, 0.0999, 0.0001])), None, np.arange(3), 1.0))
    for log_ref, _, ranking, beta in instances:
        k = len(log_ref)
        c = beta * (log_ref[ranking[:-1]] - log_ref[ranking[1:]])
        ordered_ok &= bool(np.all(c > 0))  # the premise: the reference ranks like the humans
        infs = np.array([cvx_misordered_infimum(k, t, float(c[t])) for t in range(k - 1)])
        inf_err = max(inf_err, float(np.max(np.abs(infs - misordered_infimum(c)))))
        nonempty = bool(infs.min() < _m.lgamma(k + 1) - 1e-9)
        decision_ok &= nonempty == listwise_U_nonempty(log_ref, ranking, beta)
        if nonempty and ordered_but_U is None:
            ordered_but_U = {"k": k, "beta": beta, "pi_ref": np.exp(log_ref).round(4).tolist(),
                             "beta_delta_ref_adjacent": c.round(4).tolist(), "inf_misordered_loss": infs.round(5).tolist(),
                             "log_k!": _m.lgamma(k + 1)}
        u_rows.append({"k": k, "beta_delta_ref_adjacent": c.tolist(), "cvx_inf": infs.tolist(), "nonempty": nonempty})
    literal = bool(pop_err <= 1e-5 and order_ok and ordered_but_U is None)
    amended = bool(pop_err <= 1e-5 and order_ok and inf_err <= 1e-5 and decision_ok and ordered_ok)
    cex = None if literal else {"ordered_reference_with_listwise_U": ordered_but_U}
    summary = (f"population PL optimum = pi* on {len(rows)} instances (max |log pi - log pi*| {pop_err:.1e}); order = "
               f"adjacent rule on all: {order_ok} ({n_agree} agree with the human ranking); ordered references with a "
               f"misordered policy below log k!: {sum(r['nonempty'] for r in u_rows)}/{len(u_rows)}; "
               f"inf = softplus(beta delta_ref) to {inf_err:.1e}")
    return MethodResult(literal=literal, amended=amended, summary=summary,
                        evidence={"population": rows, "undesirable": u_rows},
                        depends_on=(
                            "toy_bandits.rlhf.log_gibbs_policy", "toy_bandits.listwise.cvx_misordered_infimum",
                            "toy_bandits.listwise.cvx_population_minimiser",
                            "toy_bandits.listwise.listwise_U_nonempty", "toy_bandits.listwise.misordered_infimum",
                            "toy_bandits.listwise.pi_star_agrees", "toy_bandits.listwise.pl_log_probs",
                            "toy_bandits.listwise.pl_loss", "toy_bandits.rlhf._shifted_logits",
                            "toy_bandits.listwise._check_scores", "toy_bandits.listwise._differences",
                            "toy_bandits.listwise._log_softplus", "toy_bandits.listwise._pl_log_terms",
                        ), counterexample=cex,
                        amended_statement=get_claim("listwise-equivalence").amendment if amended else None)


def listwise_numeric(ctx: CheckContext) -> MethodResult:
    """Without CVXPY, k = 4, 5: (i) BFGS (scipy) on the expected PL loss (exact enumeration, numpy) from s = 0 lands
    on s = r + const (|.| <= 1e-5). (ii) On references ordered like the ranking: an explicit policy (s_1 >> ... with
    s_{t+1} - s_t = beta delta_ref + 0.05 at the cheapest t, later scores -> -inf) evaluated by
    toy_bandits.listwise.pl_dpo_loss: misordered with L < log k! exactly when the rule says so; and 6000
    random policies: none that :func:`toy_bandits.listwise.listwise_certifies` certifies (L <= min_t softplus(beta
    delta_ref(t, t+1))) is misordered.
    """
    import math as _m

    from scipy.optimize import minimize

    from toy_bandits.listwise import listwise_certifies, listwise_U_nonempty, pl_dpo_loss, pl_log_probs, pl_loss

    rng = np.random.default_rng(ctx.seed + 1370)
    pop_err = 0.0
    for k in (4, 5):
        reward = rng.normal(0.0, 1.5, k)
        perms, logp = pl_log_probs(reward)
        w = np.exp(logp)

        def f(s, perms=perms, w=w):
            return float(sum(wt * pl_loss(s[p]) for p, wt in zip(perms, w)))

        res = minimize(f, np.zeros(k), method="BFGS", options={"gtol": 1e-9})
        d = (res.x - res.x.mean()) - (reward - reward.mean())
        pop_err = max(pop_err, float(np.max(np.abs(d))))
    rows, construct_ok, cex_u, cert_viol, cert_n = [], True, None, 0, 0
    for i in range(12 if ctx.quick else 24):
        k = 3 + i % 3
        log_ref, _, ranking, beta = _list_instance(rng, k, ordered_ref=True)
        c = beta * (log_ref[:-1] - log_ref[1:])
        t = int(np.argmin(c))
        s = np.zeros(k)
        s[: t + 1] = 60.0 * np.arange(t + 1, 0, -1)  # s_1 >> ... >> s_t
        s[t + 1] = s[t] + c[t] + 0.05
        s[t + 2:] = -60.0 * np.arange(1, k - t - 1)
        log_pi = log_ref + s / beta
        log_pi -= np.logaddexp.reduce(log_pi)
        loss = pl_dpo_loss(log_pi, log_ref, ranking, beta)
        misordered = bool(log_pi[t + 1] > log_pi[t])
        below = loss < _m.lgamma(k + 1)
        rule = listwise_U_nonempty(log_ref, ranking, beta)
        construct_ok &= misordered and (below == rule)
        if below and cex_u is None:
            cex_u = {"k": k, "beta": beta, "pi_ref": np.exp(log_ref).round(4).tolist(), "misordered_pair": (t, t + 1),
                     "loss": loss, "log_k!": _m.lgamma(k + 1), "log_pi_ref": log_ref.tolist(), "log_pi": log_pi.tolist()}
        # the certificate on random policies around the reference: the toolkit's own listwise_certifies decides
        for _ in range(6000 // (12 if ctx.quick else 24)):
            lp = log_ref + rng.normal(0, 3.0, k) * rng.uniform(0, 1) + np.linspace(3, 0, k) * rng.uniform(0, 4)
            lp -= np.logaddexp.reduce(lp)
            if listwise_certifies(pl_dpo_loss(lp, log_ref, ranking, beta), log_ref, ranking, beta):
                cert_n += 1
                cert_viol += bool(np.any(np.diff(lp) > 0))
        rows.append({"k": k, "beta": beta, "c_min": float(c[t]), "constructed_loss": loss, "misordered": misordered,
                     "below_log_k!": below, "rule_nonempty": rule})
    literal = bool(pop_err <= 1e-5 and cex_u is None)
    amended = bool(pop_err <= 1e-5 and construct_ok and cert_viol == 0 and cert_n > 0)
    summary = (f"BFGS population optimum s = r + c to {pop_err:.1e}; constructed misordered policies below log k! on "
               f"{sum(r['below_log_k!'] for r in rows)}/{len(rows)} ordered references, = rule on all: {construct_ok}; "
               f"certificate: {cert_n} certified random policies, {cert_viol} misordered")
    return MethodResult(literal=literal, amended=amended, summary=summary,
                        evidence={"rows": rows, "pop_err": pop_err, "certified_random_policies": cert_n,
                                  "certified_but_misordered": cert_viol},
                        depends_on=(
                            "toy_bandits.listwise.listwise_U_nonempty", "toy_bandits.listwise.misordered_infimum",
                            "toy_bandits.listwise.pl_dpo_loss", "toy_bandits.listwise.pl_log_probs",
                            "toy_bandits.listwise.pl_loss", "toy_bandits.listwise._check_scores",
                            "toy_bandits.listwise._differences", "toy_bandits.listwise._dpo_differences",
                            "toy_bandits.listwise._log_softplus", "toy_bandits.listwise._pl_log_terms",
                            "toy_bandits.listwise.certificate_tolerance", "toy_bandits.listwise.listwise_certifies",
                        ), counterexample=None if literal else {"ordered_reference_with_listwise_U": cex_u},
                        amended_statement=get_claim("listwise-equivalence").amendment if amended else None)


# ---------------------------------------------------------------------------------------------------------------
# length-normalised
# ---------------------------------------------------------------------------------------------------------------


def length_numeric(ctx: CheckContext) -> MethodResult:
    """(a) 20000 random pairs (sequence log-probabilities in [-200, 0], lengths 1..200): the toolkit's DPO certificate on
    per-token means (:func:`dpo_rlhf_checks.losses.alignment_certificate` of :func:`dpo_loss`, target
    :func:`implicit_target` "dpo") against the sign of the summed delta; violations counted where |y_w| <= |y_l| (the
    amendment says 0) and overall (the literal says 0). (b) The mean-delta BT population loss
    (:func:`dpo_rlhf_checks.losses.dpo_bt_loss` on per-token means) minimised by L-BFGS over a K = 3 tabular policy:
    the end point has beta (dm - dm_ref) = dr (<= 1e-6) and its summed delta lies in
    :func:`toy_bandits.length_norm.minimiser_delta_range`, whose finite end is the summed delta of the valley's edge
    policy (largest feasible b, found by bisection here; <= 1e-6); then 61 policies with the same delta_mean (the
    valley) have the same loss (<= 1e-9), and their summed deltas take the sign opposite to the summed optimum's iff
    |y_w| > |y_l| (here the summed optimum ranks y_w first). Also the disagreement figure.
    """
    import torch
    from scipy.optimize import minimize

    from dpo_rlhf_checks.losses import alignment_certificate, dpo_bt_loss, dpo_loss, implicit_target
    from toy_bandits.length_norm import mean_implies_summed, minimiser_delta_range, summed_implies_mean

    rng = np.random.default_rng(ctx.seed + 1380)
    n = 5000 if ctx.quick else 20000
    lw, ll = rng.integers(1, 201, n).astype(float), rng.integers(1, 201, n).astype(float)
    a, b = -rng.uniform(0, 200, n), -rng.uniform(0, 200, n)
    ar, br = -rng.uniform(0, 200, n), -rng.uniform(0, 200, n)
    beta = 0.5
    t = torch.tensor
    mw, ml, mrw, mrl = t(a / lw), t(b / ll), t(ar / lw), t(br / ll)
    loss = dpo_loss(mw, ml, mrw, mrl, beta=beta).losses
    cert = alignment_certificate(loss, implicit_target("dpo", mrw, mrl, beta=beta), beta=beta).numpy()
    summed_pos = a - b > 0
    short = mean_implies_summed(lw, ll)  # |y_w| <= |y_l|: where the amendment says a mean certificate implies delta > 0
    viol_all = cert & ~summed_pos
    viol_short = viol_all & short
    conv_viol = summed_pos & ~cert & summed_implies_mean(lw, ll)
    cex_i = int(np.flatnonzero(viol_all)[0]) if viol_all.any() else None

    # (b) the population minimiser set of the mean loss: L-BFGS to one minimiser, then walk along the valley
    rows, pop_ok, range_ok, walk_ok = [], True, True, True
    K, dr = 3, 1.0  # noqa: N806
    log_ref = np.log(np.array([0.2, 0.5, 0.3]))
    q = 1 / (1 + math.exp(-dr))
    ref = torch.tensor(log_ref)

    def pop_loss(lp, Lw, Ll):  # noqa: N803
        lp = torch.as_tensor(lp)
        return dpo_bt_loss(lp[0:1] / Lw, lp[1:2] / Ll, ref[0:1] / Lw, ref[1:2] / Ll, beta=beta, q=q).losses.sum()

    for Lw, Ll in ((30.0, 10.0), (10.0, 30.0), (20.0, 20.0)):  # noqa: N806
        def fun(zv, Lw=Lw, Ll=Ll):  # noqa: N803
            z = torch.tensor(zv, dtype=torch.float64, requires_grad=True)
            val = pop_loss(torch.log_softmax(z, 0), Lw, Ll)
            (g,) = torch.autograd.grad(val, z)
            return float(val.detach()), g.numpy()

        res = minimize(fun, rng.normal(0, 1, K), jac=True, method="L-BFGS-B",
                       options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 2000})
        z = torch.tensor(res.x)
        lp = torch.log_softmax(z, 0).numpy()
        dm = lp[0] / Lw - lp[1] / Ll
        dm_ref = log_ref[0] / Lw - log_ref[1] / Ll
        pop_ok &= abs(beta * (dm - dm_ref) - dr) <= 1e-6
        best = float(pop_loss(lp, Lw, Ll))
        lo, hi = minimiser_delta_range(dm, Lw, Ll)

        def valley_a(bb, dm=dm, Lw=Lw, Ll=Ll):  # noqa: N803
            """log pi(y_w) of the valley's policy (same delta_mean) at log pi(y_l) = bb; None where infeasible."""
            aa = Lw * (dm + bb / Ll)
            return aa if aa < 0 and np.logaddexp(aa, bb) < 0 else None

        # the range's finite end must be the valley's edge, not only contain the L-BFGS point: the largest feasible
        # b (e^a + e^b < 1, a = L_w (dm + b/L_l)) by this walk's own bisection, and the summed delta a - b of the
        # policy there (read off the policy, not from the range's formula) within 1e-6 of the finite end
        b_in, b_out = float(lp[1]), min(0.0, -dm * Ll)
        for _ in range(200):
            b_mid = 0.5 * (b_in + b_out)
            b_in, b_out = (b_mid, b_out) if valley_a(b_mid) is not None else (b_in, b_mid)
        edge_delta = Lw * (dm + b_in / Ll) - b_in
        finite_end = hi if Lw > Ll else lo
        range_ok &= bool(lo - 1e-6 <= lp[0] - lp[1] <= hi + 1e-6 and abs(edge_delta - finite_end) <= 1e-6)
        # walk: other policies with the same delta_mean (a = L_w (dm + b/L_l)), the third response takes the rest
        deltas, worst = [], 0.0
        for bb in lp[1] + np.linspace(-60.0, 0.0, 61):
            aa = valley_a(bb)
            if aa is None:
                continue
            point = np.array([aa, bb, np.log(-np.expm1(np.logaddexp(aa, bb)))])
            worst = max(worst, abs(float(pop_loss(point, Lw, Ll)) - best))
            deltas.append(float(aa - bb))
        summed_first = bool(beta * (log_ref[0] - log_ref[1]) + dr > 0)
        opposite = any((d > 0) != summed_first for d in deltas)
        walk_ok &= worst <= 1e-9 and (opposite == (Lw > Ll) if summed_first else True)
        rows.append({"L_w": Lw, "L_l": Ll, "lbfgs_delta": float(lp[0] - lp[1]), "valley_loss_dev": worst,
                     "valley_delta_min": min(deltas), "valley_delta_max": max(deltas),
                     "valley_edge_delta": float(edge_delta), "range_finite_end": float(finite_end),
                     "summed_optimum_ranks_y_w_first": summed_first, "valley_has_opposite_sign": opposite})
    figs = _length_figure(ctx)
    literal = bool(not viol_all.any() and not any(r["valley_has_opposite_sign"] for r in rows))
    amended = bool(not viol_short.any() and not conv_viol.any() and pop_ok and range_ok and walk_ok)
    cex = None if literal else {
        "mean_certificate_but_pi(y_w)<pi(y_l)": {"log_pi_w": a[cex_i], "len_w": lw[cex_i], "log_pi_l": b[cex_i],
                                                 "len_l": ll[cex_i], "ref_log_pi_w": ar[cex_i], "ref_log_pi_l": br[cex_i],
                                                 "beta": beta, "delta": a[cex_i] - b[cex_i]},
        "minimisers_of_mean_loss": rows[0]}
    summary = (f"{n} pairs: mean certificate with pi(y_w)<pi(y_l) in {int(viol_all.sum())} (all |y_w|>|y_l|: "
               f"{int(viol_short.sum())} with |y_w|<=|y_l|); summed>0 but mean<=0 with |y_w|>=|y_l|: {int(conv_viol.sum())}; "
               f"mean-loss minimisers (K=3): beta(dm-dm_ref)=dr {pop_ok}, in range with its finite end at the valley's "
               f"edge {range_ok}; summed delta along the minimiser valley (loss constant to 1e-9: {walk_ok}) "
               + ", ".join(f"|y_w|/|y_l|={r['L_w']:g}/{r['L_l']:g}: [{r['valley_delta_min']:.1f}, "
                           f"{r['valley_delta_max']:.1f}]" for r in rows))
    return MethodResult(literal=literal, amended=amended, summary=summary,
                        evidence={"violations_overall": int(viol_all.sum()), "violations_short_w": int(viol_short.sum()),
                                  "converse_violations": int(conv_viol.sum()), "minimiser_sets": rows},
                        depends_on=(
                            "dpo_rlhf_checks.losses.alignment_certificate", "dpo_rlhf_checks.losses.dpo_bt_loss",
                            "dpo_rlhf_checks.losses._dpo_target", "dpo_rlhf_checks.losses._rewards",
                            "dpo_rlhf_checks.losses._softplus", "dpo_rlhf_checks.losses.critical_loss",
                            "dpo_rlhf_checks.losses.dpo_loss", "dpo_rlhf_checks.losses.implicit_target",
                            "toy_bandits.dataset_claims._length_figure",
                            "toy_bandits.length_norm.mean_population_ranks_first",
                            "toy_bandits.length_norm.minimiser_delta_range",
                            "toy_bandits.length_norm.summed_population_ranks_first",
                            "dpo_rlhf_checks.losses.certificate_tolerance",
                            "toy_bandits.length_norm.mean_implies_summed",
                            "toy_bandits.length_norm.summed_implies_mean",),
                        counterexample=cex,
                        amended_statement=(get_claim("length-normalised").amendment
                                           if amended else None), figures=figs)


def _length_figure(ctx: CheckContext) -> list[str]:
    try:
        from figures.dataset_figures import length_norm_figure
    except ImportError:
        return []
    from toy_bandits.length_norm import mean_population_ranks_first, summed_population_ranks_first

    beta, dr, ll, b_ref = 0.1, 0.5, 20.0, -20.0  # y_l: 20 tokens at -1 nat per token under the reference
    ratio = np.linspace(-1.5, 1.5, 301)
    dref = np.linspace(-15, 15, 301)
    R, D = np.meshgrid(ratio, dref, indexing="ij")  # noqa: N806
    lw = ll * np.exp(R)
    a_ref = b_ref + D
    dm_ref = a_ref / lw - b_ref / ll
    s = summed_population_ranks_first(beta, D, dr)
    m = mean_population_ranks_first(beta, dm_ref, dr)
    code = np.where(s == m, 0, np.where(m, 1, 2))
    return length_norm_figure(ratio, dref, code, ctx.fig_dir)


# ---------------------------------------------------------------------------------------------------------------
# cpo-population-alignment
# ---------------------------------------------------------------------------------------------------------------

_CPO_VARIANTS = ("cpo_clip", "cpo_smooth", "cpo_eq17")


def _cpo_grid(quick: bool):
    b = np.linspace(-6.0, 3.0, 61 if quick else 91)
    d = np.linspace(-1.0, 5.0, 41 if quick else 61)
    return b, d, *np.meshgrid(b, d, indexing="ij")


def cpo_population_numeric(ctx: CheckContext) -> MethodResult:
    """Closed-form sign conditions (numpy re-implementation of the targets, :mod:`toy_bandits.cpo_population`) on a
    grid of (beta delta_ref, dr) for DPO, IPO, DPO-Positive (numeric minimiser) and the CPO variants; the clip threshold
    formula against the general condition; the phase figure per loss. Literal: every CPO variant ranks y_w first on
    every grid point with dr > 0. Amended (the registry's text): the clip threshold equals the general condition on the
    whole grid, DPO's condition reduces to beta delta_ref + dr > 0 (both checked on the grid), and every CPO setting
    has a positive threshold in dr at some beta delta_ref in [-6, 3] (a fine grid) where the closed form misranks. The
    repaired and misranked fractions are descriptive: reported, deciding nothing.
    """
    from toy_bandits.cpo_population import SETTINGS, clip_repair_threshold, ranks_first, target

    b, d, B, D = _cpo_grid(ctx.quick)  # noqa: N806
    fail = (D > 0) & (B + D < 0)
    ranks, fractions, cex = {}, {}, None
    for lab, (name, beta, params) in SETTINGS.items():
        r = ranks_first(name, B, D, beta=beta, **params)
        ranks[lab] = r
        fractions[lab] = {"loss": name, "beta": beta, **params, "repaired_of_dpo_failure": float(r[fail].mean()),
                          "misranked_where_dr>0": float((~r[D > 0]).mean()),
                          "ranks_y_w_first_where_dr<0": float(r[D < 0].mean())}
        if name in _CPO_VARIANTS and cex is None and (~r[D > 0]).any():
            i, j = np.argwhere(~r & (D > 0))[0]
            cex = {"loss": lab, "beta": beta, **params, "beta_delta_ref": float(b[i]), "dr": float(d[j]),
                   "dpo_ranks_y_w_first": bool(b[i] + d[j] > 0)}
    clip_ok = bool(np.all((D > clip_repair_threshold(B)) == ranks_first("cpo_clip", B, D, beta=0.1, margin=0.0)))
    # no CPO setting ranks y_w first on all of dr > 0: its threshold in dr,
    # log sigma(beta T(-d)) - log sigma(beta T(d)), is positive at some beta delta_ref of [-6, 3] (a fine grid), and
    # the closed form misranks half-way to it
    bfine = np.linspace(-6.0, 3.0, 9001)
    thresholds = {}
    for lab, (name, beta, params) in SETTINGS.items():
        if name in _CPO_VARIANTS:
            dref = bfine / beta
            thr = -np.logaddexp(0.0, -beta * target(name, -dref, beta=beta, **params)) + \
                np.logaddexp(0.0, -beta * target(name, dref, beta=beta, **params))
            i = int(np.argmax(thr))
            mis = bool(thr[i] > 0 and not ranks_first(name, bfine[i], thr[i] / 2, beta=beta, **params))
            thresholds[lab] = {"max_threshold": float(thr[i]), "at_beta_delta_ref": float(bfine[i]),
                               "misranks_at_half_threshold": mis}
    none_covers_all = bool(thresholds) and all(v["misranks_at_half_threshold"] for v in thresholds.values())
    off = np.abs(B + D) > 1e-9  # exactly on the boundary, rounding decides either way
    dpo_ok = bool(np.all((ranks["DPO"] == (B + D > 0))[off]))
    literal = cex is None
    amended = bool(clip_ok and dpo_ok and none_covers_all)
    figs: list[str] = []
    try:
        from figures.dataset_figures import cpo_population_figure
        figs = cpo_population_figure(b, d, ranks, ctx.fig_dir)
    except ImportError:
        pass
    summary = "; ".join(f"{lab.split(' (')[0]}{' (' + lab.split(' (')[1] if ' (' in lab else ''}: repairs "
                        f"{v['repaired_of_dpo_failure']:.2f}, misranks {v['misranked_where_dr>0']:.3f} of dr>0"
                        for lab, v in fractions.items()) + f"; clip threshold formula exact: {clip_ok}; every CPO " \
        f"setting misranks some dr > 0: {none_covers_all}"
    return MethodResult(literal=literal, amended=amended, summary=summary,
                        evidence={"grid": {"beta_delta_ref": [float(b[0]), float(b[-1]), b.size],
                                           "dr": [float(d[0]), float(d[-1]), d.size]}, "fractions": fractions,
                                  "cpo_thresholds_in_dr": thresholds},
                        depends_on=(
                            "toy_bandits.cpo_population._log_sigmoid",
                            "toy_bandits.cpo_population.clip_repair_threshold",
                            "toy_bandits.cpo_population.dpop_minimiser",
                            "toy_bandits.cpo_population.dpop_population_loss",
                            "toy_bandits.cpo_population.ranks_first", "toy_bandits.cpo_population.target",
                            "toy_bandits.dataset_claims._cpo_amended",
                        ), counterexample=None if literal else {"cpo_misranks_with_dr_positive": cex},
                        amended_statement=(get_claim("cpo-population-alignment").amendment
                                           if amended else None), figures=figs)


#: half the spacing of the near-boundary pairs of cpo_population_torch, in dr
EPS_B = 0.02


def _boundary_pairs(name: str, beta: float, params: dict, bdr: np.ndarray, n: int,
                    eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(beta delta_ref, dr) at dr* - eps and dr* + eps, dr* where the closed form's ranks_first changes in dr
    (bisection on [-20, 20], 60 steps), for the first n candidates beta delta_ref whose sign changes there."""
    from toy_bandits.cpo_population import ranks_first

    lo, hi = np.full(bdr.shape, -20.0), np.full(bdr.shape, 20.0)
    f_lo = ranks_first(name, bdr, lo, beta=beta, **params)
    keep = np.flatnonzero(f_lo != ranks_first(name, bdr, hi, beta=beta, **params))[:n]
    bdr, lo, hi, f_lo = bdr[keep], lo[keep], hi[keep], f_lo[keep]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        same = ranks_first(name, bdr, mid, beta=beta, **params) == f_lo
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    mid = 0.5 * (lo + hi)
    return np.concatenate([bdr, bdr]), np.concatenate([mid - eps, mid + eps])


def cpo_population_torch(ctx: CheckContext) -> MethodResult:
    """Direct minimisation of the expected loss built from the toolkit's torch losses
    (:data:`dpo_rlhf_checks.losses.LOSSES`, float64): E(delta) = q loss(log sigma(delta), log sigma(-delta), ...) +
    (1 - q) loss(swapped), on a batch grid of delta in [-80, 80] (step 0.5) then a local grid (step 5e-3), at random
    (beta delta_ref, dr) points per loss setting and at pairs EPS_B either side of the closed form's boundary in dr (a
    quarter as many pairs; far from it only a gross error flips a sign). The sign of the minimiser against
    :func:`toy_bandits.cpo_population.ranks_first`; points whose minimiser is within 0.01 of 0, or whose loss exceeds
    1e6 (float64 cannot resolve a change of delta there), are skipped and counted. Literal: no CPO variant's minimiser
    is negative at a point with dr > 0. Amended: the signs agree with the closed form at every point not skipped.
    """
    import torch

    from dpo_rlhf_checks.losses import LOSSES
    from toy_bandits.cpo_population import SETTINGS, ranks_first

    rng = np.random.default_rng(ctx.seed + 1390)
    rng_b = np.random.default_rng([ctx.seed, 1391])
    n_pts = 40 if ctx.quick else 100
    coarse = torch.linspace(-80.0, 80.0, 321, dtype=torch.float64)  # step 0.5
    ls = torch.nn.functional.logsigmoid
    agree_all, skipped, checked, cex, rows = True, 0, 0, None, {}
    for lab, (name, beta, params) in SETTINGS.items():
        fn = LOSSES[name]
        bdr = rng.uniform(-6.0, 3.0, n_pts)
        dr = rng.uniform(-1.0, 5.0, n_pts)
        # and where the closed form says something: pairs of points EPS_B either side of its boundary in dr (found by
        # bisection on ranks_first; their own generator, so the random points above are the same as without them), so
        # an error that moves the boundary by more than that disagrees
        b_bdr, b_dr = _boundary_pairs(name, beta, params, rng_b.uniform(-6.0, 3.0, 4 * n_pts), n_pts // 4, EPS_B)
        bdr, dr = np.concatenate([bdr, b_bdr]), np.concatenate([dr, b_dr])
        n_all = bdr.size
        pred = ranks_first(name, bdr, dr, beta=beta, **params)
        dref = torch.tensor(bdr / beta, dtype=torch.float64)[:, None]  # (P, 1)
        q = torch.tensor(1.0 / (1.0 + np.exp(-dr)), dtype=torch.float64)[:, None]

        def expected(delta):  # delta (P, G) -> E (P, G), every point of this setting at once
            rc, rr = ls(dref).expand_as(delta), ls(-dref).expand_as(delta)
            pc, pr = ls(delta), ls(-delta)
            return q * fn(pc, pr, rc, rr, beta=beta, **params).losses + \
                (1 - q) * fn(pr, pc, rr, rc, beta=beta, **params).losses

        vals = expected(coarse.expand(n_all, -1))
        i = torch.argmin(vals, dim=1)
        lo, hi = coarse[torch.clamp(i - 1, min=0)], coarse[torch.clamp(i + 1, max=coarse.numel() - 1)]
        fine = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0.0, 1.0, 201, dtype=torch.float64)[None, :]
        x = fine.gather(1, torch.argmin(expected(fine), dim=1, keepdim=True))[:, 0].numpy()
        skip = (np.abs(x) < 0.01) | (vals.max(dim=1).values.numpy() > 1e6)
        sk = int(skip.sum())
        checked += int((~skip).sum())
        dis = int(((x > 0) != pred)[~skip].sum())
        bad = np.flatnonzero(~skip & (dr > 0) & (x < 0))
        if name in _CPO_VARIANTS and bad.size and cex is None:
            k = int(bad[0])
            cex = {"loss": lab, "beta": beta, **params, "beta_delta_ref": float(bdr[k]), "dr": float(dr[k]),
                   "minimiser_delta": float(x[k]), "dpo_minimiser_delta": float(bdr[k] / beta + dr[k] / beta)}
        skipped += sk
        agree_all &= dis == 0
        rows[lab] = {"points": n_all, "near_boundary": int(b_bdr.size), "skipped": sk,
                     "disagreements_with_closed_form": dis}
    literal = cex is None
    amended = bool(agree_all)
    summary = (f"{checked} points minimised directly with the toolkit's losses ({skipped} skipped near 0 or beyond "
               f"float64 resolution); sign = closed form on all: {agree_all}; CPO minimiser negative with dr>0: "
               + (f"{cex['loss']} at beta delta_ref={cex['beta_delta_ref']:.3f}, dr={cex['dr']:.3f} (delta={cex['minimiser_delta']:.3f})"
                  if cex else "none"))
    return MethodResult(literal=literal, amended=amended, summary=summary, evidence={"per_loss": rows},
                        depends_on=(
                            "dpo_rlhf_checks.losses.LOSSES", "dpo_rlhf_checks.losses",
                            "toy_bandits.dataset_claims._boundary_pairs",
                            "toy_bandits.cpo_population._log_sigmoid", "toy_bandits.cpo_population.dpop_minimiser",
                            "toy_bandits.cpo_population.dpop_population_loss",
                            "toy_bandits.cpo_population.ranks_first", "toy_bandits.cpo_population.target",
                        ),
                        counterexample=None if literal else {"cpo_misranks_with_dr_positive": cex},
                        amended_statement=None)


# ---------------------------------------------------------------------------------------------------------------
# Running every method of the five claims (until the issue-9 runner merges them)
# ---------------------------------------------------------------------------------------------------------------

CLAIM_IDS = ("dataset-ordered-minimiser", "finite-label-sign", "listwise-equivalence", "length-normalised",
             "cpo-population-alignment")


def run_all(ctx: CheckContext, claim_ids=CLAIM_IDS, out=None) -> dict:
    """Run every method of the data-set claims in order; print literal / amended / seconds / summary per method.

    Returns {claim_id: {method: (MethodResult, seconds)}}. A method that raises is printed as ERROR and re-raised
    after the others ran (this is a report script, not the verdict engine; it merges nothing).
    """
    import importlib
    import sys

    from dpo_rlhf_checks.registry import get_claim

    out = out or sys.stdout
    results, errors = {}, []
    for cid in claim_ids:
        claim = get_claim(cid)
        print(f"== {cid}: {claim.title}", file=out)
        results[cid] = {}
        for name, target in claim.methods.items():
            module_name, _, func_name = target.partition(":")
            start = time.perf_counter()
            try:
                res = getattr(importlib.import_module(module_name), func_name)(ctx)
            except Exception as err:  # noqa: BLE001 - reported, then re-raised below
                errors.append((cid, name, err))
                print(f"   {name:<14} ERROR {type(err).__name__}: {err}", file=out)
                continue
            secs = time.perf_counter() - start
            results[cid][name] = (res, secs)
            print(f"   {name:<14} literal={res.literal!s:<5} amended={res.amended!s:<5} {secs:6.2f}s  "
                  f"depends_on={list(res.depends_on)}", file=out)
            print(f"      {res.summary}", file=out)
            if res.figures:
                print(f"      figures: {', '.join(res.figures)}", file=out)
    if errors:
        raise RuntimeError(f"{len(errors)} method(s) crashed: {[(c, m) for c, m, _ in errors]}") from errors[0][2]
    return results
