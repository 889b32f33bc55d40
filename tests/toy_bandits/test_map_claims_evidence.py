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
