"""The BT-population minimiser of each preference loss on one pair: does it rank y_w first? (docs/theory.md §2, §10, §13)

Two responses (the pair is the whole support, K = 2): ``pi_ref = (sigma(delta_ref), sigma(-delta_ref))``, a policy
is its log-odds ``delta``. Labels are Bradley-Terry: y_w is "chosen" with probability ``q = sigma(dr)``, else y_l is,
and then every loss is evaluated on the swapped pair (``delta -> -delta``, ``delta_ref -> -delta_ref``, the
reference probabilities swapped). The population loss is

    E(delta) = q loss(delta; delta_ref) + (1 - q) loss(-delta; -delta_ref).

Independent numpy implementations of the losses of docs/theory.md §10 (not :mod:`dpo_rlhf_checks.losses`, which the
second method uses), for target-form losses ``loss = softplus(beta (T(delta_ref) - delta))``:

    dpo:        T = delta_ref
    cpo_eq17:   T = delta_ref + m_ref / beta,  m_ref = gamma (1/pi_ref(y_w) + 1/pi_ref(y_l))     (Paper Eq. 17)
    cpo_clip:   T = max(delta_ref, margin)                                                      (code 'clip'; HyPO)
    cpo_smooth: T = delta_ref + softplus(tau (gamma - delta_ref)) / (tau alpha)                 (code 'cpo')

E is then strictly convex in delta, and its minimiser is positive iff dE/d delta < 0 at 0:

    q sigma(beta T(delta_ref)) > (1 - q) sigma(beta T(-delta_ref))
    <=>  dr + log_sigmoid(beta T(delta_ref)) - log_sigmoid(beta T(-delta_ref)) > 0.

IPO: minimiser delta = delta_ref + (2q - 1)/(2 beta). DPO-Positive (lam): not of target form, minimised numerically.
"""

from __future__ import annotations

import math

import numpy as np

LOSS_NAMES = ("dpo", "ipo", "dpop", "cpo_clip", "cpo_smooth", "cpo_eq17")


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -np.asarray(x, dtype=np.float64))


def target(name: str, delta_ref, *, beta: float, **params) -> np.ndarray:
    """T(delta_ref) of a target-form loss (K = 2 reference), numpy, broadcasting over delta_ref."""
    d = np.asarray(delta_ref, dtype=np.float64)
    if name == "dpo":
        return d
    if name == "cpo_clip":
        return np.maximum(d, params.get("margin", 0.0))
    if name == "cpo_smooth":
        g, tau, alpha = params["gamma"], params["tau"], params["alpha"]
        return d + np.logaddexp(0.0, tau * (g - d)) / (tau * alpha)
    if name == "cpo_eq17":
        # 1/pi_ref(y_w) + 1/pi_ref(y_l) with pi_ref(y_w) = sigma(d): (1 + e^-d) + (1 + e^d) = exp(logaddexp(...))
        inv = np.exp(np.logaddexp(np.logaddexp(0.0, -d), np.logaddexp(0.0, d)))
        return d + params["gamma"] * inv / beta
    raise ValueError(f"name: no target form for {name!r}; valid: dpo, cpo_clip, cpo_smooth, cpo_eq17")


def ranks_first(name: str, beta_delta_ref, dr, *, beta: float, **params) -> np.ndarray:
    """True where the BT-population minimiser of loss ``name`` has delta > 0 (ranks y_w first). Broadcasts.

    beta_delta_ref, dr: arrays (the plane of the phase figure); beta > 0 and the loss's parameters
    (cpo_clip: margin; cpo_smooth: gamma, tau, alpha; cpo_eq17: gamma; dpop: lam).
    """
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta: must be finite and > 0, got {beta}")
    bdr = np.asarray(beta_delta_ref, dtype=np.float64)
    dr = np.asarray(dr, dtype=np.float64)
    d = bdr / beta
    if name == "ipo":
        q = 1.0 / (1.0 + np.exp(-dr))
        return bdr + (q - 0.5) > 0  # beta delta = beta delta_ref + (2q - 1)/2
    if name == "dpop":
        return dpop_minimiser(d, dr, beta=beta, lam=params["lam"]) > 0
    t1 = target(name, d, beta=beta, **params)
    t2 = target(name, -d, beta=beta, **params)
    return dr + _log_sigmoid(beta * t1) - _log_sigmoid(beta * t2) > 0


def dpop_population_loss(delta, delta_ref, dr, *, beta: float, lam: float) -> np.ndarray:
    """E(delta) for DPO-Positive on K = 2: softplus(-(beta x - beta lam max(0, log pi_ref(c) - log pi(c)))) per order."""
    delta = np.asarray(delta, dtype=np.float64)
    q = 1.0 / (1.0 + np.exp(-np.asarray(dr, dtype=np.float64)))
    lw, ll = _log_sigmoid(delta), _log_sigmoid(-delta)
    rw, rl = _log_sigmoid(delta_ref), _log_sigmoid(-delta_ref)
    x = beta * (delta - delta_ref)
    lw_term = np.logaddexp(0.0, -(x - beta * lam * np.maximum(0.0, rw - lw)))
    ll_term = np.logaddexp(0.0, -(-x - beta * lam * np.maximum(0.0, rl - ll)))
    return q * lw_term + (1 - q) * ll_term


def dpop_minimiser(delta_ref, dr, *, beta: float, lam: float) -> np.ndarray:
    """argmin over delta of :func:`dpop_population_loss`, vectorised over delta_ref and dr (broadcast): a grid on
    [-80, 80] (step 0.2), then 60 golden-section steps inside the bracket around the best grid point."""
    d_ref, drs = np.broadcast_arrays(np.asarray(delta_ref, dtype=np.float64), np.asarray(dr, dtype=np.float64))
    d_ref, drs = d_ref.ravel()[:, None], drs.ravel()[:, None]

    def f(x):
        return dpop_population_loss(x, d_ref, drs, beta=beta, lam=lam)

    grid = np.linspace(-80.0, 80.0, 801)[None, :]
    i = np.argmin(f(grid), axis=1)
    lo = grid[0, np.maximum(i - 1, 0)][:, None]
    hi = grid[0, np.minimum(i + 1, grid.size - 1)][:, None]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        left = f(a) < f(b)
        hi = np.where(left, b, hi)
        lo = np.where(left, lo, a)
    return (0.5 * (lo + hi)).reshape(np.broadcast_shapes(np.shape(delta_ref), np.shape(dr)))


def clip_repair_threshold(beta_delta_ref) -> np.ndarray:
    """cpo_clip (margin 0): the population minimiser ranks y_w first iff dr > this (closed form derived from the
    condition above): log(2 sigma(beta delta_ref)^-1 ... ) namely -log(2 sigma(bdr)) for bdr >= 0 and
    log(2 sigma(-bdr)) = log(2 sigma(beta |delta_ref|)) for bdr < 0 (between 0 and log 2)."""
    bdr = np.asarray(beta_delta_ref, dtype=np.float64)
    return np.where(bdr >= 0, -(math.log(2.0) + _log_sigmoid(bdr)), math.log(2.0) + _log_sigmoid(-bdr))


#: The loss settings of the phase figure: label -> (loss name, beta, params). Defaults of the authors' code (§10);
#: DPO-Positive with lam = 50 (Smaug's value); the released checkpoint's smooth setting.
SETTINGS: dict[str, tuple[str, float, dict]] = {
    "DPO": ("dpo", 0.1, {}),
    "IPO": ("ipo", 0.1, {}),
    "DPO-Positive (lam=50)": ("dpop", 0.1, {"lam": 50.0}),
    "CPO clip (m=0; HyPO)": ("cpo_clip", 0.1, {"margin": 0.0}),
    "CPO smooth (code defaults)": ("cpo_smooth", 0.1, {"gamma": 0.5, "tau": 2.0, "alpha": 1.0}),
    "CPO smooth (released: beta=2.5, alpha=0.25)": ("cpo_smooth", 2.5, {"gamma": 0.5, "tau": 2.0, "alpha": 0.25}),
    "CPO Eq. 17 (gamma=0.05)": ("cpo_eq17", 0.1, {"gamma": 0.05}),
}
