#!/usr/bin/env python
"""How far the LM verdicts are to be trusted: each pre-registered comparison's pooled estimate over several runs'
report.json files (disjoint seed sets; a seed met twice keeps the later run's value), and the probability that one
seed set decides it at 12, 24 and 48 seeds (toy_lm.design.decision_power, doubling looks from 3).

    python benchmarks/lm_power.py results_seed0/report.json results_seed1000/report.json ...

Prints only the comparisons that some budget up to 48 would not decide with probability > 0.999. The numbers of
docs/theory.md §12 (budget-12 design) come from the runs of --seed 0, 1000 (budget 9 and 12), 2000 and 3000.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toy_lm.design import decision_power, n_looks  # noqa: E402

SIZES = (12, 24, 48)


def pooled(reports: list[dict]) -> dict[str, dict]:
    """name -> {"values": {seed: value}, "test", "bound", "claim"} over the LM comparisons of ``reports``."""
    out: dict[str, dict] = {}
    for report in reports:
        for claim in report["claims"]:
            for method in claim["methods"]:
                for outs in (method.get("evidence") or {}).get("comparisons", {}).values():
                    for o in outs:
                        seeds = [s for s in o["seeds"] if s not in o["excluded_seeds"]]
                        entry = out.setdefault(o["name"], {"values": {}, "test": o["test"], "bound": o["bound"],
                                                           "claim": claim["id"]})
                        entry["values"].update(zip(seeds, o["values"]))
    return out


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: lm_power.py REPORT.json [REPORT.json ...]", file=sys.stderr)
        return 2
    rows = pooled([json.loads(Path(p).read_text()) for p in paths])
    print(f"{'comparison':52s} {'n':>3s} {'mean':>7s} {'sd':>6s} {'dist':>6s} " + " ".join(f"P{n:<4d}" for n in SIZES))
    for name in sorted(rows, key=lambda k: (rows[k]["claim"], k)):
        r = rows[name]
        x = np.array(list(r["values"].values()), dtype=float)
        if x.size < 2:
            continue
        mean, sd = float(x.mean()), max(float(x.std(ddof=1)), 1 / (32 * math.sqrt(12)))
        dist = abs(abs(mean) - r["bound"]) if r["test"] == "within" else abs(mean - r["bound"])
        power = [decision_power(sd, dist, n, n_looks(3, 3, n)) for n in SIZES]
        if min(power) > 0.999:
            continue
        print(f"{name:52s} {x.size:3d} {mean:7.3f} {sd:6.3f} {dist:6.3f} " + " ".join(f"{p:5.2f}" for p in power)
              + f"  [{r['claim']}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
