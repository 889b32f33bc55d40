"""pref_losses against TRL 1.16's own code (peer tests), its GPO data (f, t_f, convexity) against the losses,
its input checks, and the places where TRL's code departs from the formula (findings).

Peer tests CALL TRL: ``DPOTrainer._compute_loss`` (where TRL 1.16 computes every DPOConfig.loss_type, inline)
run on a stand-in ``self`` and a stand-in model that returns the test's per-token log-probabilities, with
``precompute_ref_log_probs`` so the reference sums come from the batch; and ``CPOTrainer.cpo_loss``. No
formula of TRL is copied here.

Tolerances (|ours - TRL| <= atol + rtol |TRL|, on losses and on the gradients w.r.t. the per-token
log-probabilities): float64 atol = rtol = 1e-12; float32 atol = rtol = 2e-5. Both sides evaluate the same
formula with different but stable primitives (logaddexp vs logsigmoid, sigmoid(-z) vs 1 - sigmoid(z),
expm1(-r) vs 1 - exp(-r), exp(-t - softplus(-t/tau)) vs exp(-t) sigmoid(t/tau)): each loses a few ulps, and the
subtractions (1 - exp(-r), a difference of two scores, (x - 1/(2 beta))^2 at beta = 0.1) amplify that by at
most ~e^|r| * beta-scale ~ 100 on these inputs (|r| <= 4). 1e-12 is ~5e3 ulp in float64; 2e-5 is ~170 ulp in
float32. A planted sign error moves the losses by O(0.1..10), far above both (test_peer_check_catches_a_sign_error).
"""

from __future__ import annotations

import collections
import importlib
import math
import re
import types

import pytest
import torch

from dpo_rlhf_checks import pref_losses as P

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
trl_cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")

TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-5, 2e-5)}
B, T = 6, 8


# ----------------------------------------------------------------------------------------------
# data


def make_batch(dtype, seed=0):
    """Per-token policy log-probs (2B, T) (chosen rows, then rejected), their masks, the reference sums.

    Lengths 1..T; reference per-token in [-3, -0.05]; policy = reference + U(-0.5, 0.5), kept < 0; one pair
    with a strongly negative delta_ref. Masked positions are 0 (TRL's fused head gives 0 where label = -100).
    """
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, T + 1, (2 * B,), generator=g)
    mask = (torch.arange(T)[None] < n[:, None]).to(torch.float64)  # (2B, T)
    ref_pt = -(0.05 + 2.95 * torch.rand(2 * B, T, generator=g, dtype=torch.float64))
    ref_pt[B - 1], ref_pt[2 * B - 1] = -3.0, -0.05  # pair B-1: chosen unlikely, rejected likely: delta_ref << 0
    pol_pt = torch.clamp(ref_pt + (torch.rand(2 * B, T, generator=g, dtype=torch.float64) - 0.5), max=-1e-3)
    ref = (ref_pt * mask).sum(1)
    pt = (pol_pt * mask).to(dtype)
    return pt, mask.to(dtype), ref[:B].to(dtype), ref[B:].to(dtype)


# ----------------------------------------------------------------------------------------------
# TRL's own code path


class _Model:
    training = True

    def __init__(self, per_token):
        self.per_token = per_token

    def __call__(self, **kwargs):
        z = torch.zeros_like(self.per_token.detach())
        return types.SimpleNamespace(log_probs=self.per_token, entropy=z, mean_logits=z, is_top1=z.bool())


def trl_dpo_loss(pt, mask, rc, rr, *, loss_type, beta, default_dtype_from_data=True, **cfg):
    """TRL 1.16 ``DPOTrainer._compute_loss`` on these tensors: the batch-mean loss it returns."""
    n = pt.shape[0]
    completion_mask = torch.cat([torch.zeros(n, 1, dtype=mask.dtype), mask], dim=1)  # position 0: the prompt
    model = _Model(pt)
    acc = types.SimpleNamespace(device=pt.device, gather_for_metrics=lambda x: x, gather=lambda x: x)
    trainer = types.SimpleNamespace(
        model=model, accelerator=acc, aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type=cfg.get("f_divergence_type", "reverse_kl"),
        f_alpha_divergence_coef=cfg.get("f_alpha_divergence_coef", 0.5), loss_types=[loss_type],
        loss_weights=[1.0], beta=beta, label_smoothing=cfg.get("label_smoothing", 0.0),
        args=types.SimpleNamespace(discopop_tau=cfg.get("discopop_tau", 0.05)), use_weighting=False,
        _metrics={"train": collections.defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(n, pt.shape[1] + 1, dtype=torch.long),
              "attention_mask": torch.ones(n, pt.shape[1] + 1, dtype=torch.long),
              "completion_mask": completion_mask, "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    # TRL's exo_pair builds its epsilon with torch.tensor(label_smoothing), which takes torch's default dtype:
    # the float64 peer test sets the default to the data's dtype so that constant is float64 too
    # (test_trl_exo_pair_constants_are_float32 shows the difference).
    old = torch.get_default_dtype()
    torch.set_default_dtype(pt.dtype if default_dtype_from_data else old)
    try:
        return trl_dpo.DPOTrainer._compute_loss(trainer, model, inputs, False)
    finally:
        torch.set_default_dtype(old)


def trl_cpo_losses(pc, pr, *, loss_type, beta, label_smoothing=0.0, simpo_gamma=0.5, alpha=0.0):
    """TRL 1.16 ``CPOTrainer.cpo_loss`` on these tensors: per-example losses and rewards."""
    if loss_type == "alphapo":  # CPOConfig.__post_init__ maps it to simpo
        loss_type = "simpo"
    trainer = types.SimpleNamespace(alpha=alpha, beta=beta, label_smoothing=label_smoothing, loss_type=loss_type,
                                    simpo_gamma=simpo_gamma, accelerator=types.SimpleNamespace(device=pc.device))
    return trl_cpo.CPOTrainer.cpo_loss(trainer, pc, pr)


# ----------------------------------------------------------------------------------------------
# ours on the same tensors


def ours(name, pt, mask, rc, rr, *, beta, loss_fn=None, **cfg):
    spec = P.SPECS[name]
    pc, pr = pt[:B].sum(1), pt[B:].sum(1)
    kw = {k: cfg[k] for k in spec.params if k in cfg}
    if "chosen_lengths" in spec.lengths:
        kw["chosen_lengths"] = mask[:B].sum(1)
    if "rejected_lengths" in spec.lengths:
        kw["rejected_lengths"] = mask[B:].sum(1)
    if cfg.get("f_divergence_type", "reverse_kl") != "reverse_kl":
        kw["f_divergence_type"] = cfg["f_divergence_type"]
        kw["f_alpha_divergence_coef"] = cfg.get("f_alpha_divergence_coef")
    return (loss_fn or spec.loss)(pc, pr, rc, rr, beta=beta, **kw).losses


def batch_value(name, losses, mask):
    if name == "sft":  # TRL's sft is token-weighted over the batch (sft_loss docstring)
        n = mask[:B].sum(1)
        return (losses * n).sum() / n.sum()
    return losses.mean()


DPO_CASES = [
    ("sigmoid", {}), ("hinge", {}), ("ipo", {}), ("exo_pair", {"label_smoothing": 1e-3}),
    ("exo_pair", {"label_smoothing": 0.2}), ("nca_pair", {}), ("robust", {"label_smoothing": 0.0}),
    ("robust", {"label_smoothing": 0.1}), ("bco_pair", {}), ("sppo_hard", {}), ("aot", {"label_smoothing": 0.0}),
    ("aot", {"label_smoothing": 0.1}), ("aot_unpaired", {"label_smoothing": 0.1}), ("apo_zero", {}),
    ("apo_down", {}), ("discopop", {"discopop_tau": 0.05}), ("discopop", {"discopop_tau": 1.0}), ("sft", {}),
    ("sigmoid_norm", {}),
] + [
    (name, dict(params, f_divergence_type=fd, **({"f_alpha_divergence_coef": a} if a is not None else {})))
    for name, params in [("sigmoid", {}), ("sigmoid_norm", {}), ("hinge", {}), ("ipo", {}),
                         ("exo_pair", {"label_smoothing": 0.1}), ("robust", {"label_smoothing": 0.1}),
                         ("discopop", {"discopop_tau": 0.05})]
    for fd, a in [("forward_kl", None), ("js_divergence", None), ("alpha_divergence", 0.5),
                  ("alpha_divergence", 0.3)]
]


def _ids(case):
    name, cfg = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in cfg.items())


def peer_errors(name, cfg, dtype, beta, loss_fn=None):
    """Max |ours - TRL| / (atol + rtol |TRL|) over: per-example losses (TRL run on one pair at a time; for
    batch-coupled losses the batch only), the batch loss, and the gradient w.r.t. the per-token log-probs;
    also the max absolute errors. A ratio <= 1 passes."""
    atol, rtol = TOL[dtype]
    pt, mask, rc, rr = make_batch(dtype)
    ratios, abs_err = [], []

    def cmp(a, b):
        a, b = a.detach(), b.detach()
        d = (a - b).abs()
        abs_err.append(float(d.max()))
        ratios.append(float((d / (atol + rtol * b.abs())).max()))

    if P.SPECS[name].kind != "batch-coupled":
        mine = ours(name, pt, mask, rc, rr, beta=beta, loss_fn=loss_fn, **cfg)
        for i in range(B):
            rows = torch.tensor([i, B + i])
            theirs = trl_dpo_loss(pt[rows], mask[rows], rc[i:i + 1], rr[i:i + 1], loss_type=name, beta=beta, **cfg)
            cmp(mine[i], theirs)
    leaf_a = pt.clone().requires_grad_(True)
    leaf_b = pt.clone().requires_grad_(True)
    theirs = trl_dpo_loss(leaf_a, mask, rc, rr, loss_type=name, beta=beta, **cfg)
    mine = batch_value(name, ours(name, leaf_b, mask, rc, rr, beta=beta, loss_fn=loss_fn, **cfg), mask)
    cmp(mine, theirs)
    theirs.backward()
    mine.backward()
    # on completion tokens only: elsewhere TRL's head gives a constant 0 (label -100), and sft's masked mean sends
    # no gradient there while a sum does
    cmp(leaf_b.grad * mask, leaf_a.grad * mask)
    return max(ratios), max(abs_err)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("beta", [0.1, 1.0])
@pytest.mark.parametrize("case", DPO_CASES, ids=_ids)
def test_dpo_losses_equal_trl(case, beta, dtype):
    name, cfg = case
    if dtype == torch.float64 and cfg.get("f_divergence_type") == "alpha_divergence":
        pytest.skip("TRL 1.16's alpha_divergence fails on float64 (test_trl_alpha_divergence_rejects_float64)")
    ratio, err = peer_errors(name, cfg, dtype, beta)
    assert ratio <= 1.0, f"{name} {cfg}: max |ours - TRL| = {err:.3g} exceeds the {dtype} tolerance"


CPO_CASES = [
    ("sigmoid", {}, "sums"), ("sigmoid", {"label_smoothing": 0.1}, "sums"), ("sigmoid", {"alpha": 0.25}, "means"),
    ("hinge", {}, "sums"), ("hinge", {"alpha": -0.5}, "means"), ("ipo", {}, "means"),
    ("simpo", {"simpo_gamma": 0.5}, "means"), ("simpo", {"simpo_gamma": 1.0, "label_smoothing": 0.1}, "means"),
    ("alphapo", {"simpo_gamma": 0.5, "alpha": 0.25}, "means"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("beta", [0.1, 2.0])
@pytest.mark.parametrize("case", CPO_CASES, ids=lambda c: c[0] + "-" + "-".join(f"{k}={v}" for k, v in c[1].items()))
def test_cpo_losses_equal_trl(case, beta, dtype):
    name, cfg, logps = case
    atol, rtol = TOL[dtype]
    pt, mask, _, _ = make_batch(dtype, seed=1)
    x = pt.sum(1) if logps == "sums" else pt.sum(1) / mask.sum(1)  # TRL: sums, or per-token means
    pc, pr = x[:B], x[B:]
    losses, cr, rr_ = trl_cpo_losses(pc, pr, loss_type=name, beta=beta, **cfg)
    kw = {k: v for k, v in cfg.items() if k in P.SPECS["cpo_" + name].params}
    out = P.get_pref_loss("cpo_" + name)(pc, pr, beta=beta, **kw)
    for mine, theirs in ((out.losses, losses), (out.chosen_rewards, cr), (out.rejected_rewards, rr_)):
        assert torch.allclose(mine, theirs, atol=atol, rtol=rtol), (name, cfg, float((mine - theirs).abs().max()))


def test_peer_check_catches_a_sign_error():
    """Mutation: sigmoid with the sign of h flipped (chosen and rejected swapped) must fail the peer check."""
    def flipped(pc, pr, rc, rr, **kw):
        return P.sigmoid_loss(pr, pc, rr, rc, **kw)
    for dtype in (torch.float64, torch.float32):
        ratio, err = peer_errors("sigmoid", {}, dtype, 1.0, loss_fn=flipped)
        assert ratio > 1e3 and err > 0.1, (dtype, ratio, err)
    ratio, _ = peer_errors("sigmoid", {}, torch.float32, 1.0)
    assert ratio <= 1.0


# ----------------------------------------------------------------------------------------------
# GPO data against the losses


GPO_PARAMS = {"exo_pair": {"label_smoothing": 0.1}, "robust": {"label_smoothing": 0.1},
              "discopop": {"discopop_tau": 0.05}, "cpo_sigmoid": {"label_smoothing": 0.1},
              "cpo_simpo": {"simpo_gamma": 0.5}, "cpo_alphapo": {"simpo_gamma": 0.5, "alpha": 0.0}}


@pytest.mark.parametrize("name", [n for n, s in P.SPECS.items() if s.kind == "gpo"])
def test_loss_is_f_of_beta_h(name):
    """l = f(beta h), h computed here independently (reverse_kl; per-token for ipo / sigmoid_norm)."""
    beta = 0.7
    pt, mask, rc, rr = make_batch(torch.float64, seed=2)
    pc, pr = pt[:B].sum(1), pt[B:].sum(1)
    params = GPO_PARAMS.get(name, {})
    form = P.gpo_form(name, beta=beta, **params)
    spec = P.SPECS[name]
    if spec.trainer == "CPOTrainer":
        h, out = pc - pr, spec.loss(pc, pr, beta=beta, **params)
    else:
        nw, nl = mask[:B].sum(1), mask[B:].sum(1)
        lengths = {"chosen_lengths": nw, "rejected_lengths": nl} if spec.lengths else {}
        h = (pc - rc) / nw - (pr - rr) / nl if spec.lengths else (pc - rc) - (pr - rr)
        out = spec.loss(pc, pr, rc, rr, beta=beta, **params, **lengths)
    assert torch.allclose(out.losses, form.f(beta * h), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", [n for n, s in P.SPECS.items() if s.kind == "gpo"])
def test_t_f_and_convexity(name):
    """t_f is the (smallest) minimiser of f, or f decreases on the whole grid when t_f is None; flat and convex
    flags agree with f on a grid t in [-30, 60] (float64)."""
    form = P.gpo_form(name, beta=0.5, **GPO_PARAMS.get(name, {}))
    t = torch.linspace(-30, 60, 90001, dtype=torch.float64)
    f = form.f(t)
    assert torch.isfinite(f).all()
    d1 = f[1:] - f[:-1]
    if form.t_f is None:
        # decreasing to its infimum at +inf: everywhere, or (non-convex f) to the right of its last local maximum
        start = 0 if not form.local_minima else int(torch.argmax(f[t > form.local_minima[-1]])) + int(
            (t <= form.local_minima[-1]).sum())
        assert (d1[start:] < 0).all(), name
        assert (d1[:start] > 0).any() == bool(form.local_minima), name
    else:
        tf = torch.tensor([form.t_f], dtype=torch.float64)
        ftf = form.f(tf)
        assert (f >= ftf - 1e-12).all(), name  # a global minimum
        left = form.f(tf - 1e-3)
        assert left > ftf + 1e-9, name  # nothing to its left does as well: the smallest minimiser
        right = form.f(tf + 1e-3)
        assert (abs(float(right - ftf)) < 1e-15) == form.flat, name
    for tm in form.local_minima:  # each a strict local minimum with f' = 0
        x = torch.tensor([tm], dtype=torch.float64, requires_grad=True)
        form.f(x).sum().backward()
        assert abs(float(x.grad)) < 1e-9 and form.f(x.detach() - 1e-3) > form.f(x.detach()) < form.f(
            x.detach() + 1e-3), (name, tm)
    d2 = f[2:] - 2 * f[1:-1] + f[:-2]
    assert bool((d2 >= -1e-12).all()) == form.convex, (name, float(d2.min()))


def test_gpo_form_kinds():
    for name, spec in P.SPECS.items():
        form = P.gpo_form(name, beta=0.5, **GPO_PARAMS.get(name, {"label_smoothing": 0.1} if "label_smoothing" in
                                                             spec.params else {}))
        assert (form is not None) == (spec.kind == "gpo"), name
        assert (spec.pinned is not None) == (spec.kind == "absolute"), name
    assert {n for n, s in P.SPECS.items() if s.kind == "batch-coupled"} == {"aot", "aot_unpaired"}
    assert {n for n, s in P.SPECS.items() if s.kind == "absolute"} == {
        "nca_pair", "bco_pair", "sppo_hard", "apo_zero", "apo_down", "sft"}
    # every TRL 1.16 DPOConfig.loss_type is here (read from the installed config's help text), and the
    # f-divergence flags are TRL's list less sft (on which the f-divergence has no effect)
    fields = trl_dpo.DPOConfig.__dataclass_fields__
    trl_names = set(re.findall(r"`'(\w+)'`", fields["loss_type"].metadata["help"].split("If multiple")[0]))
    assert len(trl_names) == 15 and trl_names == {n for n, s in P.SPECS.items() if s.trainer == "DPOTrainer"}
    f_div = set(re.findall(r"`'(\w+)'`", fields["f_divergence_type"].metadata["help"]))
    assert f_div - {"sft"} == {n for n, s in P.SPECS.items() if s.f_divergence}
    assert set(re.findall(r"`(\w+)`", fields["f_divergence_type"].metadata["help"].split("Only")[0])) == set(
        P.F_DIVERGENCES)
    # and every CPOConfig.loss_type choice
    cfg = importlib.import_module("trl.experimental.cpo.cpo_config").CPOConfig
    choices = cfg.__dataclass_fields__["loss_type"].metadata["choices"]
    assert {"cpo_" + c for c in choices} == {n for n, s in P.SPECS.items() if s.trainer == "CPOTrainer"}


def test_discopop_default_tau_has_a_local_minimum_below_zero():
    """DiscoPOP at tau = 0.05: f'(0) = 1/(4 tau) - 3/4 - log(2)/(4 tau) > 0 (differentiating Eq. 5 by hand at
    t = 0: sigma = 1/2, sigma' = 1/4), so descent from the reference moves h below 0, into a local minimum
    whose location a plain grid scan confirms; at tau = 1 the same f is monotone."""
    tau = 0.05
    form = P.gpo_form("discopop", beta=1.0, discopop_tau=tau)
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    form.f(x).sum().backward()
    assert math.isclose(float(x.grad), 1 / (4 * tau) - 0.75 - math.log(2) / (4 * tau), rel_tol=1e-12)
    assert float(x.grad) > 0.7
    t = torch.linspace(-1, 0, 100001, dtype=torch.float64)
    t_grid = float(t[torch.argmin(form.f(t))])
    assert len(form.local_minima) == 1 and abs(form.local_minima[0] - t_grid) < 1e-4 and t_grid < -0.1
    assert not form.convex
    assert P.gpo_form("discopop", beta=1.0, discopop_tau=1.0).local_minima == ()


def test_sppo_hard_pins_h_at_one_over_beta():
    beta = 0.4
    rc = torch.tensor([-5.0], dtype=torch.float64)
    rr = torch.tensor([-2.0], dtype=torch.float64)
    pc, pr = (rc + 0.5 / beta).requires_grad_(True), (rr - 0.5 / beta).requires_grad_(True)
    out = P.sppo_hard_loss(pc, pr, rc, rr, beta=beta)
    out.losses.sum().backward()
    assert float(out.losses.detach()) == 0.0 and float(pc.grad) == 0.0 and float(pr.grad) == 0.0
    assert math.isclose(float(((pc - pr) - (rc - rr)).detach()), 1 / beta, rel_tol=1e-12)


# ----------------------------------------------------------------------------------------------
# findings: where TRL's code departs from the formula


def test_trl_discopop_overflows_where_the_formula_is_finite():
    """TRL computes exp(-t) * sigmoid(t/tau): for t = beta h << 0 in float32 that is inf * 0 = NaN (or inf),
    while the formula's value is ~ softplus(-t) ~ |t|. Ours stays finite and equals a float64 evaluation."""
    pt, mask, rc, _ = make_batch(torch.float32)
    rr = pt[B:].sum(1) - 150.0  # r_l = +150: t = beta h ~ -150 at beta = 1
    theirs = trl_dpo_loss(pt, mask, rc, rr, loss_type="discopop", beta=1.0, discopop_tau=0.05)
    mine32 = ours("discopop", pt, mask, rc, rr, beta=1.0, discopop_tau=0.05)
    mine64 = ours("discopop", pt.double(), mask.double(), rc.double(), rr.double(), beta=1.0, discopop_tau=0.05)
    assert not torch.isfinite(theirs)
    assert torch.isfinite(mine32).all()
    assert torch.allclose(mine32.double(), mine64, rtol=1e-6)


def test_trl_exo_pair_constants_are_float32():
    """TRL's exo_pair evaluates log(eps), log(1 - eps) from torch.tensor(label_smoothing), i.e. in torch's default
    float32 even on float64 log-probabilities: its float64 loss then differs from the formula by ~1e-8 (>> float64
    rounding). With the default dtype set to float64 it agrees to 1e-12 (test_dpo_losses_equal_trl)."""
    pt, mask, rc, rr = make_batch(torch.float64)
    theirs = trl_dpo_loss(pt, mask, rc, rr, loss_type="exo_pair", beta=0.1, label_smoothing=1e-3,
                          default_dtype_from_data=False)
    mine = ours("exo_pair", pt, mask, rc, rr, beta=0.1, label_smoothing=1e-3).mean()
    assert 1e-10 < abs(float(mine - theirs)) < 1e-5


def test_trl_alpha_divergence_rejects_float64():
    pt, mask, rc, rr = make_batch(torch.float64)
    with pytest.raises(KeyError):
        trl_dpo_loss(pt, mask, rc, rr, loss_type="sigmoid", beta=0.1, f_divergence_type="alpha_divergence",
                     f_alpha_divergence_coef=0.3)


def test_alpha_divergence_parameter_is_one_minus_the_papers_alpha():
    """TRL's docs call f_alpha_divergence_coef the alpha of a 'u^-alpha regularizer'; its code's score is
    (u^(a-1) - 1)/(a - 1), the f-DPO paper's (1 - u^-alpha)/alpha at alpha = 1 - a (u^-0.7 at a = 0.3)."""
    r = torch.linspace(-3, 3, 13, dtype=torch.float64)
    u = torch.exp(r)
    a = 0.3
    assert torch.allclose(P.score(r, "alpha_divergence", a), (1 - u ** -(1 - a)) / (1 - a), rtol=1e-12)
    assert not torch.allclose(P.score(r, "alpha_divergence", a), (1 - u ** -a) / a, rtol=1e-3)


# ----------------------------------------------------------------------------------------------
# input checks


@pytest.mark.parametrize("call, message", [
    (lambda x, n: P.sigmoid_loss(x, x, x, x, beta=0.0), "beta must be a finite number > 0"),
    (lambda x, n: P.sigmoid_loss(x, x, x, x, beta=0.1, f_divergence_type="kl"), "f_divergence_type must be one of"),
    (lambda x, n: P.sigmoid_loss(x, x, x, x, beta=0.1, f_divergence_type="alpha_divergence"),
     "alpha_divergence needs a finite f_alpha_divergence_coef"),
    (lambda x, n: P.exo_pair_loss(x, x, x, x, beta=0.1, label_smoothing=0.0), r"label_smoothing must lie in \(0, 1"),
    (lambda x, n: P.robust_loss(x, x, x, x, beta=0.1, label_smoothing=0.5), r"label_smoothing must lie in \[0, 0.5"),
    (lambda x, n: P.ipo_loss(x, x, x, x, beta=0.1, chosen_lengths=n * 0, rejected_lengths=n),
     "chosen_lengths must be whole token counts >= 1"),
    (lambda x, n: P.ipo_loss(x, x, x, x, beta=0.1, chosen_lengths=n[:1], rejected_lengths=n),
     "chosen_lengths must have the log-probabilities' shape"),
    (lambda x, n: P.discopop_loss(x, x, x, x, beta=0.1, discopop_tau=-1.0), "discopop_tau must be a finite number"),
    (lambda x, n: P.sigmoid_loss(-x, x, x, x, beta=0.1), "policy_chosen_logps contains a positive log-probability"),
    (lambda x, n: P.cpo_simpo_loss(x, x, beta=0.1, simpo_gamma=math.nan), "simpo_gamma must be a finite number"),
    (lambda x, n: P.get_pref_loss("dpo"), "unknown loss 'dpo'; valid: sigmoid"),
    (lambda x, n: P.gpo_form("exo_pair", beta=0.1, tau=1.0), r"unknown parameters \['tau'\] for 'exo_pair'"),
    (lambda x, n: P.gpo_form("discopop", beta=0.1), "discopop needs discopop_tau"),
])
def test_bad_input_one_line_error(call, message):
    x = torch.tensor([-1.0, -2.0], dtype=torch.float64)
    n = torch.tensor([3.0, 4.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=message) as info:
        call(x, n)
    assert "\n" not in str(info.value)
