"""Figures of the constrained-RLHF solvers (toy_bandits.solver_claims), in the toolkit's style."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures.style import COLORS, LINESTYLES, MARKERS, new_figure, save


def price_of_alignment_figure(fig_dir: Path, curves: list[dict], name: str = "price_of_alignment") -> list[str]:
    """Price of alignment J(pi*) - J(pi_c) against the violation size beta m - beta delta_ref - dr.

    curves: one dict per curve with "label", "violation" (n,), "price" (n,) from the closed form,
    and optionally "cvx_violation", "cvx_price" (CVXPY points, drawn as markers on the curve).
    Left panel linear, right panel log-log for the positive violations (the quadratic onset).
    """
    fig, axes = new_figure(ncols=2, width=4.0, height=3.2)
    ax_lin, ax_log = axes[0, 0], axes[0, 1]
    for i, c in enumerate(curves):
        style = {"color": COLORS[i % len(COLORS)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}
        v, p = np.asarray(c["violation"]), np.asarray(c["price"])
        ax_lin.plot(v, p, label=c["label"], **style)
        pos = v > 0
        ax_log.loglog(v[pos], np.maximum(p[pos], 1e-300), label=c["label"], **style)
        if "cvx_violation" in c:
            cv, cp_ = np.asarray(c["cvx_violation"]), np.asarray(c["cvx_price"])
            kw = {"marker": MARKERS[i % len(MARKERS)], "color": style["color"], "linestyle": "none",
                  "markerfacecolor": "none"}
            ax_lin.plot(cv, cp_, label=f"{c['label']} (CVXPY)", **kw)
            ok = cv > 0
            ax_log.loglog(cv[ok], np.maximum(cp_[ok], 1e-300), **kw)
    ax_lin.axvline(0.0, color="0.5", linewidth=0.8)
    ax_lin.set_xlabel(r"violation $\beta m - \beta\,\delta_{ref} - \Delta r$")
    ax_lin.set_ylabel(r"price $J(\pi^*) - J(\pi_c)$")
    ax_lin.set_title("price of alignment (one pair)")
    ax_lin.legend(loc="upper left")
    ref = np.logspace(-3, 0.5, 20)
    ax_log.loglog(ref, 0.02 * ref ** 2, color="0.6", linestyle=(0, (1, 4)), linewidth=2.0,
                  label=r"$\propto$ violation$^2$ (reference)")
    ax_log.set_xlabel(r"violation $\beta m - \beta\,\delta_{ref} - \Delta r$ ($>0$)")
    ax_log.set_ylabel(r"price")
    ax_log.set_title("quadratic onset at the boundary")
    ax_log.legend(loc="lower right")
    return save(fig, fig_dir, name)
