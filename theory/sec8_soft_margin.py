"""docs/theory.md §8 (paper Sec. 5, Eq. 27-28): DPO as soft-margin ranking. Methods of ``soft-margin-ranking``."""

from __future__ import annotations

import math

import numpy as np

from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory import derivations as D
from theory import symbols as S
from theory.common import DEP_DPO_LOSS, DEP_SYMPY_LOSS, dpo_value_and_grad, holds_only, n_for, proofs, rng_for, wmax


def soft_margin_ranking_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy: l = softplus(t - s); the gap softplus(beta a)/beta - max(0, a) is positive, log(2)/beta at a = 0,
    monotone on each side, and -> 0 as beta -> inf."""
    facts = D.soft_margin_facts()
    sym = proofs(facts)
    return holds_only({"proofs": all(sym.values())}, f"softplus(t - s) form and the gap bounds proved "
                                                     f"({sum(sym.values())}/{len(sym)})", {"proofs": sym},
                      depends_on=(
                          DEP_SYMPY_LOSS, "theory.derivations.soft_margin_facts", "theory.symbols.sp_softplus",
                      ))


def soft_margin_ranking_numeric(ctx: CheckContext) -> MethodResult:
    """float64: the toolkit loss (``losses.dpo_loss``) divided by beta against max(0, a) with a = delta_ref - delta:
    the gap lies in [0, log(2)/beta], is attained at a = 0; the loss equals softplus(t - s) (|beta a| <= 600)."""
    rng = rng_for(ctx, 801)
    worst_ratio, min_gap, at_zero_err, form_err = 0.0, np.inf, 0.0, 0.0
    for b in S.random_betas(rng, n_for(ctx, 30, 8)):
        b = float(b)
        d_ref = rng.uniform(-20, 20)
        a_vals = np.concatenate([[0.0], rng.uniform(-50, 50, 200) / b])
        loss, _ = dpo_value_and_grad(d_ref - a_vals, np.full_like(a_vals, d_ref), b)  # delta = delta_ref - a
        gap = loss / b - np.maximum(0.0, a_vals)
        worst_ratio = wmax(worst_ratio, float(np.max(gap)) / (math.log(2) / b))
        min_gap = min(min_gap, float(np.min(gap / np.maximum(1.0, np.abs(a_vals)))))
        at_zero_err = wmax(at_zero_err, abs(gap[0] - math.log(2) / b) / (math.log(2) / b))
        d = d_ref + rng.uniform(-600, 600, 20) / b
        loss2, _ = dpo_value_and_grad(d, np.full_like(d, d_ref), b)
        form = S.softplus(b * d_ref - b * d)  # softplus(t - s)
        form_err = wmax(form_err, float(np.max(np.abs(loss2 - form) / np.maximum(1e-300, form))))
    conditions = {"gap_at_most_log2/beta": worst_ratio <= 1 + 1e-9, "gap_nonnegative": min_gap >= -1e-12,
                  "bound_attained_at_0": at_zero_err < 1e-9, "loss_is_softplus(t-s)": form_err < 1e-9}
    evidence = {"max_gap_over_log2_div_beta": worst_ratio, "bound_attained_at_a=0_rel_err": at_zero_err,
                "min_gap_rel": min_gap, "max_rel_err_dpo_loss_vs_softplus(t-s)": form_err, "beta_range": [1e-3, 1e3]}
    return holds_only(conditions, f"dpo_loss/beta - max(0, a) in [0, log2/beta] (max {worst_ratio:.9f} x log2/beta, "
                                  f"at a = 0); dpo_loss = softplus(t - s) (rel err {form_err:.0e})", evidence,
                      depends_on=(
                          DEP_DPO_LOSS, "dpo_rlhf_checks.losses._rewards", "dpo_rlhf_checks.losses._softplus",
                          "theory.common._dpo_value_and_grad", "theory.common._two_response_logps",
                          "theory.common.dpo_value_and_grad", "theory.symbols.softplus",
                      ))
