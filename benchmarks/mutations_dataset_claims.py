"""Planted bugs (mutations) in the formulas under test of the data-set claims: does some method catch each?

    python benchmarks/mutations_dataset_claims.py

Each mutation monkeypatches one library function (the methods import it at call time), runs the methods of the
claim, and prints which methods' amended verdict flipped to False (caught) or stayed True (missed).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpo_rlhf_checks.result import CheckContext  # noqa: E402
from toy_bandits import cpo_population, dataset, finite_labels, length_norm, listwise  # noqa: E402
from toy_bandits.dataset_claims import run_all  # noqa: E402


def _weak_graph(orig):
    def f(labels, K):  # noqa: N803
        g = orig(labels, K)
        return dataset.WinGraph(scc=g.weak, weak=g.weak, finite=True, divergent=(), order=np.zeros(K, dtype=int))
    return f


def _forget_beta(orig):
    def f(labels, K, beta):  # noqa: N803
        return orig(labels, K, 1.0)  # h computed as if beta = 1
    return f


def _off_by_one(orig):
    def f(n, bdr):
        return min(orig(n, bdr) + 1, n)
    return f


def _smooth_no_alpha(orig):
    def f(name, delta_ref, *, beta, **params):
        if name == "cpo_smooth":
            params = {**params, "alpha": 1.0}
        return orig(name, delta_ref, beta=beta, **params)
    return f


MUTATIONS = [
    ("win graph uses weak components (every graph 'finite')", dataset, "win_graph", _weak_graph,
     "dataset-ordered-minimiser"),
    ("empirical minimiser forgets 1/beta", dataset, "empirical_minimiser", _forget_beta, "dataset-ordered-minimiser"),
    ("finite labels: winning count threshold off by one", finite_labels, "min_winning_count", _off_by_one,
     "finite-label-sign"),
    ("Chernoff bound with twice the exponent", finite_labels, "chernoff_bound",
     lambda o: (lambda n, b, d: o(n, b, d) ** 2), "finite-label-sign"),
    ("listwise misordered infimum softplus(c/2)", listwise, "misordered_infimum", lambda o: (lambda c: o(np.asarray(c) / 2)),
     "listwise-equivalence"),
    ("length: minimiser range with the open end swapped", length_norm, "minimiser_delta_range",
     lambda o: (lambda c, lw, ll: o(c, ll, lw)), "length-normalised"),
    ("CPO smooth target ignores alpha", cpo_population, "target", _smooth_no_alpha, "cpo-population-alignment"),
    ("clip repair threshold without the log 2", cpo_population, "clip_repair_threshold",
     lambda o: (lambda b: o(b) - math.log(2.0)), "cpo-population-alignment"),
]


def main() -> int:
    ctx = CheckContext(seed=0, quick=True, out_dir=Path("/tmp/mutations_dataset"))
    caught_all = True
    for label, module, name, make, cid in MUTATIONS:
        orig = getattr(module, name)
        setattr(module, name, make(orig))
        try:
            with open("/dev/null", "w") as sink:
                res = run_all(ctx, [cid], out=sink)[cid]
            flips = [m for m, (r, _) in res.items() if r.amended is not True]
        except Exception as err:  # noqa: BLE001 - a crash also counts as caught
            flips = [f"crash: {type(err).__name__}"]
        finally:
            setattr(module, name, orig)
        caught_all &= bool(flips)
        print(f"{'CAUGHT' if flips else 'MISSED'}  {label:<58} by {flips}")
    return 0 if caught_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
