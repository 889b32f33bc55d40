"""The map methods (toy_bandits.map_claims): the U_eps convex program knows no closed form, planted errors flip
the methods that used to compare a quantity with itself, and no method merges another."""

import math

import numpy as np
import pytest

from dpo_rlhf_checks.result import CheckContext, MethodResult
from toy_bandits import map_claims as mc


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return CheckContext(seed=0, quick=True, out_dir=tmp_path_factory.mktemp("out"))


@pytest.mark.parametrize("d_ref, beta", [(-3.0, 0.5), (-1.0, 2.0), (-0.1, 1.0), (0.1, 1.0), (1.0, 0.5)])
def test_min_loss_program_finds_l_crit_without_knowing_it(d_ref, beta):
    p0 = 0.7 / (1.0 + math.exp(-d_ref))
    value, u, status = mc._min_loss_not_preferring_w(np.array([p0, 0.7 - p0, 0.3]), beta, 0, 1)
    assert value == pytest.approx(float(np.logaddexp(0.0, beta * d_ref)), abs=1e-6)  # l_crit (docs/theory.md §7)
    assert abs(u[0] - u[1]) <= 1e-5 and float(np.logaddexp.reduce(u)) <= 1e-7  # minimiser on pi_w = pi_l


def test_convex_method_does_not_use_the_closed_form_inverse(ctx, monkeypatch):
    import toy_bandits.maps as maps

    def forbidden(*args, **kwargs):
        raise AssertionError("the convex method must not use the closed-form inverse of the loss")

    monkeypatch.setattr(maps, "delta_at_loss", forbidden)
    monkeypatch.setattr(maps, "pair_target_policy", forbidden)
    res = mc.undesirable_space_convex(ctx)
    assert isinstance(res, MethodResult) and res.literal is True
    assert res.evidence["max_abs_min_loss_minus_l_crit"] < 1e-6 and res.evidence["instances"] > 0


def test_random_method_flips_on_a_planted_gibbs_error(ctx, monkeypatch):
    """pi* in U used to be checked on delta* = delta_ref + s with s > 0 sampled (it could not fail); now pi* comes from
    the Gibbs policy, and a wrong one is caught."""
    import toy_bandits.rlhf as rlhf

    assert mc.undesirable_space_random(ctx).literal is True
    real = rlhf.log_gibbs_policy
    monkeypatch.setattr(rlhf, "log_gibbs_policy", lambda p, r, b: real(p, r, 0.5 * np.asarray(b)))
    bad = mc.undesirable_space_random(ctx)
    assert bad.literal is False and bad.counterexample


def test_population_simulation_reads_delta_star_from_the_gibbs_policy(ctx, monkeypatch):
    import toy_bandits.rlhf as rlhf

    res = mc.equiv_population_simulation(ctx)
    assert (res.literal, res.amended) == (False, True)
    assert "phase_diagram" not in res.evidence  # the phase diagram against its own formula is gone
    real = rlhf.gibbs_policy
    monkeypatch.setattr(rlhf, "gibbs_policy", lambda p, r, b: real(p, 1.1 * np.asarray(r), b))
    bad = mc.equiv_population_simulation(ctx)
    assert bad.amended is False


def test_certificate_predictions_are_computed_not_typed(ctx):
    c_star = mc.eq17_critical_ratio()["c_star_brent"]
    assert mc.predicted_certifies("cpo_eq17", 1.0, {"gamma": 1.01 * c_star}) is True
    assert mc.predicted_certifies("cpo_eq17", 1.0, {"gamma": 0.99 * c_star}) is False
    assert mc.predicted_certifies("cpo_smooth", 1.0, {"gamma": -0.6, "tau": 2.0, "alpha": 0.5}) is True
    assert mc.predicted_certifies("cpo_smooth", 1.0, {"gamma": -0.8, "tau": 2.0, "alpha": 0.5}) is False
    with pytest.raises(ValueError, match="valid"):
        mc.predicted_certifies("ipo", 1.0, {})
    derived = mc.cpo_loss_certificates_derived(ctx)
    search = mc.cpo_loss_certificates_search(ctx)
    assert derived.literal is False and derived.amended is True
    assert search.literal is False and search.amended is True
    assert derived.amended_statement == search.amended_statement  # one text: merged without contradiction
    # the search compares with the derived prediction: measured, they share it (README, "Independent methods")
    assert "toy_bandits.map_claims.predicted_certifies" in set(derived.depends_on) & set(search.depends_on)


def test_no_hand_merge_is_left():
    src = open(mc.__file__).read()
    assert "def _merge" not in src and "theory.claims" not in src and "decide(" not in src
