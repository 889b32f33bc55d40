"""docs/theory.md §2 (paper Eq. 8): the DPO reparameterisation and loss. Methods of ``dpo-reparam``."""

from __future__ import annotations

import math

import mpmath
import numpy as np
from scipy.special import logsumexp

from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory import derivations as D
from theory import symbols as S
from theory.common import (DEP_DPO_LOSS, DEP_GIBBS_NP, DEP_SYMPY_LOSS, TOL_FLOAT, dpo_value_and_grad, holds_only,
                           n_for, proofs, random_policy_instances, rng_for, wmax)


def dpo_reparam_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy: r = beta log(pi*/pi_ref) + beta log Z, the reward gap is beta (delta - delta_ref) and Z cancels,
    -log sigma = softplus(-.), log 2 at the reference; the log split needs positive probabilities (shown)."""
    facts = D.dpo_facts()
    split = S.log_split_needs_positivity()
    conditions = {"proofs": all(proofs(facts).values()),
                  "log_split_proved": split["log_split_proved_with_positive_symbols"],
                  "log_split_needs_positivity": not split["log_split_proved_without_assumptions"]}
    return holds_only(conditions, f"reparameterisation, Z cancellation, softplus form, log 2 at pi_ref proved "
                                  f"({sum(proofs(facts).values())}/{len(proofs(facts))})",
                      {"proofs": proofs(facts), **split}, depends_on=(
                          DEP_SYMPY_LOSS, "theory.derivations.dpo_facts",
                          "theory.symbols.log_split_needs_positivity", "theory.symbols.sp_sigma",
                          "theory.symbols.sp_softplus",
                      ))


def dpo_reparam_numeric(ctx: CheckContext) -> MethodResult:
    """float64: the reward recovered from the Gibbs policy; ``losses.dpo_loss`` against the exact -log sigma(h)
    (mpmath) over |h| <= 700; log 2 at pi = pi_ref for beta 1e-3..1e3 and probabilities near 0 and 1."""
    rng = rng_for(ctx, 201)
    err_r, err_gap = 0.0, 0.0
    for b, log_ref, rew in random_policy_instances(rng, n_for(ctx, 33, 8)):
        log_z = logsumexp(log_ref + rew / b)
        log_star = S.gibbs_log_policy(log_ref, rew, b)
        r_hat = b * (log_star - log_ref) + b * log_z
        scale = max(1.0, float(np.abs(rew).max()), b * abs(log_z))
        err_r = wmax(err_r, float(np.abs(r_hat - rew).max()) / scale)
        gap = b * ((log_star[0] - log_star[1]) - (log_ref[0] - log_ref[1]))
        err_gap = wmax(err_gap, abs(gap - (rew[0] - rew[1])) / scale)
    hs = np.concatenate([[-700.0, -50.0, -30.0, -20.5, -20.0, -1e-8, 0.0, 1e-8, 50.0, 700.0],
                         rng.uniform(-700, 700, n_for(ctx, 60, 20))])
    loss_err = 0.0
    for hv in hs:
        val, _ = dpo_value_and_grad([hv], [0.0], 1.0)
        with S.ref_precision():
            exact = mpmath.log1p(mpmath.exp(-mpmath.mpf(float(hv))))  # softplus(-h), log1p keeps tiny values exact
        loss_err = wmax(loss_err, S.rel_err(val[0], exact))
    ref_err = 0.0
    for b in S.extreme_betas():
        for pw in S.extreme_probabilities():
            dref = math.log(pw) - math.log1p(-pw)
            val, _ = dpo_value_and_grad([dref], [dref], b)
            ref_err = wmax(ref_err, abs(val[0] - math.log(2)))
    conditions = {"reward_recovered": err_r < TOL_FLOAT, "gap_is_dr": err_gap < TOL_FLOAT,
                  "loss_is_softplus": loss_err < TOL_FLOAT, "log2_at_reference": ref_err < 1e-15}
    evidence = {"max_rel_err_reward_recovered": err_r, "max_rel_err_gap_equals_dr": err_gap,
                "max_rel_err_dpo_loss_vs_exact_-log_sigma": loss_err, "h_range": [-700, 700],
                "max_abs_err_loss_at_reference_minus_log2": ref_err,
                "note": "needs full support of pi_ref (log(0/0) otherwise)"}
    summary = (f"reward recovered (rel err {err_r:.1e}); dpo_loss = softplus(-h) (rel err {loss_err:.0e}, |h| <= 700); "
               f"loss at pi_ref - log 2: {ref_err:.0e}")
    return holds_only(conditions, summary, evidence, depends_on=(
        DEP_DPO_LOSS, DEP_GIBBS_NP, "dpo_rlhf_checks.losses._rewards", "dpo_rlhf_checks.losses._softplus",
        "theory.common._dpo_value_and_grad", "theory.common._two_response_logps",
        "theory.common.dpo_value_and_grad",
    ))
