"""The linearised LM (empirical NTK) prediction of a cell, and its own/cross-pair decomposition (docs/theory.md §17).

The tabular prediction (toy_lm/tabular.py) gives every response its own free log-probability. The LM does not:
one parameter vector theta moves every response at once. Linearise the LM at the reference theta_0:

    z(theta) = z_0 + J (theta - theta_0),      J = d z / d theta at theta_0        (B x n_params)

where z stacks the summed log-probabilities log pi(y | x) of B responses: the train pairs' chosen then rejected
responses (the 2P the loss reads), then every other response tracked (the train prompts' other candidates and
the held-out pairs), which the loss does not read but the update moves. The empirical NTK is K = J J^T.

Training the linear model with the run's own loss l (the tabular formula, :func:`toy_lm.tabular.tabular_pair_losses`,
which tests/toy_lm checks against the run's), labels, optimizer, step size and number of steps:

  SGD, in kernel form (exact for the linear model, no approximation beyond the linearisation):
      theta_{t+1} = theta_t - eta J^T g_t   =>   z_{t+1} = z_t - eta K[:, train] g_t,   g_t = d L / d z_train (2P,),
      L = mean over the P pairs of l (the LM's objective). So pair i's delta = z_{w_i} - z_{l_i} moves by
      -eta sum_j (K[w_i] - K[l_i])[pair j] . g_t[pair j]: the j = i term is its *own* share, the rest the *cross*.
  Adam: Adam (torch's rule and defaults, written out) on theta of the linear model. Its step
      -lr m_hat / (sqrt(v_hat) + eps) is linear in the first moment m given the second moment v, and m is a sum of
      the pairs' gradients, so per-pair first moments split each step exactly into pair contributions too.

A re-linearised variant (``relinearise_every = k``) takes J again every k steps at the LM's actual parameters at
that step (from a lone-replica LM run of the cell, :func:`lm_trajectory`) and continues its own z and optimizer
state from there. The gap between the two variants measures how far feature learning (a moving kernel) explains
what the fixed kernel misses.

The records (:class:`KernelRun`) are per LM step (the linear model uses the LM's own step size, so no clock is
matched), and :func:`comparison` makes the same :class:`toy_lm.predict.Comparison` the tabular prediction makes,
so the stage's comparisons and the time-in-U fit read both the same way.

Float64 throughout (J of a float64 copy of the float32 model); deterministic on CPU. ``device`` may be "cuda":
the code runs there unchanged, but no GPU was available when it was written, so that path is unexercised.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from toy_lm.model import TinyGPT, sequence_logps
from toy_lm.tabular import tabular_pair_losses
from toy_lm.task import L, W, Task

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, the run's rule (toy_lm.train.make_optimizer)
ADAM_EPS = 1e-8


# ----------------------------------------------------------------------------------------------
# The responses and their Jacobian


@dataclass(frozen=True)
class Responses:
    """The B responses a linearised model tracks, in z's order.

    tokens, mask: (B, S). n_pairs: P; rows 0..P-1 are the train pairs' chosen (y_w), rows P..2P-1 their rejected
    (y_l), in train order; the rest are ``extra`` rows. kinds: (B,) labels ("w", "l", "other", "ho_w", "ho_l").
    prompt: (B,) the prompt index of each row (train prompts 0..P-1).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    n_pairs: int
    kinds: tuple[str, ...]
    prompt: np.ndarray

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])


def task_responses(task: Task, others: bool = True, heldout: bool = True) -> Responses:
    """The train pairs (chosen then rejected), then (``others``) each train prompt's other candidates, then
    (``heldout``) the held-out pairs' chosen and rejected."""
    tr, ho = task.split("train"), task.split("heldout")
    p = task.n_train
    toks = [task.tokens[tr, W], task.tokens[tr, L]]
    masks = [task.response_mask[tr, W], task.response_mask[tr, L]]
    kinds = ["w"] * p + ["l"] * p
    prompt = [np.arange(p), np.arange(p)]
    if others:
        for j in range(2, task.tokens.shape[1]):
            toks.append(task.tokens[tr, j])
            masks.append(task.response_mask[tr, j])
            kinds += ["other"] * p
            prompt.append(np.arange(p))
    if heldout:
        q = task.n_prompts - p
        toks += [task.tokens[ho, W], task.tokens[ho, L]]
        masks += [task.response_mask[ho, W], task.response_mask[ho, L]]
        kinds += ["ho_w"] * q + ["ho_l"] * q
        prompt += [p + np.arange(q), p + np.arange(q)]
    return Responses(torch.cat(toks), torch.cat(masks), p, tuple(kinds), np.concatenate(prompt))


def flat_params(model: TinyGPT) -> torch.Tensor:
    """(n_params,) the model's parameters in ``named_parameters`` order, float64, detached."""
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


def logp_jacobian(model: TinyGPT, resp: Responses, device: str | torch.device = "cpu",
                  chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, J): z (B,) the summed response log-probabilities at the model's parameters and J (B, n_params) their
    Jacobian, both float64 (a float64 copy of the model).

    Row i of J is the gradient of z_i alone, and z_i reads only sequence i, so J is the per-sequence gradient:
    torch.func.vmap of torch.func.grad over the rows (one batched forward and backward), not jacrev of the whole
    batch, which back-propagates every row's basis vector through all B sequences (B times the work).
    Columns in ``named_parameters`` order (that of :func:`flat_params`). chunk: responses per vmap call (None: all
    at once); the rows do not depend on it beyond rounding.
    """
    from torch.func import functional_call, grad, vmap

    from toy_lm.model import response_logp_sum

    dev = torch.device(device)
    base = copy.deepcopy(model).double().to(dev)
    for block in base.blocks:
        block.fused_attention = False  # the written-out attention: vmap has its batching rules
    params = {k: v.detach() for k, v in base.named_parameters()}
    names = list(params)
    tokens, mask = resp.tokens.to(dev), resp.mask.to(dev)
    with torch.no_grad():
        z = sequence_logps(base, tokens, mask).sum  # (B,); also validates tokens and mask (vmap cannot branch)

    def z_row(p, tok, msk):  # tok, msk: (S,) one sequence -> its summed response log-probability
        logits = functional_call(base, p, (tok[None, :-1],))  # (1, S-1, V)
        return response_logp_sum(logits, tok[None], msk[None])[0]

    per_row = vmap(grad(z_row), in_dims=(None, 0, 0))
    js = []
    step = chunk or resp.n
    for start in range(0, resp.n, step):
        tok, msk = tokens[start:start + step], mask[start:start + step]
        g = per_row(params, tok, msk)  # name -> (b, *shape)
        js.append(torch.cat([g[k].reshape(tok.shape[0], -1) for k in names], dim=1))
    return z.detach(), torch.cat(js).detach()


# ----------------------------------------------------------------------------------------------
# The linearised dynamics


@dataclass
class KernelRun:
    """One linearised run. S = steps + 1 recorded steps (0 = the reference), B tracked responses, P train pairs.

    z: (S, B) summed log-probabilities. delta: (S, P) summed delta of the train pairs (z_w - z_l).
    objective: (S,) mean training objective. own, cross: (S - 1, P) each step's change of delta split into the
    pair's own gradient's share and the other pairs' (own + cross = delta[t + 1] - delta[t]).
    influence: (P, P) summed over steps: influence[i, j] = change of delta_i carried by pair j's gradient.
    change_by_row: (B, 2P) summed over steps: change of each tracked z carried by the gradient on each train row
        (columns 0..P-1 the chosen rows' gradients, P..2P-1 the rejected rows'; the rejected columns are the
        "push-down" of y_l whose spill onto other responses is the squeezing effect).
    relinearised_at: the steps where J was taken (just [0] for the plain linearisation).
    """

    z: np.ndarray
    delta: np.ndarray
    objective: np.ndarray
    own: np.ndarray
    cross: np.ndarray
    influence: np.ndarray
    change_by_row: np.ndarray
    relinearised_at: list[int]

    @property
    def steps(self) -> int:
        return self.z.shape[0] - 1


def _pair_grad(method: str, beta: float, params: dict, q: torch.Tensor, z_train: torch.Tensor, rc: torch.Tensor,
               rr: torch.Tensor, scale: float) -> tuple[torch.Tensor, float]:
    """(g, L): g = dL/dz_train (2P,) of L = mean over pairs of the run's loss, and L. scale: 1/n_tokens for the
    losses on per-token means (cpo_easy), else 1."""
    p = z_train.shape[0] // 2
    z = z_train.detach().clone().requires_grad_(True)
    obj, _ = tabular_pair_losses(method, beta, params, q, z[:p] * scale, z[p:] * scale, rc, rr)
    total = obj.mean()
    (g,) = torch.autograd.grad(total, z)
    return g, float(total.detach())


def _pair_matrix(p: int, b: int) -> torch.Tensor:
    """(P, B) D with D z = delta: +1 at the chosen row, -1 at the rejected row of each pair."""
    d = torch.zeros(p, b, dtype=torch.float64)
    d[torch.arange(p), torch.arange(p)] = 1.0
    d[torch.arange(p), p + torch.arange(p)] = -1.0
    return d


def run_linearised(method: str, *, beta: float, params: dict, q, ref_logp_w, ref_logp_l, z0, jacobian=None,
                   kernel=None, optimizer: str, lr: float, steps: int, n_tokens: int,
                   relinearise=None, relinearise_every: int | None = None) -> KernelRun:
    """Train the linear model z = z0 + J (theta - theta_0) with ``method``'s loss; record every step.

    q: (P,) BT label frequency of y_w. ref_logp_w, ref_logp_l: (P,) the reference's summed log-probabilities of the
    train pairs (the loss's rc, rr; divided by n_tokens for cpo_easy). z0: (B,) the tracked log-probabilities at the
    start, train chosen then rejected first. jacobian: (B, n_params) J; kernel: (B, B) K = J J^T (SGD needs K, or J
    to form it; Adam needs J). optimizer: "sgd" (kernel form) or "adam" (on theta). lr, steps: the run's.
    relinearise: callable(step) -> (B, n_params) J at the LM's actual parameters at that step, called every
    ``relinearise_every`` steps (step 0 uses ``jacobian``); None: the plain linearisation.
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if (relinearise is None) != (relinearise_every is None):
        raise ValueError("give relinearise and relinearise_every together (or neither)")
    if relinearise_every is not None and relinearise_every < 1:
        raise ValueError(f"relinearise_every must be >= 1, got {relinearise_every}")
    if not (math.isfinite(lr) and lr > 0) or steps < 0:
        raise ValueError(f"lr must be a finite number > 0 and steps >= 0, got lr {lr!r}, steps {steps!r}")
    z = torch.as_tensor(np.asarray(z0, dtype=np.float64)).clone()
    q = torch.as_tensor(np.asarray(q, dtype=np.float64))
    p = q.shape[0]
    b = z.shape[0]
    if b < 2 * p:
        raise ValueError(f"z0 has {b} rows; the {p} train pairs need at least {2 * p}")
    scale = 1.0 / n_tokens if method == "cpo_easy" else 1.0
    rc = torch.as_tensor(np.asarray(ref_logp_w, dtype=np.float64)) * scale
    rr = torch.as_tensor(np.asarray(ref_logp_l, dtype=np.float64)) * scale
    jac = None if jacobian is None else torch.as_tensor(jacobian, dtype=torch.float64)
    if optimizer == "adam" and jac is None:
        raise ValueError("Adam acts on theta: give the Jacobian")
    if kernel is None:
        if jac is None:
            raise ValueError("give the kernel or the Jacobian")
        kernel = jac @ jac.T
    kern = torch.as_tensor(kernel, dtype=torch.float64)
    if kern.shape != (b, b) or (jac is not None and jac.shape[0] != b):
        raise ValueError(f"the kernel must be ({b}, {b}) and J ({b}, n_params); got {tuple(kern.shape)}"
                         + ("" if jac is None else f" and {tuple(jac.shape)}"))
    dmat = _pair_matrix(p, b)
    row_to_pair = torch.zeros(2 * p, p, dtype=torch.float64)  # (2P, P): a train row -> its pair
    row_to_pair[torch.arange(2 * p), torch.cat([torch.arange(p), torch.arange(p)])] = 1.0
    zs, objs, owns, crosses = [z.numpy().copy()], [], [], []
    influence = torch.zeros(p, p, dtype=torch.float64)
    by_row = torch.zeros(b, 2 * p, dtype=torch.float64)
    relin_at = [0]
    m_rows = v = None
    if optimizer == "adam":
        m_rows = torch.zeros(2 * p, jac.shape[1], dtype=torch.float64)  # per-row first moments (their sum = Adam's m)
        v = torch.zeros(jac.shape[1], dtype=torch.float64)
    for t in range(steps + 1):
        g, obj = _pair_grad(method, beta, params, q, z[: 2 * p], rc, rr, scale)
        objs.append(obj)
        if t == steps:
            break
        if relinearise is not None and t > 0 and t % relinearise_every == 0:
            jac = torch.as_tensor(relinearise(t), dtype=torch.float64)
            if jac.shape[0] != b:
                raise ValueError(f"relinearise({t}) gave J with {jac.shape[0]} rows, expected {b}")
            kern = jac @ jac.T
            relin_at.append(t)
        if optimizer == "sgd":
            change = -lr * kern[:, : 2 * p] * g[None, :]  # (B, 2P): z's change carried by each train row's gradient
        else:
            grad_rows = g[:, None] * jac[: 2 * p]  # (2P, n): J^T of each train row's gradient
            grad_theta = grad_rows.sum(0)  # (n,) the linear model's gradient in theta
            b1, b2 = ADAM_BETAS
            m_rows.mul_(b1).add_(grad_rows, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad_theta, grad_theta, value=1 - b2)
            bc1, bc2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
            denom = v.sqrt() / math.sqrt(bc2) + ADAM_EPS  # torch's Adam: (sqrt(v) / sqrt(bc2)) + eps
            step_rows = -(lr / bc1) * m_rows / denom  # (2P, n): theta's step carried by each row's moment
            change = jac @ step_rows.T  # (B, 2P)
        by_row += change
        pair_change = dmat @ change @ row_to_pair  # (P, P): delta_i's change carried by pair j
        influence += pair_change
        own = torch.diagonal(pair_change)
        owns.append(own.numpy().copy())
        crosses.append((pair_change.sum(1) - own).numpy().copy())
        z = z + change.sum(1)
        zs.append(z.numpy().copy())
    zarr = np.stack(zs)
    return KernelRun(z=zarr, delta=zarr[:, :p] - zarr[:, p:2 * p], objective=np.asarray(objs),
                     own=np.stack(owns) if owns else np.zeros((0, p)),
                     cross=np.stack(crosses) if crosses else np.zeros((0, p)),
                     influence=influence.numpy(), change_by_row=by_row.numpy(), relinearised_at=relin_at)


# ----------------------------------------------------------------------------------------------
# A cell of the LM stage: the plain and the re-linearised prediction, in the tabular prediction's records


@dataclass
class SeedLinearisation:
    """One seed's linearisation at its reference: the tracked responses, z_0 (B,) and J (B, n_params)."""

    responses: Responses
    z0: np.ndarray
    jacobian: torch.Tensor
    seconds: float


def linearise_seed(reference: TinyGPT, task: Task, device: str | torch.device = "cpu") -> SeedLinearisation:
    """J of every tracked response (:func:`task_responses`) at the reference."""
    import time

    t0 = time.perf_counter()
    resp = task_responses(task)
    z0, jac = logp_jacobian(reference, resp, device)
    return SeedLinearisation(resp, z0.cpu().numpy(), jac.cpu(), time.perf_counter() - t0)


def lm_trajectory(method: str, task: Task, reference: TinyGPT, ref_logps, cfg, seed: int, device, beta: float,
                  optimizer: str, resp: Responses, every: int | None, rows: int | None = None):
    """A lone-replica LM run of the cell (toy_lm.train.train_preference, the stage's rule; it agrees with the
    stage's batched replica to float tolerance), reading J at its actual parameters every ``every`` steps (steps
    k, 2k, ... < steps) and every tracked response's log-probability at the end.

    rows: take J of the first ``rows`` tracked responses only (None: all B).
    Returns ({step: J (rows, n_params)}, z_end (B,), the run's RunRecord).
    """
    from toy_lm.train import train_preference

    jacs: dict[int, torch.Tensor] = {}
    end: dict[str, np.ndarray] = {}

    def on_step(step, policy):
        if every is not None and 0 < step < cfg.steps and step % every == 0:
            sub = resp if rows is None else Responses(resp.tokens[:rows], resp.mask[:rows], resp.n_pairs,
                                                      resp.kinds[:rows], resp.prompt[:rows])
            jacs[step] = logp_jacobian(policy, sub, device)[1].cpu()
        if step == cfg.steps:
            with torch.no_grad():
                end["z"] = sequence_logps(policy, resp.tokens.to(device), resp.mask.to(device)).sum.double().cpu().numpy()

    rec = train_preference(method, task, reference, ref_logps, cfg, seed, device, beta=beta, optimizer=optimizer,
                           on_step=on_step)
    return jacs, end["z"], rec


def first_crossing(delta: np.ndarray, censor: int) -> np.ndarray:
    """(P,) first step t with delta[t] > 0, ``censor`` where there is none. delta: (S, P) (as the tabular record's)."""
    pos = delta > 0
    return np.where(pos.any(axis=0), pos.argmax(axis=0), censor)


def comparison(kr: KernelRun, rec, delta_ref: np.ndarray):
    """The :class:`toy_lm.predict.Comparison` of a linearised run against the LM's record (same clock: LM steps)."""
    from toy_lm.predict import Comparison

    steps = len(rec.objective) - 1
    if kr.steps != steps:
        raise ValueError(f"the linearised run has {kr.steps} steps, the LM's record {steps}")
    d = kr.delta
    pred_u = float(((delta_ref < d) & (d < 0)).mean(axis=1).max())
    return Comparison(clock=np.arange(steps + 1), clock_saturated=False, delta_ref=np.asarray(delta_ref, np.float64),
                      pred_delta=d[-1].copy(), obs_delta=rec.delta_sum[-1].astype(np.float64), pred_in_U_max=pred_u,
                      obs_in_U_max=float(rec.in_U.mean(axis=1).max()), pred_cross=first_crossing(d, steps + 1),
                      obs_cross=first_crossing(rec.delta_sum, steps + 1),
                      tab_final_objective=float(np.min(kr.objective)), lm_final_objective=float(np.min(rec.objective)))


@dataclass
class KernelPrediction:
    """One seed of one cell: the plain linearisation and (when asked) the re-linearised one, each as a KernelRun and
    a Comparison against the stage's LM record; lm_z_end: (B,) every tracked log-probability at the end of the
    lone-replica LM run (None without re-linearisation); kinds: the tracked rows' kinds."""

    linear_run: KernelRun
    linear: object
    relin_run: KernelRun | None
    relin: object | None
    lm_z_end: np.ndarray | None
    z0: np.ndarray
    kinds: tuple[str, ...]


def predict_seed(method: str, beta: float, optimizer: str, rec, task: Task, reference: TinyGPT, ref_logps, cfg,
                 seed: int, lin: SeedLinearisation, device="cpu", relinearise_every: int | None = None,
                 plain: KernelRun | None = None) -> KernelPrediction:
    """The linearised prediction of one seed's run of a cell (the run's loss, labels, optimizer, step size, steps).
    plain: the plain linearised run of this very cell and seed when already computed (it is not run again)."""
    tr = task.split("train")
    p = task.n_train
    delta_ref = (ref_logps.sum[tr, W] - ref_logps.sum[tr, L]).double().numpy()
    common = dict(beta=beta, params=cfg.loss_params(method), q=task.q_hat[tr], ref_logp_w=lin.z0[:p],
                  ref_logp_l=lin.z0[p:2 * p], z0=lin.z0, optimizer=optimizer, lr=cfg.lr(optimizer, beta, method),
                  steps=cfg.steps, n_tokens=task.response_tokens)
    if plain is None:
        plain = run_linearised(method, jacobian=lin.jacobian, **common)
    relin_run = relin = z_end = None
    if relinearise_every is not None:
        # Re-linearised on the train rows only (the loss reads only them; J's cost is per row): the other tracked
        # rows' end state comes from the LM run itself (z_end), not from the re-linearised model.
        m = 2 * p
        jacs, z_end, _ = lm_trajectory(method, task, reference, ref_logps, cfg, seed, device, beta, optimizer,
                                       lin.responses, relinearise_every, rows=m)
        common["z0"] = lin.z0[:m]
        relin_run = run_linearised(method, jacobian=lin.jacobian[:m], relinearise=lambda t: jacs[t],
                                   relinearise_every=relinearise_every, **common)
        relin = comparison(relin_run, rec, delta_ref)
    return KernelPrediction(plain, comparison(plain, rec, delta_ref), relin_run, relin, z_end, lin.z0,
                            lin.responses.kinds)


# ----------------------------------------------------------------------------------------------
# The own/cross decomposition and the squeezing effect


def decomposition(kr: KernelRun, delta_ref: np.ndarray, obs_delta_end: np.ndarray | None = None) -> dict:
    """Own against cross share of each misranked pair's change of delta (summed over the run), and which one carries
    the pair out of U or keeps it in.

    For pair i: own_i = influence[i, i], cross_i = sum_{j != i} influence[i, j]; delta_end = delta_ref + own + cross
    (the linear model's, exactly). Misranked pairs (delta_ref < 0) are counted by what happens at the end:
      out_by_cross: delta_ref + own_i < 0 (its own gradient alone would leave it in U) but delta_end >= 0;
      kept_in_by_cross: delta_ref + own_i >= 0 (its own gradient alone takes it out) but delta_end < 0;
      out_by_own: both >= 0; in_both: both < 0.
    obs_delta_end: the LM's delta at the end; when given, the same split is also reported by the LM's end state.
    """
    delta_ref = np.asarray(delta_ref, dtype=np.float64)
    infl = kr.influence
    own = np.diagonal(infl).copy()
    cross = infl.sum(axis=1) - own
    end = kr.delta[-1]
    viol = delta_ref < 0
    alone = delta_ref + own
    n = int(viol.sum())

    def frac(x):
        return float(np.mean(x[viol])) if n else None

    out = {"misranked": n,
           "own_mean": frac(own), "cross_mean": frac(cross),
           "abs_cross_over_abs_own_median": (float(np.median(np.abs(cross[viol]) / np.maximum(np.abs(own[viol]), 1e-300)))
                                             if n else None),
           "out_by_own": frac((alone >= 0) & (end >= 0)), "out_by_cross": frac((alone < 0) & (end >= 0)),
           "kept_in_by_cross": frac((alone >= 0) & (end < 0)), "in_both": frac((alone < 0) & (end < 0)),
           "cross_negative": frac(cross < 0)}
    if obs_delta_end is not None:
        obs = np.asarray(obs_delta_end, dtype=np.float64)
        stay = viol & (obs < 0)
        left = viol & (obs >= 0)
        out["lm_in_U_own_mean"] = float(own[stay].mean()) if stay.any() else None
        out["lm_in_U_cross_mean"] = float(cross[stay].mean()) if stay.any() else None
        out["lm_left_own_mean"] = float(own[left].mean()) if left.any() else None
        out["lm_left_cross_mean"] = float(cross[left].mean()) if left.any() else None
    return out


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 - e^x) for x < 0, without cancellation (log(-expm1(x)) near 0, log1p(-e^x) far from it)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # both branches are evaluated; only the chosen one is used
        return np.where(x > -math.log(2), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def mass_changes(z_start: np.ndarray, z_end: np.ndarray, kinds: tuple[str, ...], n_pairs: int) -> dict:
    """Where the train prompts' probability mass went, from the tracked log-probabilities at the start and the end.

    Per train prompt: the change of log pi(y_w), log pi(y_l), log pi(other candidates) and log(rest), rest = 1 - the
    candidates' mass (every response not tracked), means over prompts; and the fraction of prompts whose log pi(y_w)
    fell (likelihood displacement). A linear model's z can leave (-inf, 0); where the candidates' mass reaches 1 the
    rest is reported as nan.
    """
    kinds_a = np.asarray(kinds)
    p = n_pairs

    def per_prompt(z):
        w, l = z[:p], z[p:2 * p]
        others = z[kinds_a == "other"].reshape(-1, p)  # (K - 2, P)
        cands = np.vstack([w, l, others])
        total = np.logaddexp.reduce(cands, axis=0)  # log of the candidates' mass
        rest = np.where(total < 0, _log1mexp(np.minimum(total, -1e-300)), np.nan)
        other = np.logaddexp.reduce(others, axis=0) if others.size else np.full(p, -np.inf)
        return w, l, other, rest

    s, e = per_prompt(np.asarray(z_start, np.float64)), per_prompt(np.asarray(z_end, np.float64))
    names = ("chosen", "rejected", "other_candidates", "rest")
    diffs = {n: b - a for n, a, b in zip(names, s, e)}
    out = {f"d_log_{n}": (float(np.nanmean(d)) if np.isfinite(d).any() else None) for n, d in diffs.items()}
    out["frac_chosen_fell"] = float(np.mean(e[0] < s[0]))
    return out


def squeezing(kr: KernelRun, kinds: tuple[str, ...], n_pairs: int) -> dict:
    """The squeezing effect in the linear model (Ren & Sutherland, ICLR 2025): how much of each tracked
    log-probability's change is carried by the push-down on the rejected responses (the rejected rows' gradients,
    ``change_by_row[:, P:]``) against the pull-up on the chosen ones, means over train prompts.

    pushdown_on_*: the rejected gradients' share of the change of log pi(y_w), log pi(y_l), log pi(other candidates
    of the train prompts); pullup_on_*: the chosen gradients' share. A negative pushdown_on_chosen is the push-down
    on y_l dragging y_w down with it (shared features); a positive pushdown_on_other is mass squeezed onto the other
    responses.
    """
    p = n_pairs
    kinds_a = np.asarray(kinds)
    c = kr.change_by_row
    push, pull = c[:, p:].sum(axis=1), c[:, :p].sum(axis=1)
    other = kinds_a == "other"
    return {"pushdown_on_chosen": float(push[:p].mean()), "pushdown_on_rejected": float(push[p:2 * p].mean()),
            "pushdown_on_other": float(push[other].mean()) if other.any() else None,
            "pullup_on_chosen": float(pull[:p].mean()), "pullup_on_rejected": float(pull[p:2 * p].mean()),
            "pullup_on_other": float(pull[other].mean()) if other.any() else None}
