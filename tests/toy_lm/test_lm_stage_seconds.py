"""The stage's seconds after a resume: the loaded units' recorded seconds go to training (reference and training
units) and to prediction (prediction units), and the total counts them all."""

import io
import time

import pytest

import toy_lm.stage as stage_mod
from toy_lm.config import from_dict

TINY = {"n_train_prompts": 4, "n_heldout_prompts": 2, "n_embd": 16, "sft_steps": 10, "steps": 5, "seeds": [0],
        "max_seeds": 1, "methods": ["dpo", "dpo_bt", "cpo_clip", "cpo_clip_bt"], "betas": [0.5]}


class _Loaded:  # what run_stage reads of a MapProgress: the seconds of the units it loaded, by kind
    def __init__(self, loaded):
        self.loaded = loaded


def test_a_resumed_stage_adds_the_loaded_units_seconds_where_they_belong(monkeypatch):
    """With every unit loaded (nothing computed: training and prediction stubbed out), units recorded as 3 s of
    reference, 5 s of training and 2 s of prediction make the stage's training 8 s, its prediction 2 s and its total
    10 s, each plus at most the wall time of the call (by hand: 3 + 5 = 8, 3 + 5 + 2 = 10). A difference in place of
    the sum gave -2 s of training in lm-map's header (a survivor of mutation: ref + train -> ref - train)."""
    for name in ("_train_seeds", "_predict", "refresh_summaries"):
        monkeypatch.setattr(stage_mod, name, lambda *a, **k: None)
    cfg = from_dict(TINY)
    t0 = time.perf_counter()
    st = stage_mod.run_stage(cfg, device="cpu", threads=None, stream=io.StringIO(),
                             progress=_Loaded({"ref": 3.0, "train": 5.0, "predict": 2.0}))
    wall = time.perf_counter() - t0
    assert 8.0 <= st.seconds_training <= 8.0 + wall, (st.seconds_training, wall)
    assert 2.0 <= st.seconds_prediction <= 2.0 + wall, (st.seconds_prediction, wall)
    assert 10.0 <= st.seconds <= 10.0 + wall, (st.seconds, wall)
    assert st.seconds_training + st.seconds_prediction == pytest.approx(st.seconds, abs=wall)
