"""The output object of ``paper_checks.py solve`` for one bandit instance (:func:`result_json`; the fields are
described in :mod:`toy_bandits.cli`). Its own module so that :mod:`toy_bandits.dataset_solve`, which extends it, and
:mod:`toy_bandits.cli`, which prints it, both import it without importing each other."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dpo_rlhf_checks.cli import short_message
from toy_bandits.constrained import (ConstrainedSolveError, UnresolvedInstanceError, assumption_and_u, delta_star_of,
                                     solve)
from toy_bandits.instance import BanditInstance
from toy_bandits.rlhf import gibbs_policy

KKT_TOL = 1e-9  # the answer is "optimal" when every KKT residual (absolute, see kkt_residuals) is below this


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
        out.update({"cpo_optimum": [_num(p) for p in sol.pi], "multipliers": [_num(m) for m in sol.multipliers],
                    "price_of_alignment": _num(sol.price_of_alignment),
                    "method": {"used": sol.method, "why": sol.note}, "status": status, "status_reason": reason,
                    "kkt_residuals": kkt, "cpo_reason": None})
    pairs = []
    for k, (wk, lk) in enumerate(inst.preferences):
        pair = {"winner": wk, "loser": lk, "delta_ref": _num(delta_ref[k]), "delta_star": _num(delta_star[k]),
                "assumption_holds": bool(holds[k]), "in_U": bool(in_u[k]),
                "delta_cpo": None if sol is None else _num(sol.delta_c[k])}
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
