"""The dual-certificate gaps of cpo-constrained-kkt's convex method on a draw family the claim never uses.

The method (toy_bandits.solver_claims.dual_certificate) decides by gap = KL(pi || pi*) - g(nu_solver), whose
tolerance per solver (TOL_GAP) was fixed from this script's output: the same instance shapes as the method (single
pairs as ``_random_instances`` draws them; the four multi-pair graphs by ``_graph_instance``, as ``_multi_pair``
draws them), drawn from
``np.random.default_rng([seed, 777])`` (the claim draws from ``[seed, 9001]``), seeds 0-59 by default.

    python benchmarks/kkt_certificate_gaps.py [--seeds 60]

Prints, per solver and part, the largest and smallest absolute gap, the largest certified L1 radius sqrt(2 gap)
and the largest raw distance of the solver's own answer from the formula's, and the instances counted.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict

import numpy as np

from toy_bandits import solver_claims as sc
from toy_bandits.constrained import solve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=60)
    args = parser.parse_args(argv)
    rows: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for seed in range(args.seeds):
        rng = np.random.default_rng([seed, 777])
        for inst in sc._random_instances(rng, 4):
            ref = solve(inst, "closed-form")
            for solver in ("CLARABEL", "SCS"):
                raw, _ = sc._cvxpy_raw_and_polished(inst, solver)
                rows[("single pair", raw.method)].append(
                    (sc.dual_certificate(inst, ref, raw)["gap"], float(np.max(np.abs(raw.pi - ref.pi)))))
        for name in sc.GRAPHS:
            inst = sc._graph_instance(rng, name)
            ref = solve(inst, "dual")
            for solver in ("CLARABEL", "SCS"):
                raw, _ = sc._cvxpy_raw_and_polished(inst, solver)
                rows[("graphs", raw.method)].append(
                    (sc.dual_certificate(inst, ref, raw)["gap"], float(np.max(np.abs(raw.pi - ref.pi)))))
    print(f"{'part':12s} {'solver':15s} {'n':>4s} {'max gap':>9s} {'min gap':>10s} {'max sqrt(2 gap)':>15s} "
          f"{'max raw |dpi|':>13s}")
    for (part, solver), v in sorted(rows.items()):
        a = np.array(v)
        print(f"{part:12s} {solver:15s} {len(a):4d} {a[:, 0].max():9.2e} {a[:, 0].min():10.2e} "
              f"{math.sqrt(2 * max(a[:, 0].max(), 0)):15.2e} {a[:, 1].max():13.2e}")


if __name__ == "__main__":
    main()
