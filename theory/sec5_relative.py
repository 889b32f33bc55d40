"""docs/theory.md §5: DPO sees the relative advantage, alignment is absolute. Methods of ``relative-advantage``."""

from __future__ import annotations

import mpmath
import numpy as np

from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory import derivations as D
from theory import symbols as S
from theory.common import (DEP_DPO_LOSS, DEP_SYMPY_LOSS, cond_tol, dpo_value_and_grad, holds_only, n_for, proofs,
                           rng_for, wmax)


def relative_advantage_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy: l(delta + c, delta_ref + c) = l; l is a function of delta - delta_ref; common scaling of pi(y_w) and
    pi_ref(y_w) leaves l unchanged; dl/d delta = -beta sigma(-beta (delta - delta_ref)) < 0 (needs beta > 0)."""
    rfacts, ofacts = D.relative_facts(), D.ordered_pair_facts()
    sym = {**proofs(rfacts), **{k: v for k, v in proofs(ofacts).items() if k.startswith("dl_ddelta")}}
    sym.pop("dl_ddelta_sign_decided_without_beta_positive", None)
    conditions = {"proofs": all(sym.values()),
                  "needs_beta_positive": not ofacts["dl_ddelta_sign_decided_without_beta_positive"]}
    return holds_only(conditions, f"shift invariance and the negative gradient proved ({sum(sym.values())}/{len(sym)})",
                      {"proofs": sym}, depends_on=(
                          DEP_SYMPY_LOSS, "theory.derivations.ordered_pair_facts",
                          "theory.derivations.relative_facts", "theory.symbols.sp_sigma",
                          "theory.symbols.sp_softplus",
                      ))


def relative_advantage_numeric(ctx: CheckContext) -> MethodResult:
    """float64 through ``losses.dpo_loss``: shift invariance and the gradient formula within the conditioning of h
    (beta 1e-3..1e3, |h| <= 600); the gradient is never positive; two pairs with equal loss and opposite alignment."""
    rng = rng_for(ctx, 501)
    shift_err, grad_err, grad_cond, max_grad = 0.0, 0.0, 0.0, -np.inf
    for b in S.random_betas(rng, n_for(ctx, 30, 8)):
        u_vals = np.clip(rng.uniform(-600, 600, 8) / b, -700 / b, 700 / b)
        d_ref = rng.uniform(-30, 30, 8)
        shift = rng.uniform(-30, 30, 8)
        l1, g1 = dpo_value_and_grad(d_ref + u_vals, d_ref, float(b))
        l2, _ = dpo_value_and_grad(d_ref + shift + u_vals, d_ref + shift, float(b))
        for uv, dv, sv, v1, v2, gv in zip(u_vals, d_ref, shift, l1, l2, g1):
            tol = cond_tol(float(b), dv + uv, dv) + cond_tol(float(b), dv + sv + uv, dv + sv)
            shift_err = wmax(shift_err, abs(v1 - v2) / max(1e-300, abs(v1)) / tol)
            d_in = float(dv + uv)
            with S.ref_precision():
                exact = -b * mpmath.mpf(1) / (1 + mpmath.exp(b * (mpmath.mpf(d_in) - mpmath.mpf(float(dv)))))
            if abs(exact) > 1e-290:  # below that the float gradient underflows to 0 (the sign is still exact)
                e = S.rel_err(gv, exact)
                grad_err = wmax(grad_err, e)
                grad_cond = wmax(grad_cond, e / cond_tol(float(b), d_in, dv))
        max_grad = wmax(max_grad, float(g1.max()))
    la, _ = dpo_value_and_grad([-1.0], [-2.0], 1.0)
    lb, _ = dpo_value_and_grad([1.0], [0.0], 1.0)
    pair = {"A": {"delta_ref": -2.0, "delta": -1.0, "loss": float(la[0]), "prefers": "y_l"},
            "B": {"delta_ref": 0.0, "delta": 1.0, "loss": float(lb[0]), "prefers": "y_w"}}
    conditions = {"shift_invariance": shift_err <= 1.0, "gradient_formula": grad_cond <= 1.0,
                  "gradient_never_positive": max_grad <= 0,
                  "same_loss_opposite_alignment": abs(la[0] - lb[0]) < 1e-15}
    evidence = {"max_shift_invariance_err_over_cond_tol": shift_err, "max_rel_err_grad_vs_-beta_sigma": grad_err,
                "max_grad_err_over_cond_tol": grad_cond, "max_grad_seen": max_grad, "same_loss_opposite_alignment": pair}
    return holds_only(conditions, f"shift-invariant within {shift_err:.2f} x cond tol; grad rel err {grad_err:.1e}; "
                                  f"equal loss {la[0]:.4f} for a pair preferring y_l and one preferring y_w", evidence,
                      depends_on=(
                          DEP_DPO_LOSS, "dpo_rlhf_checks.losses._rewards", "dpo_rlhf_checks.losses._softplus",
                          "theory.common._dpo_value_and_grad", "theory.common._two_response_logps",
                          "theory.common.dpo_value_and_grad",
                      ))
