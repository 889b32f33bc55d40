"""BanditInstance / PairBatch validation and the RLHF Gibbs optimum (toy_bandits.instance, toy_bandits.rlhf)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from toy_bandits.instance import BanditInstance, PairBatch
from toy_bandits.rlhf import (
    gibbs_policy, log_gibbs_policy, log_partition, optimal_value, rlhf_objective, suboptimality,
)

GOOD = {"pi_ref": [0.5, 0.3, 0.2], "reward": [0.0, 1.0, -1.0], "beta": 0.5, "preferences": [[0, 1]], "margin": 0.5}


def test_from_json_round_trip():
    inst = BanditInstance.from_json(GOOD)
    assert inst.K == 3 and inst.preferences == ((0, 1),) and inst.beta == 0.5 and inst.margin == 0.5
    assert BanditInstance.from_json(inst.to_json()).to_json() == inst.to_json()
    with pytest.raises(ValueError):  # frozen arrays
        inst.pi_ref[0] = 0.9


@pytest.mark.parametrize(
    "change, field",
    [
        ({"pi_ref": [0.5, 0.3, 0.3]}, "pi_ref"),  # sums to 1.1
        ({"pi_ref": [0.8, 0.2, 0.0]}, "pi_ref"),  # no full support
        ({"pi_ref": [0.5, float("nan"), 0.5]}, "pi_ref"),
        ({"pi_ref": "abc"}, "pi_ref"),
        ({"pi_ref": [1.0]}, "pi_ref"),
        ({"reward": [0.0, 1.0]}, "reward"),  # shape mismatch
        ({"reward": [0.0, float("inf"), 1.0]}, "reward"),
        ({"reward": [0.0, float("nan"), 1.0]}, "reward"),
        ({"beta": 0.0}, "beta"),
        ({"beta": -1.0}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"beta": float("inf")}, "beta"),
        ({"beta": "1"}, "beta"),
        ({"beta": True}, "beta"),
        ({"margin": -0.1}, "margin"),
        ({"margin": float("nan")}, "margin"),
        ({"preferences": [[0, 0]]}, "preferences[0]"),  # self-pair
        ({"preferences": [[0, 3]]}, "preferences[0]"),  # out of range
        ({"preferences": [[-1, 0]]}, "preferences[0]"),
        ({"preferences": [[0, 1.0]]}, "preferences[0]"),  # not an integer
        ({"preferences": [[0, 1, 2]]}, "preferences[0]"),
        ({"preferences": [[0, 1], [0, 1]]}, "preferences"),  # duplicate
        ({"preferences": 5}, "preferences"),
    ],
)
def test_bad_field_names_the_field(change, field):
    with pytest.raises(ValueError) as err:
        BanditInstance.from_json({**GOOD, **change})
    assert str(err.value).startswith(field)



@pytest.mark.parametrize(
    "preferences, duplicate",
    [
        ([[0, 1], [1, 2], [1, 2]], (1, 2)),          # the duplicate comes after a pair listed once
        ([[2, 0], [0, 1], [2, 1], [0, 1]], (0, 1)),  # two singletons before it, one between its copies
        ([[1, 0], [2, 1], [2, 1], [2, 0]], (2, 1)),
    ],
)
def test_duplicate_preference_error_names_the_repeated_pair(preferences, duplicate):
    """A repeated preference pair is reported by the pair that repeats, not by the first pair of the list.

    Pins toy_bandits.instance._pairs' message (a survivor of mutation:
    toy_bandits/instance.py::_pairs::cmp-boundary::7de0a757c0, count > 1 -> >= 1, named the first pair, e.g.
    "pair (0, 1) is listed more than once" for [[0, 1], [1, 2], [1, 2]], where (0, 1) is listed once). The
    expected pair is read off each list by hand; the first pair of each list occurs exactly once.
    """
    assert preferences.count(preferences[0]) == 1 and preferences.count(list(duplicate)) == 2
    with pytest.raises(ValueError) as err:
        BanditInstance.from_json({**GOOD, "preferences": preferences})
    assert str(err.value) == f"preferences: pair {duplicate} is listed more than once"
    first = tuple(preferences[0])
    assert f"pair {first}" not in str(err.value)


def test_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['temperature'\]"):
        BanditInstance.from_json({**GOOD, "temperature": 1.0})
    for key in GOOD:
        data = {k: v for k, v in GOOD.items() if k != key}
        with pytest.raises(ValueError, match=f"^{key}: missing"):
            BanditInstance.from_json(data)
    with pytest.raises(ValueError, match="JSON object"):
        BanditInstance.from_json([1, 2])


def test_pi_ref_within_tolerance_is_renormalised():
    inst = BanditInstance.from_json({**GOOD, "pi_ref": [0.5, 0.3, 0.2 + 5e-7]})
    assert abs(inst.pi_ref.sum() - 1.0) < 1e-15


def test_pair_batch_validation_and_rows():
    pi_ref = np.array([[0.5, 0.5], [0.2, 0.8]])
    batch = PairBatch(pi_ref, np.zeros((2, 2)), 1.0, np.array([0, 1]), np.array([1, 0]), 0.0)
    assert batch.N == 2 and batch.K == 2 and np.all(batch.beta == 1.0)
    assert batch.instance(1).preferences == ((1, 0),)
    with pytest.raises(ValueError, match="^winner: equals loser"):
        PairBatch(pi_ref, np.zeros((2, 2)), 1.0, np.array([0, 1]), np.array([0, 0]), 0.0)
    with pytest.raises(ValueError, match="^beta"):
        PairBatch(pi_ref, np.zeros((2, 2)), np.array([1.0, 0.0]), np.array([0, 1]), np.array([1, 0]), 0.0)
    with pytest.raises(ValueError, match="^reward"):
        PairBatch(pi_ref, np.zeros((2, 3)), 1.0, np.array([0, 1]), np.array([1, 0]), 0.0)
    with pytest.raises(ValueError, match="^loser"):
        PairBatch(pi_ref, np.zeros((2, 2)), 1.0, np.array([0, 1]), np.array([1, 2]), 0.0)
    with pytest.raises(ValueError, match="^pi_ref"):
        PairBatch(np.array([[0.5, 0.6]]), np.zeros((1, 2)), 1.0, np.array([0]), np.array([1]), 0.0)


simplex = st.lists(st.floats(-30.0, 0.0), min_size=2, max_size=6).map(
    lambda e: (lambda w: w / w.sum())(10.0 ** np.array(e)))


@given(pi_ref=simplex, data=st.data(), log_beta=st.floats(-3.0, 3.0))
def test_gibbs_is_the_maximiser(pi_ref, data, log_beta):
    """pi* sums to 1, J(pi*) = beta log Z, and J(pi*) - J(pi) = beta KL(pi || pi*) >= 0 for random pi."""
    k = pi_ref.size
    reward = np.array(data.draw(st.lists(st.floats(-5, 5), min_size=k, max_size=k)))
    beta = 10.0 ** log_beta
    pi_star = gibbs_policy(pi_ref, reward, beta)
    assert np.all(np.isfinite(pi_star)) and abs(pi_star.sum() - 1) < 1e-12
    j_star = rlhf_objective(pi_star, pi_ref, reward, beta)
    assert abs(j_star - optimal_value(pi_ref, reward, beta)) <= 1e-9 * (1 + abs(j_star))
    pi = np.random.default_rng(0).dirichlet(np.ones(k))
    gap = suboptimality(pi, pi_ref, reward, beta)
    assert gap >= 0
    direct = j_star - rlhf_objective(pi, pi_ref, reward, beta)
    assert abs(gap - direct) <= 1e-8 * (1 + abs(j_star) + beta * 70)


def test_gibbs_batched_matches_loop_and_tiny_beta_is_stable():
    rng = np.random.default_rng(1)
    pi_ref = rng.dirichlet(np.ones(5), size=(3, 4))
    reward = rng.normal(size=(3, 4, 5))
    beta = np.array([[1e-3, 1e-1, 1.0, 1e3]] * 3)
    out = gibbs_policy(pi_ref, reward, beta)
    for i in range(3):
        for j in range(4):
            np.testing.assert_allclose(out[i, j], gibbs_policy(pi_ref[i, j], reward[i, j], beta[i, j]), rtol=1e-12,
                                       atol=1e-300)
    # beta = 1e-6: r/beta ~ 1e6, no overflow; pi* puts all mass on argmax r; log pi* exact
    lp = log_gibbs_policy([0.5, 0.5], [0.0, 1.0], 1e-6)
    assert np.all(np.isfinite(lp)) and abs(lp[0] - (-1e6)) < 1e-6 and lp[1] == 0.0
    assert log_partition([0.5, 0.5], [0.0, 1.0], 1e-6) == pytest.approx(1e6 + math.log(0.5), rel=1e-15)
    with pytest.raises(ValueError, match="beta"):
        gibbs_policy([0.5, 0.5], [0.0, 1.0], 0.0)
    with pytest.raises(ValueError, match="same shape"):
        gibbs_policy([0.5, 0.5], [0.0, 1.0, 2.0], 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Issue 11: strict numbers, the numeric domain, r / beta beyond the float range

@pytest.mark.parametrize("field, value, needle", [
    ("pi_ref", ["0.5", 0.5], "pi_ref[0]: must be a number, got str"),
    ("reward", [True, 0.0], "reward[0]: must be a number, got bool"),
    ("reward", [0.0, None], "reward[1]: must be a number, got null"),
    ("reward", [0.0, 10 ** 400], "reward[1]: 1000"),
    ("reward", [0.0, float("nan")], "reward[1]: must be finite"),
    ("beta", True, "beta: must be a number, got bool"),
    ("margin", "0", "margin: must be a number, got str"),
    ("margin", 700.5, "margin: must lie in [0, 700]"),
    ("beta", 1e301, "beta: must lie in"),
])
def test_no_silent_coercion(field, value, needle):
    data = {"pi_ref": [0.5, 0.5], "reward": [0.0, 1.0], "beta": 1.0, "preferences": [[0, 1]], "margin": 0.0}
    data[field] = value
    with pytest.raises(ValueError) as err:
        BanditInstance.from_json(data)
    assert str(err.value).startswith(needle.split(":")[0]) and needle in str(err.value), str(err.value)
    assert len(str(err.value)) < 300


def test_gibbs_point_mass_when_r_over_beta_overflows():
    import warnings

    from toy_bandits.rlhf import gibbs_policy, log_gibbs_policy, optimal_value

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warning either
        pi = gibbs_policy([0.25, 0.25, 0.5], [1e300, -1e300, 0.0], 1e-4)
        log_pi = log_gibbs_policy([0.25, 0.25, 0.5], [1e300, -1e300, 0.0], 1e-4)
        value = optimal_value([0.25, 0.25, 0.5], [1e300, -1e300, 0.0], 1e-4)
        log_pi_tiny = log_gibbs_policy([0.25, 0.25, 0.5], [1e300, -1e300, 0.0], 1e-10)
    assert pi.tolist() == [1.0, 0.0, 0.0]
    assert log_pi[0] == 0.0 and log_pi[1] == pytest.approx(-2e304, rel=1e-12)
    assert log_pi[2] == pytest.approx(-1e304, rel=1e-12)
    assert log_pi_tiny.tolist() == [0.0, -np.inf, -np.inf]  # (r - max r) / beta below -1.8e308: exactly pi* = 0
    # J(pi*) = max r + beta log pi_ref(argmax) for a point mass: finite in reward units
    assert value == pytest.approx(1e300, rel=1e-12)
    # and the shift is exact where nothing overflows: J(pi*) = beta log Z
    assert optimal_value([0.5, 0.5], [0.0, 1.0], 1.0) == pytest.approx(np.log(0.5 * (1 + np.e)), rel=1e-15)


def test_suboptimality_is_exact_where_pi_and_pi_star_both_vanish():
    """J(pi*) - J(pi) = beta KL(pi || pi*) with 0 log 0 = 0 also where r/beta puts log pi*(y) at -inf (the exact
    pi*(y) = 0 of the module docstring) and pi(y) = 0 too: that term is 0, not 0 * inf = NaN. Pins the mask on
    pi > 0 in :func:`suboptimality` (a survivor of mutation: ``pi >= 0`` there gave NaN for pi = pi*, so ``solve``
    printed the price of alignment as null, 'not finite in float64', instead of 0). Expected values by hand."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # pi* = [1, 0, 0] exactly (log pi* = [0, -inf, -inf], test above); pi = pi*: KL = 0
        at_star = suboptimality([1.0, 0.0, 0.0], [0.25, 0.25, 0.5], [1e300, -1e300, 0.0], 1e-10)
        # pi* = [1/2, 1/2, 0] (-1e300 / 1e-9 overflows to -inf); pi = [0.8, 0.2, 0]:
        # KL = 0.8 log(0.8/0.5) + 0.2 log(0.2/0.5)
        two = suboptimality([0.8, 0.2, 0.0], [0.25, 0.25, 0.5], [0.0, 0.0, -1e300], 1e-9)
        # batched: the same two rows at once, each with its own beta
        both = suboptimality([[1.0, 0.0, 0.0], [0.8, 0.2, 0.0]], [[0.25, 0.25, 0.5]] * 2,
                             [[1e300, -1e300, 0.0], [0.0, 0.0, -1e300]], [1e-10, 1e-9])
    assert at_star == 0.0
    by_hand = 1e-9 * (0.8 * math.log(1.6) + 0.2 * math.log(0.4))  # 1.927e-10
    assert two == pytest.approx(by_hand, rel=1e-14, abs=0)
    assert both[0] == 0.0 and both[1] == pytest.approx(by_hand, rel=1e-14, abs=0)
    # mass where pi* = 0 exactly: the KL is +inf (not NaN)
    assert suboptimality([0.5, 0.0, 0.5], [0.25, 0.25, 0.5], [1e300, -1e300, 0.0], 1e-10) == np.inf
