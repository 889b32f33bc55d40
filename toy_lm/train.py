"""Reference SFT and preference training of the tiny transformer, with per-pair, per-step records.

"<loss>_bt" trains <loss> on Bradley-Terry-sampled labels: with ``bt_n_labels`` labels per pair of which a
fraction ``q_hat`` chose y_w, the training set's loss is ``q_hat l(y_w, y_l) + (1 - q_hat) l(y_l, y_w)``
(for DPO that is the module's ``dpo_bt_loss``; for the CPO variants both orders of the same loss).

Every method trains from the same reference, on the same pairs, for the same number of steps,
with the same optimiser and seed; only the loss differs. Losses come from
:mod:`dpo_rlhf_checks.losses`. Which delta each method uses:

  dpo, dpo_bt, ipo, dpop, cpo_eq17, cpo_clip, cpo_smooth, cpo_clip_bt, cpo_smooth_bt: summed sequence
      log-probabilities (docs/theory.md §2, the paper's theory);
  cpo_easy: per-token mean log-probabilities for all four inputs (the authors' code).

Every response has the same length here (``response_len`` + EOS), so the mean delta is the
summed delta divided by that length and the two have the same sign.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from dpo_rlhf_checks.losses import TARGET_FORM, alignment_certificate, get_loss, implicit_target
from toy_lm.config import BT_METHODS, LMConfig
from toy_lm.model import SeqLogps, TinyGPT, sequence_logps
from toy_lm.task import L, W, Task

MEAN_LOGP_METHODS = ("cpo_easy",)


def uses_mean(method: str) -> bool:
    """True where the method's loss takes per-token mean log-probabilities (the authors' code)."""
    return method in MEAN_LOGP_METHODS


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def build_model(task: Task, cfg: LMConfig, seed: int, device: torch.device) -> TinyGPT:
    seed_everything(seed)
    return TinyGPT(task.vocab_size, task.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd).to(device)


def all_logps(model: TinyGPT, task: Task, device: torch.device) -> SeqLogps:
    """Log-probabilities of every candidate of every prompt, each field (N, K), no gradient."""
    n, k, s = task.tokens.shape
    with torch.no_grad():
        out = sequence_logps(model, task.tokens.view(n * k, s).to(device), task.response_mask.view(n * k, s).to(device))
    return SeqLogps(*(t.view(n, k).cpu() for t in out))


def train_reference(task: Task, cfg: LMConfig, seed: int, device: torch.device) -> TinyGPT:
    """Supervised fine-tuning on the corpus: minimise the expected NLL ``-sum_y f(y|x) log pi(y|x)``.

    The corpus is given by its frequencies, so the full-batch loss is the exact corpus average
    (what sampling the corpus would estimate); Adam, ``sft_steps`` steps at the constant ``sft_lr``
    (a warm-up and cosine decay fitted the corpus worse at this step count).
    """
    model = build_model(task, cfg, seed, device)
    n, k, s = task.tokens.shape
    tokens = task.tokens.view(n * k, s).to(device)
    mask = task.response_mask.view(n * k, s).to(device)
    weight = torch.as_tensor(task.corpus_freq.reshape(-1), dtype=torch.float32, device=device) / n
    opt = torch.optim.Adam(model.parameters(), lr=cfg.sft_lr, foreach=True)
    for _ in range(cfg.sft_steps):
        nll = -(weight * sequence_logps(model, tokens, mask).sum).sum()
        opt.zero_grad(set_to_none=True)
        nll.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class RunRecord:
    """One method's preference-training run. S = steps + 1 recorded steps (0 = the reference), P train pairs.

    objective: (S,) mean training loss (what the optimiser minimised).
    loss: (S, P) per-pair loss of the ordered pair (y_w chosen; for "*_bt" the loss of that order,
        as toy_bandits.dynamics records it). objective_pairs: (S, P) per-pair training loss.
    delta_sum, delta_mean: (S, P) log-odds of the pair, summed and per-token mean log-probabilities.
    chosen_logp: (S, P) summed log pi(y_w | x). in_U: (S, P) delta_ref < delta < 0 (summed).
    certified: (S, P) the loss value alone proves delta > margin (target-form losses; False otherwise),
        in the method's own delta (mean for cpo_easy).
    target: (P,) the implicit target T (nan for IPO and DPO-Positive), in the method's own delta.
    heldout_steps: (H,) steps of the held-out evaluations; heldout_delta_sum, heldout_delta_mean: (H, Q).
    """

    method: str
    seed: int
    beta: float
    optimizer: str
    objective: np.ndarray
    objective_pairs: np.ndarray
    loss: np.ndarray
    delta_sum: np.ndarray
    delta_mean: np.ndarray
    chosen_logp: np.ndarray
    in_U: np.ndarray
    certified: np.ndarray
    target: np.ndarray
    heldout_steps: np.ndarray
    heldout_delta_sum: np.ndarray
    heldout_delta_mean: np.ndarray

    @property
    def train_ranking_accuracy(self) -> np.ndarray:
        """(S,) fraction of train pairs with pi(y_w) >= pi(y_l) (Chen et al. 2024)."""
        return (self.delta_sum >= 0).mean(axis=1)

    @property
    def heldout_ranking_accuracy(self) -> np.ndarray:
        """(H,) the same on held-out pairs."""
        return (self.heldout_delta_sum >= 0).mean(axis=1)


def pair_losses(method: str, beta: float, params: dict, q, pc, pr, rc, rr):
    """(objective per pair, ordered-pair loss per pair) of ``method`` on log-probs (P,).

    q: (P,) label frequency of y_w for the "*_bt" methods (ignored otherwise). Shared with the tabular prediction
    (toy_lm/tabular.py), so the run and its prediction minimise the same formula.
    """
    if method in BT_METHODS:
        base = get_loss(BT_METHODS[method])
        forward = base(pc, pr, rc, rr, beta=beta, **params).losses
        if method == "dpo_bt":
            return get_loss("dpo_bt")(pc, pr, rc, rr, beta=beta, q=q).losses, forward
        backward = base(pr, pc, rr, rc, beta=beta, **params).losses  # the label that chose y_l
        return q * forward + (1 - q) * backward, forward
    losses = get_loss(method)(pc, pr, rc, rr, beta=beta, **params).losses
    return losses, losses


def method_target(method: str, beta: float, params: dict, rc, rr) -> torch.Tensor:
    """The implicit target T of ``method`` per pair (nan for the losses without a target form)."""
    name = BT_METHODS.get(method, method)
    if name not in TARGET_FORM:
        return torch.full_like(rc, math.nan)
    return implicit_target(name, rc, rr, beta=beta, **params)


def make_optimizer(optimizer: str, params, lr: float) -> torch.optim.Optimizer:
    """torch's SGD (plain) or Adam (torch defaults besides lr): the same rule for the LM and its tabular prediction."""
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, foreach=True)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")


def _check_pair_loss(method: str, pair_loss, lr) -> None:
    """A given ``pair_loss`` (summed log-probabilities) needs its ``lr`` and a method that reads sums."""
    if pair_loss is None:
        return
    if lr is None:
        raise ValueError("a pair_loss needs its lr")
    if uses_mean(method):
        raise ValueError(f"a pair_loss takes summed log-probabilities; {method!r} is a per-token-mean method")


def train_preference(method: str, task: Task, reference: TinyGPT, ref_logps: SeqLogps, cfg: LMConfig, seed: int,
                     device: torch.device, beta: float, optimizer: str, progress=None, pair_loss=None,
                     lr: float | None = None, on_step=None) -> RunRecord:
    """Train a copy of ``reference`` with ``method``'s loss on the train pairs; record every step.

    ref_logps: the reference's log-probabilities of every candidate (from :func:`all_logps`).
    beta: the loss's beta (> 0); optimizer: "sgd" or "adam" (step size ``cfg.lr(optimizer, beta, method)``).
    progress: optional callable(step) called after each step.
    pair_loss, lr: None (``method``'s loss and step size), or a callable (pc, pr, rc, rr) -> (objective per pair,
        ordered loss per pair) on summed log-probabilities (P,) and its step size, trained instead (``method`` is
        then a label; the U-atlas, toy_lm/atlas_lm.py). ``target`` / ``certified`` are then nan / False.
    on_step: optional callable(step, policy) called at each recorded step before its update (the re-linearised kernel
        prediction reads the LM's parameters there, toy_lm/kernel.py); it must not change the policy.
    """
    seed_everything(seed)
    policy = copy.deepcopy(reference)
    policy.train()
    for p in policy.parameters():
        p.requires_grad_(True)
    _check_pair_loss(method, pair_loss, lr)
    lr = cfg.lr(optimizer, beta, method) if pair_loss is None else lr
    params = cfg.loss_params(method) if pair_loss is None else {}
    opt = make_optimizer(optimizer, policy.parameters(), lr)
    q_train = torch.as_tensor(task.q_hat[task.split("train")], dtype=torch.float32, device=device)

    tr, ho = task.split("train"), task.split("heldout")
    p_train = task.n_train
    # Chosen then rejected, one batch of 2P sequences.
    train_tokens = torch.cat([task.tokens[tr, W], task.tokens[tr, L]]).to(device)  # (2P, S)
    train_mask = torch.cat([task.response_mask[tr, W], task.response_mask[tr, L]]).to(device)
    ho_tokens = torch.cat([task.tokens[ho, W], task.tokens[ho, L]]).to(device)
    ho_mask = torch.cat([task.response_mask[ho, W], task.response_mask[ho, L]]).to(device)
    mean_inputs = uses_mean(method)
    ref_field = ref_logps.mean if mean_inputs else ref_logps.sum
    rc, rr = ref_field[tr, W].to(device), ref_field[tr, L].to(device)
    ref_delta_sum = (ref_logps.sum[tr, W] - ref_logps.sum[tr, L]).numpy()
    target = (method_target(method, beta, params, rc, rr) if pair_loss is None
              else torch.full_like(rc, math.nan))
    margin = cfg.margin

    rec = {k: [] for k in ("objective", "objective_pairs", "loss", "delta_sum", "delta_mean", "chosen_logp",
                           "certified", "ho_steps", "ho_sum", "ho_mean")}
    for step in range(cfg.steps + 1):
        out = sequence_logps(policy, train_tokens, train_mask)
        if not torch.isfinite(out.sum).all():
            raise FloatingPointError(f"{method} (beta {beta:g}, {optimizer}, lr {lr:g}, "
                                     f"seed {seed}) diverged at step {step}: non-finite log-probabilities; lower the "
                                     "step size")
        total, mean = out.sum, out.mean
        inputs = mean if mean_inputs else total
        pc, pr = inputs[:p_train], inputs[p_train:]
        objective_pairs, ordered = (pair_losses(method, beta, params, q_train, pc, pr, rc, rr) if pair_loss is None
                                    else pair_loss(pc, pr, rc, rr))
        objective = objective_pairs.mean()
        with torch.no_grad():
            rec["objective"].append(objective.item())
            rec["objective_pairs"].append(objective_pairs.cpu().numpy())
            rec["loss"].append(ordered.cpu().numpy())
            rec["delta_sum"].append((total[:p_train] - total[p_train:]).cpu().numpy())
            rec["delta_mean"].append((mean[:p_train] - mean[p_train:]).cpu().numpy())
            rec["chosen_logp"].append(total[:p_train].cpu().numpy())
            cert = (alignment_certificate(ordered, target, beta=beta, margin=margin)
                    if not torch.isnan(target).any() else torch.zeros_like(ordered, dtype=torch.bool))
            rec["certified"].append(cert.cpu().numpy())
            if step % cfg.heldout_every == 0 or step == cfg.steps:
                policy.eval()
                ho = sequence_logps(policy, ho_tokens, ho_mask)
                policy.train()
                q = ho.sum.shape[0] // 2
                rec["ho_steps"].append(step)
                rec["ho_sum"].append((ho.sum[:q] - ho.sum[q:]).cpu().numpy())
                rec["ho_mean"].append((ho.mean[:q] - ho.mean[q:]).cpu().numpy())
        if on_step is not None:
            on_step(step, policy)
        if step == cfg.steps:
            break
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        if progress is not None:
            progress(step + 1)
    delta_sum = np.stack(rec["delta_sum"])
    return RunRecord(
        method=method, seed=seed, beta=beta, optimizer=optimizer,
        objective=np.asarray(rec["objective"]), objective_pairs=np.stack(rec["objective_pairs"]),
        loss=np.stack(rec["loss"]), delta_sum=delta_sum, delta_mean=np.stack(rec["delta_mean"]),
        chosen_logp=np.stack(rec["chosen_logp"]),
        in_U=(ref_delta_sum[None] < delta_sum) & (delta_sum < 0),
        certified=np.stack(rec["certified"]), target=target.cpu().numpy(),
        heldout_steps=np.asarray(rec["ho_steps"]), heldout_delta_sum=np.stack(rec["ho_sum"]),
        heldout_delta_mean=np.stack(rec["ho_mean"]),
    )


# ----------------------------------------------------------------------------------------------
# Seed replicas as one batched model (PyTorch's model-ensembling recipe: torch.func.stack_module_state + vmap)


def _stacked(models: list[TinyGPT]):
    """(stacked parameters as leaves, stacked buffers, a parameter-free copy of the architecture)."""
    from torch.func import stack_module_state

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    for block in base.blocks:
        block.fused_attention = False  # vmap has no batching rule for the fused kernel (it would loop)
    return params, buffers, base


def _stacked_logps(base, params, buffers, tokens: torch.Tensor, mask: torch.Tensor) -> SeqLogps:
    """Sequence log-probabilities of R replicas at once: tokens, mask (R, B, T) -> fields (R, B).

    Only the forward pass is vmapped; the log-softmax and the masked sum are those of
    :func:`toy_lm.model.sequence_logps`, on one more leading axis.
    """
    from torch.func import functional_call, vmap

    logits = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))(params, buffers, tokens[:, :, :-1])  # (R,B,T-1,V)
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, :, 1:, None]).squeeze(-1)  # (R, B, T-1)
    m = mask[:, :, 1:].to(token_logps.dtype)
    total = (token_logps * m).sum(dim=2)
    length = mask.sum(dim=2)
    return SeqLogps(total, total / length.to(total.dtype), length)


def train_reference_batched(tasks: list[Task], cfg: LMConfig, seeds: list[int], device: torch.device) -> list[TinyGPT]:
    """:func:`train_reference` for several seeds at once (one stacked model; the same Adam, per coordinate).

    Every task must have the same shapes (one config). Returns one frozen model per seed.
    """
    models = [build_model(task, cfg, seed, device) for task, seed in zip(tasks, seeds)]
    if len(models) == 1:
        return [train_reference(tasks[0], cfg, seeds[0], device)]
    params, buffers, base = _stacked(models)
    tokens = torch.stack([t.tokens.reshape(-1, t.tokens.shape[-1]) for t in tasks]).to(device)  # (R, N K, S)
    mask = torch.stack([t.response_mask.reshape(-1, t.tokens.shape[-1]) for t in tasks]).to(device)
    weight = torch.stack([torch.as_tensor(t.corpus_freq.reshape(-1), dtype=torch.float32) / t.n_prompts
                          for t in tasks]).to(device)  # (R, N K)
    leaves = list(params.values())
    opt = torch.optim.Adam(leaves, lr=cfg.sft_lr, foreach=True)
    for _ in range(cfg.sft_steps):
        nll = -(weight * _stacked_logps(base, params, buffers, tokens, mask).sum).sum()  # sum over replicas
        opt.zero_grad(set_to_none=True)
        nll.backward()
        opt.step()
    out = []
    for r, model in enumerate(models):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name][r])
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        out.append(model)
    return out


def train_preference_batched(method: str, tasks: list[Task], references: list[TinyGPT], ref_logps: list[SeqLogps],
                             cfg: LMConfig, seeds: list[int], device: torch.device, beta: float,
                             optimizer: str, pair_loss=None, lr: float | None = None) -> list[RunRecord]:
    """:func:`train_preference` for R seed replicas of one cell at once, as one batched model.

    Each replica has its own parameters (stacked leaves), its own task and reference; the loss is the sum over
    replicas of each one's mean loss, so each replica's gradient is its own. SGD and Adam act per coordinate,
    so the update of a replica is the one it would get alone; the batched forward sums in another order, so
    the numbers agree with :func:`train_preference` to float tolerance, not bitwise
    (tests/toy_lm/test_lm_batched.py). pair_loss, lr: as in :func:`train_preference`, on the (R P,) pairs of all
    replicas in order.
    """
    r_count = len(tasks)
    if r_count == 1:
        return [train_preference(method, tasks[0], references[0], ref_logps[0], cfg, seeds[0], device, beta=beta,
                                 optimizer=optimizer, pair_loss=pair_loss, lr=lr)]
    policies = [copy.deepcopy(ref) for ref in references]
    for pol in policies:
        for p in pol.parameters():
            p.requires_grad_(True)
    params, buffers, base = _stacked(policies)
    _check_pair_loss(method, pair_loss, lr)
    lr = cfg.lr(optimizer, beta, method) if pair_loss is None else lr
    loss_params = cfg.loss_params(method) if pair_loss is None else {}
    opt = make_optimizer(optimizer, list(params.values()), lr)
    p_train = tasks[0].n_train
    q_train = torch.as_tensor(np.concatenate([t.q_hat[t.split("train")] for t in tasks]), dtype=torch.float32,
                              device=device)  # (R P,)

    def pairs(task, split):
        sl = task.split(split)
        return (torch.cat([task.tokens[sl, W], task.tokens[sl, L]]), torch.cat([task.response_mask[sl, W],
                                                                                task.response_mask[sl, L]]))

    train = [pairs(t, "train") for t in tasks]
    held = [pairs(t, "heldout") for t in tasks]
    train_tokens = torch.stack([a for a, _ in train]).to(device)  # (R, 2P, S)
    train_mask = torch.stack([b for _, b in train]).to(device)
    ho_tokens = torch.stack([a for a, _ in held]).to(device)
    ho_mask = torch.stack([b for _, b in held]).to(device)
    mean_inputs = uses_mean(method)
    tr = tasks[0].split("train")
    ref_fields = [lp.mean if mean_inputs else lp.sum for lp in ref_logps]
    rc = torch.cat([f[tr, W] for f in ref_fields]).to(device)  # (R P,)
    rr = torch.cat([f[tr, L] for f in ref_fields]).to(device)
    ref_delta_sum = np.stack([(lp.sum[tr, W] - lp.sum[tr, L]).numpy() for lp in ref_logps])  # (R, P)
    target = (method_target(method, beta, loss_params, rc, rr) if pair_loss is None
              else torch.full_like(rc, math.nan))
    margin = cfg.margin

    rec = {k: [] for k in ("objective", "objective_pairs", "loss", "delta_sum", "delta_mean", "chosen_logp",
                           "certified", "ho_steps", "ho_sum", "ho_mean")}
    for step in range(cfg.steps + 1):
        out = _stacked_logps(base, params, buffers, train_tokens, train_mask)  # fields (R, 2P)
        if not torch.isfinite(out.sum).all():
            raise FloatingPointError(f"{method} (beta {beta:g}, {optimizer}, lr {lr:g}, "
                                     f"seeds {seeds}) diverged at step {step}: non-finite log-probabilities; lower the "
                                     "step size")
        total, mean = out.sum, out.mean
        inputs = mean if mean_inputs else total
        pc, pr = inputs[:, :p_train].reshape(-1), inputs[:, p_train:].reshape(-1)  # (R P,)
        objective_pairs, ordered = (pair_losses(method, beta, loss_params, q_train, pc, pr, rc, rr) if pair_loss is None
                                    else pair_loss(pc, pr, rc, rr))
        per_replica = objective_pairs.view(r_count, p_train).mean(dim=1)  # (R,)
        with torch.no_grad():
            rec["objective"].append(per_replica.cpu().numpy())
            rec["objective_pairs"].append(objective_pairs.view(r_count, p_train).cpu().numpy())
            rec["loss"].append(ordered.view(r_count, p_train).cpu().numpy())
            rec["delta_sum"].append((total[:, :p_train] - total[:, p_train:]).cpu().numpy())
            rec["delta_mean"].append((mean[:, :p_train] - mean[:, p_train:]).cpu().numpy())
            rec["chosen_logp"].append(total[:, :p_train].cpu().numpy())
            cert = (alignment_certificate(ordered, target, beta=beta, margin=margin)
                    if not torch.isnan(target).any() else torch.zeros_like(ordered, dtype=torch.bool))
            rec["certified"].append(cert.view(r_count, p_train).cpu().numpy())
            if step % cfg.heldout_every == 0 or step == cfg.steps:
                ho = _stacked_logps(base, params, buffers, ho_tokens, ho_mask)  # no dropout: eval = train mode
                q = ho.sum.shape[1] // 2
                rec["ho_steps"].append(step)
                rec["ho_sum"].append((ho.sum[:, :q] - ho.sum[:, q:]).cpu().numpy())
                rec["ho_mean"].append((ho.mean[:, :q] - ho.mean[:, q:]).cpu().numpy())
        if step == cfg.steps:
            break
        opt.zero_grad(set_to_none=True)
        per_replica.sum().backward()
        opt.step()
    stacked = {k: np.stack(v, axis=1) if k not in ("objective", "ho_steps") else v for k, v in rec.items()}
    objective = np.stack(rec["objective"], axis=1)  # (R, S)
    records = []
    tgt = target.view(r_count, p_train).cpu().numpy()
    for r in range(r_count):
        delta_sum = stacked["delta_sum"][r]
        records.append(RunRecord(
            method=method, seed=seeds[r], beta=beta, optimizer=optimizer, objective=objective[r],
            objective_pairs=stacked["objective_pairs"][r], loss=stacked["loss"][r], delta_sum=delta_sum,
            delta_mean=stacked["delta_mean"][r], chosen_logp=stacked["chosen_logp"][r],
            in_U=(ref_delta_sum[r][None] < delta_sum) & (delta_sum < 0), certified=stacked["certified"][r],
            target=tgt[r], heldout_steps=np.asarray(rec["ho_steps"]), heldout_delta_sum=stacked["ho_sum"][r],
            heldout_delta_mean=stacked["ho_mean"][r]))
    return records
