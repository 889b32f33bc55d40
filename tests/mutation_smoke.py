#!/usr/bin/env python
"""Mutation smoke test: planted formula errors must flip their claim's verdict, and a planted crash in any method
kind must give the verdict ``error`` and exit code 1.

Each case copies the repository (without .git, results or caches) to a temporary folder, applies one exact text
replacement there (the replaced text must occur exactly once, so a renamed formula fails loudly instead of testing
nothing), runs ``paper_checks.py --only CLAIM --quick`` in the copy and reads its report.json. The unmutated copy is
run first: its verdicts are the baseline each formula mutation must change.

    python tests/mutation_smoke.py            # all cases (a few minutes; the training case trains the small LM)
    python tests/mutation_smoke.py --no-lm    # without the training-method crash case

Run by ``tests/test_mutation_smoke.py`` (marked slow) and by CI. Exit 0 when every case behaves, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", "results*", "__pycache__", ".pytest_cache", ".hypothesis", "*.pyc", "audit_figures")

# (name, claim, file, old text, new text): a formula changed by 2-10 %
FORMULA_MUTATIONS = [
    ("dpo_loss: beta scaled by 1.05", "dpo-reparam", "dpo_rlhf_checks/losses.py",
     "    return LossOutput(_softplus(-h), *_rewards(beta,", "    return LossOutput(_softplus(-1.05 * h), *_rewards(beta,"),
    ("critical_loss: margin term off by 5 %", "loss-delta-bridge", "dpo_rlhf_checks/losses.py",
     "    return _softplus(beta * (target - margin))", "    return _softplus(1.05 * beta * (target - margin))"),
    ("numpy Gibbs policy: r/beta -> r/(1.05 beta)", "rlhf-closed-form", "theory/symbols.py",
     "np.asarray(rewards, dtype=np.float64) / beta_value", "np.asarray(rewards, dtype=np.float64) / (1.05 * beta_value)"),
    ("general-K Gibbs policy in the symbolic proof: r/(2 beta)", "rlhf-closed-form", "theory/derivations.py",
     "pstar = lambda idx: _A[idx] * sp.exp(_R[idx] / beta) / _Zk", "pstar = lambda idx: _A[idx] * sp.exp(_R[idx] / (2 * beta)) / _Zk"),
    ("closed-form KKT multiplier (bandit solver) off by 5 %", "cpo-constrained-kkt", "toy_bandits/constrained.py",
     "    mu = beta * gap * expit(-m)", "    mu = 1.05 * beta * gap * expit(-m)"),
    ("closed-form KKT multiplier (theory) off by 5 %", "cpo-constrained-kkt", "theory/sec9_cpo.py",
     "    mu = max(0.0, (beta * m - beta * dref - dr) / (1 + math.exp(m)))",
     "    mu = max(0.0, 1.05 * (beta * m - beta * dref - dr) / (1 + math.exp(m)))"),
    ("smooth target infimum off by 5 %", "cpo-loss-certificates", "toy_bandits/map_claims.py",
     "    return gamma + h / (alpha * tau)", "    return gamma + 1.05 * h / (alpha * tau)"),
    ("bandit Gibbs policy: r/beta -> 1.1 r/beta", "undesirable-space", "toy_bandits/rlhf.py",
     "        return np.log(pi_ref) + (reward - r_max) / beta_col, r_max, beta_col",
     "        return np.log(pi_ref) + 1.1 * (reward - r_max) / beta_col, r_max, beta_col"),
]

# (method kind, claim, file, the def line of the method function): a raise planted as its first statement
CRASHES = [
    ("symbolic", "dpo-reparam", "theory/sec2_dpo.py", "def dpo_reparam_symbolic(ctx: CheckContext) -> MethodResult:"),
    ("numeric", "dpo-reparam", "theory/sec2_dpo.py", "def dpo_reparam_numeric(ctx: CheckContext) -> MethodResult:"),
    ("convex", "cpo-constrained-kkt", "toy_bandits/solver_claims.py",
     "def cpo_constrained_kkt_convex(ctx: CheckContext) -> MethodResult:"),
    ("simulation", "equiv-population", "toy_bandits/map_claims.py",
     "def equiv_population_simulation(ctx: CheckContext) -> MethodResult:"),
    ("training", "lm-cpo-fix", "toy_lm/claims.py", "def lm_cpo_fix_training(ctx: CheckContext) -> MethodResult:"),
]


def _copy() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="mutation_smoke_"))
    dst = tmp / "repo"
    shutil.copytree(ROOT, dst, ignore=IGNORE)
    return dst


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    n = text.count(old)
    if n != 1:
        raise SystemExit(f"mutation target found {n} times (need exactly 1) in {path}: {old!r}")
    path.write_text(text.replace(old, new))


def _run(repo: Path, claims: list[str]) -> tuple[int, dict[str, str], dict]:
    out = repo / "results_smoke"
    if out.exists():
        shutil.rmtree(out)
    proc = subprocess.run([sys.executable, "paper_checks.py", "--only", *claims, "--quick", "--out", str(out)],
                          cwd=repo, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {"claims": []}
    return proc.returncode, {c["id"]: c["verdict"] for c in report["claims"]}, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-lm", action="store_true", help="skip the training-method crash case (trains the LM)")
    args = parser.parse_args(argv)
    ok = True
    repo = _copy()
    try:
        claims = sorted({m[1] for m in FORMULA_MUTATIONS})
        code, baseline, _ = _run(repo, claims)
        print(f"baseline (exit {code}): {baseline}")
        if code != 0 or set(baseline) != set(claims):
            print("FAIL: the unmutated copy does not run cleanly")
            return 1
        pristine = {f: (repo / f).read_text() for f in {m[2] for m in FORMULA_MUTATIONS} | {c[2] for c in CRASHES}}
        for name, claim, file, old, new in FORMULA_MUTATIONS:
            _replace_once(repo / file, old, new)
            code, verdicts, _ = _run(repo, [claim])
            (repo / file).write_text(pristine[file])
            flipped = code == 0 and verdicts.get(claim) not in (None, baseline[claim])
            ok &= flipped
            print(f"{'ok  ' if flipped else 'FAIL'} {name}: {claim} {baseline[claim]} -> {verdicts.get(claim)} "
                  f"(exit {code})")
        for kind, claim, file, def_line in CRASHES:
            if kind == "training" and args.no_lm:
                print(f"skip {kind} crash ({claim}): --no-lm")
                continue
            _replace_once(repo / file, def_line,
                          f"{def_line}\n    raise RuntimeError('planted crash in a {kind} method')")
            code, verdicts, report = _run(repo, [claim])
            (repo / file).write_text(pristine[file])
            methods = report["claims"][0]["methods"] if report["claims"] else []
            crashed = [m["name"] for m in methods if m.get("error")]
            good = code == 1 and verdicts.get(claim) == "error" and len(crashed) == 1 and crashed[0].startswith(kind)
            ok &= good
            print(f"{'ok  ' if good else 'FAIL'} crash in {kind} method: {claim} -> {verdicts.get(claim)} (exit {code}; "
                  f"crashed {crashed}; methods run {len(methods)})")
    finally:
        shutil.rmtree(repo.parent, ignore_errors=True)
    print("mutation smoke:", "all cases behave" if ok else "SOME CASES FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
