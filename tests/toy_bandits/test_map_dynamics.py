"""train_tabular: BT labels converge to delta*, ordered labels move delta up monotonically; flow-time law; bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from toy_bandits.dynamics import first_crossing, ordered_pair_flow_time, train_tabular
from toy_bandits.rlhf import gibbs_policy

torch.set_num_threads(1)


@settings(max_examples=15 * settings.default.max_examples // 60)  # scaled by the profile
@given(st.floats(-3.0, 3.0), st.floats(-3.0, 3.0), st.floats(0.3, 3.0), st.floats(0.05, 0.5))
def test_bt_labels_converge_to_delta_star(delta_ref, dr, beta, third):
    """Population reading: with q = sigma(dr) gradient descent reaches delta* = delta_ref + dr/beta (tol 1e-6),
    whether or not the assumption holds."""
    pw = (1 - third) / (1 + math.exp(-delta_ref))
    pi_ref = np.array([pw, 1 - third - pw, third])
    q = 1 / (1 + math.exp(-dr))
    # One pair: h = beta (delta - delta_ref) follows h <- h + 2 lr beta^2 (q - sigma(h)). With lr beta^2 = 2
    # (below the stability limit 4) the error contracts by 1 - 4 sigma'(h*) <= 1 - 4 sigma'(3) = 0.82 per
    # step near the optimum: 400 steps are far more than the ~80 needed for 1e-6 from |h| <= 3.
    tr = train_tabular(pi_ref, [[0, 1]], "dpo", beta=beta, steps=400, lr=2.0 / beta**2, labels="bt", q=[[q]],
                       record_every=400)
    delta_ref_exact = math.log(pi_ref[0]) - math.log(pi_ref[1])
    assert tr.delta[-1, 0, 0] == pytest.approx(delta_ref_exact + dr / beta, abs=1e-6)
    # theta_w + theta_l is conserved (the gradient is beta (sigma(h) - q)(e_w - e_l)), so the third response's
    # log-odds against the pair's geometric mean stay at the reference's
    log_p = np.log(tr.policy[0])
    assert log_p[2] - (log_p[0] + log_p[1]) / 2 == pytest.approx(
        math.log(third) - (math.log(pi_ref[0]) + math.log(pi_ref[1])) / 2, abs=1e-9)


def test_bt_labels_all_pairs_converge_to_gibbs_policy():
    pi_ref = np.array([[0.05, 0.8, 0.15], [0.3, 0.3, 0.4]])
    reward = np.array([[1.0, 0.0, 0.3], [0.5, 0.0, -1.0]])
    beta = 0.5
    pairs = np.array([[[0, 1], [0, 2], [2, 1]]] * 2)
    rows = np.arange(2)[:, None]
    q = 1 / (1 + np.exp(-(reward[rows, pairs[..., 0]] - reward[rows, pairs[..., 1]])))
    tr = train_tabular(pi_ref, pairs, "dpo", beta=beta, steps=1500, lr=8.0, labels="bt", q=q, record_every=500)
    np.testing.assert_allclose(tr.policy, gibbs_policy(pi_ref, reward, beta), atol=1e-9)


@settings(max_examples=20 * settings.default.max_examples // 60)  # scaled by the profile
@given(st.floats(-4.0, 2.0), st.floats(0.3, 2.0), st.sampled_from(["dpo", "cpo_clip", "cpo_smooth", "cpo_eq17"]))
@example(delta_ref=1e-15, beta=1.0, name="dpo")  # found by the thorough profile: delta inside the rounding band
def test_ordered_labels_loss_decreases_and_delta_increases(delta_ref, beta, name):
    pw = 0.9 / (1 + math.exp(-delta_ref))
    params = {"cpo_smooth": {"gamma": 0.5, "tau": 2.0, "alpha": 1.0}, "cpo_eq17": {"gamma": 0.5}}.get(name, {})
    tr = train_tabular([pw, 0.9 - pw, 0.1], [[0, 1]], name, beta=beta, steps=200, lr=0.2, **params)
    assert np.all(np.diff(tr.loss[:, 0, 0]) < 0)
    assert np.all(np.diff(tr.delta[:, 0, 0]) > 0)
    # target-form losses: the certificate is sound (certified => delta > margin = 0) and, outside its derived
    # rounding band (losses.certificate_tolerance: ~1e-14 in loss, so ~1e-13 / beta in delta), complete. The thorough
    # profile found delta_ref = 1e-15: delta = 1e-15 > 0 at step 0, inside the band, rightly not certified.
    delta = tr.delta[:, 0, 0]
    assert not np.any(tr.certified[:, 0, 0] & ~(delta > 0))
    assert np.all(tr.certified[:, 0, 0][delta > 1e-9])
    assert np.array_equal(tr.in_U[:, 0, 0], (tr.delta[:, 0, 0] > tr.delta_ref[0, 0]) & (tr.delta[:, 0, 0] < 0))


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_time_in_U_matches_gradient_flow(beta):
    d_refs = np.array([-0.5, -1.5, -3.0]) / beta
    lr = 0.02 / beta**2
    t_ode = ordered_pair_flow_time(d_refs, beta)
    p0 = 0.9 / (1 + np.exp(-d_refs))
    pi_ref = np.stack([p0, 0.9 - p0, np.full(3, 0.1)], axis=1)
    tr = train_tabular(pi_ref, np.array([[[0, 1]]] * 3), "dpo", beta=beta, steps=int(1.2 * t_ode.max() / lr) + 5, lr=lr)
    t_meas = first_crossing(tr)[:, 0] * lr
    # Euler with a small step: within one step plus 2 % of the flow time
    np.testing.assert_array_less(np.abs(t_meas - t_ode), lr + 0.02 * t_ode)


def test_flow_time_closed_form_values():
    # H = -beta delta_ref: t = (H + e^H - 1) / (2 beta^2)
    assert float(ordered_pair_flow_time(-1.0, 1.0)) == pytest.approx((1 + math.e - 1) / 2, rel=1e-12)
    assert float(ordered_pair_flow_time(-2.0, 0.5)) == pytest.approx((1 + math.e - 1) / 0.5, rel=1e-12)
    assert float(ordered_pair_flow_time(-1.0, 1.0, delta_to=-1.0)) == 0.0
    with pytest.raises(ValueError, match="delta_to"):
        ordered_pair_flow_time(0.0, 1.0, delta_to=-1.0)


def test_cpo_clip_uses_the_margin():
    tr = train_tabular([0.1, 0.6, 0.3], [[0, 1]], "cpo_clip", beta=1.0, steps=50, lr=0.2, margin=1.0)
    # target max(delta_ref, 1) = 1: the loss at the reference is softplus(1 - delta_ref)
    delta_ref = math.log(0.1 / 0.6)
    assert tr.loss[0, 0, 0] == pytest.approx(math.log1p(math.exp(1.0 - delta_ref)), rel=1e-12)
    assert np.array_equal(tr.certified[:, 0, 0], tr.delta[:, 0, 0] > 1.0)


def test_in_U_excludes_delta_exactly_zero():
    """Pins the right edge of Trajectory.in_U, delta_ref < delta < 0 (module docstring): a delta of exactly 0 is not
    in U (a survivor of mutation: delta < 0 -> delta <= 0 counted it in). One IPO step from pi_ref = (0.2, 0.8) at
    beta = 1 and lr = log 2 lands delta on 0.0 exactly in float64 (delta_ref = log(0.2/0.8) = -log 4 < 0); the record
    at step 0 sits at delta = delta_ref, U's other (open) edge, and is not asserted (rounding decides that side)."""
    tr = train_tabular(np.array([0.2, 0.8]), [[0, 1]], "ipo", beta=1.0, steps=1, lr=math.log(2.0))
    assert tr.delta_ref[0, 0] == pytest.approx(-math.log(4.0), rel=1e-15)
    assert tr.delta[1, 0, 0] == 0.0, "precondition: this step must land on delta = 0 exactly"
    assert not tr.in_U[1, 0, 0]
    # one step with a smaller lr stays inside U: delta_ref < delta < 0
    tr2 = train_tabular(np.array([0.2, 0.8]), [[0, 1]], "ipo", beta=1.0, steps=1, lr=0.5 * math.log(2.0))
    assert tr2.delta_ref[0, 0] < tr2.delta[1, 0, 0] < 0 and tr2.in_U[1, 0, 0]


@pytest.mark.parametrize("labels", ["ordered", "bt"])
def test_zero_steps_returns_the_step_0_record(labels):
    """steps = 0 is valid (docstring: steps >= 0): one record at step 0, at the reference, with nothing trained.
    By hand: delta = log(pi_ref(y_w) / pi_ref(y_l)) = delta_ref, the DPO loss there is log 2, and the final policy
    is pi_ref. (in_U is not asserted: delta sits on U's edge delta_ref, and log_softmax rounding decides the side.)"""
    pi_ref = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    tr = train_tabular(pi_ref, [[[0, 1], [2, 1]], [[0, 1], [2, 0]]], "dpo", beta=0.7, steps=0, lr=0.1,
                       labels=labels, q=0.8)
    d_ref = np.log([[0.2 / 0.5, 0.3 / 0.5], [0.6 / 0.1, 0.3 / 0.6]])
    assert tr.steps.tolist() == [0]
    assert tr.delta.shape == tr.loss.shape == tr.in_U.shape == (1, 2, 2)
    np.testing.assert_allclose(tr.delta[0], d_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tr.delta_ref, d_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tr.loss[0], math.log(2.0), rtol=1e-12)
    np.testing.assert_allclose(tr.policy, pi_ref, rtol=1e-12)


GOOD = dict(pi_ref=[0.2, 0.5, 0.3], pairs=[[0, 1]], loss_name="dpo")


@pytest.mark.parametrize("change,match", [
    ({"pi_ref": [0.2, 0.5, 0.4]}, "sum to 1"),
    # off by 5e-6: past the toolkit's SUM_TOL = 1e-6 (np.allclose's hidden rtol = 1e-5 let it through, unnormalised)
    ({"pi_ref": [0.2, 0.5, 0.300005]}, r"sum to 1 within 1e-06"),
    ({"pi_ref": [0.0, 0.7, 0.3]}, "full support"),
    ({"pi_ref": [np.nan, 0.7, 0.3]}, "full support"),
    ({"pairs": [[0, 3]]}, "pair indices"),
    ({"pairs": [[1, 1]]}, "itself"),
    ({"pairs": [0, 1]}, "pairs must have shape"),
    ({"loss_name": "dpo_bt"}, "labels='bt'"),
    ({"loss_name": "kto"}, "unknown loss"),
    ({"beta": 0.0}, "beta"),
    ({"beta": float("nan")}, "beta"),
    ({"lr": float("nan")}, "lr"),
    ({"lr": -1.0}, "lr"),
    ({"steps": -1}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"record_every": 0}, "record_every"),
    ({"labels": "random"}, "labels"),
    ({"labels": "bt"}, "needs q"),
    ({"labels": "bt", "q": [[1.5]]}, "q must lie"),
    ({"labels": "bt", "q": [[0.5, 0.5, 0.5]]}, "q must broadcast"),
    ({"margin": float("inf")}, "margin"),
])
def test_bad_inputs_raise(change, match):
    kwargs = {**GOOD, "beta": 1.0, "steps": 3, "lr": 0.1, **change}
    pi_ref, pairs, loss_name = kwargs.pop("pi_ref"), kwargs.pop("pairs"), kwargs.pop("loss_name")
    with pytest.raises(ValueError, match=match):
        train_tabular(pi_ref, pairs, loss_name, **kwargs)


@pytest.mark.parametrize("pairs", [[[[-1, 0]]], [[[0, -1]]], [[[0, 1], [-3, 2]]]])
def test_negative_pair_indices_are_refused_not_wrapped(pairs):
    """A negative pair index (one of several, the others valid) is refused: numpy would read index -1 as the last
    response, so pair (-1, 0) on pi_ref = (0.5, 0.3, 0.2) would silently train the pair (2, 0), delta_ref =
    log(0.2/0.5) = -0.916. Pins the lower bound of the index check, which only a non-negative maximum used to reach
    (a survivor of mutation: pairs.min() -> pairs.max() in _validate)."""
    pi_ref = np.array([[0.5, 0.3, 0.2]])
    with pytest.raises(ValueError, match="pair indices"):
        train_tabular(pi_ref, np.array(pairs), "dpo", beta=1.0, steps=2, lr=0.1)
