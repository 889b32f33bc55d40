"""Synthetic preference pairs with planted answers, and a writer of columns to JSON Lines or CSV (tests,
benchmarks, a demonstration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dpo_rlhf_checks.audit.columns import LENGTH_COLUMNS


def synthetic_pairs(n: int, *, seed: int = 0, beta: float = 0.1, violation_rate: float = 0.3,
                    reference_accuracy: float = 0.4, undesirable_rate: float = 0.2) -> dict[str, np.ndarray]:
    """Pairs with planted answers at ``beta`` (exact counts, rounded to whole pairs):

    - ``assumption_violation_rate`` = violation_rate (beta delta_ref + dr in [-5 beta, -beta], < 0),
    - ``reference_ranking_accuracy`` = reference_accuracy (delta_ref in [1, 5] on those pairs),
    - ``frac_in_undesirable`` = undesirable_rate (delta = delta_ref / 2 on pairs with delta_ref < 0),
      every other pair has delta in [0.5, 3], so ``policy_ranking_accuracy`` = 1 - undesirable_rate.
    Rewards agree with the labels (dr in [0.5, 2]); lengths are whole numbers in [10, 100].
    Returns the eight columns as float64 arrays (n,), rows in random order.
    """
    rng = np.random.default_rng(seed)
    a = round(n * violation_rate)
    c = round(n * reference_accuracy)
    b = n - a - c
    u = round(n * undesirable_rate)
    if b < 0 or u > a + b:
        raise ValueError(f"inconsistent rates: need violation_rate + reference_accuracy <= 1 and undesirable_rate <= "
                         f"1 - reference_accuracy; got {violation_rate}, {reference_accuracy}, {undesirable_rate}")
    dr = rng.uniform(0.5, 2.0, n)
    delta_ref = np.empty(n)
    delta_ref[:a] = -dr[:a] / beta - rng.uniform(1.0, 5.0, a)  # violates: beta delta_ref + dr < 0
    delta_ref[a:a + b] = -dr[a:a + b] / beta * rng.uniform(0.1, 0.9, b)  # delta_ref < 0, assumption holds
    delta_ref[a + b:] = rng.uniform(1.0, 5.0, c)
    delta = rng.uniform(0.5, 3.0, n)
    wrong = rng.permutation(a + b)[:u]  # pairs with delta_ref < 0 the policy leaves in U
    delta[wrong] = delta_ref[wrong] / 2
    rr = -rng.uniform(20.0, 200.0, n)
    rc = rr + delta_ref
    pr = rr - rng.uniform(0.0, 2.0, n)
    pc = pr + delta
    chosen_reward = rng.normal(0.0, 1.0, n)
    cols = {
        "ref_chosen_logps": rc, "ref_rejected_logps": rr, "chosen_logps": pc, "rejected_logps": pr,
        "chosen_reward": chosen_reward, "rejected_reward": chosen_reward - dr,
        "chosen_length": rng.integers(10, 101, n).astype(np.float64),
        "rejected_length": rng.integers(10, 101, n).astype(np.float64),
    }
    order = rng.permutation(n)
    return {k: v[order] for k, v in cols.items()}


def write_pairs(path, columns: dict[str, np.ndarray]) -> Path:
    """Write columns to ``.jsonl`` or ``.csv`` (by extension), floats at full precision (repr)."""
    path = Path(path)
    names = list(columns)
    as_int = {k for k in names if k in LENGTH_COLUMNS}
    cells = [[int(x) for x in columns[k]] if k in as_int else columns[k].tolist() for k in names]
    with open(path, "w", encoding="utf-8", newline="") as f:
        if path.suffix == ".csv":
            f.write(",".join(names) + "\n")
            f.writelines(",".join(map(repr, row)) + "\n" for row in zip(*cells))
        elif path.suffix in (".jsonl", ".ndjson", ".json"):
            template = "{" + ", ".join(f'"{k}": %r' for k in names) + "}\n"
            f.writelines(template % row for row in zip(*cells))
        else:
            raise ValueError(f"write_pairs writes .jsonl or .csv, got {path.name!r}")
    return path
