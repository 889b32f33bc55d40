"""Figures of the LM stage (toy_lm.stage.LMStage), all through figures.style.

lm_delta_trajectories: per-pair delta over training, DPO, DPO with BT labels, a CPO variant and
    cpo_clip with BT labels, coloured by delta_ref (first seed).
lm_predicted_vs_observed: fraction of train pairs in U at the end, predicted (tabular theory)
    against observed (LM), per method and seed; and final delta per pair, predicted against observed.
lm_loss_vs_aligned: mean training loss against the fraction of train pairs aligned (delta > 0), per method.
lm_chosen_logp: mean log-probability of the chosen response over training, per method.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from figures.style import COLORS, LINESTYLES, MARKERS, new_figure, save


def _traj_panel(ax, record, delta_ref, title, norm, cmap):
    steps = np.arange(record.delta_sum.shape[0])
    for j in np.argsort(delta_ref):
        ax.plot(steps, record.delta_sum[:, j], color=cmap(norm(delta_ref[j])), ls="-", lw=0.8, alpha=0.85)
    ax.axhline(0.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("preference-training step")
    ax.set_ylabel(r"$\delta = \log\pi(y_w)-\log\pi(y_l)$ (summed)")
    ax.set_title(title)


def lm_figures(stage, fig_dir: Path) -> list[str]:
    """Draw the four figures of the stage into ``fig_dir``; return the written paths (PDF and PNG)."""
    from toy_lm.task import L, W

    paths: list[str] = []
    run = stage.runs[0]
    methods = list(stage.cfg.methods)
    tr = run.task.split("train")
    delta_ref = (run.ref_logps.sum[tr, W] - run.ref_logps.sum[tr, L]).numpy()
    cpo = next((m for m in ("cpo_smooth", "cpo_clip", "cpo_eq17", "cpo_easy") if m in methods), None)
    shown = [m for m in ("dpo", "dpo_bt", cpo, "cpo_clip_bt") if m is not None and m in methods]

    # 1. per-pair delta trajectories coloured by delta_ref
    fig, axes = new_figure(ncols=len(shown), width=3.6, height=3.2)
    axes = np.atleast_1d(axes).ravel()
    lim = float(np.abs(delta_ref).max())
    norm = matplotlib.colors.Normalize(vmin=-lim, vmax=lim)
    cmap = matplotlib.colormaps["cividis"]
    for ax, m in zip(axes, shown):
        _traj_panel(ax, run.records[m], delta_ref, f"{m} (seed {run.seed})", norm, cmap)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=list(axes), label=r"$\delta_{ref}$", shrink=0.9)
    paths += _save_no_tight(fig, fig_dir, "lm_delta_trajectories")

    # 2. predicted vs observed
    fig, axes = new_figure(ncols=2, width=4.0, height=3.4)
    ax1, ax2 = axes.ravel()
    for i, m in enumerate(methods):
        pred = [r.comparisons[m].predicted_frac_in_U for r in stage.runs]
        obs = [r.comparisons[m].observed_frac_in_U for r in stage.runs]
        ax1.plot(pred, obs, ls="none", marker=MARKERS[(i + i // len(MARKERS)) % len(MARKERS)],
                 color=COLORS[i % len(COLORS)], label=m)
    ax1.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls=":")
    ax1.set_xlim(-0.03, 0.6)
    ax1.set_ylim(-0.03, 0.6)
    ax1.set_xlabel("predicted fraction in U (tabular theory)")
    ax1.set_ylabel("observed fraction in U (LM)")
    ax1.set_title("end of training, each seed")
    ax1.legend(fontsize=6, ncol=2)
    for i, m in enumerate([m for m in ("dpo", "dpo_bt", "cpo_clip_bt", "ipo", "cpo_easy") if m in methods]):
        c = run.comparisons[m]
        ax2.plot(c.pred_delta, c.obs_delta, ls="none", marker=MARKERS[i], ms=3.5, color=COLORS[i + 1], label=m)
    lo = min(ax2.get_xlim()[0], ax2.get_ylim()[0])
    hi = max(ax2.get_xlim()[1], ax2.get_ylim()[1])
    ax2.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls=":")
    ax2.axhline(0, color="k", lw=0.6)
    ax2.axvline(0, color="k", lw=0.6)
    ax2.set_xlabel(r"predicted final $\delta$ (tabular, matched time)")
    ax2.set_ylabel(r"observed final $\delta$ (LM)")
    ax2.set_title(f"per pair, seed {run.seed}")
    ax2.legend(fontsize=7)
    paths += save(fig, fig_dir, "lm_predicted_vs_observed")

    # 3. loss against fraction aligned
    fig, ax = new_figure(width=5.0, height=3.6)
    for i, m in enumerate(methods):
        rec = run.records[m]
        ax.plot(rec.objective, (rec.delta_sum > 0).mean(axis=1), color=COLORS[i % len(COLORS)],
                ls=LINESTYLES[i % len(LINESTYLES)], marker=MARKERS[i % len(MARKERS)], markevery=10, ms=3, label=m)
    ax.axvline(np.log(2), color="0.4", lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(0, None)
    ax.set_xlabel("mean training loss (symlog; dotted: log 2)")
    ax.set_ylabel(r"fraction of train pairs with $\delta > 0$")
    ax.set_title(f"loss vs alignment over training (seed {run.seed})")
    ax.legend(fontsize=6, ncol=2)
    paths += save(fig, fig_dir, "lm_loss_vs_aligned")

    # 4. chosen log-probability over training
    fig, ax = new_figure(width=5.0, height=3.4)
    for i, m in enumerate(methods):
        curves = np.stack([r.records[m].chosen_logp.mean(axis=1) for r in stage.runs])  # (seeds, S)
        ax.plot(curves.mean(axis=0), color=COLORS[i % len(COLORS)], ls=LINESTYLES[i % len(LINESTYLES)], label=m)
    ax.set_xlabel("preference-training step")
    ax.set_ylabel(r"mean $\log\pi(y_w\mid x)$ (summed), mean over seeds")
    ax.set_title("does the chosen response's log-probability fall?")
    ax.legend(fontsize=6, ncol=2)
    paths += save(fig, fig_dir, "lm_chosen_logp")
    return paths


def _save_no_tight(fig, fig_dir, name):
    # A colorbar shared by several axes does not mix with tight_layout; use constrained spacing instead.
    fig.set_layout_engine("constrained")
    fig.tight_layout = lambda *a, **k: None
    return save(fig, fig_dir, name)
