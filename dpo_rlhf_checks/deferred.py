"""Outputs that methods share and the runner writes once: after the claim whose methods asked for them.

A method that promises a file several methods of a claim write alike (the LM stage's figures and records: each LM
method used to redraw them after its own look, five times a run) registers the writer here under a key and
returns the paths; :func:`dpo_rlhf_checks.report.run_claim` calls :func:`flush` when the claim's methods are done,
so each key is written once per claim, from the state the last method left. A later registration under the same
key replaces an earlier one (only the last state is written).
"""

from __future__ import annotations

from typing import Callable, Hashable

_PENDING: dict[Hashable, Callable[[], object]] = {}


def defer(key: Hashable, write: Callable[[], object]) -> None:
    """Register ``write`` to run at the next :func:`flush`, replacing whatever was registered under ``key``."""
    _PENDING.pop(key, None)
    _PENDING[key] = write


def pending() -> int:
    """How many writers wait for the next flush."""
    return len(_PENDING)


def flush() -> None:
    """Run every registered writer once, in registration order, and forget them (also when one raises: the rest
    are dropped and the exception propagates)."""
    writers = list(_PENDING.values())
    _PENDING.clear()
    for write in writers:
        write()
