"""Map claims: the full (not --quick) configuration of the ordered-pair simulation, and evidence numbers that must
describe what was computed."""

import math

import pytest
import torch

from dpo_rlhf_checks.losses import dpop_loss, ipo_loss
from dpo_rlhf_checks.result import CheckContext
from toy_bandits import map_claims as mc
from toy_bandits.dynamics import ordered_pair_flow_time


def test_ordered_pair_simulation_full_configuration(tmp_path):
    """The mutation runner runs --quick; the full run has its own list of references, all in U (delta_ref < 0),
    each reaching delta = 0 at its flow time."""
    r = mc.equiv_ordered_pair_simulation(CheckContext(seed=0, quick=False, out_dir=tmp_path))
    cross = r.evidence["crossing"]
    assert list(cross["delta_ref"]) == [-0.5, -1.0, -2.0, -3.0, -4.0]
    assert r.literal is False and r.amended is True
    assert cross["flow_agrees"] and cross["recurrence_agrees"]
    # the flow time of the deepest reference, recomputed: (U0 + e^U0 - 1) / (2 beta^2), beta = 1, U0 = 4
    assert cross["flow_time_logits"][-1] == pytest.approx((4.0 + math.exp(4.0) - 1.0) / 2.0, rel=1e-12)
    assert float(ordered_pair_flow_time(-4.0, 1.0)) == pytest.approx((4.0 + math.exp(4.0) - 1.0) / 2.0, rel=1e-12)


def test_no_target_form_evidence_reproduces_its_losses(tmp_path):
    """The IPO and DPO-Positive counterexamples of cpo-loss-certificates: the reported (delta_ref, delta, beta, lam)
    give the reported loss again, and it is below log 2 with delta < 0."""
    ev = mc.cpo_loss_certificates_search(CheckContext(seed=0, quick=True, out_dir=tmp_path)).evidence["no_target_form"]
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    c = -3.0  # the chosen log-probability of policy and reference (equal: DPO-Positive's penalty is 0)
    ipo = ev["ipo"]
    again = float(ipo_loss(t(c), t(c - ipo["delta"]), t(c), t(c - ipo["delta_ref"]), beta=ipo["beta"]).losses[0])
    assert again == pytest.approx(ipo["loss"], abs=1e-12)
    assert again == pytest.approx((ipo["delta"] - ipo["delta_ref"] - 1 / (2 * ipo["beta"])) ** 2, abs=1e-12)
    dp = ev["dpop"]
    again = float(dpop_loss(t(c), t(c - dp["delta"]), t(c), t(c - dp["delta_ref"]), beta=dp["beta"],
                            lam=dp["lam"]).losses[0])
    assert again == pytest.approx(dp["loss"], abs=1e-12)
    for e in (ipo, dp):
        assert e["delta"] < 0 and e["loss"] < math.log(2)


def test_sum_vs_mean_example_is_the_summed_delta_of_its_tokens(tmp_path):
    """The per-token-mean counterexample of cpo-loss-certificates: 10 chosen tokens at -1.0, 2 rejected at -2.0, so
    the mean delta is +1 and the summed delta -10 + 4 = -6 (from the token sums here). Its loss is cpo_clip with
    margin 0 on the means, softplus(-(dm - dm_ref)) = softplus(-(1 - 0.3)) = 0.4032 < log 2. The sum of all log-probabilities
    (-14, a survivor of mutation) is negative for every example, so 'summed delta < 0' could not fail with it."""
    ev = mc.cpo_loss_certificates_search(CheckContext(seed=0, quick=True, out_dir=tmp_path)).evidence["sum_vs_mean"]
    w, l = torch.full((10,), -1.0, dtype=torch.float64), torch.full((2,), -2.0, dtype=torch.float64)  # noqa: E741
    assert (ev["tokens_w"], ev["tokens_l"]) == (10, 2) and ev["policy_mean_logp"] == [-1.0, -2.0]
    assert ev["mean_delta"] == float(w.mean() - l.mean()) == 1.0
    assert ev["summed_delta"] == float(w.sum() - l.sum()) == -6.0
    assert ev["loss"] == pytest.approx(math.log1p(math.exp(-(1.0 - (-1.2 + 1.5)))), abs=1e-12)
    assert ev["loss"] == pytest.approx(0.403186, abs=1e-6)
    assert ev["loss"] < math.log(2) and ev["loss_below_log2"] is True


@pytest.mark.parametrize("name", ["ipo_loss", "dpop_loss"])
def test_no_target_form_example_at_exactly_log2_is_no_counterexample(tmp_path, monkeypatch, name):
    """cpo-loss-certificates' no-target-form examples must show a loss strictly below log 2 with delta < 0: a loss of
    exactly log 2 certifies nothing, so it is no counterexample and the amended statement must fail (a survivor of
    mutation: with 'dpop < LOG2' read as '<=' the method stayed amended). A real error lands there: DPO-Positive
    with its margin term h dropped (softplus(-(h - penalty)) -> softplus(penalty)) gives softplus(0) = log 2 at the
    example, whose penalty is 0 (chosen log-probabilities equal); unplanted the losses are 0.3133 (DPOP) and 0.0
    (IPO). The loss is replaced here by one that returns log 2 exactly, computed as log1p(1)."""
    import types

    import dpo_rlhf_checks.losses as L

    def at_log2(*args, **kwargs):
        return types.SimpleNamespace(losses=torch.tensor([math.log1p(1.0)], dtype=torch.float64))

    ok = mc.cpo_loss_certificates_search(CheckContext(seed=0, quick=True, out_dir=tmp_path))
    assert ok.amended is True
    assert ok.evidence["no_target_form"]["dpop"]["loss"] == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)
    monkeypatch.setattr(L, name, at_log2)
    r = mc.cpo_loss_certificates_search(CheckContext(seed=0, quick=True, out_dir=tmp_path))
    key = "ipo" if name == "ipo_loss" else "dpop"
    assert r.evidence["no_target_form"][key]["loss"] == math.log(2.0)
    assert r.amended is False


def test_ordered_pair_simulation_reports_delta_star_of_each_case_by_hand(tmp_path):
    """The stop-at-pi* cases of equiv-ordered-pair's simulation report delta* = delta_ref + dr / beta, the log-odds of
    pi*, and whether the assumption (delta* > 0) holds, and its counterexample is the first case where the assumption
    holds and training does not stop at pi*. Values by hand (beta = 1): (-3, 1) -> -2, (-1, 2) -> 1, (0.5, 1) -> 1.5,
    (-2, 0.5) -> -1.5, (1, -0.5) -> 0.5, so the assumption holds at 3 of 5 and the counterexample is (-1, 2) with
    delta* = 1 (reading delta* as delta_ref gave -3, -1, 0.5, -2, 1: 2 of 5, the counterexample (0.5, 1) with
    delta* = 0.5, and no verdict changed; a survivor of mutation)."""
    r = mc.equiv_ordered_pair_simulation(CheckContext(seed=0, quick=True, out_dir=tmp_path))
    stops = r.evidence["stop_at_pi_star"]
    assert [(s["delta_ref"], s["dr"]) for s in stops] == [(-3.0, 1.0), (-1.0, 2.0), (0.5, 1.0), (-2.0, 0.5), (1.0, -0.5)]
    assert [s["delta_star"] for s in stops] == pytest.approx([-2.0, 1.0, 1.5, -1.5, 0.5], abs=1e-12)
    assert [s["assumption_holds"] for s in stops] == [False, True, True, False, True]
    cx = r.counterexample
    assert (cx["delta_ref"], cx["dr"], cx["assumption_holds"], cx["stopped_at_pi_star"]) == (-1.0, 2.0, True, False)
    assert cx["delta_star"] == pytest.approx(1.0, abs=1e-12)
    assert "(3 with the assumption)" in r.summary


def test_ordered_pair_stop_detector_sees_a_trainer_that_stops_at_pi_star(monkeypatch, tmp_path):
    """Part (1) of equiv_ordered_pair_simulation reports, per (delta_ref, dr) case, whether training stopped at pi*
    (|delta_4000 - delta*| <= 1e-3 and |delta_4000 - delta_3900| <= 1e-6). The honest ordered-label trainer never
    stops; here the five stop cases are trained instead with BT labels q = sigma(dr) (beta = 1), whose minimiser is
    delta* = delta_ref + dr, a planted error that does stop at pi*. The detector must then read True on all five
    cases, the summary '5/5', and the amendment (training never stops at pi*) must fail. (a survivor of mutation:
    |last[-1] - last[0]| -> |last[0]| made 'no longer moving' read |delta_3900| <= 1e-6, never true here.)"""
    import numpy as np

    import toy_bandits.dynamics as dyn

    real = dyn.train_tabular
    drs = np.array([1.0, 2.0, 1.0, 0.5, -0.5])  # the method's five cases' dr, in order

    def bt_for_the_stop_cases(pi_ref, pairs, loss_name, **kw):
        if kw.get("steps") == 4000 and kw.get("record_every") == 100:
            q = (1.0 / (1.0 + np.exp(-drs)))[:, None]
            return real(pi_ref, pairs, loss_name, labels="bt", q=q, **kw)
        return real(pi_ref, pairs, loss_name, **kw)

    monkeypatch.setattr(dyn, "train_tabular", bt_for_the_stop_cases)
    r = mc.equiv_ordered_pair_simulation(CheckContext(seed=0, quick=True, out_dir=tmp_path))
    stops = r.evidence["stop_at_pi_star"]
    assert [s["delta_ref"] + s["dr"] for s in stops] == [-2.0, 1.0, 1.5, -1.5, 0.5]
    for s in stops:  # the planted trainer did stop: measured before the detector is read
        assert abs(s["delta_final"] - s["delta_star"]) <= 1e-3 and abs(s["moved_in_last_100_steps"]) <= 1e-6
    assert [s["stopped_at_pi_star"] for s in stops] == [True] * 5
    assert "stops at pi* on 5/5 cases" in r.summary
    assert r.amended is False


def test_ordered_pair_stop_cases_train_from_the_stated_reference(tmp_path, monkeypatch):
    """equiv-ordered-pair, part (1): the reference each stop case trains from has log pi_ref(w)/pi_ref(l) equal to
    the delta_ref its evidence row states (-3, -1, 0.5, -2, 1), so delta_star and assumption_holds describe the
    policy actually trained; pi_ref(w) + pi_ref(l) = 0.9. A wrong reference (p0 = 0.9 / (2 + e^-d) gives -3.05,
    -1.31, -0.47, -2.13, -0.31) left the verdict unchanged (a survivor of mutation)."""
    import numpy as np

    from toy_bandits import dynamics

    seen = []
    real = dynamics.train_tabular

    def spy(pi_ref, *a, **k):
        seen.append(np.array(pi_ref, dtype=float))
        return real(pi_ref, *a, **k)

    monkeypatch.setattr(dynamics, "train_tabular", spy)
    r = mc.equiv_ordered_pair_simulation(CheckContext(seed=0, quick=True, out_dir=tmp_path))
    stated = [row["delta_ref"] for row in r.evidence["stop_at_pi_star"]]
    assert stated == [-3.0, -1.0, 0.5, -2.0, 1.0]
    ref = seen[0]
    assert ref.shape == (5, 3)
    for i, d in enumerate(stated):
        assert math.log(ref[i, 0] / ref[i, 1]) == pytest.approx(d, abs=1e-12)
        assert ref[i, 0] + ref[i, 1] == pytest.approx(0.9, abs=1e-12)
