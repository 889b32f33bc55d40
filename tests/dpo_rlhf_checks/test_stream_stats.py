"""Exact streamed quantiles (dpo_rlhf_checks.stream_stats): equal (==) to np.quantile, in bounded memory.

Equal, not bit for bit: numpy may return -0.0 where the stream returns 0.0 (the sign of a zero is all that differs).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dpo_rlhf_checks import stream_stats as S

QS = list(S.QUANTILES.values())


def run(x: np.ndarray, chunk: int, collect_max: int, *, announce: bool = False) -> S.ExactQuantiles:
    acc = S.ExactQuantiles(n=len(x) if announce else None, collect_max=collect_max)
    while acc.pending:
        for i in range(0, len(x), chunk):
            acc.update(x[i:i + chunk])
        acc.end_pass()
    return acc


def numpy_reference(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # numpy's own interpolation at an inf warns (and gives NaN); so must ours
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.quantile(x, QS)


# Values with ties, signed zeros, infinities, subnormals and both huge and tiny magnitudes.
values = st.one_of(
    st.floats(allow_nan=False, width=64),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, math.inf, -math.inf, 5e-324, -5e-324, 1e308, -1e308]),
)


@settings(max_examples=settings.default.max_examples)
@given(st.lists(values, min_size=1, max_size=400), st.integers(1, 60), st.integers(1, 30), st.booleans())
@example([1.0, math.inf], 1, 1, False)  # numpy's min here is NaN (its lerp of -inf/inf by 0): ours must be too
@example([-0.0, 0.0, -0.0], 2, 1, True)
@example([0.1] * 300, 7, 3, False)  # one value repeated past collect_max: settled by all 64 key bits
@example([1.0, 1e308, -1e308], 1, 1, False)  # numpy's pairwise mean is 0 here, the exact (and our) mean 1/3
def test_equals_numpy_quantile(xs, chunk, collect_max, announce):
    x = np.array(xs)
    with warnings.catch_warnings():  # at an inf both numpy and ours warn (inf - inf); the values are compared
        warnings.simplefilter("ignore", RuntimeWarning)
        acc = run(x, chunk, collect_max, announce=announce)
        got = acc.result()
    ours = np.array([got[k] for k in S.QUANTILES])
    assert np.array_equal(ours, numpy_reference(x), equal_nan=True), (ours, numpy_reference(x))
    assert acc.passes <= 4
    # The mean adds per-chunk np.sum exactly (math.fsum): its error is that of the chunk sums, at most about
    # chunk * eps * sum|x|, against the exact mean (fsum of all values). numpy's pairwise mean has the same kind of
    # bound, not a smaller one: on [1, 1e308, -1e308] numpy gives 0, the exact mean is 1/3.
    with np.errstate(all="ignore"):
        overflow_possible = bool(np.max(np.abs(x)) * len(x) > 1e307)
    if np.isfinite(x).all() and not overflow_possible:
        exact = math.fsum(xs) / len(xs)
        bound = chunk * 2.3e-16 * math.fsum(abs(v) for v in xs) / len(xs)
        assert abs(got["mean"] - exact) <= bound, (got["mean"], exact, bound)
        if chunk >= len(xs):  # one chunk: numpy's own sum
            assert got["mean"] == np.mean(x)
    elif not overflow_possible:  # an inf among the values: inf, -inf or NaN, as numpy's
        with np.errstate(all="ignore"):
            assert np.array_equal([got["mean"]], [np.mean(x)], equal_nan=True)


@settings(max_examples=settings.default.max_examples)
@given(st.lists(st.floats(allow_nan=False, width=64), min_size=2, max_size=50))
@example([-0.0, 1.0, 0.0, -math.inf])
def test_keys_keep_the_order_and_invert(xs):
    x = np.array(xs)
    keys = S.sort_keys(x)
    order = np.argsort(keys, kind="stable")
    assert np.array_equal(x[order], np.sort(x))  # the key order is the value order (-0.0 == 0.0)
    back = np.array([S.key_value(int(k)) for k in keys])
    assert np.array_equal(back, x)  # the inverse, with -0.0 read back as 0.0
    assert not np.signbit(back[back == 0]).any()


@pytest.mark.parametrize("dist", ["normal", "lognormal", "ties"])
def test_memory_is_bounded_by_collect_max_not_by_n(dist):
    rng = np.random.default_rng(0)
    n = 200_000
    x = {"normal": rng.normal(size=n), "lognormal": np.exp(rng.normal(scale=20, size=n)),
         "ties": rng.integers(0, 4, size=n).astype(float)}[dist]
    acc = run(x, 4096, 256)
    ours = np.array([acc.result()[k] for k in S.QUANTILES])
    assert np.array_equal(ours, np.quantile(x, QS))
    # At most 2 order statistics per quantile are tracked; each bin gathers <= collect_max values.
    assert acc.largest_held <= 2 * len(S.QUANTILES) * 256
    assert 2 <= acc.passes <= 4


def test_largest_held_counts_the_values_gathered_worked_by_hand():
    """Pins ``largest_held``, the one measurement behind the memory bound above (a survivor of mutation:
    ``max(largest_held, held)`` -> ``min`` kept it at 0, so ``largest_held <= bound`` could not fail).

    1000 distinct values in [1, 1.06): all share the top 16 key bits (sign, exponent, 4 mantissa bits), so pass 1's
    histogram has one bucket of 1000. With collect_max = 1000 that bucket is gathered whole in pass 2: 1000 held.
    With collect_max = 999 pass 2 histograms the next 16 bits instead (the values are 6e-5 apart, a sub-bucket is
    2^-20 = 9.5e-7 wide: one value each), and pass 3 gathers one value per wanted rank: the ranks numpy
    interpolates between, (n - 1) q -> {0, 1, 49, 50, 249, 250, 499, 500, 749, 750, 949, 950, 999}, less the two
    extremes known from pass 1: 11 held.
    """
    x = np.random.default_rng(3).permutation(1.0 + np.arange(1000) / 1000 * 0.06)
    for collect_max, held, passes in ((1000, 1000, 2), (999, 11, 3)):
        acc = run(x, 64, collect_max)
        assert np.array_equal([acc.result()[k] for k in S.QUANTILES], np.quantile(x, QS))
        assert (acc.largest_held, acc.passes) == (held, passes)
    acc = run(x, 64, 1000, announce=True)  # n announced and <= collect_max: one pass, every value gathered
    assert (acc.largest_held, acc.passes) == (1000, 1)


def test_single_chunk_mean_is_numpys():
    x = np.random.default_rng(1).normal(size=10_001)
    assert run(x, len(x), 64).result()["mean"] == np.mean(x)


def test_nan_makes_every_number_nan():
    x = np.array([1.0, 2.0, np.nan, 3.0])
    got = run(x, 2, 1).result()
    assert all(math.isnan(v) for v in got.values())
    assert np.isnan(numpy_reference(x)).all()


def test_misuse_is_a_clear_error():
    with pytest.raises(ValueError, match="empty stream"):
        run(np.empty(0), 3, 1)
    acc = S.ExactQuantiles(n=5)
    acc.update(np.ones(4))
    with pytest.raises(ValueError, match="had 4 values, 5 were announced"):
        acc.end_pass()
    acc = S.ExactQuantiles(collect_max=2)
    acc.update(np.arange(100.0))
    acc.end_pass()
    acc.update(np.arange(50.0))  # not the same chunks as pass 1
    with pytest.raises(RuntimeError, match="same in every pass"):
        acc.end_pass()
    with pytest.raises(RuntimeError, match="before the last pass"):
        S.ExactQuantiles().result()
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        S.ExactQuantiles({"bad": 1.5})


@pytest.mark.parametrize("bad", [0, -3, 0.5, 2.5, True, "8", None])
def test_collect_max_must_be_a_positive_integer(bad):
    """A count of values per bin: 0.5 was accepted when the check was 'collect_max < 1' read loosely (a survivor of
    mutation, < 0.5, let it through), and 2.5 or True always were. None is the default (COLLECT_MAX)."""
    if bad is None:
        assert S.ExactQuantiles(collect_max=None).collect_max == S.COLLECT_MAX
        return
    with pytest.raises(ValueError, match="collect_max must be an integer >= 1"):
        S.ExactQuantiles(collect_max=bad)
