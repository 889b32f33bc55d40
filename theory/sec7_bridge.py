"""docs/theory.md §7: the loss-to-delta bridge. Methods of ``loss-delta-bridge``."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import torch

from dpo_rlhf_checks import losses as L
from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory import derivations as D
from theory import symbols as S
from theory.common import (DEP_DPO_LOSS, DEP_SYMPY_LOSS, TOL_FLOAT, dpo_value_and_grad, holds_only, n_for, proofs,
                           rng_for, wmax)


def loss_delta_bridge_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy: the inverse delta = delta_ref - log(e^l - 1)/beta both ways, l(0) = softplus(beta delta_ref) =
    log(1 + (a_w/a_l)^beta), l strictly decreasing; the inverse is undefined at l = 0."""
    facts = D.bridge_facts()
    sym = proofs(facts)
    return holds_only({"proofs": all(sym.values())}, f"inverse, l_crit and monotonicity proved "
                                                     f"({sum(sym.values())}/{len(sym)})", {"proofs": sym},
                      depends_on=(
                          DEP_SYMPY_LOSS, "theory.derivations.bridge_facts", "theory.symbols.sp_softplus",
                      ))


def loss_delta_bridge_numeric(ctx: CheckContext) -> MethodResult:
    """float64: ``losses.delta_from_loss`` inverts ``losses.dpo_loss`` (|h| <= 700); pi(y_w) > pi(y_l) <=> l < l_crit
    with ``losses.critical_loss``; l_crit against mpmath; the mean loss only bounds the misaligned fraction."""
    rng = rng_for(ctx, 701)
    rt_err, disagree, n_cmp, crit_err, crit_below = 0.0, 0, 0, 0.0, True
    for b in S.random_betas(rng, n_for(ctx, 30, 8)):
        b = float(b)
        d_ref = rng.uniform(-30, 30, 10)
        h = rng.uniform(-700, 700, 10)
        deltas = d_ref + h / b
        loss, _ = dpo_value_and_grad(deltas, d_ref, b)
        back = L.delta_from_loss(torch.tensor(loss), torch.tensor(d_ref), beta=b).numpy()
        rt_err = wmax(rt_err, float(np.max(b * np.abs(back - deltas) / np.maximum(1.0, np.abs(h)))))
        lcrit = L.critical_loss(torch.tensor(d_ref), beta=b).numpy()
        ok = np.abs(deltas) > 1e-9 * np.maximum(1.0, np.abs(d_ref))
        disagree += int(np.sum(((deltas > 0) != (loss < lcrit))[ok]))
        n_cmp += int(np.sum(ok))
        for aw, al in [(1e-12, 0.5), (0.5, 1e-12), (0.2, 0.7)]:
            with S.ref_precision():
                exact = mpmath.log1p((mpmath.mpf(aw) / mpmath.mpf(al)) ** mpmath.mpf(b))
            val = float(L.critical_loss(torch.tensor([math.log(aw) - math.log(al)], dtype=torch.float64), beta=b)[0])
            crit_err = wmax(crit_err, S.rel_err(val, exact))
            if aw < al:
                crit_below = crit_below and val < math.log(2)
        # and where beta delta_ref sits in (20, 24): a softplus that returns x past a threshold of 20 (torch's default)
        # is off there by e^-x / x, 1e-10 to 2e-12 relative; the drawn points above seldom land in that band
        for x in (20.5, 22.0, 23.5):
            t = x / b
            with S.ref_precision():
                exact = mpmath.log1p(mpmath.exp(mpmath.mpf(b) * mpmath.mpf(t)))
            val = float(L.critical_loss(torch.tensor([t], dtype=torch.float64), beta=b)[0])
            crit_err = wmax(crit_err, S.rel_err(val, exact))
    bound_ok, n_sets = True, 0
    for _ in range(n_for(ctx, 200, 50)):
        b = float(10 ** rng.uniform(-1, 1))
        d_ref = rng.uniform(-3, 3, 20)
        deltas = d_ref + rng.normal(scale=2.0, size=20) / b
        loss, _ = dpo_value_and_grad(deltas, d_ref, b)
        lcrit = L.critical_loss(torch.tensor(d_ref), beta=b).numpy()
        bound_ok = bound_ok and float(np.mean(deltas < 0)) <= float(loss.mean() / lcrit.min()) + 1e-12
        n_sets += 1
    # the random sets sit far inside the bound; near-tight sets, where it can fail: m of 20 pairs misaligned just past
    # delta = 0 (loss l_crit (1 + ~1e-6)), the rest aligned with loss ~e^-40, one delta_ref; the bound is m/20 plus a
    # relative slack of 3e-8 to 1e-6, so a loss or l_crit wrong by more than that breaks it
    tight_slack, n_tight = math.inf, 0
    for b in (0.1, 1.0, 10.0):
        for c in (-2.0, 0.5, 3.0):
            for m in (1, 10, 19):
                d_ref = np.full(20, c)
                deltas = np.where(np.arange(20) < m, -1e-6 / b, c + 40.0 / b)
                loss, _ = dpo_value_and_grad(deltas, d_ref, b)
                lcrit = L.critical_loss(torch.tensor(d_ref), beta=b).numpy()
                frac, bound = float(np.mean(deltas < 0)), float(loss.mean() / lcrit.min())
                bound_ok = bound_ok and frac <= bound + 1e-12
                tight_slack = min(tight_slack, (bound - frac) / bound)
                n_tight += 1
    conditions = {"round_trip": rt_err < 1e-10, "l<l_crit_iff_delta>0": disagree == 0 and n_cmp > 0,
                  "l_crit_formula": crit_err < TOL_FLOAT, "l_crit_below_log2": crit_below, "mean_loss_bound": bound_ok}
    evidence = {"max_roundtrip_err_h_units_rel": rt_err, "equivalence_checked": n_cmp,
                "equivalence_disagreements": disagree, "max_rel_err_l_crit": crit_err,
                "mean_loss_bound": "fraction misaligned <= mean(l) / min_i l_crit_i", "random_sets": n_sets,
                "tight_sets": n_tight, "mean_loss_bound_min_rel_slack_tight": tight_slack}
    return holds_only(conditions, f"round trip err {rt_err:.1e}; pi_w > pi_l <=> l < l_crit at {n_cmp} points, "
                                  f"{disagree} disagreements; l_crit rel err {crit_err:.0e}", evidence,
                      depends_on=(
                          DEP_DPO_LOSS, "dpo_rlhf_checks.losses.delta_from_loss",
                                  "dpo_rlhf_checks.losses.critical_loss",
                          "dpo_rlhf_checks.losses._rewards", "dpo_rlhf_checks.losses._softplus",
                          "theory.common._dpo_value_and_grad", "theory.common._two_response_logps",
                          "theory.common.dpo_value_and_grad",
                      ))
