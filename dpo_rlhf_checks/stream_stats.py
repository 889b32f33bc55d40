"""Exact statistics of a stream of float64 chunks in memory that does not grow with its length.

Used by ``paper_checks.py audit`` so that a file of any number of rows is audited with the numbers
of the in-memory computation: :class:`ExactQuantiles` returns ``np.quantile(x, q)`` (the default
``linear`` method) and ``min``/``max``, equal to numpy's (``==``; only the sign of a zero can
differ: numpy may return -0.0 where this returns 0.0); its ``mean`` is the sum of per-chunk
``np.sum`` added exactly (``math.fsum``), divided by the count.

How: a quantile of the linear method interpolates between two order statistics ``x_(k)`` and
``x_(k+1)``, ``k = floor((n - 1) q)``. Each float64 maps to an unsigned 64-bit key with the same
order (:func:`sort_keys`). Pass 1 counts the keys' top 16 bits in a 65,536-bin histogram, which
names the bin holding each wanted rank and its rank inside that bin. Each further pass either
collects the values of a bin once it holds at most ``collect_max`` values (then ``np.partition``
picks the rank exactly) or counts the next 16 bits inside it. After four histograms every bit is
known, so at most four passes are needed. Memory holds at most ``collect_max`` values and one
65,536-bin histogram per wanted rank (two ranks per quantile), whatever the length of the stream.
The interpolation itself is ``np.quantile`` on the pair ``[x_(k), x_(k+1)]`` at the fraction numpy
computes, so it is numpy's own.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

QUANTILES = {"min": 0.0, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "max": 1.0}
COLLECT_MAX = 1 << 16  # values gathered at most per bin (512 kB of float64), else the bin is split by 16 more bits
_DIGIT = 16
_SIGN = np.uint64(1 << 63)


def sort_keys(x: np.ndarray) -> np.ndarray:
    """uint64 keys (n,) ordered as the float64 values x (n,) are; -0.0 gets the key of 0.0. x without NaN."""
    u = (np.asarray(x, dtype=np.float64) + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
    return np.where(u & _SIGN, ~u, u | _SIGN)


def key_value(key: int) -> float:
    """The float64 whose :func:`sort_keys` key is ``key`` (the inverse)."""
    k = np.uint64(key)
    u = k & ~_SIGN if k & _SIGN else ~k
    return float(np.array([u], dtype=np.uint64).view(np.float64)[0])


def exact_sum(chunk_sums: Iterable[float]) -> float:
    """The chunk sums added exactly (``math.fsum``); with an inf or NaN among them, as floats add them."""
    sums = list(chunk_sums)
    try:
        return math.fsum(sums)
    except (OverflowError, ValueError):  # an intermediate overflow, or inf - inf
        return float(np.sum(sums))


class _Bin:
    """The values whose top ``64 - shift`` key bits equal ``prefix``; the wanted ranks inside them."""

    def __init__(self, prefix: int, shift: int, count: int, ranks: dict[int, int], collect_max: int):
        self.prefix, self.shift, self.count, self.ranks = prefix, shift, count, ranks  # ranks: global -> in-bin
        self.collect = count <= collect_max
        self.parts: list[np.ndarray] = []
        self.hist = None if self.collect else np.zeros(1 << _DIGIT, dtype=np.int64)

    def update(self, keys: np.ndarray, x: np.ndarray) -> None:
        inside = (keys >> np.uint64(self.shift)) == np.uint64(self.prefix) if self.shift < 64 else slice(None)
        if self.collect:
            self.parts.append(x[inside])
        else:
            digit = (keys[inside] >> np.uint64(self.shift - _DIGIT)) & np.uint64((1 << _DIGIT) - 1)
            self.hist += np.bincount(digit.astype(np.intp), minlength=1 << _DIGIT)


def _split(hist: np.ndarray, prefix: int, shift: int, ranks: dict[int, int], collect_max: int,
           values: dict[int, float]) -> list[_Bin]:
    """The sub-bins (``shift - 16``) holding the ranks, from the bin's histogram of the next 16 bits.

    A sub-bin whose every key bit is known has one value, written to ``values`` at once.
    """
    cum = np.cumsum(hist)
    shift -= _DIGIT
    by_digit: dict[int, dict[int, int]] = {}
    for rank, inside in ranks.items():
        d = int(np.searchsorted(cum, inside, side="right"))
        by_digit.setdefault(d, {})[rank] = inside - (int(cum[d - 1]) if d else 0)
    bins = []
    for d, sub in by_digit.items():
        sub_prefix = (prefix << _DIGIT) | d
        if shift == 0:  # all 64 bits known: every value in the bin is the same float
            values.update({rank: key_value(sub_prefix) for rank in sub})
        else:
            bins.append(_Bin(sub_prefix, shift, int(hist[d]), sub, collect_max))
    return bins


class ExactQuantiles:
    """``np.quantile(x, q)`` for each q, ``min``, ``max`` and the mean of a stream of chunks, exactly.

    Feed the same chunks, in the same order, in every pass: ``for chunk in chunks: acc.update(chunk)``
    then ``acc.end_pass()``, while ``acc.pending``. Then ``acc.result()``.

    qs: name -> q in [0, 1] (default :data:`QUANTILES`). n: the stream's length when known (a stream of
    at most ``collect_max`` values then needs one pass). collect_max: values gathered per bin at most
    (default :data:`COLLECT_MAX`).
    A NaN anywhere makes every number NaN, as numpy's do; an empty stream has none (ValueError).
    """

    def __init__(self, qs: dict[str, float] | None = None, *, n: int | None = None, collect_max: int | None = None):
        self.qs = dict(QUANTILES if qs is None else qs)
        collect_max = COLLECT_MAX if collect_max is None else collect_max
        for name, q in self.qs.items():
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile {name!r} must lie in [0, 1], got {q!r}")
        if isinstance(collect_max, bool) or not isinstance(collect_max, (int, np.integer)) or collect_max < 1:
            raise ValueError(f"collect_max must be an integer >= 1, got {collect_max!r}")
        self.collect_max = collect_max
        self.n_expected = n
        self.n = 0
        self.nan = 0
        self.sums: list[float] = []
        self.lo, self.hi = math.inf, -math.inf
        self.values: dict[int, float] = {}  # rank -> the order statistic x_(rank)
        self.passes = 0
        self.largest_held = 0  # the most values gathered at once: <= collect_max per wanted rank, not by n
        self._first = True
        ranks = self._ranks(n) if n is not None and n <= collect_max else None
        # Pass 1: all values when n is known to be small, else the top 16 bits of every key.
        self.bins = [_Bin(0, 64, n, {r: r for r in ranks}, collect_max)] if ranks is not None else []
        self.hist = None if ranks is not None else np.zeros(1 << _DIGIT, dtype=np.int64)

    def _pairs(self, n: int) -> dict[str, tuple[int, int, float]]:
        """name -> (k, k + 1, fraction): the order statistics numpy interpolates between, and its fraction.

        As ``np.quantile``: virtual index ``v = (n - 1) q``, ``k = floor(v)``, fraction ``v - k``; at or past
        the last index, the last value twice (numpy's fraction there only matters for inf, which gives NaN).
        """
        pairs = {}
        for name, q in self.qs.items():
            virtual = (n - 1) * q
            if virtual >= n - 1:
                pairs[name] = (n - 1, n - 1, 1.0)
            else:
                k = int(math.floor(virtual))
                pairs[name] = (k, k + 1, virtual - k)
        return pairs

    def _ranks(self, n: int) -> set[int]:
        """The 0-based ranks of the order statistics the quantiles need."""
        return {r for k, k1, _ in self._pairs(n).values() for r in (k, k1)}

    @property
    def pending(self) -> bool:
        """Whether another pass over the same chunks is needed."""
        return self._first or bool(self.bins)

    def update(self, x: np.ndarray) -> None:
        """One chunk (1-D float64) of the current pass."""
        x = np.asarray(x, dtype=np.float64).ravel()
        if self._first:
            self.n += x.size
            if x.size:
                nan = np.isnan(x)
                self.nan += int(nan.sum())
                finite_or_inf = x[~nan] if self.nan else x
                if finite_or_inf.size:
                    self.lo = min(self.lo, float(finite_or_inf.min()))
                    self.hi = max(self.hi, float(finite_or_inf.max()))
                self.sums.append(float(np.sum(x)))
            if self.nan:
                return
            if self.hist is not None:
                top = (sort_keys(x) >> np.uint64(64 - _DIGIT)).astype(np.intp)
                self.hist += np.bincount(top, minlength=1 << _DIGIT)
                return
        if self.nan or not self.bins or not x.size:
            return
        keys = sort_keys(x)
        x = x + 0.0  # the values as keyed (-0.0 as 0.0)
        for b in self.bins:
            b.update(keys, x)
        held = sum(sum(p.size for p in b.parts) for b in self.bins)
        self.largest_held = max(self.largest_held, held)

    def end_pass(self) -> None:
        """Close the current pass: settle what it decided, and plan the next one if needed."""
        self.passes += 1
        if self._first:
            self._first = False
            if self.n_expected is not None and self.n != self.n_expected:
                raise ValueError(f"the stream had {self.n} values, {self.n_expected} were announced")
            if self.n == 0:
                raise ValueError("no values: the quantiles of an empty stream are undefined")
            if self.nan:
                self.bins, self.hist = [], None
                return
            # The extremes are known: x_(0) = min, x_(n-1) = max (as keyed, -0.0 as 0.0).
            self.values.update({0: self.lo + 0.0, self.n - 1: self.hi + 0.0})
            if self.hist is not None:
                ranks = {r: r for r in self._ranks(self.n) if r not in (0, self.n - 1)}
                self.bins = _split(self.hist, 0, 64, ranks, self.collect_max, self.values)
                self.hist = None
                return
        next_bins = []
        for b in self.bins:
            if b.collect:
                held = np.concatenate(b.parts) if b.parts else np.empty(0)
                if held.size != b.count:
                    raise RuntimeError(f"a pass saw {held.size} values in a bin that held {b.count}: the chunks "
                                       "must be the same in every pass")
                inside = sorted(set(b.ranks.values()))
                ordered = np.partition(held, inside)
                self.values.update({rank: float(ordered[i]) for rank, i in b.ranks.items()})
            else:
                if int(b.hist.sum()) != b.count:
                    raise RuntimeError(f"a pass saw {int(b.hist.sum())} values in a bin that held {b.count}: the "
                                       "chunks must be the same in every pass")
                next_bins += _split(b.hist, b.prefix, b.shift, b.ranks, self.collect_max, self.values)
        self.bins = next_bins

    def result(self) -> dict[str, float]:
        """name -> value for each quantile, then ``mean``; every pass must be done."""
        if self.pending:
            raise RuntimeError("ExactQuantiles.result() before the last pass")
        mean = exact_sum(self.sums) / self.n
        if self.nan:
            return {**{name: math.nan for name in self.qs}, "mean": math.nan}
        out = {}
        for name, (k, k1, fraction) in self._pairs(self.n).items():
            pair = np.array([self.values[k], self.values[k1]])
            # numpy's own interpolation at numpy's fraction: on [a, b], q' = fraction gives virtual index q'.
            out[name] = float(np.quantile(pair, fraction))
        out["mean"] = mean
        return out
