"""The U-atlas's LM column: for each per-pair preference loss, one slow-regime ordered SGD cell of the LM stage, with
the fraction of train pairs in U predicted (tabular) against observed (the tiny transformer).

The cell (fixed before any run, printed in every row): ordered labels (y_w always chosen), plain SGD, the slow
beta of the LM claims' design (``toy_lm.design.DESIGN.slow_beta`` = 2.5) and the default stage's steps and step
sizes (``toy_lm.config.LMConfig``), with the stage's beta rule for the step (:func:`lm_lr`). Every loss trains from
the same references (one SFT per seed, shared by all losses), on the same pairs and seeds.

Loss: the :mod:`dpo_rlhf_checks.pref_losses` function of that name (``SPECS[name].loss``), called through one
adapter (:func:`pair_loss`) by both the LM run (float32, toy_lm.train's batched seed replicas) and its tabular
prediction (float64 free logits per prompt, toy_lm.tabular.run_tabular, the run's optimizer), so prediction and
run minimise the same function. DPOTrainer losses get summed log-probabilities and, where TRL divides by them
(ipo, sigmoid_norm, sft), the completions' token counts from the task's response mask; CPOTrainer losses
(reference-free) get sums (sigmoid, hinge) or per-token means (ipo, simpo, alphapo), as TRL passes them, and
CPOTrainer's extra ``cpo_alpha`` NLL term is NOT added (the row is about the preference term alone).

f-divergence settings ("sigmoid@js_divergence", ...; :func:`per_pair_losses` with ``f_divergences``): the same
cell with TRL's ``f_divergence_type`` (alpha_divergence at TRL's default coefficient 0.5). Their scores s are
increasing, so the implicit reward prefers y_w (s(r_w) > s(r_l)) exactly when delta > delta_ref: U is the same set.

U: delta_ref < delta < 0 on summed log-probabilities, delta_ref the SFT reference's (for the reference-free losses
the model training starts from). Prediction against observation: :func:`toy_lm.predict.predict_cell` (the clock of
the two runs matched by the mean training objective; a seed whose tabular run never reaches the LM's final
objective saturates its clock and gives no value).

Decision (toy_lm/design.py): per seed, observed - predicted fraction in U; its mean over seeds has a Student-t
interval at level 1 - alpha/K (K planned looks of the config's seeds, seed_step, max_seeds; fractions' sd floored
at 1/(P sqrt 12)); ``decided`` is :func:`toy_lm.design.decide_bound` ("within", ``DESIGN.atlas_tol_frac_in_U``):
True inside (-tol, tol), False wholly outside, None (inconclusive) otherwise. While undecided, ``seed_step`` more
seeds are trained for that loss, up to ``max_seeds``.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from dpo_rlhf_checks.atlas_rows import MIXES, PAPER_CPO
from dpo_rlhf_checks.losses import get_loss
from dpo_rlhf_checks.pref_losses import F_DIVERGENCES, SPECS
from toy_lm.config import LMConfig, lm_threads
from toy_lm.design import DESIGN, LMDesign, config_looks, decide_bound, seed_interval
from toy_lm.model import resolve_device
from toy_lm.predict import compare_cell, predict_cell
from toy_lm.stage import SeedRun, _Threads, planned_seeds
from toy_lm.task import L, W, make_task
from toy_lm.train import all_logps, train_preference_batched, train_reference_batched

OPTIMIZER = "sgd"

#: Each loss's parameters in its LM cell: TRL 1.16's defaults, except where stated.
#: exo_pair: label_smoothing 1e-3 (TRL rejects its default 0 for exo_pair; 1e-3 is the value its error message
#:   and the EXO paper recommend); robust: label_smoothing 0.1 (TRL's default 0 makes it sigmoid, row for row);
#: cpo_alphapo: alpha 0.25 (TRL's default 0 makes it cpo_simpo); CPO's alpha 0 elsewhere and no cpo_alpha NLL term.
LM_PARAMS: dict[str, dict] = {
    "exo_pair": {"label_smoothing": 1e-3},
    "robust": {"label_smoothing": 0.1},
    "discopop": {"discopop_tau": 0.05},
    "cpo_sigmoid": {"label_smoothing": 0.0, "alpha": 0.0},
    "cpo_hinge": {"alpha": 0.0},
    "cpo_ipo": {"alpha": 0.0},
    "cpo_simpo": {"simpo_gamma": 0.5, "label_smoothing": 0.0, "alpha": 0.0},
    "cpo_alphapo": {"simpo_gamma": 0.5, "alpha": 0.25, "label_smoothing": 0.0},
    # the paper's CPO variants (dpo_rlhf_checks.losses), at their first atlas row's parameters
    "cpo_eq17": {"gamma": 0.5},
    "cpo_clip": {"margin": 0.0},
    "cpo_smooth": {"gamma": 0.5, "tau": 2.0, "alpha": 1.0},
    "cpo_easy": {"gamma": 0.5},
    "sigmoid+sft": {"sft_weight": 1.0},  # loss_type=["sigmoid", "sft"], loss_weights=[1, 1]
}

#: Losses whose curvature in delta does not grow with beta (quadratic in log-ratios, or no beta at all): they keep
#: the stage's base SGD step, as the stage's own IPO rule does (toy_lm.config.LMConfig.lr); every other loss is a
#: function of beta times log-ratios and gets base / beta^2 (the same step in units of beta h).
FLAT_LR = ("ipo", "cpo_ipo", "sppo_hard", "sft")

#: A loss whose LM run diverges at its step (non-finite log-probabilities, or some seed's training objective ends
#: above where it started) is rerun with the LM and tabular steps both halved, at most this many times; the
#: halvings are recorded in the row. Added after the first full runs: sppo_hard diverged at step 7 with lr 3e-3, and
#: at lr 1.5e-3 its objective went from 0.08 to 313 in one step and ended at 79 (its absolute quadratic terms pull
#: every pair's log pi(y_w) up and log pi(y_l) down at once, with curvature 2 in each log-ratio, 8x DPO's beta^2/4
#: at DPO's step). The rule reads the objective only, never a fraction in U.
MAX_LR_HALVINGS = 6


def _diverged(records) -> bool:
    return any(not np.isfinite(r.objective).all() or r.objective[-1] > r.objective[0] for r in records)


#: TRL's default f_alpha_divergence_coef (DPOConfig), for the "<loss>@alpha_divergence" settings.
F_ALPHA_DIVERGENCE_COEF = 0.5


def per_pair_losses(f_divergences: bool = False) -> tuple[str, ...]:
    """Every loss of :data:`SPECS` a per-pair analysis applies to (kind not "batch-coupled"), in SPECS order; with
    ``f_divergences`` also "<loss>@<f_divergence_type>" for each loss TRL accepts it with (other than reverse_kl,
    the plain name)."""
    names = [name for name, spec in SPECS.items() if spec.kind != "batch-coupled"]
    if f_divergences:
        names += [f"{name}@{fd}" for name in names if SPECS[name].f_divergence for fd in F_DIVERGENCES[1:]]
    return tuple(names)


def trained_label(name: str) -> str:
    """The method label the LM and tabular runs of ``name`` carry: the paper's CPO names are also the LM stage's own
    methods (toy_lm.config.METHODS, whose formulas live in toy_lm.train), so the atlas's cells, which train the
    library's functions through :func:`pair_loss`, are labelled apart ("cpo_easy[losses.py]")."""
    return f"{name}[losses.py]" if name in PAPER_CPO else name


def base_loss(name: str) -> str:
    """The SPECS name of a loss setting ("sigmoid@js_divergence" -> "sigmoid")."""
    return name.split("@", 1)[0]


def loss_params(name: str) -> dict:
    """The parameters of a loss setting in its LM cell: :data:`LM_PARAMS` of its base loss, plus f_divergence_type
    (and TRL's default f_alpha_divergence_coef for alpha_divergence) for a "<loss>@<f_divergence_type>" setting."""
    params = dict(LM_PARAMS.get(base_loss(name), {}))
    if "@" in name:
        fd = name.split("@", 1)[1]
        params["f_divergence_type"] = fd
        if fd == "alpha_divergence":
            params["f_alpha_divergence_coef"] = F_ALPHA_DIVERGENCE_COEF
    return params


def lm_lr(name: str, cfg: LMConfig, beta: float) -> float:
    """The LM's SGD step for loss ``name``: ``cfg.sgd_lr`` for :data:`FLAT_LR`, else ``cfg.sgd_lr / beta**2``."""
    return cfg.sgd_lr if base_loss(name) in FLAT_LR else cfg.sgd_lr / beta**2


def tabular_lr(name: str, cfg: LMConfig, beta: float) -> float:
    """The tabular prediction's SGD step for loss ``name`` (the rule of :func:`lm_lr` on ``cfg.tabular_sgd_lr``)."""
    return cfg.tabular_sgd_lr if base_loss(name) in FLAT_LR else cfg.tabular_sgd_lr / beta**2


def pair_loss(name: str, beta: float, params: dict, pc, pr, rc, rr, n_w, n_l):
    """(objective per pair, ordered-pair loss per pair) of the pref_losses loss ``name`` (a SPECS name; an
    f-divergence comes in ``params``); with ordered labels the two are the same tensor.

    pc, pr, rc, rr: (B,) SUMMED log-probabilities of y_w, y_l under the policy and the reference. n_w, n_l: (B,)
    token counts of y_w and y_l. DPOTrainer losses read sums (and the counts where ``SPECS[name].lengths`` names
    them); CPOTrainer losses read the policy's sums or per-token means (``SPECS[name].logps``), no reference.
    The loss function is looked up at each call, so the LM and the prediction always call the same one.
    """
    if name in MIXES:  # TRL's weighted list: sigmoid + sft_weight * sft, each through this adapter
        main, extra = MIXES[name]
        a, _ = pair_loss(main, beta, {}, pc, pr, rc, rr, n_w, n_l)
        b, _ = pair_loss(extra, beta, {}, pc, pr, rc, rr, n_w, n_l)
        out = a + params["sft_weight"] * b
        return out, out
    if name in PAPER_CPO:  # dpo_rlhf_checks.losses: cpo_easy reads per-token means of all four, as the code does
        fn = get_loss(name)
        if name == "cpo_easy":
            nw, nl = n_w.to(pc.dtype), n_l.to(pr.dtype)
            pc, pr, rc, rr = pc / nw, pr / nl, rc / nw, rr / nl
        out = fn(pc, pr, rc, rr, beta=beta, **params)
        return out.losses, out.losses
    spec = SPECS[name]
    if spec.trainer == "CPOTrainer":
        if spec.logps == "means":
            pc, pr = pc / n_w.to(pc.dtype), pr / n_l.to(pr.dtype)
        out = spec.loss(pc, pr, beta=beta, **params)
    else:
        lengths = {"chosen_lengths": n_w, "rejected_lengths": n_l}
        out = spec.loss(pc, pr, rc, rr, beta=beta, **params, **{k: lengths[k] for k in spec.lengths})
    return out.losses, out.losses


def make_pair_loss(name: str, beta: float, params: dict, n_w: torch.Tensor, n_l: torch.Tensor):
    """:func:`pair_loss` with its loss, beta, parameters and token counts bound: a callable (pc, pr, rc, rr)."""
    return lambda pc, pr, rc, rr: pair_loss(name, beta, params, pc, pr, rc, rr, n_w.to(pc.device), n_l.to(pc.device))


def _check_names(loss_names) -> list[str]:
    if isinstance(loss_names, str):
        loss_names = [loss_names]
    names = list(loss_names)
    allowed = (*per_pair_losses(f_divergences=True), *PAPER_CPO, *MIXES)
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        coupled = [n for n in bad if n in SPECS]
        why = f" ({', '.join(coupled)}: batch-coupled, no per-pair cell)" if coupled else ""
        raise ValueError(f"LM atlas losses must be per-pair losses from {', '.join(per_pair_losses())}, the paper's "
                         f"CPO losses {', '.join(PAPER_CPO)}, or <loss>@<f_divergence_type> where TRL takes one; got "
                         f"{bad or names}{why}")
    if len(set(names)) != len(names):
        raise ValueError(f"LM atlas losses must be distinct, got {names}")
    return names


def _lengths(run: SeedRun) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,) token counts of y_w and y_l of a seed's train pairs (response tokens and EOS: what the log-probs sum)."""
    tr = run.task.split("train")
    mask = run.task.response_mask[tr]
    return mask[:, W].sum(dim=-1), mask[:, L].sum(dim=-1)


def run_atlas_lm(loss_names, *, seed: int = 0, progress: bool = True, cfg: LMConfig | None = None,
                 device: str = "cpu", design: LMDesign = DESIGN) -> dict[str, dict]:
    """The LM column of the U-atlas for ``loss_names`` (per-pair losses of :data:`SPECS`), one row per loss.

    seed: offset added to the config's seeds (as the stage's --seed). cfg: the LM config (default preset).
    Returns {name: row}; a row holds predicted_frac_in_U, observed_frac_in_U (means over the seeds that gave a
    value), interval ([lo, hi] of the mean of observed - predicted), n_seeds, decided (True / False / None),
    margin, cell (beta, optimizer, steps, lr, tabular_lr, labels), params, per-seed values, final_loss (mean LM
    training objective at the end), agreement (per-pair U membership), compared / reason_not_compared (toy_lm.predict
    .compare_cell's description), seconds (this loss's training and prediction) and seconds_reference (the shared
    SFT, all seeds).
    """
    names = _check_names(loss_names)
    cfg = cfg if cfg is not None else LMConfig()
    beta = design.slow_beta
    dev = resolve_device(device)
    planned = planned_seeds(cfg, seed)
    sizes = config_looks(cfg)  # the config's look schedule (before: always "double", whatever the config said)
    k_looks = len(sizes)
    level = 1.0 - design.alpha / k_looks
    tol = design.atlas_tol_frac_in_U

    runs: dict[int, SeedRun] = {}
    records: dict[str, dict] = {n: {} for n in names}
    comps: dict[str, dict] = {n: {} for n in names}
    halvings = {n: 0 for n in names}
    seed_lr: dict[str, dict] = {n: {} for n in names}
    seconds = {n: 0.0 for n in names}
    cpu_seconds = {n: 0.0 for n in names}
    ref_seconds = [0.0, 0.0]
    stream = sys.stderr
    bar = tqdm(total=sizes[0] * (1 + len(names)), desc="[atlas lm]", unit="run",
               file=stream, disable=not progress, dynamic_ncols=True,
               mininterval=0.5 if getattr(stream, "isatty", lambda: False)() else 10.0)

    def ensure_references(seeds):
        new = [s for s in seeds if s not in runs]
        for i in range(0, len(new), cfg.batch_replicas):
            chunk = new[i:i + cfg.batch_replicas]
            t0, c0 = time.perf_counter(), time.process_time()
            bar.set_postfix_str(f"seeds {chunk} reference SFT")
            tasks = [make_task(cfg, s) for s in chunk]
            refs = train_reference_batched(tasks, cfg, chunk, dev)
            for s, task, ref in zip(chunk, tasks, refs):
                runs[s] = SeedRun(seed=s, task=task, ref_logps=all_logps(ref, task, dev), reference=ref)
            ref_seconds[0] += time.perf_counter() - t0
            ref_seconds[1] += time.process_time() - c0
            bar.update(len(chunk))

    def train_and_predict(name, seeds):
        """Train and predict ``name`` on every seed of ``seeds`` at one step: a halving met on a later chunk or look
        retrains the seeds trained before it at the larger step, so a cell never mixes steps."""
        while True:
            train_chunks(name, [runs[s] for s in seeds if s not in records[name]])
            now = lm_lr(name, cfg, beta) * 0.5 ** halvings[name]
            stale = [s for s in seeds if seed_lr[name][s] != now]
            if not stale:
                return
            for s in stale:
                del records[name][s], comps[name][s], seed_lr[name][s]

    def train_chunks(name, todo):
        params, base = loss_params(name), base_loss(name)
        for i in range(0, len(todo), cfg.batch_replicas):
            chunk = todo[i:i + cfg.batch_replicas]
            t0, c0 = time.perf_counter(), time.process_time()
            bar.set_postfix_str(f"seeds {[r.seed for r in chunk]} {name}")
            lens = [_lengths(r) for r in chunk]
            n_w, n_l = torch.cat([a for a, _ in lens]), torch.cat([b for _, b in lens])
            while True:
                factor = 0.5 ** halvings[name]
                try:
                    recs = train_preference_batched(trained_label(name), [r.task for r in chunk], [r.reference for r in chunk],
                                                    [r.ref_logps for r in chunk], cfg, [r.seed for r in chunk], dev,
                                                    beta=beta, optimizer=OPTIMIZER,
                                                    pair_loss=make_pair_loss(base, beta, params, n_w, n_l),
                                                    lr=lm_lr(name, cfg, beta) * factor)
                    if not _diverged(recs):
                        break
                    if halvings[name] == MAX_LR_HALVINGS:
                        raise FloatingPointError(f"{name}: the LM objective still rises after {MAX_LR_HALVINGS} "
                                                 "halvings of the step")
                except FloatingPointError:
                    if halvings[name] == MAX_LR_HALVINGS:
                        raise
                halvings[name] += 1
            preds = predict_cell(trained_label(name), beta, OPTIMIZER, [(rec, r.ref_logps, r.task) for rec, r in zip(recs, chunk)],
                                 cfg, pair_loss=make_pair_loss(base, beta, params, n_w, n_l),
                                 tabular_lr=tabular_lr(name, cfg, beta) * factor)
            for r, rec, c in zip(chunk, recs, preds):
                records[name][r.seed], comps[name][r.seed] = rec, c
                seed_lr[name][r.seed] = lm_lr(name, cfg, beta) * factor
            seconds[name] += time.perf_counter() - t0
            cpu_seconds[name] += time.process_time() - c0
            bar.update(len(chunk))

    out: dict[str, dict] = {}
    pending = list(names)
    with _Threads(lm_threads(), dev):
        try:
            for look, n in enumerate(sizes, 1):
                seeds = planned[:n]
                if look > 1:
                    bar.total += (n - sizes[look - 2]) * (1 + len(pending))
                ensure_references(seeds)
                for name in pending:
                    train_and_predict(name, seeds)
                still = []
                for name in pending:
                    row = _row(name, seeds, look, level, tol, cfg, beta, records[name], comps[name], halvings[name])
                    if row["decided"] is not None or look == len(sizes):
                        out[name] = row
                    else:
                        still.append(name)
                pending = still
                if not pending:
                    break
        finally:
            bar.close()
    for name in names:
        out[name].update(seconds=round(seconds[name], 2), cpu_seconds=round(cpu_seconds[name], 2),
                         seconds_reference=round(ref_seconds[0], 2), cpu_seconds_reference=round(ref_seconds[1], 2))
    return {name: out[name] for name in names}


def _row(name, seeds, look, level, tol, cfg, beta, records, comps, halvings) -> dict:
    cs = [comps[s] for s in seeds]
    kept = [c for c in cs if not c.clock_saturated]
    values = [c.observed_frac_in_U - c.predicted_frac_in_U for c in kept]
    resolution = 1.0 / cfg.n_train_prompts
    if values:
        iv = seed_interval(values, level, resolution)
    else:
        iv = {"mean": None, "lo": -math.inf, "hi": math.inf, "method": "no seed gave a value"}
    decided = decide_bound("within", tol, iv["lo"], iv["hi"]) if len(values) >= 2 else None
    desc = compare_cell(cs, tol)
    mean = (lambda xs: float(np.mean(xs)) if xs else None)
    return {
        "loss": name,
        "trainer": ("paper CPO (dpo_rlhf_checks.losses)" if name in PAPER_CPO else
                    "DPOTrainer (loss_type list)" if name in MIXES else SPECS[base_loss(name)].trainer),
        "kind": "target-form" if name in PAPER_CPO else "mix" if name in MIXES else SPECS[base_loss(name)].kind,
        "params": loss_params(name),
        "predicted_frac_in_U": mean([c.predicted_frac_in_U for c in kept]),
        "observed_frac_in_U": mean([c.observed_frac_in_U for c in kept]),
        "obs_minus_pred": iv["mean"], "interval": [iv["lo"], iv["hi"]], "level": level,
        "interval_method": iv["method"], "n_seeds": len(values), "seeds": list(seeds),
        "excluded_seeds": [s for s, c in zip(seeds, cs) if c.clock_saturated], "look": look,
        "decided": decided, "test": "within", "margin": tol,
        # per seed; a saturated seed's "predicted" is the tabular state at its horizon (not compared)
        "values": {"observed": [c.observed_frac_in_U for c in cs], "predicted": [c.predicted_frac_in_U for c in cs]},
        "cell": {"beta": beta, "optimizer": OPTIMIZER, "labels": "ordered", "steps": cfg.steps,
                 "lr": lm_lr(name, cfg, beta) * 0.5**halvings, "tabular_lr": tabular_lr(name, cfg, beta) * 0.5**halvings,
                 "lr_rule": ("base (beta-free curvature)" if base_loss(name) in FLAT_LR else "base / beta^2")
                 + (f", halved {halvings}x after divergence" if halvings else ""),
                 "lr_halvings": halvings},
        "final_loss": mean([float(records[s].objective[-1]) for s in seeds]),
        "frac_misranked": mean([float(c.violated.mean()) for c in cs]),
        "agreement": desc["agreement"], "compared": desc["compared"],
        "reason_not_compared": desc["reason_not_compared"],
        "pred_in_U_max": mean([c.pred_in_U_max for c in cs]), "obs_in_U_max": mean([c.obs_in_U_max for c in cs]),
        # every seed, saturated or not: what the LM did where no prediction could be matched to it (not a comparison)
        "observed_frac_in_U_all_seeds": mean([c.observed_frac_in_U for c in cs]),
        "lm_final_objective": mean([c.lm_final_objective for c in cs]),
        "tabular_final_objective": mean([c.tab_final_objective for c in cs]),
    }
