"""Run a Python script as ``__main__`` and record this process's peak resident memory (Linux ``VmHWM``).

    python benchmarks/peak_run.py SCRIPT [ARGS...]     # with PEAK_RSS_FILE=path in the environment

The benchmarks start their commands through this wrapper. ``ru_maxrss`` of a child is no measure
there: Linux carries a forked child's peak over from before its ``exec``, so a child reports at least
the parent's memory at the fork (a benchmark that generated 10 million rows first measured 3.5 GB for
every command it ran). ``VmHWM`` belongs to the new process image alone. It is written, in bytes,
to the file that ``PEAK_RSS_FILE`` names; the script's exit code is kept.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tempfile


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size (``VmHWM``), or None where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        return None
    return None


def main() -> int:
    script, sys.argv = sys.argv[1], sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit_:
        if exit_.code is not None and not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)  # as the interpreter does with sys.exit("message")
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.stdout.flush()
        out = os.environ.get("PEAK_RSS_FILE")
        if out:
            peak = peak_rss_bytes()
            with open(out, "w", encoding="ascii") as f:
                f.write("" if peak is None else str(peak))
    return code


def run_measured(argv: list[str], cwd) -> tuple[subprocess.CompletedProcess, int | None]:
    """``python peak_run.py *argv`` (argv[0] a script) in ``cwd``: (the finished process, its peak memory in bytes
    or None where it cannot be read)."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = os.path.join(tmp, "peak")
        env = {**os.environ, "PEAK_RSS_FILE": peak_file}
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], capture_output=True, text=True,
                              cwd=cwd, env=env)
        try:
            text = open(peak_file, encoding="ascii").read().strip()
        except OSError:
            text = ""
    return proc, int(text) if text else None


if __name__ == "__main__":
    sys.exit(main())

