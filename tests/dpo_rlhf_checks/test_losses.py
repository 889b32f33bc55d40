"""The loss library against independent float64 formulas (docs/theory.md §2, §7, §10; IPO and DPO-Positive papers),
its certificate functions, its input checks, and the README's training-loop example."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dpo_rlhf_checks import losses as L

# ----------------------------------------------------------------------------------------------
# Independent reference formulas: numpy float64, written from the published formulas.


def np_softplus(z):
    """log(1 + e^z) = -log sigma(-z); numpy's logaddexp(0, z) avoids the overflow of exp."""
    return np.logaddexp(0.0, z)


def ref_dpo(pc, pr, rc, rr, beta):
    # Rafailov et al. 2023, Eq. 7: -log sigma(beta log(pi(y_w)/pi_ref(y_w)) - beta log(pi(y_l)/pi_ref(y_l)))
    return np_softplus(-(beta * (pc - rc) - beta * (pr - rr)))


def ref_dpo_bt(pc, pr, rc, rr, beta, q):
    h = beta * (pc - rc) - beta * (pr - rr)
    return -q * -np_softplus(-h) - (1 - q) * -np_softplus(h)  # -q log sigma(h) - (1-q) log sigma(-h)


def ref_ipo(pc, pr, rc, rr, beta):
    # Azar et al. 2023, Eq. 17 (tau = beta): (h_pi(y_w, y_l) - 1/(2 tau))^2, h_pi = log-ratio difference
    h_pi = (pc - rc) - (pr - rr)
    return (h_pi - 1.0 / (2.0 * beta)) ** 2


def ref_dpop(pc, pr, rc, rr, beta, lam):
    # Pal et al. 2024 (Smaug), Eq. 3: -log sigma(beta (log pi/pi_ref(y_w) - log pi/pi_ref(y_l)
    #                                              - lam max(0, log pi_ref(y_w)/pi(y_w))))
    return np_softplus(-beta * ((pc - rc) - (pr - rr) - lam * np.maximum(0.0, rc - pc)))


def ref_eq17(pc, pr, rc, rr, beta, gamma):
    # docs/theory.md §10: -log sigma(beta (delta - delta_ref) - m_ref), m_ref = gamma (1/pi_ref(y_w) + 1/pi_ref(y_l)).
    with np.errstate(over="ignore", divide="ignore"):
        m_ref = gamma * (1.0 / np.exp(rc) + 1.0 / np.exp(rr)) if gamma != 0 else np.zeros_like(rc)
    return np_softplus(-(beta * ((pc - pr) - (rc - rr)) - m_ref))


def ref_clip(pc, pr, rc, rr, beta, margin=0.0):
    return np_softplus(-beta * ((pc - pr) - np.maximum(rc - rr, margin)))


def ref_smooth(pc, pr, rc, rr, beta, gamma, tau, alpha):
    # m_tau = (1/tau) log(1 + exp(tau (gamma - delta_ref)));
    # loss = -log sigma(beta delta - beta delta_ref - (beta/alpha) m_tau)
    delta_ref = rc - rr
    m_tau = np.logaddexp(0.0, tau * (gamma - delta_ref)) / tau
    return np_softplus(-(beta * (pc - pr) - beta * delta_ref - beta / alpha * m_tau))


def ref_easy(pc, pr, rc, rr, beta, gamma):
    with np.errstate(over="ignore"):  # 1/rc overflows for subnormal rc: m = -inf, the loss 0, as in the library
        m = gamma * (1.0 / rc + 1.0 / rr)
    return np_softplus(-(beta * ((pc - pr) - (rc - rr)) - m))


REFERENCES = {
    "dpo": (ref_dpo, {}),
    "dpo_bt": (ref_dpo_bt, {"q": 0.7}),
    "ipo": (ref_ipo, {}),
    "dpop": (ref_dpop, {"lam": 50.0}),
    "cpo_eq17": (ref_eq17, {"gamma": 0.5}),
    "cpo_clip": (ref_clip, {"margin": 0.3}),
    "cpo_smooth": (ref_smooth, {"gamma": 0.5, "tau": 2.0, "alpha": 0.25}),
    "cpo_easy": (ref_easy, {"gamma": 0.5}),
}


def test_every_loss_has_a_reference():
    assert set(REFERENCES) == set(L.LOSSES)
    assert set(L.TARGET_FORM) == {"dpo", "cpo_eq17", "cpo_clip", "cpo_smooth", "cpo_easy"}


# ----------------------------------------------------------------------------------------------
# Strategies: log-probabilities in [-1e4, 0] with mass near both ends, beta from 1e-3 to 1e3.

logp = st.one_of(
    st.floats(-1e4, 0.0, allow_nan=False),
    st.floats(-1e-6, 0.0, allow_nan=False),  # near 0 (probability near 1), subnormals included
    st.floats(-1e4, -9.9e3, allow_nan=False),
    st.floats(-50.0, 0.0, allow_nan=False),
)
neg_logp = st.one_of(  # strictly negative: per-token means for cpo_easy, which divides by them
    st.floats(-1e4, 0.0, exclude_max=True),
    st.floats(-1e-6, 0.0, exclude_max=True),
    st.floats(-50.0, 0.0, exclude_max=True),
)
betas = st.floats(1e-3, 1e3, allow_nan=False)


@st.composite
def quads(draw, negative=False):
    n = draw(st.integers(1, 6))
    elems = neg_logp if negative else logp
    return [draw(hnp.arrays(np.float64, n, elements=elems, fill=st.nothing())) for _ in range(4)]


def close(lib, ref, scale):
    """Equal up to rounding: the arguments are differences of numbers of size ``scale``."""
    lib, ref = np.asarray(lib, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return _close(lib, ref, scale)


def _close(lib, ref, scale):
    both_inf = np.isinf(lib) & np.isinf(ref) & (np.sign(lib) == np.sign(ref))
    tol = 1e-9 * np.abs(ref) + 1e-13 * scale * (1.0 + 2.0 * np.sqrt(np.abs(np.where(np.isfinite(ref), ref, 0))))
    return bool(np.all(both_inf | (np.abs(lib - ref) <= tol)))


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(REFERENCES))
@settings(max_examples=settings.default.max_examples)
@given(data=st.data(), beta=betas)
@example(data=None, beta=1e3)
def test_loss_matches_published_formula(name, data, beta):
    if data is None:  # pinned extremes: logps at 0 and at -1e4, largest beta
        pc, pr, rc, rr = (np.array([0.0, -1e4, -1e-300]), np.array([-1e4, 0.0, -5.0]), np.array([-1e4, -1e4, -1e-300]),
                          np.array([0.0, -1e-12, -3.0]))
        if name == "cpo_easy":
            pc, pr, rc, rr = (np.minimum(a, -1e-3) for a in (pc, pr, rc, rr))
    else:
        pc, pr, rc, rr = data.draw(quads(negative=(name == "cpo_easy")))
    fn, params = REFERENCES[name]
    out = L.get_loss(name)(_t(pc), _t(pr), _t(rc), _t(rr), beta=beta, **params)
    expected = fn(pc, pr, rc, rr, beta, **params)
    scale = beta * (np.abs(pc) + np.abs(pr) + np.abs(rc) + np.abs(rr)) + 1.0
    if name == "cpo_easy":
        with np.errstate(over="ignore"):
            scale = scale + np.abs(params["gamma"] * (1 / rc + 1 / rr))
    if name == "ipo":
        scale = scale / beta + 1.0 / beta
    if name == "dpop":
        scale = scale * (1 + params["lam"])
    if name == "cpo_smooth":
        scale = scale / params["alpha"]
    if name == "cpo_eq17":
        with np.errstate(over="ignore"):
            scale = scale + params["gamma"] * (np.exp(-rc) + np.exp(-rr))
    assert close(out.losses.numpy(), expected, scale), (out.losses.numpy(), expected)
    assert np.allclose(out.chosen_rewards.numpy(), beta * (pc - rc), rtol=1e-12, atol=0)
    assert np.allclose(out.rejected_rewards.numpy(), beta * (pr - rr), rtol=1e-12, atol=0)
    assert not out.chosen_rewards.requires_grad


def test_losses_at_reference_and_simple_values():
    z = torch.tensor([-3.0, -7.5], dtype=torch.float64)
    for name in ("dpo", "dpo_bt", "dpop"):
        params = REFERENCES[name][1]
        assert torch.allclose(L.get_loss(name)(z, z.flip(0), z, z.flip(0), beta=0.3, **params).losses,
                              torch.full((2,), math.log(2), dtype=torch.float64), rtol=1e-15, atol=0)
    # IPO at the reference: (0 - 1/(2 beta))^2 = 1/(4 beta^2)
    assert torch.allclose(L.ipo_loss(z, z, z, z, beta=0.5).losses, torch.ones(2, dtype=torch.float64))


def test_gradient_is_the_paper_derivative():
    """dl/d delta = -beta sigma(-beta (delta - T)) for a target-form loss (docs/theory.md §5)."""
    rng = np.random.default_rng(0)
    rc, rr = _t(-rng.uniform(1, 50, 16)), _t(-rng.uniform(1, 50, 16))
    pc = _t(-rng.uniform(1, 50, 16)).requires_grad_(True)
    pr = _t(-rng.uniform(1, 50, 16))
    for name, params in (("dpo", {}), ("cpo_clip", {"margin": 0.2}), ("cpo_smooth", {"gamma": 0.5, "tau": 2.0,
                                                                                        "alpha": 1.0})):
        pc.grad = None
        L.get_loss(name)(pc, pr, rc, rr, beta=0.7, **params).losses.sum().backward()
        T = L.implicit_target(name, rc, rr, beta=0.7, **params)
        expected = -0.7 * torch.sigmoid(-0.7 * ((pc - pr).detach() - T))
        # The losses use logaddexp, exact in float64 (torch's softplus would be off by ~2e-9 above 20).
        assert torch.allclose(pc.grad, expected, rtol=1e-12, atol=1e-300)


def test_pinned_eq17_gamma_zero_is_dpo_with_extreme_logps():
    """Bug fixed: gamma = 0 gave NaN (0 * inf) where 1/pi_ref overflows; gamma = 0 is DPO (docs/theory.md §10)."""
    pc, pr = _t([-1e4, -2.0]), _t([-1.0, -3.0])
    rc, rr = _t([-1e4, -1.0]), _t([-2.0, -9e3])
    eq17 = L.cpo_eq17_loss(pc, pr, rc, rr, beta=0.1, gamma=0.0).losses
    dpo = L.dpo_loss(pc, pr, rc, rr, beta=0.1).losses
    assert torch.equal(eq17, dpo)
    # gamma > 0: the margin is +inf, the loss is +inf (not NaN).
    assert torch.isinf(L.cpo_eq17_loss(pc, pr, rc, rr, beta=0.1, gamma=0.5).losses).all()


# ----------------------------------------------------------------------------------------------
# Certificates


TARGET_PARAMS = {"dpo": {}, "cpo_eq17": {"gamma": 0.5}, "cpo_clip": {"margin": 0.0},
                 "cpo_smooth": {"gamma": 0.5, "tau": 2.0, "alpha": 1.0}, "cpo_easy": {"gamma": 0.5}}
moderate = st.floats(-30.0, -1e-3, allow_nan=False)


@pytest.mark.parametrize("name", sorted(TARGET_PARAMS))
@given(data=st.data(), beta=betas, margin=st.floats(0.0, 5.0))
def test_delta_from_loss_inverts_and_certificate_is_equivalence(name, data, beta, margin):
    n = data.draw(st.integers(1, 6))
    rc, rr, pc, pr = (_t(data.draw(hnp.arrays(np.float64, n, elements=moderate))) for _ in range(4))
    params = TARGET_PARAMS[name]
    T = L.implicit_target(name, rc, rr, beta=beta, **params)
    loss = L.get_loss(name)(pc, pr, rc, rr, beta=beta, **params).losses
    delta = (pc - pr).numpy()
    x = beta * (T.numpy() - delta)
    ok = (x > -700) & (x < 700)  # the loss neither underflows to 0 nor is it resolved only by rounding
    if ok.any():
        back = L.delta_from_loss(loss[ok], T[ok], beta=beta).numpy()
        tol = 1e-9 * (1.0 + np.abs(T.numpy()[ok]) + np.abs(delta[ok]) + 1.0 / beta)
        assert np.all(np.abs(back - delta[ok]) <= tol)
    cert = L.alignment_certificate(loss, T, beta=beta, margin=margin).numpy()
    # Resolvable in float64: delta - margin not lost in rounding, and the critical loss does not underflow
    # to 0 (beta (T - m) < -745; then nothing is certified, conservatively).
    resolvable = ((beta * np.abs(delta - margin) > 1e-9 * (1.0 + beta * np.abs(T.numpy()) + beta * np.abs(delta)))
                  & (beta * (T.numpy() - margin) > -740))
    assert np.array_equal(cert[resolvable], (delta > margin)[resolvable])


def test_critical_loss_is_the_ratio_formula():
    """l_crit = log(1 + (pi_ref(y_w)/pi_ref(y_l))^beta) (docs/theory.md §7), from probabilities directly."""
    rng = np.random.default_rng(1)
    rc, rr = -rng.uniform(0.1, 20, 200), -rng.uniform(0.1, 20, 200)
    for beta in (0.01, 0.1, 1.0, 3.0):
        expected = np.log1p((np.exp(rc) / np.exp(rr)) ** beta)
        got = L.critical_loss(L.implicit_target("dpo", _t(rc), _t(rr), beta=beta), beta=beta).numpy()
        assert np.allclose(got, expected, rtol=1e-10, atol=0)
        assert np.array_equal(got < math.log(2), rc - rr < 0)


def test_learned_yet_misaligned_pair():
    """A policy in U: DPO loss below log 2, not certified, and indeed pi(y_w) < pi(y_l) (docs/theory.md §6-7)."""
    rc, rr = _t([-8.0]), _t([-2.0])  # delta_ref = -6
    pc, pr = _t([-5.0]), _t([-3.0])  # delta = -2: delta_ref < delta < 0
    out = L.dpo_loss(pc, pr, rc, rr, beta=0.5)
    T = L.implicit_target("dpo", rc, rr, beta=0.5)
    assert out.losses.item() < math.log(2)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-0.5 * 4.0)), rel=1e-14)
    assert not L.alignment_certificate(out.losses, T, beta=0.5).item()
    clip = L.cpo_clip_loss(pc, pr, rc, rr, beta=0.5)  # the clipped target: loss above log 2 on this pair
    assert clip.losses.item() == pytest.approx(math.log1p(math.exp(1.0)), rel=1e-14)


# ----------------------------------------------------------------------------------------------
# Bad inputs


GOOD = [_t([-1.0, -2.0]) for _ in range(4)]


def call(name, tensors=None, **override):
    params = {**REFERENCES[name][1], "beta": 0.1, **override}
    return L.get_loss(name)(*(tensors or GOOD), **params)


@pytest.mark.parametrize("name", sorted(L.LOSSES))
def test_bad_inputs_raise_clear_errors(name):
    nan = [GOOD[0], _t([-1.0, float("nan")]), GOOD[2], GOOD[3]]
    with pytest.raises(ValueError, match=r"policy_rejected_logps contains NaN \(first at index \(1,\)\)"):
        call(name, nan)
    positive = [GOOD[0], GOOD[1], _t([0.5, -1.0]), GOOD[3]]
    with pytest.raises(ValueError, match=r"reference_chosen_logps contains a positive log-probability 0.5"):
        call(name, positive)
    neg_inf = [_t([-math.inf, -1.0]), GOOD[1], GOOD[2], GOOD[3]]
    with pytest.raises(ValueError, match=r"policy_chosen_logps contains -inf"):
        call(name, neg_inf)
    mismatch = [GOOD[0], GOOD[1], GOOD[2], _t([-1.0, -2.0, -3.0])]
    with pytest.raises(ValueError, match=r"same shape.*\(3,\)"):
        call(name, mismatch)
    for beta in (0, -1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match=r"beta must be a finite number > 0"):
            call(name, beta=beta)
    with pytest.raises(TypeError, match="must be a torch tensor"):
        call(name, [[-1.0, -2.0]] + GOOD[1:])


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"bad parameters for 'cpo_smooth': unknown \['gama'\], missing \['gamma'\]"):
        L.cpo_smooth_loss(*GOOD, beta=0.1, gama=0.5, tau=2.0, alpha=1.0)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        L.cpo_smooth_loss(*GOOD, beta=0.1, gamma=0.5, tau=0.0, alpha=1.0)
    with pytest.raises(ValueError, match=r"missing \['gamma'\]"):
        L.implicit_target("cpo_eq17", GOOD[0], GOOD[1], beta=0.1)
    with pytest.raises(ValueError, match="no target form for loss 'ipo'"):
        L.implicit_target("ipo", GOOD[0], GOOD[1], beta=0.1)
    with pytest.raises(ValueError, match="unknown loss 'dpo2'; valid: dpo, dpo_bt"):
        L.get_loss("dpo2")
    with pytest.raises(ValueError, match="q must lie in"):
        L.dpo_bt_loss(*GOOD, beta=0.1, q=1.5)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        L.dpop_loss(*GOOD, beta=0.1, lam=-1.0)
    with pytest.raises(ValueError, match="strictly negative reference mean"):
        L.cpo_easy_loss(GOOD[0], GOOD[1], _t([0.0, -1.0]), GOOD[3], beta=0.1, gamma=0.5)
    with pytest.raises(ValueError, match="a target-form loss is > 0"):
        L.delta_from_loss(_t([0.0]), _t([1.0]), beta=1.0)
    with pytest.raises(ValueError, match="losses contains NaN"):
        L.delta_from_loss(_t([math.nan]), _t([1.0]), beta=1.0)
    with pytest.raises(ValueError, match="same shape"):
        L.alignment_certificate(_t([0.1, 0.2]), _t([1.0]), beta=1.0)
    with pytest.raises(ValueError, match="margin must be a finite number"):
        L.critical_loss(_t([1.0]), beta=1.0, margin=math.nan)


def test_public_api_documented():
    for name in L.__all__:
        obj = getattr(L, name)
        if callable(obj) and not isinstance(obj, dict):
            doc = obj.__doc__ or ""
            assert len(doc) > 80, name
            paper_functions = ("implicit_target", "critical_loss", "delta_from_loss", "alignment_certificate")
            if (name.endswith("_loss") and name != "get_loss") or name in paper_functions:
                assert "docs/theory.md" in doc or "Paper" in doc or "et al." in doc, name
                assert "Args" in doc, name
    for beta in (np.float32(0.1), np.float64(0.1), 1):  # numpy scalars and ints are numbers too
        assert L.dpo_loss(*GOOD, beta=beta).losses.shape == (2,)


# ----------------------------------------------------------------------------------------------
# The README example: a training loop, run as written.

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_example() -> str:
    """The training-loop example of README.md (the python block that uses cpo_clip_loss)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    matches = [b for b in blocks if "cpo_clip_loss" in b]
    assert len(matches) == 1, "README.md should hold exactly one loss-library example"
    return matches[0]


def test_readme_example_runs(capsys):
    namespace: dict = {}
    exec(compile(_readme_example(), "README.md example", "exec"), namespace)  # the snippet as documented
    printed = capsys.readouterr().out.strip()
    out, certified = namespace["out"], namespace["certified"]
    logp = torch.log_softmax(namespace["theta"].detach(), dim=-1)
    i, yw, yl = namespace["i"], namespace["yw"], namespace["yl"]
    # certificate of the last forward pass == the sign of delta at that pass (before the last step)
    ref = namespace["ref"]
    assert certified.shape == (32,) and certified.all()
    assert printed.startswith("loss ") and printed.endswith("certified 100%")
    assert out.losses.mean().item() < 0.5 * math.log(2)
    assert ((logp[i, yw] - logp[i, yl]) > 0).all()
    assert ((ref[i, yw] - ref[i, yl]) < 0).sum() >= 8  # the reference preferred y_l on some pairs


def test_certificate_tolerance_is_its_documented_formula_with_a_margin():
    """tol = 4 eps (4 + beta |m| + max(0, -beta (T - m))), worked by hand at beta = 2, m = 1.5 (float64 eps):
    T = -1: x_c = -5, tol = 4 eps (4 + 3 + 5) = 48 eps; T = 4: x_c = 5, tol = 4 eps (4 + 3) = 28 eps. Without
    the margin in x_c the first would be 4 eps (4 + 3 + 2) = 36 eps."""
    eps = torch.finfo(torch.float64).eps
    tol = L.certificate_tolerance(torch.tensor([-1.0, 4.0], dtype=torch.float64), beta=2.0, margin=1.5)
    assert tol.tolist() == [48 * eps, 28 * eps]


@pytest.mark.parametrize("rc, rr", [(-1.0, 0.0), (0.0, -1.0)])
def test_cpo_easy_refuses_a_zero_reference_mean_log_probability(rc, rr):
    """cpo_easy divides by the reference's mean token log-probabilities: 0 is refused like a positive value."""
    with pytest.raises(ValueError, match="strictly negative"):
        L.implicit_target("cpo_easy", torch.tensor([rc], dtype=torch.float64),
                          torch.tensor([rr], dtype=torch.float64), beta=1.0, gamma=0.5)


def test_delta_from_loss_above_its_branch_point_against_mpmath():
    """delta = T - log(expm1(loss)) / beta; above loss = 20 the code uses loss + log(-expm1(-loss)), whose second
    term is about -e^-loss (-7.6e-10 at 21): checked against 50-digit mpmath to 1e-14 relative."""
    import mpmath

    losses = torch.tensor([20.5, 21.0, 22.0, 25.0], dtype=torch.float64)
    target = torch.tensor([0.0, 1.0, -2.0, 3.0], dtype=torch.float64)
    got = L.delta_from_loss(losses, target, beta=0.5)
    for g, x, t in zip(got.tolist(), losses.tolist(), target.tolist()):
        with mpmath.workdps(50):
            exact = float(mpmath.mpf(t) - mpmath.log(mpmath.expm1(mpmath.mpf(x))) / mpmath.mpf(0.5))
        assert abs(g - exact) <= 1e-14 * abs(exact), (x, g, exact)
