"""The pre-training forecast's pieces (toy_lm/kernel_forecast.py): AUC against hand counts, the scores' formulas."""

import math

import numpy as np

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
