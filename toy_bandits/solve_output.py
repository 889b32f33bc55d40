"""The output object of ``paper_checks.py solve`` for one bandit instance (:func:`result_json`; the fields are
described in :mod:`toy_bandits.cli`). Its own module so that :mod:`toy_bandits.dataset_solve`, which extends it, and
:mod:`toy_bandits.cli`, which prints it, both import it without importing each other."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dpo_rlhf_checks.cli import short_message
from toy_bandits.constrained import (ConstrainedSolveError, UnresolvedInstanceError, assumption_and_u, delta_star_of,
                                     solve, underflow_problem)
from toy_bandits.instance import BanditInstance
from toy_bandits.rlhf import gibbs_policy

KKT_TOL = 1e-9  # the answer is "optimal" when every KKT residual (absolute, see kkt_residuals) is below this


EPS = float(np.finfo(np.float64).eps)
ROUNDING_FACTOR = 16  # a generous count of the float64 operations behind one log-probability (see _rounding_zero)


def _rounding_zero(x: float, bound: float) -> float:
    """``x``, or 0.0 where ``|x| <= bound``, the float64 rounding bound of the computation that gave it.

    delta_cpo of an active pair with m = 0, or the price of alignment of an instance whose constraints are all
    inactive, is 0 in exact arithmetic; computed, it comes out as +-1e-16 (the README's examples printed a
    price of -2.9e-17 and a delta_cpo of -2.2e-16). Such a value is written as 0. A value beyond its bound is
    written as computed, negative or not; a non-finite bound (a log-probability of -inf) changes nothing.
    """
    return 0.0 if math.isfinite(bound) and abs(x) <= bound else x


def _delta_bound(log_pi_w: float, log_pi_l: float) -> float:
    """Rounding bound of ``log pi(w) - log pi(l)``: each log-probability carries an error of a few ulps of its own
    magnitude (plus O(eps) from the normalisation), the subtraction one more."""
    return ROUNDING_FACTOR * EPS * (1.0 + abs(log_pi_w) + abs(log_pi_l))


def _price_bound(pi: np.ndarray, log_pi: np.ndarray, log_star: np.ndarray, beta: float) -> float:
    """Rounding bound of ``beta sum_y pi(y) (log pi(y) - log pi*(y))`` (toy_bandits.rlhf.suboptimality): each term's
    logs carry a few ulps of their magnitudes, and the K-term sum adds up to K ulps of the sum of magnitudes."""
    with np.errstate(invalid="ignore"):
        terms = np.where(pi > 0, pi * (1.0 + np.abs(log_pi) + np.abs(log_star)), 0.0)
    return ROUNDING_FACTOR * EPS * len(pi) * beta * float(terms.sum())


def _num(x: float) -> float | None:
    """A finite float for JSON (-0.0 printed as 0.0), or None where it is not finite (the caller says why)."""
    x = float(x)
    return (x + 0.0) if math.isfinite(x) else None


def result_json(inst: BanditInstance, method: str = "auto", solver: str = "CLARABEL",
                progress: bool = False) -> tuple[dict[str, Any], int]:
    """The output object for ``inst`` and the exit code (0, or 1 when the solver failed)."""
    w, l = inst.winners, inst.losers
    log_ref = np.log(inst.pi_ref)
    delta_ref = log_ref[w] - log_ref[l]
    dr = inst.reward[w] - inst.reward[l]
    delta_star = delta_star_of(delta_ref, dr, inst.beta)
    holds, in_u = assumption_and_u(delta_ref, dr, inst.beta) if len(w) else (np.zeros(0, bool), np.zeros(0, bool))
    nulls: dict[str, str] = {}
    out: dict[str, Any] = {"rlhf_optimum": [_num(p) for p in gibbs_policy(inst.pi_ref, inst.reward, inst.beta)]}
    code = 0
    try:
        sol = solve(inst, method=method, solver=solver, progress=progress)
        # pi_c below the float range at a pair: printed as 0 beside a finite delta_cpo, residuals ~0 (issue 17)
        problem = underflow_problem(inst, sol)
        if problem is not None:
            raise UnresolvedInstanceError(problem)
    except ConstrainedSolveError as err:
        sol = None
        reason = short_message(err)
        code = 0 if isinstance(err, UnresolvedInstanceError) else 1
        out.update({"cpo_optimum": None, "multipliers": None, "price_of_alignment": None,
                    "method": {"used": None, "why": f"{method}: not solved"}, "status": "not_solved",
                    "status_reason": reason, "kkt_residuals": None, "cpo_reason": reason})
    if sol is not None:
        kkt = {k: float(v) + 0.0 for k, v in sol.kkt.items()}  # + 0.0: no -0.0
        worst = max(kkt.values(), default=0.0)
        if worst <= KKT_TOL:
            status = "optimal"
            reason = f"every KKT residual is <= {KKT_TOL:g} (largest {worst:.2g})"
        else:
            status = "optimal_inaccurate"
            reason = f"the largest KKT residual is {worst:.2g} > {KKT_TOL:g}"
        if sol.status != status:
            reason += f"; the solver itself reported {sol.status!r}"
            if sol.raw is not None:
                reason += " before the exact active-set polish"
        log_pi = sol.log_pi if sol.log_pi is not None else np.log(np.where(sol.pi > 0, sol.pi, 1.0))
        log_star = np.log(np.where(sol.pi_star > 0, sol.pi_star, 1.0))
        price = _rounding_zero(sol.price_of_alignment, _price_bound(sol.pi, log_pi, log_star, inst.beta))
        delta_c = [_rounding_zero(d, _delta_bound(log_pi[wk], log_pi[lk])) if math.isfinite(d) else d
                   for d, (wk, lk) in zip(sol.delta_c, inst.preferences)]
        out.update({"cpo_optimum": [_num(p) for p in sol.pi], "multipliers": [_num(m) for m in sol.multipliers],
                    "price_of_alignment": _num(price),
                    "method": {"used": sol.method, "why": sol.note}, "status": status, "status_reason": reason,
                    "kkt_residuals": kkt, "cpo_reason": None})
    pairs = []
    for k, (wk, lk) in enumerate(inst.preferences):
        pair = {"winner": wk, "loser": lk, "delta_ref": _num(delta_ref[k]), "delta_star": _num(delta_star[k]),
                "assumption_holds": bool(holds[k]), "in_U": bool(in_u[k]),
                "delta_cpo": None if sol is None else _num(delta_c[k])}
        if pair["delta_star"] is None:
            nulls[f"pairs[{k}].delta_star"] = (f"dr/beta is beyond the float64 range ({'+' if delta_star[k] > 0 else '-'}"
                                               "inf); its sign, used for assumption_holds and in_U, is exact")
        if sol is not None and pair["delta_cpo"] is None:
            nulls[f"pairs[{k}].delta_cpo"] = "pi_c is 0 at both responses of the pair in float64 (log-odds undefined)"
        pairs.append(pair)
    out["pairs"] = pairs
    for key in ("rlhf_optimum", "cpo_optimum", "multipliers"):
        if out[key] is not None and any(v is None for v in out[key]):
            nulls[key] = "an entry is not finite in float64"
    if out["price_of_alignment"] is None and sol is not None:
        nulls["price_of_alignment"] = "not finite in float64"
    out["nulls"] = nulls
    return out, code
