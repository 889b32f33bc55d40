"""Convex, numeric and simulation methods of the data-set-level claims (docs/theory.md §13).

Each public function is one method ``fn(ctx) -> MethodResult`` of one claim in the registry; none calls
another method. ``run_all()`` runs every method of the five claims and prints them (benchmarks/run_dataset_claims.py).
"""

from __future__ import annotations

import math
import time

import numpy as np

from dpo_rlhf_checks.result import CheckContext, MethodResult

# ---------------------------------------------------------------------------------------------------------------
# dataset-ordered-minimiser
# ---------------------------------------------------------------------------------------------------------------

H_TOL_CVX = 1e-3  # CVXPY's exponential-cone solve of the logistic loss is accurate to ~1e-5 in theta here
H_TOL_MM = 1e-7


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
    Amended: CVXPY's existence = the strong-connectivity condition, same divergent pairs, |theta - theta_Newton| <= 1e-3.
    """
    from toy_bandits.dataset import cvx_empirical_minimiser, empirical_minimiser, merge_labels, win_graph

    rows, agree_exist, agree_div, max_err = [], True, True, 0.0
    n_unbounded, logodds_worst, logodds_where, first_unbounded = 0, 0.0, None, None
    for name, (K, raw) in _graph_suite(ctx).items():
        labels = merge_labels(raw, K)
        cvx = cvx_empirical_minimiser(labels, K)
        graph = win_graph(labels, K)
        opt = empirical_minimiser(labels, K, beta=1.0)
        exist_ok = (cvx.status == "finite") == graph.finite
        div_ok = set(cvx.divergent) == set(graph.divergent)
        # compare theta differences on the non-divergent pairs (per-SCC constants are free)
        errs = [abs((cvx.theta[i] - cvx.theta[j]) - opt.h[(i, j)]) for (i, j) in labels if opt.h[(i, j)] is not None]
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
    from theory.sec13_dataset import AMENDED_DATASET
    return MethodResult(literal=literal, amended=amended, summary=summary,
                        evidence={"graphs": rows, "tolerance": H_TOL_CVX},
                        depends_on=(), counterexample=cex, amended_statement=AMENDED_DATASET if amended else None)


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
    from theory.sec13_dataset import AMENDED_DATASET
    return MethodResult(literal=literal, amended=amended, summary=summary, evidence={"graphs": rows},
                        depends_on=("dpo_rlhf_checks.losses.dpo_loss",), counterexample=cex,
                        amended_statement=AMENDED_DATASET if amended else None)


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
    BT(r). Per data set: does a finite minimiser exist (graph condition), and at the optimum found by L-BFGS on the
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

            res = minimize(f, np.zeros(K), jac=True, method="L-BFGS-B", options={"gtol": 1e-11, "ftol": 1e-15})
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
    from theory.sec13_dataset import AMENDED_DATASET
    return MethodResult(literal=literal, amended=amended, summary=summary, evidence={"per_n": out, "K": K, "beta": beta},
                        depends_on=("toy_bandits.dataset.empirical_minimiser",), counterexample=cex,
                        amended_statement=AMENDED_DATASET if amended else None, figures=figs)
