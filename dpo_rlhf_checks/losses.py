"""Preference losses as a drop-in library: DPO, its BT-labelled population form, IPO, DPO-Positive,
and the CPO variants, plus the per-pair alignment certificate.

Every loss takes the four log-probability tensors a trainer has at hand, each of shape (B,)
(any common shape works; all four must match):

    policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps

and keyword-only parameters (``beta`` and the loss's own), and returns a :class:`LossOutput` of
per-example ``losses`` (same shape; the caller averages) and the ``chosen_rewards`` /
``rejected_rewards`` = ``beta * (policy - reference)`` log-ratios, detached, as the common
trainers log them. Gradients flow through ``losses`` to the policy tensors. A PyTorch loop::

    from dpo_rlhf_checks.losses import cpo_clip_loss, implicit_target, alignment_certificate
    out = cpo_clip_loss(pc, pr, rc, rr, beta=0.1, margin=0.0)  # pc, pr carry gradients
    out.losses.mean().backward()
    target = implicit_target("cpo_clip", rc, rr, beta=0.1, margin=0.0)
    certified = alignment_certificate(out.losses.detach(), target, beta=0.1)  # (B,) bool: delta > 0

Domains (checked; a violation is a ``ValueError`` naming the tensor or parameter): log-probabilities
are finite and <= 0 (a log-probability of ``-inf`` makes the log-ratios undefined); ``beta`` and
the other positive parameters are finite and > 0. The checks read the tensors' values, which on
a GPU synchronises once per call.

Sum or mean: a log-probability here is whatever the caller passes, and the choice changes the loss.
The paper's theory is stated for the summed sequence log-probability (docs/theory.md §2, §13); the
authors' trainer passes per-token MEAN log-probabilities to every CPO branch (docs/theory.md §15).
Per loss, the form the theory's statements use / the form that reproduces the authors' runs:

    dpo          sums / the authors' CPO trainer does not train it; TRL's DPOTrainer passes sums
    dpo_bt       sums / (the toolkit's population form; no authors' run)
    ipo          sums / TRL passes IPO per-token means
    dpop         sums / (no authors' run)
    cpo_eq17     sums (Eq. 17's 1/pi_ref(y) is a sequence probability) / (not a branch of the authors' code)
    cpo_clip     either: the certificate is about the delta you pass / per-token means
    cpo_smooth   either: the certificate is about the delta you pass / per-token means (the released checkpoint)
    cpo_easy     per-token means (it divides by them) / per-token means

Example of the difference: a reference giving a 10-token chosen response -20 (mean -2) and a 2-token
rejected one -6 (mean -3) has delta_ref = -14 with sums and +1 with means, so the ``cpo_clip`` target
``max(delta_ref, 0)`` is 0 with sums and 1 with means: following the sums advice trains a different
loss from the authors' runs. A certificate on means says nothing about the summed delta
(docs/theory.md §10, §13).

Notation (docs/theory.md): ``delta = policy_chosen - policy_rejected``, ``delta_ref`` the same under the
reference, ``h = beta (delta - delta_ref)``, ``softplus(z) = log(1 + e^z) = -log sigma(-z)``.
The *target-form* losses (:data:`TARGET_FORM`: dpo and every CPO variant) are
``softplus(beta (T - delta))`` with a target ``T`` that depends on the reference only
(:func:`implicit_target`), so the loss is strictly decreasing in ``delta`` and
``loss < softplus(beta (T - m))`` <=> ``delta > m`` (:func:`critical_loss`, docs/theory.md §7).
``dpo_bt``, IPO and DPO-Positive are not of target form and carry no such certificate.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple

import torch

Tensor = torch.Tensor

__all__ = [
    "LOSSES",
    "TARGET_FORM",
    "TARGET_PARAMS",
    "LossOutput",
    "alignment_certificate",
    "certificate_tolerance",
    "cpo_clip_loss",
    "cpo_easy_loss",
    "cpo_eq17_loss",
    "cpo_smooth_loss",
    "critical_loss",
    "delta_from_loss",
    "dpo_bt_loss",
    "dpo_loss",
    "dpop_loss",
    "get_loss",
    "implicit_target",
    "ipo_loss",
]


class LossOutput(NamedTuple):
    """What every loss returns.

    losses: per-example losses, the shape of the inputs (the caller averages); differentiable.
    chosen_rewards: ``beta * (policy_chosen_logps - reference_chosen_logps)``, detached.
    rejected_rewards: ``beta * (policy_rejected_logps - reference_rejected_logps)``, detached.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


def _is_real(value) -> bool:
    # numbers.Real covers int, float and numpy scalars; bool is an int but never a parameter value.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` to full precision for every x.

    ``torch.nn.functional.softplus`` returns x itself above its threshold (20), an error of
    up to e^-20 ~ 2e-9 in value and gradient; ``logaddexp(x, 0)`` is exact in float64 and
    never overflows (docs/theory.md: ``-log sigma(z) = softplus(-z)``).
    """
    return torch.logaddexp(x, torch.zeros_like(x))


def _check_positive(name: str, value: float) -> None:
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_finite_number(name: str, value: float) -> None:
    if not (_is_real(value) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _first_index(mask: Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(mask)[0])


def _check_tensors(_nan: bool = True, **tensors: Tensor) -> None:
    """Torch tensors, all of one shape, no NaN (unless ``_nan`` is False)."""
    for name, t in tensors.items():
        if not torch.is_tensor(t):
            raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"tensors must have the same shape, got {shapes}")
    for name, t in tensors.items() if _nan else ():
        nan = torch.isnan(t)
        if nan.any():
            raise ValueError(f"{name} contains NaN (first at index {_first_index(nan)})")


def _check_logps(**tensors: Tensor) -> None:
    """Torch tensors, all of one shape, finite, and <= 0 (log-probabilities)."""
    _check_tensors(False, **tensors)
    for name, t in tensors.items():
        # One pass in the common case: -inf < t <= 0 is false exactly for NaN, +-inf and positive values.
        if bool(((t <= 0) & (t > -math.inf)).all()):
            continue
        nan = torch.isnan(t)
        if nan.any():
            raise ValueError(f"{name} contains NaN (first at index {_first_index(nan)})")
        positive = t > 0
        if positive.any():
            raise ValueError(f"{name} contains a positive log-probability {t[positive][0].item():.6g} "
                             f"(first at index {_first_index(positive)}); a log-probability is <= 0")
        raise ValueError(f"{name} contains -inf (zero probability, first at index {_first_index(torch.isinf(t))}): "
                         "the log-ratios are undefined")


def _rewards(beta, pc, pr, rc, rr) -> tuple[Tensor, Tensor]:
    return (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


def dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *, beta):
    """DPO on an ordered pair (Paper Eq. 8; docs/theory.md §2; Rafailov et al. 2023, Eq. 7).

    ``loss = -log sigma(h) = softplus(-h)``, ``h = beta ((pc - pr) - (rc - rr))``.

    Args: four log-probability tensors of one shape (B,), finite, <= 0 (sums or per-token means);
    beta: finite, > 0. Returns :class:`LossOutput`, losses (B,) in (0, inf), ``log 2`` at the
    reference. Target form with ``T = delta_ref``.
    """
    _check_positive("beta", beta)
    _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    h = beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps))
    # softplus(-h) is -log sigma(h) without the underflow of log(sigmoid(h)) for h << 0.
    return LossOutput(_softplus(-h), *_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                                                reference_chosen_logps, reference_rejected_logps))


def dpo_bt_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                beta, q):
    """DPO with Bradley-Terry label probability ``q`` (population form; docs/theory.md §2).

    ``loss = q softplus(-h) + (1 - q) softplus(h)``, ``h = beta (delta - delta_ref)``: the expected
    DPO loss when "chosen" wins with probability q. Its minimiser in ``h`` is ``logit(q)``.

    Args: four log-probability tensors of one shape (B,), finite, <= 0; beta: finite, > 0;
    q: float or tensor broadcastable to (B,), in [0, 1]. Returns :class:`LossOutput`.
    Not of target form (no certificate).
    """
    _check_positive("beta", beta)
    _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    q_t = torch.as_tensor(q, dtype=policy_chosen_logps.dtype, device=policy_chosen_logps.device)
    if torch.isnan(q_t).any() or (q_t < 0).any() or (q_t > 1).any():
        raise ValueError(f"q must lie in [0, 1], got {q!r}")
    h = beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps))
    losses = q_t * _softplus(-h) + (1 - q_t) * _softplus(h)  # softplus: no log(sigmoid) underflow
    return LossOutput(losses, *_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                                        reference_chosen_logps, reference_rejected_logps))


def ipo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *, beta):
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm...", Eq. 17; as in TRL with tau = beta).

    ``loss = ((delta - delta_ref) - 1/(2 beta))^2``. Its minimiser is the finite
    ``delta = delta_ref + 1/(2 beta)``, negative when ``delta_ref < -1/(2 beta)``: IPO carries no
    alignment certificate. (TRL feeds IPO per-token mean log-probabilities; pass what you use.)

    Args: four log-probability tensors of one shape (B,), finite, <= 0; beta: finite, > 0.
    Returns :class:`LossOutput`, losses (B,) in [0, inf).
    """
    _check_positive("beta", beta)
    _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return LossOutput((logits - 1 / (2 * beta)) ** 2, *_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                                                                 reference_chosen_logps, reference_rejected_logps))


def dpop_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
              beta, lam):
    """DPO-Positive (Pal et al. 2024, "Smaug", Eq. 3).

    ``loss = -log sigma(beta ((delta - delta_ref) - lam max(0, rc - pc)))``
    ``= softplus(-(h - beta lam max(0, rc - pc)))``: the penalty grows when the policy lowers the
    chosen log-probability ``pc`` below the reference's ``rc``.

    Args: four log-probability tensors of one shape (B,), finite, <= 0; beta: finite, > 0;
    lam: finite, >= 0 (lam = 0 gives DPO). Returns :class:`LossOutput`. Not of target form.
    """
    _check_positive("beta", beta)
    _check_finite_number("lam", lam)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    h = beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps))
    penalty = beta * lam * torch.clamp(reference_chosen_logps - policy_chosen_logps, min=0)
    return LossOutput(_softplus(-(h - penalty)), *_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                                                            reference_chosen_logps, reference_rejected_logps))


def _target_loss(name, pc, pr, rc, rr, beta, target):
    """``softplus(beta (T - delta))`` with its rewards."""
    delta = pc - pr
    return LossOutput(_softplus(beta * (target - delta)), *_rewards(beta, pc, pr, rc, rr))


def _dpo_target(rc, rr, *, beta):
    return rc - rr


def _eq17_target(rc, rr, *, beta, gamma):
    if gamma == 0:
        # gamma = 0 is DPO exactly; computing 0 * exp(...) would give NaN where exp(...) overflows.
        return rc - rr
    # m_ref = gamma (1/pi_ref(y_w) + 1/pi_ref(y_l)) = gamma exp(logaddexp(-ref_w, -ref_l)), in log space so
    # it overflows only when the margin itself is beyond the float range (then the loss is +inf, faithfully).
    m_ref = gamma * torch.exp(torch.logaddexp(-rc, -rr))
    return (rc - rr) + m_ref / beta


def _clip_target(rc, rr, *, beta, margin=0.0):
    return torch.clamp(rc - rr, min=margin)


def _smooth_target(rc, rr, *, beta, gamma, tau, alpha):
    # m_tau = (1/tau) log(1 + exp(tau (gamma - delta_ref))) = softplus(tau (gamma - delta_ref)) / tau,
    # softplus so that exp does not overflow for gamma - delta_ref >> 0.
    delta_ref = rc - rr
    m_tau = _softplus(tau * (gamma - delta_ref)) / tau
    return delta_ref + m_tau / alpha


def _easy_target(rc, rr, *, beta, gamma):
    # The code's 'easy' margin divides by the reference's mean token *log*-probability, which is < 0:
    # m = gamma (1/lbar(y_w) + 1/lbar(y_l)) is therefore negative for gamma > 0 (a deviation from Eq. 17).
    if (rc >= 0).any() or (rr >= 0).any():
        raise ValueError("cpo_easy needs strictly negative reference mean log-probabilities (it divides by them)")
    m = gamma * (1.0 / rc + 1.0 / rr)
    return (rc - rr) + m / beta


_TARGETS: dict[str, Callable] = {
    "dpo": _dpo_target,
    "cpo_eq17": _eq17_target,
    "cpo_clip": _clip_target,
    "cpo_smooth": _smooth_target,
    "cpo_easy": _easy_target,
}

#: The parameters (besides beta) each target-form loss takes: name -> (required, optional).
TARGET_PARAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dpo": ((), ()),
    "cpo_eq17": (("gamma",), ()),
    "cpo_clip": ((), ("margin",)),
    "cpo_smooth": (("gamma", "tau", "alpha"), ()),
    "cpo_easy": (("gamma",), ()),
}


def _validate_params(name: str, beta: float, params: dict) -> None:
    _check_positive("beta", beta)
    if name in TARGET_PARAMS:
        required, optional = TARGET_PARAMS[name]
        unknown = sorted(set(params) - set(required) - set(optional))
        missing = [k for k in required if k not in params]
        if unknown or missing:
            raise ValueError(f"bad parameters for {name!r}: unknown {unknown}, missing {missing}; it takes beta"
                             + "".join(f", {k}" for k in required) + "".join(f", {k} (optional)" for k in optional))
    for key in ("gamma", "margin"):
        if key in params:
            _check_finite_number(key, params[key])
    for key in ("tau", "alpha"):
        if key in params:
            _check_positive(key, params[key])


def implicit_target(name, reference_chosen_logps, reference_rejected_logps, *, beta, **params) -> Tensor:
    """The target ``T`` with ``loss = softplus(beta (T - delta))`` for a target-form loss (docs/theory.md §7, §10).

    name: one of :data:`TARGET_FORM`; params: as :data:`TARGET_PARAMS` lists.
      dpo:        T = delta_ref                                                                    (Paper Eq. 8)
      cpo_eq17:   T = delta_ref + m_ref / beta,  m_ref = gamma (1/pi_ref(y_w) + 1/pi_ref(y_l))    (Paper Eq. 17)
      cpo_clip:   T = max(delta_ref, margin), margin default 0                                     (code 'clip')
      cpo_smooth: T = delta_ref + m_tau / alpha,  m_tau = softplus(tau (gamma - delta_ref)) / tau   (code 'cpo')
      cpo_easy:   T = delta_ref + m / beta,  m = gamma (1/lbar_ref(y_w) + 1/lbar_ref(y_l))          (code 'easy')

    Args: reference_chosen_logps, reference_rejected_logps: tensors of one shape (B,), finite, <= 0
    (strictly < 0, per-token means, for cpo_easy); beta: finite, > 0; gamma, margin: finite;
    tau, alpha: finite, > 0. Returns T, shape (B,); T may be +inf for cpo_eq17 when the margin
    overflows (summed log-probabilities of a few hundred nats make 1/pi_ref astronomically large).
    """
    if name not in _TARGETS:
        raise ValueError(f"no target form for loss {name!r}; valid: {', '.join(_TARGETS)}")
    _validate_params(name, beta, params)
    _check_logps(reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    return _TARGETS[name](reference_chosen_logps, reference_rejected_logps, beta=beta, **params)


def _make_target_loss(name: str, doc: str):
    def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
             beta, **params):
        _validate_params(name, beta, params)
        _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                     reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
        target = _TARGETS[name](reference_chosen_logps, reference_rejected_logps, beta=beta, **params)
        return _target_loss(name, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                            reference_rejected_logps, beta, target)

    loss.__name__ = loss.__qualname__ = f"{name}_loss"
    loss.__doc__ = doc
    return loss


_COMMON_ARGS = """
    Args: policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps:
    tensors of one shape (B,), finite, <= 0. Returns :class:`LossOutput`, losses (B,) in (0, inf].
    Target form: ``loss = softplus(beta (T - delta))`` with ``T = implicit_target(name, ...)``, so
    ``loss < critical_loss(T, beta=beta, margin=m)`` <=> ``delta > m`` (:func:`alignment_certificate`).
    """

cpo_eq17_loss = _make_target_loss("cpo_eq17", """CPO, reference-adaptive margin (Paper Eq. 17; docs/theory.md §10).

    ``loss = -log sigma(beta (delta - delta_ref) - m_ref)``, ``m_ref = gamma (1/pi_ref(y_w) + 1/pi_ref(y_l))``
    held fixed (from the reference). Params: beta > 0, gamma finite (gamma = 0 gives DPO). With summed
    sequence log-probabilities 1/pi_ref is astronomically large: the margin is computed in log space
    and may be +inf (then the loss is +inf and certifies nothing).
    """ + _COMMON_ARGS)
cpo_clip_loss = _make_target_loss("cpo_clip", """CPO, clipped target (authors' code option 'clip'; docs/theory.md §10).

    ``loss = -log sigma(beta (delta - max(delta_ref, margin)))``; the code's default is margin = 0, the
    natural generalisation ``max(delta_ref, margin)`` is the toolkit's. Params: beta > 0, margin finite
    (default 0). ``loss < log 2`` certifies ``delta > margin`` for every pair. Prior art: with margin 0
    this is HyPO (Yuan et al., arXiv 2602.11902, ICLR 2026), which calls pairs with delta_ref < 0
    "pessimistic" and the U phenomenon "premature satisfaction" (docs/theory.md §10, §15).
    """ + _COMMON_ARGS)
cpo_smooth_loss = _make_target_loss("cpo_smooth", """CPO, smooth target (authors' code option 'cpo'; docs/theory.md §10).

    ``loss = -log sigma(beta delta - beta delta_ref - (beta/alpha) m_tau)``,
    ``m_tau = (1/tau) log(1 + exp(tau (gamma - delta_ref)))``. Params: beta > 0, gamma finite, tau > 0,
    alpha > 0 (code defaults beta=0.1, gamma=0.5, tau=2, alpha=1; a released checkpoint used
    beta=2.5, alpha=0.25).
    """ + _COMMON_ARGS)
cpo_easy_loss = _make_target_loss("cpo_easy", """CPO 'easy' margin (authors' code option 'easy'; docs/theory.md §10).

    ``loss = -log sigma(beta (delta - delta_ref) - m)``, ``m = gamma (1/lbar_ref(y_w) + 1/lbar_ref(y_l))``
    where ``lbar_ref`` is the reference's per-token *mean log*-probability (so m < 0 for gamma > 0).
    Pass per-token mean log-probabilities for all four tensors, as the code does; the reference ones
    must be strictly < 0. Params: beta > 0, gamma finite. The margin sits where the authors' code puts it
    (inside the sigmoid, subtracted from beta (delta - delta_ref)): this is exactly their placement. The
    deviation is from the paper's Eq. 17, whose margin uses reference *probabilities* 1/pi_ref(y) of whole
    sequences (positive, huge) where the code uses 1/lbar_ref(y) of mean *log*-probabilities (negative,
    small); the report names it (docs/theory.md §10).
    """ + _COMMON_ARGS)

#: Every loss by name; each is ``f(pc, pr, rc, rr, *, beta, **params) -> LossOutput``.
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
#: The names of the target-form losses (``loss = softplus(beta (T - delta))``), the ones with a certificate.
TARGET_FORM = tuple(_TARGETS)


def get_loss(name: str) -> Callable[..., LossOutput]:
    """The loss function called ``name`` (a key of :data:`LOSSES`); a ValueError lists the valid names."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name]


def critical_loss(target: Tensor, *, beta: float, margin: float = 0.0) -> Tensor:
    """The critical loss ``softplus(beta (T - margin))`` of a target-form loss (docs/theory.md §7).

    For a target-form loss, ``loss < critical_loss`` <=> ``delta > margin``. For DPO (T = delta_ref,
    margin 0): ``l_crit = softplus(beta delta_ref) = log(1 + (pi_ref(y_w)/pi_ref(y_l))^beta)``, below
    ``log 2`` exactly when ``delta_ref < 0``.

    Args: target: tensor (B,) from :func:`implicit_target`, no NaN (+inf allowed); beta: finite, > 0;
    margin: finite. Returns a tensor (B,) in (0, inf].
    """
    _check_positive("beta", beta)
    _check_finite_number("margin", margin)
    _check_tensors(target=target)
    return _softplus(beta * (target - margin))


def delta_from_loss(losses: Tensor, target: Tensor, *, beta: float) -> Tensor:
    """Invert a target-form loss: ``delta = T - log(e^loss - 1) / beta`` (docs/theory.md §7).

    Args: losses: tensor (B,), > 0, no NaN (+inf gives delta = -inf); target: tensor of the same
    shape from :func:`implicit_target`; beta: finite, > 0. Returns delta, shape (B,).
    ``log(expm1(l))`` is evaluated as ``l + log(-expm1(-l))`` for large l, where expm1 overflows.
    """
    _check_positive("beta", beta)
    _check_tensors(losses=losses, target=target)
    if (losses <= 0).any():
        raise ValueError("a target-form loss is > 0; got a value <= 0")
    large = losses > 20
    log_expm1 = torch.where(large, losses + torch.log(-torch.expm1(-losses)),
                            torch.log(torch.expm1(torch.where(large, torch.ones_like(losses), losses))))
    return target - log_expm1 / beta


def certificate_tolerance(target: Tensor, *, beta: float, margin: float = 0.0, dtype=None) -> Tensor:
    """The relative rounding margin of :func:`alignment_certificate`, float64, the shape of ``target``:

        tol = 4 eps (4 + beta |m| + max(0, -beta (T - m)))      (eps of ``dtype``, default the target's)

    Derivation (u = eps/2 the unit roundoff; x = beta (T - delta) the loss's argument, x_c = beta (T - m) the
    critical one; T is the same float tensor in both, so its own rounding cancels): fl(pc - pr), fl(T - .),
    fl(beta .) give |x-hat - x| <= u (beta |delta| + 2 |x|). A pair the certificate could get wrong has
    delta <= m, so x >= x_c and beta |delta| <= beta |m| + (x - x_c). softplus turns an error dx into a relative
    one dx sigmoid(x)/softplus(x) <= dx min(1, 1/x) and adds <= 4u of its own (logaddexp, log1p, exp). Hence
    the loss errs by <= u (beta |m| + 4 + 3 max(0, -x_c)) + 4u relative (x > 0: the 1/x absorbs 3x + |x_c|;
    x < 0: |x| <= |x_c|), and the critical loss by <= u (beta |m| + 2 + 2 max(0, -x_c)) + 4u (the margin rounded
    to the dtype adds u beta |m|). Their sum is <= eps (beta |m| + 7 + 2.5 max(0, -x_c)), and tol is at least 1.6
    times that (room for the rounding of the comparison itself).

    Valid for a loss computed from this same target tensor by :data:`LOSSES` (softplus(beta (T - delta)) in
    ``dtype``). A loss computed with a target rounded differently (a float32 loss against a float64 target) is
    outside it: recompute the target in the loss's dtype, as :mod:`dpo_rlhf_checks.integrations.trl` does.
    """
    eps = torch.finfo(dtype if dtype is not None else target.dtype).eps
    x_c = beta * (target.detach().double() - float(margin))
    return 4.0 * eps * (4.0 + beta * abs(float(margin)) + torch.clamp(-x_c, min=0.0))


def alignment_certificate(losses: Tensor, target: Tensor, *, beta: float, margin: float = 0.0) -> Tensor:
    """Per pair, True where the loss value alone proves ``delta > margin``: ``loss < critical_loss``, with the
    rounding of both sides on the safe side.

    Exact rule (docs/theory.md §7): for a target-form loss ``loss < critical_loss(T, beta, margin)`` <=> ``delta >
    margin``. In floating point both sides carry rounding (a few eps relative, more for beta |m| >> 1 or a critical
    loss far below log 2), and a loss a hair below the threshold is no proof: certified is
    ``loss < critical_loss (1 - tol) - 4 s`` with ``tol`` = :func:`certificate_tolerance` (derived there) and s
    the smallest subnormal of the dtype (the absolute error of a value that underflowed). So a pair is never
    certified with ``delta <= margin`` (exact arithmetic on the float inputs pc, pr); the price is that pairs
    within ``tol`` of the threshold are not certified (conservative), and nothing is certified where ``tol >= 1/2``
    (``beta |m|`` or ``-beta (T - m)`` beyond ~1/(8 eps)), where the critical loss is infinite, or where it
    underflows (``beta (T - m) < -745`` in float64, ``< -103`` in float32). The audit counts these refusals as
    ``certificate_mismatch_fraction``. DPO-Positive, IPO and dpo_bt have no certificate.

    Args: losses: tensor (B,), no NaN, computed by the loss of :data:`LOSSES` from this ``target`` (same values, the
    same dtype or a coarser one: the tolerance takes the coarser eps); target: tensor of the same shape from
    :func:`implicit_target`; beta: finite, > 0; margin: finite. Returns a bool tensor (B,).
    """
    _check_tensors(losses=losses, target=target)
    crit = critical_loss(target, beta=beta, margin=margin).double()
    coarse = losses.dtype if torch.finfo(losses.dtype).eps >= torch.finfo(target.dtype).eps else target.dtype
    fi = torch.finfo(coarse)
    tol = certificate_tolerance(target, beta=beta, margin=margin, dtype=coarse)
    # tol >= 1/2: the rounding swamps the comparison, no proof either way; an infinite critical loss (T = +inf, or
    # beta (T - m) overflowing) proves nothing either
    return (tol < 0.5) & torch.isfinite(crit) & (losses.double() < crit * (1.0 - tol) - 4.0 * fi.tiny * fi.eps)
