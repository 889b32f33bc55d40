"""theory.sec13_dataset: the symbolic methods of the data-set claims (§13)."""

import math

import pytest

from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory.sec13_dataset import dataset_minimiser_symbolic, length_symbolic, listwise_symbolic


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return CheckContext(seed=0, quick=True, out_dir=tmp_path_factory.mktemp("out"))


def test_dataset_symbolic_finds_the_counterexamples_and_proves_the_amendment(ctx):
    r = dataset_minimiser_symbolic(ctx)
    assert isinstance(r, MethodResult) and r.literal is False and r.amended is True
    assert r.depends_on and all(d.startswith("theory.sec13_dataset._") for d in r.depends_on)  # its own SymPy only
    ev = r.evidence
    assert ev["cycle_beta_h"]["(0,1)"] == pytest.approx(0.8392352499821958, abs=1e-12)
    assert ev["cycle_beta_h"]["(1,2)"] + ev["cycle_beta_h"]["(2,0)"] + ev["cycle_beta_h"]["(0,1)"] == pytest.approx(0, abs=1e-15)
    assert ev["cycle_gradient_max"] < 1e-40
    assert ev["pooled_beta_h01"] == pytest.approx(1.0560978190260222, abs=1e-12)
    assert ev["contradictory_h_star"] == "log(a/b)/beta"
    assert ev["single_pair_always_negative"] and ev["chain_directional_derivative_negative"]


def test_listwise_symbolic(ctx):
    r = listwise_symbolic(ctx)
    assert r.literal is False and r.amended is True
    ex = r.evidence["example"]
    assert ex["loss"] < math.log(6) and ex["log pi(y_3) - log pi(y_2)"] == pytest.approx(0.1, abs=1e-15)
    assert r.evidence["gradient_numeric_max"] < 1e-30
    assert r.evidence["misordered_limit"] in ("log(exp(c) + 1)", "-log(1/(exp(c) + 1))")


def test_length_symbolic(ctx):
    r = length_symbolic(ctx)
    assert r.literal is False and r.amended is True
    assert r.evidence["stationary_point"] == "[dr/beta]"
    assert r.counterexample["mean_certifies_sum_does_not"]["delta"] == "-40"
