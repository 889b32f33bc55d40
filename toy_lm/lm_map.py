"""``paper_checks.py lm-map``: the full regime map of the LM stage, with its own report section and figures.

    python paper_checks.py lm-map [--lm-config map|default|large|FILE.json] [--out results/] [--seed N]
                                  [--device auto|cpu|cuda] [--resume]

Trains every cell (beta x optimizer x labels) and method of the config (default: the "map" preset, four beta
levels, five seeds), predicts each with the tabular theory, and writes ``OUT/lm_map.md`` (the cells x methods
table of predicted / observed fraction in U, the time-in-U law under each optimizer), ``OUT/lm_map.json`` and
``OUT/figures/lm_map_*.png|pdf``; then it computes the verdict of every slow claim of the LM stage
(dpo_rlhf_checks.registry.runs_in_lm_map: lm-kernel-prediction) on the map's own stage, as a section of lm_map.md,
``"claims"`` in lm_map.json and the claims' figures. Every argument, ``TOY_LM_THREADS`` and the output folder are
checked before any training: a problem is one line on stderr and exit 2. The files are written into a staging
folder and renamed into place at the end, under a lock on ``--out`` (dpo_rlhf_checks.outdir); Ctrl-C leaves
``--out``'s files as they were.

Long maps lose nothing (toy_lm/map_progress.py): each finished unit (a chunk's reference SFT, a cell's training, a
cell's prediction) is kept in ``OUT/.lm_map-progress/`` as it finishes. SIGINT (exit 130), SIGTERM (exit 143) or a
crash leaves it there with one line naming ``--resume``; ``lm-map ... --resume`` (the same arguments) loads those
units and computes the rest, and writes the files an uninterrupted run writes, byte for byte, except the measured
seconds. It refuses a record from other settings (config, seed, device, threads, code, versions). A finished run
removes the folder; a run without ``--resume`` starts afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from dpo_rlhf_checks.cli import MAX_SEED, BadInput, OneLineParser, out_path, run_in_out_folder, seed_problem
from dpo_rlhf_checks.result import to_jsonable
from toy_lm.config import lm_threads, load_config
from toy_lm.map_progress import PROGRESS_DIR, progress_dir, read_record


class MapInterrupted(Exception):
    """SIGINT or SIGTERM during the map; the message says what was kept and how to resume."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="paper_checks.py lm-map", description=__doc__.split("\n\n")[0])
    p.add_argument("--lm-config", default="map", help="map (default), default, large, or a JSON config file")
    p.add_argument("--out", type=out_path, default=Path("results"), help="output folder (default: results/)")
    p.add_argument("--seed", type=int, default=0, help=f"seed offset, 0..{MAX_SEED} (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--resume", action="store_true",
                   help=f"continue an interrupted map into the same --out from its finished units (OUT/{PROGRESS_DIR})")
    return p


def map_table(stage) -> str:
    """Markdown: one row per cell, one column per method, "predicted / observed" fraction in U (* = not compared)."""
    cfg = stage.cfg
    head = "| beta | scale | optimizer | labels | " + " | ".join(m for m in cfg.methods) + " |"
    lines = [head, "|" + "---|" * (4 + len(cfg.methods))]
    for beta in cfg.betas:
        for opt in cfg.optimizers:
            for labels in ("ordered", "bt"):
                cells = []
                scale = None
                for m in cfg.methods:
                    r = stage.regime(beta, opt, m)
                    scale = r["beta_delta_ref_scale"]
                    if r["labels"] != labels:
                        cells.append("")
                        continue
                    star = "" if r["compared"] else "*"
                    cells.append(f"{r['predicted_frac_in_U']:.2f} / {r['observed_frac_in_U']:.2f}{star}")
                lines.append(f"| {beta:g} | {scale:.1f} | {opt} | {labels} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def law_table(stage) -> str:
    """The time-in-U law (descriptive): LM and theory censored at the run's horizon, one Tobit estimator."""
    lines = ["| optimizer | LM slope (censored ML) | stderr | theory slope (same horizon, same estimator) | stderr "
             "| pairs | LM censored | theory censored |", "|---|---|---|---|---|---|---|---|"]
    fmt = (lambda x: "n/a" if x is None else f"{x:.3f}")
    for opt, v in stage.time_in_U_law.items():
        lines.append(f"| {opt} | {fmt(v['fitted_slope'])} | {fmt(v['stderr'])} | {fmt(v['theory_slope'])} | "
                     f"{fmt(v.get('theory_stderr'))} | {v['n_pairs']} | {v['n_censored']} | "
                     f"{v.get('n_theory_censored', 0)} |")
    return "\n".join(lines)


def report_section(stage) -> str:
    """The map's own report section (Markdown)."""
    n = len(stage.regimes)
    n_cmp = sum(r["compared"] for r in stage.regimes)
    reasons = sorted({r["reason_not_compared"].split(":")[0] for r in stage.regimes if not r["compared"]})
    return "\n".join([
        "## LM regime map", "",
        f"{len(stage.cfg.betas)} beta levels x {len(stage.cfg.optimizers)} optimizers x 2 label kinds, "
        f"{len(stage.cfg.methods)} methods, seeds {stage.seeds}, {stage.cfg.steps} steps per run; "
        f"{stage.seconds:.0f} s ({stage.seconds_training:.0f} s training, {stage.seconds_prediction:.0f} s prediction) "
        f"on {stage.device}. SGD step sgd_lr / beta^2 (IPO: sgd_lr), Adam step adam_lr.", "",
        "Fraction of train pairs in U at the end, tabular prediction (same optimizer, loss-matched time) / "
        f"observed, mean over seeds; * = not compared ({', '.join(reasons) or 'none'}). "
        f"{n_cmp} of {n} cell-method pairs compared. scale = median beta |delta_ref| of the misranked train pairs.", "",
        map_table(stage), "",
        "### Time in U against beta |delta_ref| (ordered-pair DPO, misranked pairs)", "",
        law_table(stage), "",
        "Fit: log(time in U) = a_beta + slope * beta |delta_ref| + noise, one intercept per beta level, maximum "
        "likelihood with the pairs that never leave U censored at the run's end (Tobit); time in U = first step with "
        "delta > 0, from the per-step records. Theory: the tabular prediction's first crossing (the run's optimizer) "
        "mapped to LM steps by the loss-matched clock, censored at the same step and fitted by the same estimator. "
        "Descriptive: no verdict reads it.", ""])


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``paper_checks.py lm-map``: every argument (and TOY_LM_THREADS, and that --out can be written)
    is checked before any training; a problem is one line on stderr and SystemExit(2), as in ``--all``."""
    try:
        return _main(argv)
    except MapInterrupted as err:  # as cli.main words a Ctrl-C: "<prog>: interrupted... (SIGINT)"
        print(f"paper_checks.py lm-map: {err}", file=sys.stderr, flush=True)
        return err.code
    except BadInput as err:  # from OneLineParser.error: "paper_checks.py lm-map: <message>", already one line
        prog, _, message = str(err).partition(": ")
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None  # as --all exits on a bad argument (argparse's way, without its usage block)


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.lm_config)
    except ValueError as err:
        parser.error(f"--lm-config: {err}")
    problem = seed_problem(args.seed)
    if problem is not None:
        parser.error(f"--seed: {problem}")
    try:
        threads = lm_threads()
    except ValueError as err:
        parser.error(str(err))
    if args.resume and read_record(args.out) is None:
        parser.error(f"--resume: no progress record in {progress_dir(args.out)}: the map into {args.out} finished, or "
                     "never finished a unit; rerun without --resume")
    # before any training: a bad --device or --out must not cost the map
    return run_in_out_folder(parser, args.out, args.device, OUTPUTS, lambda staged: _run(args, cfg, threads, staged),
                             "the map files")


OUTPUTS = ("lm_map.md", "lm_map.json", "lm_map_records.npz")


def map_claims(stage, args: argparse.Namespace, work: Path, entered) -> tuple[str, list[dict], list[str]]:
    """Run every slow claim of the LM stage (dpo_rlhf_checks.registry.runs_in_lm_map: the claims ``--all`` leaves out
    at the default LM config) on the map's own stage, as ``--only ID --lm-config CONFIG`` would on a fresh one.
    Returns the report section (Markdown), one entry per claim for lm_map.json (the report's verdict fields, without
    the measured seconds, so a resumed map's files stay those of an uninterrupted one) and the claims' figures.
    entered: the toolkit functions computing ``stage`` entered (dpo_rlhf_checks.tracing.measure_calls), recorded as
    the closure of toy_lm.stage.get_stage, so the claims read this stage (and count what it took) instead of the
    runner clearing an unmeasured cache and training a second stage."""
    from dpo_rlhf_checks.registry import CLAIMS, runs_in_lm_map
    from dpo_rlhf_checks.report import run_claim
    from dpo_rlhf_checks.result import CheckContext
    from toy_lm.stage import _CACHE, _cache_key

    claims = [c for c in CLAIMS if runs_in_lm_map(c)]
    if not claims:
        return "", [], []
    ctx = CheckContext(seed=args.seed, quick=False, out_dir=work, lm_config=args.lm_config, device=args.device)
    from dpo_rlhf_checks.tracing import record_closure

    key = _cache_key(ctx)
    _CACHE[key] = stage  # the claims' methods read this stage (toy_lm.stage.get_stage), not a fresh one
    record_closure("toy_lm.stage.get_stage", entered)
    try:
        entries = [run_claim(c, ctx, log=sys.stderr) for c in claims]
    finally:
        _CACHE.pop(key, None)
    keep = ("id", "title", "verdict", "literal", "amended", "summary", "inconclusive", "counterexample",
            "amended_statement", "independent_methods")
    compact = [{k: e[k] for k in keep} for e in entries]
    lines = ["## Claims computed on the map's stage", "",
             "The claims too slow for `--all` at the default LM config (dpo_rlhf_checks/registry.py, `slow`), run here "
             "on this map's stage with their pre-registered rules (their looks may add seeds to the cells they read, "
             "after the tables above).", ""]
    from toy_lm.kernel_claim import evidence_markdown

    for e in entries:
        lines.append(f"- `{e['id']}`: **{e['verdict']}** (literal {e['literal']}, amended {e['amended']}). "
                     f"{e['summary']}" + (f" Undecided: {e['inconclusive']}" if e["inconclusive"] else ""))
        if e["id"] == "lm-kernel-prediction":  # its slope comparisons and the forecast's AUC with intervals
            training = next((m for m in e["methods"] if m["name"] == "training" and m["error"] is None), None)
            if training is not None:
                lines += ["", evidence_markdown(training["evidence"])]
    figures = [str(work / f) if not Path(f).is_absolute() else f for e in entries for f in e["figures"]]
    return "\n".join(lines) + "\n", compact, figures


def _write(stage, cfg, staged, args: argparse.Namespace, entered) -> tuple[str, list[str]]:
    """The map's files into the staging folder, then renamed into ``--out`` (figures and records first, the two
    reports last); returns the report section and the figure paths."""
    from figures.lm import lm_figures
    from toy_lm.stage import save_records

    work = staged.staging
    fig_dir = work / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = lm_figures(stage, fig_dir, prefix="lm_map")
    save_records(stage, work / "lm_map_records.npz")
    section = report_section(stage)
    from dpo_rlhf_checks.tracing import measure_calls
    from toy_lm.kernel_claim import map_section  # the linearised-LM table (issue 18)

    # under the profiler: J and the predictions it computes are then measured cache entries the claims reuse
    (kernel_md, kernel_json), _ = measure_calls(map_section, stage)
    section += "\n" + kernel_md
    payload = {"config": cfg.to_dict(), "seeds": stage.seeds, "seconds": stage.seconds, "regimes": stage.regimes,
               "time_in_U_law": {o: {k: v for k, v in law.items() if k != "points"}
                                 for o, law in stage.time_in_U_law.items()},
               "kernel": kernel_json}
    # The slow claims of the LM stage, computed on the map's stage after its own tables (their looks may add seeds)
    claims_md, claims_json, claim_figures = map_claims(stage, args, work, entered)
    section += "\n" + claims_md
    figures = figures + claim_figures
    payload["claims"] = claims_json
    payload["figures"] = [Path(os.path.relpath(f, work)).as_posix() for f in figures]  # relative to lm_map.json
    (work / "lm_map.md").write_text(section + "\nFigures: " + ", ".join(Path(f).name for f in figures
                                                                       if f.endswith(".png")) + "\n")
    (work / "lm_map.json").write_text(json.dumps(to_jsonable(payload), indent=1))
    staged.commit(last=("lm_map.md", "lm_map.json"))
    return section, figures


def _run(args: argparse.Namespace, cfg, threads: int, staged) -> int:
    """Train and predict the map, write it into the staging folder, then rename it into ``args.out``."""
    import signal

    from toy_lm.map_progress import MapProgress, ResumeMismatch, fingerprint
    from toy_lm.model import resolve_device
    from dpo_rlhf_checks.tracing import measure_calls
    from toy_lm.stage import run_stage

    start = time.perf_counter()
    fp = fingerprint(cfg, args.seed, str(resolve_device(args.device)), threads)
    try:
        progress = MapProgress(args.out, fp, resume=args.resume)  # under the lock on --out
    except ResumeMismatch as err:
        raise BadInput(f"paper_checks.py lm-map: --resume: {err}") from None
    if args.resume:
        print(f"[lm-map] resuming: {progress.n_at_start} finished units in {progress.dir}", file=sys.stderr, flush=True)

    def on_sigterm(signum, frame):  # SIGTERM stops the map as SIGINT does: between two saved units
        raise KeyboardInterrupt(signum)

    in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers can only be set there
    old_term = signal.signal(signal.SIGTERM, on_sigterm) if in_main_thread else None
    try:  # the map, then its files (written into the staging folder and renamed into place)
        # under the dependency profiler, so the slow claims can read this stage as a measured cache entry (map_claims)
        stage, entered = measure_calls(run_stage, cfg, seed_offset=args.seed, device=args.device, threads=threads,
                                       progress=progress)
        section, figures = _write(stage, cfg, staged, args, entered)
    except KeyboardInterrupt as err:
        if staged.committed:  # the files are in place: cli.run_in_out_folder says so
            raise
        sig = err.args[0] if err.args and isinstance(err.args[0], int) else signal.SIGINT
        name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
        if not progress.units:  # nothing finished: nothing to resume from
            progress.finish()
            raise MapInterrupted(f"interrupted; nothing written: {args.out} is as it was before this run ({name})",
                                 128 + int(sig)) from None
        raise MapInterrupted(f"interrupted; {args.out}'s files are as they were, and {len(progress.units)} finished "
                             f"units of the map are kept in {progress.dir}: rerun the same command with --resume to "
                             f"continue from them ({name})", 128 + int(sig)) from None
    except Exception as err:  # a crash: say what is kept, then the traceback as before
        if progress.units:
            print(f"paper_checks.py lm-map: error: {type(err).__name__} during the map; {len(progress.units)} "
                  f"finished units are kept in {progress.dir}: rerun the same command with --resume to continue "
                  "from them", file=sys.stderr, flush=True)
        else:
            progress.finish()
        raise
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    progress.finish()  # the map's files are in place; its units are no longer needed
    print(section)
    print(f"wrote {args.out / 'lm_map.md'}, {args.out / 'lm_map.json'}, {len(figures)} figure files in "
          f"{args.out / 'figures'} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
