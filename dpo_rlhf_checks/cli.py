"""Command line of ``paper_checks.py``.

    python paper_checks.py --all                 run every check, print the table, write results/ (at the
                                                 default LM config a slow claim is listed as not-checked,
                                                 with the command that runs it: registry.slow_reason)
    python paper_checks.py --list                list the claims
    python paper_checks.py --only ID [ID ...]    run some checks
    python paper_checks.py solve --instance F    solve one bandit instance (toy_bandits)
    python paper_checks.py audit FILE            audit a preference data file
    python paper_checks.py atlas [--quick]       the U-atlas of every TRL preference loss

Exit codes: 0 when every requested check ran (whatever its verdict: a failing claim is a
finding); 1 when a check crashed; 2 for bad arguments (or an output folder another run is writing into);
130 when interrupted (SIGINT, Ctrl-C: one line on stderr, no traceback, for every subcommand).

Output of ``--all`` / ``--only``: written into a staging folder inside ``--out`` and renamed into place when
the run finishes, under a lock on ``--out`` (:mod:`dpo_rlhf_checks.outdir`), so an interrupted run leaves the
folder as it was and two runs into one folder never interleave.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from dpo_rlhf_checks.registry import CLAIMS, get_claim
from dpo_rlhf_checks.result import CheckContext

# Subcommands live with the capability they expose; each module has ``main(argv) -> int``.
SUBCOMMANDS = {
    "solve": "toy_bandits.cli",
    "audit": "dpo_rlhf_checks.audit",
    "lm-map": "toy_lm.lm_map",
    "score": "dpo_rlhf_checks.score",
    "atlas": "dpo_rlhf_checks.atlas",
}
FORMATS = ("markdown", "latex")
DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are both unsigned; every seeded check takes this range


def output_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as an output folder (an existing file, not creatable, not writable), or None.

    Called before any work starts, so a bad ``--out`` costs nothing; it creates the folder (as the
    run would) and writes and removes one temporary file in it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        return f"cannot write into {path}: {err.strerror or err}"
    return None


def device_problem(device: str) -> str | None:
    """Why ``--device`` cannot be honoured here (cuda without a GPU), or None."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "cuda requested but no CUDA device is available here (torch.cuda.is_available() is False); " \
                   "use --device cpu or auto"
    return None


class BadInput(Exception):
    """Bad arguments or input data: a command prints ``error: <message>`` on one line and exits 2."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, with a sentence saying what it left behind; :func:`main` prints it on one line and exits 130."""


def out_path(text: str) -> Path:
    """argparse ``type`` of ``--out``: an empty string is an error (``Path("")`` would silently mean ".")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return Path(text)


def seed_problem(seed: int) -> str | None:
    """Why ``--seed`` is out of range [0, MAX_SEED], or None (an LM config's own seeds, each <= MAX_SEED too,
    are added to it: torch and numpy take the sums, up to 2^33)."""
    if not 0 <= seed <= MAX_SEED:
        return f"must be an integer in [0, {MAX_SEED}], got {short_message(seed, 60)}"
    return None


def lm_threads_problem() -> str | None:
    """Why the ``TOY_LM_THREADS`` environment variable is invalid, or None (see toy_lm.config.lm_threads)."""
    from toy_lm.config import lm_threads

    try:
        lm_threads()
    except ValueError as err:
        return str(err)
    return None


def short_message(message: object, limit: int = 600) -> str:
    """``message`` on one line, at most ``limit`` characters: a 400-digit value echoed back is cut."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else f"{text[:limit - 20]}... ({len(text)} chars)"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors raise :class:`BadInput` (one line, no usage block) instead of printing usage.

    A value such as ``-inf`` or ``-1e5`` after an option is read as a value, not as an option (argparse's
    own pattern only knows ``-1`` and ``-.5``).
    """

    NEGATIVE_NUMBER = r"^-(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf(inity)?|nan)$"

    def __init__(self, *args, **kwargs):
        import re

        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(self.NEGATIVE_NUMBER, re.IGNORECASE)

    def error(self, message: str):  # noqa: D102
        raise BadInput(f"{self.prog}: {short_message(message)}")


def no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``object_pairs_hook`` for ``json.loads``: a key given twice raises :class:`BadInput` (json keeps the last)."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise BadInput(f"duplicate key {short_message(repr(key), 60)} in a JSON object "
                           "(json would silently keep the last value)")
        out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="paper_checks.py",
        description="Check the claims of 'Conditional Equivalence of DPO and RLHF' (arXiv 2605.20834). "
        f"Subcommands: {', '.join(SUBCOMMANDS)} (run 'paper_checks.py SUBCOMMAND --help').",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--all", action="store_true",
                      help="run every registered check (at the default LM config, a claim the registry marks slow is "
                           "listed as not-checked, with the commands that run it)")
    what.add_argument("--only", nargs="+", metavar="ID", help="run only these claim ids")
    what.add_argument("--list", action="store_true", help="list the claims and exit")
    parser.add_argument("--out", type=out_path, default=Path("results"), help="output folder (default: results/)")
    parser.add_argument("--seed", type=int, default=0, help=f"seed of every random draw, 0..{MAX_SEED} (default: 0)")
    parser.add_argument("--quick", action="store_true", help="a fast pass: smaller grids, shorter training")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="markdown",
        help="report format besides report.json: markdown (report.md) or latex (report.md and report.tex)",
    )
    parser.add_argument(
        "--lm-config",
        default="default",
        help="language-model configuration: default, map, large or confirm (the default stage with the seed budget "
             "its power rule asks for, uncapped: minutes), or a path to a JSON config file",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="device of the LM stage (default: auto)")
    return parser


def _list_claims() -> str:
    width = max(len(c.id) for c in CLAIMS)
    lines = []
    for c in CLAIMS:
        lines.append(f"{c.id.ljust(width)}  {c.paper_ref}" + ("  [slow: not in --all at the default LM config]"
                                                             if c.slow else ""))
        lines.append(f"{' ' * width}  {c.title}: {c.statement}")
    return "\n".join(lines)


def run_main(argv: list[str]) -> int:
    """``paper_checks.py --all | --only | --list``; a bad argument is one line on stderr and exit 2.

    (SystemExit(2), as argparse itself exits, without its usage block.)
    """
    return exit_2_on_bad_input(_run_main, argv)


def exit_2_on_bad_input(work: Callable[[Any], int], argv) -> int:
    """``work(argv)``, with a :class:`BadInput` ("prog: message") printed as one line "prog: error: message" on
    stderr and SystemExit(2), as argparse itself exits, without its usage block. Serves every subcommand's main."""
    try:
        return work(argv)
    except BadInput as err:
        prog, _, message = str(err).partition(": ")
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def run_in_out_folder(parser: argparse.ArgumentParser, out: Path, device: str, outputs: tuple[str, ...],
                      work: Callable[[Any], int], what: str) -> int:
    """Check ``--device`` and the ``--out`` folder up front (a bad one must not cost a run's results; ``outputs``
    are the files the run will rename into ``out``), then run ``work(staged)`` with its files going to the staging
    folder under the lock on ``out`` (:class:`dpo_rlhf_checks.outdir.StagedOutput`). Ctrl-C becomes
    :class:`Interrupted`, saying whether ``what`` was already written; a second run into ``out`` is an argument
    error. Serves ``--all``/``--only`` and ``lm-map``."""
    from dpo_rlhf_checks.outdir import OutputBusy, StagedOutput, blocked_outputs

    for problem in (device_problem(device), output_dir_problem(out)):
        if problem is not None:
            parser.error(("--device: " if problem.startswith("cuda") else "--out: ") + problem)
    problem = blocked_outputs(out, outputs)
    if problem is not None:
        parser.error(f"--out: {problem}")
    try:
        with StagedOutput(out) as staged:  # the lock on --out, and the staging folder inside it
            try:
                return work(staged)
            except KeyboardInterrupt:
                if staged.committed:
                    raise Interrupted(f"interrupted after {what} were written into {out}") from None
                raise Interrupted(f"interrupted; nothing written: {out} is as it was before this run") from None
    except OutputBusy as err:
        parser.error(f"--out: {err}")


def _run_main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(_list_claims())
        return 0
    if args.only:
        twice = sorted({i for i in args.only if args.only.count(i) > 1})
        if twice:
            parser.error(f"--only: claim id(s) given more than once: {', '.join(twice)}")
        try:
            claims = [get_claim(i) for i in args.only]
        except KeyError as err:
            parser.error(err.args[0])
    else:
        claims = list(CLAIMS)
    from toy_lm.config import load_config  # the one place that knows the presets and the file format

    try:
        load_config(args.lm_config)  # a bad preset name or config file is an argument error, before any check runs
    except ValueError as err:
        parser.error(f"--lm-config: {err}")
    problem = seed_problem(args.seed)
    if problem is not None:
        parser.error(f"--seed: {problem}")
    problem = lm_threads_problem()
    if problem is not None:
        parser.error(problem)
    return run_in_out_folder(parser, args.out, args.device, ("report.json", "report.md", "report.tex", "lm_records.npz"),
                             lambda staged: _run_staged(args, claims, staged), "the results")


def skips_slow(args: argparse.Namespace) -> bool:
    """Whether this run lists the registry's slow claims as not-checked instead of running them: ``--all`` at the
    default LM config (the run kept within its time budget). ``--only ID`` runs what it names, and ``--all`` with
    another ``--lm-config`` (map, large, a file: a long LM run already) runs every claim."""
    return bool(args.all) and args.lm_config == "default"


def _run_staged(args: argparse.Namespace, claims: list, staged) -> int:
    """Run ``claims`` with every file going to ``staged.staging``, then rename them into ``args.out``."""
    from dpo_rlhf_checks.report import ERROR_VERDICT, format_table, run_claims, write_report

    ctx = CheckContext(seed=args.seed, quick=args.quick, out_dir=staged.staging, lm_config=args.lm_config,
                       device=args.device)
    report = run_claims(claims, ctx, skip_slow=skips_slow(args))
    reports = list(write_report(report, staged.staging))
    if args.format == "latex":
        from dpo_rlhf_checks.report_tex import write_latex

        reports.append(write_latex(report, staged.staging))
    names = [p.name for p in reports]
    staged.commit(last=names)  # figures first, the reports last
    written = [args.out / n for n in names]
    print(format_table(report))
    print("wrote " + ", ".join(str(p) for p in written))
    crashed = [c["id"] for c in report["claims"] if c["verdict"] == ERROR_VERDICT]
    if crashed:
        print(f"error: checks crashed: {', '.join(crashed)} (tracebacks in {written[0]})", file=sys.stderr)
        return 1
    return 0


def _prog(argv: list[str]) -> str:
    return "paper_checks.py" + (f" {argv[0]}" if argv and argv[0] in SUBCOMMANDS else "")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            module = importlib.import_module(SUBCOMMANDS[argv[0]])
            return int(module.main(argv[1:]) or 0)
        return run_main(argv)
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not raise again
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe
    except KeyboardInterrupt as err:  # SIGINT (Ctrl-C): one line, no traceback, the shell's 128 + SIGINT
        print(f"{_prog(argv)}: {str(err) or 'interrupted'} (SIGINT)", file=sys.stderr, flush=True)
        return 130
