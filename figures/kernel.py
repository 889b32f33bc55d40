"""Figures of the linearised-LM prediction (toy_lm/kernel.py, docs/theory.md §17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures.style import COLORS, MARKERS, new_figure, save


def seed_label(seeds) -> str:
    """'seeds 0-10' for a run of consecutive seeds, else 'seeds 0, 2, 5' (the full list overran the panel titles)."""
    seeds = sorted(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ", ".join(str(s) for s in seeds)


def _slope_line(stage, optimizer: str, variants, names: dict) -> str:
    """The slopes the claim compares, for the panel's title: the Tobit slope of log time in U on beta |delta_ref| of
    the LM (with its standard error) and of each prediction (toy_lm.kernel_claim.time_in_U_slopes)."""
    from toy_lm.kernel_claim import time_in_U_slopes

    fmt = (lambda v: "n/a" if v is None else f"{v:.2f}")
    parts = []
    for k, v in enumerate(variants):
        s = time_in_U_slopes(stage, optimizer, v)
        if k == 0:
            parts.append(f"slope LM {fmt(s['lm_slope'])} (se {fmt(s['lm_stderr'])})")
        parts.append(f"{names[v]} {fmt(s['pred_slope'])}")
    return ", ".join(parts)


def kernel_figures(stage, fig_dir: Path, prefix: str = "lm_kernel", variants=("linear",)) -> list[str]:
    """Predicted vs observed delta at the end per pair (tabular, linearised, re-linearised when computed) in the slow
    ordered DPO cells; the cross-pair influence matrix of one cell (first seed); time in U against beta |delta_ref|
    with the predictions. Returns the written paths."""
    from toy_lm.kernel_claim import _cmp, prediction

    cfg = stage.cfg
    paths: list[str] = []
    beta = max(cfg.betas)
    names = {"tabular": "tabular", "linear": "linearised", "relin": "re-linearised"}

    # 1. predicted vs observed delta at the end, per pair
    fig, axes = new_figure(ncols=len(cfg.optimizers), width=4.0, height=3.6)
    axes = np.atleast_1d(axes).ravel()
    for ax, opt in zip(axes, cfg.optimizers):
        key = (beta, opt, "dpo")
        runs = stage.runs_with(key)
        lo, hi = np.inf, -np.inf
        for k, name in enumerate(("tabular",) + tuple(variants)):
            xs, ys = [], []
            for r in runs:
                c = stage.comparisons.get(key, {}).get(r.seed) if name == "tabular" else _cmp(stage, key, r.seed, name)
                if c is None:
                    continue
                xs.append(c.obs_delta)
                ys.append(c.pred_delta)
            if not xs:
                continue
            x, y = np.concatenate(xs), np.concatenate(ys)
            lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
            ax.plot(x, y, ls="none", marker=MARKERS[k], ms=4, mfc="none", color=COLORS[k + 1], label=names[name])
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls=":", label="y = x")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel(r"LM $\delta$ at the end")
        ax.set_ylabel(r"predicted $\delta$ at the end")
        ax.set_title(f"DPO, beta {beta:g}, {opt}, {seed_label([r.seed for r in runs])}")
        ax.legend(fontsize=6)
    paths += save(fig, fig_dir, f"{prefix}_pred_vs_obs")

    # 2. cross-pair influence matrix of one cell (first seed), pairs sorted by delta_ref
    key = (beta, cfg.optimizers[0], "dpo")
    run = stage.runs_with(key)[0]
    pred = prediction(stage, key, run.seed, relin=False)
    order = np.argsort(run.delta_ref)
    infl = pred.linear_run.influence[np.ix_(order, order)]
    fig, ax = new_figure(width=4.6, height=4.0)
    vmax = float(np.abs(infl).max()) or 1.0
    im = ax.imshow(infl, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    fig.colorbar(im, ax=ax, label=r"change of $\delta_i$ carried by pair $j$")
    n_viol = int((run.delta_ref < 0).sum())
    ax.axhline(n_viol - 0.5, color="k", lw=0.8)
    ax.axvline(n_viol - 0.5, color="k", lw=0.8)
    ax.set_xlabel(r"pair j (sorted by $\delta_{ref}$; misranked first)")
    ax.set_ylabel("pair i")
    ax.set_title(f"influence, DPO beta {beta:g} {cfg.optimizers[0]}, seed {run.seed}")
    paths += save(fig, fig_dir, f"{prefix}_influence")

    # 3. time in U against beta |delta_ref|: LM and the predictions (censored at steps + 1)
    fig, axes = new_figure(ncols=len(cfg.optimizers), width=4.0, height=3.2)
    axes = np.atleast_1d(axes).ravel()
    horizon = cfg.steps + 1
    for ax, opt in zip(axes, cfg.optimizers):
        series = {"LM": ([], []), "tabular": ([], [])}
        for v in variants:
            series[names[v]] = ([], [])
        for b in cfg.betas:
            key = (b, opt, "dpo")
            for r in stage.runs_with(key):
                v_ = r.delta_ref < 0
                h = b * -r.delta_ref[v_]
                tab = stage.comparisons.get(key, {}).get(r.seed)
                lin = _cmp(stage, key, r.seed, "linear")
                series["LM"][0].append(h)
                series["LM"][1].append(np.minimum(lin.obs_cross[v_], horizon))
                if tab is not None:
                    series["tabular"][0].append(h)
                    series["tabular"][1].append(np.minimum(tab.pred_cross[v_], horizon))
                for v in variants:
                    c = _cmp(stage, key, r.seed, v)
                    series[names[v]][0].append(h)
                    series[names[v]][1].append(np.minimum(c.pred_cross[v_], horizon))
        for k, (name, (hs, ts)) in enumerate(series.items()):
            if hs:
                ax.plot(np.concatenate(hs), np.concatenate(ts), ls="none", marker=MARKERS[k], ms=4,
                        mfc="none" if k else COLORS[0], color=COLORS[k], label=name)
        ax.axhline(horizon, color="grey", lw=0.6, ls="--", label="censored (never left U)")
        ax.set_yscale("log")
        ax.set_xlabel(r"$\beta|\delta_{ref}|$ (misranked train pairs)")
        ax.set_ylabel("time in U (steps)")
        ax.set_title(f"ordered DPO, {opt}\n{_slope_line(stage, opt, variants, names)}", fontsize=8)
        ax.legend(fontsize=6)
    paths += save(fig, fig_dir, f"{prefix}_time_in_U")
    return paths
