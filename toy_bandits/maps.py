"""Maps of where DPO's optimum is misaligned: the phase diagram, the simplex region, violation rates, U_eps.

THEORY.md §3, §4, §6, §7, §9a. Notation: one preference pair ``(y_w, y_l)``,
``delta_ref = log pi_ref(y_w) - log pi_ref(y_l)``, ``dr = r(y_w) - r(y_l)``,
``delta* = delta_ref + dr / beta`` (the Gibbs optimum's log-odds, THEORY.md §1).

Reading used for "DPO's limit policy" in the phase diagram: the *population* reading (THEORY.md §4a).
With BT labels ``q = sigma(dr)`` the DPO population loss is minimised at ``beta (delta - delta_ref) = dr``,
i.e. at ``delta*``; so DPO's limit policy is misaligned exactly where ``delta* < 0``. (Under the
ordered-pair reading §4b there is no finite limit: ``delta -> +inf``; see :mod:`toy_bandits.map_claims`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# --------------------------------------------------------------------------------------------------
# (i) Phase diagram over (delta_ref, dr / beta)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhaseDiagram:
    """Every array has shape (A, B) = (len(delta_ref_grid), len(dr_over_beta_grid)), indexing "ij".

    delta_ref, dr_over_beta: the grid coordinates (broadcast views, no copy).
    delta_star: delta_ref + dr/beta, the log-odds of the RLHF optimum pi* (THEORY.md §1).
    assumption_fails: delta_ref + dr/beta <= 0 (negation of THEORY.md §3's strict inequality).
    dpo_misaligned: population reading (§4a): the BT-labelled DPO minimiser has delta = delta* < 0.
    pi_star_in_U: delta_ref < delta* < 0 (pi* lies in the undesirable space, §6).
    delta_cpo: the log-odds of constrained RLHF with margin m (§9a, one pair), from the KKT multiplier:
        delta_c = delta* + (1 + e^m) mu / beta, mu / beta = max(0, (m - delta*) / (1 + e^m)).
    cpo_binding: the constraint is active (delta* < m): the CPO fix changes the answer.
    cpo_meets_margin: delta_c >= m (up to 1e-12 relative rounding of the KKT formula).
    margin: m >= 0.
    reading: "population" (the reading of dpo_misaligned).
    """

    delta_ref: np.ndarray
    dr_over_beta: np.ndarray
    delta_star: np.ndarray
    assumption_fails: np.ndarray
    dpo_misaligned: np.ndarray
    pi_star_in_U: np.ndarray
    delta_cpo: np.ndarray
    cpo_binding: np.ndarray
    cpo_meets_margin: np.ndarray
    margin: float
    reading: str = "population"


def _grid_1d(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{name} must be a non-empty 1-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def phase_diagram(delta_ref_grid, dr_over_beta_grid, margin: float = 0.0) -> PhaseDiagram:
    """The phase diagram of one preference pair over the plane (delta_ref, dr/beta). THEORY.md §3, §6, §9a.

    delta_ref_grid: (A,) finite. dr_over_beta_grid: (B,) finite. margin: m >= 0 of constrained RLHF.
    Vectorised numpy (broadcasting; one pass per output array): a 1000 x 1000 grid takes a few
    hundredths of a second.
    """
    d = _grid_1d("delta_ref_grid", delta_ref_grid)[:, None]  # (A, 1)
    s = _grid_1d("dr_over_beta_grid", dr_over_beta_grid)[None, :]  # (1, B)
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be finite and >= 0, got {margin!r}")
    shape = (d.shape[0], s.shape[1])
    delta_star = d + s  # (A, B)
    # KKT multiplier of the single-pair constraint (THEORY.md §9a), divided by beta so that it lives on this plane.
    mu_over_beta = np.maximum(0.0, (margin - delta_star) / (1.0 + np.exp(margin)))
    delta_cpo = delta_star + (1.0 + np.exp(margin)) * mu_over_beta
    return PhaseDiagram(
        delta_ref=np.broadcast_to(d, shape),
        dr_over_beta=np.broadcast_to(s, shape),
        delta_star=delta_star,
        assumption_fails=delta_star <= 0,
        dpo_misaligned=delta_star < 0,
        pi_star_in_U=(d < delta_star) & (delta_star < 0),
        delta_cpo=delta_cpo,
        cpo_binding=delta_star < margin,
        cpo_meets_margin=delta_cpo >= margin - 1e-12 * max(1.0, margin),
        margin=float(margin),
    )
