"""A pre-training forecast of which misranked pairs stay in U, from the reference alone (docs/theory.md §17).

Pre-registered (fixed before any run of it):

  judged pairs:  the misranked train pairs (delta_ref < 0) of every DPO cell of the stage (ordered and Bradley-Terry
                 labels, every beta and optimizer), per seed; the outcome is "in U at the end of the LM run";
  baseline:      H = beta |delta_ref| (the tabular theory's only input, §14);
  kernel score:  log(H + e^H - 1) - log K_delta_ii, the log of the tabular flow time to leave U (§5) with the pair's
                 own step scaled by its own delta-kernel K_delta_ii = |J_w - J_l|^2 = |J_w|^2 + |J_l|^2 - 2 <J_w, J_l>
                 at the reference (the more similar the chosen and rejected gradients, the smaller it is);
  secondary (descriptive, decides nothing): the same with the whole initial drift sum_j K_delta_ij (own + cross
                 at h = 0) in place of K_delta_ii (+inf where that drift is <= 0: the pair is pushed deeper);
  statistic:     per seed, the mean over the cells that have both outcomes of AUC(kernel) - AUC(baseline) (AUC of
                 the score for "in U at the end", ties counted one half); a two-sided 95% Student-t interval over
                 seeds; a gain when its lower end is > 0.

``score`` gains a forecast column only on a gain (issue 18); otherwise nothing changes there.
"""

from __future__ import annotations

import numpy as np

from toy_lm.design import seed_interval

LEVEL = 0.95


def auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative) + 1/2 P(tie) (Mann-Whitney); None without both classes.
    +inf scores compare as the largest."""
    score, positive = np.asarray(score, dtype=np.float64), np.asarray(positive, dtype=bool)
    pos, neg = score[positive], score[~positive]
    if pos.size == 0 or neg.size == 0:
        return None
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (pos.size * neg.size))


def delta_kernel(jacobian, n_pairs: int) -> np.ndarray:
    """(P, P) K_delta = D J J^T D^T of the train pairs (rows 0..P-1 chosen, P..2P-1 rejected)."""
    import torch

    j = torch.as_tensor(jacobian, dtype=torch.float64)
    jd = j[:n_pairs] - j[n_pairs:2 * n_pairs]  # (P, n)
    return (jd @ jd.T).numpy()


def scores(delta_ref: np.ndarray, beta: float, k_delta: np.ndarray) -> dict[str, np.ndarray]:
    """The baseline, the kernel score and the secondary one, per pair (higher = more likely to stay in U)."""
    h = beta * np.abs(np.asarray(delta_ref, dtype=np.float64))
    log_flow = np.log(h + np.expm1(h))  # log(H + e^H - 1), > -inf for H > 0
    own = np.diagonal(k_delta)
    drift = k_delta.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        secondary = np.where(drift > 0, log_flow - np.log(np.where(drift > 0, drift, 1.0)), np.inf)
    return {"baseline": h, "kernel": log_flow - np.log(own), "secondary": secondary}


def forecast(stage, jacobian_of) -> dict:
    """The forecast's validation on the stage's DPO cells. jacobian_of(seed) -> J (B, n_params) at that seed's
    reference (train chosen rows, then rejected rows first)."""
    from toy_lm.kernel_claim import kernel_keys

    per_seed: dict[int, dict[str, list]] = {}
    cells = {}
    kd_cache = {}
    for key in kernel_keys(stage.cfg):
        beta = key[0]
        for run in stage.runs_with(key):
            rec = run.records[key]
            v = run.delta_ref < 0
            if run.seed not in kd_cache:
                kd_cache[run.seed] = delta_kernel(jacobian_of(run.seed), run.task.n_train)
            sc = scores(run.delta_ref, beta, kd_cache[run.seed])
            in_u = rec.in_U[-1]
            aucs = {k: auc(s[v], in_u[v]) for k, s in sc.items()}
            cells.setdefault(f"beta {beta:g} {key[1]} {key[2]}", {})[run.seed] = aucs
            if aucs["baseline"] is None:
                continue
            d = per_seed.setdefault(run.seed, {"kernel": [], "secondary": [], "baseline": []})
            for k in d:
                d[k].append(aucs[k])
    seeds = sorted(per_seed)
    gains = [float(np.mean(per_seed[s]["kernel"]) - np.mean(per_seed[s]["baseline"])) for s in seeds]
    gains2 = [float(np.mean(per_seed[s]["secondary"]) - np.mean(per_seed[s]["baseline"])) for s in seeds]
    out = {"seeds": seeds, "per_seed_gain_kernel": gains, "per_seed_gain_secondary": gains2,
           "per_seed_auc_baseline": [float(np.mean(per_seed[s]["baseline"])) for s in seeds],
           "per_seed_auc_kernel": [float(np.mean(per_seed[s]["kernel"])) for s in seeds], "cells": cells}
    if len(seeds) >= 2:
        iv = seed_interval(gains, LEVEL)
        iv2 = seed_interval(gains2, LEVEL)
        out.update({"gain_kernel": iv, "gain_secondary": iv2, "gain": bool(iv["lo"] > 0),
                    "null_result": bool(iv["lo"] <= 0)})
    else:
        out.update({"gain": None, "null_result": None, "reason": "fewer than two seeds with both outcomes"})
    return out
