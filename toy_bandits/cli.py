"""``python paper_checks.py solve --instance FILE.json``: solve one bandit instance, print JSON.

Input file: ``{"pi_ref": [...], "reward": [...], "beta": b, "preferences": [[w, l], ...], "margin": m}``
(every key required, no other key; see :class:`toy_bandits.instance.BanditInstance`).

Output (stdout, one JSON object)::

    {"rlhf_optimum": [pi*(y)...],                 the Gibbs policy (THEORY.md §1)
     "cpo_optimum": [pi_c(y)...] or null,          constrained RLHF (§9a); null only if the solver failed
     "multipliers": [mu_k...],                     KKT multipliers of pi(w_k) - e^m pi(l_k) >= 0, reward units
     "price_of_alignment": J(pi*) - J(pi_c) or null,
     "pairs": [{"winner", "loser", "delta_ref", "delta_star", "assumption_holds", "in_U", "delta_cpo"}...],
     "status": "optimal" | "optimal_inaccurate" | "solver_error: ..."}

``delta_*`` are log-odds log pi(w) - log pi(l); ``assumption_holds`` is delta_star > 0 (§3);
``in_U`` is delta_ref < delta_star < 0 (pi* lies in the undesirable set of the pair, §6);
``delta_cpo`` is null where the solver left both probabilities at 0.

Method: ``--method auto`` (default) uses the exact closed form for one pair and CVXPY
(``--solver``, CLARABEL by default) for any other graph.

Exit codes: 0 solved; 1 the solver failed (JSON still printed, cpo_optimum null); 2 bad input
(missing or unreadable file, malformed JSON, an invalid field, a preference cycle with margin > 0):
a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np

from toy_bandits import dataset_solve
from toy_bandits.constrained import METHODS, SOLVERS, ConstrainedSolveError, solve
from toy_bandits.instance import BanditInstance
from toy_bandits.rlhf import gibbs_policy


class _BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str):  # noqa: D102
        raise _BadInput(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="paper_checks.py solve", description="Solve one bandit instance; print JSON (see module doc).")
    p.add_argument("--instance", required=True, help="JSON file with pi_ref, reward, beta, preferences, margin")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="auto: closed form for one pair, else CVXPY (default auto)")
    p.add_argument("--solver", choices=SOLVERS, default="CLARABEL", help="CVXPY solver (default CLARABEL)")
    return p


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _load(path: str) -> BanditInstance | dataset_solve.DatasetInstance:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise _BadInput(f"instance file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _BadInput(f"cannot read instance file {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise _BadInput(f"malformed JSON in {path}: {err}") from None
    if dataset_solve.is_dataset_instance(data):  # labels / ranking / lengths (issue 10): toy_bandits.dataset_solve
        return dataset_solve.DatasetInstance.from_json(data)
    return BanditInstance.from_json(data)


def result_json(inst: BanditInstance, method: str = "auto", solver: str = "CLARABEL") -> tuple[dict[str, Any], int]:
    """The output object for ``inst`` and the exit code (0, or 1 when the solver failed)."""
    pi_star = gibbs_policy(inst.pi_ref, inst.reward, inst.beta)
    try:
        sol = solve(inst, method=method, solver=solver)
    except ConstrainedSolveError as err:
        log_ref = np.log(inst.pi_ref)
        log_star = np.log(np.maximum(pi_star, 1e-300))
        pairs = [{"winner": w, "loser": l, "delta_ref": _num(log_ref[w] - log_ref[l]),
                  "delta_star": _num(log_star[w] - log_star[l]), "assumption_holds": None, "in_U": None,
                  "delta_cpo": None} for w, l in inst.preferences]
        return {"rlhf_optimum": pi_star.tolist(), "cpo_optimum": None, "multipliers": [], "price_of_alignment": None,
                "pairs": pairs, "status": f"solver_error: {err}"}, 1
    pairs = [
        {"winner": w, "loser": l, "delta_ref": _num(sol.delta_ref[k]), "delta_star": _num(sol.delta_star[k]),
         "assumption_holds": bool(sol.assumption_holds[k]), "in_U": bool(sol.in_U[k]),
         "delta_cpo": _num(sol.delta_c[k])}
        for k, (w, l) in enumerate(inst.preferences)
    ]
    return {"rlhf_optimum": sol.pi_star.tolist(), "cpo_optimum": sol.pi.tolist(),
            "multipliers": [float(m) for m in sol.multipliers], "price_of_alignment": float(sol.price_of_alignment),
            "pairs": pairs, "status": sol.status}, 0


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
            out, code = dataset_solve.result_json(inst, method=args.method, solver=args.solver)
        else:
            out, code = result_json(inst, method=args.method, solver=args.solver)
    except (_BadInput, ValueError) as err:  # InfeasiblePreferencesError is a ValueError
        message = " ".join(str(err).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return code
