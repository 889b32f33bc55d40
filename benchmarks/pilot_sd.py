#!/usr/bin/env python
"""The pilot of the LM seed budget (toy_lm/design.py PILOT): each family's pooled seed-level sd from report.json files.

    python benchmarks/pilot_sd.py results_seed0/report.json results_seed1000/report.json

Every pre-registered comparison of the LM claims with at least two seed-level values counts once per report (a
comparison read by two methods is the same numbers); within a family the sd is pooled: the sum of squared
deviations from each comparison's own mean over the sum of degrees of freedom (n - 1). Prints, per family, the
pooled sd, the degrees of freedom, the number of comparisons, and the budget rule's outcome for those sds.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toy_lm.design import FAMILY_OF, rule_budget  # noqa: E402


def pooled_sds(reports: list[dict]) -> dict[str, tuple[float, int, int]]:
    """family -> (pooled sd, degrees of freedom, comparisons) over the LM comparisons of ``reports``."""
    acc: dict[str, list[float]] = {}
    for report in reports:
        seen = set()
        for claim in report["claims"]:
            for method in claim["methods"]:
                for outs in (method.get("evidence") or {}).get("comparisons", {}).values():
                    for out in outs:
                        family = FAMILY_OF.get(out["quantity"])
                        values = np.asarray(out["values"], dtype=float)
                        if out["name"] in seen or family is None or values.size < 2:
                            continue
                        seen.add(out["name"])
                        ss, df, count = acc.setdefault(family, [0.0, 0, 0])
                        acc[family] = [ss + float(np.sum((values - values.mean()) ** 2)), df + values.size - 1, count + 1]
    return {f: (math.sqrt(ss / df), df, count) for f, (ss, df, count) in acc.items()}


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: pilot_sd.py REPORT.json [REPORT.json ...]", file=sys.stderr)
        return 2
    sds = pooled_sds([json.loads(Path(p).read_text()) for p in paths])
    for family, (sd, df, count) in sorted(sds.items()):
        print(f"{family}: pooled sd {sd:.4f} (df {df}, {count} comparisons)")
    print(rule_budget(pilot=sds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
