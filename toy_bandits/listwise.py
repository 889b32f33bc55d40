"""Listwise (Plackett-Luce) DPO on a ranking of k > 2 responses (docs/theory.md §13).

A ranking ``y_1 > ... > y_k`` (``ranking`` lists response indices, best first); DPO's implicit reward
``s_t = beta (log pi(y_t) - log pi_ref(y_t))`` and the Plackett-Luce loss

    L = -sum_{t=1}^{k-1} log( exp(s_t) / sum_{t' >= t} exp(s_t') ),

``log k!`` at ``pi = pi_ref`` (s = 0). Population version: rankings drawn from Plackett-Luce with the rewards
``r`` (the listwise Bradley-Terry model); the expected loss is a convex function of ``s``.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np

CLARABEL_TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}


def _check_ranking(ranking, K: int) -> np.ndarray:  # noqa: N803
    r = np.asarray(ranking)
    if r.ndim != 1 or r.size < 2 or not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"ranking: must be a list of at least 2 integer indices, got {ranking!r}")
    if np.any((r < 0) | (r >= K)):
        raise ValueError(f"ranking: indices must lie in [0, {K}), got {r.tolist()}")
    if np.unique(r).size != r.size:
        raise ValueError(f"ranking: indices must be distinct, got {r.tolist()}")
    return r.astype(np.int64)


def pl_loss(s) -> float:
    """-sum_t log softmax(s[t:])[0] for scores s in ranking order (best first); logsumexp, no overflow. (k,) -> float."""
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1 or s.size < 2 or not np.all(np.isfinite(s)):
        raise ValueError(f"s: must be a finite 1-d array of at least 2 scores, got {s!r}")
    # suffix logsumexp: lse[t] = log sum_{t' >= t} exp(s_t')
    lse = np.logaddexp.accumulate(s[::-1])[::-1]
    return float(np.sum(lse[:-1] - s[:-1]))


def pl_dpo_loss(log_pi, log_pi_ref, ranking, beta: float) -> float:
    """The listwise DPO loss of a policy on one ranking: :func:`pl_loss` of s_t = beta (log pi - log pi_ref)(y_t)."""
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta: must be finite and > 0, got {beta}")
    log_pi = np.asarray(log_pi, dtype=np.float64)
    r = _check_ranking(ranking, log_pi.size)
    return pl_loss(beta * (log_pi[r] - np.asarray(log_pi_ref, dtype=np.float64)[r]))


def pl_log_probs(scores) -> tuple[np.ndarray, np.ndarray]:
    """All k! rankings and their Plackett-Luce log-probabilities under ``scores`` (k <= 7). Returns (perms (k!, k), logp)."""
    scores = np.asarray(scores, dtype=np.float64)
    k = scores.size
    if not 2 <= k <= 7:
        raise ValueError(f"scores: enumeration needs 2 <= k <= 7 responses, got {k}")
    perms = np.array(list(itertools.permutations(range(k))), dtype=np.int64)
    logp = -np.array([pl_loss(scores[p]) for p in perms])  # log P(perm) = -PL loss of the scores in that order
    return perms, logp


def population_pl_loss(s, reward) -> float:
    """E_{ranking ~ PL(reward)} pl_loss(s[ranking]) by exact enumeration (k <= 7)."""
    s = np.asarray(s, dtype=np.float64)
    perms, logp = pl_log_probs(reward)
    return float(np.sum(np.exp(logp) * np.array([pl_loss(s[p]) for p in perms])))


def cvx_population_minimiser(reward, solver: str = "CLARABEL") -> np.ndarray:
    """argmin_s E_{PL(reward)} L(s) by CVXPY (s_0 = 0 pinned; the loss is shift invariant). Returns s (k,), mean 0.

    minimise  sum_perm P(perm) sum_{t<k-1} [ log_sum_exp(s[perm[t:]]) - s[perm[t]] ]   (exponential cone),
    with the log_sum_exp terms of equal index sets merged.
    """
    import cvxpy as cp

    reward = np.asarray(reward, dtype=np.float64)
    k = reward.size
    perms, logp = pl_log_probs(reward)
    w = np.exp(logp)
    # sum_perm w sum_t [lse(s[perm[t:]]) - s[perm[t]]]: the lse term depends only on the SET perm[t:], so the
    # k! (k-1) terms collapse to at most 2^k log_sum_exp atoms and one linear term (a much smaller program)
    set_weight: dict[tuple[int, ...], float] = {}
    linear = np.zeros(k)
    for p, wt in zip(perms, w):
        for t in range(k - 1):
            key = tuple(sorted(p[t:].tolist()))
            set_weight[key] = set_weight.get(key, 0.0) + wt
            linear[p[t]] += wt
    s = cp.Variable(k)
    atoms = [wt * cp.log_sum_exp(s[list(key)]) for key, wt in set_weight.items()]
    prob = cp.Problem(cp.Minimize(cp.sum(cp.hstack(atoms)) - linear @ s), [s[0] == 0])
    # tight tolerances (as toy_bandits.constrained does for CLARABEL): the default ones leave ~1e-4 in s
    with warnings.catch_warnings():  # at these tolerances CLARABEL may stop at "optimal_inaccurate" (accepted below)
        warnings.simplefilter("ignore", UserWarning)
        prob.solve(solver=solver, **(CLARABEL_TIGHT if solver == "CLARABEL" else {}))
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"population PL program: CVXPY status {prob.status!r}")
    out = np.asarray(s.value, dtype=np.float64)
    return out - out.mean()


def cvx_misordered_infimum(k: int, t: int, c: float, box: float = 40.0, solver: str = "CLARABEL") -> float:
    """min L(s) over scores with s_{t+1} - s_t >= c (0-based t; the adjacent pair (t, t+1) misordered when
    c = beta delta_ref(y_t, y_{t+1})) within the box |s| <= box (the infimum is approached at the box edge)."""
    import cvxpy as cp

    s = cp.Variable(k)
    loss = cp.sum(cp.hstack([cp.log_sum_exp(s[i:]) - s[i] for i in range(k - 1)]))
    prob = cp.Problem(cp.Minimize(loss), [s[t + 1] - s[t] >= c, cp.abs(s) <= box])
    with warnings.catch_warnings():
        # the optimum sits on the box edge (the infimum is not attained); "optimal_inaccurate" is accepted below
        # and the value is compared with softplus(c) by the caller
        warnings.simplefilter("ignore", UserWarning)
        prob.solve(solver=solver)
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"misordered infimum: CVXPY status {prob.status!r}")
    return float(prob.value)


def misordered_infimum(beta_delta_ref_adjacent) -> np.ndarray:
    """inf { L : pi(y_{t+1}) > pi(y_t) } = softplus(beta delta_ref(y_t, y_{t+1})), per adjacent t (not attained).

    The term at position t is >= softplus(s_{t+1} - s_t) > softplus(beta delta_ref(t, t+1)) on a misordered policy;
    the bound is approached with s_1 >> ... >> s_t, s_{t+1} - s_t -> beta delta_ref, s_{t+2..k} -> -inf.
    """
    c = np.asarray(beta_delta_ref_adjacent, dtype=np.float64)
    return np.logaddexp(0.0, c)


def listwise_U_nonempty(log_pi_ref, ranking, beta: float) -> bool:  # noqa: N802
    """True iff some policy has L < log k! (the reference's loss) yet pi(y_{t+1}) > pi(y_t) for an adjacent t:
    iff beta delta_ref(y_t, y_{t+1}) < log(k! - 1) for some adjacent t."""
    log_pi_ref = np.asarray(log_pi_ref, dtype=np.float64)
    r = _check_ranking(ranking, log_pi_ref.size)
    c = beta * (log_pi_ref[r[:-1]] - log_pi_ref[r[1:]])
    return bool(np.any(misordered_infimum(c) < math.lgamma(r.size + 1)))


def listwise_certifies(loss: float, log_pi_ref, ranking, beta: float) -> bool:
    """True when the loss value alone proves pi(y_1) >= ... >= pi(y_k): loss <= min_t softplus(beta delta_ref(t, t+1))."""
    log_pi_ref = np.asarray(log_pi_ref, dtype=np.float64)
    r = _check_ranking(ranking, log_pi_ref.size)
    c = beta * (log_pi_ref[r[:-1]] - log_pi_ref[r[1:]])
    return bool(loss <= float(np.min(misordered_infimum(c))))


def pi_star_agrees(log_pi_ref, reward, ranking, beta: float) -> bool:
    """The adjacent pairwise conditions beta delta_ref(y_t, y_{t+1}) + r(y_t) - r(y_{t+1}) > 0 for every t."""
    log_pi_ref = np.asarray(log_pi_ref, dtype=np.float64)
    reward = np.asarray(reward, dtype=np.float64)
    r = _check_ranking(ranking, log_pi_ref.size)
    return bool(np.all(beta * (log_pi_ref[r[:-1]] - log_pi_ref[r[1:]]) + reward[r[:-1]] - reward[r[1:]] > 0))
