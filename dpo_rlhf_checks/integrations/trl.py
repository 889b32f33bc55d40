"""TRL integration: train with any loss of :mod:`dpo_rlhf_checks.losses` and log the paper's diagnostics.

Needs TRL (``pip install 'dpo-rlhf-checks[hf]'``; tested with the versions the ``hf`` extra pins,
TRL 1.16). Importing this module without TRL raises an ImportError saying so.

Naming: "CPO" here is **Constrained Preference Optimization** (the paper's Sec. 4, docs/theory.md §9,
§10). TRL's own ``CPOTrainer`` is *Contrastive* Preference Optimization, an unrelated method; nothing
here uses or replaces it. ``cpo_clip`` (alias ``hypo``), ``-log sigma(beta (delta - max(delta_ref, m)))``,
is the loss of HyPO (Yuan et al., arXiv 2602.11902), which the authors' code also ships as ``clip``.

- :class:`LibraryLossDPOTrainer`: a ``trl.DPOTrainer`` whose loss is ``losses.get_loss(loss_name)`` with
  its parameters (or, for a TRL ``loss_type`` name or a list of them, ``pref_losses``' loss of that name with
  TRL's parameters from the DPOConfig), on summed (``logps="sum"``, TRL's and the paper's) or per-token-mean (``"mean"``, the
  authors' code) completion log-probabilities; TRL's tokenization, reference handling (a reference
  model, precomputed reference log-probs, or a PEFT adapter) and metrics stay TRL's. At every logging
  step it logs, beside TRL's ``rewards/*`` and ``logps/*``:

    diagnostics/policy_ranking_accuracy     mean(delta >= 0): does the policy rank chosen first
    diagnostics/implicit_reward_accuracy    mean(delta > delta_ref): TRL's rewards/accuracies
    diagnostics/frac_in_undesirable         mean(delta_ref < delta < 0), the set U (docs/theory.md §6)
    diagnostics/frac_right_below_reference  mean(0 <= delta <= delta_ref)
    diagnostics/reference_ranking_accuracy  mean(delta_ref >= 0)
    diagnostics/certified_fraction          mean(loss < critical loss): the loss alone proves delta > margin
                                            (target-form losses only: dpo and the Constrained PO variants)
    diagnostics/frac_chosen_logp_fell       mean(policy chosen log-prob < reference's)
    frac_in_U                               alias of frac_in_undesirable (the authors' name)
    frac_ref_logratios_below_gamma          mean(delta_ref < gamma), gamma the loss's (0 when it has none):
                                            the authors' name for the pairs whose margin is active

  The split ``implicit_reward_accuracy - policy_ranking_accuracy = frac_in_undesirable -
  frac_right_below_reference`` holds exactly per batch (:mod:`dpo_rlhf_checks.audit_diagnostics`): the
  part of ``rewards/accuracies`` that is not a correct ranking is the pairs in U.
  The sets are strict inequalities, as the authors define U: while the policy is still the reference up
  to rounding (the first steps at a small learning rate), a pair enters U when delta exceeds delta_ref by
  a rounding error, so these fractions are noisy until the log-ratios move.
- :class:`ScoreAuditCallback`: at each evaluation, scores the trainer's (TRL-tokenized) eval set with
  the current policy and the reference (:mod:`dpo_rlhf_checks.score`), runs ``audit`` on it, logs
  headline numbers as ``eval_audit/*`` and writes the full audit to ``output_dir/audit-step{N}.json``.
"""

from __future__ import annotations

try:
    import trl
    import trl.trainer.dpo_trainer as _dpo
    from trl import DPOTrainer
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - exercised only without TRL
    raise ImportError("dpo_rlhf_checks.integrations.trl needs TRL and transformers: pip install "
                      "'dpo-rlhf-checks[hf]' (tested with the TRL versions that extra pins)") from err

import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dpo_rlhf_checks import losses as L

__all__ = ["ALIASES", "LIBRARY_ALIASES", "TRL_LOSS_TYPES", "LibraryLossDPOTrainer", "ScoreAuditCallback",
           "batch_diagnostics", "resolve_loss"]

#: Other names for the library's losses. ``hypo``: HyPO (arXiv 2602.11902) is cpo_clip.
ALIASES = {"hypo": "cpo_clip", "sigmoid": "dpo"}
#: TRL 1.16's DPOConfig.loss_type names: in :class:`LibraryLossDPOTrainer` these are TRL's losses
#: (:mod:`dpo_rlhf_checks.pref_losses`), before any library name.
TRL_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
#: The trainer's names for the library losses a TRL name shadows: ``ipo_sum`` is losses.ipo (summed log-ratios).
LIBRARY_ALIASES = {"ipo_sum": "ipo"}
LOGPS = ("sum", "mean")
TESTED_TRL = ("1.16.",)
if not trl.__version__.startswith(TESTED_TRL):  # it subclasses DPOTrainer internals that change between releases
    warnings.warn(f"dpo_rlhf_checks.integrations.trl is tested with TRL {', '.join(TESTED_TRL)}x; found "
                  f"{trl.__version__}", stacklevel=2)


def resolve_loss(name: str, params: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The library name of a loss (an alias resolved) and its parameters, checked on a dummy batch."""
    canonical = ALIASES.get(name, name)
    if canonical not in L.LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(list(L.LOSSES) + list(ALIASES))}")
    params = dict(params or {})
    z = torch.tensor([-1.0])
    L.get_loss(canonical)(z, z, z, z, beta=1.0, **params)  # a ValueError names a bad or missing parameter
    return canonical, params


def batch_diagnostics(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, losses: torch.Tensor,
                      *, loss_name: str, params: dict[str, Any], beta: float, margin: float = 0.0
                      ) -> dict[str, float]:
    """The diagnostics of one batch (module docstring) from the four log-probability tensors (B,) and the losses."""
    loss_dtype = losses.dtype  # the dtype the loss was computed in: the certificate's rounding is that dtype's
    pc, pr, rc, rr, losses = (t.detach().double() for t in (pc, pr, rc, rr, losses))
    delta, delta_ref = pc - pr, rc - rr
    out = {
        "diagnostics/policy_ranking_accuracy": (delta >= 0).double().mean().item(),
        "diagnostics/implicit_reward_accuracy": (delta > delta_ref).double().mean().item(),
        "diagnostics/frac_in_undesirable": ((delta_ref < delta) & (delta < 0)).double().mean().item(),
        "diagnostics/frac_right_below_reference": ((delta >= 0) & (delta <= delta_ref)).double().mean().item(),
        "diagnostics/reference_ranking_accuracy": (delta_ref >= 0).double().mean().item(),
        "diagnostics/frac_chosen_logp_fell": (pc < rc).double().mean().item(),
    }
    if loss_name in L.TARGET_FORM:
        # The target the loss used, recomputed in the loss's dtype from the same values (the double copies hold them
        # exactly), and the float32/bf16 loss certified with that dtype's rounding bound: a float64 target against
        # a float32 loss certified pairs with delta <= margin (issue 17).
        target = L.implicit_target(loss_name, rc.to(loss_dtype), rr.to(loss_dtype), beta=beta, **params)
        cert = L.alignment_certificate(losses.to(loss_dtype), target, beta=beta, margin=margin)
        out["diagnostics/certified_fraction"] = cert.double().mean().item()
    out["frac_in_U"] = out["diagnostics/frac_in_undesirable"]
    gamma = float(params.get("gamma", 0.0))
    out["frac_ref_logratios_below_gamma"] = (delta_ref < gamma).double().mean().item()
    return out


class LibraryLossDPOTrainer(DPOTrainer):
    """``trl.DPOTrainer`` with a loss of :mod:`dpo_rlhf_checks.losses` and the paper's diagnostics logged.

    Args (besides DPOTrainer's; ``args.beta`` is the loss's beta):
        loss_name: one of
            - a TRL 1.16 ``DPOConfig.loss_type`` name (:data:`TRL_LOSS_TYPES`: sigmoid, hinge, ipo, exo_pair,
              nca_pair, robust, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft,
              sigmoid_norm), or a list of them: the loss of :mod:`dpo_rlhf_checks.pref_losses` of that name, with
              its parameters read from ``args`` as TRL reads them (``label_smoothing``, ``discopop_tau``,
              ``f_divergence_type`` and ``f_alpha_divergence_coef`` where TRL allows them, ``loss_weights`` for a
              list: ``sum_k w_k mean(loss_k)``), on summed log-probabilities, the completion lengths TRL uses
              (ipo, sigmoid_norm: the completion mask's counts; sft: the token-weighted mean over the chosen
              tokens, TRL's batch value). A TRL name wins over a library name: ``"ipo"`` is TRL's per-token IPO
              (the library's summed IPO is ``"ipo_sum"``), ``"sigmoid"`` is TRL's (DPO in TRL's order of
              arithmetic; under reverse_kl its certificate is dpo's);
            - a key of ``losses.LOSSES`` ("dpo", "cpo_clip", "cpo_smooth", "cpo_eq17", "cpo_easy", "dpop",
              "dpo_bt") or an alias ("hypo" = cpo_clip, "ipo_sum" = the library's ipo).
        loss_params: a library loss's own parameters, e.g. ``{"gamma": 0.5, "tau": 2.0, "alpha": 1.0}`` for
            cpo_smooth, ``{"margin": 0.0}`` for cpo_clip (a TRL name takes its parameters from ``args``).
        logps: "sum" (TRL's, the paper's theory) or "mean" (per-token means, as the authors' code; cpo_easy
            requires it; library losses only).
        certificate_margin: the m of ``diagnostics/certified_fraction`` (delta > m certified).

    ``args.loss_type`` is left at its default ``["sigmoid"]`` (the loss is ``loss_name``) or equals ``loss_name``'s
    list; the trainer sets it to the TRL names so that TRL's own checks of the options run (f_divergence_type only
    with the losses TRL allows it for, exo_pair's label_smoothing > 0, ...). Rejected: ld_alpha, use_weighting,
    a non-default f_divergence_type or loss_weights with a library loss.
    """

    def __init__(self, *args, loss_name: str | list[str] = "dpo", loss_params: dict[str, Any] | None = None,
                 logps: str = "sum", certificate_margin: float = 0.0, **kwargs):
        names = [loss_name] if isinstance(loss_name, str) else list(loss_name)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"loss_name must be a loss name or a non-empty list of TRL loss_type names, got "
                             f"{loss_name!r}")
        self.trl_loss_types = names if all(n in TRL_LOSS_TYPES for n in names) else None
        if self.trl_loss_types is None and len(names) > 1:
            unknown = [n for n in names if n not in TRL_LOSS_TYPES]
            raise ValueError(f"a list of losses takes TRL loss_type names only ({', '.join(TRL_LOSS_TYPES)}); got "
                             f"{', '.join(map(repr, unknown))}")
        if self.trl_loss_types is not None:
            if loss_params:
                raise ValueError(f"loss {names[0]!r} is TRL's: its parameters come from the DPOConfig "
                                 "(label_smoothing, discopop_tau, f_divergence_type, ...), not loss_params")
            if logps != "sum":
                raise ValueError("TRL's losses take summed log-probabilities (ipo, sigmoid_norm and sft divide by the "
                                 "lengths inside, as TRL does): logps must be 'sum'")
            self.loss_name, self.loss_params = "+".join(names), {}
        else:
            name = LIBRARY_ALIASES.get(names[0], names[0])
            if ALIASES.get(name, name) not in L.LOSSES:
                library = [n for n in [*L.LOSSES, *ALIASES, *LIBRARY_ALIASES] if n not in TRL_LOSS_TYPES]
                raise ValueError(f"unknown loss {names[0]!r}; valid: TRL's {', '.join(TRL_LOSS_TYPES)}; the library's "
                                 f"{', '.join(library)}")
            self.loss_name, self.loss_params = resolve_loss(name, loss_params)
        if logps not in LOGPS:
            raise ValueError(f"logps must be one of {', '.join(LOGPS)}, got {logps!r}")
        if self.loss_name == "cpo_easy" and logps != "mean":
            raise ValueError("cpo_easy is defined on per-token mean log-probabilities: pass logps='mean'")
        if not math.isfinite(certificate_margin):
            raise ValueError(f"certificate_margin must be finite, got {certificate_margin!r}")
        self.logps_mode, self.certificate_margin = logps, float(certificate_margin)
        in_kwargs = "args" in kwargs
        config = kwargs.get("args") if in_kwargs else (args[2] if len(args) > 2 else None)
        if config is not None:
            bad = []
            wanted = self.trl_loss_types or ["sigmoid"]
            if list(config.loss_type) not in (["sigmoid"], wanted):
                bad.append(f"loss_type={config.loss_type} (the loss is loss_name)")
            if config.ld_alpha is not None:
                bad.append("ld_alpha")
            if config.f_divergence_type != "reverse_kl" and self.trl_loss_types is None:
                bad.append(f"f_divergence_type={config.f_divergence_type!r} (with TRL's loss names only)")
            if config.loss_weights is not None and self.trl_loss_types is None:
                bad.append("loss_weights (with TRL's loss names only)")
            if config.use_weighting:
                bad.append("use_weighting")
            if bad:
                raise ValueError("LibraryLossDPOTrainer does not support the DPOConfig options " + ", ".join(bad))
            if self.trl_loss_types is not None:
                # TRL reads the loss from args.loss_type: set it (on a copy) so that TRL's own checks of the
                # options run in __init__ (f-divergence losses, exo_pair's label_smoothing, loss_weights' length)
                config = copy.copy(config)
                config.loss_type = list(self.trl_loss_types)
                if config.loss_weights is not None and len(config.loss_weights) != len(config.loss_type):
                    raise ValueError(f"loss_weights has {len(config.loss_weights)} weights for "
                                     f"{len(config.loss_type)} losses {config.loss_type}")
                if in_kwargs:
                    kwargs["args"] = config
                else:
                    args = (*args[:2], config, *args[3:])
        elif self.trl_loss_types is not None:
            raise ValueError("TRL's loss names need a DPOConfig (args=...): their parameters are read from it")
        super().__init__(*args, **kwargs)

    def _trl_named_loss(self, pc, pr, rc, rr, completion_mask, shift_mask):
        """``sum_k w_k batch_loss_k`` for TRL's loss names (pref_losses), with TRL's parameters and lengths; and the
        per-pair losses of the combination (for the diagnostics; aot's are per sorted rank).

        Lengths as TRL 1.16's ``_compute_loss`` takes them: ipo and sigmoid_norm divide each score by the count
        of its completion mask (clamped at 1); sft is the mean of -log p over every chosen completion token of
        the batch, ``sum_i(-pc_i) / sum_i(n_i)`` with n the shifted mask's counts (token-weighted, one value).
        """
        from dpo_rlhf_checks import pref_losses as P

        n_c, n_r = (m.sum(dim=1).clamp(min=1).to(pc.dtype) for m in completion_mask.chunk(2, dim=0))
        n_sft = shift_mask.chunk(2, dim=0)[0].sum(dim=1).to(pc.dtype)  # (B,) chosen completion tokens
        weights = self.args.loss_weights or [1.0] * len(self.trl_loss_types)
        total, per_pair = 0.0, torch.zeros_like(pc)
        for name, weight in zip(self.trl_loss_types, weights, strict=True):
            spec = P.SPECS[name]
            kw: dict[str, Any] = {"beta": self.beta, **{p: getattr(self.args, p) for p in spec.params}}
            if spec.f_divergence:
                kw.update(f_divergence_type=self.args.f_divergence_type,
                          f_alpha_divergence_coef=self.args.f_alpha_divergence_coef)
            if name == "sft":
                kw["chosen_lengths"] = n_sft.clamp(min=1)
            elif spec.lengths:
                kw.update(chosen_lengths=n_c, rejected_lengths=n_r)
            losses = spec.loss(pc, pr, rc, rr, **kw).losses  # checks the inputs and parameters; the values
            if name == "sigmoid":
                # The same quantity in TRL's arithmetic, -logsigmoid(beta h): under bf16 autocast the library's
                # softplus(-beta h) gave an 8e-4 relative gradient difference from TRL on one batch (as for "dpo")
                h = (P.score(pc - rc, self.args.f_divergence_type, self.args.f_alpha_divergence_coef)
                     - P.score(pr - rr, self.args.f_divergence_type, self.args.f_alpha_divergence_coef))
                losses = -torch.nn.functional.logsigmoid(self.beta * h)
            if name == "sft":  # TRL's token-weighted batch value: sum(-pc) / sum(n)
                batch = (losses * n_sft).sum() / n_sft.sum().clamp(min=1)
            else:
                batch = losses.mean()
            total = total + batch * weight
            per_pair = per_pair + losses * weight
        return total, per_pair

    def _reference_logps(self, model_kwargs, labels, inputs, seq_len):
        """Summed reference log-probabilities (B,), (B,), exactly as TRL's ``_compute_loss`` gets them.

        Precomputed columns when TRL precomputed them; else a no-grad forward of the reference model (or of
        the policy with its PEFT adapter disabled), outside autocast, as TRL 1.16 does inside its loss.
        """
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        kwargs = {k: v for k, v in model_kwargs.items() if k != "output_router_logits"}
        with torch.no_grad(), _dpo.disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if _dpo.is_peft_model(self.model) and self.ref_model is None:
                unwrapped = self.accelerator.unwrap_model(self.model)
                with _dpo.use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    ref_outputs = self.model(**kwargs, labels=labels, fused_lm_head=True)
            else:
                ref_outputs = self.ref_model(**kwargs, labels=labels, fused_lm_head=True)
        return ref_outputs.log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        non_model = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
        model_kwargs = {k: v for k, v in inputs.items() if k not in non_model}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:  # MoE: the router's load-balancing loss, as TRL adds it (outputs.aux_loss)
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]  # (2B, T-1): the tokens a position predicts
        seq_len = shift_mask.size(1)
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)  # TRL's fused head: per-token log-probs
        per_token = outputs.log_probs[:, -seq_len:]
        sum_logps = per_token.sum(dim=1)  # (2B,) summed over completion tokens (masked positions are 0)
        ref_c, ref_r = self._reference_logps(model_kwargs, labels, inputs, seq_len)
        sum_ref = torch.cat([ref_c, ref_r]).to(sum_logps.device, sum_logps.dtype)
        logps, ref = sum_logps, sum_ref
        if self.logps_mode == "mean":
            n_tokens = shift_mask.sum(dim=1).clamp(min=1).to(logps.dtype)
            logps, ref = logps / n_tokens, ref / n_tokens
        # A sum of log-softmax values is <= 0; the tiled kernel can round a near-0 one to +1e-8, which the
        # library's domain check rejects. Clamping changes nothing else (and no gradient below 0).
        pc, pr = logps.clamp(max=0.0).chunk(2, dim=0)
        rc, rr = ref.clamp(max=0.0).chunk(2, dim=0)
        if self.trl_loss_types is not None:
            loss, losses = self._trl_named_loss(pc, pr, rc, rr, completion_mask, shift_mask)
        else:
            out = L.get_loss(self.loss_name)(pc, pr, rc, rr, beta=self.beta, **self.loss_params)
            losses = out.losses
            if self.loss_name == "dpo":
                # The same quantity in TRL's order of arithmetic, -log sigma(beta ((pc - rc) - (pr - rr))): under bf16
                # autocast the library's order, softplus(-beta ((pc - pr) - (rc - rr))), rounds differently (a 7e-4
                # relative gradient difference at step 1); with TRL's order the gradients are TRL's.
                losses = -torch.nn.functional.logsigmoid(self.beta * ((pc - rc) - (pr - rr)))
            loss = losses.mean()
        gather = self.accelerator.gather_for_metrics
        m = self._metrics[mode]
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            m["aux_loss"].append(gather(outputs.aux_loss).mean().item())

        # TRL's metrics under TRL's names mean TRL's quantities: from the SUMMED log-probabilities, whatever
        # logps is (TRL's sigmoid_norm run logs its rewards/* and logps/* from sums too).
        s_pc, s_pr = sum_logps.detach().chunk(2, dim=0)
        s_rc, s_rr = sum_ref.detach().chunk(2, dim=0)
        self._log_trl_metrics(m, mode, outputs, inputs, shift_mask, s_pc, s_pr, s_rc, s_rr)
        if self.logps_mode == "mean":  # the per-token means the loss used, under their own names
            cr, rj = self.beta * (pc.detach() - rc.detach()), self.beta * (pr.detach() - rr.detach())
            m["rewards_per_token/chosen"].append(gather(cr).mean().item())
            m["rewards_per_token/rejected"].append(gather(rj).mean().item())
            m["rewards_per_token/accuracies"].append(gather((cr > rj).float()).mean().item())
            m["rewards_per_token/margins"].append(gather(cr - rj).mean().item())
            m["logps_per_token/chosen"].append(gather(pc.detach()).mean().item())
            m["logps_per_token/rejected"].append(gather(pr.detach()).mean().item())
        # TRL's sigmoid under reverse_kl is dpo, and carries dpo's certificate; other TRL names have none
        diag_name = ("dpo" if self.trl_loss_types == ["sigmoid"] and self.args.f_divergence_type == "reverse_kl"
                     else self.loss_name)
        diag = batch_diagnostics(gather(pc.detach()), gather(pr.detach()), gather(rc.detach()), gather(rr.detach()),
                                 gather(losses.detach()), loss_name=diag_name, params=self.loss_params,
                                 beta=self.beta, margin=self.certificate_margin)
        for k, v in diag.items():
            m[k].append(v)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**{k: v for k, v in model_kwargs.items()})
        return (loss, outputs) if return_outputs else loss

    def _log_trl_metrics(self, m, mode, outputs, inputs, shift_mask, pc, pr, rc, rr):
        """TRL 1.16's own metrics of one batch, computed as ``DPOTrainer._compute_loss`` computes them: entropy,
        num_tokens, logits/chosen, logits/rejected, mean_token_accuracy, rewards/*, logps/* (summed log-probs)."""
        gather = self.accelerator.gather_for_metrics
        seq_len = shift_mask.size(1)
        entropy_sum = gather((outputs.entropy[:, -seq_len:].detach() * shift_mask).sum()).sum()
        total = gather(shift_mask.sum()).sum()
        m["entropy"].append((entropy_sum / total).item() if total > 0 else 0.0)
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
        m["num_tokens"] = [self._total_train_tokens]
        chosen_mask, rejected_mask = shift_mask.chunk(2, dim=0)
        mean_c, mean_r = outputs.mean_logits[:, -seq_len:].chunk(2, dim=0)
        for name, logits, mask in (("chosen", mean_c, chosen_mask), ("rejected", mean_r, rejected_mask)):
            tot = gather(logits[mask.bool()].sum()).sum().item()
            n = gather(mask.sum()).sum().item()
            m[f"logits/{name}"].append(tot / n if n > 0 else 0.0)
        top1, _ = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)
        correct = gather((top1 & chosen_mask.bool()).sum()).sum()
        n = gather(chosen_mask.sum()).sum()
        m["mean_token_accuracy"].append((correct / n).item() if n > 0 else 0.0)
        chosen_rewards, rejected_rewards = self.beta * (pc - rc), self.beta * (pr - rr)
        m["rewards/chosen"].append(self.accelerator.gather(chosen_rewards).mean().item())
        m["rewards/rejected"].append(self.accelerator.gather(rejected_rewards).mean().item())
        m["rewards/accuracies"].append(self.accelerator.gather((chosen_rewards > rejected_rewards).float()).mean()
                                       .item())
        m["rewards/margins"].append(self.accelerator.gather(chosen_rewards - rejected_rewards).mean().item())
        m["logps/chosen"].append(self.accelerator.gather(pc).mean().item())
        m["logps/rejected"].append(self.accelerator.gather(pr).mean().item())


class ScoreAuditCallback(TrainerCallback):
    """At each evaluation: score the eval set (policy and reference) and audit it.

    trainer: the DPOTrainer (or :class:`LibraryLossDPOTrainer`) whose eval set (TRL-tokenized) is scored;
    betas: the audit's betas (default: the trainer's beta). Logs ``eval_audit/*`` headline numbers and
    writes ``audit-step{N}.json`` in the trainer's output_dir; the last result is ``self.last_audit``.
    In a multi-process run every process scores its share of the eval set and the main process alone
    audits, logs and writes (``last_audit`` stays None elsewhere).
    """

    def __init__(self, trainer, *, betas: tuple[float, ...] | None = None, batch_size: int | None = None):
        self.trainer = trainer
        self.betas = tuple(betas) if betas else (float(trainer.beta),)
        self.batch_size = batch_size
        self.last_audit: dict[str, Any] | None = None

    def on_evaluate(self, args, state, control, **kwargs):
        from dpo_rlhf_checks import audit as A
        from dpo_rlhf_checks import score as S

        tr = self.trainer
        ds = tr.eval_dataset
        if ds is None or isinstance(ds, dict):
            raise ValueError("ScoreAuditCallback needs one eval_dataset (not a dict of them)")
        pairs = [S.TokenizedPair(list(r["prompt_ids"]), list(r["chosen_ids"]), list(r["rejected_ids"])) for r in ds]
        config = S.ScoreConfig(batch_size=self.batch_size or args.per_device_eval_batch_size,
                               max_length=args.max_length, truncation_mode=args.truncation_mode)
        seqs = S.build_sequences(pairs, [f"eval row {i + 1}" for i in range(len(pairs))], config)
        acc = tr.accelerator
        device = acc.device
        pad = tr.processing_class.pad_token_id if hasattr(tr.processing_class, "pad_token_id") else 0
        policy = acc.unwrap_model(tr.model)
        was_training = policy.training
        n = seqs.n_pairs
        # Several processes (accelerate launch): each scores its share of the batches, the sum over processes
        # assembles the columns (score.Parallel), and the main process alone audits and writes.
        parallel = S.Parallel(acc.process_index, acc.num_processes)
        lp = parallel.reduce_sum(S.sequence_logps(policy, seqs, batch_size=config.batch_size, pad_id=pad,
                                                  device=device, parallel=parallel))
        if "ref_chosen_logps" in ds.column_names:
            ref = np.concatenate([np.asarray(ds["ref_chosen_logps"], float), np.asarray(ds["ref_rejected_logps"], float)])
        elif tr.ref_model is not None:
            ref = parallel.reduce_sum(S.sequence_logps(acc.unwrap_model(tr.ref_model), seqs,
                                                       batch_size=config.batch_size, pad_id=pad, device=device,
                                                       parallel=parallel))
        else:
            raise ValueError("ScoreAuditCallback needs a reference model or precomputed reference log-probs "
                             "(PEFT adapters are not supported)")
        policy.train(was_training)
        self.sequences_scored = S.run_batched.last_share  # this process's share of the last model's sequences
        if not acc.is_main_process:
            return control
        cols = {"ref_chosen_logps": ref[:n], "ref_rejected_logps": ref[n:], "chosen_logps": lp[:n],
                "rejected_logps": lp[n:], "chosen_length": seqs.n_completion[:n].astype(float),
                "rejected_length": seqs.n_completion[n:].astype(float)}
        data = A.PairData(Path("<eval set>"), "jsonl", {k: np.minimum(v, 0.0) if "logps" in k else v
                                                         for k, v in cols.items()}, rows_read=n)
        result = A.audit(data, A.AuditConfig(betas=self.betas))
        result["step"] = state.global_step
        self.last_audit = result
        out_dir = Path(args.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"audit-step{state.global_step}.json").write_text(json.dumps(result, indent=2))
        d = result["diagnostics"]
        headline = {
            "eval_audit/policy_ranking_accuracy": result["policy_ranking_accuracy"],
            "eval_audit/frac_in_undesirable": result["frac_in_undesirable"],
            "eval_audit/reference_ranking_accuracy": result["reference_ranking_accuracy"],
            "eval_audit/implicit_reward_accuracy": d["implicit_reward_accuracy"],
            "eval_audit/frac_chosen_logp_fell": d["frac_chosen_logp_fell"],
        }
        metrics = kwargs.get("metrics")
        if metrics is not None:
            metrics.update(headline)
        state.log_history.append({**headline, "step": state.global_step})
        return control
