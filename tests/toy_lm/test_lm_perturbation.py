"""The LM verdicts under perturbations that should not matter (issue 16): torch threads 1 vs 2, a one-ulp
perturbation of every reference weight, and a disjoint seed set. The same verdict is required for both LM
claims. Slow: each variant runs the default stage with its sequential looks (minutes on one CPU thread).

    pytest -m slow tests/toy_lm/test_lm_perturbation.py
"""

import os

import pytest
import torch

from dpo_rlhf_checks.registry import get_claim
from dpo_rlhf_checks.report import run_claim
from dpo_rlhf_checks.result import CheckContext

pytestmark = pytest.mark.slow
IDS = ("lm-dpo-failure", "lm-cpo-fix")


def _verdicts(tmp_path, name, seed=0):
    from toy_lm import claims, stage

    stage._CACHE.clear()
    claims._FIGURES.clear()
    ctx = CheckContext(seed=seed, out_dir=tmp_path / name, lm_config="default", device="cpu")
    return {i: run_claim(get_claim(i), ctx)["verdict"] for i in IDS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _verdicts(tmp_path_factory.mktemp("lm_perturb"), "reference")


def test_two_threads_give_the_same_verdicts(reference, tmp_path, monkeypatch):
    monkeypatch.setitem(os.environ, "TOY_LM_THREADS", "2")
    assert _verdicts(tmp_path, "threads2") == reference


def test_a_one_ulp_perturbation_of_the_reference_gives_the_same_verdicts(reference, tmp_path, monkeypatch):
    from toy_lm import stage

    original = stage.train_reference_batched

    def nudged(*args, **kwargs):
        models = original(*args, **kwargs)
        with torch.no_grad():
            for model in models:
                for p in model.parameters():
                    p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))  # every weight up by one ulp
        return models

    monkeypatch.setattr(stage, "train_reference_batched", nudged)
    assert _verdicts(tmp_path, "ulp") == reference


def test_a_disjoint_seed_set_gives_the_same_verdicts(reference, tmp_path):
    # --seed 1000 offsets every seed: 1000..1008 against 0..8.
    assert _verdicts(tmp_path, "seeds1000", seed=1000) == reference
