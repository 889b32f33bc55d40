"""Figures of ``paper_checks.py audit``: the reference log-odds against the assumption's boundary,
and the assumption-violation rate against beta (docs/theory.md §3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures.style import MARKERS, new_figure, save


RANGE_QUANTILES = (0.001, 0.999)  # the histogram spans the central 99.8%: a few extreme pairs would squash it


def histogram_bins(lo: float, hi: float, n_bins: int = 80) -> np.ndarray:
    """Bin edges (n_bins + 1,) over [lo, hi] (the :data:`RANGE_QUANTILES` of the values) padded by 5% each side."""
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return np.linspace(lo - pad, hi + pad, n_bins + 1)


def delta_ref_histogram(bins: np.ndarray, counts: dict[str, np.ndarray], violated_fraction: float | None,
                        beta: float, fig_dir: Path, name: str = "audit_delta_ref") -> list[str]:
    """Histogram of ``delta_ref`` per pair; with rewards, split into pairs that violate the assumption
    (``delta_ref <= -dr/beta``) and those that do not, and the histogram of the boundary ``-dr/beta``.

    bins: edges (k + 1,); counts: pairs per bin (k,), under ``"all"`` without rewards, else ``"holds"``,
    ``"violated"`` (delta_ref) and ``"boundary"`` (-dr/beta); violated_fraction: of all pairs (None without
    rewards); beta: the beta of the boundary. Counts, not values: the audit streams, keeping no per-pair array.
    """
    fig, ax = new_figure(width=5.0, height=3.4)
    left = bins[:-1]  # one sample per bin, weighted by its count: the histogram of the counted values
    if "all" in counts:
        ax.hist(left, bins=bins, weights=counts["all"], color="#0072B2", alpha=0.8, label="all pairs")
    else:
        ax.hist([left, left], bins=bins, weights=[counts["holds"], counts["violated"]], stacked=True,
                color=["#0072B2", "#D55E00"], alpha=0.8,
                label=["assumption holds", f"violated (delta_ref <= -dr/beta), {violated_fraction:.1%}"])
        ax.hist(left, bins=bins, weights=counts["boundary"], histtype="step", color="#000000", linestyle="--",
                linewidth=1.2, label=f"boundary -dr/beta (beta={beta:g})")
    ax.axvline(0.0, color="#777777", linestyle=":", linewidth=1.0, label="delta_ref = 0")
    ax.set_xlabel("delta_ref = log pi_ref(y_w) - log pi_ref(y_l)")
    ax.set_ylabel("pairs")
    ax.set_title("Reference log-odds and the assumption's boundary")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.6)  # head room for the legend
    ax.legend(loc="upper left")
    return save(fig, fig_dir, name)


def violation_rate_figure(beta_grid: np.ndarray, curves: dict[str, np.ndarray], betas, rates_at_betas: dict,
                          fig_dir: Path, name: str = "audit_violation_rate") -> list[str]:
    """Assumption-violation rate ``mean(beta delta_ref + dr <= 0)`` against beta (log axis).

    curves: label -> rates on ``beta_grid``; betas / rates_at_betas: the audited betas and their rates
    (summed log-probabilities), marked.
    """
    fig, ax = new_figure(width=5.0, height=3.4)
    for i, (label, rates) in enumerate(curves.items()):
        ax.plot(beta_grid, rates, label=label)
    ax.plot(list(betas), [rates_at_betas[f"{b:g}"] for b in betas], linestyle="none", marker=MARKERS[0],
            color="#D55E00", label="audited beta")
    ax.set_xscale("log")
    ax.set_xlabel("beta")
    ax.set_ylabel("assumption violation rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Pairs with beta delta_ref + dr <= 0")
    ax.legend(loc="best")
    return save(fig, fig_dir, name)
