"""``LibraryLossDPOTrainer(loss_name=X)`` trains as stock TRL 1.16 ``DPOTrainer(loss_type=X)`` for every
``DPOConfig.loss_type`` (issue 19, item 1): the losses of :mod:`dpo_rlhf_checks.pref_losses`, with TRL's
parameters (label_smoothing, discopop_tau, f_divergence_type, f_alpha_divergence_coef, loss_weights) and lengths.

Setting: a 1-layer, width-16 GPT-2 (tiny.build_causal_lm), 8 pairs in one batch, 3 optimizer steps of TRL's default
AdamW at lr 1e-2, beta 0.5, float32 on the CPU; the two trainers start from the same weights and see the same
batches (same seed). Per step, the logged loss; at the end, every weight.

Bounds (fixed before the runs): |loss_ours - loss_TRL| <= 1e-5 max(1, |loss_TRL|) per step, and
max |w_ours - w_TRL| <= 1e-4 over all weights. Both compute one formula in float32 with different primitives
(softplus vs logsigmoid, expm1 vs exp - 1, sigma(-z) vs 1 - sigma(z)): a few ulps (eps = 1.2e-7) per loss value,
and the weights then differ by rounding that three steps carry on. 1e-5 is ~80 ulp; 1e-4 is 1 % of one AdamW step
(lr 1e-2), where a planted error (an sft mean not token-weighted, a dropped label_smoothing) moves the loss by
>= 1e-3 and the weights by about a step (test_a_planted_error_is_caught).

The default run trains the 15 losses in 3 weighted combinations (each loss in one; TRL sums w_k mean(loss_k))
plus one f-divergence combination; the slow run trains each loss alone and each f-divergence with each loss
TRL allows it for.
"""

from __future__ import annotations

import pytest

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
import torch  # noqa: E402

from dpo_rlhf_checks import pref_losses as P  # noqa: E402
from dpo_rlhf_checks.integrations import tiny  # noqa: E402
from dpo_rlhf_checks.integrations.trl import TRL_LOSS_TYPES, LibraryLossDPOTrainer  # noqa: E402

N, STEPS, BETA = 8, 3, 0.5
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-4
F_DIV_LOSSES = [n for n in TRL_LOSS_TYPES if P.SPECS[n].f_divergence] + ["sft"]  # TRL's allowed set
# Settings a loss needs from the config: exo_pair refuses label_smoothing = 0 (TRL raises; see below); robust and aot
# get a nonzero one so that the parameter is exercised.
OWN = {"exo_pair": {"label_smoothing": 1e-3}, "robust": {"label_smoothing": 0.1}, "aot": {"label_smoothing": 0.1},
       "aot_unpaired": {"label_smoothing": 0.1}, "discopop": {"discopop_tau": 0.05}}
GROUPS = [  # each TRL loss in one group; label_smoothing is one config field, so exo_pair and robust are apart
    (["sigmoid", "hinge", "ipo", "exo_pair", "sft"], [1.0, 0.5, 0.25, 2.0, 0.3], {"label_smoothing": 1e-3}),
    (["nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired"], [0.5, 1.0, 0.7, 0.2, 1.5, 0.4],
     {"label_smoothing": 0.1}),
    (["apo_zero", "apo_down", "discopop", "sigmoid_norm"], [1.0, 0.6, 0.8, 1.3], {"discopop_tau": 0.05}),
]
F_DIVS = [("forward_kl", None), ("js_divergence", None), ("alpha_divergence", 0.5)]


def _config(tmp_path, tag, **kw):
    base = dict(output_dir=str(tmp_path / tag), max_steps=STEPS, per_device_train_batch_size=N, logging_steps=1,
                learning_rate=1e-2, beta=BETA, report_to="none", save_strategy="no", use_cpu=True, seed=0,
                max_length=64, disable_tqdm=True, dataset_num_proc=None, bf16=False)
    base.update(kw)
    return trl.DPOConfig(**base)


def _models():
    model, tok = tiny.build_causal_lm(seed=5, n_layer=1, n_embd=16)
    ref, _ = tiny.build_causal_lm(seed=0, n_layer=1, n_embd=16)
    return model, ref, tok


def _step_losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h and "step" in h]


def train_both(tmp_path, loss_types, **cfg):
    """Train stock TRL with ``loss_type=loss_types`` and ours with ``loss_name=loss_types``; return
    (max loss difference / max(1, |loss|), max weight difference, TRL's losses)."""
    ds = datasets.Dataset.from_list(tiny.preference_rows(N, seed=3))
    model, ref, tok = _models()
    theirs = trl.DPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, "trl", loss_type=loss_types, **cfg),
                            train_dataset=ds, processing_class=tok)
    theirs.train()
    model2, ref2, tok2 = _models()
    ours_cfg = _config(tmp_path, "ours", **({"loss_type": loss_types} if "loss_weights" in cfg else {}), **cfg)
    ours = LibraryLossDPOTrainer(model=model2, ref_model=ref2, args=ours_cfg, train_dataset=ds, processing_class=tok2,
                                 loss_name=loss_types if len(loss_types) > 1 else loss_types[0])
    ours.train()
    a, b = _step_losses(theirs), _step_losses(ours)
    assert len(a) == len(b) == STEPS
    loss_diff = max(abs(x - y) / max(1.0, abs(x)) for x, y in zip(a, b))
    with torch.no_grad():
        weight_diff = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), model2.parameters()))
        moved = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), _models()[0].parameters()))
    assert moved > 10 * WEIGHT_ATOL  # training moved the weights: the comparison can see a wrong gradient
    print(f"{'+'.join(loss_types)} {cfg}: max loss diff {loss_diff:.2e} (relative to max(1, |loss|)), "
          f"max weight diff {weight_diff:.2e}, losses {[round(x, 6) for x in a]}")
    return loss_diff, weight_diff, a


@pytest.mark.parametrize("loss_types,weights,cfg", GROUPS, ids=["group1", "group2", "group3"])
def test_weighted_combinations_train_as_trl(tmp_path, loss_types, weights, cfg):
    loss_diff, weight_diff, _ = train_both(tmp_path, loss_types, loss_weights=weights, **cfg)
    assert loss_diff <= LOSS_RTOL and weight_diff <= WEIGHT_ATOL


def test_f_divergence_combination_trains_as_trl(tmp_path):
    weights = [1.0, 0.5, 0.25, 2.0, 1.0, 0.8, 1.3, 0.3][: len(F_DIV_LOSSES)]
    loss_diff, weight_diff, _ = train_both(tmp_path, F_DIV_LOSSES, loss_weights=weights, label_smoothing=1e-3,
                                           f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.5)
    assert loss_diff <= LOSS_RTOL and weight_diff <= WEIGHT_ATOL


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", TRL_LOSS_TYPES)
def test_each_loss_alone_trains_as_trl(tmp_path, loss_type):
    loss_diff, weight_diff, _ = train_both(tmp_path, [loss_type], **OWN.get(loss_type, {}))
    assert loss_diff <= LOSS_RTOL and weight_diff <= WEIGHT_ATOL


@pytest.mark.slow
@pytest.mark.parametrize("f_div,coef", F_DIVS, ids=[f for f, _ in F_DIVS])
@pytest.mark.parametrize("loss_type", F_DIV_LOSSES)
def test_each_f_divergence_trains_as_trl(tmp_path, loss_type, f_div, coef):
    cfg = {**OWN.get(loss_type, {}), "f_divergence_type": f_div}
    if coef is not None:
        cfg["f_alpha_divergence_coef"] = coef
    loss_diff, weight_diff, _ = train_both(tmp_path, [loss_type], **cfg)
    assert loss_diff <= LOSS_RTOL and weight_diff <= WEIGHT_ATOL


def test_a_planted_error_is_caught(tmp_path, monkeypatch):
    """sft's batch value as a plain mean of the per-pair NLLs (not TRL's token-weighted mean): the lengths differ, so
    the comparison must see it."""
    real = LibraryLossDPOTrainer._trl_named_loss

    def plain_mean(self, pc, pr, rc, rr, completion_mask, shift_mask):
        n = shift_mask.chunk(2, dim=0)[0].sum(dim=1).to(pc.dtype)
        return (-pc / n).mean(), -pc / n

    monkeypatch.setattr(LibraryLossDPOTrainer, "_trl_named_loss", plain_mean)
    loss_diff, weight_diff, _ = train_both(tmp_path, ["sft"])
    assert loss_diff > 100 * LOSS_RTOL and weight_diff > WEIGHT_ATOL
    monkeypatch.setattr(LibraryLossDPOTrainer, "_trl_named_loss", real)


@pytest.mark.parametrize("loss_types,cfg,message", [
    (["exo_pair"], {}, "Label smoothing must be greater than 0.0 when using 'exo_pair' loss"),
    (["bco_pair"], {"f_divergence_type": "js_divergence"}, "`f_divergence_type='js_divergence'` is only supported"),
])
def test_settings_trl_refuses_are_refused_with_trls_error(tmp_path, loss_types, cfg, message):
    """What TRL itself cannot run (its __init__ raises) is refused with TRL's own error, for both trainers."""
    ds = datasets.Dataset.from_list(tiny.preference_rows(N, seed=3))
    model, ref, tok = _models()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        trl.DPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, "trl", loss_type=loss_types, **cfg),
                       train_dataset=ds, processing_class=tok)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, "ours", **cfg), train_dataset=ds,
                              processing_class=tok, loss_name=loss_types[0])


@pytest.mark.parametrize("kwargs,message", [
    ({"loss_name": "ipo", "loss_params": {"x": 1}}, "its parameters come from the DPOConfig"),
    ({"loss_name": "ipo", "logps": "mean"}, "logps must be 'sum'"),
    ({"loss_name": ["ipo", "cpo_clip"]}, "a list of losses takes TRL loss_type names only"),
    ({"loss_name": "cpo_clip", "args_kw": {"f_divergence_type": "js_divergence"}}, "with TRL's loss names only"),
    ({"loss_name": "ipo", "args_kw": {"loss_type": ["hinge"]}}, "loss_type=['hinge']"),
])
def test_bad_combinations_are_one_line_errors(tmp_path, kwargs, message):
    ds = datasets.Dataset.from_list(tiny.preference_rows(N, seed=3))
    model, ref, tok = _models()
    kwargs = dict(kwargs)
    args = _config(tmp_path, "ours", **kwargs.pop("args_kw", {}))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        LibraryLossDPOTrainer(model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=tok, **kwargs)


def test_ipo_is_trls_and_the_library_ipo_is_ipo_sum(tmp_path):
    """A TRL name means TRL's loss: loss_name="ipo" is TRL's per-token IPO; the library's summed IPO is "ipo_sum"."""
    ds = datasets.Dataset.from_list(tiny.preference_rows(N, seed=3))
    model, ref, tok = _models()
    trl_ipo = LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, "a"), train_dataset=ds,
                                    processing_class=tok, loss_name="ipo")
    summed = LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, "b"), train_dataset=ds,
                                   processing_class=tok, loss_name="ipo_sum")
    theirs = trl.DPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, "c", loss_type=["ipo"]),
                            train_dataset=ds, processing_class=tok)
    batch = next(iter(theirs.get_train_dataloader()))
    model.train()
    with torch.no_grad():
        a, b, c = (t.compute_loss(model, batch).item() for t in (trl_ipo, summed, theirs))
    assert trl_ipo.trl_loss_types == ["ipo"] and summed.trl_loss_types is None
    assert a == pytest.approx(c, rel=LOSS_RTOL)
    assert abs(b - c) > 1e-2 * abs(c)  # the summed form is another loss
