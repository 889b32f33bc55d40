"""lm-kernel-prediction: the design's numbers are the registry's text, the numeric method decides from the dynamics
(and fails on a planted error), and the decision rules of the training method."""

import numpy as np
import pytest

from dpo_rlhf_checks.registry import get_claim
from dpo_rlhf_checks.result import CheckContext
from toy_lm import kernel_claim
from toy_lm.kernel_claim import KERNEL, lm_kernel_numeric


def test_design_numbers_are_the_registry_text():
    claim = get_claim("lm-kernel-prediction")
    assert f"+-{KERNEL.margin:g}" in claim.statement and f"+-{KERNEL.margin:g}" in claim.amendment
    assert "two standard errors" in claim.statement and KERNEL.slope_se == 2.0
    assert f"every {KERNEL.relinearise_every} steps" in claim.amendment
    assert KERNEL.methods == ("dpo", "dpo_bt") and "ordered and Bradley-Terry labels" in claim.statement
    assert "1 - 0.05/K" in claim.statement
    from toy_lm.design import DESIGN

    assert DESIGN.alpha == 0.05


def test_looks_are_lm_dpo_failures_under_either_schedule():
    """The claim's looks follow the config's look schedule, as lm-dpo-failure's do (toy_lm/decide.py); after the merge
    of the budget-12 design the claim had read the default "double" schedule whatever the config said."""
    from toy_lm.config import LMConfig
    from toy_lm.design import look_sizes

    for schedule, expected in (("double", [3, 6, 12]), ("step", [3, 6, 9, 12])):
        cfg = LMConfig(look_schedule=schedule, seed_step=3, max_seeds=12)
        sizes, k = kernel_claim.kernel_looks(cfg)
        assert sizes == expected == look_sizes(3, 3, 12, schedule) and k == len(expected)


def test_numeric_method_holds_on_the_dynamics(tmp_path):
    r = lm_kernel_numeric(CheckContext(out_dir=tmp_path))
    assert r.literal is True and r.amended is True
    red = r.evidence["reductions"]
    assert len(red) == 10 and all(v["max_abs_diff"] <= v["tol"] for v in red.values())


@pytest.mark.parametrize("plant", ["double_lr", "diagonal_kernel"])
def test_numeric_method_fails_on_a_planted_error(tmp_path, monkeypatch, plant):
    real = kernel_claim.run_linearised

    def planted(method, **kw):
        if plant == "double_lr":
            kw["lr"] = 2 * kw["lr"]
        elif kw.get("kernel") is not None:
            kw["kernel"] = np.diag(np.diag(np.asarray(kw["kernel"])))
        return real(method, **kw)

    monkeypatch.setattr(kernel_claim, "run_linearised", planted)
    r = lm_kernel_numeric(CheckContext(out_dir=tmp_path))
    assert r.literal is False and r.counterexample["reductions_that_fail"]


# ----------------------------------------------------------------------------------------------
# The slow claim's routes: --only computes its verdict (a tiny config here, not the 30-minute default), --all at the
# default config lists it as not-checked (tests/dpo_rlhf_checks/test_runner_cli.py), lm-map computes it on its stage

TINY = {"n_train_prompts": 6, "n_heldout_prompts": 2, "n_embd": 16, "sft_steps": 20, "steps": 12,
        "seeds": [0, 1, 2], "max_seeds": 3, "methods": ["dpo", "dpo_bt", "cpo_clip", "cpo_clip_bt"],
        "betas": [0.5, 2.5],
        "tabular_max_steps": 200}


def test_only_computes_the_slow_claims_verdict_on_a_tiny_config(tmp_path, monkeypatch):
    import json

    from dpo_rlhf_checks.cli import main

    monkeypatch.setenv("TOY_LM_THREADS", "1")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    assert main(["--only", "lm-kernel-prediction", "--lm-config", str(cfg), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    (c,) = json.loads((tmp_path / "out" / "report.json").read_text())["claims"]
    assert c["not_checked_reason"] is None and [m["name"] for m in c["methods"]] == ["numeric", "training"]
    assert all(m["error"] is None for m in c["methods"])
    assert c["verdict"] in ("holds", "holds-amended", "fails", "inconclusive")
    training = c["methods"][1]
    comps = training["evidence"]["fraction_comparisons"]["linear"]
    assert len(comps) == 8 and all(o["n_seeds"] == 3 for o in comps)  # 2 betas x 2 optimizers x 2 label kinds
    if any(o["decided"] is False for o in comps):  # one cell outside the margin: the literal fails
        assert training["literal"] is False and c["verdict"] in ("fails", "holds-amended")


def test_lm_map_computes_the_slow_claims_verdict_on_its_stage(tmp_path, monkeypatch):
    """... on its own stage: trained once. On d73abc3 the runner cleared the stage lm-map had put in the cache (it
    was not computed under the dependency profiler) and the claim trained a second, identical stage."""
    import json

    from dpo_rlhf_checks.cli import main
    from toy_lm import stage as stage_mod

    from dpo_rlhf_checks import report

    trained, entries = [], []
    real_run_stage, real_run_claim = stage_mod.run_stage, report.run_claim
    monkeypatch.setattr(stage_mod, "run_stage", lambda *a, **k: trained.append(1) or real_run_stage(*a, **k))
    monkeypatch.setattr(report, "run_claim", lambda *a, **k: entries.append(real_run_claim(*a, **k)) or entries[-1])
    monkeypatch.setenv("TOY_LM_THREADS", "1")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "map"
    assert main(["lm-map", "--lm-config", str(cfg), "--out", str(out), "--device", "cpu"]) == 0
    payload = json.loads((out / "lm_map.json").read_text())
    (c,) = payload["claims"]
    assert c["id"] == "lm-kernel-prediction" and c["verdict"] in ("holds", "holds-amended", "fails", "inconclusive")
    assert "seconds" not in c
    md = (out / "lm_map.md").read_text()
    assert "## Claims computed on the map's stage" in md and f"`lm-kernel-prediction`: **{c['verdict']}**" in md
    assert any("lm_kernel" in f for f in payload["figures"])
    assert len(trained) == 1
    assert "| linear | sgd |" in md and "Pre-training forecast" in md  # slopes and the forecast's AUC, under the verdict
    # what computing the map's stage entered counts for the claim (its measured closure), and is declared
    (entry,) = entries
    assert all(m["undeclared"] == [] for m in entry["methods"])
    assert "toy_lm.train.train_preference_batched" in entry["methods"][1]["depends_on"]


def test_kernel_work_runs_at_the_stages_threads(monkeypatch):
    """J and the predictions run at the stage's torch threads (TOY_LM_THREADS, default 1), as its training does, and
    the caller's setting is restored: at torch's default threads a lone LM run of the default cell took 2.8-9.9 CPU s
    on this loaded 2-core machine instead of 0.15 (docs/theory.md §17)."""
    from types import SimpleNamespace

    import torch

    seen = []
    key = (2.5, "adam", "dpo")
    run = SimpleNamespace(seed=0, records={key: None}, task=None, reference=None, ref_logps=None)
    stage = SimpleNamespace(runs=[run], cfg=SimpleNamespace(), device="cpu", threads=1)
    monkeypatch.setattr(kernel_claim, "linearise_seed",
                        lambda *a, **k: seen.append(("J", torch.get_num_threads())) or "lin")
    monkeypatch.setattr(kernel_claim, "predict_seed",
                        lambda *a, **k: seen.append(("predict", torch.get_num_threads())) or "pred")
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert kernel_claim.prediction(stage, key, 0, relin=False) == "pred"
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(old)
        kernel_claim._LIN.pop((id(stage), 0), None)
        kernel_claim._PRED.pop((id(stage), key, 0, False), None)
    assert seen == [("J", 1), ("predict", 1)]


# ----------------------------------------------------------------------------------------------
# The time-in-U slope comparison: a Tobit fit that does not converge decides nothing


def _slope_stage(monkeypatch, scale_pred=1.0, violated=True):
    """A stage of two beta levels x 8 seeds of ordered-DPO records whose LM times in U follow a planted law (slope 0.4
    in beta |delta_ref|, censored at steps + 1), the prediction's times the LM's scaled by ``scale_pred``."""
    from types import SimpleNamespace

    rng = np.random.default_rng(3)
    cfg = SimpleNamespace(steps=40, betas=[0.5, 2.5], optimizers=["sgd"])
    runs, cmps = {}, {}
    for beta in cfg.betas:
        key = (beta, "sgd", "dpo")
        runs[key] = []
        for seed in range(8):
            dref = -rng.uniform(0.5, 4.0, 20)
            t = np.exp(0.5 + 0.4 * beta * -dref + rng.normal(0, 0.5, 20))
            cmps[(key, seed)] = SimpleNamespace(
                violated=np.full(20, violated), delta_ref=dref, obs_cross=np.ceil(t).astype(int),
                pred_cross=np.ceil(t * np.exp(scale_pred * beta * -dref - beta * -dref)).astype(int))
            runs[key].append(SimpleNamespace(seed=seed))
    stage = SimpleNamespace(cfg=cfg, runs_with=lambda key: runs[key])
    monkeypatch.setattr(kernel_claim, "_cmp", lambda st, key, seed, variant: cmps[(key, seed)])
    return stage


def test_slope_comparison_decides_from_converged_fits_only(monkeypatch):
    same = kernel_claim.time_in_U_slopes(_slope_stage(monkeypatch), "sgd", "linear")
    assert same["fits"]["lm"]["converged"] and same["fits"]["pred"]["converged"]
    assert same["lm_slope"] == pytest.approx(0.4, abs=0.1) and same["decided"] is True
    steeper = kernel_claim.time_in_U_slopes(_slope_stage(monkeypatch, scale_pred=2.0), "sgd", "linear")
    assert steeper["pred_slope"] > steeper["lm_slope"] + 3 * steeper["lm_stderr"] and steeper["decided"] is False

    from toy_lm import stage as stage_mod

    real = stage_mod.censored_fit
    calls = []

    def planted(*a, **k):  # the predicted times' fit (the second call) does not converge
        calls.append(1)
        fit = real(*a, **k)
        return fit if len(calls) % 2 else {**fit, "converged": False, "reason": "planted"}

    monkeypatch.setattr(stage_mod, "censored_fit", planted)
    s = kernel_claim.time_in_U_slopes(_slope_stage(monkeypatch, scale_pred=2.0), "sgd", "linear")
    assert s["decided"] is None and s["pred_slope"] is None and s["lm_slope"] is not None
    assert "predicted times' fit did not converge (planted)" in kernel_claim._no_fit(s)


def test_slope_comparison_without_misranked_pairs_is_undecided_not_a_crash(monkeypatch):
    # d73abc3 returned no "decided" key here, and the training method's and3 over the slopes raised KeyError
    s = kernel_claim.time_in_U_slopes(_slope_stage(monkeypatch, violated=False), "sgd", "linear")
    assert s["decided"] is None and s["n_pairs"] == 0


def _tobit_by_hand(h, t, group, limit):
    """The time-in-U law's model fitted here, independently of toy_lm.stage.censored_fit: log t = a_group + slope h +
    N(0, s^2), the pairs with log t >= limit censored there, maximum likelihood by scipy (Nelder-Mead, then BFGS)."""
    from scipy.optimize import minimize
    from scipy.stats import norm

    y, cens = np.log(np.minimum(t, np.exp(limit))), t >= np.exp(limit)
    groups = np.unique(group)

    def nll(x):
        mu = x[np.searchsorted(groups, group)] + x[len(groups)] * h
        s = np.exp(x[-1])
        z = (y - mu) / s
        return -(np.sum(norm.logpdf(z[~cens]) - np.log(s)) + np.sum(norm.logsf(z[cens])))

    x0 = np.zeros(len(groups) + 2)
    res = minimize(nll, minimize(nll, x0, method="Nelder-Mead", options={"maxiter": 20000}).x, method="BFGS",
                   options={"gtol": 1e-10})
    return float(res.x[len(groups)])


def test_time_in_U_slopes_censor_at_steps_plus_one(monkeypatch):
    """time_in_U_slopes censors a pair's time at steps + 1, the value first_crossing gives a pair that never left U:
    a pair that crossed at the run's last step (steps) or the one before is an observed time, not a censored one.
    A 12-step stage, two beta levels x 6 seeds x 12 misranked pairs, crossing times drawn from a log-linear law and
    turned into delta records (-1 before the crossing, +1 from it on; none when it is after step 12), the crossings
    read back by toy_lm.kernel.first_crossing. Pinned: the censored counts are the pairs drawn beyond step 12 (by
    hand from the drawn times: 34 LM, 34 predicted), and the LM and predicted slopes are a Tobit fit done here with
    scipy (1e-4). Censoring at steps - 1 (cfg.steps + 1 -> cfg.steps - 1) counted 37 / 40 censored, moved the LM
    slope 0.4128 -> 0.4076 and turned this comparison's decision from False to True (a survivor of mutation)."""
    from types import SimpleNamespace

    from toy_lm.kernel import first_crossing

    steps = 12
    rng = np.random.default_rng(7)
    cfg = SimpleNamespace(steps=steps, betas=[0.5, 2.5], optimizers=["sgd"])
    runs, cmps, drawn = {}, {}, {"lm": [], "pred": [], "h": [], "g": []}

    def record(times):
        d = -np.ones((steps + 1, times.size))
        for j, x in enumerate(times):
            if x <= steps:
                d[x:, j] = 1.0
        return d

    for gi, beta in enumerate(cfg.betas):
        key = (beta, "sgd", "dpo")
        runs[key] = []
        for seed in range(6):
            dref = -rng.uniform(0.5, 3.0, 12)
            t_lm = np.ceil(np.exp(0.5 + 0.4 * beta * -dref + rng.normal(0, 0.4, 12))).astype(int)
            t_pred = np.ceil(np.exp(0.6 + 0.4 * beta * -dref + rng.normal(0, 0.4, 12))).astype(int)
            cmps[(key, seed)] = SimpleNamespace(violated=np.ones(12, bool), delta_ref=dref,
                                                obs_cross=first_crossing(record(t_lm), steps + 1),
                                                pred_cross=first_crossing(record(t_pred), steps + 1))
            runs[key].append(SimpleNamespace(seed=seed))
            drawn["lm"].append(t_lm), drawn["pred"].append(t_pred)
            drawn["h"].append(beta * -dref), drawn["g"].append(np.full(12, gi))
    stage = SimpleNamespace(cfg=cfg, runs_with=lambda key: runs[key])
    monkeypatch.setattr(kernel_claim, "_cmp", lambda st, key, seed, variant: cmps[(key, seed)])
    t_lm, t_pred, h, g = (np.concatenate(drawn[k]) for k in ("lm", "pred", "h", "g"))
    assert np.isin([steps - 1, steps], t_lm).all()  # pairs that crossed at the last two steps: the test can tell

    s = kernel_claim.time_in_U_slopes(stage, "sgd", "linear")
    assert s["n_pairs"] == 144
    assert s["n_lm_censored"] == int(np.sum(t_lm > steps)) == 34
    assert s["n_pred_censored"] == int(np.sum(t_pred > steps)) == 34
    assert s["fits"]["lm"]["converged"] and s["fits"]["pred"]["converged"]
    limit = np.log(steps + 1)
    assert s["lm_slope"] == pytest.approx(_tobit_by_hand(h, t_lm.astype(float), g, limit), abs=1e-4)
    assert s["pred_slope"] == pytest.approx(_tobit_by_hand(h, t_pred.astype(float), g, limit), abs=1e-4)


@pytest.mark.parametrize("slope_decided", [True, None])
def test_training_method_is_inconclusive_when_a_slope_fit_did_not_converge(tmp_path, monkeypatch, slope_decided):
    """Every fraction comparison holds; the slope comparison is True (the literal holds) or None because its fit did
    not converge: then the method must say inconclusive, naming the fit, and the merged verdict is inconclusive."""
    from types import SimpleNamespace

    import figures.kernel
    import toy_lm.claims
    import toy_lm.kernel_forecast
    import toy_lm.stage
    from dpo_rlhf_checks.result import merge_methods

    cfg = SimpleNamespace(optimizers=["sgd"], max_seeds=12)
    stage = SimpleNamespace(cfg=cfg)
    frac = {"beta 0.5 sgd dpo": {"name": "linear beta 0.5 sgd dpo", "decided": True, "mean": 0.0,
                                 "interval": [-0.01, 0.01], "n_seeds": 3, "test": "within", "bound": 0.05}}
    slope = {"lm_slope": 0.3, "lm_stderr": 0.03, "pred_slope": None if slope_decided is None else 0.31,
             "pred_stderr": None, "n_pairs": 50, "decided": slope_decided,
             "fits": {"lm": {"converged": True, "reason": None, "iterations": 6, "dropped": 0},
                      "pred": {"converged": slope_decided is not None,
                               "reason": None if slope_decided else "no maximum within 200 Newton steps",
                               "iterations": 200, "dropped": 0}}}
    monkeypatch.setattr(toy_lm.stage, "get_stage", lambda ctx: stage)
    monkeypatch.setattr(kernel_claim, "evaluate_fraction", lambda st, v: frac)
    monkeypatch.setattr(kernel_claim, "time_in_U_slopes", lambda st, o, v: slope)
    monkeypatch.setattr(toy_lm.kernel_forecast, "forecast", lambda st, jac: {})
    monkeypatch.setattr(figures.kernel, "kernel_figures", lambda *a, **k: [])
    monkeypatch.setattr(kernel_claim, "cell_table", lambda st, v: [])
    monkeypatch.setattr(kernel_claim, "describe", lambda st, v: {})
    monkeypatch.setattr(toy_lm.claims, "_evidence_common", lambda st: {})
    r = kernel_claim.lm_kernel_training(CheckContext(out_dir=tmp_path))
    if slope_decided:
        assert r.literal is True and r.inconclusive is None
        assert merge_methods({"training": r})["verdict"] == "holds"
    else:
        assert r.literal is None and "time-in-U slope sgd (linear): the predicted times' fit did not converge " \
            "(no maximum within 200 Newton steps)" in r.inconclusive
        assert merge_methods({"training": r})["verdict"] == "inconclusive"


def test_evidence_markdown_prints_the_slopes_and_the_forecasts_auc_with_its_interval():
    fit = {"converged": True, "reason": None, "iterations": 6, "dropped": 0}
    ev = {"fraction_comparisons": {"linear": [
              {"cell": [0.5, "sgd", "dpo_bt"], "n_seeds": 5, "mean": 0.194, "interval": [0.068, 0.320], "decided": False},
              {"cell": [1.0, "sgd", "dpo"], "n_seeds": 11, "mean": -0.034, "interval": [-0.099, 0.030], "decided": None}]},
          "time_in_U_slopes": {"linear": {
              "sgd": {"lm_slope": 0.4, "lm_stderr": 0.039, "pred_slope": 0.605, "pred_stderr": 0.054, "n_pairs": 316,
                      "n_lm_censored": 80, "n_pred_censored": 95, "decided": False, "fits": {"lm": fit, "pred": fit}},
              "adam": {"lm_slope": 0.311, "lm_stderr": 0.022, "pred_slope": None, "pred_stderr": None, "n_pairs": 316,
                       "decided": None, "fits": {"lm": fit, "pred": {**fit, "converged": False, "reason": "planted"}}}}},
          "forecast": {"seeds": [0, 1, 2], "per_seed_auc_baseline": [0.7, 0.8, 0.9], "per_seed_auc_kernel": [0.71, 0.8, 0.88],
                       "gain_kernel": {"mean": -0.003, "lo": -0.021, "hi": 0.015, "level": 0.95},
                       "gain_secondary": {"mean": -0.06, "lo": -0.12, "hi": 0.001, "level": 0.95}, "gain": False}}
    md = kernel_claim.evidence_markdown(ev)
    assert "| linear | sgd | 0.400 (0.039) | 0.605 (0.054) | 0.205 | 0.078 | False | 316 (80 / 95) |" in md
    assert "undecided: the predicted times' fit did not converge (planted)" in md
    assert "| linear | beta 0.5 sgd dpo_bt | 5 | 0.194 | [0.068, 0.320] | outside |" in md
    assert "| linear | beta 1 sgd dpo | 11 | -0.034 | [-0.099, 0.030] | undecided |" in md
    assert "beta |delta_ref| alone 0.800 (per seed 0.700-0.900)" in md and "0.797 (per seed 0.710-0.880)" in md
    assert "-0.003, 95% interval [-0.021, +0.015]" in md and "No gain" in md


def test_figure_titles_name_a_seed_range_not_the_whole_list():
    from figures.kernel import seed_label

    assert seed_label(range(11)) == "seeds 0-10" and seed_label([3, 1, 2]) == "seeds 1-3"
    assert seed_label([0, 2, 5]) == "seeds 0, 2, 5" and seed_label([4]) == "seeds 4"


def test_cell_table_numbers_against_hand_computation(monkeypatch):
    """cell_table on a stub stage: one cell (beta 1, sgd, dpo), seeds 0 and 1, with known LM outcomes, tabular and
    linearised predictions. By hand: observed = mean(2/4, 1/4) = 0.375; tabular = seed 1's 0.5 (seed 0's clock
    saturated, left out); linear = mean(0.25, 0.75) = 0.5, agreement mean(1, 0.5) = 0.75; rmse of delta at the end
    over the seeds' pairs: pred - obs = (0.3, -0.4) and (0.5, -sqrt(0.5)), squares 0.09 + 0.16 + 0.25 + 0.5 = 1 over
    4 pairs -> sqrt(0.25) = 0.5."""
    from types import SimpleNamespace

    key = (1.0, "sgd", "dpo")
    cfg = SimpleNamespace(betas=[1.0], optimizers=["sgd"], methods=("dpo",))
    ends = {0: [True, True, False, False], 1: [False, True, False, False]}
    # in_U (steps, P): the outcome is the last row's (the rows before it differ, to tell them apart)
    runs = [SimpleNamespace(seed=s, records={key: SimpleNamespace(in_U=np.array([[True] * 4] + [[False] * 4] * 2
                                                                               + [ends[s]]))})
            for s in (0, 1)]
    tab = {0: SimpleNamespace(clock_saturated=True, predicted_frac_in_U=0.9),
           1: SimpleNamespace(clock_saturated=False, predicted_frac_in_U=0.5)}
    obs = {0: np.array([-1.0, 2.0]), 1: np.array([0.5, -3.0])}
    cmps = {0: SimpleNamespace(predicted_frac_in_U=0.25, agreement=1.0, obs_delta=obs[0],
                               pred_delta=obs[0] + np.array([0.3, -0.4])),
            1: SimpleNamespace(predicted_frac_in_U=0.75, agreement=0.5, obs_delta=obs[1],
                               pred_delta=obs[1] + np.array([0.5, -np.sqrt(0.5)]))}
    stage = SimpleNamespace(cfg=cfg, runs_with=lambda k: runs if k == key else [], comparisons={key: tab})
    monkeypatch.setattr(kernel_claim, "_cmp", lambda st, k, seed, variant: cmps[seed] if (st, k, variant) == (
        stage, key, "linear") else pytest.fail(f"_cmp called with {(st, k, variant)}"))
    (row,) = kernel_claim.cell_table(stage)
    assert row["cell"] == "beta 1 sgd dpo" and row["seeds"] == [0, 1]
    assert row["observed"] == pytest.approx(0.375, abs=1e-12)
    assert row["tabular"] == pytest.approx(0.5, abs=1e-12)
    assert row["linear"] == pytest.approx(0.5, abs=1e-12) and row["linear_agreement"] == pytest.approx(0.75, abs=1e-12)
    assert row["linear_rmse_delta_end"] == pytest.approx(0.5, abs=1e-12)
    # every seed's tabular clock saturated: no tabular number
    tab[1] = SimpleNamespace(clock_saturated=True, predicted_frac_in_U=0.5)
    assert kernel_claim.cell_table(stage)[0]["tabular"] is None


def test_time_in_U_figure_title_states_the_slopes_the_claim_compares(monkeypatch):
    """The time-in-U panel's title gives the Tobit slopes the claim decides on: the LM's with its standard error and
    each prediction's, each from time_in_U_slopes for that optimizer and variant; a fit with no number says n/a."""
    import figures.kernel
    from toy_lm import kernel_claim

    got = {("sgd", "linear"): {"lm_slope": 0.572, "lm_stderr": 0.038, "pred_slope": 0.856},
           ("sgd", "relin"): {"lm_slope": 0.572, "lm_stderr": 0.038, "pred_slope": None}}
    monkeypatch.setattr(kernel_claim, "time_in_U_slopes", lambda st, o, v: got[(o, v)])
    names = {"linear": "linearised", "relin": "re-linearised"}
    assert figures.kernel._slope_line(None, "sgd", ("linear", "relin"), names) == \
        "slope LM 0.57 (se 0.04), linearised 0.86, re-linearised n/a"


def test_evaluate_fraction_decides_on_observed_minus_predicted(monkeypatch):
    """evaluate_fraction on a stub stage (one cell, beta 1 sgd dpo, 3 seeds, one look: max_seeds 3, K = 1, level 0.95,
    100 train prompts). Observed fractions in U (0.61, 0.50, 0.70), predicted (0.60, 0.50, 0.70): by hand the seed
    values are observed - predicted = (0.01, 0, 0), mean 1/300, sd 0.01/sqrt(3) (above the 0.01/sqrt(12) floor),
    half-width t_{0.975, 2} sd / sqrt(3) = 4.302653 x 0.01 / 3 = 0.014342: interval [-0.011009, 0.017676], inside
    +-0.05: within (True). The observed fractions alone (mean 0.603) would be outside; predicted - observed flips the
    values' signs."""
    from types import SimpleNamespace

    from toy_lm import stage as stage_mod

    key = (1.0, "sgd", "dpo")
    cfg = SimpleNamespace(seeds=[0, 1, 2], seed_step=3, max_seeds=3, look_schedule="double", betas=[1.0],
                          optimizers=["sgd"], methods=("dpo",), n_train_prompts=100)
    stage = SimpleNamespace(cfg=cfg, planned_seeds=[0, 1, 2])
    observed, predicted = {0: 0.61, 1: 0.50, 2: 0.70}, {0: 0.60, 1: 0.50, 2: 0.70}
    extended = []
    monkeypatch.setattr(stage_mod, "extend", lambda st, keys, n, predict: extended.append((list(keys), n, predict)))
    monkeypatch.setattr(kernel_claim, "_DECISIONS", {})
    monkeypatch.setattr(kernel_claim, "_cmp", lambda st, k, seed, variant: SimpleNamespace(
        observed_frac_in_U=observed[seed], predicted_frac_in_U=predicted[seed]) if (st, k, variant) == (
        stage, key, "linear") else pytest.fail(f"_cmp called with {(st, k, variant)}"))
    out = kernel_claim.evaluate_fraction(stage, "linear")
    assert extended == [([key], 3, False)] and list(out) == ["beta 1 sgd dpo"]
    row = out["beta 1 sgd dpo"]
    assert row["seeds"] == [0, 1, 2] and row["n_seeds"] == 3 and row["look"] == 1
    assert row["values"] == pytest.approx([0.01, 0.0, 0.0], abs=1e-12)
    assert row["mean"] == pytest.approx(1 / 300, abs=1e-12)
    assert row["level"] == pytest.approx(0.95, abs=1e-15)
    half = 4.302652729911275 * 0.01 / 3  # Student t 0.975 quantile at 2 degrees of freedom (table value)
    assert row["interval"] == pytest.approx([1 / 300 - half, 1 / 300 + half], abs=1e-9)
    assert row["decided"] is True and row["bound"] == KERNEL.margin == 0.05


def test_rank1_ipo_reduction_sees_an_error_in_either_mode(monkeypatch):
    """The numeric method's rank-1 IPO check against kernels with an error in one eigen-direction only: +0.35 on the
    part off the shared mode (I - u u^T / 2P, which leaves u alone) or +0.2 on the shared mode (u u^T). Each must
    break the closed form. A start without spread across pairs (z0 only, a survivor of mutation) has no part off the
    shared mode, so an error there went unseen (0.153 against 1.1e-15); that start now fails the 'moved' rule too."""
    real = kernel_claim.run_linearised
    for extra in ("perp", "par"):
        def perturbed(method, extra=extra, **kw):
            k = kw.get("kernel")
            if method == "ipo" and k is not None and not np.allclose(k, k[0, 0] * np.eye(len(k))):
                n = len(k)
                u = np.concatenate([np.ones(n // 2), -np.ones(n // 2)])
                kw = {**kw, "kernel": k + (0.35 * (np.eye(n) - np.outer(u, u) / n) if extra == "perp"
                                           else 0.2 * np.outer(u, u))}
            return real(method, **kw)

        monkeypatch.setattr(kernel_claim, "run_linearised", perturbed)
        red = kernel_claim._reductions()["rank1_ipo_closed_form"]
        assert red["max_abs_diff"] > 100 * red["tol"], extra
    monkeypatch.setattr(kernel_claim, "run_linearised", real)
    red = kernel_claim._reductions()["rank1_ipo_closed_form"]
    assert red["max_abs_diff"] <= red["tol"] and red["moved"] > 0.1


def test_numeric_method_fails_when_the_adam_runs_do_not_move(tmp_path, monkeypatch):
    """The K = P I identity under Adam compares the tabular and the linearised runs; a pair of runs that never leave
    their start agree trivially, which is what the 'moved' rule (the largest change of delta over the run > 0.1) is
    there to reject. Planted: Adam at lr 1e-12 in both (a run that stays put to 3e-11). Each identity_adam row must
    then report moved ~ 0 and fail, so the method's literal is False with exactly the four Adam rows failing (the SGD,
    rank-1 rows untouched). Measured unplanted: moved 0.0 for the frozen rows (2.20, 1.73, 2.55, 0.38 when they run).
    With moved read as max |delta_end| (a survivor of mutation: toy_lm/kernel_claim.py::_reductions::drop-term::
    8b119b8a9f) the frozen rows reported 3.44, the reference's own largest |delta_ref|, and the method held."""
    import toy_lm.tabular as tabular

    real_lin, real_tab = kernel_claim.run_linearised, tabular.run_tabular

    def frozen_lin(method, **kw):
        if kw.get("optimizer") == "adam":
            kw["lr"] = 1e-12
        return real_lin(method, **kw)

    def frozen_tab(method, ref, **kw):
        if kw.get("optimizer") == "adam":
            kw["lr"] = 1e-12
        return real_tab(method, ref, **kw)

    monkeypatch.setattr(kernel_claim, "run_linearised", frozen_lin)
    monkeypatch.setattr(tabular, "run_tabular", frozen_tab)
    r = lm_kernel_numeric(CheckContext(out_dir=tmp_path))
    red = r.evidence["reductions"]
    adam = sorted(k for k in red if k.startswith("identity_adam_"))
    assert len(adam) == 4
    for k in adam:
        assert red[k]["max_abs_diff"] <= red[k]["tol"] and abs(red[k]["moved"]) < 1e-6, (k, red[k])
    assert r.literal is False and sorted(r.counterexample["reductions_that_fail"]) == adam


def test_identity_sgd_reduction_sees_a_wrong_kernel(tmp_path, monkeypatch):
    """The SGD identity reduction (K = P I is the tabular run) must read the largest deviation over the whole run, not
    the smallest: both runs start from the same z0, so the step-0 difference is 0 and a min over the trajectory is 0
    whatever the kernel (a survivor of mutation: toy_lm/kernel_claim.py::_reductions::minmax::c2820cbb3d, max -> min).
    Planted here: the identity kernel 10% low (0.9 P I, only where the kernel is a multiple of I, so the Adam
    reductions, which take a Jacobian, and the rank-1 ones are untouched). Measured: the four SGD reductions deviate
    from the tabular run by 0.077 (dpo), 0.054 (dpo_bt), 0.125 (cpo_clip), 0.040 (ipo) against tol 1e-12; unplanted
    they agree to 1.8e-15."""
    real = kernel_claim.run_linearised

    def planted(method, **kw):
        k = kw.get("kernel")
        if k is not None:
            k = np.asarray(k)
            if np.allclose(k, k[0, 0] * np.eye(len(k))):
                kw["kernel"] = 0.9 * k
        return real(method, **kw)

    monkeypatch.setattr(kernel_claim, "run_linearised", planted)
    r = lm_kernel_numeric(CheckContext(out_dir=tmp_path))
    red = r.evidence["reductions"]
    sgd = sorted(k for k in red if k.startswith("identity_sgd_"))
    assert len(sgd) == 4
    for k in sgd:
        assert red[k]["max_abs_diff"] > 0.01, (k, red[k])  # measured 0.040 to 0.125
    for k in red:
        if not k.startswith("identity_sgd_"):
            assert red[k]["max_abs_diff"] <= red[k]["tol"], (k, red[k])
    assert r.literal is False and sorted(r.counterexample["reductions_that_fail"]) == sgd
