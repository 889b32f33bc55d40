"""What a certificate-carrying CPO loss can reach at best on one seed's labels: its population minimiser's sign
(docs/theory.md §10, §13), written here from the formulas, in numpy (independent of dpo_rlhf_checks.losses and
of toy_lm.tabular; tests/toy_lm/test_lm_design.py checks it against a brute-force minimisation of the toolkit's
loss).

For a target-form loss l(delta) = softplus(beta (T(delta_ref) - delta)), trained on labels of which a fraction
q chose y_w, the per-pair objective is

    f(delta) = q softplus(beta (T_f - delta)) + (1 - q) softplus(beta (T_b + delta)),
    T_f = T(delta_ref),  T_b = T(-delta_ref)   (the label that chose y_l swaps the pair),

convex in delta (the tabular delta is free). Its minimiser has delta* >= m iff f'(m) <= 0, i.e.

    log q + log sigma(beta (T_f - m)) >= log(1 - q) + log sigma(beta (T_b + m)),

an exact test with no optimisation (q = 1: always; q = 0: never). With ordered labels (q = 1) the minimiser is
at delta -> +inf, so every pair can reach delta >= m: the ceiling is 1.
"""

from __future__ import annotations

import numpy as np

CEILING_LOSSES = ("cpo_clip", "cpo_smooth")
_BT = {"cpo_clip_bt": "cpo_clip", "cpo_smooth_bt": "cpo_smooth"}


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log sigma(x) = -softplus(-x), never exp of a large positive number."""
    return -np.logaddexp(0.0, -x)


def target(name: str, delta_ref: np.ndarray, params: dict) -> np.ndarray:
    """T(delta_ref) of a certificate-carrying loss (docs/theory.md §10).

    cpo_clip: max(delta_ref, margin); cpo_smooth: delta_ref + softplus(tau (gamma - delta_ref)) / (tau alpha).
    """
    d = np.asarray(delta_ref, dtype=np.float64)
    if name == "cpo_clip":
        return np.maximum(d, float(params.get("margin", 0.0)))
    if name == "cpo_smooth":
        tau, gamma, alpha = float(params["tau"]), float(params["gamma"]), float(params["alpha"])
        return d + np.logaddexp(0.0, tau * (gamma - d)) / (tau * alpha)
    raise ValueError(f"no ceiling formula for {name!r}; valid: {CEILING_LOSSES}")


def minimiser_reaches(method: str, beta: float, params: dict, q: np.ndarray, delta_ref: np.ndarray,
                      margin: float) -> np.ndarray:
    """(P,) bool: the population minimiser of ``method`` on label frequency ``q`` has delta* >= ``margin``.

    method: "cpo_clip"/"cpo_smooth" (ordered labels: True everywhere) or "cpo_clip_bt"/"cpo_smooth_bt".
    q: (P,) fraction of the pair's labels that chose y_w, in [0, 1]. delta_ref: (P,) summed, finite.
    """
    q = np.asarray(q, dtype=np.float64)
    delta_ref = np.asarray(delta_ref, dtype=np.float64)
    if not (np.isfinite(delta_ref).all() and ((q >= 0) & (q <= 1)).all()):
        raise ValueError("delta_ref must be finite and q in [0, 1]")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if method in CEILING_LOSSES:
        return np.ones(delta_ref.shape, dtype=bool)
    if method not in _BT:
        raise ValueError(f"no ceiling for {method!r}; valid: {CEILING_LOSSES + tuple(_BT)}")
    name = _BT[method]
    t_f, t_b = target(name, delta_ref, params), target(name, -delta_ref, params)
    with np.errstate(divide="ignore"):  # log 0 = -inf: a pair whose labels all went one way
        lhs = np.log(q) + _log_sigmoid(beta * (t_f - margin))
        rhs = np.log1p(-q) + _log_sigmoid(beta * (t_b + margin))
    return lhs >= rhs


def ceiling_fraction(method: str, beta: float, params: dict, q: np.ndarray, delta_ref: np.ndarray,
                     margin: float) -> float:
    """The attainable fraction of the pairs with delta >= margin (:func:`minimiser_reaches`, averaged)."""
    return float(np.mean(minimiser_reaches(method, beta, params, q, delta_ref, margin)))
