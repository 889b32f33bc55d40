"""Seed-level values of the LM comparisons (toy_lm/decide.py) and the seeding of a run (toy_lm/train.py), on
hand-made records whose answers are known: no model is trained."""

from types import SimpleNamespace

import numpy as np
import pytest

from toy_lm.config import LMConfig
from toy_lm.decide import seed_value
from toy_lm.design import Spec
from toy_lm.train import seed_everything


def _stage(observed_delta_sum, predicted_delta_sum, method="cpo_clip", n_tok=4, margin=0.0):
    """A stage with one seed (7) and one cell: what seed_value reads, nothing more."""
    key = (1.0, "sgd", method)
    cfg = LMConfig(margin=margin)
    record = SimpleNamespace(delta_sum=np.asarray([observed_delta_sum], dtype=np.float64))
    task = SimpleNamespace(response_tokens=n_tok, split=lambda name: slice(None))
    run = SimpleNamespace(seed=7, records={key: record}, task=task)
    cmp = SimpleNamespace(clock_saturated=False, pred_delta=np.asarray(predicted_delta_sum, dtype=np.float64))
    return SimpleNamespace(cfg=cfg, runs=[run], comparisons={key: {7: cmp}}), key


@pytest.mark.parametrize("margin, expected_obs, expected_pred",
                         [(0.0, 1 - 3 / 5, 1 - 2 / 5), (0.5, 1 - 2 / 5, 1 - 1 / 5)])
def test_shortfalls_are_one_minus_the_fraction_reaching_the_margin(margin, expected_obs, expected_pred):
    # 5 pairs: observed delta >= m on 3 (m = 0) / 2 (m = 0.5), predicted on 2 / 1; a tie at m counts as reached
    stage, key = _stage([-1.0, 0.0, 0.5, 2.0, -0.2], [-3.0, -0.1, 0.25, 0.75, -1e-9], margin=margin)
    obs = seed_value(stage, Spec("s", key, "shortfall_vs_one", "at_most", 0.05), 7)
    pred = seed_value(stage, Spec("p", key, "pred_shortfall_vs_one", "at_most", 0.05), 7)
    assert obs == pytest.approx(expected_obs, abs=1e-12)
    assert pred == pytest.approx(expected_pred, abs=1e-12)
    # both are fractions: a shortfall of a fraction lies in [0, 1]
    assert 0.0 <= obs <= 1.0 and 0.0 <= pred <= 1.0


def test_prediction_saturated_clock_gives_no_value():
    stage, key = _stage([1.0], [1.0])
    stage.comparisons[key][7].clock_saturated = True
    assert seed_value(stage, Spec("p", key, "pred_shortfall_vs_one", "at_most", 0.05), 7) is None


def test_seed_everything_takes_every_seed_a_run_makes():
    # paper_checks.py takes --seed up to 2**32 - 1 and the LM stage adds its seed offsets to it, so a run's seed
    # can pass 2**32; numpy's legacy seeding is then the seed mod 2**32 (torch takes 64-bit seeds as they are)
    for seed in (5, 2**32 - 1 + 3, 2**32 + 5):
        seed_everything(seed)
        got = np.random.random(3)
        np.random.seed(seed % 2**32)
        assert np.array_equal(got, np.random.random(3))


def test_planned_seeds_are_consecutive_integers_after_the_configs():
    # the LM stage and the U-atlas's LM rows extend a run by the same seeds: the config's, then max + 1, ...
    from toy_lm.stage import LMStage, planned_seeds

    cfg = LMConfig(seeds=(0, 1, 2), max_seeds=7)
    assert planned_seeds(cfg) == [0, 1, 2, 3, 4, 5, 6]
    assert planned_seeds(cfg, 100) == [100, 101, 102, 103, 104, 105, 106]
    assert planned_seeds(LMConfig(seeds=(4, 9), max_seeds=4), 1) == [5, 10, 11, 12]
    assert all(type(s) is int for s in planned_seeds(cfg, 2**32 - 1))
    stage = LMStage(cfg=cfg, device="cpu", runs=[], seconds=0.0, threads=1, seed_offset=100)
    assert stage.planned_seeds == planned_seeds(cfg, 100)
