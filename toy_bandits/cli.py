"""``python paper_checks.py solve --instance FILE.json``: solve one bandit instance.

Input file: ``{"pi_ref": [...], "reward": [...], "beta": b, "preferences": [[w, l], ...], "margin": m}``
(every key required, no other key, no key twice; see :class:`toy_bandits.instance.BanditInstance`).

Output: readable sections by default; with ``--json`` one JSON object (strict JSON: no NaN)::

    {"rlhf_optimum": [pi*(y)...],                 the Gibbs policy (docs/theory.md §1); may be a point mass
     "cpo_optimum": [pi_c(y)...] or null,          constrained RLHF (§9a); null with "cpo_reason" when not solved
     "multipliers": [mu_k...],                     KKT multipliers of pi(w_k) - e^m pi(l_k) >= 0, reward units
     "price_of_alignment": J(pi*) - J(pi_c) or null,
     "pairs": [{"winner", "loser", "delta_ref", "delta_star", "assumption_holds", "in_U", "delta_cpo"}...],
     "method": {"used": ..., "why": ...},          what --method auto chose and why, and any fallback taken
     "status": "optimal" | "optimal_inaccurate" | "not_solved",
     "status_reason": why the status is what it is (the KKT residuals it rests on, the solver's own status),
     "kkt_residuals": {"primal", "dual", "slackness", "stationarity"} or null,
     "cpo_reason": null, or why the constrained optimum was not computed,
     "nulls": {"field": reason} for every other null}

``delta_*`` are log-odds log pi(w) - log pi(l); ``delta_star = delta_ref + dr / beta``;
``assumption_holds`` is delta_star > 0 (§3) and ``in_U`` is delta_ref < delta_star < 0 (§6), both decided
with exact signs (beta = 1e300 does not round them away). ``status`` is "optimal" when the answer meets
the KKT conditions within ``KKT_TOL`` (whatever the solver's own status was; it is named in
``status_reason``).

Method: ``--method auto`` (default) uses the exact closed form for one pair and CVXPY (``--solver``,
CLARABEL by default) for any other graph, and falls back to the dual solver when CVXPY fails; the
output says which ran. ``--method dual`` shows a progress bar on large graphs.

Exit codes: 0 solved (or the constrained part explicitly not computed, with its reason); 1 the solver
failed (output still printed, cpo_optimum null); 2 bad input (missing or unreadable file, malformed or
duplicate-key JSON, an invalid field, a preference cycle with margin > 0): one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np

from dpo_rlhf_checks.cli import BadInput, OneLineParser, no_duplicate_keys, short_message
from toy_bandits import dataset_solve
from toy_bandits.constrained import (
    METHODS, SOLVERS, ConstrainedSolveError, UnresolvedInstanceError, assumption_and_u, delta_star_of, solve,
    underflow_problem,
)
from toy_bandits.instance import BanditInstance
from toy_bandits.rlhf import gibbs_policy

KKT_TOL = 1e-9  # the answer is "optimal" when every KKT residual (absolute, see kkt_residuals) is below this


def load_json(path: str, what: str) -> Any:
    """The JSON value in ``path``; :class:`BadInput` for a missing, unreadable, non-UTF-8, malformed file or a
    duplicate key (one line naming the problem)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh, object_pairs_hook=no_duplicate_keys)
    except FileNotFoundError:
        raise BadInput(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise BadInput(f"{what} file is a directory: {path}") from None
    except UnicodeDecodeError as err:
        raise BadInput(f"{what} file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise BadInput(f"cannot read {what} file {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise BadInput(f"malformed JSON in {path}: {err.msg} (line {err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise BadInput(f"malformed JSON in {path}: nested too deeply") from None


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="paper_checks.py solve", description="Solve one bandit instance (see the module doc).")
    p.add_argument("--instance", required=True, help="JSON file with pi_ref, reward, beta, preferences, margin")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="auto: closed form for one pair, else CVXPY with a dual fallback (default auto)")
    p.add_argument("--solver", choices=SOLVERS, default="CLARABEL", help="CVXPY solver (default CLARABEL)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of readable sections")
    return p


def _num(x: float) -> float | None:
    """A finite float for JSON (-0.0 printed as 0.0), or None where it is not finite (the caller says why)."""
    x = float(x)
    return (x + 0.0) if math.isfinite(x) else None


def _load(path: str) -> BanditInstance | dataset_solve.DatasetInstance:
    try:
        data = load_json(path, "instance")
        if dataset_solve.is_dataset_instance(data):  # labels / ranking / lengths: toy_bandits.dataset_solve
            return dataset_solve.DatasetInstance.from_json(data)
        return BanditInstance.from_json(data)
    except RecursionError:
        raise BadInput(f"malformed instance in {path}: nested too deeply") from None


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


def format_sections(inst: BanditInstance, out: dict[str, Any]) -> str:
    """The readable output of ``solve``: the instance, the two optima, the pairs, and how it was solved."""
    def vec(v):
        return "n/a" if v is None else "[" + ", ".join("n/a" if x is None else f"{x:.6g}" for x in v) + "]"

    def num(x):
        return "n/a" if x is None else f"{x:.6g}"

    lines = [f"instance: K = {inst.K} responses, {len(inst.preferences)} preference pairs, beta = {inst.beta:g}, "
             f"margin m = {inst.margin:g}", "",
             "RLHF optimum pi* (Gibbs policy, docs/theory.md §1)", f"  {vec(out['rlhf_optimum'])}", "",
             "Constrained (CPO) optimum pi_c (docs/theory.md §9a)"]
    if out["cpo_optimum"] is None:
        lines.append(f"  not computed: {out['cpo_reason']}")
    else:
        lines += [f"  pi_c        {vec(out['cpo_optimum'])}",
                  f"  multipliers {vec(out['multipliers'])}  (reward units, one per pair)",
                  f"  price of alignment J(pi*) - J(pi_c) = {num(out['price_of_alignment'])}  (§9c)"]
    lines += ["", "Pairs (delta = log pi(w) - log pi(l); assumption: delta* > 0, §3; in U: delta_ref < delta* < 0, §6)",
              f"  {'w':>5} {'l':>5} {'delta_ref':>12} {'delta*':>12} {'assumption':>10} {'in U':>5} {'delta_cpo':>12}"]
    shown = out["pairs"] if len(out["pairs"]) <= 40 else out["pairs"][:20] + [None] + out["pairs"][-20:]
    for p in shown:
        if p is None:
            lines.append(f"  ... {len(out['pairs']) - 40} more pairs (all of them with --json)")
            continue
        lines.append(f"  {p['winner']:>5} {p['loser']:>5} {num(p['delta_ref']):>12} {num(p['delta_star']):>12} "
                     f"{'holds' if p['assumption_holds'] else 'fails':>10} {'yes' if p['in_U'] else 'no':>5} "
                     f"{num(p['delta_cpo']):>12}")
    lines += ["", f"Solved by: {out['method']['used'] or 'n/a'} ({out['method']['why']})",
              f"Status: {out['status']} ({out['status_reason']})"]
    for key, why in out["nulls"].items():
        lines.append(f"n/a {key}: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``paper_checks.py solve``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if any(a in ("-h", "--help") for a in argv):
            _parser().print_help()
            return 0
        args = _parser().parse_args(argv)
        inst = _load(args.instance)
        if isinstance(inst, dataset_solve.DatasetInstance):
            out, code = dataset_solve.result_json(inst, method=args.method, solver=args.solver,
                                                  progress=not args.json)
            text = format_sections(inst.base, out) + "\n\n" + dataset_solve.format_dataset_sections(out)
        else:
            out, code = result_json(inst, method=args.method, solver=args.solver, progress=not args.json)
            text = format_sections(inst, out)
    except (BadInput, ValueError) as err:  # InfeasiblePreferencesError is a ValueError
        print(f"error: {short_message(err)}", file=sys.stderr)
        return 2
    print(json.dumps(out, allow_nan=False) if args.json else text)
    return code
