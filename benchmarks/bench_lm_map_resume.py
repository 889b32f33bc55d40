"""What ``lm-map --resume`` costs: the map run whole, and interrupted after half of its units then resumed.

    python benchmarks/bench_lm_map_resume.py [--lm-config default] [--out /tmp/bench_lm_map_resume]

In-process (no Python start-up in the numbers), TOY_LM_THREADS threads (default 1), CPU. Reported:
(1) the whole map's wall time and, inside it, the time spent writing the progress units and record (the
cost every run pays for being resumable); (2) the interrupted run (a KeyboardInterrupt raised when half of the
units are saved) plus the resumed run, against (1): the extra time of interrupting once; (3) whether the
resumed map's files equal the whole map's, byte for byte (lm_map.md and lm_map.json: the seconds masked).
Timings on a shared machine vary.
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
        return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))

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
    spent = {"write": 0.0, "units": 0}
    real_write, real_add = P._atomic_write, P.MapProgress._add

    def timed_write(path, write):
        t0 = time.perf_counter()
        real_write(path, write)
        spent["write"] += time.perf_counter() - t0

    P._atomic_write = timed_write
    argv = ["lm-map", "--lm-config", args.lm_config, "--device", "cpu"]
    t0 = time.perf_counter()
    assert quiet_main([*argv, "--out", str(args.out / "whole")]) == 0
    whole = time.perf_counter() - t0
    write_whole = spent["write"]

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
    t0 = time.perf_counter()
    code = quiet_main([*argv, "--out", str(args.out / "resumed")])
    first = time.perf_counter() - t0
    assert code == 130, code
    P.MapProgress._add = real_add
    t0 = time.perf_counter()
    assert quiet_main([*argv, "--out", str(args.out / "resumed"), "--resume"]) == 0
    second = time.perf_counter() - t0
    same = same_outputs(args.out / "whole", args.out / "resumed")
    print(f"lm-config {args.lm_config}: {n_units} units")
    print(f"whole map: {whole:.2f} s, of which writing the progress units and record {write_whole:.3f} s "
          f"({100 * write_whole / whole:.2f} %)")
    print(f"interrupted after {stop_at} of {n_units} units: {first:.2f} s + resumed {second:.2f} s = "
          f"{first + second:.2f} s ({first + second - whole:+.2f} s against the whole map)")
    print(f"resumed files equal the whole map's (seconds masked): {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
