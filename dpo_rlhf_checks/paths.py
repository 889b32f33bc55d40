"""Checks on the paths a command writes, made before any work starts (shared by ``audit`` and ``score``).

An output file must never be one of the command's inputs: ``audit X.jsonl --pairs-out X.jsonl`` would
replace the data with the flags and report success. "The same file" is decided by the file system
(:func:`os.path.samefile`: device and inode), so a second name for the input is caught too: another
spelling of the path (``./X.jsonl``, ``dir/../X.jsonl``), a symbolic link to it, a hard link to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def output_overwrites_input(output, inputs: Iterable) -> str | None:
    """Why writing ``output`` would destroy one of ``inputs`` (it is the same file), or None.

    output: the path about to be opened for writing (it need not exist yet: a path that does not exist
    is no input). inputs: the paths the command reads; a missing one is skipped (its own check reports it).
    The message names both paths, and how they are the same file when the names differ.
    """
    output = Path(output)
    for source in inputs:
        source = Path(source)
        try:
            same = os.path.samefile(output, source)
        except (OSError, ValueError):  # one of them does not exist (or is no path): nothing to overwrite
            continue
        if not same:
            continue
        if os.path.abspath(output) == os.path.abspath(source):
            how = ""
        elif output.is_symlink() or source.is_symlink():
            how = " (through a symbolic link)"
        elif os.path.realpath(output) == os.path.realpath(source):
            how = " (another name for the same path)"
        else:
            how = " (a hard link to it)"
        return f"{output} is the input file {source}{how}; writing it would destroy the input: give another path"
    return None
