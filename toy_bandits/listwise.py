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


def _check_scores(s) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1 or s.size < 2 or not np.all(np.isfinite(s)):
        raise ValueError(f"s: must be a finite 1-d array of at least 2 scores, got {s!r}")
    return s


def _log_softplus(x) -> np.ndarray:
    """log(softplus(x)) = log log(1 + e^x) for every finite x, without underflow.

    Below x = -37, log softplus(x) = x + log(1 - e^x/2 + ...) = x to within e^x/2 < 4.3e-17 (under half an ulp of
    |x| >= 37), so x itself; above, softplus(x) >= 8.5e-17 is a normal float and its log is accurate.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.where(x < -37.0, x, np.log(np.logaddexp(0.0, np.maximum(x, -37.0))))


def _pl_log_terms(d: np.ndarray) -> np.ndarray:
    """log of the k-1 Plackett-Luce terms from the score differences d[t, t'] = s_t' - s_t (k, k; t' > t read).

    Term t is log sum_{t' >= t} e^{s_t'} - s_t = log(1 + sum_{t' > t} e^{s_t' - s_t}) = softplus(a_t),
    a_t = logsumexp_{t' > t} d[t, t']. With the differences taken first and summed by logsumexp, each term carries
    a relative error of a few eps max(1, |a_t|) beyond the error of the differences, at every magnitude. (The
    former ``lse_t - s_t`` lost every digit of a term below eps |s_t|: a loss of 1.5e-18 came out as 0.0.)
    """
    return np.array([_log_softplus(np.logaddexp.reduce(d[t, t + 1:])) for t in range(d.shape[0] - 1)])


def _differences(s: np.ndarray) -> np.ndarray:
    return s[None, :] - s[:, None]  # d[t, t'] = s_t' - s_t


def pl_loss(s) -> float:
    """-sum_t log softmax(s[t:])[0] for scores s in ranking order (best first). (k,) -> float.

    Evaluated as sum_t softplus(logsumexp(s[t+1:] - s[t])): no cancellation, the same relative accuracy near 0
    as near log k! (:func:`pl_log_loss` for losses below the float range).
    """
    return float(np.sum(np.exp(_pl_log_terms(_differences(_check_scores(s))))))


def pl_log_loss(s) -> float:
    """log :func:`pl_loss`, in log space (logsumexp of the log terms): finite where the loss itself underflows
    (log L = -2000 for scores 2000 apart). (k,) -> float."""
    return float(np.logaddexp.reduce(_pl_log_terms(_differences(_check_scores(s)))))


def _dpo_differences(log_pi, log_pi_ref, ranking, beta: float) -> np.ndarray:
    """d[t, t'] = s_t' - s_t of s_t = beta (log pi - log pi_ref)(y_t), as beta ((log pi_t' - log pi_t) -
    (log pi_ref_t' - log pi_ref_t)): each subtraction errs by eps times its own result, so d errs by at most
    ~eps (4 beta |log pi_ref_t' - log pi_ref_t| + 3 |d|) (|log pi_t' - log pi_t| <= that gap + |d|/beta), never by
    eps |s_t|, which is unbounded (log pi = -1e4 with beta = 1e3 gives |s| ~ 1e7)."""
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta: must be finite and > 0, got {beta}")
    log_pi = np.asarray(log_pi, dtype=np.float64)
    log_pi_ref = np.asarray(log_pi_ref, dtype=np.float64)
    if log_pi.ndim != 1 or log_pi.shape != log_pi_ref.shape:
        raise ValueError(f"log_pi, log_pi_ref: must be 1-d arrays of one length, got shapes {log_pi.shape}, "
                         f"{log_pi_ref.shape}")
    if not (np.all(np.isfinite(log_pi)) and np.all(np.isfinite(log_pi_ref))):
        raise ValueError("log_pi, log_pi_ref: must be finite")
    r = _check_ranking(ranking, log_pi.size)
    lp, lr = log_pi[r], log_pi_ref[r]
    return beta * ((lp[None, :] - lp[:, None]) - (lr[None, :] - lr[:, None]))


def pl_dpo_loss(log_pi, log_pi_ref, ranking, beta: float) -> float:
    """The listwise DPO loss of a policy on one ranking: :func:`pl_loss` of s_t = beta (log pi - log pi_ref)(y_t)
    (evaluated from differences, :func:`_dpo_differences`, accurate near 0 at every magnitude of log pi)."""
    return float(np.sum(np.exp(_pl_log_terms(_dpo_differences(log_pi, log_pi_ref, ranking, beta)))))


def pl_dpo_log_loss(log_pi, log_pi_ref, ranking, beta: float) -> float:
    """log of :func:`pl_dpo_loss`, in log space: finite where the loss underflows (for :func:`listwise_certifies`)."""
    return float(np.logaddexp.reduce(_pl_log_terms(_dpo_differences(log_pi, log_pi_ref, ranking, beta))))


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


EPS = float(np.finfo(np.float64).eps)
#: The smallest positive float64 (subnormal): the absolute error of a value rounded near or below the float range.
TINY = 2.0 ** -1074


def certificate_tolerance(k: int, beta: float, ref_gap: float, log_loss: float, loss: float) -> float:
    """A bound on the relative error of :func:`pl_dpo_loss` (and the absolute error of :func:`pl_dpo_log_loss`),
    used by :func:`listwise_certifies` to stay on the safe side of its threshold.

    The differences d = s_t' - s_t err by at most eps (4 beta G + 3 |d|), G = ``ref_gap`` = max - min of
    log pi_ref over the ranking (:func:`_dpo_differences`); a_t = logsumexp_{t'>t} d adds at most k - 1
    logaddexp roundings of ~eps max(1, |a_t|), and a difference far below a_t enters with its weight
    e^{d - a_t}, so |d| counts only as |a_t| + 1; softplus, exp, log and the sum of the k - 1 terms add (k + 3) eps.
    Every a_t <= log expm1(L) <= max(log L, L) + 1, and a term with a_t << log L adds eps |a_t| e^{a_t} <=
    eps (|log L| + 1) L. So the relative error of L is below (k + 6) eps (4 beta G + 3 (1 + |log L| + L));
    the result doubles that for the rounding of the bound itself and of L-hat in place of L.
    """
    return 2.0 * (k + 6) * EPS * (4.0 * beta * ref_gap + 3.0 * (1.0 + abs(log_loss) + loss))


def listwise_certifies(loss: float, log_pi_ref, ranking, beta: float, *, log_loss: bool = False) -> bool:
    """True when the loss value alone proves pi(y_1) >= ... >= pi(y_k) (docs/theory.md §13).

    Exact rule: loss <= min_t softplus(beta delta_ref(t, t+1)) (:func:`misordered_infimum`: a policy with
    pi(y_{t+1}) > pi(y_t) has L > softplus(beta delta_ref(t, t+1))). In floating point the rule is applied with
    both sides bounded: an upper bound on the loss (``loss`` times 1 + :func:`certificate_tolerance`, plus the
    smallest subnormal for a loss that underflowed) against a lower bound on the threshold, compared in log space
    (the threshold e^{beta delta_ref} is below the float range for beta delta_ref < -745 and stays exact there).
    So it is conservative: a loss within the rounding of the threshold certifies nothing, and a certificate is
    never given to a misordered policy.

    loss: :func:`pl_dpo_loss` of the policy (>= 0), or with ``log_loss=True`` :func:`pl_dpo_log_loss` (a loss
    computed another way, e.g. ``logsumexp(s[t:]) - s[t]`` with |s| >> 1, can be wrong by far more than the
    tolerance and proves nothing). log_pi_ref: (K,) finite; ranking: indices, best first; beta: finite, > 0.
    """
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta: must be finite and > 0, got {beta}")
    log_pi_ref = np.asarray(log_pi_ref, dtype=np.float64)
    r = _check_ranking(ranking, log_pi_ref.size)
    if not np.all(np.isfinite(log_pi_ref[r])):
        raise ValueError("log_pi_ref: must be finite on the ranked responses")
    loss = float(loss)
    if math.isnan(loss) or (not log_loss and loss < 0):
        raise ValueError(f"loss: must be {'a log-loss, not NaN' if log_loss else 'a number >= 0'}, got {loss}")
    lr = log_pi_ref[r]
    c = beta * (lr[:-1] - lr[1:])
    ref_gap = float(lr.max() - lr.min())
    # log of the threshold, log softplus(c_t) without underflow; the threshold errs by ~eps (2 beta G + 3) relative
    log_crit = float(np.min(_log_softplus(c)))
    crit_tol = 2.0 * EPS * (2.0 * beta * ref_gap + 3.0 * (1.0 + abs(log_crit)))
    if log_loss:
        if loss == math.inf:
            return False
        tol = certificate_tolerance(r.size, beta, ref_gap, loss, math.exp(min(loss, 700.0)))
        log_upper = loss + tol
    else:
        if not math.isfinite(loss):
            return False
        log_l = math.log(loss) if loss > 0 else -math.inf
        tol = certificate_tolerance(r.size, beta, ref_gap, 0.0 if loss == 0 else log_l, loss)
        # underflow: a loss of 0.0 (or a subnormal one) is only known to within the smallest subnormal
        log_upper = math.log(loss * (1.0 + tol) + TINY)
    if tol >= 0.5 or crit_tol >= 0.5:  # the rounding swamps the comparison: no proof either way
        return False
    return bool(log_upper <= log_crit - crit_tol)


def pi_star_agrees(log_pi_ref, reward, ranking, beta: float) -> bool:
    """The adjacent pairwise conditions beta delta_ref(y_t, y_{t+1}) + r(y_t) - r(y_{t+1}) > 0 for every t."""
    log_pi_ref = np.asarray(log_pi_ref, dtype=np.float64)
    reward = np.asarray(reward, dtype=np.float64)
    r = _check_ranking(ranking, log_pi_ref.size)
    return bool(np.all(beta * (log_pi_ref[r[:-1]] - log_pi_ref[r[1:]]) + reward[r[:-1]] - reward[r[1:]] > 0))
