"""A planted two-pair case with a known answer: the measured quantities move as the theory says.

Two train prompts (plus two held out), corpus log-ratio |log f(y_w)/f(y_l)| = 2.5: the reference
favours y_w on one prompt and y_l on the other. BT label frequency fixed at q = 0.75, beta = 1, so
the population optimum is delta* = delta_ref + logit(0.75) (docs/theory.md §1-2): about -1.4 for the
violated pair (it stays in U) and +3.6 for the other.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from dpo_rlhf_checks.losses import critical_loss
from toy_lm.config import LMConfig
from toy_lm.predict import predict_cell
from toy_lm.task import make_task
from toy_lm.train import all_logps, train_preference, train_reference

Q = 0.75
BETA = 1.0


@pytest.fixture(scope="module")
def planted():
    torch.set_num_threads(1)
    cfg = LMConfig(n_train_prompts=2, n_heldout_prompts=2, violated_fraction=0.5, ref_log_ratio=(2.5, 2.5),
                   n_embd=16, sft_steps=150, steps=60, seeds=(0,), adam_lr=1e-3, betas=(BETA,), optimizers=("adam",),
                   methods=("dpo", "dpo_bt", "cpo_clip", "cpo_clip_bt"))
    task = make_task(cfg, 0)
    task = dataclasses.replace(task, q_hat=np.full(task.n_prompts, Q))
    dev = torch.device("cpu")
    ref = train_reference(task, cfg, 0, dev)
    lp = all_logps(ref, task, dev)
    runs = {m: train_preference(m, task, ref, lp, cfg, 0, dev, beta=BETA, optimizer="adam") for m in cfg.methods}
    delta_ref = (lp.sum[:2, 0] - lp.sum[:2, 1]).numpy()
    return cfg, task, lp, runs, delta_ref


def test_reference_realises_the_planted_preferences(planted):
    cfg, task, _, _, delta_ref = planted
    assert list(task.violated[:2]).count(True) == 1
    viol = int(np.flatnonzero(task.violated[:2])[0])
    # The reference prefers y_l on the violated prompt by more than dr / beta = 1: the assumption fails there.
    assert delta_ref[viol] < -1.5 and delta_ref[1 - viol] > 1.5
    assert np.all(np.abs(np.abs(delta_ref) - 2.5) < 0.8)


def test_bt_labels_converge_to_the_population_optimum_and_stay_in_U(planted):
    cfg, task, lp, runs, delta_ref = planted
    rec = runs["dpo_bt"]
    dstar = delta_ref + math.log(Q / (1 - Q)) / BETA
    np.testing.assert_allclose(rec.delta_sum[-1], dstar, atol=0.25)
    viol = int(np.flatnonzero(task.violated[:2])[0])
    assert rec.in_U[-1, viol] and not rec.in_U[-1, 1 - viol]
    # The loss fell below log 2 while the violated pair still prefers y_l: "learned" yet misaligned.
    assert rec.loss[-1, viol] < math.log(2) and rec.delta_sum[-1, viol] < 0
    # ... and the loss-to-delta bridge says so: its loss is above the critical level softplus(beta delta_ref).
    l_crit = critical_loss(torch.tensor(delta_ref[viol]), beta=BETA).item()
    assert rec.loss[-1, viol] > l_crit and not rec.certified[-1, viol]
    # The objective reaches the binary entropy of q (its minimum) within 0.01.
    entropy = -(Q * math.log(Q) + (1 - Q) * math.log(1 - Q))
    assert rec.objective[-1] == pytest.approx(entropy, abs=0.01)
    # The tabular theory, at the loss-matched time, predicts the same final deltas within 0.25.
    (cmp,) = predict_cell("dpo_bt", BETA, "adam", [(rec, lp, task)], cfg)
    np.testing.assert_allclose(cmp.pred_delta, rec.delta_sum[-1], atol=0.25)
    assert cmp.agreement == 1.0 and cmp.predicted_frac_in_U == cmp.observed_frac_in_U == 0.5
    assert not cmp.clock_saturated


def test_ordered_dpo_drives_both_pairs_up_and_the_loss_to_zero(planted):
    _, _, _, runs, delta_ref = planted
    rec = runs["dpo"]
    assert np.all(rec.delta_sum[-1] > delta_ref + 3.0)
    assert np.all(rec.delta_sum[-1] > 0) and rec.objective[-1] < 1e-2 < math.log(2) == pytest.approx(rec.objective[0])


def test_cpo_clip_ends_aligned_with_a_certificate(planted):
    cfg, _, _, runs, delta_ref = planted
    rec = runs["cpo_clip"]
    # Its target max(delta_ref, 0) makes the start loss on the violated pair softplus(-beta delta_ref) > log 2.
    assert rec.objective[0] > math.log(2)
    assert np.all(rec.delta_sum[-1] > cfg.margin) and rec.certified[-1].all()
    # At the reference the certificate holds exactly on the pair the reference already ranks right.
    assert list(rec.certified[0]) == list(delta_ref > 0)
