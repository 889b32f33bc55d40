"""toy_bandits.finite_labels: exact binomial probability that finite labels flip the empirical optimum (§13)."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from toy_bandits.finite_labels import (chernoff_bound, chernoff_lower_bound, min_winning_count, n_needed, p_wrong,
                                       p_wrong_many, p_wrong_mpmath, ranks_first)

finite = st.floats(-6.0, 6.0, allow_nan=False)
away = st.tuples(finite, finite).filter(lambda t: abs(t[0] + t[1]) > 1e-3)


def test_hand_computed_values_show_the_rise_from_one_to_two_labels():
    # beta delta_ref = -0.1, dr = 0.5: pi* ranks y_w first; one label ranks it first iff it says y_w (q = sigma(0.5));
    # with two labels a 1:1 split gives logit(1/2) = 0 < 0.1, so both labels must say y_w: P = 1 - q^2.
    q = 1 / (1 + math.exp(-0.5))
    assert p_wrong(1, -0.1, 0.5) == pytest.approx(1 - q, rel=1e-14)
    assert p_wrong(2, -0.1, 0.5) == pytest.approx(1 - q * q, rel=1e-14)
    assert p_wrong(2, -0.1, 0.5) > 0.5 > p_wrong(1, -0.1, 0.5)


@given(st.integers(1, 40), away)
@example(4, (1.4090190973141722e-277, 1.0))  # found by Hypothesis: a tiny gap is not a tie
@settings(max_examples=settings.default.max_examples)
def test_log_space_sum_scipy_and_mpmath_agree(n, pt):
    bdr, dr = pt
    exact = float(p_wrong_mpmath(n, bdr, dr))
    assert p_wrong(n, bdr, dr) == pytest.approx(exact, rel=1e-10, abs=1e-300)
    assert float(p_wrong_many(np.array([n]), bdr, dr)[0]) == pytest.approx(exact, rel=1e-9, abs=1e-300)


@given(st.integers(1, 3000), away)
@settings(max_examples=settings.default.max_examples)
def test_chernoff_bound_holds(n, pt):
    bdr, dr = pt
    assert p_wrong(n, bdr, dr) <= float(chernoff_bound(n, bdr, dr)) * (1 + 1e-9) + 1e-300


@given(st.integers(1, 200), away)
@settings(max_examples=settings.default.max_examples)
def test_swapping_the_pair_leaves_the_error_unchanged(n, pt):
    # (y_w, y_l) -> (y_l, y_w): beta delta_ref and dr change sign; the error against pi* is the same event, ties
    # included (a tie ranks unlike pi* on either side; c9d097b skipped ties here because it broke this symmetry).
    bdr, dr = pt
    assert p_wrong(n, bdr, dr) == pytest.approx(p_wrong(n, -bdr, -dr), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("n", [2, 4, 10, 50])
@pytest.mark.parametrize("dr", [0.5, -0.5, 2.0, -0.03])
def test_a_tie_ranks_unlike_a_strictly_ordered_pi_star_on_both_sides(n, dr):
    # beta delta_ref = 0 and k = n/2: logit(1/2) = 0, so delta = 0 at the empirical optimum (pi(y_w) = pi(y_l)).
    # pi* is strict (dr != 0), so the tie is an error whichever response pi* prefers (docs/theory.md §13).
    q = 1 / (1 + math.exp(-dr))
    pmf = [math.comb(n, k) * q ** k * (1 - q) ** (n - k) for k in range(n + 1)]
    wrong = sum(pmf[: n // 2 + 1]) if dr > 0 else sum(pmf[n // 2:])  # the tie k = n/2 counted wrong on both sides
    assert p_wrong(n, 0.0, dr) == pytest.approx(wrong, rel=1e-12)
    assert float(p_wrong_mpmath(n, 0.0, dr)) == pytest.approx(wrong, rel=1e-12)
    assert float(p_wrong_many(np.array([n]), 0.0, dr)[0]) == pytest.approx(wrong, rel=1e-10)
    assert p_wrong(n, 0.0, dr) == pytest.approx(p_wrong(n, 0.0, -dr), rel=1e-12)


def test_the_issue_value_at_the_tie():
    # P_2 at beta delta_ref = 0, dr = 0.5 is 1 - sigma(0.5)^2 = 0.6125 (the tie counted wrong), and the swapped pair
    # gives the same; c9d097b gave 0.1425 for the swapped pair (its tie counted as agreeing with pi*).
    assert p_wrong(2, 0.0, 0.5) == pytest.approx(0.612544381, abs=1e-9)
    assert p_wrong(2, 0.0, -0.5) == pytest.approx(0.612544381, abs=1e-9)


@given(st.integers(1, 3000), away)
@settings(max_examples=settings.default.max_examples)
def test_types_lower_bound_holds_and_meets_the_chernoff_exponent(n, pt):
    bdr, dr = pt
    p = p_wrong(n, bdr, dr)
    lo = float(chernoff_lower_bound(n, bdr, dr))
    assert lo <= p * (1 + 1e-9)
    assert lo <= float(chernoff_bound(n, bdr, dr)) * (1 + 1e-9)


@pytest.mark.parametrize("n, m, dr", [(5, 3, 3.0), (11, 3, 3.0), (15, 9, 3.0), (16, 6, -3.0), (29, 7, -3.0),
                                       (30, 27, -3.0)])
def test_lower_bound_steps_past_an_n_t_that_is_an_integer_up_to_rounding(n, m, dr):
    """chernoff_lower_bound at beta delta_ref = log((n - m)/m), i.e. t = sigma(-bdr) = m/n and n t = m, an integer
    that the float n t misses by an ulp (5 * t = 3.0000000000000004 at n = 5, m = 3). The docstring's k* is the count
    nearest to n t *strictly* on the wrong side: m - 1 when bdr + dr > 0, m + 1 when bdr + dr < 0 (m itself is not
    wrong: at n = 5, k = 3 has logit(3/5) > -bdr, so the empirical optimum ranks y_w first). Pinned against the
    method-of-types value written out here, q^k (1-q)^(n-k) / ((k/n)^k (1-k/n)^(n-k)) / (n + 1), and against the exact
    P_n it must not exceed. The `near` test reading nt + round(nt) instead of nt - round(nt) took k = m at these
    points, a "lower bound" up to 9.4x above P_n (n = 5: 0.00938 vs P_5 = 0.000992). (a survivor of mutation)"""
    bdr = math.log((n - m) / m)
    k = m - 1 if bdr + dr > 0 else m + 1
    q = 1.0 / (1.0 + math.exp(-dr))
    log_types = (k * math.log(q) + (n - k) * math.log1p(-q) - k * math.log(k / n) - (n - k) * math.log((n - k) / n))
    want = math.exp(log_types) / (n + 1)
    lo = float(chernoff_lower_bound(n, bdr, dr))
    assert lo == pytest.approx(want, rel=1e-9, abs=0)
    assert lo <= p_wrong(n, bdr, dr)
    assert float(chernoff_lower_bound(np.array([n]), bdr, dr)[0]) == pytest.approx(want, rel=1e-9, abs=0)  # array path


def test_lower_bound_exponent_tends_to_the_upper_bound_exponent():
    # n (exponent gap) = log(n + 1) + n (KL(k*/n || q) - KL(t || q)), the second term at most one step of k in n KL,
    # i.e. |logit(t) - logit(q)| + log terms: bounded by log(n + 1) + 4 at this point (beta delta_ref + dr = 2)
    ns = np.array([10, 100, 1000])  # P_n ~ 1e-119 at n = 1000; float64 underflows beyond a few thousand
    lo, up = chernoff_lower_bound(ns, -1.0, 3.0), chernoff_bound(ns, -1.0, 3.0)
    gap = (np.log(up) - np.log(lo)) / ns
    assert np.all(np.diff(gap) < 0) and np.all(gap * ns <= np.log(ns + 1) + 4)


@given(st.integers(1, 500), finite)
def test_min_winning_count_is_the_threshold_of_the_predicate(n, bdr):
    k0 = min_winning_count(n, bdr)
    assert ranks_first(n, n, bdr)  # all labels for y_w: logit = +inf
    assert not ranks_first(0, n, bdr)
    assert ranks_first(k0, n, bdr) and (k0 == 0 or not ranks_first(k0 - 1, n, bdr))


@pytest.mark.parametrize("eps", [0.1, 0.01, 0.001])
@pytest.mark.parametrize("pt", [(-0.1, 0.5), (-2.0, 3.0), (0.2, -0.1), (-1.0, 3.0)])
def test_n_needed_is_safe_up_to_the_chernoff_n_and_the_step_before_is_not(eps, pt):
    n_ex, n_ch = n_needed(eps, *pt)
    assert 1 <= n_ex <= n_ch
    p = p_wrong_many(np.arange(n_ex, n_ch + 1), *pt)
    assert np.all(p <= eps)
    if n_ex > 1:
        assert p_wrong(n_ex - 1, *pt) > eps
    assert float(chernoff_bound(n_ch, *pt)) <= eps


def test_against_the_human_preference_the_violated_region_converges_to_the_wrong_ranking():
    # dr > 0 > beta delta_ref + dr: pi* (and the many-label optimum) rank y_l first although humans prefer y_w
    assert p_wrong(20000, -2.0, 1.0, against="human") == pytest.approx(1.0, abs=1e-12)
    assert p_wrong(20000, -0.5, 1.0, against="human") == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: p_wrong(0, 0.0, 1.0), "n: must be an integer >= 1"),
    (lambda: p_wrong(3, math.nan, 1.0), "beta_delta_ref: must be a finite number"),
    (lambda: p_wrong(3, 0.0, math.inf), "dr: must be a finite number"),
    (lambda: p_wrong(3, 0.0, 1.0, against="reward"), "against: must be"),
    (lambda: n_needed(0.0, 0.0, 1.0), "eps: must lie in"),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("n", [2, 4, 6])
def test_a_tiny_reference_gap_breaks_the_tie_in_every_implementation(n):
    # beta delta_ref = 1.4e-277 > 0: the 1:1 split ranks y_w first, strictly (found by Hypothesis: an mpmath sum
    # bdr + log 2 - log 2 rounded to 0 at 50 digits and called it a tie).
    bdr, dr = 1.4090190973141722e-277, 1.0
    q = 1 / (1 + math.exp(-dr))
    wrong = sum(math.comb(n, k) * q ** k * (1 - q) ** (n - k) for k in range(n // 2))
    assert p_wrong(n, bdr, dr) == pytest.approx(wrong, rel=1e-12)
    assert float(p_wrong_mpmath(n, bdr, dr)) == pytest.approx(wrong, rel=1e-12)
    assert float(p_wrong_many(np.array([n]), bdr, dr)[0]) == pytest.approx(wrong, rel=1e-10)


def test_p_wrong_at_an_exact_tie_of_pi_star_and_of_the_counts():
    """beta delta_ref = dr = 0: pi* ties the pair, so every count is wrong except the tie k = n/2 (even n), whose
    empirical optimum ties too. Worked by hand: P = 1 - C(n, n/2) / 2^n for even n, 1 for odd n; the vectorised
    p_wrong_many and the scalar p_wrong both give it (a swapped binomial argument in the tie branch gave 1)."""
    ns = np.array([1, 2, 3, 4, 10, 11])
    expected = np.array([1.0 if n % 2 else 1.0 - math.comb(n, n // 2) / 2.0 ** n for n in ns])
    assert expected[1] == 0.5 and expected[3] == 0.625  # n = 2: 1 - 2/4; n = 4: 1 - 6/16
    np.testing.assert_allclose(p_wrong_many(ns, 0.0, 0.0), expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose([p_wrong(int(n), 0.0, 0.0) for n in ns], expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("bdr", [-699.0, -700.0, -800.0, -1e6])
def test_min_winning_count_at_a_billion_labels_and_a_far_reference(bdr):
    """At beta delta_ref <= -700, sigma(-bdr) is 1 in float64 and only k = n ranks y_w first (log(n-1) - log 1 =
    20.7 < 700): the threshold is n, found from the closed form's start, not by walking k up from n/2 (a seed-303 mutant
    of finite_labels.py:62 started there: the same answer after 5e8 predicate calls). Checked against the predicate."""
    n = 10**9
    k = min_winning_count(n, bdr)
    assert k == n
    assert ranks_first(n, n, bdr) and not ranks_first(n - 1, n, bdr)


@pytest.mark.parametrize("bdr, dr", [(0.0, 750.0), (0.0, 1000.0), (-1.0, 1000.0)])
def test_chernoff_bound_past_the_exp_overflow_of_dr(bdr, dr):
    """chernoff_bound at dr beyond 709.78, where e^dr overflows a float: log(1 - q) = -dr - log1p(e^-dr) = -dr to
    rounding, and the bound is exp(-n KL(t || q)) with KL = t log t + (1 - t) log(1 - t) + dr (1 - t) (log q = 0 to
    rounding), t = sigma(-bdr). Worked by hand at bdr = 0 (t = 1/2): KL = dr/2 - log 2, so n = 1 gives 2 e^(-dr/2)
    (here 2 e^-375 = 2.8e-163 and 2 e^-500 = 1.4e-217). The log-space branch for dr >= 700 was reached by no test
    (found while reviewing a survivor of mutation on the line: its cut moved from 700 to 1400 made math.exp(dr) raise
    OverflowError here)."""
    t = 1.0 / (1.0 + math.exp(bdr))
    kl = t * math.log(t) + (1 - t) * math.log(1 - t) + dr * (1 - t)
    if bdr == 0.0:
        assert kl == pytest.approx(dr / 2 - math.log(2), rel=1e-15)
    ns = np.array([1, 2, 5])
    np.testing.assert_allclose(chernoff_bound(ns, bdr, dr), np.exp(-ns * kl), rtol=1e-12, atol=0)
    assert float(chernoff_bound(1, bdr, dr)) > 0.0  # representable: 2 e^-500 = 1.4e-217
    if bdr == 0.0:
        assert float(chernoff_bound(1, bdr, dr)) == pytest.approx(2 * math.exp(-dr / 2), rel=1e-12, abs=0)


@pytest.mark.parametrize("bdr, dr", [(800.0, -1.0), (-800.0, 1.0), (1.0, -800.0), (-1.0, 800.0), (1e4, 2.0),
                                     (-3.0, -1e4), (710.0, -712.0)])
def test_every_function_takes_log_odds_past_the_exp_overflow(bdr, dr):
    """The module takes beta delta_ref and dr as any finite reals; past |x| = 709.78 e^x overflows a float, and
    p_wrong_many, chernoff_bound, chernoff_lower_bound and n_needed raised OverflowError there (sigma written as
    1/(1 + e^-x); found reviewing a survivor of mutation on chernoff_bound's log-space cut, whose dr <= -700 branch
    could not be reached). Now: p_wrong_many equals p_wrong and the 50-digit p_wrong_mpmath, the bounds bracket it,
    and the bound at (1, -800) is worked by hand: q = e^-800 is 0 in float, log q = -800, t = 1/(1 + e), so
    KL = t (log t + 800) + (1 - t) log(1 - t) = 800 t + (1 - t) - log(1 + e) = 214.57, exp(-KL) = 6.5e-94."""
    ns = np.array([1, 2, 5, 20])
    exact = np.array([float(p_wrong_mpmath(int(n), bdr, dr)) for n in ns])
    np.testing.assert_allclose(p_wrong_many(ns, bdr, dr), exact, rtol=1e-9, atol=0)
    np.testing.assert_allclose([p_wrong(int(n), bdr, dr) for n in ns], exact, rtol=1e-9, atol=0)
    assert np.all(chernoff_lower_bound(ns, bdr, dr) <= exact * (1 + 1e-12))
    assert np.all(chernoff_bound(ns, bdr, dr) >= exact * (1 - 1e-12))
    if (bdr, dr) == (1.0, -800.0):
        t = 1 / (1 + math.e)
        kl = 800 * t + (1 - t) - math.log1p(math.e)
        assert kl == pytest.approx(214.57, abs=0.01) and math.exp(-kl) == pytest.approx(6.5e-94, rel=1e-2, abs=0)
        np.testing.assert_allclose(chernoff_bound(ns, bdr, dr), np.exp(-ns * kl), rtol=1e-12, atol=0)
    n_ex, n_ch = n_needed(0.01, bdr, dr)
    if n_ch is not None:  # the guarantee and the exact count, as everywhere: P_n <= 0.01 from n_exact on
        assert n_ex <= n_ch and float(chernoff_bound(n_ch, bdr, dr)) <= 0.01
        assert np.all(p_wrong_many(np.arange(n_ex, n_ch + 1), bdr, dr) <= 0.01)
    if abs(bdr) > 700:  # t = sigma(-bdr) is 0 or 1 in float: one win ranks y_w first, or only all five do
        assert min_winning_count(5, bdr) == (1 if bdr > 0 else 5)


def test_n_needed_where_one_label_is_already_safe():
    """bdr = -3, dr = -1e4: pi* ranks y_l first and q = sigma(-1e4) is 0 in float, so every label says y_l and no n
    ranks the pair wrong: n_exact = n_chernoff = 1 (KL = 1e4 (1 - t) + ... is huge). n_needed took log(exp(-KL)) =
    log(0) and raised a math domain error."""
    assert n_needed(0.01, -3.0, -1e4) == (1, 1)
    assert n_needed(0.01, 3.0, 1e4) == (1, 1)


def test_p_wrong_many_settles_a_float_tie_just_above_the_threshold():
    """Pins p_wrong_many's upward step `k0 <= ns & not ranks_first(k0)` (a survivor of mutation:
    finite_labels.py:151 `k0 <= ns` -> `k0 >= ns` survived; it only acts at k0 = n). bdr = log 5 - log 7, n = 12:
    logit(7/12) = log 7 - log 5 = -bdr, so k = 7 is a tie (empirical_sign 0, checked below) and k0 = 8, while
    floor(12 sigma(-bdr)) + 1 = 7 needs the step up. pi* ranks y_w first (bdr + dr > 0 at dr = 0.7), so the wrong
    counts are k <= 7 (the tie included): P = sum_{k<=7} C(12, k) q^k (1-q)^(12-k), q = sigma(0.7), by hand below
    (= 0.36413; the mutant gave 0.17469 = P(k <= 6)). Also at n = 13, bdr = log 7 - log 6 (k = 6 ties)."""
    from toy_bandits.finite_labels import empirical_sign

    for n, kt, bdr in ((12, 7, math.log(5) - math.log(7)), (13, 6, math.log(7) - math.log(6))):
        assert int(empirical_sign(kt, n, bdr)) == 0  # the float predicate ties at k = kt
        q = 1.0 / (1.0 + math.exp(-0.7))
        want = sum(math.comb(n, k) * q ** k * (1 - q) ** (n - k) for k in range(kt + 1))
        got = p_wrong_many(np.array([n]), bdr, 0.7)[0]
        assert got == pytest.approx(want, rel=1e-12)
        assert p_wrong(n, bdr, 0.7) == pytest.approx(want, rel=1e-12)
