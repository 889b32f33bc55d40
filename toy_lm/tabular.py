"""The tabular theory of an LM run, with the run's own optimizer (docs/theory.md §12, §14).

Each train prompt becomes one tabular instance: free logits ``theta`` over its candidates and one "rest"
entry (all other responses), started at the trained reference's *own absolute* log-probabilities
(``log pi_ref(y)`` summed over tokens, and ``log(1 - sum_y pi_ref(y))`` for the rest), so nothing is
renormalised: the losses that read absolute log-probabilities (cpo_eq17's ``1/pi_ref``, cpo_easy's
per-token mean ``lbar_ref``, DPO-Positive's ``log pi(y_w)``) see the same numbers as in the LM run.
The loss is the run's formula and labels, written again here from the formulas (:func:`tabular_pair_losses`,
independent of :func:`toy_lm.train.pair_losses` and :mod:`dpo_rlhf_checks.losses`; tests/toy_lm checks that the
two agree; per-token means for cpo_easy), and the optimizer is the run's own rule (:func:`toy_lm.train.make_optimizer`:
plain SGD, or torch's Adam with its defaults), with the tabular step sizes of the config.

Instances are independent (each has its own logits and its own loss term; SGD and Adam act per
coordinate), so many instances (all seeds of a cell) are trained in one batch, exactly as if one by one.
Float64 throughout; deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from toy_bandits.dynamics import ordered_pair_flow_time
from toy_lm.train import make_optimizer, uses_mean


@dataclass
class TabularRun:
    """T recorded steps (0 = the reference), N instances in G groups (seeds).

    objective: (T, G) mean training objective of each group. delta: (T, N) summed log-odds of the pair.
    loss: (T, N) ordered-pair loss. steps: the number of steps run (T - 1).
    """

    objective: np.ndarray
    delta: np.ndarray
    loss: np.ndarray
    steps: int


def initial_logits(ref_logp: np.ndarray) -> torch.Tensor:
    """(N, K + 1) float64 logits: the reference's absolute log-probabilities of the K candidates, then the rest's.

    ref_logp: (N, K) summed sequence log-probabilities (< 0, their exps summing to < 1 per row).
    """
    lp = torch.as_tensor(np.asarray(ref_logp, dtype=np.float64))
    total = torch.logsumexp(lp, dim=1, keepdim=True)  # log of the candidates' mass, < 0
    if (total >= 0).any():
        raise ValueError("the candidates' reference mass must be < 1 on every prompt (log-mass < 0)")
    rest = torch.log(-torch.expm1(total))  # log(1 - mass), without cancellation near mass 1
    return torch.cat([lp, rest], dim=1)


_BT_BASE = {"dpo_bt": "dpo", "cpo_clip_bt": "cpo_clip", "cpo_smooth_bt": "cpo_smooth"}


def _sp(x: torch.Tensor) -> torch.Tensor:
    """softplus(x) = log(1 + e^x), in log space (never overflows)."""
    return torch.logaddexp(torch.zeros_like(x), x)


def _ordered_loss(method: str, beta: float, p: dict, pc, pr, rc, rr) -> torch.Tensor:
    """The ordered-pair loss of ``method`` (y_w = chosen), from its formula (docs/theory.md §7, §10)."""
    d, dr = pc - pr, rc - rr
    if method == "dpo":  # -log sigma(beta (d - dr))
        return _sp(beta * (dr - d))
    if method == "ipo":  # ((d - dr) - 1/(2 beta))^2
        return ((d - dr) - 0.5 / beta) ** 2
    if method == "dpop":  # -log sigma(beta (d - dr) - beta lam max(0, rc - pc))
        return _sp(beta * p["lam"] * torch.clamp(rc - pc, min=0) - beta * (d - dr))
    if method == "cpo_clip":  # target max(dr, margin)
        t = torch.maximum(dr, torch.full_like(dr, float(p.get("margin", 0.0))))
    elif method == "cpo_smooth":  # target dr + softplus(tau (gamma - dr)) / (tau alpha)
        t = dr + _sp(p["tau"] * (p["gamma"] - dr)) / (p["tau"] * p["alpha"])
    elif method == "cpo_eq17":  # target dr + gamma (1/pi_ref(y_w) + 1/pi_ref(y_l)) / beta
        t = dr if p["gamma"] == 0 else dr + p["gamma"] * torch.exp(torch.logaddexp(-rc, -rr)) / beta
    elif method == "cpo_easy":  # target dr + gamma (1/lbar_ref(y_w) + 1/lbar_ref(y_l)) / beta
        t = dr + p["gamma"] * (rc.reciprocal() + rr.reciprocal()) / beta
    else:
        raise ValueError(f"unknown method {method!r}")
    return _sp(beta * (t - d))


def tabular_pair_losses(method: str, beta: float, params: dict, q, pc, pr, rc, rr):
    """(objective per pair, ordered-pair loss per pair) of ``method`` on log-probs (P,), written from the formulas.

    Independent of :func:`toy_lm.train.pair_losses` (the run's): "<loss>_bt" is q l(y_w, y_l) + (1 - q) l(y_l, y_w)
    with q the label frequency of y_w; dpo_bt's is q softplus(-h) + (1 - q) softplus(h).
    """
    base = _BT_BASE.get(method, method)
    forward = _ordered_loss(base, beta, params, pc, pr, rc, rr)
    if method not in _BT_BASE:
        return forward, forward
    backward = _ordered_loss(base, beta, params, pr, pc, rr, rc)
    return q * forward + (1 - q) * backward, forward


def run_tabular(method: str, ref_logp: np.ndarray, *, n_tokens: int, beta: float, params: dict, q: np.ndarray,
                optimizer: str, lr: float, groups: np.ndarray, stop_objective: np.ndarray, max_steps: int,
                chunk: int = 100, pair_loss=None) -> TabularRun:
    """Train the tabular instances with ``method`` until each group's running-min objective is <= ``stop_objective``.

    ref_logp: (N, K) reference log-probabilities (candidate 0 = y_w, 1 = y_l). n_tokens: response length (EOS
    included): cpo_easy reads per-token means, log pi / n_tokens. q: (N,) BT label frequency of y_w.
    groups: (N,) group index 0..G-1 of each instance; stop_objective: (G,) the objective each group must reach.
    The run stops at the first multiple of ``chunk`` where every group has, or at ``max_steps``.
    pair_loss: None (the loss of ``method`` from :func:`tabular_pair_losses`), or a callable (pc, pr, rc, rr) ->
        (objective per pair, ordered-pair loss per pair) on SUMMED log-probabilities (N,), used instead (``method``
        and ``params`` are then only labels): the U-atlas (toy_lm/atlas_lm.py) passes the same
        :mod:`dpo_rlhf_checks.pref_losses` loss the LM run trains with.
    """
    theta = initial_logits(ref_logp).requires_grad_(True)
    scale = 1.0 / n_tokens if (pair_loss is None and uses_mean(method)) else 1.0
    ref = initial_logits(ref_logp)
    rc, rr = ref[:, 0] * scale, ref[:, 1] * scale
    qt = torch.as_tensor(np.asarray(q, dtype=np.float64))
    groups = np.asarray(groups)
    n_groups = int(groups.max()) + 1
    counts = np.bincount(groups, minlength=n_groups)
    opt = make_optimizer(optimizer, [theta], lr)
    objective, delta, loss = [], [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add synchronisation
    try:
        step = 0
        while True:
            logp = torch.log_softmax(theta, dim=1)  # (N, K + 1), log space throughout
            if pair_loss is None:
                obj_pairs, ordered = tabular_pair_losses(method, beta, params, qt, logp[:, 0] * scale, logp[:, 1] * scale,
                                                         rc, rr)
            else:
                obj_pairs, ordered = pair_loss(logp[:, 0], logp[:, 1], rc, rr)
            with torch.no_grad():
                objective.append(np.bincount(groups, weights=obj_pairs.numpy(), minlength=n_groups) / counts)
                delta.append((logp[:, 0] - logp[:, 1]).numpy().copy())
                loss.append(ordered.numpy().copy())
            if step == max_steps:
                break
            if step % chunk == 0 and step > 0:
                reached = np.minimum.reduce(objective) <= stop_objective
                if reached.all():
                    break
            opt.zero_grad(set_to_none=True)
            obj_pairs.sum().backward()  # instances are independent: the sum trains each on its own loss
            opt.step()
            step += 1
    finally:
        torch.set_num_threads(threads)
    return TabularRun(objective=np.stack(objective), delta=np.stack(delta), loss=np.stack(loss), steps=step)


def time_to_leave_U(delta_ref: np.ndarray, beta: float, optimizer: str, lr: float, max_steps: int = 4000) -> np.ndarray:
    """Theory's time a misranked pair (delta_ref < 0) spends in U under ordered-pair DPO, per pair.

    sgd: the exact gradient flow of the tabular loss (toy_bandits.dynamics.ordered_pair_flow_time),
        t = (H + e^H - 1) / (2 beta^2), H = beta |delta_ref|, in flow time (steps = t / lr).
    adam: tabular Adam (the run's rule) on one pair per instance, started at delta_ref, in steps to the
        first step with delta >= 0 (nan where it has not crossed within ``max_steps``: once the gradient
        beta sigma(-h) falls below Adam's eps = 1e-8, near H = beta |delta_ref| ~ 18, the step shrinks to ~g / eps).
    Only log time against beta |delta_ref| is compared, so the unit (flow time or steps) does not matter.
    """
    delta_ref = np.asarray(delta_ref, dtype=np.float64)
    if np.any(delta_ref >= 0):
        raise ValueError("time in U is defined for misranked pairs only (delta_ref < 0)")
    if optimizer == "sgd":
        return ordered_pair_flow_time(delta_ref, beta) / lr
    if optimizer != "adam":
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    # One pair per instance (y_w, y_l): delta = theta_w - theta_l; the log-normaliser cancels in delta.
    theta = torch.zeros(len(delta_ref), 2, dtype=torch.float64)
    theta[:, 1] = torch.as_tensor(-delta_ref)
    ref = torch.log_softmax(theta, dim=1)
    theta.requires_grad_(True)
    opt = make_optimizer("adam", [theta], lr)
    crossed = np.full(len(delta_ref), np.nan)
    for step in range(1, max_steps + 1):
        logp = torch.log_softmax(theta, dim=1)
        loss = _ordered_loss("dpo", beta, {}, logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1]).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            d = (theta[:, 0] - theta[:, 1]).numpy()
        new = np.isnan(crossed) & (d >= 0)
        crossed[new] = step
        if not np.isnan(crossed).any():
            break
    return crossed


def tabular_minimiser_reaches(method: str, beta: float, params: dict, q: np.ndarray, ref_chosen: np.ndarray,
                              ref_rejected: np.ndarray, margin: float) -> np.ndarray:
    """(P,) bool: the minimiser over delta of the tabular objective of ``method`` (:func:`tabular_pair_losses`, on
    label frequency ``q``) has delta* >= ``margin``: its derivative in delta at delta = margin is <= 0.

    Exact for the losses whose objective is convex in delta and reads only delta and delta_ref (dpo, cpo_clip,
    cpo_smooth and their "_bt" forms); ref_chosen, ref_rejected: (P,) the reference's summed log-probabilities.
    The prediction's own ceiling of the LM claims' BT comparisons (toy_lm/design.py); float64 autograd.
    """
    if method not in ("dpo", "dpo_bt", "cpo_clip", "cpo_clip_bt", "cpo_smooth", "cpo_smooth_bt"):
        raise ValueError(f"the derivative test needs a loss convex in delta alone; got {method!r}")
    rc = torch.as_tensor(np.asarray(ref_chosen, dtype=np.float64))
    rr = torch.as_tensor(np.asarray(ref_rejected, dtype=np.float64))
    qt = torch.as_tensor(np.asarray(q, dtype=np.float64))
    pc = (rr + margin).clone().requires_grad_(True)  # delta = pc - rr = margin
    objective, _ = tabular_pair_losses(method, beta, params, qt, pc, rr, rc, rr)
    (grad,) = torch.autograd.grad(objective.sum(), pc)
    return (grad <= 0).numpy()
