#!/usr/bin/env python
"""Benchmark of the bandit solvers: ``python benchmarks/bench_bandits.py`` (prints measured numbers).

1. Single-pair constrained RLHF (docs/theory.md §9a), solves per second:
   - the closed form vectorised over a batch (toy_bandits.constrained.closed_form_pairs),
   - CVXPY re-built for every instance (new ConstrainedRLHF + solve; CLARABEL),
   - CVXPY compiled once and re-solved with new parameter values (DPP; CLARABEL),
   and the per-instance speed ratios (target: closed form >= 1000x re-built CVXPY). CVXPY runs with
   polish=False: timed and compared is the solver's own answer, without the exact active-set step.
2. Wall time of the phase-diagram sweep on a 1000 x 1000 grid
   (toy_bandits.maps.phase_diagram; target < 2 s).

Instances: K = 4, pi_ref ~ Dirichlet(1), r ~ N(0, 1), beta log-uniform on [0.1, 10], m ~ U(0, 2),
pair (0, 1); seed 0. Times are medians over repeats (time.perf_counter), single-threaded BLAS
requested through the environment before numpy loads.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from toy_bandits.constrained import ConstrainedRLHF, closed_form_pairs  # noqa: E402
from toy_bandits.instance import PairBatch  # noqa: E402

K = 4
SEED = 0
N_BATCH = 100_000
N_REBUILT = 20
N_PARAM = 100
REPEATS = 5
TARGET_RATIO = 1000.0
TARGET_PHASE_S = 2.0


def _batch(n: int, rng: np.random.Generator) -> PairBatch:
    return PairBatch(rng.dirichlet(np.ones(K), size=n), rng.normal(size=(n, K)), 10 ** rng.uniform(-1, 1, size=n),
                     np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64), rng.uniform(0, 2, size=n))


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    import cvxpy as cp

    rng = np.random.default_rng(SEED)
    print(f"python {platform.python_version()}, numpy {np.__version__}, cvxpy {cp.__version__}, "
          f"machine {platform.machine()}, cpus {os.cpu_count()}, seed {SEED}, K {K}")

    # 1a. closed form, vectorised
    batch = _batch(N_BATCH, rng)
    closed_form_pairs(batch)  # warm-up
    t_cf = _median_time(lambda: closed_form_pairs(batch), REPEATS)
    cf_rate = N_BATCH / t_cf
    print(f"closed form (vectorised, batch {N_BATCH}): {t_cf * 1e3:.1f} ms per batch, "
          f"{cf_rate:,.0f} solves/s, {t_cf / N_BATCH * 1e6:.3f} us per instance")

    # 1b. CVXPY re-built for every instance
    small = _batch(max(N_REBUILT, N_PARAM), rng)
    insts = [small.instance(i) for i in range(small.N)]

    def rebuilt():
        for inst in insts[:N_REBUILT]:
            ConstrainedRLHF(K, inst.preferences).solve(inst, solver="CLARABEL", polish=False)

    t_rb = _median_time(rebuilt, 3) / N_REBUILT
    print(f"CVXPY re-built each time (CLARABEL, {N_REBUILT} instances): {t_rb * 1e3:.2f} ms per instance, "
          f"{1 / t_rb:,.1f} solves/s")

    # 1c. CVXPY compiled once, parameters re-filled
    prob = ConstrainedRLHF(K, [(0, 1)])
    prob.solve(insts[0], solver="CLARABEL", polish=False)  # compile

    def param():
        for inst in insts[:N_PARAM]:
            prob.solve(inst, solver="CLARABEL", polish=False)

    t_pm = _median_time(param, 3) / N_PARAM
    print(f"CVXPY parameters re-solved (CLARABEL, {N_PARAM} instances): {t_pm * 1e3:.2f} ms per instance, "
          f"{1 / t_pm:,.1f} solves/s")

    # agreement, so the speed is of the same answer
    sol = closed_form_pairs(PairBatch.from_instances(insts[:N_PARAM]))
    err = max(float(np.max(np.abs(prob.solve(inst, solver="CLARABEL", polish=False).pi - sol.pi_c[i])))
              for i, inst in enumerate(insts[:N_PARAM]))
    print(f"max |pi_closed_form - pi_cvxpy| over {N_PARAM} instances: {err:.1e}")

    per_cf = t_cf / N_BATCH
    ratio_rb, ratio_pm, ratio_rb_pm = t_rb / per_cf, t_pm / per_cf, t_rb / t_pm
    print(f"ratio closed form vs re-built CVXPY (per instance): {ratio_rb:,.0f}x "
          f"(target >= {TARGET_RATIO:,.0f}x: {'met' if ratio_rb >= TARGET_RATIO else 'NOT met'})")
    print(f"ratio closed form vs parametric CVXPY (per instance): {ratio_pm:,.0f}x")
    print(f"ratio re-built vs parametric CVXPY: {ratio_rb_pm:.1f}x")

    # 2. phase diagram
    try:
        from toy_bandits.maps import phase_diagram
    except (ImportError, AttributeError) as err:
        print(f"phase diagram 1000x1000: not available ({err})")
        return 0
    grid_a, grid_b = np.linspace(-10, 10, 1000), np.linspace(-10, 10, 1000)
    t0 = time.perf_counter()
    phase_diagram(grid_a, grid_b)
    t_first = time.perf_counter() - t0
    t_ph = _median_time(lambda: phase_diagram(grid_a, grid_b), REPEATS)
    print(f"phase diagram 1000x1000 (toy_bandits.maps.phase_diagram): first call {t_first:.3f} s, "
          f"median {t_ph:.3f} s (target < {TARGET_PHASE_S} s: {'met' if t_ph < TARGET_PHASE_S else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
