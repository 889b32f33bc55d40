"""The U-atlas's LM column (toy_lm/atlas_lm.py): its tabular prediction, its loss adapter, a small run, planted bugs.

The generalised tabular prediction (run_tabular with a pref_losses pair_loss) must reproduce the existing DPO one
for "sigmoid" and reach the closed-form end states of IPO (per-token, summed, reference-free); a small run must give
well-formed rows whose "sigmoid" numbers are those of the stage's own DPO path; a planted sign must move them.
"""

import math

import numpy as np
import pytest
import torch

import toy_lm.atlas_lm as A
from dpo_rlhf_checks import pref_losses as P
from toy_lm.config import LMConfig
from toy_lm.design import DESIGN, decide_bound
from toy_lm.predict import predict_cell
from toy_lm.tabular import run_tabular
from toy_lm.task import make_task
from toy_lm.train import all_logps, train_preference_batched, train_reference_batched

BETA = DESIGN.slow_beta


def _refs(n=40, seed=0):
    """(n, 3) absolute log-probabilities of 3 candidates (+ a rest), spread so that about half the pairs are
    misranked, |delta_ref| up to ~8."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 4, generator=g, dtype=torch.float64) * 3.0
    return torch.log_softmax(logits, dim=1)[:, :3].numpy()


def _tab(method, ref, *, lr, pair_loss=None, optimizer="sgd", stop=0.05, max_steps=3000, n_tokens=4):
    n = ref.shape[0]
    groups = np.arange(n) % 2
    return run_tabular(method, ref, n_tokens=n_tokens, beta=BETA, params={}, q=np.ones(n), optimizer=optimizer, lr=lr,
                       groups=groups, stop_objective=np.full(2, stop), max_steps=max_steps, pair_loss=pair_loss)


def _counts(n, k=4):
    return torch.full((n,), k, dtype=torch.int64)


@pytest.mark.parametrize("optimizer, lr", [("sgd", LMConfig().tabular_sgd_lr / BETA**2), ("adam", 0.05)])
def test_sigmoid_tabular_reproduces_dpo_tabular(optimizer, lr):
    """The pref_losses "sigmoid" through the adapter and the tabular module's own DPO formula: the same run, to
    float64 rounding (the two write h with a different association, so not bit for bit), same stopping step."""
    ref = _refs()
    n = ref.shape[0]
    own = _tab("dpo", ref, lr=lr, optimizer=optimizer, stop=2e-3)
    gen = _tab("sigmoid", ref, lr=lr, optimizer=optimizer, stop=2e-3,
               pair_loss=A.make_pair_loss("sigmoid", BETA, {}, _counts(n), _counts(n)))
    assert gen.steps == own.steps and own.steps >= 200
    np.testing.assert_allclose(gen.delta, own.delta, rtol=0, atol=1e-10)
    np.testing.assert_allclose(gen.objective, own.objective, rtol=0, atol=1e-12)
    # a sign error in delta_ref (a planted bug) is not within that tolerance
    bad = _tab("sigmoid", ref, lr=lr, optimizer=optimizer, stop=2e-3,
               pair_loss=lambda pc, pr, rc, rr: A.pair_loss("sigmoid", BETA, {}, pc, pr, rr, rc, _counts(n), _counts(n)))
    assert np.abs(bad.delta[-1] - own.delta[-1]).max() > 0.1


def test_ipo_tabular_end_state_matches_closed_form():
    """IPO's absorbing end state h = t_f / beta (t_f = 1/2), run to convergence (loss < 1e-20 or 6000 steps):
    TRL's per-token IPO (n = 4 tokens each): delta = delta_ref + n / (2 beta); the summed IPO of
    dpo_rlhf_checks.losses: delta = delta_ref + 1 / (2 beta); CPO's reference-free IPO on per-token means:
    delta = n / (2 beta). Tolerance 1e-8 on delta."""
    ref = _refs()
    n, k = ref.shape[0], 4
    delta_ref = ref[:, 0] - ref[:, 1]
    lr = LMConfig().tabular_sgd_lr  # the flat (beta-free) step of the IPO losses
    cases = {
        "ipo": (A.make_pair_loss("ipo", BETA, {}, _counts(n, k), _counts(n, k)), delta_ref + k / (2 * BETA)),
        "cpo_ipo": (A.make_pair_loss("cpo_ipo", BETA, {"alpha": 0.0}, _counts(n, k), _counts(n, k)),
                    np.full(n, k / (2 * BETA))),
        "summed": (None, delta_ref + 1 / (2 * BETA)),
    }
    for name, (loss, expected) in cases.items():
        tab = _tab("ipo", ref, lr=lr, pair_loss=loss, stop=1e-20, max_steps=6000)
        np.testing.assert_allclose(tab.delta[-1], expected, rtol=0, atol=1e-8, err_msg=name)
    # the closed form says something: per-token and summed end states differ by (k - 1) / (2 beta) = 0.6
    assert abs(k / (2 * BETA) - 1 / (2 * BETA)) > 0.5


def test_pair_loss_adapter_passes_lengths_and_means():
    """Per-token losses get the token counts (ipo, sigmoid_norm, sft) or per-token means (CPO ipo, simpo), by hand."""
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (-(torch.rand(50, generator=g, dtype=torch.float64) * 8 + 0.1) for _ in range(4))
    nw, nl = torch.randint(1, 9, (50,), generator=g), torch.randint(1, 9, (50,), generator=g)
    h_tok = (pc - rc) / nw - (pr - rr) / nl
    sp = (lambda x: torch.logaddexp(x, torch.zeros_like(x)))  # exact softplus (torch's returns x above 20)
    expect = {
        "ipo": (h_tok - 1 / (2 * BETA)) ** 2,
        "sigmoid_norm": sp(-BETA * h_tok),
        "sft": -pc / nw,
        "cpo_ipo": ((pc / nw - pr / nl) - 1 / (2 * BETA)) ** 2,
        "cpo_simpo": sp(0.5 - BETA * (pc / nw - pr / nl)),
        "cpo_sigmoid": sp(-BETA * (pc - pr)),
        "sigmoid": sp(-BETA * ((pc - rc) - (pr - rr))),
    }
    for name, want in expect.items():
        obj, ordered = A.pair_loss(name, BETA, A.LM_PARAMS.get(name, {}), pc, pr, rc, rr, nw, nl)
        torch.testing.assert_close(obj, want, rtol=0, atol=1e-12, msg=name)
        assert obj is ordered


def test_f_divergence_settings():
    """"<loss>@<f_divergence_type>": TRL's f_divergence_type (alpha at TRL's coefficient 0.5) through the same adapter,
    forward_kl's score 1 - e^-r by hand; only for the losses TRL takes one with."""
    assert A.loss_params("sigmoid@alpha_divergence") == {"f_divergence_type": "alpha_divergence",
                                                          "f_alpha_divergence_coef": 0.5}
    assert A.loss_params("exo_pair@js_divergence") == {"label_smoothing": 1e-3, "f_divergence_type": "js_divergence"}
    assert len(A.per_pair_losses(f_divergences=True)) == len(A.per_pair_losses()) + 3 * 7
    g = torch.Generator().manual_seed(2)
    pc, pr, rc, rr = (-(torch.rand(50, generator=g, dtype=torch.float64) * 4 + 0.1) for _ in range(4))
    n = _counts(50)
    h = -torch.expm1(-(pc - rc)) + torch.expm1(-(pr - rr))
    obj, _ = A.pair_loss("sigmoid", BETA, A.loss_params("sigmoid@forward_kl"), pc, pr, rc, rr, n, n)
    torch.testing.assert_close(obj, torch.logaddexp(-BETA * h, torch.zeros_like(h)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="f_divergence_type"):
        A.run_atlas_lm(["sppo_hard@forward_kl"], progress=False)


def test_bad_loss_names_are_one_line_errors():
    with pytest.raises(ValueError, match="batch-coupled"):
        A.run_atlas_lm(["aot"], progress=False)
    with pytest.raises(ValueError, match="per-pair losses"):
        A.run_atlas_lm(["nope"], progress=False)
    assert "aot" not in A.per_pair_losses() and len(A.per_pair_losses()) == len(P.SPECS) - 2


def test_divergence_rule_reads_the_objective():
    """A run counts as diverged (step halved) when an objective is non-finite or ends above its start."""
    from types import SimpleNamespace as R

    ok = R(objective=np.array([0.08, 27.0, 0.05]))  # a transient rise that ends below the start: kept
    assert not A._diverged([ok])
    assert A._diverged([ok, R(objective=np.array([0.08, 313.0, 79.0]))])
    assert A._diverged([R(objective=np.array([0.7, np.nan, 0.1]))])


# ----------------------------------------------------------------------------------------------
# small runs (2 seeds, short SFT)

SMALL = LMConfig(seeds=(0, 1), max_seeds=2, sft_steps=100)


_SMALL_WALL: dict[str, float] = {}  # the wall seconds of the small run, timed around the call by its fixture


@pytest.fixture(scope="module")
def small():
    import time

    t0 = time.perf_counter()
    rows = A.run_atlas_lm(["sigmoid", "ipo"], cfg=SMALL, progress=False)
    _SMALL_WALL["seconds"] = time.perf_counter() - t0
    return rows


def test_small_run_is_well_formed(small):
    assert list(small) == ["sigmoid", "ipo"]
    for name, row in small.items():
        assert row["n_seeds"] == 2 and row["seeds"] == [0, 1] and row["look"] == 1
        # durations: the reference SFT's wall and CPU seconds are >= 0 (a swapped difference, a survivor of mutation,
        # wrote -2.86 CPU seconds into atlas.json)
        assert row["seconds_reference"] > 0 and row["cpu_seconds_reference"] > 0
        assert row["cell"]["beta"] == BETA and row["cell"]["optimizer"] == "sgd" and row["cell"]["steps"] == SMALL.steps
        assert row["cell"]["lr"] == pytest.approx(SMALL.sgd_lr if name == "ipo" else SMALL.sgd_lr / BETA**2)
        obs, pred = row["values"]["observed"], row["values"]["predicted"]
        assert all(0 <= v <= 1 for v in obs + pred)
        assert row["observed_frac_in_U"] == pytest.approx(np.mean(obs))
        assert row["predicted_frac_in_U"] == pytest.approx(np.mean(pred))
        assert row["obs_minus_pred"] == pytest.approx(np.mean(obs) - np.mean(pred))
        lo, hi = row["interval"]
        assert lo < row["obs_minus_pred"] < hi and math.isfinite(lo) and math.isfinite(hi)
        assert row["margin"] == DESIGN.atlas_tol_frac_in_U
        assert row["decided"] == decide_bound("within", DESIGN.atlas_tol_frac_in_U, lo, hi)
        assert row["level"] == pytest.approx(1 - DESIGN.alpha)  # one planned look
        assert row["final_loss"] < math.log(2) if name == "sigmoid" else row["final_loss"] < (1 / (2 * BETA)) ** 2


def test_small_run_durations_are_parts_of_its_wall_time(small):
    """Each row's seconds (its loss's training and prediction, summed over its chunks) are positive, and the rows'
    seconds plus the shared reference SFT's add up to no more than the wall time of the whole run_atlas_lm call, timed
    around it by the fixture (each value is rounded to 0.01 s: 0.02 s of slack). Pins the per-loss wall clock of
    atlas.json: t0 added instead of subtracted (a survivor of mutation) wrote twice the perf_counter clock (seconds
    since boot) per chunk, 25077 s for sigmoid, into a run that took 7 s (unmutated: 0.51 s of a 5.6 s run)."""
    wall = _SMALL_WALL["seconds"]
    ref = small["sigmoid"]["seconds_reference"]
    for row in small.values():
        assert 0 < row["seconds"] < wall and row["cpu_seconds"] > 0
        assert row["seconds_reference"] == ref
    assert ref + sum(row["seconds"] for row in small.values()) <= wall + 0.02


def test_small_sigmoid_row_is_the_stage_dpo_cell(small):
    """The atlas's "sigmoid" cell against the stage's own DPO path (train_preference_batched "dpo",
    predict_cell "dpo", the tabular module's own formula) on the same references: the same fractions in U."""
    seeds = [0, 1]
    dev = torch.device("cpu")
    torch.set_num_threads(1)
    tasks = [make_task(SMALL, s) for s in seeds]
    refs = train_reference_batched(tasks, SMALL, seeds, dev)
    lps = [all_logps(r, t, dev) for r, t in zip(refs, tasks)]
    recs = train_preference_batched("dpo", tasks, refs, lps, SMALL, seeds, dev, beta=BETA, optimizer="sgd")
    comps = predict_cell("dpo", BETA, "sgd", list(zip(recs, lps, tasks)), SMALL)
    row = small["sigmoid"]
    assert row["values"]["observed"] == [float(r.in_U[-1].mean()) for r in recs]
    assert row["values"]["predicted"] == [c.predicted_frac_in_U for c in comps]
    assert row["observed_frac_in_U"] > 0.2  # the slow cell's failure is there to be predicted


def test_planted_sign_on_the_loss_moves_the_column(small, monkeypatch):
    """A sign on the loss (the LM and the prediction alike) drives delta down, out of U: both fractions change."""
    spec = P.SPECS["sigmoid"]

    def negated(*args, **kwargs):
        out = spec.loss(*args, **kwargs)
        return out._replace(losses=-out.losses)

    monkeypatch.setitem(P.SPECS, "sigmoid", spec.__class__(**{**spec.__dict__, "loss": negated}))
    bad = A.run_atlas_lm(["sigmoid"], cfg=SMALL, progress=False)["sigmoid"]
    good = small["sigmoid"]
    assert bad["observed_frac_in_U"] < good["observed_frac_in_U"] - 0.2
    assert bad["predicted_frac_in_U"] < good["predicted_frac_in_U"] - 0.2


def test_planted_sign_in_the_prediction_only_is_caught(small, monkeypatch):
    """A sign error on the prediction's side alone: observed - predicted moves beyond the margin; not "within"."""
    real = A.predict_cell

    def flipped(*args, pair_loss, **kwargs):
        return real(*args, pair_loss=lambda *x: tuple(-t for t in pair_loss(*x)), **kwargs)

    monkeypatch.setattr(A, "predict_cell", flipped)
    bad = A.run_atlas_lm(["sigmoid"], cfg=SMALL, progress=False)["sigmoid"]
    assert bad["obs_minus_pred"] > small["sigmoid"]["obs_minus_pred"] + 0.2
    assert bad["obs_minus_pred"] > DESIGN.atlas_tol_frac_in_U and bad["decided"] is not True


@pytest.mark.parametrize("batch_replicas, diverge_at, calls", [
    (9, 1, [((0, 1), 1.0), ((0, 1), 0.5)]),  # one chunk: diverges, retrained at half the step
    (1, 2, [((0,), 1.0), ((1,), 1.0), ((1,), 0.5), ((0,), 0.5)]),  # met on seed 1's chunk: seed 0 retrained too
])
def test_one_divergence_halves_the_step_of_every_seed(monkeypatch, batch_replicas, diverge_at, calls):
    """A divergence forced on one training call (the rest read by the real rule): the run returns with
    lr_halvings 1 and every seed's last training at half the step, sgd_lr / beta^2 / 2 = 3e-3 / 6.25 / 2 = 2.4e-4;
    seed 0, trained at the full step before the halving met on seed 1's chunk, is retrained once (the cell never
    mixes steps). Calls to the trainer are bounded (a step that never settles raises here instead of hanging)."""
    real_train, real_div = A.train_preference_batched, A._diverged
    seen, latest, n_div = [], {}, [0]

    def train(*args, lr, **kwargs):
        if len(seen) >= 8:
            raise RuntimeError(f"trainer called {len(seen)} times: the step never settles ({seen})")
        seeds = tuple(args[5])
        recs = real_train(*args, lr=lr, **kwargs)
        seen.append((seeds, lr))
        latest.update(zip(seeds, recs))
        return recs

    def diverged(recs):
        n_div[0] += 1
        return True if n_div[0] == diverge_at else real_div(recs)

    monkeypatch.setattr(A, "train_preference_batched", train)
    monkeypatch.setattr(A, "_diverged", diverged)
    cfg = LMConfig(seeds=(0, 1), max_seeds=2, sft_steps=100, batch_replicas=batch_replicas)
    row = A.run_atlas_lm(["sigmoid"], cfg=cfg, progress=False)["sigmoid"]
    full = cfg.sgd_lr / BETA**2
    assert [s for s, _ in seen] == [s for s, _ in calls]
    assert [lr for _, lr in seen] == pytest.approx([full * f for _, f in calls], rel=1e-12)
    assert row["cell"]["lr_halvings"] == 1 and row["cell"]["lr"] == pytest.approx(full / 2, rel=1e-12)
    assert row["cell"]["tabular_lr"] == pytest.approx(cfg.tabular_sgd_lr / BETA**2 / 2, rel=1e-12)
    # the row's observed fractions are those of the half-step trainings
    assert row["values"]["observed"] == [float(latest[s].in_U[-1].mean()) for s in (0, 1)]


def test_a_step_that_never_settles_raises_after_the_last_allowed_halving(monkeypatch):
    """Pins the cap on the step halvings: with every training call read as diverged, run_atlas_lm trains at the full
    step and then at 1/2, 1/4, ..., 1/2^6 (MAX_LR_HALVINGS = 6, so 7 calls: sgd_lr / beta^2 = 3e-3 / 6.25 = 4.8e-4
    down to 4.8e-4 / 64 = 7.5e-6) and then raises FloatingPointError naming the 6 halvings, instead of halving on.
    With the comparison flipped ('halvings != MAX_LR_HALVINGS'), a run that never settles went past the cap and kept
    halving (a survivor of mutation); the stub trainer stops such a run after 20 calls instead of hanging."""
    seen = []

    def train(*args, lr, **kwargs):
        if len(seen) >= 20:
            raise RuntimeError(f"trainer called {len(seen)} times: the halvings went past the cap")
        seen.append(lr)
        return [None] * len(args[5])  # records only _diverged reads, and it is stubbed

    monkeypatch.setattr(A, "train_preference_batched", train)
    monkeypatch.setattr(A, "_diverged", lambda recs: True)
    cfg = LMConfig(seeds=(0, 1), max_seeds=2, sft_steps=100, batch_replicas=2)
    with pytest.raises(FloatingPointError, match="still rises after 6 halvings"):
        A.run_atlas_lm(["sigmoid"], cfg=cfg, progress=False)
    assert A.MAX_LR_HALVINGS == 6
    full = 3e-3 / 2.5**2  # the default sgd_lr over the slow cell's beta^2, by hand
    assert (cfg.sgd_lr, BETA) == (3e-3, 2.5)
    assert seen == pytest.approx([full / 2**i for i in range(7)], rel=1e-12)


@pytest.mark.slow
def test_full_column():
    """Every per-pair loss in its slow ordered SGD cell, default config (sequential looks up to max_seeds)."""
    out = A.run_atlas_lm(A.per_pair_losses(), progress=False)
    assert list(out) == list(A.per_pair_losses())
    for name, row in out.items():
        assert row["cell"]["lr_halvings"] <= A.MAX_LR_HALVINGS and row["final_loss"] < math.log(2) + 1, name
        if row["n_seeds"] == 0:  # every seed's clock saturated (DiscoPOP: the tabular run stops in f's local minimum)
            assert row["decided"] is None and row["reason_not_compared"].startswith("clock saturated"), name
            assert len(row["excluded_seeds"]) == len(row["seeds"]) == LMConfig().max_seeds, name
            continue
        assert row["n_seeds"] >= 2, name
        lo, hi = row["interval"]
        assert row["decided"] == decide_bound("within", DESIGN.atlas_tol_frac_in_U, lo, hi), name
        assert 0 <= row["observed_frac_in_U"] <= 1 and 0 <= row["predicted_frac_in_U"] <= 1, name
        assert row["obs_minus_pred"] == pytest.approx(row["observed_frac_in_U"] - row["predicted_frac_in_U"]), name


@pytest.mark.parametrize("name", ["cpo_eq17", "cpo_clip", "cpo_smooth", "cpo_easy"])
def test_paper_cpo_adapter_is_the_library_loss(name):
    """The paper's CPO losses in the LM column: the adapter calls dpo_rlhf_checks.losses on summed log-probabilities,
    cpo_easy on per-token means of all four (its own lengths per response), as the authors' code passes them; the
    runs carry a label of their own (the LM stage trains its own formulas under these names)."""
    from dpo_rlhf_checks.losses import get_loss
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (-(torch.rand(6, generator=g, dtype=torch.float64) * 20 + 1) for _ in range(4))
    n_w = torch.tensor([3, 4, 5, 6, 7, 8])
    n_l = torch.tensor([8, 7, 6, 5, 4, 3])
    params = A.loss_params(name)
    obj, ordered = A.pair_loss(name, BETA, params, pc, pr, rc, rr, n_w, n_l)
    if name == "cpo_easy":
        want = get_loss(name)(pc / n_w, pr / n_l, rc / n_w, rr / n_l, beta=BETA, **params).losses
        summed = get_loss(name)(pc, pr, rc, rr, beta=BETA, **params).losses  # the planted bug: sums, not means
        assert (summed - want).abs().max() > 1e-3
    else:
        want = get_loss(name)(pc, pr, rc, rr, beta=BETA, **params).losses
    torch.testing.assert_close(obj, want, rtol=0, atol=0)
    assert obj is ordered
    assert A.trained_label(name) == f"{name}[losses.py]" and A.trained_label("sigmoid") == "sigmoid"


def test_sft_mix_adapter_is_the_weighted_sum():
    """loss_type=["sigmoid", "sft"], loss_weights=[1, w]: the adapter's objective is sigmoid + w sft, per pair."""
    g = torch.Generator().manual_seed(2)
    pc, pr, rc, rr = (-(torch.rand(5, generator=g, dtype=torch.float64) * 20 + 1) for _ in range(4))
    n = torch.tensor([3, 4, 5, 6, 7])
    obj, _ = A.pair_loss("sigmoid+sft", BETA, {"sft_weight": 0.3}, pc, pr, rc, rr, n, n)
    want = P.sigmoid_loss(pc, pr, rc, rr, beta=BETA).losses + 0.3 * (-pc / n)
    torch.testing.assert_close(obj, want, rtol=1e-15, atol=0)


def test_sigmoid_sft_lm_cell_has_trls_weights_one_and_one():
    """The LM cell of "sigmoid+sft" is DPO with TRL's loss_type=["sigmoid", "sft"], loss_weights=[1, 1], the same
    setting as the bandit's atlas row (atlas_rows.MIX_ROWS, sft_weight 1.0): its parameters are {"sft_weight": 1.0},
    and its objective is, by hand, softplus(-beta ((pc - rc) - (pr - rr))) + 1 * (-pc / n_w). An sft_weight of 2.0 in
    LM_PARAMS (a survivor of mutation) trained the LM column on sigmoid + 2 sft next to a bandit row of sigmoid + sft."""
    from dpo_rlhf_checks.atlas_rows import MIX_ROWS

    assert A.loss_params("sigmoid+sft") == {"sft_weight": 1.0}
    assert [r.params for r in MIX_ROWS if r.loss == "sigmoid+sft"] == [{"sft_weight": 1.0}]
    g = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = (-(torch.rand(4, generator=g, dtype=torch.float64) * 20 + 1) for _ in range(4))
    n = torch.tensor([3, 4, 5, 6])
    obj, _ = A.make_pair_loss("sigmoid+sft", BETA, A.loss_params("sigmoid+sft"), n, n)(pc, pr, rc, rr)
    want = torch.nn.functional.softplus(-BETA * ((pc - rc) - (pr - rr))) + (-pc / n)
    torch.testing.assert_close(obj, want, rtol=1e-12, atol=0)
