"""Figures of the undesirable-space maps: phase diagram, simplex region, trajectories, bridge curves, time in U.

Every figure goes through :func:`figures.style.new_figure` / :func:`figures.style.save` (PDF + PNG)
and is readable in greyscale: regions differ by grey level *and* hatching, curves by line style and marker.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from figures.style import COLORS, LINESTYLES, MARKERS, new_figure, save

LOG2 = math.log(2.0)


def phase_diagram_figure(pd, fig_dir: Path) -> list[str]:
    """The (delta_ref, dr/beta) plane (population reading): aligned, pi* in U, misaligned with dr <= 0; CPO margin."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    fig, ax = new_figure(width=5.2, height=4.2)
    d = pd.delta_ref[:, 0]
    s = pd.dr_over_beta[0, :]
    code = np.zeros(pd.delta_star.shape)
    code[pd.dpo_misaligned] = 2
    code[pd.pi_star_in_U] = 1
    cmap = ListedColormap(["#f2f2f2", "#9a9a9a", "#4d4d4d"])
    extent = (d[0], d[-1], s[0], s[-1])
    ax.imshow(code.T, origin="lower", extent=extent, aspect="auto", cmap=cmap, vmin=0, vmax=2,
              interpolation="nearest")
    # Hatch the band where the CPO constraint binds but DPO's optimum is still aligned (0 < delta* < m).
    band = (pd.delta_star > 0) & pd.cpo_binding
    ax.contourf(d, s, band.T.astype(float), levels=[0.5, 1.5], colors="none", hatches=["////"])
    ax.plot(d, -d, color=COLORS[0], lw=1.5, ls="-", label=r"$\delta^*=0$ (assumption boundary)")
    ax.plot(d, pd.margin - d, color=COLORS[0], lw=1.2, ls="--", label=rf"$\delta^*=m={pd.margin:g}$ (CPO margin)")
    ax.axhline(0.0, color=COLORS[0], lw=1.0, ls=":", label=r"$\Delta r=0$")
    ax.set_xlim(d[0], d[-1])
    ax.set_ylim(s[0], s[-1])
    ax.set_xlabel(r"$\delta_{\rm ref}=\log\pi_{\rm ref}(y_w)/\pi_{\rm ref}(y_l)$")
    ax.set_ylabel(r"$\Delta r/\beta$")
    ax.set_title("Where DPO's population optimum prefers $y_l$")
    handles = ax.get_legend_handles_labels()[0] + [
        Patch(facecolor="#f2f2f2", edgecolor="k", label=r"aligned ($\delta^*>0$)"),
        Patch(facecolor="#9a9a9a", edgecolor="k", label=r"$\pi^*\in U$ ($\delta_{\rm ref}<\delta^*<0$)"),
        Patch(facecolor="#4d4d4d", edgecolor="k", label=r"$\delta^*<0$, $\Delta r\leq 0$ (reward disagrees)"),
        Patch(facecolor="white", edgecolor="k", hatch="////", label=r"CPO also active at $0<\delta^*<m$"),
    ]
    ax.legend(handles=handles, loc="upper right", fontsize=6.5, framealpha=0.95)
    return save(fig, fig_dir, "map_phase_diagram")


def _ternary(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric (pi_0, pi_1, pi_2) to the plane: y_w at (0, 0), y_l at (1, 0), third at (1/2, sqrt 3/2)."""
    points = np.atleast_2d(points)
    x = points[:, 1] + 0.5 * points[:, 2]
    y = (math.sqrt(3) / 2) * points[:, 2]
    return x, y


def simplex_figure(region, pi_ref, pi_star, fig_dir: Path) -> list[str]:
    """The 3-simplex: cells with DPO loss < log 2 but pi(y_w) < pi(y_l), pi_ref, pi* and the two boundary lines."""
    fig, ax = new_figure(width=6.6, height=4.2)
    x, y = _ternary(region.points)
    ax.scatter(x[region.region], y[region.region], s=1.0, color="#8c8c8c", marker="s", linewidths=0,
               label="loss $<\\log 2$ and $\\pi(y_w)<\\pi(y_l)$\n" + f"(area share {region.area_fraction:.3f})")
    corners = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float)
    cx, cy = _ternary(corners)
    ax.plot(cx, cy, color=COLORS[0], lw=1.0, ls="-")
    # delta = const lines run from the y_2 vertex to the y_w-y_l edge.
    for ratio, style, lab in ((1.0, "--", r"$\delta=0$"), (math.exp(region.delta_ref), ":", r"$\delta=\delta_{\rm ref}$")):
        edge = np.array([[ratio / (1 + ratio), 1 / (1 + ratio), 0.0], [0, 0, 1.0]])
        ex, ey = _ternary(edge)
        ax.plot(ex, ey, color=COLORS[0], ls=style, lw=1.2, label=lab)
    rx, ry = _ternary(np.asarray(pi_ref))
    sx, sy = _ternary(np.asarray(pi_star))
    ax.plot(rx, ry, ls="none", marker=MARKERS[0], ms=7, mfc="white", mec="k", label=r"$\pi_{\rm ref}$")
    ax.plot(sx, sy, ls="none", marker=MARKERS[2], ms=7, mfc="k", mec="k", label=r"$\pi^*$ (RLHF optimum)")
    for (px, py), name in zip(zip(cx[:3], cy[:3]), ("$y_w$", "$y_l$", "$y_3$")):
        ax.annotate(name, (px, py), textcoords="offset points", xytext=(0, -11 if py == 0 else 4), ha="center")
    ax.set_aspect("equal")
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.1, 1.0)
    ax.set_xlabel(r"$\pi(y_l)+\pi(y_3)/2$ (ternary coordinate)")
    ax.set_ylabel(r"$\frac{\sqrt{3}}{2}\,\pi(y_3)$")
    ax.set_title(rf"Undesirable region $U$ on the simplex, $\delta_{{\rm ref}}={region.delta_ref:.2f}$")
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    handles[0] = Patch(facecolor="#8c8c8c", edgecolor="none")  # the cell cloud, drawn as a swatch
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, framealpha=0.95)
    return save(fig, fig_dir, "map_simplex_region")


def trajectories_figure(trajs: dict, fig_dir: Path) -> list[str]:
    """Loss and delta against step for DPO and the CPO variants on one violated instance (pair 0 of instance 0)."""
    fig, axes = new_figure(ncols=2, width=4.0, height=3.2)
    ax_l, ax_d = axes[0]
    for i, (name, tr) in enumerate(trajs.items()):
        style = dict(color=COLORS[i % len(COLORS)], ls=LINESTYLES[i % len(LINESTYLES)], marker=MARKERS[i % len(MARKERS)],
                     markevery=max(1, len(tr.steps) // 8), ms=4)
        ax_l.plot(tr.steps, tr.loss[:, 0, 0], label=name, **style)
        ax_d.plot(tr.steps, tr.delta[:, 0, 0], label=name, **style)
    dpo = trajs.get("dpo")
    if dpo is not None:
        bad = (dpo.loss[:, 0, 0] < LOG2) & (dpo.delta[:, 0, 0] < 0)
        if bad.any():
            for ax in (ax_l, ax_d):
                ax.axvspan(dpo.steps[bad][0], dpo.steps[bad][-1], color="#d9d9d9", zorder=0,
                           label="DPO: loss $<\\log 2$, $\\delta<0$")
    ax_l.axhline(LOG2, color="k", lw=0.8, ls=":")
    ax_l.annotate(r"$\log 2$", (0, LOG2), textcoords="offset points", xytext=(2, 2), fontsize=7)
    ax_d.axhline(0.0, color="k", lw=0.8, ls=":")
    ax_l.set_xlabel("gradient step")
    ax_l.set_ylabel("per-pair loss")
    ax_l.set_title("Loss")
    ax_d.set_xlabel("gradient step")
    ax_d.set_ylabel(r"$\delta=\log\pi(y_w)-\log\pi(y_l)$")
    ax_d.set_title(r"Log-odds of the pair")
    ax_l.legend(fontsize=6.5)
    ax_d.legend(fontsize=6.5)
    return save(fig, fig_dir, "map_trajectories")


def bridge_figure(delta_refs, beta: float, fig_dir: Path) -> list[str]:
    """docs/theory.md §7: l(delta) = softplus(-beta(delta - delta_ref)) for several delta_ref, with l_crit at delta = 0."""
    fig, ax = new_figure(width=4.6, height=3.4)
    delta = np.linspace(-6, 4, 400)
    for i, dref in enumerate(delta_refs):
        loss = np.logaddexp(0.0, -beta * (delta - dref))  # softplus, overflow-free
        ax.plot(delta, loss, color=COLORS[i % len(COLORS)], ls=LINESTYLES[i % len(LINESTYLES)],
                label=rf"$\delta_{{\rm ref}}={dref:g}$")
        l_crit = float(np.logaddexp(0.0, beta * dref))
        ax.plot([0.0], [l_crit], ls="none", marker=MARKERS[i % len(MARKERS)], color=COLORS[i % len(COLORS)], ms=5)
    ax.axhline(LOG2, color="k", lw=0.8, ls=":", label=r"$\log 2$ (loss at $\pi_{\rm ref}$)")
    ax.axvline(0.0, color="k", lw=0.8, ls="-.", label=r"$\delta=0$; markers: $l_{\rm crit}$")
    ax.set_ylim(0, 4)
    ax.set_xlabel(r"$\delta_\pi$")
    ax.set_ylabel(r"DPO loss $l$")
    ax.set_title(rf"Loss-to-delta bridge, $\beta={beta:g}$: aligned iff $l<l_{{\rm crit}}$")
    ax.legend(fontsize=6.5)
    return save(fig, fig_dir, "map_bridge")


def crossing_figure(delta_refs, t_measured, t_ode, beta: float, lr: float, fig_dir: Path) -> list[str]:
    """Time the ordered-pair DPO flow keeps a pair in U, measured (gradient descent) vs the closed form."""
    fig, ax = new_figure(width=4.4, height=3.2)
    d = np.asarray(delta_refs)
    fine = np.linspace(d.min(), 0, 200)
    h = -beta * fine
    ax.plot(fine, (h + np.exp(h) - 1) / (2 * beta**2), color=COLORS[0], ls="-",
            label=r"gradient flow $(H+e^H-1)/2\beta^2$, $H=-\beta\delta_{\rm ref}$")
    ax.plot(d, t_measured, ls="none", marker=MARKERS[1], color=COLORS[1], mfc="white",
            label=rf"gradient descent, lr={lr:g}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.1)
    ax.set_xlabel(r"$\delta_{\rm ref}$")
    ax.set_ylabel(r"time until $\delta\geq 0$ (steps $\times$ lr)")
    ax.set_title(rf"Ordered-pair DPO: time spent in $U$, $\beta={beta:g}$")
    ax.legend(fontsize=7)
    return save(fig, fig_dir, "map_time_in_U")


def violation_rate_figure(rates, fig_dir: Path) -> list[str]:
    """Violation rate against beta, for each K: Monte Carlo (markers, 2 s.e. bars) and quadrature (lines)."""
    fig, ax = new_figure(width=4.6, height=3.4)
    for j, k in enumerate(rates.ks):
        ax.plot(rates.betas, rates.exact[:, j], color=COLORS[j % len(COLORS)], ls=LINESTYLES[j % len(LINESTYLES)],
                label=f"K={k} quadrature")
        ax.errorbar(rates.betas, rates.mc[:, j], yerr=2 * rates.mc_se[:, j], ls="none", marker=MARKERS[j % len(MARKERS)],
                    color=COLORS[j % len(COLORS)], mfc="white", ms=4, capsize=2, label=f"K={k} Monte Carlo")
    ax.set_xscale("log")
    ax.set_xlabel(r"$\beta$")
    ax.set_ylabel(r"P(assumption fails) = P($\pi^*\in U$)")
    ax.set_title(f"Random instances, Dirichlet({rates.concentration}) reference")
    ax.legend(fontsize=6, ncol=2)
    return save(fig, fig_dir, f"map_violation_rate_{'inv_k' if rates.concentration == '1/K' else 'dir1'}")
