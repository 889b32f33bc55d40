"""Preference losses: DPO, its BT-labelled population form, IPO, DPO-Positive, and the CPO variants.

Every loss takes the four log-probability tensors a trainer has at hand, each of shape (B,):

    policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps

and returns a :class:`LossOutput` of per-example ``losses`` (the caller averages) and the
``chosen_rewards`` / ``rejected_rewards`` = ``beta * (policy - reference)`` log-ratios,
detached, as the common trainers log them.

Sum or mean: a log-probability here is whatever the caller passes. The paper's theory uses
the summed sequence log-probability (THEORY.md §2); the authors' code and SimPO use the
per-token mean. ``cpo_easy_loss`` is defined on per-token means (it divides by them); the
others accept either, and the caller says which it used.

Notation (THEORY.md): ``delta = policy_chosen - policy_rejected``, ``delta_ref`` the same under
the reference, ``h = beta (delta - delta_ref)``. Every loss except IPO and DPO-Positive has
the form ``softplus(beta (T - delta))`` with a *target* ``T`` that depends on the reference
only (:func:`implicit_target`), so the loss is strictly decreasing in ``delta`` and
``loss < softplus(beta (T - m))`` <=> ``delta > m`` (:func:`critical_loss`, THEORY.md §7).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


class LossOutput(NamedTuple):
    """Per-example losses (B,) and the detached implicit rewards (B,) of chosen and rejected."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_finite_number(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_logps(**tensors: Tensor) -> None:
    """Same shapes, no NaN, no positive log-probability."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"log-probability tensors must have the same shape, got {shapes}")
    for name, t in tensors.items():
        if not torch.is_tensor(t):
            raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
        if torch.isnan(t).any():
            raise ValueError(f"{name} contains NaN")
        if (t > 0).any():
            raise ValueError(f"{name} contains a positive log-probability (max {t.max().item():.4g})")


def _rewards(beta, pc, pr, rc, rr) -> tuple[Tensor, Tensor]:
    return (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


def dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *, beta):
    """DPO, ordered pair: ``softplus(-beta (delta - delta_ref))`` (Paper Eq. 8; THEORY.md §2).

    beta: > 0. ``softplus(-h)`` is ``-log sigma(h)`` without the overflow of ``log(sigmoid(h))``.
    """
    _check_positive("beta", beta)
    _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    h = beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps))
    return LossOutput(F.softplus(-h), *_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                                                reference_chosen_logps, reference_rejected_logps))


def dpo_bt_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                beta, q):
    """DPO with Bradley-Terry label probability ``q`` (population form, THEORY.md §2).

    ``q softplus(-h) + (1 - q) softplus(h)``: the expected loss when "chosen" wins with
    probability q. q: float or tensor (B,) in [0, 1]. Its minimiser is ``h = logit(q)``.
    """
    _check_positive("beta", beta)
    _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    q_t = torch.as_tensor(q, dtype=policy_chosen_logps.dtype, device=policy_chosen_logps.device)
    if torch.isnan(q_t).any() or (q_t < 0).any() or (q_t > 1).any():
        raise ValueError(f"q must lie in [0, 1], got {q!r}")
    h = beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps))
    losses = q_t * F.softplus(-h) + (1 - q_t) * F.softplus(h)
    return LossOutput(losses, *_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                                        reference_chosen_logps, reference_rejected_logps))


def ipo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *, beta):
    """IPO (Azar et al. 2023, as in TRL): ``((delta - delta_ref) - 1/(2 beta))^2``.

    Its minimiser is the finite ``delta = delta_ref + 1/(2 beta)``, negative when
    ``delta_ref < -1/(2 beta)``: IPO carries no alignment certificate.
    """
    _check_positive("beta", beta)
    _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return LossOutput((logits - 1 / (2 * beta)) ** 2, *_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                                                                 reference_chosen_logps, reference_rejected_logps))


def dpop_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
              beta, lam):
    """DPO-Positive (Pal et al. 2024, Smaug): ``softplus(-(h - beta lam max(0, ref_chosen - policy_chosen)))``.

    lam >= 0 penalises lowering the chosen log-probability below the reference's.
    """
    _check_positive("beta", beta)
    _check_finite_number("lam", lam)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    h = beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps))
    penalty = beta * lam * torch.clamp(reference_chosen_logps - policy_chosen_logps, min=0)
    return LossOutput(F.softplus(-(h - penalty)), *_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                                                            reference_chosen_logps, reference_rejected_logps))


def _target_loss(name, pc, pr, rc, rr, beta, target):
    """``softplus(beta (T - delta))`` with its rewards."""
    delta = pc - pr
    return LossOutput(F.softplus(beta * (target - delta)), *_rewards(beta, pc, pr, rc, rr))


def _eq17_target(rc, rr, *, beta, gamma):
    # m_ref = gamma (1/pi_ref(y_w) + 1/pi_ref(y_l)) = gamma exp(logaddexp(-ref_w, -ref_l)), in log space so
    # it overflows only when the margin itself is beyond the float range (then the loss is +inf, faithfully).
    m_ref = gamma * torch.exp(torch.logaddexp(-rc, -rr))
    return (rc - rr) + m_ref / beta


def _clip_target(rc, rr, *, beta, margin=0.0):
    return torch.clamp(rc - rr, min=margin)


def _smooth_target(rc, rr, *, beta, gamma, tau, alpha):
    # m_tau = (1/tau) log(1 + exp(tau (gamma - delta_ref))) = softplus(tau (gamma - delta_ref)) / tau.
    delta_ref = rc - rr
    m_tau = F.softplus(tau * (gamma - delta_ref)) / tau
    return delta_ref + m_tau / alpha


def _easy_target(rc, rr, *, beta, gamma):
    # The code's 'easy' margin divides by the reference's mean token *log*-probability, which is < 0:
    # m = gamma (1/lbar(y_w) + 1/lbar(y_l)) is therefore negative for gamma > 0 (a deviation from Eq. 17).
    if (rc >= 0).any() or (rr >= 0).any():
        raise ValueError("cpo_easy needs strictly negative reference mean log-probabilities (it divides by them)")
    m = gamma * (1.0 / rc + 1.0 / rr)
    return (rc - rr) + m / beta


_TARGETS: dict[str, Callable] = {
    "dpo": lambda rc, rr, *, beta: rc - rr,
    "cpo_eq17": _eq17_target,
    "cpo_clip": _clip_target,
    "cpo_smooth": _smooth_target,
    "cpo_easy": _easy_target,
}


def _validate_params(name: str, beta: float, params: dict) -> None:
    _check_positive("beta", beta)
    for key in ("gamma", "margin"):
        if key in params:
            _check_finite_number(key, params[key])
    for key in ("tau", "alpha"):
        if key in params:
            _check_positive(key, params[key])


def implicit_target(name, reference_chosen_logps, reference_rejected_logps, *, beta, **params) -> Tensor:
    """The target ``T`` with ``loss = softplus(beta (T - delta))`` for a target-form loss.

    name: "dpo", "cpo_eq17", "cpo_clip", "cpo_smooth" or "cpo_easy".
      dpo:        T = delta_ref
      cpo_eq17:   T = delta_ref + m_ref / beta,  m_ref = gamma (1/pi_ref(y_w) + 1/pi_ref(y_l))    (Paper Eq. 17)
      cpo_clip:   T = max(delta_ref, margin)                                                       (code 'clip')
      cpo_smooth: T = delta_ref + m_tau / alpha,  m_tau = softplus(tau (gamma - delta_ref)) / tau   (code 'cpo')
      cpo_easy:   T = delta_ref + m / beta,  m = gamma (1/lbar_ref(y_w) + 1/lbar_ref(y_l))          (code 'easy')
    """
    if name not in _TARGETS:
        raise ValueError(f"no target form for loss {name!r}; valid: {', '.join(_TARGETS)}")
    _validate_params(name, beta, params)
    try:
        return _TARGETS[name](reference_chosen_logps, reference_rejected_logps, beta=beta, **params)
    except TypeError as err:
        raise ValueError(f"bad parameters for {name!r}: {err}") from None


def _make_target_loss(name: str, doc: str):
    def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
             beta, **params):
        _validate_params(name, beta, params)
        _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                     reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
        target = implicit_target(name, reference_chosen_logps, reference_rejected_logps, beta=beta, **params)
        return _target_loss(name, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                            reference_rejected_logps, beta, target)

    loss.__name__ = f"{name}_loss"
    loss.__doc__ = doc
    return loss


cpo_eq17_loss = _make_target_loss("cpo_eq17", """CPO, reference-adaptive margin (Paper Eq. 17; THEORY.md §10).

    ``-log sigma(beta (delta - delta_ref) - m_ref)``, ``m_ref = gamma (1/pi_ref(y_w) + 1/pi_ref(y_l))``
    held fixed (from the reference). Params: beta > 0, gamma (gamma = 0 gives DPO). With summed
    sequence log-probabilities 1/pi_ref is astronomically large; the margin is computed in log space.
    """)
cpo_clip_loss = _make_target_loss("cpo_clip", """CPO, clipped target (authors' code option 'clip'; THEORY.md §10).

    ``-log sigma(beta (delta - max(delta_ref, margin)))``; the code's default is margin = 0.
    Params: beta > 0, margin (default 0).
    """)
cpo_smooth_loss = _make_target_loss("cpo_smooth", """CPO, smooth target (authors' code option 'cpo'; THEORY.md §10).

    ``-log sigma(beta delta - beta delta_ref - (beta/alpha) m_tau)``,
    ``m_tau = (1/tau) log(1 + exp(tau (gamma - delta_ref)))``. Params: beta > 0, gamma, tau > 0,
    alpha > 0 (code defaults beta=0.1, gamma=0.5, tau=2, alpha=1).
    """)
cpo_easy_loss = _make_target_loss("cpo_easy", """CPO 'easy' margin (authors' code option 'easy'; THEORY.md §10).

    ``-log sigma(beta (delta - delta_ref) - m)``, ``m = gamma (1/lbar_ref(y_w) + 1/lbar_ref(y_l))``
    where ``lbar_ref`` is the reference's per-token *mean log*-probability (so m < 0 for gamma > 0).
    Pass per-token mean log-probabilities for all four tensors, as the code does. Params: beta > 0, gamma.
    Reconstructed placement of m (as in Eq. 17): a deviation the report names.
    """)

LOSSES: dict[str, Callable[..., LossOutput]] = {
    "dpo": dpo_loss,
    "dpo_bt": dpo_bt_loss,
    "ipo": ipo_loss,
    "dpop": dpop_loss,
    "cpo_eq17": cpo_eq17_loss,
    "cpo_clip": cpo_clip_loss,
    "cpo_smooth": cpo_smooth_loss,
    "cpo_easy": cpo_easy_loss,
}
TARGET_FORM = tuple(_TARGETS)


def get_loss(name: str) -> Callable[..., LossOutput]:
    """The loss function called ``name``; a ValueError lists the valid names."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name]


def critical_loss(target: Tensor, *, beta: float, margin: float = 0.0) -> Tensor:
    """``softplus(beta (T - margin))``: for a target-form loss, ``loss < critical_loss`` <=> ``delta > margin``.

    THEORY.md §7 for DPO (T = delta_ref, margin 0): l_crit = softplus(beta delta_ref).
    """
    _check_positive("beta", beta)
    return F.softplus(beta * (target - margin))


def delta_from_loss(losses: Tensor, target: Tensor, *, beta: float) -> Tensor:
    """Invert a target-form loss: ``delta = T - log(e^loss - 1) / beta`` (THEORY.md §7).

    ``log(expm1(l))`` is evaluated as ``l + log(-expm1(-l))`` for large l, where expm1 overflows.
    """
    _check_positive("beta", beta)
    if (losses <= 0).any():
        raise ValueError("a target-form loss is > 0; got a value <= 0")
    large = losses > 20
    log_expm1 = torch.where(large, losses + torch.log(-torch.expm1(-losses)),
                            torch.log(torch.expm1(torch.where(large, torch.ones_like(losses), losses))))
    return target - log_expm1 / beta


def alignment_certificate(losses: Tensor, target: Tensor, *, beta: float, margin: float = 0.0) -> Tensor:
    """Per pair, True where the loss value alone proves ``delta > margin`` (loss < critical_loss).

    Exact for target-form losses (it is an equivalence, THEORY.md §7); DPO-Positive and IPO
    have no such certificate.
    """
    return losses < critical_loss(target, beta=beta, margin=margin)
