"""The two questions practitioners ask most in trainer issue trackers, answered per pair (docs/theory.md §6, §7).

1. "rewards/chosen is negative and keeps falling": the fraction of pairs whose chosen log-probability
   fell below the reference's (``chosen_logps < ref_chosen_logps``, i.e. TRL's ``rewards/chosen < 0``).
2. "rewards/accuracies is high but the model is worse than the reference": how far the trainers'
   implicit-reward accuracy overstates the policy's own ranking accuracy.

Notation: ``delta = chosen_logps - rejected_logps``, ``delta_ref`` the same under the reference,
``h = beta (delta - delta_ref)`` (its sign does not depend on beta > 0). The trainers' accuracy is
``mean(h > 0)`` (TRL's ``rewards/accuracies``: chosen reward above rejected reward); the policy's
ranking accuracy is ``mean(delta >= 0)`` (Chen et al. 2024, as ``audit`` reports it).

The exact split (an identity of counts, not a bound). With ``A = {h > 0} = {delta > delta_ref}`` and
``R = {delta >= 0}``, ``mean(1_A) - mean(1_R) = P(A \\ R) - P(R \\ A)``, where

    A \\ R = {delta_ref < delta < 0} = U,                the undesirable space of docs/theory.md §6, and
    R \\ A = {0 <= delta <= delta_ref} = "right, below reference": ranked right, yet h <= 0.

So ``implicit_reward_accuracy - policy_ranking_accuracy = frac_in_U - frac_right_below_reference``:
the overstatement is exactly the pairs in U, less the opposite set (which needs ``delta_ref >= 0``).
Every indicator here is computed from ``delta`` and ``delta_ref`` (not from TRL's two rewards), so the
identity holds exactly in floating point; TRL's own ``chosen_rewards > rejected_rewards`` can differ
from ``delta > delta_ref`` on a pair only by rounding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FLAG_COLUMNS = ("in_U", "chosen_logp_fell", "rejected_logp_fell", "ranking_flipped", "h_positive",
                "right_below_reference")


def pair_flags(rc: np.ndarray, rr: np.ndarray, pc: np.ndarray, pr: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pair boolean flags (n,) from reference (rc, rr) and policy (pc, pr) log-probabilities.

    in_U: delta_ref < delta < 0 (implicit reward says learned, the policy prefers the rejected response).
    chosen_logp_fell / rejected_logp_fell: the policy's log-probability below the reference's.
    ranking_flipped: the policy ranks the pair differently from the reference ((delta >= 0) != (delta_ref >= 0)).
    h_positive: delta > delta_ref (TRL counts the pair in rewards/accuracies).
    right_below_reference: 0 <= delta <= delta_ref (ranked right, yet h <= 0).
    """
    delta, delta_ref = pc - pr, rc - rr
    return {
        "in_U": (delta_ref < delta) & (delta < 0),
        "chosen_logp_fell": pc < rc,
        "rejected_logp_fell": pr < rr,
        "ranking_flipped": (delta >= 0) != (delta_ref >= 0),
        "h_positive": delta > delta_ref,
        "right_below_reference": (delta >= 0) & (delta <= delta_ref),
    }


def diagnostic_counts(rc: np.ndarray, rr: np.ndarray, pc: np.ndarray, pr: np.ndarray) -> dict[str, int]:
    """The counts behind :func:`diagnostics` for some pairs (they add up over chunks of a stream)."""
    f = pair_flags(rc, rr, pc, pr)
    delta_ref_nonneg = (rc - rr) >= 0
    return {
        "implicit_reward_accurate": int(f["h_positive"].sum()),
        "policy_ranked_right": int(((pc - pr) >= 0).sum()),
        "in_U": int(f["in_U"].sum()),
        "right_below_reference": int(f["right_below_reference"].sum()),
        "chosen_logp_fell": int(f["chosen_logp_fell"].sum()),
        "rejected_logp_fell": int(f["rejected_logp_fell"].sum()),
        "both_logps_fell": int((f["chosen_logp_fell"] & f["rejected_logp_fell"]).sum()),
        "flipped_to_right": int((f["ranking_flipped"] & ~delta_ref_nonneg).sum()),
        "flipped_to_wrong": int((f["ranking_flipped"] & delta_ref_nonneg).sum()),
    }


def diagnostics_from_counts(counts: dict[str, int]) -> dict[str, Any]:
    """:func:`diagnostics` from ``n_pairs`` and the :func:`diagnostic_counts` of all the pairs (summed over chunks)."""
    n = counts["n_pairs"]
    counts = {"n_pairs": n, **{k: int(v) for k, v in counts.items() if k != "n_pairs"}}
    frac = {k: v / n for k, v in counts.items() if k != "n_pairs"}
    overstatement = frac["implicit_reward_accurate"] - frac["policy_ranked_right"]
    return {
        "frac_chosen_logp_fell": frac["chosen_logp_fell"],
        "frac_rejected_logp_fell": frac["rejected_logp_fell"],
        "frac_both_logps_fell": frac["both_logps_fell"],
        "implicit_reward_accuracy": frac["implicit_reward_accurate"],
        "policy_ranking_accuracy": frac["policy_ranked_right"],
        "accuracy_overstatement": overstatement,
        "accuracy_split": {
            "identity": "implicit_reward_accuracy - policy_ranking_accuracy = frac_in_U - frac_right_below_reference",
            "frac_in_U": frac["in_U"],
            "frac_right_below_reference": frac["right_below_reference"],
            # Exact in counts: |A| - |R| = |A \ R| - |R \ A|.
            "holds_in_counts": counts["implicit_reward_accurate"] - counts["policy_ranked_right"]
            == counts["in_U"] - counts["right_below_reference"],
        },
        "frac_ranking_flipped_to_right": frac["flipped_to_right"],
        "frac_ranking_flipped_to_wrong": frac["flipped_to_wrong"],
        "counts": counts,
    }


def diagnostics(rc: np.ndarray, rr: np.ndarray, pc: np.ndarray, pr: np.ndarray) -> dict[str, Any]:
    """The fractions and the exact accuracy split (module docstring); counts as well, so the identity is visible."""
    return diagnostics_from_counts({"n_pairs": len(rc), **diagnostic_counts(rc, rr, pc, pr)})


def format_lines(diag: dict[str, Any], title: str) -> list[str]:
    """Printed lines of one :func:`diagnostics` result."""
    s = diag["accuracy_split"]
    return [
        f"{title}:",
        f"  chosen log-prob fell below the reference's   {diag['frac_chosen_logp_fell']:.4f}"
        f"   (rejected fell {diag['frac_rejected_logp_fell']:.4f}, both {diag['frac_both_logps_fell']:.4f})",
        f"  implicit-reward accuracy (h > 0)             {diag['implicit_reward_accuracy']:.4f}"
        "   (TRL's rewards/accuracies)",
        f"  policy ranking accuracy (delta >= 0)         {diag['policy_ranking_accuracy']:.4f}",
        f"  overstatement = frac in U - frac right-below-reference: {diag['accuracy_overstatement']:+.4f} = "
        f"{s['frac_in_U']:.4f} - {s['frac_right_below_reference']:.4f}",
        f"  ranking flipped vs the reference: to right {diag['frac_ranking_flipped_to_right']:.4f}, "
        f"to wrong {diag['frac_ranking_flipped_to_wrong']:.4f}",
    ]


def write_pair_flags(path, data) -> Path:
    """``--pairs-out``: one JSON object per pair (1-based ``pair``, data order), its deltas and flags.

    data: the audit's :class:`~dpo_rlhf_checks.audit.PairData` (its ``columns`` name ref_chosen_logps,
    ref_rejected_logps, chosen_logps, rejected_logps; the rows are read a chunk at a time with ``chunks()``).
    A file without the policy's columns has no flags to write: ValueError, before anything is written.
    """
    if "chosen_logps" not in data.columns:
        raise ValueError("--pairs-out needs the policy's columns chosen_logps and rejected_logps")
    path = Path(path)
    pair = 0
    with open(path, "w", encoding="utf-8") as f:
        for c in data.chunks():
            rc, rr = c["ref_chosen_logps"], c["ref_rejected_logps"]
            pc, pr = c["chosen_logps"], c["rejected_logps"]
            flags = pair_flags(rc, rr, pc, pr)
            delta, delta_ref = (pc - pr).tolist(), (rc - rr).tolist()
            flag_lists = {k: flags[k].tolist() for k in FLAG_COLUMNS}
            for i in range(len(rc)):
                pair += 1
                row = {"pair": pair, "delta": delta[i], "delta_ref": delta_ref[i]}
                row.update({k: flag_lists[k][i] for k in FLAG_COLUMNS})
                f.write(json.dumps(row) + "\n")
    return path
