"""Figures of the U-atlas (``paper_checks.py atlas``): the phase figure and the time-in-U laws."""

from __future__ import annotations

from pathlib import Path

from figures.style import MARKERS, new_figure, save


def phase_figure(phases: dict[str, list[float]], beta_delta_refs: list[float], fig_dir: Path) -> list[str]:
    """beta delta after the horizon (200 n^2/beta^2 of flow) against beta delta_ref, one line per loss; the band
    between the diagonal (delta = delta_ref) and 0 is U's region. Values beyond +12 are drawn at 12."""
    fig, ax = new_figure(width=6.4, height=4.6)
    lo, hi = min(beta_delta_refs), max(beta_delta_refs)
    ax.fill_between([lo, 0], [lo, 0], [0, 0], color="#D55E00", alpha=0.12, label="U (delta_ref < delta < 0)")
    ax.plot([lo, hi], [lo, hi], color="#777777", lw=0.8, ls=":", label="delta = delta_ref")
    for i, (key, ys) in enumerate(phases.items()):
        ax.plot(beta_delta_refs, [min(y, 12.0) for y in ys], marker=MARKERS[i % len(MARKERS)], ms=3, lw=1,
                label=key.replace("[beta=0.1", "[").replace("[]", "").replace("[,", "["))
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("beta delta_ref")
    ax.set_ylabel("beta delta after ordered-pair flow (capped at 12)")
    ax.set_title("Where ordered-pair training ends, per TRL loss")
    ax.legend(fontsize=5.5, ncol=2, loc="upper left")
    return save(fig, fig_dir, "atlas_phase")


def time_in_U_figure(table: dict, fig_dir: Path) -> list[str]:
    """beta^2 T (time to leave U, bandit flow) against U0 = -beta delta_ref for the transient rows, log scale."""
    fig, ax = new_figure(width=5.4, height=4.0)
    i = 0
    for key, v in table.items():
        times = v["bandit"].get("exit_times")
        if not times:
            continue
        b = v["setting"]["beta"]
        pts = [(float(u), T * b * b) for u, T in times.items() if T is not None]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=MARKERS[i % len(MARKERS)], ms=4, lw=1, label=key)
        i += 1
    ax.set_yscale("log")
    ax.set_xlabel("U0 = -beta delta_ref")
    ax.set_ylabel("beta^2 x time in U (gradient flow)")
    ax.set_title("Time in U per TRL loss (bandit flow)")
    ax.legend(fontsize=6)
    return save(fig, fig_dir, "atlas_time_in_U")

