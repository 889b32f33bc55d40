"""KL-regularised RLHF on a finite response set: the Gibbs optimum and the objective J.

docs/theory.md §1 (paper Sec. 2, Eq. 3/5):

    J(pi) = E_{y~pi}[r(y)] - beta KL(pi || pi_ref),
    pi*(y) = pi_ref(y) exp(r(y)/beta) / Z,   Z = sum_y pi_ref(y) exp(r(y)/beta),   J(pi*) = beta log Z.

Every function is batched over leading axes: ``pi_ref`` and ``reward`` have shape (..., K)
(the last axis indexes responses) and ``beta`` is a scalar or has shape (...) (one value per
instance). Everything is computed in log space with ``logsumexp``, so ``r / beta`` of order
1e6 (tiny ``beta``) neither overflows nor underflows to 0/0. Where ``r / beta`` itself exceeds the
float range (``r = 1e300, beta = 1e-4``), the logits are formed from ``(r - max r) / beta``, which
is <= 0: a response whose shifted logit falls below -1.8e308 gets ``log pi* = -inf`` (pi* = 0, the
exact limit), and pi* is then a point mass or spread over the maximisers. No NaN arises.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, rel_entr


def _beta_column(beta, lead_shape: tuple[int, ...]) -> np.ndarray:
    """beta as an array broadcastable against (..., K): shape (..., 1); validated > 0 and finite."""
    beta = np.asarray(beta, dtype=np.float64)
    if not np.all(np.isfinite(beta)) or np.any(beta <= 0):
        raise ValueError(f"beta must be finite and > 0, got {beta}")
    try:
        return np.broadcast_to(beta, lead_shape)[..., None]
    except ValueError:
        raise ValueError(f"beta of shape {beta.shape} does not broadcast to the leading shape {lead_shape}") from None


def _arrays(pi_ref, reward) -> tuple[np.ndarray, np.ndarray]:
    pi_ref = np.asarray(pi_ref, dtype=np.float64)
    reward = np.asarray(reward, dtype=np.float64)
    if pi_ref.shape != reward.shape or pi_ref.ndim < 1:
        raise ValueError(f"pi_ref and reward must have the same shape (..., K), got {pi_ref.shape} and {reward.shape}")
    if not np.all(np.isfinite(reward)):
        raise ValueError("reward must be finite")
    if not np.all(np.isfinite(pi_ref)) or np.any(pi_ref <= 0):
        raise ValueError("pi_ref must be finite with full support (every entry > 0)")
    return pi_ref, reward


def log_gibbs_unnormalised(pi_ref, reward, beta) -> np.ndarray:
    """log pi_ref(y) + r(y)/beta, shape (..., K). docs/theory.md §1."""
    pi_ref, reward = _arrays(pi_ref, reward)
    return np.log(pi_ref) + reward / _beta_column(beta, pi_ref.shape[:-1])


def log_partition(pi_ref, reward, beta) -> np.ndarray:
    """log Z = log sum_y pi_ref(y) exp(r(y)/beta), shape (...). docs/theory.md §1; J(pi*) = beta log Z.

    logsumexp keeps it finite when r/beta is huge (tiny beta): no bare exp of an unbounded value.
    """
    return logsumexp(log_gibbs_unnormalised(pi_ref, reward, beta), axis=-1)


def _shifted_logits(pi_ref, reward, beta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log pi_ref + (r - max r) / beta, max r, beta column): the logits shifted by max r / beta.

    Shape (..., K), (..., 1), (..., 1). Each shifted logit is <= log pi_ref, so it never overflows; it
    may be -inf (r - max r below -1.8e308 beta), which is the exact limit pi* = 0 there.
    """
    pi_ref, reward = _arrays(pi_ref, reward)
    beta_col = _beta_column(beta, pi_ref.shape[:-1])
    r_max = np.max(reward, axis=-1, keepdims=True)
    with np.errstate(over="ignore"):  # (r - max r) / beta -> -inf: pi*(y) = 0 exactly in float64
        return np.log(pi_ref) + (reward - r_max) / beta_col, r_max, beta_col


def log_gibbs_policy(pi_ref, reward, beta) -> np.ndarray:
    """log pi*(y), shape (..., K): the log of :func:`gibbs_policy`, exact even where pi* underflows.

    Finite where pi*(y) is representable in log space, -inf where r/beta puts pi*(y) below
    exp(-1.8e308) (see the module docstring); never NaN.
    """
    logits, _, _ = _shifted_logits(pi_ref, reward, beta)
    return logits - logsumexp(logits, axis=-1, keepdims=True)


def gibbs_policy(pi_ref, reward, beta) -> np.ndarray:
    """The RLHF optimum pi*(y) = pi_ref(y) exp(r(y)/beta) / Z. docs/theory.md §1, paper Eq. 5.

    pi_ref: (..., K), strictly positive, each row sums to 1. reward: (..., K), finite.
    beta: scalar or (...), > 0. Returns (..., K), rows sum to 1 (entries may underflow to 0
    for tiny beta; use :func:`log_gibbs_policy` where that matters).
    """
    return np.exp(log_gibbs_policy(pi_ref, reward, beta))


def kl_divergence(pi, pi_ref) -> np.ndarray:
    """KL(pi || pi_ref) = sum_y pi log(pi/pi_ref), shape (...), with 0 log 0 = 0 (scipy's rel_entr).

    pi: (..., K), entries >= 0 (zeros allowed). pi_ref: (..., K), entries > 0.
    """
    pi = np.asarray(pi, dtype=np.float64)
    pi_ref = np.asarray(pi_ref, dtype=np.float64)
    if pi.shape != pi_ref.shape:
        raise ValueError(f"pi and pi_ref must have the same shape, got {pi.shape} and {pi_ref.shape}")
    return rel_entr(pi, pi_ref).sum(axis=-1)


def rlhf_objective(pi, pi_ref, reward, beta) -> np.ndarray:
    """J(pi) = sum_y pi(y) r(y) - beta KL(pi || pi_ref), shape (...). docs/theory.md §1, paper Eq. 3.

    pi: (..., K) on the simplex (zeros allowed: 0 log 0 = 0). pi_ref, reward, beta as in
    :func:`gibbs_policy`.
    """
    pi_ref, reward = _arrays(pi_ref, reward)
    pi = np.asarray(pi, dtype=np.float64)
    if pi.shape != pi_ref.shape:
        raise ValueError(f"pi must have the shape of pi_ref {pi_ref.shape}, got {pi.shape}")
    if np.any(pi < 0) or not np.all(np.isfinite(pi)):
        raise ValueError("pi must be finite and >= 0")
    beta_col = _beta_column(beta, pi_ref.shape[:-1])[..., 0]
    return (pi * reward).sum(axis=-1) - beta_col * kl_divergence(pi, pi_ref)


def optimal_value(pi_ref, reward, beta) -> np.ndarray:
    """J(pi*) = beta log Z, shape (...). docs/theory.md §1.

    Computed as max r + beta logsumexp(log pi_ref + (r - max r)/beta), finite in reward units even
    where log Z = r/beta overflows.
    """
    logits, r_max, beta_col = _shifted_logits(pi_ref, reward, beta)
    return r_max[..., 0] + beta_col[..., 0] * logsumexp(logits, axis=-1)


def suboptimality(pi, pi_ref, reward, beta) -> np.ndarray:
    """J(pi*) - J(pi) = beta KL(pi || pi*), shape (...): exact and >= 0 (no cancellation).

    The identity follows from log pi*(y) = log pi_ref(y) + r(y)/beta - log Z; it is how the
    price of alignment is computed without subtracting two nearly equal numbers.
    """
    pi_ref, reward = _arrays(pi_ref, reward)
    pi = np.asarray(pi, dtype=np.float64)
    log_star = log_gibbs_policy(pi_ref, reward, beta)
    # sum pi (log pi - log pi*), with 0 log 0 = 0; log_star is finite even where pi* underflows.
    safe = np.where(pi > 0, pi, 1.0)
    with np.errstate(invalid="ignore"):  # 0 * (0 - -inf) where pi = 0 = pi*: masked by the where, not a NaN result
        kl = np.where(pi > 0, pi * (np.log(safe) - log_star), 0.0).sum(axis=-1)
    return _beta_column(beta, pi_ref.shape[:-1])[..., 0] * kl  # >= 0 up to rounding (not clamped)
