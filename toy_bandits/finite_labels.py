"""Finite Bradley-Terry labels: how often the empirical population optimum ranks a pair the other way (§13).

One pair, ``n`` BT labels, ``k ~ Binomial(n, q)`` wins of ``y_w``, ``q = sigma(dr)``. The empirical population loss
``q_hat softplus(-h) + (1 - q_hat) softplus(h)`` (``q_hat = k/n``, ``h = beta (delta - delta_ref)``) is minimised at
``h = logit(q_hat)`` (``+-inf`` when k = n or 0), so the optimum ranks ``y_w`` first iff

    beta delta_ref + logit(k/n) > 0   <=>   k/n > t := sigma(-beta delta_ref),

while ``pi*`` ranks it first iff ``beta delta_ref + dr > 0`` (docs/theory.md §3). Everything below takes
``bdr = beta delta_ref`` and ``dr`` (both finite reals) and works in log space (binomial log-pmf, logsumexp).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from scipy.special import gammaln, logsumexp
from scipy.stats import binom


def _check(bdr: float, dr: float) -> None:
    for name, v in (("beta_delta_ref", bdr), ("dr", dr)):
        if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{name}: must be a finite number, got {v!r}")


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n!r}")
    return int(n)


def ranks_first(k, n, bdr: float) -> np.ndarray:
    """True where the empirical optimum with k wins of n ranks y_w first: log(k) - log(n - k) > -bdr (k = n: yes, 0: no)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logit = np.log(k) - np.log(n - k)  # -inf at k = 0, +inf at k = n
    return logit > -bdr


def min_winning_count(n: int, bdr: float) -> int:
    """The smallest k in 0..n+1 with :func:`ranks_first` (n + 1 when none does: never, since k = n always ranks first)."""
    n = _check_n(n)
    t = 1.0 / (1.0 + math.exp(bdr)) if bdr > -700 else 1.0  # sigma(-bdr)
    k = min(max(int(math.floor(n * t)) + 1, 0), n)
    # the float threshold n t can be off by one ulp at an integer: settle it on the exact predicate
    while k > 0 and ranks_first(k - 1, n, bdr):
        k -= 1
    while k <= n and not ranks_first(k, n, bdr):
        k += 1
    return k


def log_binom_pmf(k: np.ndarray, n: int, dr: float) -> np.ndarray:
    """log P(k wins of n), q = sigma(dr): log q = -softplus(-dr), log(1 - q) = -softplus(dr) (no log(1 - q) cancellation)."""
    k = np.asarray(k, dtype=np.float64)
    log_q, log_1mq = -np.logaddexp(0.0, -dr), -np.logaddexp(0.0, dr)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + k * log_q + (n - k) * log_1mq


def p_wrong(n: int, bdr: float, dr: float, against: str = "pi_star") -> float:
    """P(the empirical optimum ranks the pair unlike ``against``): "pi_star" (beta delta_ref + dr > 0 decides) or
    "human" (dr > 0 decides). Exact sum of binomial probabilities in log space (logsumexp of the terms on one side)."""
    _check(bdr, dr)
    n = _check_n(n)
    if against == "pi_star":
        first = bdr + dr > 0
    elif against == "human":
        first = dr > 0
    else:
        raise ValueError(f"against: must be 'pi_star' or 'human', got {against!r}")
    k0 = min_winning_count(n, bdr)
    ks = np.arange(0, k0) if first else np.arange(k0, n + 1)  # the counts that rank it the other way
    if ks.size == 0:
        return 0.0
    return float(min(1.0, np.exp(logsumexp(log_binom_pmf(ks, n, dr)))))  # rounding may exceed 1 by ~1e-11


def p_wrong_mpmath(n: int, bdr: float, dr: float, dps: int = 50) -> mpmath.mpf:
    """:func:`p_wrong` against pi*, with exact integer binomial coefficients and mpmath at ``dps`` digits."""
    _check(bdr, dr)
    n = _check_n(n)
    with mpmath.workdps(dps):
        q = 1 / (1 + mpmath.exp(-mpmath.mpf(dr)))
        first = bdr + dr > 0
        k0 = min_winning_count(n, bdr)
        ks = range(0, k0) if first else range(k0, n + 1)
        return mpmath.fsum(mpmath.binomial(n, k) * q ** k * (1 - q) ** (n - k) for k in ks)


def p_wrong_many(ns: np.ndarray, bdr: float, dr: float) -> np.ndarray:
    """:func:`p_wrong` against pi* for many n at once (scipy's binomial cdf/sf, accurate in the tails)."""
    _check(bdr, dr)
    ns = np.asarray(ns, dtype=np.int64)
    q = 1.0 / (1.0 + math.exp(-dr))
    if ns.size == 0 or ns.min() < 1:
        raise ValueError("ns: every n must be an integer >= 1")
    t = 1.0 / (1.0 + math.exp(bdr)) if bdr > -700 else 1.0
    k0 = np.minimum(np.floor(ns * t).astype(np.int64) + 1, ns)
    # settle float ties at the threshold on the exact predicate, vectorised (as in min_winning_count)
    for _ in range(2):
        down = (k0 > 0) & ranks_first(k0 - 1, ns, bdr)
        k0 = k0 - down
    for _ in range(2):
        up = (k0 <= ns) & ~ranks_first(k0, ns, bdr)
        k0 = k0 + up
    if bdr + dr > 0:
        return binom.cdf(k0 - 1, ns, q)  # P(k <= k0 - 1)
    return binom.sf(k0 - 1, ns, q)  # P(k >= k0)


def chernoff_bound(n, bdr: float, dr: float) -> np.ndarray:
    """exp(-n KL(t || q)), t = sigma(-bdr), q = sigma(dr): Chernoff-Hoeffding bound on :func:`p_wrong` vs pi*.

    The wrong side is k/n <= t when q > t (bdr + dr > 0) and k/n >= t when q < t; both tails obey the bound.
    1 when bdr + dr = 0 (t = q: no bound)."""
    _check(bdr, dr)
    t = 1.0 / (1.0 + math.exp(bdr))
    q = 1.0 / (1.0 + math.exp(-dr))
    # KL in terms of logits, stable: t log(t/q) + (1-t) log((1-t)/(1-q))
    log_t, log_1mt = -math.log1p(math.exp(bdr)) if bdr < 700 else -bdr, -math.log1p(math.exp(-bdr)) if bdr > -700 else bdr
    log_q, log_1mq = -math.log1p(math.exp(-dr)) if dr > -700 else dr, -math.log1p(math.exp(dr)) if dr < 700 else -dr
    kl = max(t * (log_t - log_q) + (1 - t) * (log_1mt - log_1mq), 0.0)
    return np.exp(-np.asarray(n, dtype=np.float64) * kl)


def n_needed(eps: float, bdr: float, dr: float, n_cap: int = 200_000) -> tuple[int | None, int | None]:
    """(n_exact, n_chernoff): the smallest N with P_n <= eps for every n >= N, and the Chernoff guarantee.

    n_chernoff = ceil(log(1/eps) / KL(t || q)) (every n beyond it is safe by the bound); n_exact scans the exact
    P_n for n < n_chernoff. None when bdr + dr = 0 or n_chernoff > n_cap.
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps: must lie in (0, 1), got {eps!r}")
    b1 = float(chernoff_bound(1, bdr, dr))
    if b1 >= 1.0:
        return None, None
    n_ch = max(1, int(math.ceil(math.log(eps) / math.log(b1))))
    if n_ch > n_cap:
        return None, n_ch
    ns = np.arange(1, n_ch + 1)
    p = p_wrong_many(ns, bdr, dr)
    bad = np.flatnonzero(p > eps)
    return (int(ns[bad[-1]]) + 1 if bad.size else 1), n_ch
