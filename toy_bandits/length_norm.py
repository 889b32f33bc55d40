"""Length normalisation: the theory with per-token-mean log-ratios (SimPO, the authors' code; docs/theory.md §13).

With sequence log-probabilities ``a = log pi(y_w)``, ``b = log pi(y_l)`` (sums over tokens, <= 0) and lengths
``L_w = |y_w|``, ``L_l = |y_l|`` (tokens, >= 1):

    delta      = a - b                       (summed; the paper's theory)
    delta_mean = a / L_w - b / L_l           (per-token mean; SimPO and the authors' code)

The mean-delta DPO loss is ``softplus(-beta (delta_mean - delta_mean_ref))``; its BT population minimiser satisfies
``beta (delta_mean - delta_mean_ref) = dr``. Everything here is plain float arithmetic on scalars or arrays.
"""

from __future__ import annotations

import numpy as np


def _lengths(len_w, len_l) -> tuple[np.ndarray, np.ndarray]:
    lw = np.asarray(len_w, dtype=np.float64)
    ll = np.asarray(len_l, dtype=np.float64)
    if np.any(~np.isfinite(lw)) or np.any(~np.isfinite(ll)) or np.any(lw < 1) or np.any(ll < 1):
        raise ValueError("lengths: every length must be a finite number of tokens >= 1")
    return lw, ll


def delta_mean(log_pi_w, log_pi_l, len_w, len_l) -> np.ndarray:
    """log pi(y_w)/|y_w| - log pi(y_l)/|y_l| (per-token mean log-odds)."""
    lw, ll = _lengths(len_w, len_l)
    return np.asarray(log_pi_w, dtype=np.float64) / lw - np.asarray(log_pi_l, dtype=np.float64) / ll


def mean_population_ranks_first(beta, delta_mean_ref, dr) -> np.ndarray:
    """The mean-delta BT population optimum has delta_mean > 0 iff beta delta_mean_ref + dr > 0."""
    return np.asarray(beta) * np.asarray(delta_mean_ref) + np.asarray(dr) > 0


def summed_population_ranks_first(beta, delta_ref, dr) -> np.ndarray:
    """The summed DPO (= RLHF) population optimum has delta > 0 iff beta delta_ref + dr > 0 (§3)."""
    return np.asarray(beta) * np.asarray(delta_ref) + np.asarray(dr) > 0


def mean_implies_summed(len_w, len_l) -> np.ndarray:
    """True where delta_mean > 0 implies delta > 0 for every pair of log-probabilities <= 0: |y_w| <= |y_l|."""
    lw, ll = _lengths(len_w, len_l)
    return lw <= ll


def summed_implies_mean(len_w, len_l) -> np.ndarray:
    """True where delta > 0 implies delta_mean > 0 for every pair of log-probabilities <= 0: |y_w| >= |y_l|."""
    lw, ll = _lengths(len_w, len_l)
    return lw >= ll


def minimiser_delta_range(c: float, len_w: float, len_l: float) -> tuple[float, float]:
    """The range (inf, sup) of the summed delta = a - b over the policies with delta_mean = c (a, b < 0, e^a + e^b <= 1).

    These are all minimisers of a mean-delta loss that fixes delta_mean = c. With a = L_w (c + b/L_l):
    delta(b) = L_w c + b (L_w/L_l - 1), b ranging over (-inf, b_max], b_max the largest b with a < 0, b < 0 and
    e^a + e^b <= 1 (found by bisection). L_w > L_l: inf = -inf; L_w < L_l: sup = +inf; equal: delta = L c exactly.
    """
    lw, ll = float(len_w), float(len_l)
    _lengths(lw, ll)

    def ok(b):
        a = lw * (c + b / ll)
        return a < 0 and b < 0 and np.logaddexp(a, b) <= 0.0

    lo, hi = -1e6, 0.0
    if not ok(lo):
        raise ValueError("c: no policy reaches this delta_mean")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    d_max_b = lw * c + lo * (lw / ll - 1.0)
    if lw > ll:
        return -np.inf, d_max_b
    if lw < ll:
        return d_max_b, np.inf
    return lw * c, lw * c
