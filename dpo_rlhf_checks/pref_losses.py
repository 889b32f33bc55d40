"""Every preference loss a TRL 1.16 user can pick, written from its formula, with its GPO form as data.

DPOTrainer (``DPOConfig.loss_type``): sigmoid, hinge, ipo, exo_pair, nca_pair, robust, bco_pair, sppo_hard,
aot, aot_unpaired, apo_zero, apo_down, discopop, sft, sigmoid_norm; each of sigmoid, sigmoid_norm, hinge,
ipo, exo_pair, robust, discopop also under ``f_divergence_type`` forward_kl / js_divergence /
alpha_divergence. CPOTrainer (``CPOConfig.loss_type``, reference-free): sigmoid, hinge, ipo, simpo, alphapo,
here ``cpo_sigmoid`` ... ``cpo_alphapo``.

Conventions (those of :mod:`dpo_rlhf_checks.losses`): TRL's argument order
``(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)``, tensors
of one shape (B,), finite and <= 0, SUMMED over the completion's tokens (what TRL's DPOTrainer computes);
the per-token losses (ipo, sigmoid_norm, sft) also take ``chosen_lengths`` / ``rejected_lengths`` (token
counts, >= 1) and divide inside, as TRL does. CPO losses take the two policy tensors only, and TRL's
CPOTrainer passes per-token MEANS for ipo / simpo / alphapo and sums for sigmoid / hinge: pass the same.
Each returns :class:`~dpo_rlhf_checks.losses.LossOutput` with per-example ``losses`` (the caller averages;
aot / aot_unpaired are per sorted rank, sft see :func:`sft_loss`) and the detached rewards
``beta * (policy - reference)`` TRL logs. Parameters are checked with one-line ``ValueError``s.

GPO form (Tang et al., "Generalized Preference Optimization", ICML 2024, arXiv 2402.05749): a loss is
``l = f(beta h)`` with ``h = s(r_w) - s(r_l)``, ``r = log pi(y) - log pi_ref(y)`` and ``s`` the score of
the f-divergence (reverse_kl: s(r) = r, so h = delta - delta_ref). :data:`SPECS` holds, per loss, its kind
("gpo", "absolute": per-response terms, "batch-coupled": sorted across the batch) and for gpo losses
:func:`gpo_form` gives ``f`` and its minimiser / flat point ``t_f`` (None when f decreases to its
infimum at +inf), so ``l = f(beta h)`` can be checked and the atlas can read the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from dpo_rlhf_checks.losses import LossOutput, _check_logps, _check_positive, _is_real, _softplus

Tensor = torch.Tensor

__all__ = ["F_DIVERGENCES", "GPOForm", "LossSpec", "PREF_LOSSES", "SPECS", "get_pref_loss", "gpo_form",
           "score"]

F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


# ----------------------------------------------------------------------------------------------
# checks


def _check_unit_open(name, value, lo_closed=False, hi=1.0):
    ok = _is_real(value) and math.isfinite(value) and (value >= 0 if lo_closed else value > 0) and value < hi
    if not ok:
        raise ValueError(f"{name} must lie in {'[' if lo_closed else '('}0, {hi}), got {value!r}")


def _check_lengths(ref: Tensor, **lengths: Tensor) -> None:
    for name, t in lengths.items():
        if not torch.is_tensor(t):
            raise TypeError(f"{name} must be a torch tensor of token counts, got {type(t).__name__}")
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(f"{name} must have the log-probabilities' shape {tuple(ref.shape)}, got {tuple(t.shape)}")
        if not bool((t >= 1).all()) or not bool((t == torch.floor(t)).all()):
            raise ValueError(f"{name} must be whole token counts >= 1")


def _check_f_div(f_divergence_type, f_alpha_divergence_coef):
    if f_divergence_type not in F_DIVERGENCES:
        raise ValueError(f"f_divergence_type must be one of {', '.join(F_DIVERGENCES)}, got {f_divergence_type!r}")
    if f_divergence_type == "alpha_divergence":
        if not (_is_real(f_alpha_divergence_coef) and math.isfinite(f_alpha_divergence_coef)):
            raise ValueError("alpha_divergence needs a finite f_alpha_divergence_coef, got "
                             f"{f_alpha_divergence_coef!r}")


def _logps(pc, pr, rc, rr):
    _check_logps(policy_chosen_logps=pc, policy_rejected_logps=pr, reference_chosen_logps=rc,
                 reference_rejected_logps=rr)


def _rewards(beta, pc, pr, rc, rr):
    return (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


# ----------------------------------------------------------------------------------------------
# scores of the f-divergences (Wang et al., "Beyond Reverse KL", arXiv 2309.16240, Table 1: s = f'(u), u = e^r)


def score(logratio: Tensor, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef=None) -> Tensor:
    """The score ``s(r) = f'(e^r)`` of an f-divergence at the log-ratio ``r`` (f-DPO, arXiv 2309.16240, Table 1).

    reverse_kl: r.  forward_kl: 1 - e^-r (= -expm1(-r), exact near r = 0).  js_divergence: log 2 + log sigma(r).
    alpha_divergence: (e^{(a-1) r} - 1)/(a - 1) = expm1((a-1) r)/(a-1), ``a = f_alpha_divergence_coef`` (TRL's
    parameter; the paper's alpha is ``1 - a``: the paper's f'(u) = (1 - u^-alpha)/alpha); a = 1 is reverse_kl.
    No clamping (TRL clamps (a-1) r at 80 in float32): the score is +inf where e^{(a-1) r} overflows.
    """
    if f_divergence_type == "reverse_kl":
        return logratio
    if f_divergence_type == "forward_kl":
        return -torch.expm1(-logratio)
    if f_divergence_type == "js_divergence":
        return math.log(2) - _softplus(-logratio)  # log sigma(r) = -softplus(-r), no log(sigmoid) underflow
    if f_divergence_type == "alpha_divergence":
        a1 = f_alpha_divergence_coef - 1.0
        return logratio if a1 == 0 else torch.expm1(a1 * logratio) / a1
    raise ValueError(f"f_divergence_type must be one of {', '.join(F_DIVERGENCES)}, got {f_divergence_type!r}")


def _h(pc, pr, rc, rr, f_divergence_type, f_alpha_divergence_coef, chosen_lengths=None, rejected_lengths=None):
    """h = s(r_w) - s(r_l), per-token (each score divided by its length) when lengths are given (TRL's ipo,
    sigmoid_norm)."""
    sw = score(pc - rc, f_divergence_type, f_alpha_divergence_coef)
    sl = score(pr - rr, f_divergence_type, f_alpha_divergence_coef)
    if chosen_lengths is not None:
        sw, sl = sw / chosen_lengths.to(sw.dtype), sl / rejected_lengths.to(sl.dtype)
    return sw - sl


# ----------------------------------------------------------------------------------------------
# the functions f of the GPO form l = f(t), t = beta h


def _f_logistic(t):  # -log sigma(t)
    return _softplus(-t)


def _f_hinge(t):  # max(0, 1 - t)
    return torch.relu(1 - t)


def _make_f_ipo(beta):
    # (h - 1/(2 beta))^2 = (t - 1/2)^2 / beta^2
    return lambda t: (t / beta - 1 / (2 * beta)) ** 2


def _make_f_exo(eps):
    log_pw, log_pl = math.log1p(-eps), math.log(eps)

    def f(t):  # KL(Bern(sigma(t)) || Bern(1 - eps))
        log_qw, log_ql = -_softplus(-t), -_softplus(t)
        return torch.sigmoid(t) * (log_qw - log_pw) + torch.sigmoid(-t) * (log_ql - log_pl)
    return f


def _make_f_smoothed(eps, shift=0.0):
    # (1 - eps)(-log sigma(t - shift)) + eps(-log sigma(-(t - shift)))  (cDPO / TRL's aot and CPO smoothing)
    return lambda t: (1 - eps) * _softplus(-(t - shift)) + eps * _softplus(t - shift)


def _make_f_robust(eps):
    # rDPO: ((1 - eps)(-log sigma(t)) - eps(-log sigma(-t))) / (1 - 2 eps)
    return lambda t: ((1 - eps) * _softplus(-t) - eps * _softplus(t)) / (1 - 2 * eps)


def _make_f_discopop(tau):
    def f(t):
        mod = torch.sigmoid(t / tau)
        # e^-t sigma(t/tau) = exp(-t - softplus(-t/tau)): one exp of a bounded-above exponent for t < 0, no inf * 0
        return _softplus(-t) * (1 - mod) + torch.exp(-t - _softplus(-t / tau))
    return f


class GPOForm(NamedTuple):
    """``l = f(beta h)``: f (a function of t = beta h on tensors); t_f the smallest minimiser of f (for hinge
    the point from which f is flat), None when f decreases to its infimum at t = +inf; flat: f is constant on
    [t_f, inf); convex: f is convex on R (tests check it numerically); h: what h is for this loss;
    local_minima: the strict local minimisers of a non-convex f in [-20, 20] (found numerically: a grid
    scan of f' at step 0.01 refined by bisection; a minimum between two grid points closer than 0.01 to
    a maximum can be missed), e.g. DiscoPOP's at t ~ -0.119 for tau = 0.05, where gradient descent
    started at the reference (t = 0, f'(0) > 0) stops with h < 0; () for convex f."""

    f: Callable[[Tensor], Tensor]
    t_f: float | None
    flat: bool
    convex: bool
    h: str
    local_minima: tuple[float, ...] = ()


def _fprime(f, t: Tensor) -> Tensor:
    x = t.detach().clone().requires_grad_(True)
    f(x).sum().backward()
    return x.grad


def _local_minima(f, lo=-20.0, hi=20.0, n=4001) -> tuple[float, ...]:
    """Points in [lo, hi] where f' changes sign from - to +, each refined by 45 bisection steps (float64:
    the grid step 0.01 / 2^45 ~ 3e-16, float64 resolution at |t| ~ 1)."""
    t = torch.linspace(lo, hi, n, dtype=torch.float64)
    g = _fprime(f, t)
    out = []
    for i in torch.nonzero((g[:-1] < 0) & (g[1:] >= 0)).flatten().tolist():
        a, b = float(t[i]), float(t[i + 1])
        for _ in range(45):
            m = 0.5 * (a + b)
            if float(_fprime(f, torch.tensor([m], dtype=torch.float64))) < 0:
                a = m
            else:
                b = m
        out.append(0.5 * (a + b))
    return tuple(out)


_H_SUM = "s(r_w) - s(r_l), r summed log-ratio (reverse_kl: delta - delta_ref)"
_H_TOK = "s(r_w)/n_w - s(r_l)/n_l, per-token (n = completion length)"
_H_FREE = "s(y_w) - s(y_l) of the policy alone (no reference); s = log-prob or AlphaPO's (1 - p^-alpha)/alpha"


def _is_convex_on_grid(f, lo=-30.0, hi=60.0, n=90001) -> bool:
    t = torch.linspace(lo, hi, n, dtype=torch.float64)
    y = f(t)
    return bool((y[2:] - 2 * y[1:-1] + y[:-2] >= -1e-12).all())


def _logit_eps(eps):
    return math.log1p(-eps) - math.log(eps)  # log((1 - eps)/eps), minimiser of the eps-smoothed logistic


def gpo_form(name: str, *, beta: float, **params) -> GPOForm | None:
    """The GPO form of loss ``name`` under its parameters, or None for absolute-term and batch-coupled losses."""
    _check_positive("beta", beta)
    if name not in SPECS:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(SPECS)}")
    unknown = sorted(set(params) - set(SPECS[name].params))
    if unknown:
        takes = ", ".join(SPECS[name].params) or "none"
        raise ValueError(f"unknown parameters {unknown} for {name!r}; it takes {takes}")
    eps = params.get("label_smoothing", 0.0)
    if name in ("sigmoid", "sigmoid_norm"):
        return GPOForm(_f_logistic, None, False, True, _H_TOK if name == "sigmoid_norm" else _H_SUM)
    if name == "hinge":
        return GPOForm(_f_hinge, 1.0, True, True, _H_SUM)
    if name == "ipo":
        return GPOForm(_make_f_ipo(beta), 0.5, False, True, _H_TOK)
    if name == "exo_pair":
        _check_unit_open("label_smoothing", eps)
        # bounded and non-constant on R, hence not convex (unimodal); minimum 0 at sigma(t) = 1 - eps
        f = _make_f_exo(eps)
        return GPOForm(f, _logit_eps(eps), False, False, _H_SUM, _local_minima(f))
    if name == "robust":
        _check_unit_open("label_smoothing", eps, lo_closed=True, hi=0.5)
        # f' = -((1 - eps) sigma(-t) + eps sigma(t))/(1 - 2 eps) < 0: decreasing to -inf (eps > 0) or 0
        return GPOForm(_make_f_robust(eps), None, False, True, _H_SUM)
    if name == "discopop":
        # infimum 0 at +inf; for small tau (TRL's default 0.05) NOT monotone: a local minimum at t < 0
        if "discopop_tau" not in params:
            raise ValueError("discopop needs discopop_tau (TRL default 0.05)")
        _check_positive("discopop_tau", params["discopop_tau"])
        f = _make_f_discopop(params["discopop_tau"])
        return GPOForm(f, None, False, _is_convex_on_grid(f), _H_SUM, _local_minima(f))
    if name in ("cpo_sigmoid", "cpo_simpo", "cpo_alphapo"):
        if name != "cpo_sigmoid" and "simpo_gamma" not in params:
            raise ValueError(f"{name} needs simpo_gamma (TRL default 0.5)")
        shift = params["simpo_gamma"] if name != "cpo_sigmoid" else 0.0
        t_f = None if eps == 0 else shift + _logit_eps(eps)
        return GPOForm(_make_f_smoothed(eps, shift), t_f, False, True, _H_FREE)
    if name == "cpo_hinge":
        return GPOForm(_f_hinge, 1.0, True, True, _H_FREE)
    if name == "cpo_ipo":
        return GPOForm(_make_f_ipo(beta), 0.5, False, True, _H_FREE)
    return None


# ----------------------------------------------------------------------------------------------
# DPOTrainer losses


def _gpo_loss(name, pc, pr, rc, rr, beta, f, f_divergence_type, f_alpha_divergence_coef, lengths=(None, None)):
    _check_positive("beta", beta)
    _check_f_div(f_divergence_type, f_alpha_divergence_coef)
    _logps(pc, pr, rc, rr)
    if lengths[0] is not None or lengths[1] is not None:
        _check_lengths(pc, chosen_lengths=lengths[0], rejected_lengths=lengths[1])
    h = _h(pc, pr, rc, rr, f_divergence_type, f_alpha_divergence_coef, *lengths)
    return LossOutput(f(beta * h), *_rewards(beta, pc, pr, rc, rr))


def sigmoid_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                 beta, f_divergence_type="reverse_kl", f_alpha_divergence_coef=None):
    """DPO, TRL ``loss_type="sigmoid"`` (Rafailov et al. 2023, Eq. 7; f-DPO, arXiv 2309.16240, Eq. 9).

    ``loss = -log sigma(beta h) = softplus(-beta h)``, h = s(r_w) - s(r_l) (summed log-ratios).
    GPO: logistic f, t_f = None. beta > 0; f_divergence_type one of :data:`F_DIVERGENCES`."""
    return _gpo_loss("sigmoid", policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                     reference_rejected_logps, beta, _f_logistic, f_divergence_type, f_alpha_divergence_coef)


def hinge_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
               beta, f_divergence_type="reverse_kl", f_alpha_divergence_coef=None):
    """SLiC hinge, TRL ``loss_type="hinge"`` (Zhao et al. 2023, arXiv 2305.10425, Eq. 3, margin 1/beta).

    ``loss = max(0, 1 - beta h)``. GPO: f(t) = max(0, 1 - t), flat from t_f = 1 (h = 1/beta) on."""
    return _gpo_loss("hinge", policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                     reference_rejected_logps, beta, _f_hinge, f_divergence_type, f_alpha_divergence_coef)


def ipo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
             beta, chosen_lengths, rejected_lengths, f_divergence_type="reverse_kl", f_alpha_divergence_coef=None):
    """IPO as TRL computes it, ``loss_type="ipo"`` (Azar et al. 2023, arXiv 2310.12036, Eq. 17, tau = beta).

    ``loss = (h_tok - 1/(2 beta))^2``, ``h_tok = s(r_w)/n_w - s(r_l)/n_l``: PER-TOKEN (TRL divides the summed
    scores by the completion lengths; the paper's Eq. 17 has sequence log-ratios; the summed form is
    :func:`dpo_rlhf_checks.losses.ipo_loss`). GPO: f(t) = (t - 1/2)^2 / beta^2, t_f = 1/2 on per-token h."""
    return _gpo_loss("ipo", policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                     reference_rejected_logps, beta, _make_f_ipo(beta), f_divergence_type, f_alpha_divergence_coef,
                     (chosen_lengths, rejected_lengths))


def sigmoid_norm_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                      *, beta, chosen_lengths, rejected_lengths, f_divergence_type="reverse_kl",
                      f_alpha_divergence_coef=None):
    """Length-normalised DPO, TRL ``loss_type="sigmoid_norm"`` (TRL docs; DPO Eq. 7 on per-token log-ratios).

    ``loss = -log sigma(beta h_tok)``, h_tok = s(r_w)/n_w - s(r_l)/n_l. GPO: logistic f, t_f = None."""
    return _gpo_loss("sigmoid_norm", policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                     reference_rejected_logps, beta, _f_logistic, f_divergence_type, f_alpha_divergence_coef,
                     (chosen_lengths, rejected_lengths))


def exo_pair_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                  beta, label_smoothing, f_divergence_type="reverse_kl", f_alpha_divergence_coef=None):
    """EXO-pref, TRL ``loss_type="exo_pair"`` (Ji et al. 2024, arXiv 2402.00856, Eq. 16, K = 2).

    ``loss = KL(q || p)``, q = (sigma(beta h), sigma(-beta h)), p = (1 - eps, eps), eps = label_smoothing in
    (0, 1). GPO: f bounded, minimum 0 at t_f = log((1 - eps)/eps); NOT convex (unimodal)."""
    _check_unit_open("label_smoothing", label_smoothing)
    return _gpo_loss("exo_pair", policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                     reference_rejected_logps, beta, _make_f_exo(label_smoothing), f_divergence_type,
                     f_alpha_divergence_coef)


def robust_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                beta, label_smoothing, f_divergence_type="reverse_kl", f_alpha_divergence_coef=None):
    """Robust DPO, TRL ``loss_type="robust"`` (Chowdhury et al. 2024, arXiv 2403.00409, Eq. 3).

    ``loss = ((1 - eps)(-log sigma(beta h)) - eps(-log sigma(-beta h)))/(1 - 2 eps)``, eps = label_smoothing
    in [0, 1/2) (TRL only warns outside it). GPO: convex, strictly decreasing, to -inf for eps > 0: t_f = None."""
    _check_unit_open("label_smoothing", label_smoothing, lo_closed=True, hi=0.5)
    return _gpo_loss("robust", policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                     reference_rejected_logps, beta, _make_f_robust(label_smoothing), f_divergence_type,
                     f_alpha_divergence_coef)


def discopop_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                  beta, discopop_tau, f_divergence_type="reverse_kl", f_alpha_divergence_coef=None):
    """DiscoPOP / log-ratio modulated loss, TRL ``loss_type="discopop"`` (Chris Lu et al. 2024, arXiv 2406.08414,
    Eq. 5).

    ``loss = (1 - sigma(t/tau)) (-log sigma(t)) + sigma(t/tau) e^-t``, t = beta h, tau = discopop_tau > 0
    (TRL default 0.05). The exponential term is computed as exp(-t - softplus(-t/tau)) (TRL's exp(-t) *
    sigmoid(t/tau) overflows to inf and then NaN for t << 0). GPO: infimum 0 at t = +inf (t_f = None), but for
    TRL's tau = 0.05 f is neither convex nor monotone: f'(0) = 1/(4 tau) - 3/4 - log(2)/(4 tau) ~ 0.78 > 0, and f
    has a local minimum at t ~ -0.119 (:func:`gpo_form` ``local_minima``), so descent from the reference lowers h."""
    _check_positive("discopop_tau", discopop_tau)
    return _gpo_loss("discopop", policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                     reference_rejected_logps, beta, _make_f_discopop(discopop_tau), f_divergence_type,
                     f_alpha_divergence_coef)


def nca_pair_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                  beta):
    """NCA, TRL ``loss_type="nca_pair"`` (Chen et al. 2024, "Noise Contrastive Alignment", arXiv 2402.05369, Eq. 11).

    ``loss = -log sigma(beta r_w) - 1/2 log sigma(-beta r_w) - 1/2 log sigma(-beta r_l)``. Absolute terms: in r_w
    its minimiser is beta r_w = log 2; r_l is pushed to -inf."""
    _check_positive("beta", beta)
    _logps(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    zw = beta * (policy_chosen_logps - reference_chosen_logps)
    zl = beta * (policy_rejected_logps - reference_rejected_logps)
    losses = _softplus(-zw) + 0.5 * _softplus(zw) + 0.5 * _softplus(zl)
    return LossOutput(losses, *_rewards(beta, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                                        reference_rejected_logps))


def bco_pair_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                  beta):
    """BCO on pairs, TRL ``loss_type="bco_pair"`` (Jung et al. 2024, arXiv 2404.04656, Eq. 5, WITHOUT its reward
    shift delta: TRL's code has none).

    ``loss = -log sigma(beta r_w) - log sigma(-beta r_l)``. Absolute terms: r_w -> +inf, r_l -> -inf."""
    _check_positive("beta", beta)
    _logps(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    zw = beta * (policy_chosen_logps - reference_chosen_logps)
    zl = beta * (policy_rejected_logps - reference_rejected_logps)
    return LossOutput(_softplus(-zw) + _softplus(zl), *_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                                                                 reference_chosen_logps, reference_rejected_logps))


def sppo_hard_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                   beta):
    """SPPO with hard labels, TRL ``loss_type="sppo_hard"`` (Wu et al. 2024, arXiv 2405.00675, Eq. 4.7, P = 1/0).

    ``loss = (r_w - 1/(2 beta))^2 + (r_l + 1/(2 beta))^2``. Absolute terms: pins r_w = 1/(2 beta),
    r_l = -1/(2 beta), so h = delta - delta_ref ends at 1/beta (t = beta h = 1)."""
    _check_positive("beta", beta)
    _logps(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    rw = policy_chosen_logps - reference_chosen_logps
    rl = policy_rejected_logps - reference_rejected_logps
    return LossOutput((rw - 0.5 / beta) ** 2 + (rl + 0.5 / beta) ** 2,
                      *_rewards(beta, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                                reference_rejected_logps))


def _aot(beta, a, b, eps, pc, pr, rc, rr):
    if a.dim() != 1:
        raise ValueError(f"aot losses sort along the batch: inputs must be 1-D (B,), got shape {tuple(a.shape)}")
    d = torch.sort(a, dim=0).values - torch.sort(b, dim=0).values  # (B,) per sorted rank
    losses = (1 - eps) * _softplus(-beta * d) + eps * _softplus(beta * d)
    return LossOutput(losses, *_rewards(beta, pc, pr, rc, rr))


def aot_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
             beta, label_smoothing=0.0):
    """AOT paired, TRL ``loss_type="aot"`` (Melnyk et al. 2024, arXiv 2406.05882, Eq. 9 with logistic loss).

    BATCH-COUPLED: d_(i) = sort(delta)_(i) - sort(delta_ref)_(i) (first-order stochastic dominance of the
    policy's margins over the reference's); ``losses[i] = (1 - eps) softplus(-beta d_(i)) + eps softplus(beta
    d_(i))`` per sorted rank i, NOT per input pair. eps = label_smoothing in [0, 1/2) (TRL default 0)."""
    _check_positive("beta", beta)
    _check_unit_open("label_smoothing", label_smoothing, lo_closed=True, hi=0.5)
    _logps(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    return _aot(beta, policy_chosen_logps - policy_rejected_logps, reference_chosen_logps - reference_rejected_logps,
                label_smoothing, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                reference_rejected_logps)


def aot_unpaired_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                      *, beta, label_smoothing=0.0):
    """AOT unpaired, TRL ``loss_type="aot_unpaired"`` (Melnyk et al. 2024, arXiv 2406.05882, Eq. 7).

    BATCH-COUPLED: d_(i) = sort(r_w)_(i) - sort(r_l)_(i); losses per sorted rank as :func:`aot_loss`."""
    _check_positive("beta", beta)
    _check_unit_open("label_smoothing", label_smoothing, lo_closed=True, hi=0.5)
    _logps(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    return _aot(beta, policy_chosen_logps - reference_chosen_logps, policy_rejected_logps - reference_rejected_logps,
                label_smoothing, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                reference_rejected_logps)


def apo_zero_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                  beta):
    """APO-zero, TRL ``loss_type="apo_zero"`` (D'Oosterlinck et al. 2024, arXiv 2408.06266, Eq. 7).

    ``loss = 1 - sigma(beta r_w) + sigma(beta r_l) = sigma(-beta r_w) + sigma(beta r_l)``. Absolute terms:
    r_w -> +inf, r_l -> -inf."""
    _check_positive("beta", beta)
    _logps(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    zw = beta * (policy_chosen_logps - reference_chosen_logps)
    zl = beta * (policy_rejected_logps - reference_rejected_logps)
    # sigma(-z) rather than 1 - sigma(z): no cancellation for z >> 0
    return LossOutput(torch.sigmoid(-zw) + torch.sigmoid(zl), *_rewards(
        beta, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps))


def apo_down_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
                  beta):
    """APO-down, TRL ``loss_type="apo_down"`` (D'Oosterlinck et al. 2024, arXiv 2408.06266, Eq. 8).

    ``loss = sigma(beta r_w) + 1 - sigma(beta (r_w - r_l)) = sigma(beta r_w) + sigma(-beta h)``. Absolute term
    on r_w (pushed to -inf) plus a sigmoid (non-convex) term in h."""
    _check_positive("beta", beta)
    _logps(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    zw = beta * (policy_chosen_logps - reference_chosen_logps)
    zl = beta * (policy_rejected_logps - reference_rejected_logps)
    return LossOutput(torch.sigmoid(zw) + torch.sigmoid(-(zw - zl)), *_rewards(
        beta, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps))


def sft_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
             beta, chosen_lengths):
    """SFT term, TRL ``loss_type="sft"`` (negative log-likelihood of the chosen response, per token).

    ``losses[i] = -policy_chosen_logps[i] / n_w[i]``, the per-token NLL of each chosen response. TRL's batch
    value is token-weighted, ``sum_i(-pc_i)/sum_i(n_w_i)``, which is the mean of these only when all lengths
    are equal; to reproduce it average with weights n_w. beta is unused (accepted so every loss has one call
    form); no reference or f-divergence enters. Absolute: pushes log pi(y_w) -> 0."""
    _check_positive("beta", beta)
    _logps(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    _check_lengths(policy_chosen_logps, chosen_lengths=chosen_lengths)
    return LossOutput(-policy_chosen_logps / chosen_lengths.to(policy_chosen_logps.dtype), *_rewards(
        beta, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps))


# ----------------------------------------------------------------------------------------------
# CPOTrainer losses (reference-free; Xu et al. 2024 "Contrastive Preference Optimization", arXiv 2401.08417)


def _cpo(name, pc, pr, beta, f, alpha):
    _check_positive("beta", beta)
    if not (_is_real(alpha) and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    _check_logps(policy_chosen_logps=pc, policy_rejected_logps=pr)
    if alpha == 0:
        sw, sl = pc, pr
    else:
        # AlphaPO reward (1 - p^-alpha)/alpha = -expm1(-alpha log p)/alpha: no exp of an unbounded value
        sw, sl = -torch.expm1(-alpha * pc) / alpha, -torch.expm1(-alpha * pr) / alpha
    return LossOutput(f(beta * (sw - sl)), (beta * sw).detach(), (beta * sl).detach())


def _cpo_doc(formula, extra=""):
    return (f"""Reference-free CPOTrainer loss (TRL ``CPOConfig``; Xu et al. 2024, arXiv 2401.08417).

    ``loss = {formula}``, t = beta (s_w - s_l), s = the policy log-probability (alpha = 0) or AlphaPO's
    (1 - p^-alpha)/alpha (alpha != 0; Gupta et al. 2025, arXiv 2501.03884). Args: policy_chosen_logps,
    policy_rejected_logps (B,), <= 0; beta > 0; alpha finite (TRL default 0). CPOTrainer's total loss adds
    cpo_alpha * NLL(y_w) outside this function. {extra}""")


def cpo_sigmoid_loss(policy_chosen_logps, policy_rejected_logps, *, beta, label_smoothing=0.0, alpha=0.0):
    _check_unit_open("label_smoothing", label_smoothing, lo_closed=True, hi=0.5)
    eps = label_smoothing
    return _cpo("cpo_sigmoid", policy_chosen_logps, policy_rejected_logps, beta, _make_f_smoothed(eps), alpha)


def cpo_simpo_loss(policy_chosen_logps, policy_rejected_logps, *, beta, simpo_gamma, label_smoothing=0.0,
                   alpha=0.0):
    _check_unit_open("label_smoothing", label_smoothing, lo_closed=True, hi=0.5)
    if not (_is_real(simpo_gamma) and math.isfinite(simpo_gamma)):
        raise ValueError(f"simpo_gamma must be a finite number, got {simpo_gamma!r}")
    return _cpo("cpo_simpo", policy_chosen_logps, policy_rejected_logps, beta,
                _make_f_smoothed(label_smoothing, simpo_gamma), alpha)


def cpo_alphapo_loss(policy_chosen_logps, policy_rejected_logps, *, beta, simpo_gamma, alpha, label_smoothing=0.0):
    return cpo_simpo_loss(policy_chosen_logps, policy_rejected_logps, beta=beta, simpo_gamma=simpo_gamma,
                          label_smoothing=label_smoothing, alpha=alpha)


def cpo_hinge_loss(policy_chosen_logps, policy_rejected_logps, *, beta, alpha=0.0):
    return _cpo("cpo_hinge", policy_chosen_logps, policy_rejected_logps, beta, _f_hinge, alpha)


def cpo_ipo_loss(policy_chosen_logps, policy_rejected_logps, *, beta, alpha=0.0):
    return _cpo("cpo_ipo", policy_chosen_logps, policy_rejected_logps, beta, _make_f_ipo(beta), alpha)


cpo_sigmoid_loss.__doc__ = _cpo_doc("(1 - eps) softplus(-t) + eps softplus(t)",
                                    "eps = label_smoothing in [0, 1/2). Sums (TRL passes sums). GPO: t_f = None "
                                    "for eps = 0, log((1 - eps)/eps) for eps > 0.")
cpo_simpo_loss.__doc__ = _cpo_doc("(1 - eps) softplus(gamma - t) + eps softplus(t - gamma)",
                                  "SimPO (Meng et al. 2024, arXiv 2405.14734, Eq. 6), gamma = simpo_gamma. "
                                  "Per-token MEANS (TRL passes means). t_f = None for eps = 0.")
cpo_alphapo_loss.__doc__ = _cpo_doc("SimPO's loss on AlphaPO rewards",
                                    "TRL's loss_type='alphapo' is 'simpo' with cpo_alpha = 0; per-token MEANS.")
cpo_hinge_loss.__doc__ = _cpo_doc("max(0, 1 - t)", "Sums (TRL passes sums). t_f = 1, flat.")
cpo_ipo_loss.__doc__ = _cpo_doc("(t/beta - 1/(2 beta))^2", "Per-token MEANS (TRL passes means). t_f = 1/2.")


# ----------------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class LossSpec:
    """One loss as TRL names it.

    name: TRL's loss_type (CPOTrainer's prefixed ``cpo_``); trainer: "DPOTrainer" or "CPOTrainer"; loss: the
    function; kind: "gpo" (l = f(beta h), :func:`gpo_form`), "absolute" (per-response terms), or
    "batch-coupled" (sorted across the batch); params: the loss's own keyword parameters (TRL config field
    names); lengths: the token-count tensors it needs; f_divergence: whether TRL accepts f_divergence_type
    != reverse_kl with it (and the loss changes); logps: what TRL passes ("sums" or "means"); pinned: where an
    absolute loss drives each log-ratio (None for gpo / batch-coupled).
    """

    name: str
    trainer: str
    loss: Callable[..., LossOutput]
    kind: str
    params: tuple[str, ...]
    lengths: tuple[str, ...]
    f_divergence: bool
    logps: str
    pinned: str | None = None


def _d(name, loss, kind, params=(), lengths=(), f_div=False, logps="sums", pinned=None):
    return LossSpec(name, "DPOTrainer", loss, kind, params, lengths, f_div, logps, pinned)


def _c(name, loss, params, logps):
    return LossSpec(name, "CPOTrainer", loss, "gpo", params, (), False, logps)


SPECS: dict[str, LossSpec] = {s.name: s for s in (
    _d("sigmoid", sigmoid_loss, "gpo", f_div=True),
    _d("hinge", hinge_loss, "gpo", f_div=True),
    _d("ipo", ipo_loss, "gpo", lengths=("chosen_lengths", "rejected_lengths"), f_div=True),
    _d("exo_pair", exo_pair_loss, "gpo", ("label_smoothing",), f_div=True),
    _d("nca_pair", nca_pair_loss, "absolute", pinned="beta r_w -> log 2; r_l -> -inf"),
    _d("robust", robust_loss, "gpo", ("label_smoothing",), f_div=True),
    _d("bco_pair", bco_pair_loss, "absolute", pinned="r_w -> +inf; r_l -> -inf"),
    _d("sppo_hard", sppo_hard_loss, "absolute", pinned="r_w = 1/(2 beta); r_l = -1/(2 beta) (h = 1/beta)"),
    _d("aot", aot_loss, "batch-coupled", ("label_smoothing",)),
    _d("aot_unpaired", aot_unpaired_loss, "batch-coupled", ("label_smoothing",)),
    _d("apo_zero", apo_zero_loss, "absolute", pinned="r_w -> +inf; r_l -> -inf"),
    _d("apo_down", apo_down_loss, "absolute", pinned="r_w -> -inf; r_w - r_l -> +inf"),
    _d("discopop", discopop_loss, "gpo", ("discopop_tau",), f_div=True),
    _d("sft", sft_loss, "absolute", lengths=("chosen_lengths",), pinned="log pi(y_w) -> 0 (no reference)"),
    _d("sigmoid_norm", sigmoid_norm_loss, "gpo", lengths=("chosen_lengths", "rejected_lengths"), f_div=True),
    _c("cpo_sigmoid", cpo_sigmoid_loss, ("label_smoothing", "alpha"), "sums"),
    _c("cpo_hinge", cpo_hinge_loss, ("alpha",), "sums"),
    _c("cpo_ipo", cpo_ipo_loss, ("alpha",), "means"),
    _c("cpo_simpo", cpo_simpo_loss, ("simpo_gamma", "label_smoothing", "alpha"), "means"),
    _c("cpo_alphapo", cpo_alphapo_loss, ("simpo_gamma", "alpha", "label_smoothing"), "means"),
)}

#: Every loss by name (TRL's loss_type; CPOTrainer's with a ``cpo_`` prefix).
PREF_LOSSES: dict[str, Callable[..., LossOutput]] = {name: s.loss for name, s in SPECS.items()}


def get_pref_loss(name: str) -> Callable[..., LossOutput]:
    """The loss called ``name`` (a key of :data:`PREF_LOSSES`); a ValueError lists the valid names."""
    if name not in PREF_LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(PREF_LOSSES)}")
    return PREF_LOSSES[name]
