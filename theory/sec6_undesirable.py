"""docs/theory.md §6: the undesirable solution space U and the gradient factor through it.
Methods of ``undesirable-space`` and ``gradient-weakening`` (grid, random-instance and CVXPY methods of
``undesirable-space`` live in :mod:`toy_bandits.map_claims`)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import sympy as sp

from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory import derivations as D
from theory import symbols as S
from theory.common import (DEP_DPO_LOSS, DEP_GIBBS_NP, DEP_SYMPY_LOSS, TOL_IDENTITY, cond_tol, dpo_value_and_grad,
                           holds_only, n_for, proofs, rng_for, wmax)

TIE_NOTE = ("boundary note: at the tie beta delta_ref + dr = 0 (pi*(y_w) = pi*(y_l), the assumption fails as an "
            "equality) pi* lies on the boundary delta = 0 of U, not in the open set U; ties have probability 0 "
            "under the sampled distributions and are not part of the verdict")


def undesirable_space_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy: l = log 2 at u = delta - delta_ref = 0 and strictly decreasing in u (so l < log 2 on U, where u > 0);
    every delta is realised by a policy; delta* from the Gibbs form (general K) lies above delta_ref when dr > 0 and
    below 0 when beta delta_ref + dr < 0 (signs decided by SymPy from the assumptions)."""
    facts = D.undesirable_facts()
    sym = proofs(facts)
    pts = [(b, 0.0) for b in S.extreme_betas()]
    l2_err = S.max_identity_error(S.sp_softplus(-S.beta * S.u), sp.log(2), [S.beta, S.u], pts)
    conditions = {"proofs": all(sym.values()), "mpmath_loss_at_boundary_is_log2": l2_err < TOL_IDENTITY}
    return holds_only(conditions, f"l < log 2 on U, U non-empty iff delta_ref < 0, pi* in U when beta delta_ref + dr < "
                                  f"0 < dr: proved ({sum(sym.values())}/{len(sym)})",
                      {"proofs": sym, "mpmath_loss_at_u=0_minus_log2": l2_err, "note": TIE_NOTE},
                      depends_on=(
                          DEP_SYMPY_LOSS, "theory.derivations._J_K", "theory.derivations._branch",
                          "theory.derivations.general_k_facts", "theory.derivations.undesirable_facts",
                          "theory.derivations._gibbs_delta_star",
                          "theory.derivations.pi_star_in_u_signs", "theory.symbols.sp_softplus",
                      ))


def undesirable_space_numeric(ctx: CheckContext) -> MethodResult:
    """float64, none of the tested relations built into the samples: random 3-response policies (Dirichlet) are
    classified by their own delta, and the DPO loss (``losses.dpo_loss``) of those in U is compared with log 2;
    U is found non-empty exactly for the references with delta_ref < 0; pi* from the normalised Gibbs policy of
    random instances (K = 2..6) is in U on every instance with beta delta_ref + dr < 0 < dr, and not in U when
    dr < 0."""
    rng = rng_for(ctx, 421)
    # (1) + (2): random policies against four references
    n_pol = n_for(ctx, 4000, 1000)
    max_loss_minus_log2, n_in_u, nonempty_ok, per_ref = -np.inf, 0, True, []
    for d_ref in (-2.0, -0.5, 0.0, 0.8):
        pol = rng.dirichlet(np.ones(3), size=n_pol)
        delta = np.log(pol[:, 0]) - np.log(pol[:, 1])
        in_u = (d_ref < delta) & (delta < 0)
        found = bool(in_u.any())
        nonempty_ok = nonempty_ok and found == (d_ref < 0)
        if found:
            for b in (1e-3, 1.0, 1e3):
                loss, _ = dpo_value_and_grad(delta[in_u], np.full(int(in_u.sum()), d_ref), b)
                max_loss_minus_log2 = wmax(max_loss_minus_log2, float(np.max(loss - math.log(2))))
            n_in_u += int(in_u.sum())
        per_ref.append({"delta_ref": d_ref, "policies": n_pol, "in_U": int(in_u.sum())})
    # (3) pi* from the Gibbs policy of random instances
    n_inst = n_for(ctx, 3000, 800)
    in_u_when_fails, n_fail_pos, not_in_u_when_dr_neg, n_fail_neg = 0, 0, 0, 0
    for _ in range(n_inst):
        K = int(rng.integers(2, 7))
        log_ref = np.log(rng.dirichlet(np.ones(K)))
        rew = rng.normal(scale=2.0, size=K)
        b = float(10 ** rng.uniform(-1.5, 1.5))
        log_star = S.gibbs_log_policy(log_ref, rew, b)
        dref, dr, dstar = log_ref[0] - log_ref[1], rew[0] - rew[1], log_star[0] - log_star[1]
        if b * dref + dr < 0:
            star_in_u = bool(dref < dstar < 0)
            if dr > 0:
                n_fail_pos += 1
                in_u_when_fails += star_in_u
            elif dr < 0:
                n_fail_neg += 1
                not_in_u_when_dr_neg += not star_in_u
    literal = (max_loss_minus_log2 < 0 and nonempty_ok and n_fail_pos > 0 and in_u_when_fails == n_fail_pos)
    dr_needed = n_fail_neg > 0 and not_in_u_when_dr_neg == n_fail_neg
    evidence = {"policies_per_reference": per_ref, "points_of_U_checked": n_in_u,
                "max_loss_minus_log2_on_U_(beta 1e-3, 1, 1e3)": max_loss_minus_log2,
                "nonempty_iff_delta_ref_negative": nonempty_ok,
                "instances": n_inst, "assumption_fails_and_dr_positive": n_fail_pos,
                "pi_star_in_U_of_those": in_u_when_fails,
                "assumption_fails_and_dr_negative": n_fail_neg, "pi_star_not_in_U_of_those": not_in_u_when_dr_neg,
                "dr_positive_is_needed": dr_needed, "note": TIE_NOTE}
    cx = None
    if not literal:
        cx = {"max_loss_minus_log2_on_U": max_loss_minus_log2, "nonempty_iff_delta_ref_negative": nonempty_ok,
              "pi_star_in_U": f"{in_u_when_fails}/{n_fail_pos}"}
    return MethodResult(
        literal=bool(literal), amended=None,
        summary=f"loss < log 2 on all {n_in_u} sampled policies in U (max l - log 2 = {max_loss_minus_log2:.2e}); "
                f"U found iff delta_ref < 0: {nonempty_ok}; Gibbs pi* in U on {in_u_when_fails}/{n_fail_pos} "
                f"instances with beta delta_ref + dr < 0 < dr (and on {n_fail_neg - not_in_u_when_dr_neg}/{n_fail_neg} "
                f"with dr < 0)",
        evidence=evidence, depends_on=(
            DEP_DPO_LOSS, DEP_GIBBS_NP, "dpo_rlhf_checks.losses._rewards", "dpo_rlhf_checks.losses._softplus",
            "theory.common._dpo_value_and_grad", "theory.common._two_response_logps",
            "theory.common.dpo_value_and_grad",
        ), counterexample=cx)


def gradient_weakening_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy: the factor sigma(-beta (delta - delta_ref)) decreases in delta, is 1/2 at delta_ref and
    sigma(beta delta_ref) > 0 at delta -> 0; the DPO gradient is -beta times it."""
    facts = D.gradient_factor_facts()
    sym = proofs(facts)
    return holds_only({"proofs": all(sym.values())}, f"factor decreasing, 1/2 at delta_ref, sigma(beta delta_ref) > 0 "
                                                     f"at 0: proved ({sum(sym.values())}/{len(sym)})",
                      {"proofs": sym}, depends_on=(
                          DEP_SYMPY_LOSS, "theory.derivations.gradient_factor_facts", "theory.symbols.sp_sigma",
                          "theory.symbols.sp_softplus",
                      ))


def gradient_weakening_numeric(ctx: CheckContext) -> MethodResult:
    """float64 through ``losses.dpo_loss``: -grad/beta at delta = 0 against sigma(beta delta_ref) (mpmath) within
    the conditioning of h; the factor non-increasing along delta_ref -> 0 (41 points per case)."""
    rng = rng_for(ctx, 601)
    boundary_err, boundary_cond, monotone, checked = 0.0, 0.0, True, 0
    underflow = []
    for b in S.random_betas(rng, n_for(ctx, 30, 8)):
        for dref in np.concatenate([[-1e-6, -0.5, -5.0], -10 ** rng.uniform(-3, 1.5, 4)]):
            _, g = dpo_value_and_grad([0.0], [dref], float(b))
            factor = -g[0] / b
            with S.ref_precision():
                exact = 1 / (1 + mpmath.exp(-mpmath.mpf(float(b * dref))))  # sigma(beta delta_ref)
            if exact > 1e-300:
                boundary_err = wmax(boundary_err, S.rel_err(factor, exact))
                boundary_cond = wmax(boundary_cond, S.rel_err(factor, exact) / cond_tol(float(b), dref))
                checked += 1
            else:
                underflow.append({"beta": float(b), "delta_ref": float(dref), "float64_factor": float(factor)})
            ds = dref * np.linspace(1, 0, 41)
            _, gs = dpo_value_and_grad(ds, np.full_like(ds, dref), float(b))
            monotone = monotone and bool(np.all(np.diff(-gs / b) <= 0))
    conditions = {"boundary_factor_is_sigma(beta delta_ref)": boundary_cond <= 1.0 and checked > 0,
                  "factor_decreasing_through_U": monotone}
    evidence = {"points_checked": checked, "max_rel_err_factor_at_0": boundary_err, "max_err_over_cond_tol": boundary_cond,
                "factor_nonincreasing_through_U": monotone, "n_float64_underflow": len(underflow),
                "float64_underflow_cases": underflow[:5],
                "note": "mathematically positive for every finite beta delta_ref; below the float64 range (reads 0.0) "
                        "once beta |delta_ref| > ~745"}
    return holds_only(conditions, f"factor at delta -> 0 = sigma(beta delta_ref) (rel err {boundary_err:.1e} at "
                                  f"{checked} points); non-increasing through U: {monotone}", evidence,
                      depends_on=(
                          DEP_DPO_LOSS, "dpo_rlhf_checks.losses._rewards", "dpo_rlhf_checks.losses._softplus",
                          "theory.common._dpo_value_and_grad", "theory.common._two_response_logps",
                          "theory.common.dpo_value_and_grad",
                      ))
