"""Gradient checks of the loss module against autograd in float64 (the losses the LM stage trains with)."""

import pytest
import torch

from dpo_rlhf_checks.losses import LOSSES, get_loss

PARAMS = {
    "dpo": {"beta": 0.7},
    "dpo_bt": {"beta": 0.7, "q": 0.73},
    "ipo": {"beta": 0.7},
    "dpop": {"beta": 0.7, "lam": 5.0},
    "cpo_eq17": {"beta": 0.7, "gamma": 0.05},
    "cpo_clip": {"beta": 0.7, "margin": 0.3},
    "cpo_smooth": {"beta": 0.7, "gamma": 0.5, "tau": 2.0, "alpha": 1.0},
    "cpo_easy": {"beta": 0.7, "gamma": 0.5},
}


def _inputs(seed: int):
    """Four (6,) float64 log-probabilities in [-4, -0.2], away from the kinks of dpop and cpo_clip."""
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-(0.2 + 3.8 * torch.rand(6, generator=g, dtype=torch.float64)) for _ in range(4))
    # dpop's max(0, rc - pc) and cpo_clip's max(delta_ref, m) are not differentiable at their kinks.
    pc = torch.where((rc - pc).abs() < 0.05, pc - 0.1, pc)
    rr = torch.where(((rc - rr) - 0.3).abs() < 0.05, rr - 0.1, rr)
    return [t.clone().requires_grad_(True) for t in (pc, pr, rc, rr)]


def test_every_loss_is_covered():
    assert set(PARAMS) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_against_finite_differences(name, seed):
    loss = get_loss(name)
    params = PARAMS[name]
    assert torch.autograd.gradcheck(lambda *x: loss(*x, **params).losses, _inputs(seed), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 3])
def test_dpo_gradient_matches_closed_form(seed):
    # docs/theory.md §5: d l / d delta_pi = -beta sigma(-beta (delta_pi - delta_ref)); chosen gets it, rejected its negative.
    pc, pr, rc, rr = _inputs(seed)
    beta = 0.7
    get_loss("dpo")(pc, pr, rc, rr, beta=beta).losses.sum().backward()
    h = beta * ((pc - pr) - (rc - rr)).detach()
    expected = -beta * torch.sigmoid(-h)
    torch.testing.assert_close(pc.grad, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pr.grad, -expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 5])
def test_target_form_gradient_is_independent_of_reference_split(seed):
    # cpo_clip: loss = softplus(beta (max(delta_ref, m) - delta)); d l / d pc = -beta sigma(beta (T - delta)).
    pc, pr, rc, rr = _inputs(seed)
    beta, m = 0.7, 0.3
    get_loss("cpo_clip")(pc, pr, rc, rr, beta=beta, margin=m).losses.sum().backward()
    target = torch.clamp((rc - rr).detach(), min=m)
    expected = -beta * torch.sigmoid(beta * (target - (pc - pr).detach()))
    torch.testing.assert_close(pc.grad, expected, rtol=1e-12, atol=1e-12)
