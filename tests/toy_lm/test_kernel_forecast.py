"""The pre-training forecast's pieces (toy_lm/kernel_forecast.py): AUC against hand counts, the scores' formulas."""

import math

import numpy as np
import pytest

from toy_lm.kernel_forecast import auc, delta_kernel, scores


def test_auc_against_hand_counts():
    # positives 3, 1 vs negatives 2, 0, 1: pairs (3>2, 3>0, 3>1, 1<2, 1>0, 1=1) -> (4 + 0.5) / 6
    assert auc(np.array([3, 2, 0, 1, 1.0]), np.array([True, False, False, True, False])) == 4.5 / 6
    assert auc(np.array([1.0, 2.0]), np.array([True, True])) is None
    assert auc(np.array([np.inf, 1.0]), np.array([True, False])) == 1.0


def test_delta_kernel_and_scores():
    j = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0], [1.0, 0.0]])  # P = 2: rows w1, w2, l1, l2
    kd = delta_kernel(j, 2)
    # delta rows: w1 - l1 = (1, -1), w2 - l2 = (-1, 2)
    np.testing.assert_allclose(kd, [[2.0, -3.0], [-3.0, 5.0]])
    s = scores(np.array([-1.0, -2.0]), 0.5, kd)
    h = np.array([0.5, 1.0])
    np.testing.assert_allclose(s["baseline"], h)
    np.testing.assert_allclose(s["kernel"], np.log(h + np.exp(h) - 1) - np.log([2.0, 5.0]))
    assert s["secondary"][0] == math.inf  # drift 2 - 3 < 0: pushed deeper
    np.testing.assert_allclose(s["secondary"][1], np.log(1.0 + math.e - 1) - np.log(2.0))


def _forecast_stage(seeds=(0, 1, 2)):
    """A stub stage: one optimizer, beta 1 and 2 (two ordered-DPO cells), seeds 0, 1, 2 on one Jacobian.

    Train pairs 1..5, delta_ref = -1, -2, -3, -4, +5 (pair 5 is ranked right: the forecast must leave it out; it ends
    in U and has the largest baseline, so keeping it would move every baseline AUC). The delta rows d_i = J_w - J_l:
    d1 = e1, d2 = -e1 + sqrt(99) e2, d3 = e3, d4 = 10 e4, d5 = e5, so K_delta's diagonal is 1, 100, 1, 100, 1 and the
    drifts (row sums) are 0 (pushed deeper: secondary +inf), 99, 1, 100, 1. In U at the end: seed 0 pairs 1, 3;
    seed 1 pairs 1, 2; seed 2 every pair (one class: its cells have no AUC and the seed drops out)."""
    from types import SimpleNamespace

    d = np.zeros((5, 5))
    d[0, 0], d[1, 0], d[1, 1], d[2, 2], d[3, 3], d[4, 4] = 1.0, -1.0, math.sqrt(99.0), 1.0, 10.0, 1.0
    rejected = np.full((5, 5), 0.5)
    jac = np.concatenate([d + rejected, rejected])  # (2P, n): chosen rows, then rejected rows
    cfg = SimpleNamespace(betas=[1.0, 2.0], optimizers=["sgd"], methods=("dpo",))
    end = {0: [True, False, True, False, True], 1: [True, True, False, False, True], 2: [True] * 5}
    keys = [(1.0, "sgd", "dpo"), (2.0, "sgd", "dpo")]
    # in_U (steps, P): the outcome is the last row's (the middle row is another seed's, to tell them apart)
    runs = [SimpleNamespace(seed=s, delta_ref=np.array([-1.0, -2.0, -3.0, -4.0, 5.0]), task=SimpleNamespace(n_train=5),
                            records={k: SimpleNamespace(in_U=np.array([[True] * 5, end[1 - s % 2], end[s]]))
                                     for k in keys})
            for s in seeds]
    return SimpleNamespace(cfg=cfg, runs_with=lambda key: [r for r in runs if key in r.records]), jac


def test_forecast_per_seed_aucs_and_gains_against_hand_counts():
    """Every AUC below is counted by hand (positives = in U at the end, among the misranked pairs 1..4).

    Scores: baseline H = beta i; g(H) = log(H + e^H - 1): g(1) = 1, g(2) = 2.127, g(3) = 3.095, g(4) = 4.053,
    g(6) = 6.012, g(8) = 8.002; kernel = g - log K_ii (log 100 = 4.605), secondary = g - log drift (+inf for pair 1).
      beta 1: kernel (1, -2.478, 3.095, -0.552), secondary (inf, -2.468, 3.095, -0.552)
      beta 2: kernel (2.127, -0.552, 6.012, 3.397), secondary (inf, -0.542, 6.012, 3.397)
    seed 0 (U = {1, 3}): baseline 1/4 in both cells; kernel 1 (beta 1), 3/4 (beta 2: 2.127 < 3.397); secondary 1, 1
      -> AUC baseline 0.25, kernel 0.875, gain kernel 0.625, gain secondary 0.75.
    seed 1 (U = {1, 2}): baseline 0; kernel 1/4 (beta 1: 1 > -0.552 only), 0 (beta 2); secondary 1/2, 1/2 (inf only)
      -> AUC baseline 0, kernel 0.125, gain kernel 0.125, gain secondary 0.5.
    The intervals: two seeds, t_{0.975, 1} = 12.706, half-width 12.706 sd / sqrt(2), sd = |difference| / sqrt(2)."""
    from toy_lm.kernel_forecast import forecast

    stage, jac = _forecast_stage()
    calls = []
    fc = forecast(stage, lambda seed: calls.append(seed) or jac)
    assert calls == [0, 1, 2]  # one Jacobian per seed, not per cell
    assert fc["seeds"] == [0, 1]  # seed 2 has one class only
    assert fc["cells"]["beta 1 sgd dpo"][0] == {"baseline": 0.25, "kernel": 1.0, "secondary": 1.0}
    assert fc["cells"]["beta 2 sgd dpo"][0] == {"baseline": 0.25, "kernel": 0.75, "secondary": 1.0}
    assert fc["cells"]["beta 1 sgd dpo"][1] == {"baseline": 0.0, "kernel": 0.25, "secondary": 0.5}
    assert fc["cells"]["beta 2 sgd dpo"][1] == {"baseline": 0.0, "kernel": 0.0, "secondary": 0.5}
    assert fc["cells"]["beta 2 sgd dpo"][2] == {"baseline": None, "kernel": None, "secondary": None}
    np.testing.assert_allclose(fc["per_seed_auc_baseline"], [0.25, 0.0], atol=1e-12)
    np.testing.assert_allclose(fc["per_seed_auc_kernel"], [0.875, 0.125], atol=1e-12)
    np.testing.assert_allclose(fc["per_seed_gain_kernel"], [0.625, 0.125], atol=1e-12)
    np.testing.assert_allclose(fc["per_seed_gain_secondary"], [0.75, 0.5], atol=1e-12)
    t = 12.706204736  # scipy.stats.t.ppf(0.975, 1)
    for name, (a, b) in (("gain_kernel", (0.625, 0.125)), ("gain_secondary", (0.75, 0.5))):
        half = t * (abs(a - b) / math.sqrt(2)) / math.sqrt(2)
        iv = fc[name]
        assert iv["mean"] == pytest.approx((a + b) / 2, abs=1e-12) and iv["n"] == 2
        assert iv["lo"] == pytest.approx((a + b) / 2 - half, rel=1e-8)
        assert iv["hi"] == pytest.approx((a + b) / 2 + half, rel=1e-8)
    assert fc["gain"] is False and fc["null_result"] is True  # lo = 0.375 - 3.177 < 0
    # one seed with both outcomes (seed 0; seed 2 has one class): no interval, and it says why
    one = forecast(_forecast_stage(seeds=(0, 2))[0], lambda seed: jac)
    assert one["seeds"] == [0] and one["gain"] is None and one["null_result"] is None and "gain_kernel" not in one
    assert one["reason"] == "fewer than two seeds with both outcomes"
