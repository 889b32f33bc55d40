"""Figures of the LM stage (toy_lm.stage.LMStage), all through figures.style.

lm_regime_map: fraction of train pairs in U at the end against the cell's scale beta |delta_ref|, predicted
    (open) beside observed (filled), for DPO and the best CPO variant; one panel per optimizer and labels;
    cells that are not compared (saturated or trivial) are marked with a cross.
lm_time_in_U_law: the LM's time in U of each misranked pair against beta |delta_ref| (log scale), SGD and Adam,
    censored pairs at the run's end, and the tabular theory's law per beta level.
lm_loss_vs_frac_in_U: mean final loss against observed fraction in U, one point per cell and method.
lm_delta_trajectories: per-pair delta over training in the slowest SGD cell, coloured by delta_ref.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np

from figures.style import COLORS, MARKERS, new_figure, save


# Markers of the beta levels in lm_time_in_U_law: no triangles, which mark the censored pairs there.
LEVEL_MARKERS = tuple(m for m in MARKERS if m not in ("^", "v"))


def plain_log_ticks(axis) -> None:
    """Log-axis tick labels as plain numbers at 1, 2, 5 x 10^k (0.5, 1, 2, 5, 10), not '3x10^0' minor labels."""
    axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def best_cpo(stage) -> str | None:
    """The ordered-pair CPO variant with the lowest mean observed fraction in U over the cells."""
    names = [m for m in ("cpo_clip", "cpo_smooth", "cpo_eq17", "cpo_easy") if m in stage.cfg.methods]
    if not names:
        return None
    return min(names, key=lambda m: np.mean([r["observed_frac_in_U"] for r in stage.regimes if r["method"] == m]))


FIGURE_NAMES = ("regime_map", "time_in_U_law", "loss_vs_frac_in_U", "delta_trajectories")


def lm_figure_paths(fig_dir: Path, prefix: str = "lm") -> list[str]:
    """The paths :func:`lm_figures` writes, in its order (each figure as pdf and png)."""
    return [str(Path(fig_dir) / f"{prefix}_{name}.{ext}") for name in FIGURE_NAMES for ext in ("pdf", "png")]


def lm_figures(stage, fig_dir: Path, prefix: str = "lm") -> list[str]:
    """Draw the stage's figures into ``fig_dir`` (names start with ``prefix``); return the written paths."""
    paths: list[str] = []
    cfg = stage.cfg
    cpo = best_cpo(stage)
    bt_of = {"cpo_clip": "cpo_clip_bt", "cpo_smooth": "cpo_smooth_bt"}
    series = {"ordered": [m for m in ("dpo", cpo) if m], "bt": [m for m in ("dpo_bt", bt_of.get(cpo)) if m
                                                                 and m in cfg.methods]}

    # 1. regime map
    fig, axes = new_figure(ncols=2, nrows=len(cfg.optimizers), width=4.0, height=3.0)
    axes = np.atleast_2d(axes)
    for i, opt in enumerate(cfg.optimizers):
        for j, labels in enumerate(("ordered", "bt")):
            ax = axes[i, j]
            for k, m in enumerate(series[labels]):
                rows = sorted((r for r in stage.regimes if r["method"] == m and r["optimizer"] == opt),
                              key=lambda r: r["beta_delta_ref_scale"])
                x = [r["beta_delta_ref_scale"] for r in rows]
                # observed: small filled markers; predicted: larger open markers drawn on top, so a prediction that
                # coincides with its observation shows as a ring around the dot instead of hiding under it
                ax.plot(x, [r["observed_frac_in_U"] for r in rows], color=COLORS[k + 1], ls="-",
                        marker=MARKERS[k], ms=4, zorder=2, label=f"{m} observed")
                ax.plot(x, [r["predicted_frac_in_U"] for r in rows], color=COLORS[k + 1], ls="--",
                        marker=MARKERS[k], ms=8, mfc="none", zorder=3, label=f"{m} predicted")
                for r in rows:
                    if not r["compared"]:
                        ax.plot(r["beta_delta_ref_scale"], r["observed_frac_in_U"], marker="x", ms=10, color="k")
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis)
            ax.set_ylim(-0.03, 0.6)
            ax.set_xlabel(r"cell scale: median $\beta|\delta_{ref}|$ of misranked pairs")
            ax.set_ylabel("fraction of train pairs in U at the end")
            ax.set_title(f"{opt}, {labels} labels")
            ax.legend(fontsize=6)
    paths += save(fig, fig_dir, f"{prefix}_regime_map")

    # 2. time-in-U law
    fig, axes = new_figure(ncols=len(cfg.optimizers), width=4.2, height=3.4)
    axes = np.atleast_1d(axes).ravel()
    for ax, opt in zip(axes, cfg.optimizers):
        law = stage.time_in_U_law.get(opt, {})
        pts = law.get("points")
        if not pts:
            continue
        h, t, cens, th, lev = (np.asarray(pts[k], dtype=float) for k in ("h", "t_lm", "censored", "t_theory",
                                                                          "beta_level"))
        cens = cens.astype(bool)
        censored_labelled = theory_labelled = False
        for gi, beta in enumerate(cfg.betas):
            m = lev == gi
            if not m.any():
                continue
            c = COLORS[(gi + 1) % len(COLORS)]
            ok = m & ~cens
            ax.plot(h[ok], t[ok], ls="none", marker=LEVEL_MARKERS[gi % len(LEVEL_MARKERS)], color=c, ms=4,
                    label=rf"LM, $\beta$={beta:g}")
            ax.plot(h[m & cens], np.full((m & cens).sum(), cfg.steps + 1), ls="none", marker="^", mfc="none", color=c,
                    ms=5, label="still in U at the end (censored)" if (m & cens).any() and not censored_labelled
                    else None)
            censored_labelled = censored_labelled or bool((m & cens).any())
            fin = m & np.isfinite(th) & (th > 0)
            if ok.any() and fin.any():
                # theory's times are in its own unit: shift each level's curve onto the LM's points (slopes compare)
                shift = np.mean(np.log(t[ok])) - np.mean(np.log(th[ok & fin])) if (ok & fin).any() else 0.0
                order = np.argsort(h[fin])
                ax.plot(h[fin][order], np.exp(np.log(th[fin][order]) + shift), color=c, ls="--", lw=1,
                        label=None if theory_labelled else "tabular theory (dashed; shifted onto the LM points)")
                theory_labelled = True
        ax.set_yscale("log")
        fs, se, ts = law.get("fitted_slope"), law.get("stderr"), law.get("theory_slope")
        ax.set_title(f"{opt}: slope LM {fs if fs is None else round(fs, 2)} +- {se if se is None else round(se, 2)}, "
                     f"theory {ts if ts is None else round(ts, 2)}", fontsize=8)
        ax.set_xlabel(r"$\beta|\delta_{ref}|$ (misranked pairs)")
        ax.set_ylabel("LM steps in U (triangles: censored at end)")
        ax.legend(fontsize=6)
    paths += save(fig, fig_dir, f"{prefix}_time_in_U_law")

    # 3. loss against fraction in U
    fig, ax = new_figure(width=7.0, height=3.8)
    for i, m in enumerate(cfg.methods):
        for j, opt in enumerate(cfg.optimizers):
            rows = [r for r in stage.regimes if r["method"] == m and r["optimizer"] == opt]
            ax.plot([max(r["mean_final_loss"], 1e-6) for r in rows], [r["observed_frac_in_U"] for r in rows], ls="none",
                    marker=MARKERS[(i + i // len(MARKERS)) % len(MARKERS)], mfc="none" if j else None,
                    color=COLORS[i % len(COLORS)],
                    label=f"{m}" if j == 0 else None)
    ax.axvline(math.log(2), color="0.4", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("mean final training loss (dotted: log 2; open markers: adam)")
    ax.set_ylabel("observed fraction of train pairs in U")
    ax.set_title("loss vs fraction in U, one point per cell")
    ax.legend(fontsize=6, ncol=1, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # covers no marker
    paths += save(fig, fig_dir, f"{prefix}_loss_vs_frac_in_U")

    # 4. per-pair trajectories in the slowest cell of the first optimizer
    beta, opt = max(cfg.betas), cfg.optimizers[0]
    run = stage.runs[0]
    shown = [m for m in ("dpo", "dpo_bt", cpo, bt_of.get(cpo)) if m and m in cfg.methods]
    fig, axes = new_figure(ncols=len(shown), width=3.4, height=3.0)
    axes = np.atleast_1d(axes).ravel()
    lim = float(np.abs(run.delta_ref).max())
    norm = matplotlib.colors.Normalize(vmin=-lim, vmax=lim)
    cmap = matplotlib.colormaps["cividis"]
    for ax, m in zip(axes, shown):
        rec = run.records[(beta, opt, m)]
        for j in np.argsort(run.delta_ref):
            ax.plot(rec.delta_sum[:, j], color=cmap(norm(run.delta_ref[j])), ls="-", lw=0.8)
        ax.axhline(0.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel("preference-training step")
        ax.set_ylabel(r"$\delta$ (summed)")
        ax.set_title(f"{m}, beta {beta:g}, {opt}", fontsize=8)
    fig.set_layout_engine("constrained")
    fig.tight_layout = lambda *a, **k: None
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label=r"$\delta_{ref}$", shrink=0.9)
    paths += save(fig, fig_dir, f"{prefix}_delta_trajectories")
    return paths
