"""Outputs that methods share and the runner writes once, from the state the last of them left.

A method that promises a file several methods write alike (the LM stage's figures and records: each LM method used
to redraw them after its own look, five times a run) registers the writer here under a key and returns the paths.
A later registration under the same key replaces an earlier one (only the last state is written). The runner marks
what is pending with the claim whose methods registered it (:func:`own`) and writes it: after that claim when a
claim runs alone (:func:`dpo_rlhf_checks.report.run_claim`), once after every claim of a run
(:func:`dpo_rlhf_checks.report.run_claims`); a writer that raises makes the claims that own it errors.
"""

from __future__ import annotations

from typing import Callable, Hashable

_PENDING: dict[Hashable, tuple[Callable[[], object], set[str]]] = {}
_REGISTERED: dict[Hashable, int] = {}  # key -> the registration count when it was last registered
_COUNT = [0]


def defer(key: Hashable, write: Callable[[], object]) -> None:
    """Register ``write`` for the next :func:`flush`, replacing whatever was registered under ``key`` (its owners
    stay owners)."""
    _, owners = _PENDING.pop(key, (None, set()))
    _PENDING[key] = (write, owners)
    _COUNT[0] += 1
    _REGISTERED[key] = _COUNT[0]


def mark() -> int:
    """The registration count now: :func:`own` with it marks only what is registered after this call."""
    return _COUNT[0]


def own(claim_id: str, since: int = 0) -> None:
    """Mark the pending writers registered (or re-registered) after ``since`` (a :func:`mark`) as owned by
    ``claim_id``: its methods asked for them. A writer left over from a method called outside any claim is not
    the claim's."""
    for key, (_, owners) in _PENDING.items():
        if _REGISTERED.get(key, 0) > since:
            owners.add(claim_id)


def pending() -> int:
    """How many writers wait for the next flush."""
    return len(_PENDING)


def flush() -> dict[str, str]:
    """Run every pending writer once, in registration order, and forget them all. Returns claim id -> the error of a
    writer it owns that raised (every writer runs; empty when none raised)."""
    writers = list(_PENDING.values())
    _PENDING.clear()
    _REGISTERED.clear()
    errors: dict[str, str] = {}
    for write, owners in writers:
        try:
            write()
        except Exception as err:  # reported on the owning claims by the runner
            for owner in owners:
                errors.setdefault(owner, f"{type(err).__name__}: {err}")
    return errors
