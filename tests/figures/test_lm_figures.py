"""figures.lm on a small synthetic LM stage (issue 17 item 16): markers, legends and ticks a reader can tell apart.

The stage is a stand-in with the fields the figures read; ``save`` is wrapped so each figure is inspected before
it is closed."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

import figures.lm as FL

METHODS = ("dpo", "dpo_bt", "cpo_clip", "cpo_clip_bt", "ipo")
OPTIMIZERS = ("sgd", "adam")
BETAS = (0.1, 0.3, 1.0, 3.0)


def fake_stage():
    rng = np.random.default_rng(0)
    regimes = []
    cells = list(itertools.product(METHODS, OPTIMIZERS, enumerate(BETAS)))
    # (loss, fraction in U) on a jittered lattice over the whole plot, as a full LM map fills it: no corner is free
    lattice = [(10 ** (-3 + 3 * (i + rng.uniform(0.2, 0.8)) / 8), 0.5 * (j + rng.uniform(0.2, 0.8)) / 5)
               for i in range(8) for j in range(5)]
    for (m, opt, (bi, beta)), (loss, frac) in zip(cells, lattice):
        regimes.append({"method": m, "optimizer": opt, "beta_delta_ref_scale": 0.3 * 3 ** bi,
                        "predicted_frac_in_U": frac, "observed_frac_in_U": frac,  # predicted == observed
                        "compared": bi != 3, "mean_final_loss": loss})
    n = 40
    h = rng.uniform(0.1, 5, n)
    level = rng.integers(0, len(BETAS), n)
    censored = rng.random(n) < 0.3
    law = {opt: {"points": {"h": h.tolist(), "t_lm": (30 * h).tolist(), "censored": censored.tolist(),
                            "t_theory": (h ** 1.1).tolist(), "beta_level": level.tolist()},
                 "fitted_slope": 1.0, "stderr": 0.1, "theory_slope": 1.1} for opt in OPTIMIZERS}
    delta_ref = rng.normal(0, 2, 6)
    records = {(b, o, m): SimpleNamespace(delta_sum=rng.normal(0, 1, (20, 6)))
               for b, o, m in itertools.product(BETAS, OPTIMIZERS, METHODS)}
    cfg = SimpleNamespace(methods=METHODS, optimizers=OPTIMIZERS, betas=BETAS, steps=200)
    return SimpleNamespace(cfg=cfg, regimes=regimes, time_in_U_law=law,
                           runs=[SimpleNamespace(delta_ref=delta_ref, records=records)])


@pytest.fixture(scope="module")
def figs(tmp_path_factory):
    kept = {}
    real = FL.save

    def keep(fig, fig_dir, name):
        fig.canvas.draw()
        kept[name] = fig
        return real(fig, fig_dir, name)

    FL.save = keep
    try:
        FL.lm_figures(fake_stage(), tmp_path_factory.mktemp("lm_figs"), prefix="lm")
    finally:
        FL.save = real
    return kept


def test_time_in_U_law_censored_markers_differ_from_the_beta_markers_and_theory_has_a_legend(figs):
    fig = figs["lm_time_in_U_law"]
    for ax in fig.axes:
        level = [line.get_marker() for line in ax.lines if str(line.get_label()).startswith("LM, ")]
        censored = [line for line in ax.lines if line.get_label() == "still in U at the end (censored)"]
        assert len(level) == len(BETAS) and len(set(level)) == len(BETAS)
        assert censored and censored[0].get_marker() == "^" and "^" not in level and "v" not in level
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "tabular theory (dashed; shifted onto the LM points)" in texts, texts
        assert "still in U at the end (censored)" in texts


def test_loss_vs_frac_in_U_legend_covers_no_marker(figs):
    fig = figs["lm_loss_vs_frac_in_U"]
    ax = fig.axes[0]
    box = ax.get_legend().get_window_extent()
    points = np.concatenate([ax.transData.transform(line.get_xydata()) for line in ax.lines if len(line.get_xydata())
                             and line.get_linestyle() in ("None", "none", "")])
    assert len(points) == len(METHODS) * len(OPTIMIZERS) * len(BETAS)
    inside = [(x, y) for x, y in points if box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1]
    assert not inside, f"{len(inside)} markers under the legend"


def test_regime_map_ticks_are_plain_and_predictions_are_not_hidden(figs):
    fig = figs["lm_regime_map"]
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_xticklabels(minor=True) + ax.get_xticklabels() if t.get_text()]
        assert labels and not any("times" in t or "^" in t for t in labels), labels
        predicted = [line for line in ax.lines if str(line.get_label()).endswith("predicted")]
        observed = [line for line in ax.lines if str(line.get_label()).endswith("observed")]
        assert predicted and len(predicted) == len(observed)
        for p, o in zip(predicted, observed):
            # drawn after (on top of) the observed line, larger and open: visible where the two coincide
            assert p.get_zorder() > o.get_zorder() and p.get_markersize() > o.get_markersize()
            assert p.get_markerfacecolor() == "none"
