"""What ``lm-map --resume`` costs: the map run whole, and interrupted after half of its units then resumed.

    python benchmarks/bench_lm_map_resume.py [--lm-config default] [--out /tmp/bench_lm_map_resume]

In-process (no Python start-up in the numbers), TOY_LM_THREADS threads (default 1), CPU. Each time is given as
wall-clock seconds and as this process's CPU seconds (``time.process_time``; on a machine shared with other jobs
the wall clock measures their load as much as this map's). Reported:
(1) the whole map's wall time and, inside it, the time spent writing the progress units and record (the
cost every run pays for being resumable); (2) the interrupted run (a KeyboardInterrupt raised when half of the
units are saved) plus the resumed run, against (1): the extra time of interrupting once; (3) whether the
resumed map's files equal the whole map's, byte for byte (lm_map.md and lm_map.json: the seconds masked).
A first, unmeasured map pays the one-time costs. Timings on a shared machine vary.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MASKS = {"lm_map.md": rb"; \d+ s \(\d+ s training, \d+ s prediction\) on ",
         "lm_map.json": rb'\n "seconds": [0-9.eE+-]+,\n'}


def same_outputs(a: Path, b: Path) -> bool:
    def files(out):
        return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    if files(a) != files(b):
        return False
    for name in files(a):
        x, y = (a / name).read_bytes(), (b / name).read_bytes()
        if name in MASKS:
            x, y = (re.sub(MASKS[name], b"", v) for v in (x, y))
        if x != y:
            return False
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lm-config", default="default")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_lm_map_resume"))
    args = p.parse_args()

    import contextlib
    import io

    import figures.lm  # noqa: F401 - imported before the timers (matplotlib's first import is seconds)
    import toy_lm.map_progress as P
    import toy_lm.stage  # noqa: F401
    from dpo_rlhf_checks.cli import main as cli_main

    def quiet_main(argv):  # the map's report goes to stdout; keep the benchmark's lines readable
        with contextlib.redirect_stdout(io.StringIO()):
            return cli_main(argv)

    shutil.rmtree(args.out, ignore_errors=True)
    spent = {"write": 0.0, "write_cpu": 0.0, "load": 0.0, "load_cpu": 0.0}
    real_write, real_add = P._atomic_write, P.MapProgress._add

    def timed(fn, key):
        def run(*a, **k):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - t0
                spent[key + "_cpu"] += time.process_time() - c0
        return run

    P._atomic_write = timed(real_write, "write")
    for name in ("load_references", "load_records", "load_predictions"):
        setattr(P.MapProgress, name, timed(getattr(P.MapProgress, name), "load"))

    def clock(argv_out, expect):
        t0, c0 = time.perf_counter(), time.process_time()
        code = quiet_main(argv_out)
        assert code == expect, code
        return time.perf_counter() - t0, time.process_time() - c0

    argv = ["lm-map", "--lm-config", args.lm_config, "--device", "cpu"]
    # a first map pays one-time costs (torch's kernels, matplotlib's fonts): run one unmeasured
    assert quiet_main([*argv, "--out", str(args.out / "warm-up")]) == 0
    spent["write"] = spent["write_cpu"] = 0.0
    whole, whole_cpu = clock([*argv, "--out", str(args.out / "whole")], 0)
    write_whole, write_whole_cpu = spent["write"], spent["write_cpu"]

    # the map's units (toy_lm/map_progress.py): a reference unit per chunk of seeds, a training unit per cell and
    # chunk, a prediction unit per cell
    from toy_lm.config import load_config

    cfg = load_config(args.lm_config)
    n_keys = len(cfg.betas) * len(cfg.optimizers) * len(cfg.methods)
    chunks = -(-len(cfg.seeds) // cfg.batch_replicas)
    n_units = chunks + n_keys * chunks + n_keys
    stop_at = n_units // 2

    def add_then_stop(self, *a, **k):
        real_add(self, *a, **k)
        if len(self.units) == stop_at:
            raise KeyboardInterrupt

    P.MapProgress._add = add_then_stop
    first, first_cpu = clock([*argv, "--out", str(args.out / "resumed")], 130)
    P.MapProgress._add = real_add
    spent["load"] = spent["load_cpu"] = 0.0
    second, second_cpu = clock([*argv, "--out", str(args.out / "resumed"), "--resume"], 0)
    same = same_outputs(args.out / "whole", args.out / "resumed")
    print(f"lm-config {args.lm_config}: {n_units} units")
    print(f"whole map: {whole:.2f} s wall / {whole_cpu:.2f} s CPU, of which writing the progress units and record "
          f"{write_whole:.3f} s wall / {write_whole_cpu:.3f} s CPU ({100 * write_whole_cpu / whole_cpu:.2f} % of CPU)")
    print(f"interrupted after {stop_at} of {n_units} units: {first:.2f} s + resumed {second:.2f} s = "
          f"{first + second:.2f} s wall ({first + second - whole:+.2f} s against the whole map); CPU {first_cpu:.2f} + "
          f"{second_cpu:.2f} = {first_cpu + second_cpu:.2f} s ({first_cpu + second_cpu - whole_cpu:+.2f} s); "
          f"loading the {stop_at} saved units in the resumed run: {spent['load']:.3f} s wall / "
          f"{spent['load_cpu']:.3f} s CPU")
    print(f"resumed files equal the whole map's (seconds masked): {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
