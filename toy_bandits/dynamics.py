"""Gradient descent on preference losses in the tabular softmax parameterisation.

Each of N instances (prompts) has K responses and a policy ``pi = softmax(theta)`` over them,
started at ``theta = log pi_ref``. Training minimises, by plain gradient descent with step
``lr``, the *sum over instances* of the *mean over pairs* of a loss from
:mod:`dpo_rlhf_checks.losses`, applied to the pairs ``(y_w, y_l)`` of each instance.

Labels:
  "ordered": every pair is seen with y_w as the chosen response (what DPO trains on).
  "bt":      the population version: with probability ``q`` the pair is (y_w, y_l), else
             (y_l, y_w); the loss is the q-weighted sum of both orders (docs/theory.md §2).

Float64 throughout; deterministic (no randomness at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dpo_rlhf_checks.losses import TARGET_FORM, alignment_certificate, get_loss, implicit_target
from toy_bandits.instance import SUM_TOL

LABELS = ("ordered", "bt")


@dataclass
class Trajectory:
    """Per recorded step (T = number of recorded steps), for N instances and P pairs each.

    steps: (T,) step index; loss: (T, N, P) per-pair loss; delta: (T, N, P) log-odds
    log pi(y_w) - log pi(y_l); in_U: (T, N, P) delta_ref < delta < 0; certified: (T, N, P)
    the loss value alone proves delta > margin (target-form losses; False otherwise);
    delta_ref: (N, P); policy: (N, K) the final policy.
    """

    steps: np.ndarray
    loss: np.ndarray
    delta: np.ndarray
    in_U: np.ndarray
    certified: np.ndarray
    delta_ref: np.ndarray
    policy: np.ndarray


def _validate(pi_ref: np.ndarray, pairs: np.ndarray) -> None:
    if pi_ref.ndim != 2:
        raise ValueError(f"pi_ref must have shape (N, K), got {pi_ref.shape}")
    if not np.all(np.isfinite(pi_ref)) or np.any(pi_ref <= 0):
        raise ValueError("pi_ref must be finite with full support (every entry > 0)")
    # the instance files' tolerance, absolute: np.allclose(atol=1e-8) kept numpy's rtol = 1e-5 and so let a row off
    # by 1e-5 through
    sums = pi_ref.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > SUM_TOL):
        raise ValueError(f"each row of pi_ref must sum to 1 within {SUM_TOL}, got sums {sums}")
    if pairs.ndim != 3 or pairs.shape[0] != pi_ref.shape[0] or pairs.shape[2] != 2:
        raise ValueError(f"pairs must have shape (N, P, 2) with N = {pi_ref.shape[0]}, got {pairs.shape}")
    if pairs.min() < 0 or pairs.max() >= pi_ref.shape[1]:
        raise ValueError(f"pair indices must lie in [0, {pi_ref.shape[1]})")
    if np.any(pairs[..., 0] == pairs[..., 1]):
        raise ValueError("a pair compares a response with itself")


def train_tabular(pi_ref, pairs, loss_name: str, *, beta: float, steps: int, lr: float, labels: str = "ordered",
                  q=None, margin: float = 0.0, record_every: int = 1, **loss_params) -> Trajectory:
    """Run gradient descent; see the module docstring.

    pi_ref: (N, K) or (K,) reference policy, rows sum to 1, full support.
    pairs: (N, P, 2) or (P, 2) integer indices (winner, loser).
    loss_name: a name of :data:`dpo_rlhf_checks.losses.LOSSES` (not "dpo_bt": use labels="bt").
    beta: > 0. steps: >= 0. lr: > 0.
    q: (N, P) BT probability that y_w wins, needed when labels == "bt".
    margin: the margin the certificate is checked against; for "cpo_clip" also the loss's own margin.
    loss_params: the loss's own parameters (gamma, tau, alpha, lam).
    """
    pi_ref = np.atleast_2d(np.asarray(pi_ref, dtype=np.float64))
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim == 2:
        pairs = pairs[None]
    _validate(pi_ref, pairs)
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
    if loss_name == "dpo_bt":
        raise ValueError("use loss_name='dpo' with labels='bt' for the BT-labelled DPO loss")
    for name, value in (("steps", steps), ("record_every", record_every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    for name, value in (("beta", beta), ("lr", lr)):
        if not (isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not (isinstance(margin, (int, float, np.integer, np.floating)) and np.isfinite(margin)):
        raise ValueError(f"margin must be a finite number, got {margin!r}")
    if steps < 0 or record_every < 1:
        raise ValueError(f"need steps >= 0, record_every >= 1; got {steps}, {record_every}")
    loss_fn = get_loss(loss_name)
    if loss_name == "cpo_clip":
        # cpo_clip's own parameter is also called margin: the one margin is its target max(delta_ref, margin)
        # and the level the certificate checks (as this docstring always said; before, it was not passed on).
        loss_params = {**loss_params, "margin": margin}
    if labels == "bt":
        if q is None:
            raise ValueError("labels='bt' needs q, the probability that y_w is preferred, shape (N, P)")
        try:
            q_t = torch.as_tensor(np.broadcast_to(np.asarray(q, dtype=np.float64), pairs.shape[:2]).copy())
        except ValueError:
            raise ValueError(f"q must broadcast to (N, P) = {pairs.shape[:2]}, got shape {np.shape(q)}") from None
        if torch.isnan(q_t).any() or (q_t < 0).any() or (q_t > 1).any():
            raise ValueError("q must lie in [0, 1]")

    n = pi_ref.shape[0]
    rows = torch.arange(n)[:, None]  # (N, 1)
    w, l = torch.as_tensor(pairs[..., 0]), torch.as_tensor(pairs[..., 1])  # (N, P)
    log_ref = torch.log(torch.as_tensor(pi_ref))  # (N, K)
    ref_w, ref_l = log_ref[rows, w], log_ref[rows, l]  # (N, P)
    theta = log_ref.clone().requires_grad_(True)
    target = None
    if loss_name in TARGET_FORM:
        target = implicit_target(loss_name, ref_w, ref_l, beta=beta, **loss_params)

    def pair_losses(logp):
        lw, ll = logp[rows, w], logp[rows, l]
        forward = loss_fn(lw, ll, ref_w, ref_l, beta=beta, **loss_params).losses
        if labels == "ordered":
            return forward, forward
        backward = loss_fn(ll, lw, ref_l, ref_w, beta=beta, **loss_params).losses
        return q_t * forward + (1 - q_t) * backward, forward

    record = {"steps": [], "loss": [], "delta": [], "certified": []}
    # The tensors are tiny (N x K): intra-op threads only add synchronisation cost (measured ~1 ms per op on
    # a loaded 2-core machine), so the loop runs single-threaded and restores the caller's setting afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(steps + 1):
            logp = torch.log_softmax(theta, dim=1)  # (N, K), log space throughout
            objective_terms, forward = pair_losses(logp)
            if step % record_every == 0 or step == steps:
                with torch.no_grad():
                    delta = logp[rows, w] - logp[rows, l]
                    cert = (alignment_certificate(forward, target, beta=beta, margin=margin) if target is not None
                            else torch.zeros_like(delta, dtype=torch.bool))
                    record["steps"].append(step)
                    record["loss"].append(forward.numpy().copy())
                    record["delta"].append(delta.numpy().copy())
                    record["certified"].append(cert.numpy().copy())
            if step == steps:
                break
            objective = objective_terms.mean(dim=1).sum()
            (grad,) = torch.autograd.grad(objective, theta)
            with torch.no_grad():
                theta -= lr * grad
    finally:
        torch.set_num_threads(threads)
    delta = np.stack(record["delta"])
    delta_ref = (ref_w - ref_l).numpy()
    return Trajectory(
        steps=np.asarray(record["steps"]),
        loss=np.stack(record["loss"]),
        delta=delta,
        in_U=(delta_ref[None] < delta) & (delta < 0),
        certified=np.stack(record["certified"]),
        delta_ref=delta_ref,
        policy=torch.softmax(theta.detach(), dim=1).numpy(),
    )


def ordered_pair_flow_time(delta_ref, beta: float, delta_to=0.0, delta_from=None) -> np.ndarray:
    """Time the gradient flow of the ordered-pair DPO loss needs to move delta from delta_from to delta_to.

    Parametrisation: tabular softmax logits (``theory.sec4_equivalence.flow_time_to_zero(..., "logits")``; the
    flow taken in delta itself, d delta/dt = -dl/d delta, takes twice as long).
    Tabular softmax, one pair per instance (the mean over pairs is that pair): delta = theta_w - theta_l
    (the log-normaliser cancels), so d delta/dt = -2 dl/d delta = 2 beta sigma(-h) with
    h = beta (delta - delta_ref) (docs/theory.md §5). Separating variables, (1 + e^h) dh = 2 beta^2 dt:

        t = [h_1 + e^{h_1} - h_0 - e^{h_0}] / (2 beta^2).

    From the reference (h_0 = 0) to delta = 0 (h_1 = H = -beta delta_ref): t = (H + e^H - 1) / (2 beta^2),
    which grows like e^{-beta delta_ref}: the deeper the reference's violation, the longer the pair
    stays in U. Gradient descent with step lr follows it with about t / lr steps (Euler; O(lr) error).
    delta_from: default delta_ref.
    """
    if not (beta > 0):
        raise ValueError(f"beta must be > 0, got {beta!r}")
    delta_ref = np.asarray(delta_ref, dtype=np.float64)
    delta_from = delta_ref if delta_from is None else np.asarray(delta_from, dtype=np.float64)
    h0 = beta * (delta_from - delta_ref)
    h1 = beta * (np.asarray(delta_to, dtype=np.float64) - delta_ref)
    if np.any(h1 < h0):
        raise ValueError("the ordered-pair flow only increases delta: need delta_to >= delta_from")
    return (h1 + np.exp(h1) - h0 - np.exp(h0)) / (2.0 * beta**2)


def first_crossing(traj: Trajectory, level: float = 0.0) -> np.ndarray:
    """Per (instance, pair), the first recorded step with delta >= level; -1 where it never gets there. (N, P)."""
    reached = traj.delta >= level  # (T, N, P)
    first = np.argmax(reached, axis=0)
    return np.where(reached.any(axis=0), traj.steps[first], -1)
