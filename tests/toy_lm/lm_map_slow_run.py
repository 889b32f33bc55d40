"""Run by test_lm_map_resume.py: ``lm-map`` with each unit of work slowed, so a test can signal it mid-unit.

    python lm_map_slow_run.py SECONDS KILL LM-MAP-ARGS...

SECONDS: sleep before each preference training and each tabular prediction (inside the unit). KILL: ``-``, or
``mid-write:N``: the process SIGKILLs itself while writing its N-th unit (the unit's file written under its temporary
name, not yet renamed, the progress record not yet updated).
"""

import os
import signal
import sys
import time

import toy_lm.map_progress as P
import toy_lm.stage as S

delay, kill = float(sys.argv[1]), sys.argv[2]


def slowed(fn):
    def run(*args, **kwargs):
        time.sleep(delay)
        return fn(*args, **kwargs)
    return run


S.train_preference_batched = slowed(S.train_preference_batched)
S.predict_cell = slowed(S.predict_cell)
if kill.startswith("mid-write:"):
    n_kill, real_write = int(kill.split(":")[1]), P._atomic_write
    written = {"units": 0}

    def write_then_die(path, write):
        if path.name.startswith("unit"):
            written["units"] += 1
            if written["units"] == n_kill:
                with open(path.with_name(path.name + ".tmp"), "wb") as fh:
                    write(fh)
                os.kill(os.getpid(), signal.SIGKILL)
        real_write(path, write)

    P._atomic_write = write_then_die

from dpo_rlhf_checks.cli import main  # noqa: E402

sys.exit(main(["lm-map", *sys.argv[3:]]))
