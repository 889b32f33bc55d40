"""``python paper_checks.py atlas``: the U-atlas, one row per TRL preference loss and setting (docs/theory.md §16).

Each row is derived symbolically (:mod:`theory.gpo_atlas`) and measured by exact bandit gradient flow
(:mod:`toy_bandits.gpo_flow`); the two are compared column by column and a row whose methods disagree is marked
``DISAGREE``. The LM column (one slow-regime ordered SGD cell per loss, fraction in U predicted vs observed) comes
from ``toy_lm.atlas_lm.run_atlas_lm`` when that module is present, else it reads "not built"; ``--quick`` skips it.

    python paper_checks.py atlas [--out results] [--losses ipo,hinge] [--quick] [--seed 0]

Writes ``atlas.md``, ``atlas.json`` and ``figures/atlas_phase.{png,pdf}`` (beta delta after a long horizon against
beta delta_ref, per loss) and ``figures/atlas_time_in_U.{png,pdf}`` (the time-in-U laws on one plot) into --out,
through the same staging and lock as ``--all`` (:func:`dpo_rlhf_checks.cli.run_in_out_folder`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from dpo_rlhf_checks.cli import (MAX_SEED, OneLineParser, exit_2_on_bad_input, out_path, run_in_out_folder,
                                 seed_problem)

OUTPUTS = ("atlas.md", "atlas.json")
TOL_D = 1e-4  # beta D: symbolic vs bandit, absolute in t units
TOL_T = 1e-4  # time in U: symbolic law vs bandit exit time, relative
TOL_POP = 1e-5  # population t* at q = 0.88: symbolic vs bandit, absolute (summed units)
Q_POP = 0.88


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="paper_checks.py atlas",
                      description="The U-atlas: every TRL preference loss's ordered-pair fate, derived and measured.")
    p.add_argument("--out", type=out_path, default=Path("results"), help="output folder (default: results/)")
    p.add_argument("--losses", default=None,
                   help="comma-separated TRL loss names to include (CPOTrainer's with a cpo_ prefix); default: all")
    p.add_argument("--quick", action="store_true", help="no LM column, a smaller U0 grid (< 60 s)")
    p.add_argument("--seed", type=int, default=0, help=f"seed of the LM column, 0..{MAX_SEED} (default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    return exit_2_on_bad_input(_main, argv)


def select_rows(losses: str | None):
    """The atlas rows whose loss is in the comma-separated ``losses`` (all when None); an unknown name is a
    ValueError listing the valid ones."""
    from dpo_rlhf_checks.atlas_rows import ROWS
    from dpo_rlhf_checks.pref_losses import SPECS

    if losses is None:
        return list(ROWS)
    names = [x.strip() for x in losses.split(",") if x.strip()]
    if not names:
        raise ValueError("--losses names no loss")
    unknown = [x for x in names if x not in SPECS]
    if unknown:
        raise ValueError(f"unknown loss(es) {', '.join(unknown)}; valid: {', '.join(SPECS)}")
    return [r for r in ROWS if r.loss in names]


def _main(argv):
    parser = _parser()
    args = parser.parse_args(argv)
    problem = seed_problem(args.seed)
    if problem is not None:
        parser.error(f"--seed: {problem}")
    try:
        rows = select_rows(args.losses)
    except ValueError as err:
        parser.error(f"--losses: {err}")
    return run_in_out_folder(parser, args.out, "auto", OUTPUTS, lambda staged: _run(args, rows, staged),
                             "the atlas files")


def lm_name(setting) -> str | None:
    """The LM column's name of an atlas row: the loss, ``loss@f_divergence_type`` for an f-divergence row; None for
    the batch-coupled losses (no per-pair cell) and for rows whose loss parameters differ from the LM cell's."""
    if setting.loss in ("aot", "aot_unpaired"):
        return None
    return setting.loss if setting.f_div == "reverse_kl" else f"{setting.loss}@{setting.f_div}"


def lm_column(loss_names: list[str], seed: int, quick: bool) -> dict:
    """The LM column: ``toy_lm.atlas_lm.run_atlas_lm(loss_names)`` when that module is present; {"status": ...}
    otherwise. ``loss_names`` are :func:`lm_name`'s (per-pair losses only)."""
    if quick:
        return {"status": "skipped (--quick)"}
    try:
        from toy_lm import atlas_lm
    except ImportError:
        return {"status": "not built (toy_lm.atlas_lm is not in this checkout)"}
    here = Path(__file__).resolve().parent.parent
    where = Path(getattr(atlas_lm, "__file__", "") or "").resolve()
    if here not in where.parents:  # an editable install elsewhere can serve a module this checkout lacks; it would
        # run against this checkout's toy_lm (versions mixed)
        return {"status": f"not built (toy_lm.atlas_lm is not in this checkout; the one found is {where})"}
    return {"status": "ran", "rows": atlas_lm.run_atlas_lm(loss_names, seed=seed, progress=True)}


def compare(sym: dict, flo: dict, setting) -> dict:
    """Column-by-column agreement of the symbolic and the bandit row (None where a column is not compared)."""
    from theory import gpo_atlas as G

    out = {"class": sym["class"] == flo["class"]}
    if sym.get("beta_D") is not None and math.isfinite(sym["beta_D"]) and flo.get("beta_D") is not None:
        out["beta_D"] = abs(sym["beta_D"] - flo["beta_D"]) < TOL_D
    law = sym.get("_time_law_expr")
    if law is not None and flo.get("exit_times"):
        f = G.sp.lambdify(G.U0, law.subs(G.beta, setting.beta), "mpmath")
        errs = [abs(T - float(f(float(u)))) / float(f(float(u))) if T is not None else math.inf
                for u, T in flo["exit_times"].items()]
        out["time_law"] = max(errs) < TOL_T
        out["_time_law_max_rel_err"] = max(errs)
    if setting.f_div == "reverse_kl" and setting.loss not in G.REFERENCE_FREE and sym["class"] != "batch-coupled" \
            and setting.loss != "apo_down":
        ts = G.population_t_star(setting.loss, setting.params, Q_POP, setting.beta)
        nn = setting.n if setting.loss in G.PER_TOKEN else 1
        ts = float(nn * ts) if G.mpmath.isfinite(ts) else float(ts)
        fb = flo.get("population_t_at_q=0.88")
        out["population"] = (math.isinf(ts) and fb is not None and math.isinf(fb) and (ts > 0) == (fb > 0)) or (
            fb is not None and math.isfinite(ts) and math.isfinite(fb) and abs(ts - fb) < TOL_POP * max(1, abs(ts)))
        out["_population_symbolic"] = ts
    return out


def _run(args, rows, staged) -> int:
    from tqdm.auto import tqdm

    from figures.atlas import phase_figure, time_in_U_figure
    from dpo_rlhf_checks.result import to_jsonable
    from theory.gpo_atlas import symbolic_row
    from toy_bandits.gpo_flow import batch_flow, flow_row, phase_curve

    start = time.perf_counter()
    work = staged.staging
    table = {}
    bar = tqdm(total=len(rows), desc="atlas", unit="row", file=sys.stderr, dynamic_ncols=True)
    phase_x = [-6.0, -3.0, -1.0, 0.0, 1.0] if args.quick else [x / 2 for x in range(-16, 5)]
    phases = {}
    try:  # the bar is closed (its line ended) before an exception or Ctrl-C's one-line message is printed
        for s in rows:
            bar.set_postfix_str(s.key)
            sym = symbolic_row(s)
            flo = flow_row(s, quick=args.quick)
            table[s.key] = {"setting": {"loss": s.loss, "beta": s.beta, "params": s.params,
                                        "f_divergence_type": s.f_div, "f_alpha_divergence_coef": s.alpha_coef,
                                        "n": s.n},
                            "symbolic": {k: v for k, v in sym.items() if not k.startswith("_")},
                            "bandit": flo, "agree": compare(sym, flo, s)}
            if s.f_div == "reverse_kl" and sym["class"] not in ("batch-coupled",):
                phases[s.key] = phase_curve(s, phase_x)
            bar.update(1)
    finally:
        bar.close()
    batch = None
    if any(s.loss in ("aot", "aot_unpaired") for s in rows):
        bdr = [-6.0, -3.0, -1.0, 0.5, 2.0]
        batch = {loss: batch_flow(loss, 0.1, bdr, 1e7) for loss in ("aot", "aot_unpaired")
                 if any(s.loss == loss for s in rows)}
        law = [(-x + math.expm1(-x)) / (2 * 0.1 ** 2) if x < 0 else None for x in bdr]
        for b in batch.values():
            b["dpo_law"] = law
            diffs = [abs(T - L) / L for T, L in zip(b["t_exit"], law) if L is not None and T is not None]
            missing = any(L is not None and T is None for T, L in zip(b["t_exit"], law))
            b["max_rel_diff_to_dpo"] = math.inf if missing or not diffs else max(diffs)
        batch["beta_delta_ref"] = bdr
    names = list(dict.fromkeys(n for n in (lm_name(s) for s in rows) if n is not None))
    lm = lm_column(names, args.seed, args.quick)
    fig_dir = work / "figures"
    figures = phase_figure(phases, phase_x, fig_dir) + time_in_U_figure(table, fig_dir)
    payload = {"rows": table, "batch_coupled": batch, "lm": lm, "quick": args.quick,
               "seconds": time.perf_counter() - start,
               "figures": [Path(f).relative_to(work).as_posix() for f in figures]}
    (work / "atlas.json").write_text(json.dumps(to_jsonable(payload), indent=1))
    md = markdown(table, batch, lm, figures, work)
    (work / "atlas.md").write_text(md)
    staged.commit(last=OUTPUTS[::-1])
    disagree = [k for k, v in table.items() if not all(x for kk, x in v["agree"].items() if not kk.startswith("_"))]
    print(md)
    print(f"wrote {args.out / 'atlas.md'}, {args.out / 'atlas.json'} and {len(figures)} figure files "
          f"({time.perf_counter() - start:.0f} s)")
    if disagree:
        print(f"rows where the two methods disagree: {', '.join(disagree)}", file=sys.stderr)
    return 0


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "inf" if x == math.inf else ("-inf" if x == -math.inf else f"{x:.4g}")
    return str(x)


def markdown(table: dict, batch, lm: dict, figures, work: Path) -> str:
    lines = ["# The U-atlas: which preference loss avoids the failure?", "",
             "Ordered-pair training (every label y_w > y_l) from the reference. beta D: where delta ends, "
             "delta_end = delta_ref + D; the pair ends in U = {delta_ref < delta < 0} iff D > 0 and beta delta_ref < "
             "-beta D. Each row is derived symbolically (theory/gpo_atlas.py) and measured by bandit gradient flow "
             "(toy_bandits/gpo_flow.py); 'agree' lists the compared columns (all must match).", "",
             "| loss (TRL setting) | class | t_f | beta D (sym / flow) | time in U, T(U0) | BT population optimum "
             "| certificate | gradient factor in U | agree | LM |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lm_rows = lm.get("rows") or {}
    shown: set[str] = set()
    for key, v in table.items():
        sym, flo, agree = v["symbolic"], v["bandit"], v["agree"]
        ok = [k for k, x in agree.items() if not k.startswith("_") and x]
        bad = [k for k, x in agree.items() if not k.startswith("_") and not x]
        agree_txt = ("DISAGREE: " + ", ".join(bad)) if bad else ", ".join(ok)
        cls = sym["class"] if sym["class"] == flo["class"] else f"{sym['class']} / flow: {flo['class']}"
        st = v["setting"]
        name = st["loss"] if st["f_divergence_type"] == "reverse_kl" else f"{st['loss']}@{st['f_divergence_type']}"
        # the LM cell has its own beta and lengths: its row is shown on the row of its loss's first setting only
        lmr = lm_rows.get(name) if name not in shown else None
        shown.add(name)
        if lmr is not None:
            cell = lmr.get("cell") or {}
            lm_txt = (f"pred {_fmt(lmr.get('predicted_frac_in_U'))}, obs {_fmt(lmr.get('observed_frac_in_U'))}, "
                      f"obs - pred in {[_fmt(x) for x in (lmr.get('interval') or [])]}, {lmr.get('n_seeds')} seeds, "
                      f"decided {lmr.get('decided')} (beta {_fmt(cell.get('beta'))}, {cell.get('optimizer')}, "
                      f"{cell.get('steps')} steps)")
        else:
            lm_txt = lm.get("status", "-") if lm.get("status") != "ran" else "no row"
        if sym["class"] == "empty-U":  # no reference in h: where delta itself ends
            bd = f"beta delta_end: flow {_fmt(flo.get('beta_delta_end'))}"
        else:
            bd = f"{_fmt(sym.get('beta_D'))} / {_fmt(flo.get('beta_D'))}"
            if flo.get("beta_D_rest_trained") is not None and flo.get("beta_D") is not None and abs(
                    flo["beta_D_rest_trained"] - flo["beta_D"]) > 1e-6:
                bd += f" (rest trained: {_fmt(flo['beta_D_rest_trained'])})"
        lines.append(f"| `{key}` | {cls} | {_fmt(sym.get('t_f'))} | {bd} | {sym.get('time_law', '-')} | {sym.get('population', '-')} | "
                     f"{sym.get('certificate', '-')} | {sym.get('grad_factor', '-')} | {agree_txt} | {lm_txt} |")
    if batch:
        lines += ["", "## Batch-coupled losses (aot, aot_unpaired), bandit at batch level", "",
                  "One batch of pairs with beta delta_ref = " + ", ".join(_fmt(x) for x in batch["beta_delta_ref"])
                  + ", beta = 0.1, trained jointly (each pair's log-ratios free); no symbolic derivation "
                    "(the per-pair analysis does not apply).", ""]
        for loss in ("aot", "aot_unpaired"):
            if loss in batch:
                b = batch[loss]
                lines.append(f"- `{loss}`: first exit times from U {[_fmt(x) for x in b['t_exit']]} (DPO's per-pair "
                             f"law (U0 + e^U0 - 1)/(2 beta^2): {[_fmt(x) for x in b['dpo_law']]}, max rel. difference "
                             f"{_fmt(b['max_rel_diff_to_dpo'])}); final beta delta after t = 1e7: "
                             f"{[_fmt(0.1 * x) for x in b['delta_end']]}")
    lines += ["", "Figures: " + ", ".join(Path(f).name for f in figures if f.endswith(".png")), ""]
    return "\n".join(lines)
