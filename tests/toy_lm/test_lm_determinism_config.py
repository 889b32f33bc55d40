"""Determinism (same seed, bitwise the same numbers on CPU), configuration errors, and the prediction clock."""

import json

import numpy as np
import pytest
import torch

from toy_lm.config import METHODS, LMConfig, from_dict, load_config
from toy_lm.predict import predict
from toy_lm.task import make_task
from toy_lm.train import RunRecord, all_logps, train_preference, train_reference

TINY = dict(n_train_prompts=4, n_heldout_prompts=2, n_embd=16, sft_steps=20, steps=5, seeds=(0,))


def _run(seed):
    torch.set_num_threads(1)
    cfg = LMConfig(**TINY)
    dev = torch.device("cpu")
    task = make_task(cfg, seed)
    ref = train_reference(task, cfg, seed, dev)
    lp = all_logps(ref, task, dev)
    return lp, train_preference("dpo", task, ref, lp, cfg, seed, dev)


def test_same_seed_gives_bitwise_identical_numbers():
    (lp1, r1), (lp2, r2) = _run(3), _run(3)
    assert torch.equal(lp1.sum, lp2.sum) and torch.equal(lp1.mean, lp2.mean)
    for field in ("objective", "loss", "delta_sum", "delta_mean", "chosen_logp", "heldout_delta_sum"):
        assert np.array_equal(getattr(r1, field), getattr(r2, field)), field
    _, r3 = _run(4)
    assert not np.array_equal(r1.delta_sum[0], r3.delta_sum[0])


def test_task_is_a_function_of_the_seed_and_follows_the_design():
    cfg = LMConfig()
    a, b = make_task(cfg, 11), make_task(cfg, 11)
    assert torch.equal(a.tokens, b.tokens) and np.array_equal(a.q_hat, b.q_hat)
    assert a.violated[: a.n_train].mean() == pytest.approx(cfg.violated_fraction)
    np.testing.assert_allclose(a.corpus_freq.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.log(a.corpus_freq[:, 0] / a.corpus_freq[:, 1]), a.designed_log_ratio, atol=1e-9)
    assert np.all((a.designed_log_ratio < 0) == a.violated)
    np.testing.assert_allclose(a.dr, cfg.reward_scale)  # y_w has exactly one more good token
    assert a.response_mask.sum(dim=2).eq(cfg.response_len + 1).all()


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="unknown LM config keys"):
        from_dict({"beta": 0.5, "betta": 1})
    with pytest.raises(ValueError, match="beta must be"):
        LMConfig(beta=0.0)
    with pytest.raises(ValueError, match="methods must be"):
        LMConfig(methods=("dpo", "simpo"))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        LMConfig(optimizer="lion")
    with pytest.raises(ValueError, match="violated_fraction"):
        LMConfig(violated_fraction=1.5)
    with pytest.raises(ValueError, match="neither"):
        load_config("medium")
    path = tmp_path / "lm.json"
    path.write_text(json.dumps({"beta": 0.5, "seeds": [4, 5, 6], "methods": ["dpo", "dpo_bt"]}))
    cfg = load_config(str(path))
    assert cfg.beta == 0.5 and cfg.seeds == (4, 5, 6) and cfg.methods == ("dpo", "dpo_bt")
    assert load_config("default") == LMConfig() and load_config("large").n_embd > LMConfig().n_embd
    assert LMConfig().methods == METHODS


def test_prediction_of_a_tabular_run_is_exact():
    # A "run" whose deltas are the tabular trajectory itself (one LM step = one tabular step): the clock maps
    # step t to t, and predicted equals observed for every pair.
    from toy_bandits.dynamics import train_tabular

    cfg = LMConfig(**{**TINY, "tabular_steps": 40, "steps": 40})
    task = make_task(cfg, 0)
    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(task.n_prompts, cfg.n_candidates, dtype=torch.float64) * 1.5, dim=1)
    from toy_lm.model import SeqLogps

    lp = SeqLogps(logp.float(), logp.float() / task.response_tokens, torch.full(logp.shape, task.response_tokens))
    pi = torch.softmax(lp.sum[: task.n_train].double(), dim=1).numpy()
    pairs = np.tile(np.array([[[0, 1]]]), (task.n_train, 1, 1))
    traj = train_tabular(pi, pairs, "dpo", beta=cfg.beta, steps=40, lr=cfg.tabular_lr)
    delta = traj.delta[:, :, 0]
    rec = RunRecord(method="dpo", seed=0, objective=traj.loss[:, :, 0].mean(axis=1), objective_pairs=traj.loss[:, :, 0],
                    loss=traj.loss[:, :, 0], delta_sum=delta, delta_mean=delta / task.response_tokens,
                    chosen_logp=np.zeros_like(delta), in_U=traj.in_U[:, :, 0], certified=traj.certified[:, :, 0],
                    target=traj.delta_ref[:, 0], heldout_steps=np.array([0]), heldout_delta_sum=np.zeros((1, 2)),
                    heldout_delta_mean=np.zeros((1, 2)))
    cmp = predict("dpo", rec, lp, task, cfg)
    np.testing.assert_array_equal(cmp.clock, np.arange(41))
    np.testing.assert_allclose(cmp.pred_delta, cmp.obs_delta, atol=1e-6)
    assert cmp.agreement == 1.0 and not cmp.clock_saturated
    np.testing.assert_array_equal(cmp.pred_cross, cmp.obs_cross)
