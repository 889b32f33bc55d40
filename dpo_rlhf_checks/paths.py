"""Checks on the paths a command writes, made before any work starts (shared by ``audit`` and ``score``).

An output file must never be one of the command's inputs: ``audit X.jsonl --pairs-out X.jsonl`` would
replace the data with the flags and report success. "The same file" is decided by the file system
(:func:`os.path.samefile`: device and inode), so a second name for the input is caught too: another
spelling of the path (``./X.jsonl``, ``dir/../X.jsonl``), a symbolic link to it, a hard link to it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping


def output_overwrites_input(output, inputs: Iterable | Mapping) -> str | None:
    """Why writing ``output`` would destroy one of ``inputs`` (it is the same file, or a file inside an input
    folder such as a model or a ``datasets`` folder), or None.

    output: the path about to be opened for writing (it need not exist yet: a path that does not exist
    is no input file, though it may still lie inside an input folder). inputs: the paths the command reads, or
    a mapping {label (e.g. "--data"): path}; a missing one is skipped (its own check reports it).
    The message names both paths, and how they are the same file when the names differ.
    """
    output = Path(output).expanduser()
    labelled = inputs.items() if isinstance(inputs, Mapping) else ((None, source) for source in inputs)
    for label, source in labelled:
        source = Path(source).expanduser()
        what = f"the input {label} " if label else "the input file "
        if source.is_dir():
            if output.resolve().is_relative_to(source.resolve()):
                return f"{output} is inside {what.rstrip()} folder {source}; writing it would change the input: " \
                       "give another path"
            continue
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
        return f"{output} is {what}{source}{how}; writing it would destroy the input: give another path"
    return None


def output_file_problem(name: str | os.PathLike) -> str | None:
    """Why ``name`` cannot be written as an output file (a folder, a missing or unwritable folder), or None.

    Checked before any work starts (audit's --pairs-out, score's --out and --pairs-out), so a bad path costs
    nothing; it writes and removes one temporary file beside the output, since os.access says yes to root even
    where no file can be created (/proc).
    """
    name = os.fspath(name)  # a str keeps a trailing '/' (a folder); a Path has already dropped it
    if not name:
        return "an empty path"
    path = Path(name)
    if name.endswith(("/", os.sep)) or path.is_dir():
        return f"{name} is a folder; give a file name"
    parent = path.parent
    if not parent.is_dir():
        return f"folder {parent} does not exist"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{name} is not writable"
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-test-"):
            pass
    except OSError as err:
        return f"cannot write into {parent}: {err.strerror or err}"
    return None
