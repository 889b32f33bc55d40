"""Methods of the LM-stage claims ``lm-dpo-failure`` and ``lm-cpo-fix`` (docs/theory.md §12, §14).

Every method decides pre-registered comparisons (toy_lm/design.py: cells fixed by beta, optimizer and labels;
bounds and margins fixed before any run; seeds as the replication unit; a t-interval across seeds that must
clear the bound; more seeds, up to a budget, while it does not; toy_lm/decide.py). A method's ``literal`` and
``amended`` are the three-valued AND of its comparisons; it is ``inconclusive`` when what it must decide is
still undecided after the last look (the literal; and the amended statement where the literal fails). The
amended statements are the registry's text (``Claim.amendment``), written before the run; nothing here composes
a statement from the results.

lm-dpo-failure
  training:             the slow cells' failure, from the LM's own records (fail);
  training-comparison:  fail and the amount against the tabular prediction (amount_ordered, amount_bt);
  simulation:           the tabular prediction alone (predicted_*); it reads the LM's training objective for the
                        loss-matched clock, so it depends on the LM's loss too (declared).
lm-cpo-fix
  training:    the carriers' shortfall, against 1 (literal) and against the ceiling (amendment, BT labels);
  simulation:  the same on the tabular prediction, its ceiling from the tabular loss's own derivative.

The time-in-U law and the per-cell regimes are descriptive evidence: they decide nothing.
"""

from __future__ import annotations

from pathlib import Path

from dpo_rlhf_checks.deferred import defer
from dpo_rlhf_checks.result import CheckContext, MethodResult
from toy_lm.decide import evaluate, line
from toy_lm.design import DESIGN, PILOT, and3, config_looks, cpo_fix_specs, dpo_failure_specs, family_power, rule_budget
from toy_lm.stage import LMStage, get_stage, reference_summary, save_records

BASELINES = ("dpo", "ipo", "dpop")
CPO_ORDERED = ("cpo_eq17", "cpo_clip", "cpo_smooth", "cpo_easy")

# What each method takes as given from the toolkit, as measured (dpo_rlhf_checks.tracing.measure_calls, each method
# first in a fresh process; tests/toy_lm/test_lm_depends.py). Every LM method reads the one stage, whose first
# look trains every method of every cell and predicts each (it runs inside whichever method comes first), and
# the tabular prediction reads the LM's training objective for its clock: so every method depends on all of
# it. Input validation (losses._check_*, _validate_params, _is_real) is not listed.
_DEPS_STAGE = (
    # the toolkit's losses the runs train with
    "dpo_rlhf_checks.losses.dpo_loss", "dpo_rlhf_checks.losses.dpo_bt_loss", "dpo_rlhf_checks.losses.ipo_loss",
    "dpo_rlhf_checks.losses.dpop_loss", "dpo_rlhf_checks.losses.get_loss", "dpo_rlhf_checks.losses.implicit_target",
    "dpo_rlhf_checks.losses.alignment_certificate", "dpo_rlhf_checks.losses.certificate_tolerance",
    "dpo_rlhf_checks.losses.critical_loss",
    "dpo_rlhf_checks.losses._make_target_loss.<locals>.loss", "dpo_rlhf_checks.losses._target_loss",
    "dpo_rlhf_checks.losses._dpo_target", "dpo_rlhf_checks.losses._clip_target", "dpo_rlhf_checks.losses._smooth_target",
    "dpo_rlhf_checks.losses._eq17_target", "dpo_rlhf_checks.losses._easy_target", "dpo_rlhf_checks.losses._softplus",
    "dpo_rlhf_checks.losses._rewards",
    # the model, the task, the training
    "toy_lm.model.sequence_logps", "toy_lm.model.response_logp_sum", "toy_lm.model.TinyGPT.__init__",
    "toy_lm.model.TinyGPT.forward",
    "toy_lm.model.TinyGPT._init_weights", "toy_lm.model.TinyGPT.n_params", "toy_lm.model.Block.__init__",
    "toy_lm.model.Block.forward", "toy_lm.model.resolve_device",
    "toy_lm.task.make_task", "toy_lm.task._draw_pool", "toy_lm.task._draw_prompts", "toy_lm.task.Task.split",
    "toy_lm.task.Task.n_prompts",
    "toy_lm.train.train_reference", "toy_lm.train.train_preference", "toy_lm.train.train_reference_batched",
    "toy_lm.train.train_preference_batched", "toy_lm.train.train_preference_batched.<locals>.pairs",
    "toy_lm.train._stacked", "toy_lm.train._stacked_logps", "toy_lm.train.pair_losses", "toy_lm.train.all_logps",
    "toy_lm.train.build_model", "toy_lm.train.make_optimizer", "toy_lm.train.method_target",
    "toy_lm.train.seed_everything", "toy_lm.train.uses_mean", "toy_lm.train.RunRecord.heldout_ranking_accuracy",
    # the tabular prediction and its comparison
    "toy_lm.tabular.tabular_pair_losses", "toy_lm.tabular._ordered_loss", "toy_lm.tabular._sp",
    "toy_lm.tabular.initial_logits", "toy_lm.tabular.run_tabular", "toy_lm.predict.predict_cell",
    "toy_lm.predict._first_crossing", "toy_lm.predict.compare_cell", "toy_lm.predict.own_delta",
    "toy_lm.predict.Comparison.violated", "toy_lm.predict.Comparison.pred_in_U", "toy_lm.predict.Comparison.obs_in_U",
    "toy_lm.predict.Comparison.predicted_frac_in_U", "toy_lm.predict.Comparison.observed_frac_in_U",
    "toy_lm.predict.Comparison.agreement", "toy_lm.predict.Comparison.sign_agreement",
)
_DEPS_CEILING = ("toy_lm.ceiling.minimiser_reaches", "toy_lm.ceiling.ceiling_fraction", "toy_lm.ceiling.target",
                 "toy_lm.ceiling._log_sigmoid")
_DEPS_TAB_CEILING = ("toy_lm.tabular.tabular_minimiser_reaches",)


def _amendment(claim_id: str) -> str:
    from dpo_rlhf_checks.registry import get_claim

    return get_claim(claim_id).amendment


def _law(stage: LMStage) -> dict:
    return {opt: {k: v for k, v in law.items() if k != "points"} for opt, law in stage.time_in_U_law.items()}


def _evidence_common(stage: LMStage) -> dict:
    cfg = stage.cfg
    import torch

    return {
        "config": cfg.to_dict(),
        "design": DESIGN.to_dict(),
        "looks": {"seeds_per_look": config_looks(cfg),
                  "planned_seeds": stage.planned_seeds, "extensions": stage.looks},
        "seed_budget_rule": {"rule": "smallest look size at which a comparison half its family's margin from its bound "
                                     "is decided with probability >= 0.9 (pilot's pooled seed-level sd), capped by the "
                                     "stage's time limit (toy_lm/design.py)",
                             "pilot_sd": {f: v[0] for f, v in PILOT.items()},
                             "power_at_half_margin_at_budget": family_power(cfg.max_seeds, len(cfg.seeds)),
                             **{k: v for k, v in rule_budget(len(cfg.seeds)).items() if k != "power"}},
        "device": stage.device,
        "torch_threads": stage.threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "stage_seconds": round(stage.seconds, 2),
        "stage_seconds_training": round(stage.seconds_training, 2),
        "stage_seconds_prediction": round(stage.seconds_prediction, 2),
        "reference": [reference_summary(run, cfg) for run in stage.runs],
        "per_pair_per_step_records": "lm_records.npz in the output folder (keys seed{s}/b{beta}/{optimizer}/{method}/{field})",
        "time_scale": "LM step t <-> first tabular step whose mean training objective <= the LM's running-min "
                      "objective at t, per seed (one aggregate number per step; nothing per pair is fitted)",
        "regimes": stage.regimes,
        "time_in_U_law": _law(stage),
        "time_in_U_law_role": "descriptive: decides no verdict",
    }


_FIGURES: dict[tuple, list[str]] = {}


def _shared_figures(stage: LMStage, ctx: CheckContext) -> list[str]:
    """The stage's figures (with the per-pair records beside them): their paths now; drawn once per claim, by the
    runner after the claim's last method (dpo_rlhf_checks.deferred), from the stage as that method left it. Each
    method used to redraw them after its own look (five times a run, a quarter of the LM claims' time)."""
    from figures.lm import lm_figure_paths, lm_figures

    key = (id(stage), str(ctx.fig_dir))
    paths = lm_figure_paths(ctx.fig_dir)
    fig_dir, records = ctx.fig_dir, Path(ctx.out_dir) / "lm_records.npz"

    def write() -> None:
        drawn = lm_figures(stage, fig_dir)
        if drawn != paths:
            raise RuntimeError(f"the LM figures drawn {drawn} are not the ones promised {paths}")
        save_records(stage, records)

    defer(("lm-figures",) + key, write)
    _FIGURES[key] = paths
    return paths


def _decide(stage: LMStage, parts: dict, literal_parts: list[str], amended_parts: list[str]) -> dict:
    """Evaluate the parts' comparisons; the three-valued literal and amended; what is undecided and what failed."""
    outs = {p: evaluate(stage, parts[p]) for p in dict.fromkeys(literal_parts + amended_parts)}
    literal = and3(o["decided"] for p in literal_parts for o in outs[p].values())
    amended = and3(o["decided"] for p in amended_parts for o in outs[p].values())
    needed = literal_parts if literal is None else amended_parts  # literal decided False: only the amendment matters
    undecided = [o for p in needed for o in outs[p].values() if o["decided"] is None]
    reason = None
    if literal is None or (literal is False and amended is None):
        n_max = stage.cfg.max_seeds
        reason = (f"{len(undecided)} comparison(s) still undecided after the seed budget ({n_max} seeds): "
                  + "; ".join(line(o) for o in undecided))
    failed = [line(o) for p in literal_parts for o in outs[p].values() if o["decided"] is False]
    return {"outs": outs, "literal": literal, "amended": amended, "inconclusive": reason, "failed": failed}


def _result(stage: LMStage, ctx: CheckContext, claim_id: str, d: dict, summary_parts: list[str], deps: tuple,
            extra: dict | None = None) -> MethodResult:
    ev = _evidence_common(stage)
    ev["comparisons"] = {p: list(o.values()) for p, o in d["outs"].items()}
    ev.update(extra or {})
    decided = [o for outs in d["outs"].values() for o in outs.values()]
    n_seeds = max((o["n_seeds"] for o in decided), default=0)
    summary = (f"{sum(o['decided'] is not None for o in decided)}/{len(decided)} pre-registered comparisons decided "
               f"(t-interval over seeds, up to {n_seeds} seeds): "
               + "; ".join(line(o) for p in summary_parts for o in d["outs"][p].values()))
    counterexample = None
    if d["literal"] is False:
        counterexample = {"comparisons_that_fail": d["failed"], "seeds": stage.planned_seeds[:n_seeds]}
    amended_statement = _amendment(claim_id) if d["literal"] is False and d["amended"] else None
    return MethodResult(literal=d["literal"], amended=d["amended"], summary=summary, evidence=ev, depends_on=deps,
                        counterexample=counterexample, amended_statement=amended_statement,
                        figures=_shared_figures(stage, ctx), inconclusive=d["inconclusive"])


# ----------------------------------------------------------------------------------------------
# lm-dpo-failure


def lm_dpo_failure_training(ctx: CheckContext) -> MethodResult:
    """Training: in the slow cells (beta = DESIGN.slow_beta, each optimizer) ordered-pair DPO ends with a mean
    fraction of train pairs in U >= min_fail_frac at a mean final loss <= low_loss (the LM's own records only).
    Literal = amended (the amendment keeps this part as stated)."""
    stage = get_stage(ctx)
    parts = dpo_failure_specs(stage.cfg)
    d = _decide(stage, parts, ["fail"], ["fail"])
    return _result(stage, ctx, "lm-dpo-failure", d, ["fail"], _DEPS_STAGE)


def lm_dpo_failure_comparison(ctx: CheckContext) -> MethodResult:
    """Comparison: the slow cells' failure (as the training method) and the amount against the tabular prediction.

    Literal: fail, and in every DPO cell (ordered and BT labels, every beta and optimizer) the mean over seeds of
    observed - predicted fraction in U lies within +- tol_frac_in_U. Amended (registry text): fail, and so in every
    BT-label cell.
    """
    stage = get_stage(ctx)
    parts = dpo_failure_specs(stage.cfg)
    d = _decide(stage, parts, ["fail", "amount_ordered", "amount_bt"], ["fail", "amount_bt"])
    return _result(stage, ctx, "lm-dpo-failure", d, ["amount_ordered", "amount_bt"], _DEPS_STAGE)


def lm_dpo_failure_tabular(ctx: CheckContext) -> MethodResult:
    """Simulation: what the tabular theory (the run's optimizer, loss-matched time) predicts for DPO.

    Literal (the claim read as unconditional): every DPO cell is predicted to end with a mean fraction in U >=
    min_fail_frac. Amended (registry text, where docs/theory.md §14 places the failure): the slow ordered cells and
    every BT-label cell are.
    """
    stage = get_stage(ctx)
    parts = dpo_failure_specs(stage.cfg)
    d = _decide(stage, parts, ["predicted_slow_ordered", "predicted_fast_ordered", "predicted_bt"],
                ["predicted_slow_ordered", "predicted_bt"])
    return _result(stage, ctx, "lm-dpo-failure", d,
                   ["predicted_slow_ordered", "predicted_fast_ordered", "predicted_bt"], _DEPS_STAGE)


# ----------------------------------------------------------------------------------------------
# lm-cpo-fix


def _heldout(stage: LMStage) -> dict:
    names = [m for m in CPO_ORDERED + DESIGN.carriers_bt + BASELINES + ("dpo_bt",) if m in stage.cfg.methods]
    return {f"beta {b:g} {o}": {m: stage.regime(b, o, m)["heldout_ranking_accuracy"] for m in names}
            for b in stage.cfg.betas for o in stage.cfg.optimizers}


def lm_cpo_fix_training(ctx: CheckContext) -> MethodResult:
    """Training: the carriers (DESIGN.carriers, DESIGN.carriers_bt) in the judged cells (ordered labels at slow_beta,
    BT labels everywhere), from the LM's records.

    Literal: each carrier's mean shortfall 1 - (fraction of train pairs with delta >= m) is <= fix_margin.
    Amended (registry text): so with ordered labels; with BT labels the shortfall against the ceiling (the
    fraction whose exact population minimiser on the seed's sampled labels has delta >= m, toy_lm/ceiling.py) is.
    Held-out ranking accuracy beside DPO, IPO and DPO-Positive is reported, not decided on.
    """
    stage = get_stage(ctx)
    parts = cpo_fix_specs(stage.cfg)
    d = _decide(stage, parts, ["ordered", "bt_vs_one"], ["ordered", "bt_vs_ceiling"])
    return _result(stage, ctx, "lm-cpo-fix", d, ["ordered", "bt_vs_one", "bt_vs_ceiling"],
                   _DEPS_STAGE + _DEPS_CEILING, {"heldout_ranking_accuracy": _heldout(stage)})


def lm_cpo_fix_tabular(ctx: CheckContext) -> MethodResult:
    """Simulation: the same comparisons on the tabular prediction (its ceiling from the tabular loss's own
    derivative at delta = m, toy_lm.tabular.tabular_minimiser_reaches)."""
    stage = get_stage(ctx)
    parts = cpo_fix_specs(stage.cfg)
    d = _decide(stage, parts, ["pred_ordered", "pred_bt_vs_one"], ["pred_ordered", "pred_bt_vs_ceiling"])
    return _result(stage, ctx, "lm-cpo-fix", d, ["pred_ordered", "pred_bt_vs_one", "pred_bt_vs_ceiling"],
                   _DEPS_STAGE + _DEPS_TAB_CEILING)
