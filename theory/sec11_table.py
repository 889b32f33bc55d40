"""docs/theory.md §11: the arithmetic of the paper's benchmark table (exact decimals). Method of ``benchmark-table``.

The 8B-model results themselves and the E-CPOC variant are separate registry entries, not checked here.
"""

from __future__ import annotations

from fractions import Fraction

from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory.common import holds_only

BENCHMARK_TABLE = {  # docs/theory.md §11, as printed: (AE2 WR, AE2 LC, Arena-Hard, minus, plus)
    "DPO": ("24.60", "25.09", "28.9", "1.7", "1.5"),
    "SimPO": ("23.48", "25.91", "30.0", "2.7", "2.3"),
    "CPO": ("25.15", "26.57", "32.6", "1.9", "2.4"),
}
STATED_GAINS = (  # (metric index, method, baseline, stated gain)
    (0, "CPO", "DPO", "0.55"),
    (1, "CPO", "SimPO", "0.66"),
    (2, "CPO", "SimPO", "2.6"),
    (2, "CPO", "DPO", "3.7"),
)
_METRICS = ("AE2 WR", "AE2 LC", "Arena-Hard")


def benchmark_table_arithmetic(ctx: CheckContext) -> MethodResult:
    """The stated gains against the table's own numbers (exact decimal arithmetic), and which Arena-Hard intervals
    overlap (reported; the claim states no overlap)."""
    gains = []
    for idx, meth, base, stated in STATED_GAINS:
        diff = Fraction(BENCHMARK_TABLE[meth][idx]) - Fraction(BENCHMARK_TABLE[base][idx])
        gains.append({"metric": _METRICS[idx], "method": meth, "baseline": base, "stated": float(Fraction(stated)),
                      "from_table": float(diff), "matches": diff == Fraction(stated)})
    intervals = {k: (Fraction(v[2]) - Fraction(v[3]), Fraction(v[2]) + Fraction(v[4])) for k, v in BENCHMARK_TABLE.items()}
    names = list(intervals)
    overlaps = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            (lo1, hi1), (lo2, hi2) = intervals[names[i]], intervals[names[j]]
            overlaps[f"{names[i]}-{names[j]}"] = bool(max(lo1, lo2) <= min(hi1, hi2))
    conditions = {f"{g['method']}-{g['baseline']} {g['metric']} = {g['stated']}": g["matches"] for g in gains}
    evidence = {"stated_gains": gains,
                "arena_hard_intervals": {k: [float(lo), float(hi)] for k, (lo, hi) in intervals.items()},
                "arena_hard_intervals_overlap": overlaps,
                "scope": "the table's own arithmetic only; the 8B results are the not-checked claim benchmark-8b-results",
                "note": "the two AE2 gains use different baselines (WR vs DPO, LC vs SimPO); the interval kind is not "
                        "stated in the table"}
    over = ", ".join(f"{k} {'overlap' if v else 'disjoint'}" for k, v in overlaps.items())
    return holds_only(conditions, f"{sum(g['matches'] for g in gains)}/{len(gains)} stated gains equal the table's "
                                  f"differences exactly; Arena-Hard intervals: {over}", evidence,
                      depends_on=("theory.sec11_table.BENCHMARK_TABLE",))
