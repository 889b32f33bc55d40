"""Methods of docs/theory.md §9 by exact solvers: cpo-constrained-kkt (convex), cpo-penalized-eq10 (general K),
price-of-alignment (closed form, convex).

Each function is one method (``fn(ctx) -> MethodResult``, named in the registry) and states its tolerances;
the symbolic methods of the same claims live in :mod:`theory.sec9_cpo`; the runner merges them with the one
rule (:func:`dpo_rlhf_checks.result.merge_methods`). No function here calls another method.

Random instances (stated once): K uniform in {2..6}; pi_ref ~ Dirichlet(0.5) (mixed with 1e-12
so no entry is exactly 0, then renormalised); r ~ N(0, 2^2); beta log-uniform on [1e-3, 1e3]
with the extremes 1e-3 and 1e3 always included; margin m = 0 for a quarter of them, else
U(0, 3); the pair (w, l) = (0, 1) (responses are exchangeable, so no loss of generality).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from scipy.optimize import brentq, root
from scipy.special import logsumexp, softmax

from dpo_rlhf_checks.registry import get_claim
from dpo_rlhf_checks.result import CheckContext, MethodResult
from toy_bandits.constrained import (
    ConstrainedRLHF, ConstrainedSolution, InfeasiblePreferencesError, closed_form_pairs, constraint_matrix, solve,
)
from toy_bandits.instance import BanditInstance, PairBatch
from toy_bandits.rlhf import log_gibbs_policy, rlhf_objective, suboptimality

TOL_PI_DUAL = 1e-8  # closed form vs the L-BFGS-B + Newton dual: both in log space
TOL_KKT = {"closed-form": 1e-9, "dual": 1e-7, "cvxpy:CLARABEL": 1e-5, "cvxpy:SCS": 1e-3}
# Multipliers are compared only where identifiable: min(pi_c(w), pi_c(l)) >= 1e-2; then an error
# eps in pi moves mu by about beta eps / 1e-2, so |d mu| <= TOL_MU_REL (beta + mu).
MU_IDENTIFIABLE = 1e-2
# price-of-alignment tests strict positivity where pi*(y_l) is above this (below, the price underflows to 0)
PRICE_RESOLVABLE = 1e-100
TOL_MU_REL = {"dual": 1e-6, "cvxpy:CLARABEL": 1e-2}
TOL_LOG = 1e-9  # log-space identities (delta_c = m at an active constraint)
# The dual certificate (``dual_certificate``): the formula's objective minus the lower bound that a CVXPY solver's
# own duals give, an absolute gap, so that sqrt(2 TOL_GAP) is the L1 distance from pi_c it certifies: CLARABEL
# 1.4e-4, SCS 3.2e-2 (a weak second solver). Fixed at about 8x the largest gap of benchmarks/kkt_certificate_gaps.py
# (480 instances of the method's shapes from np.random.default_rng([seed, 777]), seeds 0-59; the claim draws from
# [seed, 9001]): CLARABEL 1.2e-9, SCS 5.9e-5 (7.05e-5 rerun on 2026-12-05, about 7x). Below 0, weak duality allows
# only rounding, relative to the objective: -GAP_ROUNDING max(1, |KL|) (measured down to -6.3e-13 relative, -1.6e-9
# absolute, at beta = 1e-3, KL 2.5e3).
TOL_GAP = {"cvxpy:CLARABEL": 1e-8, "cvxpy:SCS": 5e-4}
GAP_ROUNDING = 1e-11


def _cvxpy_raw_and_polished(inst: BanditInstance,
                            solver: str) -> tuple[ConstrainedSolution, ConstrainedSolution | None]:
    """CVXPY's own answer (the independent method these checks compare) and its polished answer (None if the
    exact active-set step from the solver's active set did not settle); see ConstrainedRLHF.solve."""
    sol = solve(inst, "cvxpy", solver)
    return (sol, None) if sol.raw is None else (sol.raw, sol)


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------

def dual_certificate(inst: BanditInstance, ref: ConstrainedSolution, sol: ConstrainedSolution) -> dict:
    """How far ``ref`` (the closed form's or the dual's pi_c) is from optimal, certified by ``sol``'s duals alone.

    The program is min KL(pi || pi*) over the simplex with A pi >= 0 (docs/theory.md §9). For every nu >= 0 the
    Lagrangian's minimum g(nu) = -log sum_y pi*(y) exp((A^T nu)(y)) is a lower bound on the optimum F(pi_c) (weak
    duality), so for a feasible ``ref`` gap = F(ref) - g(nu) >= F(ref) - F(pi_c) >= KL(ref || pi_c) (the
    Pythagorean inequality of an I-projection onto a convex set), and by Pinsker ||ref - pi_c||_1 <= sqrt(2 gap).
    nu = sol.multipliers / beta (the solver's duals, in the program's units). A wrong ``ref`` has a large gap
    whatever the solver's accuracy; an inaccurate solver's duals only loosen the bound. Computed in log space.
    ok: -GAP_ROUNDING max(1, |F(ref)|) <= gap <= TOL_GAP[sol.method]. ``ref`` must be feasible to its own KKT
    tolerance (checked by the caller; a ref whose log-odds miss the margin by 1e-5 gives a negative gap and fails).
    """
    log_star = log_gibbs_policy(inst.pi_ref, inst.reward, inst.beta)
    a = constraint_matrix(inst.preferences, inst.K, inst.margin)
    lower = -float(logsumexp(log_star + a.T @ (sol.multipliers / inst.beta)))
    objective = float(np.sum(np.where(ref.pi > 0, ref.pi * (ref.log_pi - log_star), 0.0)))
    gap = objective - lower
    return {"gap": gap, "objective": objective, "certified_l1": math.sqrt(2.0 * max(gap, 0.0)),
            "ok": -GAP_ROUNDING * max(1.0, abs(objective)) <= gap <= TOL_GAP[sol.method]}


# What decides and what is reported: a CVXPY solver's raw answer (pi, price, KKT residuals) measures where the solver
# stopped, which varies by instance (CLARABEL 1.27e-5 off in pi at seed 7000, "optimal_inaccurate"; docs/theory.md
# §12), so the verdict reads the formulas' dual certificates by each solver's duals and the formulas' own KKT
# residuals.
DECIDED_KKT = ("closed-form", "dual")
RAW_REPORTED = ("the CVXPY solvers' raw answers (max |pi - formula|, price, KKT residuals) are reported, not decided: "
                "they measure the solver's stopping point; the verdict reads dual_certificate_* (weak duality, exact "
                "for any duals), the formulas' KKT residuals, the closed form vs the dual, and CLARABEL's multipliers")


def _certificate_summary() -> dict:
    return {m: {"max_gap": -math.inf, "min_gap": math.inf, "max_certified_l1": 0.0,
                "tolerance": TOL_GAP[m], "n": 0, "ok": True} for m in TOL_GAP}


def _add_certificate(summary: dict, cert: dict, method: str) -> None:
    s = summary[method]
    s["max_gap"] = max(s["max_gap"], cert["gap"])
    s["min_gap"] = min(s["min_gap"], cert["gap"])
    s["max_certified_l1"] = max(s["max_certified_l1"], cert["certified_l1"])
    s["n"] += 1
    s["ok"] = s["ok"] and cert["ok"]


def _random_instances(rng: np.random.Generator, n: int, K: int | None = None) -> list[BanditInstance]:  # noqa: N803
    """n single-pair instances drawn as the module docstring states."""
    out = []
    for i in range(n):
        k = int(rng.integers(2, 7)) if K is None else K
        pi_ref = rng.dirichlet(np.full(k, 0.5)) + 1e-12
        pi_ref /= pi_ref.sum()
        beta = 1e-3 if i % 10 == 0 else 1e3 if i % 10 == 1 else float(10 ** rng.uniform(-3, 3))
        margin = 0.0 if i % 4 == 0 else float(rng.uniform(0, 3))
        out.append(BanditInstance(pi_ref, rng.normal(scale=2.0, size=k), beta, [(0, 1)], margin))
    return out


def _random_batch(rng: np.random.Generator, n: int, K: int) -> PairBatch:  # noqa: N803
    pi_ref = rng.dirichlet(np.full(K, 0.5), size=n) + 1e-12
    pi_ref /= pi_ref.sum(axis=1, keepdims=True)
    beta = 10 ** rng.uniform(-3, 3, size=n)
    beta[::10], beta[1::10] = 1e-3, 1e3
    margin = np.where(np.arange(n) % 4 == 0, 0.0, rng.uniform(0, 3, size=n))
    return PairBatch(pi_ref, rng.normal(scale=2.0, size=(n, K)), beta, np.zeros(n, dtype=np.int64),
                     np.ones(n, dtype=np.int64), margin)


# ---------------------------------------------------------------------------------------------
# cpo-constrained-kkt
# ---------------------------------------------------------------------------------------------

GRAPHS = {
    "chain": [(0, 1), (1, 2), (2, 3)],
    "dag": [(0, 1), (0, 2), (1, 3), (2, 3)],
    "overlapping": [(0, 1), (2, 1), (0, 3), (2, 4)],
    "cycle_m0": [(0, 1), (1, 2), (2, 0)],
}


def _single_pair_agreement(ctx: CheckContext, rng: np.random.Generator) -> dict:
    n = 12 if ctx.quick else 30
    insts = _random_instances(rng, n)
    worst = {"clarabel_pi": 0.0, "scs_pi": 0.0, "dual_pi": 0.0, "clarabel_mu_rel": 0.0, "dual_mu_rel": 0.0,
             "clarabel_price": 0.0, "dual_price": 0.0}
    polished = {"clarabel_pi": 0.0, "scs_pi": 0.0, "n_not_settled": 0}  # reported, not part of the verdict
    kkt_worst = {m: 0.0 for m in TOL_KKT}
    cert = _certificate_summary()
    n_active = n_mu_compared = 0
    worst_case: dict = {}
    for inst in insts:
        cf = solve(inst, "closed-form")
        cl, cl_pol = _cvxpy_raw_and_polished(inst, "CLARABEL")
        sc, sc_pol = _cvxpy_raw_and_polished(inst, "SCS")
        du = solve(inst, "dual")
        for sol in (cl, sc):
            _add_certificate(cert, dual_certificate(inst, cf, sol), sol.method)
        for key, pol in (("clarabel_pi", cl_pol), ("scs_pi", sc_pol)):
            if pol is None:
                polished["n_not_settled"] += 1
            else:
                polished[key] = max(polished[key], float(np.max(np.abs(cf.pi - pol.pi))))
        n_active += bool(cf.multipliers[0] > 0)
        for key, other in (("clarabel_pi", cl), ("scs_pi", sc), ("dual_pi", du)):
            err = float(np.max(np.abs(cf.pi - other.pi)))
            if err > worst[key]:
                worst[key] = err
                if key == "clarabel_pi":
                    worst_case = {"beta": inst.beta, "margin": inst.margin, "K": inst.K, "err": err}
        for key, other in (("clarabel_price", cl), ("dual_price", du)):
            worst[key] = max(worst[key], abs(cf.price_of_alignment - other.price_of_alignment)
                             / (inst.beta + cf.price_of_alignment))
        if min(cf.pi[0], cf.pi[1]) >= MU_IDENTIFIABLE:
            n_mu_compared += 1
            mu = cf.multipliers[0]
            worst["clarabel_mu_rel"] = max(worst["clarabel_mu_rel"], abs(mu - cl.multipliers[0]) / (inst.beta + mu))
            worst["dual_mu_rel"] = max(worst["dual_mu_rel"], abs(mu - du.multipliers[0]) / (inst.beta + mu))
        for sol in (cf, cl, sc, du):
            kkt_worst[sol.method] = max(kkt_worst[sol.method], max(sol.kkt.values()))
    ok = (worst["dual_pi"] <= TOL_PI_DUAL and all(c["ok"] for c in cert.values())
          and worst["clarabel_mu_rel"] <= TOL_MU_REL["cvxpy:CLARABEL"] and worst["dual_mu_rel"] <= TOL_MU_REL["dual"]
          and worst["dual_price"] <= TOL_PI_DUAL
          and all(kkt_worst[m] <= TOL_KKT[m] for m in DECIDED_KKT) and 0 < n_active < n
          and n_mu_compared > 0)  # the multipliers compared on at least one instance, or their check says nothing
    return {"ok": ok, "n_instances": n, "n_active": n_active, "n_mu_compared": n_mu_compared,
            "dual_certificate_of_closed_form": cert, "max_abs_diff_vs_closed_form": worst,
            "raw_cvxpy_reported_only": RAW_REPORTED, "max_kkt_residual": kkt_worst,
            "worst_clarabel_instance": worst_case,
            "cvxpy_polished_max_abs_diff_vs_closed_form": polished,
            "beta_range": [min(x.beta for x in insts), max(x.beta for x in insts)]}


def _closed_form_batch_kkt(ctx: CheckContext, rng: np.random.Generator) -> dict:
    """KKT conditions of the closed form on a large batch, in log space (vectorised)."""
    n = 2000 if ctx.quick else 20000
    worst = {"primal_log": 0.0, "dual": 0.0, "slackness_log": 0.0, "stationarity_log": 0.0}
    counts = {"n": 0, "active": 0}
    for K in (2, 3, 5):  # noqa: N806
        b = _random_batch(rng, n // 3, K)
        sol = closed_form_pairs(b)
        rows = np.arange(b.N)
        a_w = sol.mu / b.beta
        a_l = -sol.mu * np.exp(b.margin) / b.beta
        # stationarity: log pi_c - log pi* - tilt is the same constant for every response
        diff = sol.log_pi_c - sol.log_pi_star
        diff[rows, b.winner] -= a_w
        diff[rows, b.loser] -= a_l
        worst["stationarity_log"] = max(worst["stationarity_log"], float(np.max(np.ptp(diff, axis=1))))
        worst["primal_log"] = max(worst["primal_log"], float(np.max(np.maximum(b.margin - sol.delta_c, 0.0))))
        worst["dual"] = max(worst["dual"], float(np.max(np.maximum(-sol.mu, 0.0))))
        act = sol.mu > 0
        if act.any():
            worst["slackness_log"] = max(worst["slackness_log"], float(np.max(np.abs(sol.delta_c - b.margin)[act])))
        counts["n"] += b.N
        counts["active"] += int(act.sum())
    ok = all(v <= TOL_LOG * 10 for v in worst.values())  # log-space residuals of O(1e-12) expected; 1e-8 stated
    return {"ok": ok, **counts, "max_residuals": worst, "tolerance": TOL_LOG * 10}


def _graph_instance(rng: np.random.Generator, name: str) -> BanditInstance:
    """One random instance on the graph ``GRAPHS[name]``: K = 6, pi_ref ~ Dirichlet(1), beta = 10^U(-2, 2), margin
    U(0, 2) (0 on the cycle), rewards N(0, 2^2)."""
    pi_ref = rng.dirichlet(np.ones(6))
    beta = float(10 ** rng.uniform(-2, 2))
    margin = 0.0 if name == "cycle_m0" else float(rng.uniform(0, 2))
    return BanditInstance(pi_ref, rng.normal(scale=2.0, size=6), beta, GRAPHS[name], margin)


def _is_cycle_of(cycle: list[int] | None, prefs: list[tuple[int, int]]) -> bool:
    """Whether ``cycle`` (y_0, y_1, ..., y_0) is a closed walk along the preference pairs: it starts where it ends and
    each step (y_i, y_{i+1}) is one of ``prefs``, in that direction."""
    return (cycle is not None and len(cycle) >= 2 and cycle[0] == cycle[-1]
            and all((cycle[i], cycle[i + 1]) in prefs for i in range(len(cycle) - 1)))


def _multi_pair(ctx: CheckContext, rng: np.random.Generator) -> dict:
    n = 3 if ctx.quick else 6
    out: dict[str, Any] = {}
    ok = True
    for name, prefs in GRAPHS.items():
        worst = {"clarabel_vs_dual_pi": 0.0, "scs_vs_dual_pi": 0.0}
        polished = {"clarabel_vs_dual_pi": 0.0, "scs_vs_dual_pi": 0.0, "n_not_settled": 0}  # reported only
        kkt = {"dual": 0.0, "cvxpy:CLARABEL": 0.0, "cvxpy:SCS": 0.0}
        cert = _certificate_summary()
        n_active, tie_err = 0, 0.0
        for i in range(n):
            inst = _graph_instance(rng, name)
            du = solve(inst, "dual")
            (cl, cl_pol), (sc, sc_pol) = _cvxpy_raw_and_polished(inst, "CLARABEL"), _cvxpy_raw_and_polished(inst, "SCS")
            for sol in (cl, sc):
                _add_certificate(cert, dual_certificate(inst, du, sol), sol.method)
            for key, pol in (("clarabel_vs_dual_pi", cl_pol), ("scs_vs_dual_pi", sc_pol)):
                if pol is None:
                    polished["n_not_settled"] += 1
                else:
                    polished[key] = max(polished[key], float(np.max(np.abs(pol.pi - du.pi))))
            worst["clarabel_vs_dual_pi"] = max(worst["clarabel_vs_dual_pi"], float(np.max(np.abs(cl.pi - du.pi))))
            worst["scs_vs_dual_pi"] = max(worst["scs_vs_dual_pi"], float(np.max(np.abs(sc.pi - du.pi))))
            for sol in (du, cl, sc):
                kkt[sol.method] = max(kkt[sol.method], max(sol.kkt.values()))
            n_active += int(np.sum(du.multipliers > 0))
            if name == "cycle_m0":
                tie_err = max(tie_err, float(np.ptp(du.pi[:3])), float(np.ptp(cl.pi[:3])) / 1e3)
        g_ok = (all(c["ok"] for c in cert.values()) and kkt["dual"] <= TOL_KKT["dual"] and n_active > 0
                and (name != "cycle_m0" or tie_err <= TOL_PI_DUAL))
        ok = ok and g_ok
        out[name] = {"pairs": prefs, "n": n, "ok": g_ok, "n_active_constraints": n_active,
                     "dual_certificate_of_dual": cert, "max_abs_diff": worst,
                     "cvxpy_polished_max_abs_diff": polished, "max_kkt_residual": kkt,
                     **({"max_tie_spread_on_cycle": tie_err} if name == "cycle_m0" else {})}
    # a cycle with m > 0: typed error naming a real cycle
    prefs = [(3, 0), (0, 1), (1, 2), (2, 0), (4, 5)]
    inst = BanditInstance(np.full(6, 1 / 6), np.zeros(6), 1.0, prefs, 0.5)
    try:
        solve(inst, "cvxpy")
        named, cyc = False, None
    except InfeasiblePreferencesError as err:
        cyc = err.cycle
        named = _is_cycle_of(cyc, prefs)
    # the linear relaxation of the same cycle is feasible with zero mass on it (see check_feasible)
    prob = ConstrainedRLHF(6, prefs)
    prob.log_pi_star.value = np.log(np.full(6, 1 / 6))
    prob.exp_margin.value = np.full(len(prefs), math.exp(inst.margin))
    prob.problem.solve(solver="CLARABEL")
    mass_on_cycle = float(np.sum(np.clip(prob.pi.value[[0, 1, 2]], 0, None)))  # the cycle 0 > 1 > 2 > 0
    ok = ok and named
    out["cycle_m_positive"] = {"pairs": prefs, "margin": inst.margin, "raised_with_cycle": cyc, "cycle_is_real": named,
                               "linear_relaxation_status": prob.problem.status,
                               "linear_relaxation_mass_on_cycle": mass_on_cycle,
                               "linear_relaxation_pi": prob.pi.value}
    return {"ok": ok, "graphs": out}


def cpo_constrained_kkt_convex(ctx: CheckContext) -> MethodResult:
    """docs/theory.md §9(a): the closed form (``closed_form_pairs``) against the dual and certified by CVXPY's duals
    (CLARABEL, SCS; ``dual_certificate``), KKT residuals of both formulas; multi-pair graphs (chain, DAG,
    overlapping, cycle with m = 0): the dual certified by CVXPY's duals; a cycle with m > 0 raises naming it. The
    solvers' raw answers are reported, not decided (they measure where a solver stopped)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([ctx.seed, 9001])
    single = _single_pair_agreement(ctx, rng)
    batch = _closed_form_batch_kkt(ctx, rng)
    multi = _multi_pair(ctx, rng)
    literal = single["ok"] and batch["ok"] and multi["ok"]
    evidence = {
        "single_pair": single, "closed_form_batch_kkt": batch, "multi_pair": multi,
        "tolerances": {"relative_dual_gap": TOL_GAP, "gap_rounding": GAP_ROUNDING, "pi_dual": TOL_PI_DUAL,
                       "kkt_decided": {m: TOL_KKT[m] for m in DECIDED_KKT}, "kkt_reported": TOL_KKT,
                       "mu_relative": TOL_MU_REL, "mu_compared_if_min_pi_c_pair_at_least": MU_IDENTIFIABLE},
        "cvxpy_answers": "CVXPY decides through its duals only (dual_certificate_*: weak duality certifies the "
                         "formula's pi within sqrt(2 gap) in L1 of pi_c); its raw answers, their KKT residuals and "
                         "its answer polished from the solver's active set (toy_bandits.constrained.exact_active_set, "
                         "cvxpy_polished_*) are reported, outside the verdict",
        "multiplier_convention": "mu_k multiplies pi(w_k) - e^m pi(l_k) >= 0 in the Lagrangian of max J (reward "
                                 "units); CVXPY minimises KL(pi || pi*) = (J(pi*) - J(pi))/beta, its duals are mu/beta",
        "seconds": time.perf_counter() - t0,
    }
    s = single["max_abs_diff_vs_closed_form"]
    certs = [single["dual_certificate_of_closed_form"]] + [
        g["dual_certificate_of_dual"] for g in multi["graphs"].values() if "dual_certificate_of_dual" in g]
    worst_l1 = {m: max(c[m]["max_certified_l1"] for c in certs) for m in TOL_GAP}
    summary = (f"1 pair, {single['n_instances']} instances (beta 1e-3..1e3, {single['n_active']} active): closed form "
               f"vs dual {s['dual_pi']:.1e} in pi; closed-form KKT on {batch['n']} instances max "
               f"{max(batch['max_residuals'].values()):.1e}; graphs "
               f"{', '.join(k for k, v in multi['graphs'].items() if v.get('ok', v.get('cycle_is_real')))} pass; "
               f"every formula answer certified by the solvers' duals within L1 "
               f"{worst_l1['cvxpy:CLARABEL']:.1e} (CLARABEL) / {worst_l1['cvxpy:SCS']:.1e} (SCS) of pi_c "
               f"({'all within tolerance' if all(all(c[m]['ok'] for m in TOL_GAP) for c in certs) else 'NOT all'}); "
               f"raw CVXPY answers reported; cycle with m>0 raises naming it")
    counterexample = None
    if not literal:
        counterexample = {"single_pair": single, "batch": batch["max_residuals"],
                          "multi_pair": {k: v for k, v in multi["graphs"].items() if not v.get("ok", True)}}
    return MethodResult(literal=bool(literal), amended=None, summary=summary, evidence=evidence,
                        depends_on=(
                            "toy_bandits.constrained.ConstrainedRLHF", "toy_bandits.constrained.closed_form_pairs",
                            "toy_bandits.constrained", "toy_bandits.instance", "toy_bandits.rlhf._shifted_logits",
                            "toy_bandits.rlhf.log_gibbs_policy", "toy_bandits.rlhf.suboptimality",
                            "toy_bandits.solver_claims._add_certificate",
                            "toy_bandits.solver_claims._certificate_summary",
                            "toy_bandits.solver_claims._closed_form_batch_kkt",
                            "toy_bandits.solver_claims._cvxpy_raw_and_polished",
                            "toy_bandits.solver_claims._graph_instance", "toy_bandits.solver_claims._multi_pair",
                            "toy_bandits.solver_claims._is_cycle_of", "toy_bandits.solver_claims.dual_certificate",
                            "toy_bandits.solver_claims._single_pair_agreement",
                        ),
                        counterexample=counterexample)


# ---------------------------------------------------------------------------------------------
# cpo-penalized-eq10
# ---------------------------------------------------------------------------------------------

def penalized_objective(pi: np.ndarray, pi_ref: np.ndarray, reward: np.ndarray, beta: float, gamma: float,
                        w: int, l: int) -> float:
    """Eq. 10 as printed: F(pi) = J(pi) + gamma (log pi(w) - log pi(l)); pi on the open simplex."""
    return float(rlhf_objective(pi, pi_ref, reward, beta) + gamma * (math.log(pi[w]) - math.log(pi[l])))


def _grad_pi(pi, pi_ref, reward, beta, gamma, w, l) -> np.ndarray:
    g = reward - beta * (np.log(pi / pi_ref) + 1.0)
    g[w] += gamma / pi[w]
    g[l] -= gamma / pi[l]
    return g


def _tangent_hessian_eigs(pi, beta, gamma, w, l) -> np.ndarray:
    """Eigenvalues of the Hessian of F restricted to the simplex's tangent space {v : sum v = 0}."""
    d = -beta / pi
    d[w] -= gamma / pi[w] ** 2
    d[l] += gamma / pi[l] ** 2
    k = pi.size
    q, _ = np.linalg.qr(np.eye(k) - 1.0 / k)
    basis = q[:, : k - 1]
    return np.linalg.eigvalsh(basis.T @ np.diag(d) @ basis)


def _tangent_index(pi, beta, gamma, w, l) -> int | None:
    """Morse index (ascending directions) of F on the simplex at an interior point, exactly from F's Hessian in pi,
    diag(d) (d_y = -beta/pi_y, d_w -= gamma/pi_w^2, d_l += gamma/pi_l^2): the bordered matrix [[D, 1], [1^T, 0]] has
    the inertia of D restricted to {sum v = 0} plus one positive and one negative eigenvalue, and by Haynsworth
    that of D plus the sign of its Schur complement -sum_y 1/d_y, so

        index = #{d_y > 0} - 1 + [sum_y 1/d_y < 0].

    Only signs of sums of a few terms are read, each correct unless within its rounding of 0: None (a degenerate
    point, kind undecided) where some d_y or the sum is within 16 eps of its terms' magnitude. (The float eigvalsh
    of the projected diag(d), :func:`_tangent_hessian_eigs`, errs by eps max|d| ~ 1e-6 when pi spans 1e-10..1.)
    """
    pi = np.asarray(pi, dtype=np.float64)
    eps = np.finfo(np.float64).eps
    d = -beta / pi
    mag = beta / pi
    d[w] -= gamma / pi[w] ** 2
    d[l] += gamma / pi[l] ** 2
    mag[w] += gamma / pi[w] ** 2
    mag[l] += gamma / pi[l] ** 2
    if np.any(np.abs(d) <= 16 * eps * mag):
        return None
    inv = 1.0 / d
    total = float(np.sum(inv))
    if abs(total) <= 16 * eps * pi.size * float(np.sum(np.abs(inv))):
        return None
    return int(np.sum(d > 0)) - 1 + int(total < 0)


#: working precision (decimal digits) and step of :func:`_logit_hessian_index`'s finite differences
LOGIT_FD_DPS, LOGIT_FD_STEP = 120, 1e-40


def _logit_hessian_index(pi, pi_ref, reward, beta, gamma, w, l) -> int | None:
    """Morse index from the Hessian of F in free logits theta (pi = softmax(theta, 0)), by central finite
    differences of F itself (no analytic second derivative) in 120-digit arithmetic (mpmath), and its
    eigenvalues in the same arithmetic.

    At a stationary point the logit Hessian is J^T diag(d) J (J = dpi/dtheta, onto the tangent space; the term
    of F's gradient drops because sum pi = 1), congruent to the tangent-space Hessian: the same index (Sylvester).
    Its eigenvalues are as small as ~beta pi_min (0.2 * 2.5e-10 at one seed-1 point), which the former float64
    differences (step 1e-5, error eps |F| / h^2 ~ 2e-6) could not sign: they reported index 1 and 2 at two local
    maxima (seeds 1 and 3), so "kinds by 2 Hessians agree" failed and the verdict followed the seed. Here the
    rounding error is ~1e-120 |F| / h^2 ~ 1e-40 and the truncation h^2 |F^(4)| / 12 ~ 1e-78 (F's logit
    derivatives are O(|r| + beta + gamma)): an eigenvalue within 1e-30 of 0 leaves the index undecided (None).
    """
    import mpmath

    k = pi.size
    with mpmath.workdps(LOGIT_FD_DPS):
        mp = mpmath.mpf
        log_ref = [mpmath.log(mp(float(x))) for x in pi_ref]
        r = [mp(float(x)) for x in reward]
        b, g = mp(beta), mp(gamma)
        theta0 = [mpmath.log(mp(float(pi[y]))) - mpmath.log(mp(float(pi[-1]))) for y in range(k - 1)]

        def f(th):
            z = list(th) + [mp(0)]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in z))
            lp = [x - lse for x in z]
            # F = sum pi r - beta sum pi (log pi - log pi_ref) + gamma (log pi_w - log pi_l)
            return (mpmath.fsum(mpmath.exp(lp[y]) * (r[y] - b * (lp[y] - log_ref[y])) for y in range(k))
                    + g * (lp[w] - lp[l]))

        h = mp(LOGIT_FD_STEP)

        def at(i, j, si, sj):
            th = list(theta0)
            th[i] += si * h
            th[j] += sj * h
            return f(th)

        hess = mpmath.matrix(k - 1, k - 1)
        for i in range(k - 1):
            for j in range(i, k - 1):
                val = (at(i, j, 1, 1) - at(i, j, 1, -1) - at(i, j, -1, 1) + at(i, j, -1, -1)) / (4 * h * h)
                hess[i, j] = hess[j, i] = val
        eigs = mpmath.eigsy(hess, eigvals_only=True)
        if any(abs(e) <= mp("1e-30") for e in eigs):
            return None
        return int(sum(1 for e in eigs if e > 0))


def _solve_log_eq(a: np.ndarray | float, b: np.ndarray | float, c: np.ndarray, lo: np.ndarray | float,
                  hi: np.ndarray | float, iters: int = 200) -> np.ndarray:
    """Vectorised bisection for lp in [lo, hi] with f(lp) = a lp + b e^{-lp} - c monotone on the interval.

    Returns lp (same shape as c). The sign of f at ``lo`` decides the direction, so it works for the
    increasing (b < 0) and for each monotone branch of the convex (b > 0) case.
    """
    c = np.asarray(c, dtype=np.float64)
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), c.shape).copy()
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), c.shape).copy()
    with np.errstate(over="ignore"):
        f_lo = a * lo + b * np.exp(-lo) - c
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            f_mid = a * mid + b * np.exp(-mid) - c
            same = np.sign(f_mid) == np.sign(f_lo)
            lo = np.where(same, mid, lo)
            f_lo = np.where(same, f_mid, f_lo)
            hi = np.where(same, hi, mid)
    return 0.5 * (lo + hi)


def enumerate_stationary_points(pi_ref, reward, beta, gamma, w, l, n_grid: int = 4000) -> list[np.ndarray]:
    """All interior stationary points of Eq. 10, by reduction to one equation in a scalar u.

    Stationarity on the simplex: dF/dpi(y) = const. Writing the constant as u - beta: every other
    response has pi(y) = pi_ref(y) exp((r(y) - u)/beta); pi(w) solves beta log(p/pi_ref(w)) - gamma/p
    = r(w) - u (increasing in p: one root); pi(l) solves beta log(p/pi_ref(l)) + gamma/p = r(l) - u
    (convex in log p with its minimum at p = gamma/beta: 0 or 2 roots, a small and a large branch).
    On each branch the roots of S(u) = sum_y pi(y) - 1 are bracketed on a grid of u (dense near the
    branch point u_max) and refined by bisection to machine precision (vectorised).
    """
    pi_ref, reward = np.asarray(pi_ref, float), np.asarray(reward, float)
    k = pi_ref.size
    others = np.array([y for y in range(k) if y not in (w, l)], dtype=np.int64)
    lp_turn = math.log(gamma / beta)
    u_max = reward[l] - (beta * (lp_turn - math.log(pi_ref[l])) + beta)
    # log p = lp solves beta lp - gamma e^{-lp} = c + beta log pi_ref (w), beta lp + gamma e^{-lp} = ... (l)

    def policy(u: np.ndarray, branch: int) -> np.ndarray:
        lp_w = _solve_log_eq(beta, -gamma, reward[w] - u + beta * math.log(pi_ref[w]), -700.0, 700.0)
        lo, hi = (-700.0, lp_turn) if branch == 0 else (lp_turn, 700.0)
        lp_l = _solve_log_eq(beta, gamma, reward[l] - u + beta * math.log(pi_ref[l]), lo, hi)
        pi = np.zeros(u.shape + (k,))
        if others.size:
            pi[..., others] = np.exp(np.log(pi_ref[others]) + (reward[others] - u[..., None]) / beta)
        pi[..., w], pi[..., l] = np.exp(lp_w), np.exp(lp_l)
        return pi

    u_lo = min(reward[w] - beta * math.log(1 / pi_ref[w]) + gamma, u_max) - 1.0
    t = np.linspace(0.0, 1.0, n_grid)
    us = u_max - 1e-12 * max(1.0, abs(u_max)) - (u_max - u_lo) * t ** 2  # decreasing in t
    points = []
    for branch in (0, 1):
        vals = policy(us, branch).sum(axis=-1) - 1.0
        idx = np.nonzero(np.sign(vals[:-1]) != np.sign(vals[1:]))[0]
        for i in idx:
            u0 = brentq(lambda u: policy(np.array([u]), branch).sum() - 1.0, us[i + 1], us[i],
                        xtol=1e-15, rtol=1e-15)
            pi = policy(np.array([u0]), branch)[0]
            points.append(pi / pi.sum())
    return points


def _kkt_search(pi_ref, reward, beta, gamma, w, l, rng, n_starts: int) -> list[np.ndarray]:
    """Stationary points by scipy root-finding (hybr) on the full K+1 stationarity system, many starts.

    Unknowns z = log pi (K) and the multiplier lam of sum pi = 1; equations
    r(y) - beta (z(y) - log pi_ref(y) + 1) + gamma [y = w] e^{-z(w)} - gamma [y = l] e^{-z(l)} - lam = 0 and
    sum e^z = 1. Starts: pi0 ~ Dirichlet(1); every other start puts pi0(y_l) at gamma/beta x e^{U(-6, 2)}
    (the loser's equation turns at gamma/beta, and the second stationary point has a small basin).
    Independent of :func:`enumerate_stationary_points` (no reduction to one variable, no brackets).
    """
    k = pi_ref.size
    log_ref = np.log(pi_ref)

    def eqs(x):
        z, lam = x[:-1], x[-1]
        e = reward - beta * (z - log_ref + 1.0) - lam
        e[w] += gamma * np.exp(-z[w])
        e[l] -= gamma * np.exp(-z[l])
        return np.r_[e, np.exp(z).sum() - 1.0]

    found: list[np.ndarray] = []
    for i in range(n_starts):
        pi0 = rng.dirichlet(np.ones(k))
        if i % 2:
            pi0[l] = (gamma / beta) * math.exp(rng.uniform(-6.0, 2.0))
            pi0 = pi0 / pi0.sum()
        z0 = np.log(pi0)
        g0 = _grad_pi(pi0, pi_ref, reward, beta, gamma, w, l)
        with np.errstate(all="ignore"):
            res = root(eqs, np.r_[z0, pi0 @ g0], method="hybr", tol=1e-14)
        if not res.success or not np.all(np.isfinite(res.x)) or np.max(np.abs(eqs(res.x))) > 1e-9:
            continue
        pi = np.exp(res.x[:-1])
        if all(np.max(np.abs(pi - q)) > 1e-7 for q in found):
            found.append(pi)
    return found


def _kind(index: int, k: int) -> str:
    if index == 0:
        return "local max"
    if index == k - 1:
        return "local min"
    return f"saddle (index {index})"


def _part3_case(pi_ref, reward, beta: float, margin: float, w: int, l: int) -> dict | None:
    """Part (3) of :func:`cpo_penalized_eq10_general_k` on one instance: pi_c of the margin-constrained problem, gamma =
    nu* = mu pi_c(w), the stationarity residual of Eq. 10 there, the kind from the 120-digit logit Hessian
    (``_idx``, independent of the criterion) and the criterion's prediction. None where the constraint is inactive."""
    k = pi_ref.size
    sol = solve(BanditInstance(pi_ref, reward, beta, [(w, l)], margin), "closed-form")
    mu = float(sol.multipliers[0])
    if mu <= 0:
        return None
    nu = mu * sol.pi[w]
    g = _grad_pi(sol.pi, pi_ref, reward, beta, nu, w, l)
    stationary = float(np.ptp(g) / (1 + np.max(np.abs(g))))
    idx = _logit_hessian_index(sol.pi, pi_ref, reward, beta, nu, w, l)
    return {"K": k, "beta": beta, "m": margin, "mu": mu, "nu_star": nu, "stationarity_residual": stationary,
            "kind_of_pi_c": _kind(idx, k) if idx is not None else "undecided",
            "criterion_predicts_ascending_direction": bool(_criterion_value(sol, margin, beta, w, l) > 1), "_idx": idx}


def _criterion_value(sol, margin: float, beta: float, w: int, l: int) -> float:
    """d_l * sum_{y != l} 1/|d_y| at pi_c (d the tangent Hessian diagonal): an ascending direction exists iff > 1;
    K = 2 reduces to mu (e^m - 1) > beta."""
    mu = float(sol.multipliers[0])
    d_l = (mu * math.exp(margin) - beta) / sol.pi[l]
    inv = (1 - sol.pi[w] - sol.pi[l]) / beta + sol.pi[w] / (beta + mu)
    return d_l * inv


def _criterion_boundary(pi_ref, reward, beta: float, w: int, l: int) -> float | None:
    """The margin m in [0, 6] where the criterion value crosses 1 (bisection, 50 steps, constraint active at both
    ends), or None where it does not cross there."""
    def side(m):
        sol = solve(BanditInstance(pi_ref, reward, beta, [(w, l)], m), "closed-form")
        return None if sol.multipliers[0] <= 0 else _criterion_value(sol, m, beta, w, l) > 1

    lo, hi = 0.0, 6.0
    s_lo, s_hi = side(lo), side(hi)
    if s_lo is None or s_hi is None or s_lo == s_hi:
        return None
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        s_mid = side(mid)
        if s_mid is None:
            return None
        lo, hi = (mid, hi) if s_mid == s_lo else (lo, mid)
    return 0.5 * (lo + hi)


# cpo_penalized_eq10_general_k's decision tolerances, read by its decisions and shown in its evidence (one source, so
# the evidence cannot show a tolerance the decision does not use)
EQ10_TOL = {"slope_over_gamma": 1e-6, "same_point": 1e-6, "eq13_16_relative": 1e-8, "stationarity_relative": 1e-9}


def cpo_penalized_eq10_general_k(ctx: CheckContext) -> MethodResult:
    """docs/theory.md §9(b), K = 3..5: boundedness, the stationary points (1-d enumeration vs K-dim root search) and
    their kind (tangent-space inertia from the analytic Hessian, :func:`_tangent_index`, vs the logit Hessian by
    120-digit finite differences of F, :func:`_logit_hessian_index`); pi_c with gamma = nu* and its kind (logit
    Hessian) against the criterion."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([ctx.seed, 9010])
    n_inst = 8 if ctx.quick else 16
    n_starts = 40
    w, l = 0, 1
    rows, unbounded_all, sets_agree, kinds_agree, eq1316_max = [], True, True, True, 0.0
    patterns: dict[str, int] = {}
    for i in range(n_inst):
        k = 3 + i % 3
        pi_ref = rng.dirichlet(np.ones(k))
        reward = rng.normal(size=k)
        beta = float(10 ** rng.uniform(-1, 0.5))
        gamma = float(10 ** rng.uniform(-2.5, -0.5)) if i % 4 else float(10 ** rng.uniform(-0.5, 0.5))
        # (1) unboundedness: along pi_l = pi*_l e^{-s} (mass moved proportionally to the rest), F grows
        # with slope gamma in s while J stays in [min r - beta log(1/min pi_ref), beta log Z].
        pi0 = np.exp(log_gibbs_policy(pi_ref, reward, beta))
        ss = np.array([0.0, 10.0, 50.0, 100.0, 200.0])
        path_f, path_j = [], []
        for s in ss:
            pi = pi0.copy()
            pl = pi0[l] * math.exp(-s)
            pi[np.arange(k) != l] *= (1 - pl) / (1 - pi0[l])
            pi[l] = pl
            path_f.append(penalized_objective(pi, pi_ref, reward, beta, gamma, w, l))
            path_j.append(float(rlhf_objective(pi, pi_ref, reward, beta)))
        slope = (path_f[-1] - path_f[-2]) / (ss[-1] - ss[-2])
        j_lo, j_hi = reward.min() - beta * math.log(1 / pi_ref.min()), beta * logsumexp(np.log(pi_ref) + reward / beta)
        unbounded = (abs(slope / gamma - 1) < EQ10_TOL["slope_over_gamma"] and all(np.diff(path_f[1:]) > 0)
                     and all(j_lo - 1e-9 <= j <= j_hi + 1e-9 for j in path_j))
        unbounded_all = unbounded_all and unbounded
        # (2) stationary points, two ways
        enum = enumerate_stationary_points(pi_ref, reward, beta, gamma, w, l)
        search = _kkt_search(pi_ref, reward, beta, gamma, w, l, rng, n_starts)
        same = len(enum) == len(search) and all(min(np.max(np.abs(p - q)) for q in search) < EQ10_TOL["same_point"]
                                                for p in enum)
        sets_agree = sets_agree and same
        kinds = []
        for p in enum:
            idx_a = _tangent_index(p, beta, gamma, w, l)
            idx_b = _logit_hessian_index(p, pi_ref, reward, beta, gamma, w, l)
            # an undecided index (None: a degenerate point) is no agreement: the cross-check then fails loudly
            kinds_agree = kinds_agree and idx_a is not None and idx_a == idx_b
            kinds.append(_kind(idx_a, k) if idx_a is not None else "undecided")
            delta, delta_ref = math.log(p[w] / p[l]), math.log(pi_ref[w] / pi_ref[l])
            resid = beta * (delta - delta_ref) - (reward[w] - reward[l]) - gamma * (1 / p[w] + 1 / p[l])
            eq1316_max = max(eq1316_max, abs(resid) / (1 + gamma * (1 / p[w] + 1 / p[l])))
        kinds.sort()
        pattern = " + ".join(kinds) if kinds else "none"
        patterns[pattern] = patterns.get(pattern, 0) + 1
        f_best_stationary = max((penalized_objective(p, pi_ref, reward, beta, gamma, w, l) for p in enum),
                                default=-math.inf)
        rows.append({"K": k, "beta": beta, "gamma": gamma, "n_stationary_enumerated": len(enum),
                     "n_stationary_root_search": len(search), "kinds": kinds,
                     "F_at_best_stationary_point": f_best_stationary, "F_on_path_s_200": path_f[-1],
                     "path_slope_over_gamma": slope / gamma})
    # (3) gamma = log-form KKT multiplier nu* = mu pi_c(w): pi_c is a stationary point of Eq. 10; its kind
    kkt_rows, n_part3 = [], 6 if ctx.quick else 12
    for i in range(n_part3):
        k = 3 + i % 3
        pi_ref = rng.dirichlet(np.ones(k))
        reward = rng.normal(size=k)
        reward[1] += 2.0  # make the constraint bind (r(l) high)
        beta, margin = float(10 ** rng.uniform(-1, 0.5)), float(rng.uniform(0, 2))
        row = _part3_case(pi_ref, reward, beta, margin, w, l)
        if row is not None:
            kkt_rows.append(row)
    # ... and where the criterion says something: margins 0.05 either side of its boundary d_l inv = 1 (bisection in m
    # on [0, 6]; their own generator, so the random cases above are unchanged), where an error in the criterion that
    # moves the boundary shows; the random cases sit far from it
    n_random = len(kkt_rows)
    rng_b = np.random.default_rng([ctx.seed, 9011])
    for i in range(2 if ctx.quick else 4):
        k = 3 + i % 3
        pi_ref = rng_b.dirichlet(np.ones(k))
        reward = rng_b.normal(size=k)
        reward[1] += 2.0
        beta = float(10 ** rng_b.uniform(-1, 0.5))
        m_star = _criterion_boundary(pi_ref, reward, beta, w, l)
        for margin in ([] if m_star is None else [m_star - 0.05, m_star + 0.05]):
            row = _part3_case(pi_ref, reward, beta, margin, w, l) if margin >= 0 else None
            if row is not None:
                kkt_rows.append({**row, "near_criterion_boundary_m": m_star})
        # the bisection's bracket ends, chosen without the criterion: where the kind (by the Hessian) differs at
        # m = 0 and m = 6, a criterion that never crosses 1 (and so has no boundary to find) is wrong at one of them
        for margin in (0.0, 6.0):
            row = _part3_case(pi_ref, reward, beta, margin, w, l)
            if row is not None:
                kkt_rows.append({**row, "bracket_end_m": margin})
    n_near = sum("near_criterion_boundary_m" in row for row in kkt_rows)
    n_ends = sum("bracket_end_m" in row for row in kkt_rows)
    # every case, random or near the boundary: pi_c stationary, and its kind (120-digit Hessian) as the criterion says
    kkt_ok = all(row["stationarity_residual"] < EQ10_TOL["stationarity_relative"] for row in kkt_rows)
    crit_ok = all(row["_idx"] is not None and int(row["criterion_predicts_ascending_direction"]) == row["_idx"]
                  for row in kkt_rows)
    for row in kkt_rows:
        row.pop("_idx")
    # the registry's amendment: for K = 3..5 the interior stationary points number 0 or 2, a local maximum and an
    # index-1 saddle (c9d097b also let a "local min" pass here, which the statement excludes)
    only_max_and_index1 = all(p in ("none", "local max + saddle (index 1)") for p in patterns)
    literal = not unbounded_all  # 'maximise Eq. 10' is well posed only if F is bounded above
    amended = (unbounded_all and sets_agree and kinds_agree and eq1316_max < EQ10_TOL["eq13_16_relative"] and kkt_ok and crit_ok
               and only_max_and_index1)
    # part (3) with no case checked (every mu <= 0) is no evidence for the amendment's gamma = nu* statement: it
    # cannot support it (the all() above would pass vacuously); the amendment is then undecided, unless another
    # part already decided it false
    inconclusive = None
    if not kkt_rows and amended:
        amended = None
        inconclusive = (f"part (3) checked 0 of {n_part3} cases (mu <= 0 on every one): gamma = nu* making pi_c "
                        "stationary, and its kind, untested")
    evidence = {
        "instances": rows, "stationary_point_patterns": patterns,
        "unbounded_on_every_instance": unbounded_all, "enumeration_and_root_search_agree": sets_agree,
        "tangent_and_logit_hessian_kinds_agree": kinds_agree, "max_rel_residual_eq13_16": eq1316_max,
        "gamma_equals_log_form_multiplier": kkt_rows,
        "pi_c_stationary_for_gamma_nu_star": kkt_ok, "kind_of_pi_c_predicted_by_criterion": crit_ok,
        "part3_cases_checked": n_random, "part3_cases_drawn": n_part3, "part3_near_criterion_boundary": n_near,
        "part3_bracket_ends": n_ends,
        "tolerances": dict(EQ10_TOL),
        "seconds": time.perf_counter() - t0,
    }
    example = rows[0]
    counterexample = {"instance": example, "path": "pi(y_l) = pi*(y_l) e^-s, the rest rescaled; s = 0,10,50,100,200",
                      "F_grows_like_gamma_s": True}
    pat = "; ".join(f"{v}x {k}" for k, v in sorted(patterns.items()))
    summary = (f"unbounded above on all {n_inst} instances (slope -> gamma along pi(y_l) -> 0); stationary points "
               f"(1-d enumeration = K-dim root search: {sets_agree}; kinds by 2 Hessians agree: {kinds_agree}): {pat}; "
               f"Eq. 13-16 residual {eq1316_max:.1e}; gamma = mu pi_c(w) makes pi_c stationary ({n_random} random cases "
               f"+ {n_near} next to the criterion's boundary + {n_ends} at its bracket's ends)")
    return MethodResult(literal=bool(literal), amended=None if amended is None else bool(amended), summary=summary,
                        evidence=evidence, inconclusive=inconclusive,
                        depends_on=(
                            "toy_bandits.rlhf.rlhf_objective", "toy_bandits.constrained.solve",
                            "toy_bandits.constrained", "toy_bandits.instance", "toy_bandits.rlhf._shifted_logits",
                            "toy_bandits.rlhf.kl_divergence", "toy_bandits.rlhf.log_gibbs_policy",
                            "toy_bandits.rlhf.suboptimality", "toy_bandits.solver_claims._grad_pi",
                            "toy_bandits.solver_claims._part3_case", "toy_bandits.solver_claims._criterion_value",
                            "toy_bandits.solver_claims._criterion_boundary",
                            "toy_bandits.solver_claims._kind", "toy_bandits.solver_claims._kkt_search",
                            "toy_bandits.solver_claims._logit_hessian_index",
                            "toy_bandits.solver_claims._solve_log_eq",
                            "toy_bandits.solver_claims._tangent_hessian_eigs",
                            "toy_bandits.solver_claims.enumerate_stationary_points",
                            "toy_bandits.solver_claims.penalized_objective",
                            "toy_bandits.solver_claims._tangent_index",),
                        counterexample=counterexample if not literal else None,
                        amended_statement=get_claim("cpo-penalized-eq10").amendment if amended else None)


# ---------------------------------------------------------------------------------------------
# price-of-alignment
# ---------------------------------------------------------------------------------------------

def _price_curves(ctx: CheckContext) -> list[dict]:
    """Closed-form price against the violation for a few (pi_ref, beta, m), with CVXPY points on them."""
    curves = []
    setups = [("K=2, beta=1, m=0", [0.5, 0.5], 1.0, 0.0), ("K=3, beta=0.5, m=0.5", [0.6, 0.2, 0.2], 0.5, 0.5),
              ("K=4, beta=2, m=1", [0.1, 0.4, 0.3, 0.2], 2.0, 1.0)]
    for label, pi_ref, beta, m in setups:
        pi_ref = np.asarray(pi_ref)
        k = pi_ref.size
        delta_ref = math.log(pi_ref[0] / pi_ref[1])
        viol = np.linspace(-2.0, 4.0, 121 if not ctx.quick else 61)
        # violation v = beta m - beta delta_ref - dr  =>  dr = beta m - beta delta_ref - v, set r(w) = dr, r(y) = 0 else
        dr = beta * m - beta * delta_ref - viol
        reward = np.zeros((viol.size, k))
        reward[:, 0] = dr
        batch = PairBatch(np.tile(pi_ref, (viol.size, 1)), reward, beta, np.zeros(viol.size, dtype=np.int64),
                          np.ones(viol.size, dtype=np.int64), m)
        price = closed_form_pairs(batch).price
        cv_idx = np.arange(0, viol.size, 15)
        cvx = [solve(batch.instance(int(j)), "cvxpy", polish=False).price_of_alignment for j in cv_idx]
        # log-log panel: positive violations on a log grid
        vpos = np.logspace(-3, math.log10(4.0), 60)
        rpos = np.zeros((vpos.size, k))
        rpos[:, 0] = beta * m - beta * delta_ref - vpos
        bpos = PairBatch(np.tile(pi_ref, (vpos.size, 1)), rpos, beta, np.zeros(vpos.size, dtype=np.int64),
                         np.ones(vpos.size, dtype=np.int64), m)
        v_all = np.r_[viol, vpos]
        order = np.argsort(v_all)
        p_all = np.r_[price, closed_form_pairs(bpos).price]
        curves.append({"label": label, "violation": v_all[order], "price": p_all[order],
                       "cvx_violation": viol[cv_idx], "cvx_price": np.asarray(cvx)})
    return curves


def price_of_alignment_closed_form(ctx: CheckContext) -> MethodResult:
    """docs/theory.md §9(c), closed form on a large batch: the price as the dual value, as beta KL(pi_c || pi*) and as
    J(pi*) - J(pi_c) (three formulas, agreeing to 1e-9); >= 0 everywhere, exactly 0 where delta* >= m and > 0 where the
    constraint is violated (where pi*(y_l) >= 1e-100, so the price does not underflow). Draws the figure."""
    from figures.solver_figures import price_of_alignment_figure

    t0 = time.perf_counter()
    rng = np.random.default_rng([ctx.seed, 9020])
    tol_zero = 1e-12
    n = 3000 if ctx.quick else 30000
    stats = {"n": 0, "min_price": math.inf, "max_price_when_feasible_at_star": 0.0,
             "min_price_when_violated_by_1e-3": math.inf, "max_rel_diff_dual_vs_kl": 0.0,
             "max_rel_diff_dual_vs_J_difference": 0.0, "n_unresolvable_tiny_pi_star_l": 0}
    zero_iff = True
    for K in (2, 3, 6):  # noqa: N806
        b = _random_batch(rng, n // 3, K)
        sol = closed_form_pairs(b)
        kl_price = suboptimality(sol.pi_c, b.pi_ref, b.reward, b.beta)
        pi_star = np.exp(sol.log_pi_star)
        j_diff = rlhf_objective(pi_star, b.pi_ref, b.reward, b.beta) - rlhf_objective(sol.pi_c, b.pi_ref, b.reward,
                                                                                        b.beta)
        holds = sol.delta_star >= b.margin
        scale = b.beta + np.abs(sol.price)
        stats["n"] += b.N
        stats["min_price"] = min(stats["min_price"], float(sol.price.min()) + 0.0)
        if holds.any():
            stats["max_price_when_feasible_at_star"] = max(stats["max_price_when_feasible_at_star"],
                                                           float(np.max(np.abs(sol.price[holds]))))
        resolvable = sol.log_pi_star[np.arange(b.N), b.loser] > math.log(PRICE_RESOLVABLE)
        stats["n_unresolvable_tiny_pi_star_l"] += int(np.sum(~holds & ~resolvable))
        viol = (b.margin - sol.delta_star > 1e-3) & resolvable
        if viol.any():
            stats["min_price_when_violated_by_1e-3"] = min(stats["min_price_when_violated_by_1e-3"],
                                                          float(sol.price[viol].min()))
        zero_iff = zero_iff and bool(np.all(np.abs(sol.price[holds]) <= tol_zero * b.beta[holds])) and bool(
            np.all(sol.price[~holds & resolvable] > 0))
        ok_j = b.beta >= 1e-2  # J evaluated twice cancels catastrophically when r/beta is huge
        stats["max_rel_diff_dual_vs_kl"] = max(stats["max_rel_diff_dual_vs_kl"],
                                               float(np.max(np.abs(sol.price - kl_price) / scale)))
        stats["max_rel_diff_dual_vs_J_difference"] = max(
            stats["max_rel_diff_dual_vs_J_difference"],
            float(np.max((np.abs(sol.price - j_diff) / (scale + np.abs(b.reward).max(axis=1)))[ok_j])))
    literal = (stats["min_price"] >= -tol_zero and zero_iff and stats["max_rel_diff_dual_vs_kl"] <= 1e-9
               and stats["max_rel_diff_dual_vs_J_difference"] <= 1e-9)
    curves = _price_curves(ctx)
    fig_err = max(float(np.max(np.abs(np.interp(c["cvx_violation"], c["violation"], c["price"]) - c["cvx_price"])
                               / (1 + np.abs(c["cvx_price"])))) for c in curves)
    figures = price_of_alignment_figure(ctx.fig_dir, curves)
    evidence = {"closed_form_batch": stats, "zero_iff_feasible_at_star": zero_iff,
                "figure_curves_vs_cvxpy_points_max_rel_diff": fig_err,
                "tolerances": {"zero": f"{tol_zero} * beta", "formulas_relative": 1e-9,
                               "strict_positivity_tested_where_pi_star_l_above": PRICE_RESOLVABLE},
                "seconds": time.perf_counter() - t0}
    summary = (f"{stats['n']} instances: min price {stats['min_price']:.1e}, = 0 exactly where delta* >= m, > 0 elsewhere "
               f"(min {stats['min_price_when_violated_by_1e-3']:.1e} at violation > 1e-3); dual value, beta KL and "
               f"J difference agree to {max(stats['max_rel_diff_dual_vs_kl'], stats['max_rel_diff_dual_vs_J_difference']):.0e}")
    return MethodResult(literal=bool(literal), amended=None, summary=summary, evidence=evidence,
                        depends_on=(
                            "toy_bandits.constrained.closed_form_pairs", "toy_bandits.rlhf.suboptimality",
                                    "toy_bandits.rlhf.rlhf_objective",
                            "toy_bandits.constrained", "toy_bandits.instance", "toy_bandits.rlhf._shifted_logits",
                            "toy_bandits.rlhf.kl_divergence", "toy_bandits.rlhf.log_gibbs_policy",
                            "toy_bandits.solver_claims._price_curves",
                        ),
                        counterexample=None if literal else {"closed_form": stats}, figures=figures)


def price_of_alignment_convex(ctx: CheckContext) -> MethodResult:
    """docs/theory.md §9(c) by CVXPY's own (unpolished) optimum (CLARABEL), single- and multi-pair instances: the price
    KL(pi_c || pi*) >= 0; 0 where every constraint holds at pi* by a clear margin (m - delta* <= -0.05); > 0 where one
    is violated by >= 0.05 and the dual solver's price / beta >= 1e-4 (below that CVXPY cannot resolve it); equal to
    the dual solver's (``solve(..., "dual")``, L-BFGS-B + Newton in log space) within 1e-6 (1 + price)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([ctx.seed, 9021])
    tol_cvx = 1e-6
    insts = _random_instances(rng, 10 if ctx.quick else 24)
    for j in range(6 if ctx.quick else 9):
        k = 6
        prefs = list(GRAPHS.values())[j % 3]
        insts.append(BanditInstance(rng.dirichlet(np.ones(k)), rng.normal(scale=2.0, size=k),
                                    float(10 ** rng.uniform(-1, 1)), prefs, float(rng.uniform(0, 1.5))))
    rows, ok_all, n_zero, n_pos = [], True, 0, 0
    for inst in insts:
        cl = solve(inst, "cvxpy", polish=False)
        ref = solve(inst, "dual")
        gap = inst.margin - cl.delta_star
        p_cvx, p_ref = cl.price_of_alignment / inst.beta, ref.price_of_alignment / inst.beta
        if np.all(gap <= -0.05):
            expect_zero = True
        elif np.any(gap >= 0.05) and p_ref >= 100 * tol_cvx:
            expect_zero = False
        else:
            expect_zero = None
        ok = p_cvx >= -tol_cvx and abs(p_cvx - p_ref) <= tol_cvx * (1 + p_ref)
        if expect_zero is True:
            ok = ok and p_cvx <= tol_cvx
            n_zero += 1
        elif expect_zero is False:
            ok = ok and p_cvx > tol_cvx
            n_pos += 1
        ok_all = ok_all and ok
        if not ok or len(rows) < 6:
            rows.append({"K": inst.K, "pairs": len(inst.preferences), "beta": inst.beta, "margin": inst.margin,
                         "price_over_beta_cvx": p_cvx, "price_over_beta_dual": p_ref, "expect_zero": expect_zero,
                         "ok": ok})
    literal = ok_all and n_zero > 0 and n_pos > 0
    return MethodResult(
        literal=bool(literal), amended=None,
        summary=f"CVXPY on {len(insts)} instances ({n_zero} expected zero, {n_pos} positive): price >= 0, zero/positive "
                f"as predicted, equal to the dual solver's within {tol_cvx}: {ok_all}",
        evidence={"n": len(insts), "n_expected_zero": n_zero, "n_expected_positive": n_pos, "rows": rows,
                  "tolerance_price_over_beta": tol_cvx, "boundary_exclusion_|m - delta*|": 0.05,
                  "seconds": time.perf_counter() - t0},
        depends_on=(
            "toy_bandits.constrained.ConstrainedRLHF", "toy_bandits.constrained.dual", "toy_bandits.constrained",
            "toy_bandits.instance", "toy_bandits.rlhf._shifted_logits", "toy_bandits.rlhf.log_gibbs_policy",
            "toy_bandits.rlhf.suboptimality",
        ),
        counterexample=None if literal else {"rows": [r for r in rows if not r["ok"]]})
