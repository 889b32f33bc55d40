"""The regime table of ``lm_map.md`` (``toy_lm.lm_map.map_table``) is a well-formed Markdown table.

A Markdown (GFM) table is only recognised when its delimiter row has exactly as many cells as its header row; with
fewer, the whole regime map renders as loose text with pipes. The stage is a stub (no training): the table's layout
does not depend on the numbers.
"""

from types import SimpleNamespace

from toy_lm.config import LMConfig, labels_of
from toy_lm.lm_map import map_table


def _cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip() for c in line[1:-1].split("|")]


def _stub_stage(cfg: LMConfig):
    regimes = {(b, o, m): {"beta_delta_ref_scale": 1.25, "labels": labels_of(m), "compared": m != "dpo",
                           "predicted_frac_in_U": 0.25, "observed_frac_in_U": 0.5}
               for b in cfg.betas for o in cfg.optimizers for m in cfg.methods}
    return SimpleNamespace(cfg=cfg, regime=lambda b, o, m: regimes[(b, o, m)])


def test_map_table_delimiter_row_has_one_cell_per_header_cell():
    """Pins the delimiter row of the LM regime map: one ``---`` per column (beta, scale, optimizer, labels and one
    per method; 4 + 10 = 14 at the default config's 10 methods), and every data row as wide, so the table renders.
    (a survivor of mutation: the delimiter written for 2 + methods columns gave 12 cells under a 14-cell header,
    and no test read the table.)"""
    cfg = LMConfig()
    lines = map_table(_stub_stage(cfg)).splitlines()
    header = _cells(lines[0])
    assert header == ["beta", "scale", "optimizer", "labels", *cfg.methods]
    assert len(header) == 14  # by hand: 4 fixed columns + the default config's 10 methods
    delimiter = _cells(lines[1])
    assert delimiter == ["---"] * 14, f"{len(delimiter)} delimiter cells under a {len(header)}-cell header"
    rows = lines[2:]
    assert len(rows) == len(cfg.betas) * len(cfg.optimizers) * 2  # one row per (beta, optimizer, label kind)
    assert all(len(_cells(r)) == 14 for r in rows), [len(_cells(r)) for r in rows]
    # the first row: beta 0.5, sgd, ordered labels; dpo (ordered) not compared (*), dpo_bt (BT labels) left empty
    first = _cells(rows[0])
    assert first[:4] == ["0.5", "1.2", cfg.optimizers[0], "ordered"]
    assert first[4] == "0.25 / 0.50*" and first[5] == ""
