"""Finite Bradley-Terry labels: how often the empirical population optimum ranks a pair the other way (§13).

One pair, ``n`` BT labels, ``k ~ Binomial(n, q)`` wins of ``y_w``, ``q = sigma(dr)``. The empirical population loss
``q_hat softplus(-h) + (1 - q_hat) softplus(h)`` (``q_hat = k/n``, ``h = beta (delta - delta_ref)``) is minimised at
``h = logit(q_hat)`` (``+-inf`` when k = n or 0), so the optimum ranks ``y_w`` first iff

    beta delta_ref + logit(k/n) > 0   <=>   k/n > t := sigma(-beta delta_ref),

while ``pi*`` ranks it first iff ``beta delta_ref + dr > 0`` (docs/theory.md §3). Everything below takes
``bdr = beta delta_ref`` and ``dr`` (both finite reals) and works in log space (binomial log-pmf, logsumexp).

Ties (docs/theory.md §13). At ``beta delta_ref + logit(k/n) = 0`` the empirical optimum has ``delta = 0``:
``pi(y_w) = pi(y_l)``, which ranks neither response first (alignment is strict, ``pi(y_w) > pi(y_l)``, §3). So "ranks
the pair unlike pi*" compares signs: the empirical sign (+1, 0 or -1) differs from the sign of ``beta delta_ref + dr``.
A tie is wrong on both sides of a strictly ordered pair; e.g. at ``bdr = 0``, two labels split 1:1 tie, and
``P_2(0, 0.5) = P_2(0, -0.5) = 1 - sigma(0.5)^2 = 0.6125`` (the pair swapped, the same event).
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


def _sigma(x: float) -> float:
    """sigma(x) = 1/(1 + e^-x) for every finite x: e^x where e^-x would overflow (x <= -700, where 1 + e^x rounds to
    1), so a huge |beta delta_ref| or |dr| gives 0 or 1 instead of an OverflowError from math.exp. Not scipy's expit,
    which flushes the subnormal range to 0 (expit(-712) = 0, e^-712 = 6.1e-310: p_wrong_many then differs from the
    50-digit p_wrong_mpmath there)."""
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else math.exp(x)


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n!r}")
    return int(n)


def empirical_sign(k, n, bdr: float) -> np.ndarray:
    """The sign of delta at the empirical optimum with k wins of n: +1 (y_w first), -1 (y_l first), 0 (a tie:
    delta = 0).

    Decided by comparing logit(k/n) = log(k) - log(n - k) with -bdr (k = n: +inf, k = 0: -inf)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logit = np.log(k) - np.log(n - k)  # -inf at k = 0, +inf at k = n
    return np.where(logit > -bdr, 1, np.where(logit < -bdr, -1, 0))


def ranks_first(k, n, bdr: float) -> np.ndarray:
    """True where the empirical optimum with k wins of n ranks y_w strictly first (a tie does not):
    log(k) - log(n - k) > -bdr (k = n: yes, 0: no)."""
    return empirical_sign(k, n, bdr) > 0


def min_winning_count(n: int, bdr: float) -> int:
    """The smallest k in 0..n+1 with :func:`ranks_first` (n + 1 when none does: never, since k = n always ranks first)."""
    n = _check_n(n)
    t = _sigma(-bdr)
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


def _target_sign(bdr: float, dr: float, against: str) -> int:
    """The sign of beta delta_ref + dr ("pi_star") or of dr ("human"), by an exact comparison bdr vs -dr (a float sum
    could round a nonzero sum to 0)."""
    if against == "pi_star":
        return int(bdr > -dr) - int(bdr < -dr)
    if against == "human":
        return int(dr > 0) - int(dr < 0)
    raise ValueError(f"against: must be 'pi_star' or 'human', got {against!r}")


def p_wrong(n: int, bdr: float, dr: float, against: str = "pi_star") -> float:
    """P(the empirical optimum ranks the pair unlike ``against``): "pi_star" (the sign of beta delta_ref + dr) or
    "human" (the sign of dr). A tie (delta = 0) ranks unlike every strict order (module docstring). Exact sum of the
    binomial probabilities of every k whose :func:`empirical_sign` differs, in log space (logsumexp)."""
    _check(bdr, dr)
    n = _check_n(n)
    target = _target_sign(bdr, dr, against)
    ks = np.arange(0, n + 1)
    ks = ks[empirical_sign(ks, n, bdr) != target]  # the counts that rank it the other way (or tie)
    if ks.size == 0:
        return 0.0
    return float(min(1.0, np.exp(logsumexp(log_binom_pmf(ks, n, dr)))))  # rounding may exceed 1 by ~1e-11


def p_wrong_mpmath(n: int, bdr: float, dr: float, dps: int = 50) -> mpmath.mpf:
    """:func:`p_wrong` against pi*, with exact integer binomial coefficients and mpmath at ``dps`` digits; the sign of
    the empirical optimum is decided here too, in mpmath: logit(k/n) (exactly 0 at k = n/2, +-inf at k = n, 0) compared
    with -bdr, the float bdr taken exactly (a comparison, not a sum: 1e-277 + log 2 - log 2 would round to 0)."""
    _check(bdr, dr)
    n = _check_n(n)
    with mpmath.workdps(dps):
        q = 1 / (1 + mpmath.exp(-mpmath.mpf(dr)))
        minus_b = -mpmath.mpf(bdr)
        bd, d = mpmath.mpf(bdr), mpmath.mpf(dr)
        target = 1 if bd > -d else (-1 if bd < -d else 0)  # the sign of bdr + dr, by comparison
        total = mpmath.mpf(0)
        for k in range(n + 1):
            if k == 0 or k == n:
                logit = -mpmath.inf if k == 0 else mpmath.inf
            else:
                logit = mpmath.mpf(0) if 2 * k == n else mpmath.log(k) - mpmath.log(n - k)
            sign = 1 if logit > minus_b else (-1 if logit < minus_b else 0)
            if sign != target:
                total += mpmath.binomial(n, k) * q ** k * (1 - q) ** (n - k)
        return total


def p_wrong_many(ns: np.ndarray, bdr: float, dr: float) -> np.ndarray:
    """:func:`p_wrong` against pi* for many n at once (scipy's binomial cdf/sf, accurate in the tails): the wrong
    counts are k < k0 (k0 the first that ranks y_w strictly first) when pi* ranks y_w first, k >= k1 (k1 the first
    that does not rank y_l strictly first: the tie if there is one, else k0) when pi* ranks y_l first, and every k
    but a tie when pi* itself ties."""
    _check(bdr, dr)
    ns = np.asarray(ns, dtype=np.int64)
    q = _sigma(dr)
    if ns.size == 0 or ns.min() < 1:
        raise ValueError("ns: every n must be an integer >= 1")
    t = _sigma(-bdr)
    k0 = np.minimum(np.floor(ns * t).astype(np.int64) + 1, ns)
    # settle float ties at the threshold on the exact predicate, vectorised (as in min_winning_count)
    for _ in range(2):
        down = (k0 > 0) & ranks_first(k0 - 1, ns, bdr)
        k0 = k0 - down
    for _ in range(2):
        up = (k0 <= ns) & ~ranks_first(k0, ns, bdr)
        k0 = k0 + up
    tie = (k0 > 0) & (empirical_sign(np.maximum(k0 - 1, 0), ns, bdr) == 0)  # k0 - 1 is a tie
    if bdr > -dr:  # beta delta_ref + dr > 0, compared exactly
        return binom.cdf(k0 - 1, ns, q)  # P(k <= k0 - 1): every count below k0 (a tie included)
    if bdr < -dr:
        return binom.sf(k0 - 1 - tie, ns, q)  # P(k >= k1), k1 = k0 - 1 at a tie, else k0
    return np.where(tie, 1.0 - binom.pmf(k0 - 1, ns, q), 1.0)


def _kl_t_q(bdr: float, dr: float) -> float:
    """KL(t || q), t = sigma(-bdr), q = sigma(dr), from the log-sigmoids (no log(1 - q) cancellation, no overflow of e^x
    past |x| = 700, where log(1 + e^x) = x to double precision)."""
    t = _sigma(-bdr)
    # KL in terms of logits, stable: t log(t/q) + (1-t) log((1-t)/(1-q))
    log_t, log_1mt = -math.log1p(math.exp(bdr)) if bdr < 700 else -bdr, -math.log1p(math.exp(-bdr)) if bdr > -700 else bdr
    log_q, log_1mq = -math.log1p(math.exp(-dr)) if dr > -700 else dr, -math.log1p(math.exp(dr)) if dr < 700 else -dr
    return max(t * (log_t - log_q) + (1 - t) * (log_1mt - log_1mq), 0.0)


def chernoff_bound(n, bdr: float, dr: float) -> np.ndarray:
    """exp(-n KL(t || q)), t = sigma(-bdr), q = sigma(dr): Chernoff-Hoeffding bound on :func:`p_wrong` vs pi*.

    The wrong side is k/n <= t when q > t (bdr + dr > 0) and k/n >= t when q < t; both tails obey the bound.
    1 when bdr + dr = 0 (t = q: no bound)."""
    _check(bdr, dr)
    return np.exp(-np.asarray(n, dtype=np.float64) * _kl_t_q(bdr, dr))


def chernoff_lower_bound(n, bdr: float, dr: float) -> np.ndarray:
    """A lower bound on :func:`p_wrong` vs pi* (method of types): P_n >= P(k = k*) >= exp(-n KL(k*/n || q)) / (n + 1),
    k* the count nearest to n t strictly on the wrong side (k* < n t when q > t, k* > n t when q < t), 0 when no count
    lies there. Its exponent tends to the upper bound's, KL(t || q): with :func:`chernoff_bound` it brackets P_n from
    both sides. 0 when bdr + dr = 0 (no side is wrong for a tie-free count there)."""
    _check(bdr, dr)
    ns = np.atleast_1d(np.asarray(n, dtype=np.float64))
    if bdr == -dr:
        return np.zeros_like(ns) if np.ndim(n) else 0.0 * ns[0]
    t = _sigma(-bdr)
    q = _sigma(dr)
    nt = ns * t
    near = np.abs(nt - np.round(nt)) <= 1e-9 * np.maximum(ns, 1.0)  # n t an integer up to rounding: step past it
    if bdr > -dr:  # wrong side: k < n t
        k = np.where(near, np.round(nt) - 1, np.ceil(nt) - 1)
    else:  # wrong side: k > n t
        k = np.where(near, np.round(nt) + 1, np.floor(nt) + 1)
    ok = (k >= 0) & (k <= ns)
    kc = np.clip(k, 0, ns)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_hat = kc / ns
        log_q, log_1mq = -np.logaddexp(0.0, -dr), -np.logaddexp(0.0, dr)
        # n KL(p_hat || q) with 0 log 0 = 0
        kl_n = np.where(kc > 0, kc * (np.log(p_hat) - log_q), 0.0) + \
            np.where(ns - kc > 0, (ns - kc) * (np.log1p(-p_hat) - log_1mq), 0.0)
    out = np.where(ok, np.exp(-kl_n - np.log(ns + 1.0)), 0.0)
    return out if np.ndim(n) else out[0]


def n_needed(eps: float, bdr: float, dr: float, n_cap: int = 200_000) -> tuple[int | None, int | None]:
    """(n_exact, n_chernoff): the smallest N with P_n <= eps for every n >= N, and the Chernoff guarantee.

    n_chernoff = ceil(log(1/eps) / KL(t || q)) (every n beyond it is safe by the bound); n_exact scans the exact
    P_n for n < n_chernoff. None when bdr + dr = 0 or n_chernoff > n_cap (both None when KL(t || q) is 0 or so
    small that n_chernoff passes 2^62).
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps: must lie in (0, 1), got {eps!r}")
    _check(bdr, dr)
    kl = _kl_t_q(bdr, dr)
    if kl == 0.0 or -math.log(eps) / kl > 2.0 ** 62:  # a tie, or a guarantee past every count (KL ~ 1e-308)
        return None, None
    n_ch = max(1, math.ceil(-math.log(eps) / kl))
    if n_ch > n_cap:
        return None, n_ch
    ns = np.arange(1, n_ch + 1)
    p = p_wrong_many(ns, bdr, dr)
    bad = np.flatnonzero(p > eps)
    return (int(ns[bad[-1]]) + 1 if bad.size else 1), n_ch
