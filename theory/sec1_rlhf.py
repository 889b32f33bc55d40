"""docs/theory.md §1 (paper Sec. 2, Eq. 3/5): the RLHF optimum is the Gibbs policy. Methods of ``rlhf-closed-form``."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory import derivations as D
from theory import symbols as S
from theory.common import (DEP_GIBBS_NP, DEP_J_NP, DEP_SYMPY_J, TOL_FLOAT, TOL_IDENTITY, holds_only, n_for, proofs,
                           random_policy_instances, rng_for, wmax)


def rlhf_closed_form_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy, for general K (:func:`theory.derivations.general_k_facts`) and the three-response instance; J(pi*) =
    beta log Z backed by mpmath at 50 digits at extreme points; the Hessian's sign needs beta > 0 (shown)."""
    facts = D.rlhf_facts()
    gk = D.general_k_facts()
    k_keys = ("K_gradient_is_r_j-beta(log(p_j/a_j)+1)", "K_hessian_is_-beta_KroneckerDelta(j,k)/p_j",
              "K_hessian_diagonal_negative_(beta>0,p>0)", "K_pi_star_sums_to_one",
              "K_gibbs_stationary_(one_multiplier_for_every_j)", "K_J_at_pi_star_is_beta_log_Z",
              "K_J_is_beta_logZ_minus_beta_KL_to_pi_star", "K_delta_star_from_gibbs_(Z_cancels)")
    sym = {**proofs(facts, skip=("hessian_sign_decided_without_beta_positive",)), **{k: bool(gk[k]) for k in k_keys}}
    ex = facts["_exprs"]
    pts = [(b, aw, al, 1 - aw - al, 1.5, -2.0, 0.3) for b in S.extreme_betas()
           for aw, al in [(1e-12, 0.5), (0.5, 1e-12), (0.3, 0.3)]]
    mp_err = S.max_identity_error(ex["J_star"], ex["beta_log_Z"], ex["symbols"], pts)
    conditions = {"proofs": all(sym.values()), "mpmath_J_star": mp_err < TOL_IDENTITY,
                  "sign_needs_beta_positive": not facts["hessian_sign_decided_without_beta_positive"]}
    summary = (f"general K: Hessian -beta delta_jk/p_j, Gibbs stationary with one multiplier, J(pi*) = beta log Z, "
               f"J = beta log Z - beta KL(pi||pi*) proved ({sum(sym.values())}/{len(sym)} proofs); mpmath err {mp_err:.0e}")
    return holds_only(conditions, summary, {"proofs": sym, "mpmath_J_star_minus_beta_logZ": mp_err,
                                            "scope": "general K (Sum over i = 1..K) and the 3-response instance"},
                      depends_on=(
                          DEP_SYMPY_J, "theory.derivations._J_K", "theory.derivations._branch",
                          "theory.derivations.general_k_facts", "theory.derivations.rlhf_facts",
                          "theory.derivations._gibbs_delta_star",
                      ))


def rlhf_closed_form_numeric(ctx: CheckContext) -> MethodResult:
    """float64 Gibbs policy (log space) against random policies, the variational identity, and an independent
    maximiser (L-BFGS on softmax logits); K = 2..8, beta 1e-3..1e3, references near 0 and 1."""
    from scipy.optimize import minimize

    rng = rng_for(ctx, 101)
    err_jstar, err_var, err_delta, n_worse, n_cmp = 0.0, 0.0, 0.0, 0, 0
    for b, log_ref, rew in random_policy_instances(rng, n_for(ctx, 33, 8)):
        log_star = S.gibbs_log_policy(log_ref, rew, b)
        pstar, ref = np.exp(log_star), np.exp(log_ref)
        beta_log_z = b * logsumexp(log_ref + rew / b)
        j_star = S.objective_J(pstar, rew, ref, b)
        scale = max(1.0, abs(beta_log_z), float(np.abs(rew).max()))
        err_jstar = wmax(err_jstar, abs(j_star - beta_log_z) / scale)
        d_expect = log_ref[0] - log_ref[1] + (rew[0] - rew[1]) / b
        err_delta = wmax(err_delta, abs((log_star[0] - log_star[1]) - d_expect) / max(1.0, abs(rew[0] - rew[1]) / b))
        K = len(rew)
        for pi in rng.dirichlet(np.ones(K), size=n_for(ctx, 30, 10)):
            j = S.objective_J(pi, rew, ref, b)
            kl = float(np.sum(pi * (np.log(pi) - log_star)))  # KL(pi || pi*) in log space (pi* may underflow)
            err_var = wmax(err_var, abs(j - (beta_log_z - b * kl)) / max(scale, b * kl))
            n_worse += j > j_star + 1e-12 * scale
            n_cmp += 1
    opt_err = 0.0
    for _ in range(n_for(ctx, 5, 2)):
        b = float(10 ** rng.uniform(-0.5, 0.5))
        K = int(rng.integers(2, 6))
        ref = rng.dirichlet(np.ones(K))
        rew = rng.normal(size=K)

        def neg_j(theta):
            pi = np.exp(theta - logsumexp(theta))
            return -S.objective_J(pi, rew, ref, b)

        res = minimize(neg_j, np.log(ref), method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-11})
        pi_opt = np.exp(res.x - logsumexp(res.x))
        opt_err = wmax(opt_err, float(np.abs(pi_opt - np.exp(S.gibbs_log_policy(np.log(ref), rew, b))).max()))
    # without beta > 0: beta = -1, two responses, r = (1, 0), pi_ref uniform: the Gibbs formula is not a maximiser
    bneg, rneg, refneg = -1.0, np.array([1.0, 0.0]), np.array([0.5, 0.5])
    pneg = np.exp(np.log(refneg) + rneg / bneg - logsumexp(np.log(refneg) + rneg / bneg))
    j_neg_star = float(pneg @ rneg - bneg * np.sum(pneg * np.log(pneg / refneg)))
    j_neg_other = float(refneg @ rneg)
    conditions = {"J_star_is_beta_logZ": err_jstar < TOL_FLOAT, "variational_identity": err_var < 1e-10,
                  "delta_star": err_delta < TOL_FLOAT, "no_random_policy_beats_pi_star": n_worse == 0,
                  "lbfgs_agrees_1e-6": opt_err < 1e-6, "beta_negative_breaks_it": j_neg_other > j_neg_star}
    evidence = {"max_rel_err_J(pi*)_vs_beta_logZ": err_jstar, "max_rel_err_variational_identity": err_var,
                "max_rel_err_delta_star": err_delta, "random_policies_compared": n_cmp,
                "random_policy_beats_pi_star": n_worse, "lbfgs_vs_closed_form_max_abs_err": opt_err,
                "negative_beta_example": {"beta": bneg, "J_at_gibbs": j_neg_star, "J_at_pi_ref": j_neg_other},
                "beta_range": [1e-3, 1e3], "tolerance_float_rel": TOL_FLOAT}
    summary = (f"J(pi*) = beta log Z (rel err {err_jstar:.1e}); no random policy of {n_cmp} beats pi*; "
               f"L-BFGS agrees to {opt_err:.1e}")
    return holds_only(conditions, summary, evidence, depends_on=(DEP_GIBBS_NP, DEP_J_NP))
