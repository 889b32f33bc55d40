"""Validated bandit instances: one prompt with a preference graph, or a batch of single-pair prompts.

A bandit instance (docs/theory.md §1-§9) is a reference policy ``pi_ref`` over K responses, a
reward ``r``, ``beta > 0``, a list of preference pairs ``(winner, loser)`` (indices into the
responses; any directed graph: one pair, a chain, a DAG, a cycle) and a margin ``m >= 0``
for the constraints ``delta_pi >= m`` of constrained RLHF (docs/theory.md §9a).

Every bad field raises ``ValueError`` whose message starts with the field name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

# |sum(pi_ref) - 1| allowed; within it pi_ref is renormalised to sum to 1 exactly.
SUM_TOL = 1e-6
JSON_KEYS = ("pi_ref", "reward", "beta", "preferences", "margin")
# The numeric domain the solvers are exact on in float64 (each bound says what it protects):
MAX_ABS_REWARD = 1e300  # reward differences r(w) - r(l) and the multipliers (reward units) stay finite
MAX_MARGIN = 700.0  # e^m stays finite (e^709.8 overflows): the linear constraint pi(w) >= e^m pi(l) is representable
MIN_BETA, MAX_BETA = 1e-300, 1e300  # beta and 1/beta are normal floats; r/beta may still overflow (handled in log space)
MESSAGE_CHARS = 60  # a value echoed in an error message is cut to this many characters


def short(value: Any, limit: int = MESSAGE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a 400-digit value does not flood a one-line message."""
    text = "null" if value is None else repr(value)
    return text if len(text) <= limit else f"{text[:limit - 14]}...({len(text)} chars)"


def number(name: str, value: Any) -> float:
    """A JSON number as a float: booleans, strings, null and non-finite values are errors naming ``name``.

    JSON has no NaN or Infinity; Python's json module still reads them (and 1e400 as inf), so
    they are rejected here. An integer beyond the float range is rejected too.
    """
    if value is None:
        raise ValueError(f"{name}: must be a number, got null")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: must be a number, got {type(value).__name__} {short(value)}")
    try:
        out = float(value)
    except OverflowError:
        raise ValueError(f"{name}: {short(value)} is beyond the float64 range") from None
    if not math.isfinite(out):
        raise ValueError(f"{name}: must be finite, got {out}")
    return out


def _float_vector(name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        arr = np.array(value, dtype=np.float64)
    elif isinstance(value, (list, tuple, np.ndarray)):
        arr = np.array([number(f"{name}[{i}]", v) for i, v in enumerate(value)], dtype=np.float64)
    else:
        raise ValueError(f"{name}: must be a list of numbers, got {type(value).__name__} {short(value)}")
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"{name}: must be a 1-d list of at least 2 numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        i = int(np.argmax(~np.isfinite(arr)))
        raise ValueError(f"{name}[{i}]: must be finite (no NaN or inf), got {arr[i]}")
    return arr


def _positive_finite(name: str, value: Any) -> float:
    value = number(name, value)
    if value <= 0:
        raise ValueError(f"{name}: must be finite and > 0, got {value}")
    return value


def _check_pi_ref(name: str, pi_ref: np.ndarray, axis: int = -1) -> np.ndarray:
    if np.any(pi_ref <= 0):
        raise ValueError(f"{name}: must have full support (every entry > 0), got min {pi_ref.min()}")
    # summed in sorted order, so the renormalised entries do not depend on the order of the responses
    sums = np.sort(pi_ref, axis=axis).sum(axis=axis, keepdims=True)
    if np.any(np.abs(sums - 1.0) > SUM_TOL):
        raise ValueError(f"{name}: must sum to 1 within {SUM_TOL}, got sum(s) {np.ravel(sums)[:5].tolist()}")
    return pi_ref / sums


def _pairs(value: Any, k: int) -> tuple[tuple[int, int], ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"preferences: must be a list of [winner, loser] index pairs, got {short(value)}")
    pairs = []
    for i, pair in enumerate(value):
        try:
            w, l = pair
        except (TypeError, ValueError):
            raise ValueError(f"preferences[{i}]: must be a [winner, loser] pair, got {short(pair)}") from None
        for name, v in (("winner", w), ("loser", l)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"preferences[{i}]: {name} must be an integer index, got {short(v)}")
            if not 0 <= v < k:
                raise ValueError(f"preferences[{i}]: {name} index {v} is out of range [0, {k})")
        if w == l:
            raise ValueError(f"preferences[{i}]: self-pair ({w}, {l}) compares a response with itself")
        pairs.append((int(w), int(l)))
    if len(set(pairs)) != len(pairs):
        dup = next(p for p in pairs if pairs.count(p) > 1)
        raise ValueError(f"preferences: pair {dup} is listed more than once")
    return tuple(pairs)


def check_json_object(data: Any, valid_keys: Sequence[str]) -> None:
    """A ValueError unless ``data`` is a JSON object whose keys are all in ``valid_keys`` (the instance kinds
    of ``solve`` share this first check)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"instance: must be a JSON object with keys {list(valid_keys)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(valid_keys))
    if unknown:
        raise ValueError(f"instance: unknown key(s) {unknown}; valid keys: {list(valid_keys)}")


@dataclass(frozen=True)
class BanditInstance:
    """One prompt: K responses, a preference graph and a margin (docs/theory.md §1, §9a).

    pi_ref: (K,) reference policy, every entry > 0, sums to 1 within ``SUM_TOL`` (then
        renormalised exactly). K >= 2.
    reward: (K,) finite rewards r(y).
    beta: KL weight, finite, > 0.
    preferences: (winner, loser) index pairs, any directed graph (cycles allowed here; the
        constrained solver rejects a cycle when margin > 0). No self-pairs, no duplicates.
        May be empty.
    margin: m >= 0, finite: the constraints are delta_pi >= m for every pair.
    """

    pi_ref: np.ndarray
    reward: np.ndarray
    beta: float
    preferences: tuple[tuple[int, int], ...]
    margin: float

    def __post_init__(self) -> None:
        pi_ref = _check_pi_ref("pi_ref", _float_vector("pi_ref", self.pi_ref))
        reward = _float_vector("reward", self.reward)
        if reward.shape != pi_ref.shape:
            raise ValueError(f"reward: must have the shape of pi_ref {pi_ref.shape}, got {reward.shape}")
        if np.max(np.abs(reward)) > MAX_ABS_REWARD:
            i = int(np.argmax(np.abs(reward)))
            raise ValueError(f"reward[{i}]: |r| must be <= {MAX_ABS_REWARD:g} so that reward differences and the "
                             f"multipliers stay finite in float64 (rescale the rewards and beta together), got {reward[i]}")
        beta = _positive_finite("beta", self.beta)
        if not MIN_BETA <= beta <= MAX_BETA:
            raise ValueError(f"beta: must lie in [{MIN_BETA:g}, {MAX_BETA:g}] (beta and 1/beta finite), got {beta}")
        margin = number("margin", self.margin)
        if margin < 0 or margin > MAX_MARGIN:
            raise ValueError(f"margin: must lie in [0, {MAX_MARGIN:g}] (e^m must be finite), got {margin}")
        pairs = _pairs(self.preferences, pi_ref.size)
        pi_ref.flags.writeable = False
        reward.flags.writeable = False
        for name, value in (("pi_ref", pi_ref), ("reward", reward), ("beta", beta), ("preferences", pairs),
                            ("margin", margin)):
            object.__setattr__(self, name, value)

    @property
    def K(self) -> int:  # noqa: N802 (the paper's name)
        return int(self.pi_ref.size)

    @property
    def winners(self) -> np.ndarray:
        return np.array([w for w, _ in self.preferences], dtype=np.int64)

    @property
    def losers(self) -> np.ndarray:
        return np.array([l for _, l in self.preferences], dtype=np.int64)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "BanditInstance":
        """From ``{"pi_ref": [...], "reward": [...], "beta": b, "preferences": [[w, l], ...], "margin": m}``.

        Every key is required (beta and margin change the answer: no silent default); unknown
        keys are an error.
        """
        check_json_object(data, JSON_KEYS)
        missing = [k for k in JSON_KEYS if k not in data]
        if missing:
            raise ValueError(f"{missing[0]}: missing (required keys: {list(JSON_KEYS)})")
        return cls(pi_ref=data["pi_ref"], reward=data["reward"], beta=data["beta"],
                   preferences=data["preferences"], margin=data["margin"])

    def to_json(self) -> dict[str, Any]:
        return {"pi_ref": self.pi_ref.tolist(), "reward": self.reward.tolist(), "beta": self.beta,
                "preferences": [list(p) for p in self.preferences], "margin": self.margin}


@dataclass(frozen=True)
class PairBatch:
    """N single-pair instances (one prompt each), for vectorised closed forms (docs/theory.md §9a).

    pi_ref: (N, K), rows > 0 summing to 1 within ``SUM_TOL`` (renormalised). reward: (N, K)
    finite. beta: (N,) finite > 0 (a scalar broadcasts). winner, loser: (N,) integer indices in
    [0, K), winner != loser. margin: (N,) finite >= 0 (a scalar broadcasts).
    """

    pi_ref: np.ndarray
    reward: np.ndarray
    beta: np.ndarray
    winner: np.ndarray
    loser: np.ndarray
    margin: np.ndarray

    def __post_init__(self) -> None:
        pi_ref = np.asarray(self.pi_ref, dtype=np.float64)
        if pi_ref.ndim != 2 or pi_ref.shape[1] < 2:
            raise ValueError(f"pi_ref: must have shape (N, K) with K >= 2, got {pi_ref.shape}")
        if not np.all(np.isfinite(pi_ref)):
            raise ValueError("pi_ref: must be finite (no NaN or inf)")
        pi_ref = _check_pi_ref("pi_ref", pi_ref, axis=1)
        n, k = pi_ref.shape
        reward = np.asarray(self.reward, dtype=np.float64)
        if reward.shape != (n, k):
            raise ValueError(f"reward: must have shape {(n, k)}, got {reward.shape}")
        if not np.all(np.isfinite(reward)):
            raise ValueError("reward: must be finite (no NaN or inf)")
        out = {"pi_ref": pi_ref, "reward": reward}
        for name, lower_ok in (("beta", False), ("margin", True)):
            try:
                v = np.broadcast_to(np.asarray(getattr(self, name), dtype=np.float64), (n,)).copy()
            except ValueError:
                raise ValueError(f"{name}: must be a scalar or have shape ({n},)") from None
            bad = ~np.isfinite(v) | ((v < 0) if lower_ok else (v <= 0))
            if np.any(bad):
                i = int(np.argmax(bad))
                raise ValueError(f"{name}: must be finite and {'>= 0' if lower_ok else '> 0'}, got {v[i]} at row {i}")
            out[name] = v
        for name in ("winner", "loser"):
            v = np.asarray(getattr(self, name))
            if v.shape != (n,) or not np.issubdtype(v.dtype, np.integer):
                raise ValueError(f"{name}: must be an integer array of shape ({n},), got {v.dtype} {v.shape}")
            if np.any((v < 0) | (v >= k)):
                raise ValueError(f"{name}: indices must lie in [0, {k})")
            out[name] = v.astype(np.int64)
        if np.any(out["winner"] == out["loser"]):
            i = int(np.argmax(out["winner"] == out["loser"]))
            raise ValueError(f"winner: equals loser at row {i} (a self-pair)")
        for name, value in out.items():
            value.flags.writeable = False
            object.__setattr__(self, name, value)

    @property
    def N(self) -> int:  # noqa: N802
        return int(self.pi_ref.shape[0])

    @property
    def K(self) -> int:  # noqa: N802
        return int(self.pi_ref.shape[1])

    def instance(self, i: int) -> BanditInstance:
        """Row i as a :class:`BanditInstance` with its one pair."""
        return BanditInstance(self.pi_ref[i], self.reward[i], float(self.beta[i]),
                              [(int(self.winner[i]), int(self.loser[i]))], float(self.margin[i]))

    @classmethod
    def from_instances(cls, instances: list[BanditInstance]) -> "PairBatch":
        """Stack single-pair instances of equal K."""
        if not instances or any(len(x.preferences) != 1 for x in instances):
            raise ValueError("preferences: every instance of a PairBatch must have exactly one pair")
        return cls(np.stack([x.pi_ref for x in instances]), np.stack([x.reward for x in instances]),
                   np.array([x.beta for x in instances]), np.array([x.preferences[0][0] for x in instances]),
                   np.array([x.preferences[0][1] for x in instances]), np.array([x.margin for x in instances]))
