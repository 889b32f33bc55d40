"""Figures of the data-set-level claims (docs/theory.md §13): existence vs labels, finite-label error, CPO phases,
length normalisation. Every figure goes through :func:`figures.style.new_figure` / :func:`figures.style.save`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures.style import COLORS, LINESTYLES, MARKERS, new_figure, save


def dataset_simulation_figure(rows: list[dict], fig_dir: Path) -> list[str]:
    """Fraction of data sets with a finite minimiser, and of pairs ranked unlike pi*, vs labels per pair."""
    fig, ax = new_figure(width=4.6, height=3.4)
    n = [r["n"] for r in rows]
    ax.plot(n, [r["finite_fraction"] for r in rows], color=COLORS[0], ls=LINESTYLES[0], marker=MARKERS[0],
            label="data sets with a finite minimiser")
    ax.plot(n, [r["wrong_vs_pi_star_fraction"] for r in rows], color=COLORS[1], ls=LINESTYLES[1], marker=MARKERS[1],
            label=r"pairs ranked unlike $\pi^*$ (finite ones)")
    ax.set_xscale("log")
    ax.set_xlabel("BT labels per pair n (K = 4, every pair labelled)")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="center right")
    ax.set_title("Empirical ordered-pair DPO on a data set")
    return save(fig, fig_dir, "dataset_minimiser_vs_n")


def finite_label_figure(curves: dict, n_needed: dict, fig_dir: Path) -> list[str]:
    """Left: P(ranked unlike pi*) vs n (exact). Right: n needed for an error rate eps (exact and Chernoff)."""
    fig, axes = new_figure(ncols=2, width=4.4, height=3.4)
    ax = axes[0, 0]
    for k, (label, (ns, p)) in enumerate(curves.items()):
        ax.plot(ns, p, color=COLORS[k % len(COLORS)], ls=LINESTYLES[k % len(LINESTYLES)], lw=1.0, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("BT labels n")
    ax.set_ylabel(r"P(empirical optimum ranks unlike $\pi^*$)")
    ax.legend(fontsize=7)
    ax.set_title("Exact binomial error (not monotone in n)")
    ax = axes[0, 1]
    for k, (label, (eps, n_exact, n_chern)) in enumerate(n_needed.items()):
        ax.plot(eps, n_exact, color=COLORS[k % len(COLORS)], ls=LINESTYLES[0], marker=MARKERS[k % len(MARKERS)],
                ms=3, label=f"{label}, exact")
        ax.plot(eps, n_chern, color=COLORS[k % len(COLORS)], ls=LINESTYLES[1], lw=0.8, label=f"{label}, Chernoff")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"error rate $\varepsilon$")
    ax.set_ylabel(r"n needed (error $\leq \varepsilon$ for all larger n)")
    ax.legend(fontsize=6)
    ax.set_title("Labels needed per pair")
    return save(fig, fig_dir, "finite_label_sign")


def cpo_population_figure(bdref: np.ndarray, dr: np.ndarray, ranks: dict[str, np.ndarray], fig_dir: Path) -> list[str]:
    """One panel per loss: where the BT-population minimiser ranks y_w first in the (beta delta_ref, dr) plane."""
    from matplotlib.colors import ListedColormap

    names = list(ranks)
    ncols = 4
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=3.0, height=2.7)
    cmap = ListedColormap(["#4d4d4d", "#f2f2f2"])
    extent = (bdref[0], bdref[-1], dr[0], dr[-1])
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.axis("off")
            continue
        ax.imshow(ranks[names[k]].T.astype(float), origin="lower", extent=extent, aspect="auto", cmap=cmap,
                  vmin=0, vmax=1, interpolation="nearest")
        ax.plot(bdref, -bdref, color=COLORS[2], ls="--", lw=1.0, label=r"$\beta\delta_{ref}+\Delta r=0$")
        ax.axhline(0.0, color=COLORS[1], ls=":", lw=1.0, label=r"$\Delta r=0$")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_title(names[k], fontsize=8)
        ax.set_xlabel(r"$\beta\,\delta_{ref}$")
        ax.set_ylabel(r"$\Delta r$")
        if k == 0:
            ax.legend(fontsize=6, loc="upper right")
    fig.suptitle("BT-population minimiser ranks $y_w$ first (light) or not (dark)", fontsize=9)
    return save(fig, fig_dir, "cpo_population_phase")


def length_norm_figure(log_len_ratio: np.ndarray, delta_ref: np.ndarray, disagree: np.ndarray, fig_dir: Path) -> list[str]:
    """Where the summed and per-token-mean population conditions disagree, over (log |y_w|/|y_l|, delta_ref).

    They disagree even at equal lengths L: the mean condition is the summed one with beta / L in place of beta."""
    from matplotlib.colors import ListedColormap

    fig, ax = new_figure(width=4.6, height=3.6)
    cmap = ListedColormap(["#f2f2f2", "#9a9a9a", "#4d4d4d"])
    ax.imshow(disagree.T, origin="lower", aspect="auto", cmap=cmap, vmin=0, vmax=2, interpolation="nearest",
              extent=(log_len_ratio[0], log_len_ratio[-1], delta_ref[0], delta_ref[-1]))
    ax.axvline(0.0, color=COLORS[0], ls="--", lw=1.0, label="equal lengths")
    ax.set_xlabel(r"$\log(|y_w| / |y_l|)$")
    ax.set_ylabel(r"summed $\delta_{ref}$")
    ax.set_title("light: agree; mid: only mean ranks $y_w$ first;\ndark: only summed ranks $y_w$ first", fontsize=8)
    ax.legend(fontsize=7)
    return save(fig, fig_dir, "length_normalised_disagreement")
