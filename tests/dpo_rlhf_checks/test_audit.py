"""``paper_checks.py audit``: planted answers, both formats, every bad-input kind, --skip-invalid."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpo_rlhf_checks import audit as A

ROOT = Path(__file__).resolve().parents[2]
N = 1000
# Planted by synthetic_pairs(N, beta=0.1, violation_rate=0.3, reference_accuracy=0.4, undesirable_rate=0.2).
PLANTED = {
    "n_pairs": 1000,
    "reference_ranking_accuracy": 0.4,
    "assumption_violation_rate@0.1": 0.3,
    "idealized_ranking_accuracy@0.1": 0.7,
    "policy_ranking_accuracy": 0.8,
    "frac_in_undesirable": 0.2,
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    cols = A.synthetic_pairs(N, seed=3)
    return cols, A.write_pairs(folder / "pairs.jsonl", cols), A.write_pairs(folder / "pairs.csv", cols)


def run_json(capsys, *argv) -> dict:
    assert A.main([*map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_error(capsys, path, *extra) -> str:
    code = A.main([str(path), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_planted_answers_exact(sample, capsys, fmt):
    cols, jsonl, csv_path = sample
    r = run_json(capsys, jsonl if fmt == "jsonl" else csv_path, "--beta", "0.1", "1")
    assert r["format"] == fmt and r["n_pairs"] == PLANTED["n_pairs"] and r["rows_read"] == N
    assert r["skipped_rows"]["count"] == 0 and r["blank_lines"] == 0
    assert r["reference_ranking_accuracy"] == PLANTED["reference_ranking_accuracy"]
    assert r["assumption_violation_rate"]["0.1"] == PLANTED["assumption_violation_rate@0.1"]
    assert r["idealized_ranking_accuracy"]["0.1"] == PLANTED["idealized_ranking_accuracy@0.1"]
    assert r["policy_ranking_accuracy"] == PLANTED["policy_ranking_accuracy"]
    assert r["frac_in_undesirable"] == PLANTED["frac_in_undesirable"]
    assert r["reward_agreement_rate"] == 1.0
    # Every target-form certificate is the equivalence delta > m: 1 - frac_in_U where it resolves in float64.
    for name in ("dpo", "cpo_clip", "cpo_smooth"):
        for key in ("0.1", "1"):
            assert r["certified_fraction"][name][key] == 0.8
            assert r["certificate_mismatch_fraction"][name][key] == 0.0
    # cpo_clip (T = max(delta_ref, 0)) and cpo_smooth (T > gamma > 0): loss < log 2 certifies every pair;
    # DPO only the pairs whose reference already prefers y_w.
    assert r["log2_certifies_fraction"]["cpo_clip"]["0.1"] == 1.0
    assert r["log2_certifies_fraction"]["cpo_smooth"]["0.1"] == 1.0
    assert r["log2_certifies_fraction"]["dpo"]["0.1"] == 0.4


def test_values_against_independent_numpy(sample, capsys):
    cols, jsonl, _ = sample
    r = run_json(capsys, jsonl, "--beta", "0.1", "--beta", "1")
    d_ref = cols["ref_chosen_logps"] - cols["ref_rejected_logps"]
    d_pol = cols["chosen_logps"] - cols["rejected_logps"]
    dr = cols["chosen_reward"] - cols["rejected_reward"]
    assert r["assumption_violation_rate"]["1"] == pytest.approx(np.mean(d_ref + dr / 1.0 <= 0), abs=0)
    assert 0.3 < r["assumption_violation_rate"]["1"] < 1.0  # a larger beta violates more (delta_ref < 0 here)
    # critical loss (docs/theory.md §7): log(1 + (pi_ref(y_w)/pi_ref(y_l))^beta), numpy's logaddexp, not the library
    lcrit = np.logaddexp(0.0, 0.1 * d_ref)
    assert r["critical_loss"]["0.1"]["p50"] == pytest.approx(np.median(lcrit), rel=1e-12)
    assert r["critical_loss"]["0.1"]["max"] == pytest.approx(lcrit.max(), rel=1e-12)
    dpo = np.logaddexp(0.0, -1.0 * (d_pol - d_ref))
    assert r["dpo_loss"]["1"]["mean"] == pytest.approx(dpo.mean(), rel=1e-12)
    assert r["dpo_loss"]["1"]["p95"] == pytest.approx(np.quantile(dpo, 0.95), rel=1e-12)
    # per-token means: logps / length
    lc, lr = cols["chosen_length"], cols["rejected_length"]
    m_ref = cols["ref_chosen_logps"] / lc - cols["ref_rejected_logps"] / lr
    m_pol = cols["chosen_logps"] / lc - cols["rejected_logps"] / lr
    ptm = r["per_token_mean"]
    assert ptm["reference_ranking_accuracy"] == np.mean(m_ref >= 0)
    assert ptm["assumption_violation_rate"]["0.1"] == np.mean(0.1 * m_ref + dr <= 0)
    assert ptm["frac_in_undesirable"] == np.mean((m_ref < m_pol) & (m_pol < 0))
    assert ptm["certified_fraction"]["cpo_easy"]["0.1"] == np.mean(m_pol > 0)
    assert r["sum_vs_mean_ranking_disagreement"]["reference"] == np.mean((d_ref >= 0) != (m_ref >= 0))
    # cpo_eq17 on summed log-probabilities: m_ref = gamma (1/pi_w + 1/pi_l) ~ e^200 swamps delta in float64,
    # the loss cannot resolve delta; the audit shows it instead of hiding it.
    assert r["certificate_mismatch_fraction"]["cpo_eq17"]["0.1"] > 0.5
    assert ptm["certificate_mismatch_fraction"]["cpo_eq17"]["0.1"] == 0.0


def test_json_keys_and_settings(sample, capsys):
    _, jsonl, _ = sample
    r = run_json(capsys, jsonl, "--margin", "0.5", "--cpo-gamma", "0.25")
    for key in ("n_pairs", "reference_ranking_accuracy", "assumption_violation_rate", "idealized_ranking_accuracy",
                "policy_ranking_accuracy", "frac_in_undesirable", "critical_loss", "dpo_loss", "certified_fraction",
                "per_token_mean", "settings", "skipped_rows"):
        assert key in r
    assert r["settings"]["betas"] == [0.1] and r["settings"]["margin"] == 0.5
    assert r["settings"]["cpo_variants"]["cpo_smooth"] == {"gamma": 0.25, "tau": 2.0, "alpha": 1.0, "delta": "as given"}
    assert r["settings"]["cpo_variants"]["cpo_clip"]["margin"] == 0.5
    assert set(r["critical_loss"]["0.1"]) == {"min", "p05", "p25", "p50", "p75", "p95", "max", "mean"}
    cols = A.synthetic_pairs(N, seed=3)
    delta = cols["chosen_logps"] - cols["rejected_logps"]
    assert r["certified_fraction"]["dpo"]["0.1"] == np.mean(delta > 0.5)


def test_printed_summary_names_parameters(sample, capsys):
    _, _, csv_path = sample
    assert A.main([str(csv_path), "--beta", "0.1", "1"]) == 0
    out = capsys.readouterr().out
    assert summary_rows(out)["assumption violated (beta delta_ref + dr <= 0)"][0] == "0.3000"
    assert "cpo_smooth(gamma=0.5, tau=2.0, alpha=1.0" in out and "certificate margin m = 0" in out


def test_reference_only_file(tmp_path, capsys):
    path = tmp_path / "ref.csv"
    path.write_text("ref_rejected_logps,ref_chosen_logps,prompt\n-2,-1,a\n-1,-3,b\n-5,-5,c\n")
    r = run_json(capsys, path)
    assert r["n_pairs"] == 3 and r["reference_ranking_accuracy"] == pytest.approx(2 / 3)
    assert r["assumption_violation_rate"] is None and r["policy_ranking_accuracy"] is None
    assert "chosen_reward" in r["unavailable"]["assumption_violation_rate"]
    assert r["critical_loss"]["0.1"]["min"] == pytest.approx(np.logaddexp(0, 0.1 * -2.0), rel=1e-12)


def test_figures_written(sample, tmp_path, capsys):
    _, jsonl, _ = sample
    r = run_json(capsys, jsonl, "--out", tmp_path / "figs")
    names = sorted(Path(f).name for f in r["figures"])
    assert names == ["audit_delta_ref.pdf", "audit_delta_ref.png", "audit_violation_rate.pdf",
                     "audit_violation_rate.png"]
    assert all(Path(f).stat().st_size > 1000 for f in r["figures"])


def test_chunk_boundaries_and_slow_path_agree(sample, tmp_path, capsys):
    cols, jsonl, csv_path = sample
    def comparable(result):
        result["settings"].pop("json_parser")  # "json" / "orjson" for JSON Lines, None for CSV
        return {k: v for k, v in result.items() if k not in ("file", "format")}

    fast = comparable(run_json(capsys, csv_path))
    for path in (jsonl, csv_path):
        assert comparable(run_json(capsys, path, "--chunk-rows", "7")) == fast
        assert comparable(run_json(capsys, path)) == fast
    # Quoted cells (commas, a line break) go through the csv module; numbers and line numbers stay right.
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('prompt,ref_chosen_logps,ref_rejected_logps\n"a, b",-1,-2\n"two\nlines",-3,-1\nc,-2,-2\n'
                      '"x",-1,oops\n')
    line = run_error(capsys, quoted)
    assert "row 4 (line 6), column 'ref_rejected_logps'" in line and "non-numeric value 'oops'" in line
    r = run_json(capsys, quoted, "--skip-invalid")
    assert r["n_pairs"] == 3 and r["reference_ranking_accuracy"] == pytest.approx(2 / 3)


HEADER = "ref_chosen_logps,ref_rejected_logps,chosen_reward,rejected_reward,chosen_length,rejected_length"
GOOD_CSV = "-1.5,-2.0,1.0,0.0,10,12"
GOOD_JSON = {"ref_chosen_logps": -1.5, "ref_rejected_logps": -2.0, "chosen_reward": 1.0, "rejected_reward": 0.0,
             "chosen_length": 10, "rejected_length": 12}

# kind -> (CSV data row, JSON Lines row, the column named, words in the message); the bad row is data row 3.
BAD = {
    "missing value": ("-1,,1,0,10,12", {k: v for k, v in GOOD_JSON.items() if k != "ref_rejected_logps"},
                      "ref_rejected_logps", "missing value"),
    "non-numeric": ("-1,-2,high,0,10,12", {**GOOD_JSON, "chosen_reward": "high"}, "chosen_reward", "non-numeric"),
    "nan": ("-1,-2,1,nan,10,12", {**GOOD_JSON, "rejected_reward": float("nan")}, "rejected_reward", "not a finite"),
    "positive logp": ("0.25,-2,1,0,10,12", {**GOOD_JSON, "ref_chosen_logps": 0.25}, "ref_chosen_logps",
                      "positive log-probability"),
    "zero length": ("-1,-2,1,0,0,12", {**GOOD_JSON, "chosen_length": 0}, "chosen_length", "whole number > 0"),
    "negative length": ("-1,-2,1,0,10,-3", {**GOOD_JSON, "rejected_length": -3}, "rejected_length",
                        "whole number > 0"),
}


def write_bad(tmp_path, fmt, bad_row) -> Path:
    path = tmp_path / f"bad.{fmt}"
    if fmt == "csv":
        path.write_text("\n".join([HEADER, GOOD_CSV, GOOD_CSV, bad_row, GOOD_CSV]) + "\n")
    else:
        rows = [GOOD_JSON, GOOD_JSON, bad_row, GOOD_JSON]
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_bad_value_names_row_and_column(tmp_path, capsys, fmt, kind):
    csv_row, json_row, column, words = BAD[kind]
    path = write_bad(tmp_path, fmt, csv_row if fmt == "csv" else json_row)
    line = run_error(capsys, path)
    expected_line = 4 if fmt == "csv" else 3  # the CSV header is line 1
    assert f"row 3 (line {expected_line}), column '{column}'" in line, line
    assert words in line, line
    r = run_json(capsys, path, "--skip-invalid")
    assert r["n_pairs"] == 3 and r["rows_read"] == 4 and r["skipped_rows"]["count"] == 1
    examples = r["skipped_rows"]["examples"]
    assert len(examples) == 1 and f"row 3 (line {expected_line})" in examples[0]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_malformed_line(tmp_path, capsys, fmt):
    bad = "-1,-2,1,0" if fmt == "csv" else '{"ref_chosen_logps": -1, "ref_rejected_logps": '
    path = write_bad(tmp_path, fmt, bad)
    line = run_error(capsys, path)
    assert "row 3 (line" in line
    assert ("4 fields, the header has 6" if fmt == "csv" else "malformed JSON") in line
    r = run_json(capsys, path, "--skip-invalid")
    assert r["skipped_rows"]["by_reason"] == {"malformed line": 1} and r["n_pairs"] == 3


def test_missing_column(tmp_path, capsys):
    path = tmp_path / "nocol.csv"
    path.write_text("ref_chosen_logps,chosen_reward,rejected_reward\n-1,1,0\n")
    assert "line 1 (header): missing column 'ref_rejected_logps'" in run_error(capsys, path)
    half = tmp_path / "half.jsonl"
    half.write_text('{"ref_chosen_logps": -1, "ref_rejected_logps": -2, "chosen_logps": -1}\n')
    assert "column 'chosen_logps' is given without 'rejected_logps'" in run_error(capsys, half)
    later = tmp_path / "later.jsonl"
    later.write_text('{"ref_chosen_logps": -1, "ref_rejected_logps": -2}\n'
                     '{"ref_chosen_logps": -1, "ref_rejected_logps": -2, "chosen_reward": 1, "rejected_reward": 0}\n')
    message = run_error(capsys, later)
    assert "row 2 (line 2), column 'chosen_reward': this column is absent from the first row" in message


@pytest.mark.parametrize("content,words", [
    ("", "empty file"),
    ("\n\n", "empty file"),
    (HEADER + "\n", "no data rows (only a header)"),
])
def test_empty_files(tmp_path, capsys, content, words):
    for suffix in (".csv", ".jsonl"):
        if "only a header" in words and suffix == ".jsonl":
            continue
        path = tmp_path / f"empty{suffix}"
        path.write_text(content)
        assert words in run_error(capsys, path)
        assert words in run_error(capsys, path, "--skip-invalid")


def test_skip_invalid_counts_by_reason(tmp_path, capsys):
    rows = [GOOD_JSON] * 10
    rows[2] = {**GOOD_JSON, "ref_chosen_logps": 1.0}
    rows[5] = "not json"
    rows[7] = {**GOOD_JSON, "chosen_length": 2.5}
    rows[8] = {**GOOD_JSON, "rejected_reward": None}
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows) + "\n")
    assert "row 3 (line 3), column 'ref_chosen_logps'" in run_error(capsys, path)
    r = run_json(capsys, path, "--skip-invalid")
    assert r["n_pairs"] == 6 and r["rows_read"] == 10 and r["blank_lines"] == 1
    assert r["skipped_rows"]["count"] == 4
    assert r["skipped_rows"]["by_reason"] == {"positive log-probability": 1, "malformed line": 1,
                                              "non-positive or fractional length": 1, "missing value": 1}
    only_bad = tmp_path / "allbad.jsonl"
    only_bad.write_text("oops\n[1]\n")
    assert "all 2 data rows are invalid" in run_error(capsys, only_bad, "--skip-invalid")


def test_bad_arguments_exit_2(sample, capsys):
    _, jsonl, _ = sample
    for argv, needle in ((["--beta", "0"], "finite number > 0, got 0.0"), (["--beta", "nan"], "got nan"),
                         (["--margin", "-1"], "margin must be a finite number >= 0, got -1.0"),
                         (["--beta", "0.1", "0.1"], "duplicate beta"),
                         # -inf is a value of --beta, not an unknown option (issue 11)
                         (["--beta", "-inf"], "got -inf"), (["--beta", "0.1", "-1e-3"], "got -0.001"),
                         (["--bogus"], "unrecognized arguments: --bogus")):
        line = run_error(capsys, jsonl, *argv)  # one line: no 7-line usage block
        assert needle in line and "usage" not in line, line
    line = run_error(capsys, jsonl, "--beta", "9" * 400)
    assert len(line) < 200, line  # a 400-digit value is not echoed whole
    assert "No such file" in run_error(capsys, jsonl.with_name("absent.jsonl"))


def test_cli_end_to_end_no_traceback(tmp_path):
    path = write_bad(tmp_path, "csv", BAD["positive logp"][0])
    proc = subprocess.run([sys.executable, str(ROOT / "paper_checks.py"), "audit", str(path)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: {path}: row 3 (line 4), column 'ref_chosen_logps': a positive "
                                   "log-probability (a log-probability is <= 0), got 0.25")


def test_bom_crlf_sniffing_and_json_array(tmp_path, capsys):
    csv_path = tmp_path / "excel.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfref_chosen_logps,ref_rejected_logps\r\n-1,-2\r\n-3,-1\r\n-2,-2\r\n")
    r = run_json(capsys, csv_path)
    assert r["format"] == "csv" and r["n_pairs"] == 3 and r["reference_ranking_accuracy"] == pytest.approx(2 / 3)
    sniffed = tmp_path / "pairs.dat"
    sniffed.write_bytes(b'\xef\xbb\xbf{"ref_chosen_logps": -1, "ref_rejected_logps": -2}\r\n'
                        b'{"ref_chosen_logps": -3, "ref_rejected_logps": -1}\r\n')
    r = run_json(capsys, sniffed)
    assert r["format"] == "jsonl" and r["n_pairs"] == 2 and r["reference_ranking_accuracy"] == 0.5
    forced = run_json(capsys, sniffed, "--input-format", "jsonl")
    assert forced["n_pairs"] == 2
    array = tmp_path / "array.json"
    array.write_text('[{"ref_chosen_logps": -1, "ref_rejected_logps": -2}]\n')
    assert "line 1: a JSON array, not JSON Lines" in run_error(capsys, array)


# ---------------------------------------------------------------------------------------------------------------
# Issue 11


def test_out_checked_before_the_work(sample, tmp_path, capsys):
    _, jsonl, _ = sample
    target = tmp_path / "figs"
    target.write_text("a file")
    assert "--out: " in run_error(capsys, jsonl, "--out", str(target)) and target.read_text() == "a file"
    assert "--out: cannot write into /proc/x" in run_error(capsys, jsonl, "--out", "/proc/x")
    assert capsys.readouterr().out == ""


def test_duplicate_key_is_a_bad_row(tmp_path, capsys):
    path = tmp_path / "dup.jsonl"
    good = '{"ref_chosen_logps": -1, "ref_rejected_logps": -2}\n'
    path.write_text(good * 3 + '{"ref_chosen_logps": -1, "ref_rejected_logps": -2, "ref_rejected_logps": -9}\n')
    line = run_error(capsys, path)
    assert "row 4 (line 4)" in line and "duplicate key 'ref_rejected_logps'" in line
    r = run_json(capsys, path, "--skip-invalid")
    assert r["n_pairs"] == 3 and r["skipped_rows"]["by_reason"] == {"duplicate key": 1}
    # in the first row too, and a duplicate of an ignored column
    path.write_text('{"ref_chosen_logps": -1, "ref_chosen_logps": -5, "ref_rejected_logps": -2}\n' + good)
    assert "row 1 (line 1)" in run_error(capsys, path)


def test_skip_invalid_takes_columns_from_the_first_valid_row(tmp_path, capsys):
    path = tmp_path / "first_bad.jsonl"
    path.write_text('{"ref_chosen_logps": "x", "ref_rejected_logps": -2, "chosen_logps": -1}\n'
                    + '{"ref_chosen_logps": -1, "ref_rejected_logps": -2}\n' * 2
                    + '{"ref_chosen_logps": -3, "ref_rejected_logps": -2}\n')
    r = run_json(capsys, path, "--skip-invalid")
    assert r["n_pairs"] == 3 and r["skipped_rows"]["count"] == 1 and r["rows_read"] == 4
    assert r["reference_ranking_accuracy"] == pytest.approx(2 / 3)
    assert r["columns"] == ["ref_chosen_logps", "ref_rejected_logps"]


def test_huge_log_probabilities_never_give_inf_or_nan(tmp_path, capsys):
    path = tmp_path / "huge.jsonl"
    rows = [{"ref_chosen_logps": -1.7e308, "ref_rejected_logps": -1.0, "chosen_logps": -1.0,
             "rejected_logps": -1.7e308}] + [{"ref_chosen_logps": -1.0, "ref_rejected_logps": -2.0,
                                             "chosen_logps": -1.0, "rejected_logps": -2.0}] * 3
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = run_error(capsys, path)
    assert "row 1 (line 1), column 'ref_chosen_logps': a log-probability below -1e+300" in line
    r = run_json(capsys, path, "--skip-invalid")
    assert r["n_pairs"] == 3 and r["dpo_loss"]["0.1"]["mean"] == pytest.approx(np.log(2))
    # in range per row, but beta times the difference overflows: a clear error naming the statistic
    rows[0] = {"ref_chosen_logps": -1.0, "ref_rejected_logps": -1e300, "chosen_logps": -1e300,
               "rejected_logps": -1.0}  # beta (delta - delta_ref) = -2e310: the DPO loss is inf
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = run_error(capsys, path, "--beta", "1e10")
    assert "is inf in float64" in line or "is nan in float64" in line


def summary_rows(out: str) -> dict[str, list[str]]:
    """label -> its numbers, from a printed summary (label and numbers are separated by two spaces or more)."""
    import re

    rows = {}
    for line in out.splitlines():
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) > 1 and all(re.fullmatch(r"-?[\d.]+(e[-+]?\d+)?|n/a", p) for p in parts[1:]):
            rows.setdefault(parts[0], parts[1:])
    return rows


def test_cpo_eq17_label_explains_the_float_mismatch(sample, capsys):
    _, jsonl, _ = sample
    assert A.main([str(jsonl), "--beta", "0.1"]) == 0
    out = capsys.readouterr().out
    rows = summary_rows(out)
    assert rows["policy ranks chosen first by more than m"] == ["0.8000"]
    assert rows["dpo"] == ["0.8000"]  # the first block: summed log-probabilities
    eq17 = rows.get("cpo_eq17 (rounding decides, see *)")
    if eq17 is not None:  # what float64 gives where rounding decides; the label and the footnote say so
        assert float(eq17[0]) < 0.8 and "* cpo_eq17: the loss is computed in float64" in out
    else:
        assert rows["cpo_eq17"] == ["0.8000"]


def test_summary_labels_are_plain_words(sample, capsys):
    """Issue 17 item 17: no formula shorthand in place of a sentence ("uncertified <= mean loss / min l_crit",
    "certified by loss: cpo_eq17 (float64 off*)" next to "loss < log 2 certifies")."""
    _, jsonl, _ = sample
    assert A.main([str(jsonl), "--beta", "0.1", "1"]) == 0
    out = capsys.readouterr().out
    for jargon in ("l_crit", "off*", "uncertified <=", "loss < log 2 certifies", "certified by loss:", "min l_crit",
                   "idealized ranking accuracy", "fraction in undesirable space U"):
        assert jargon not in out, jargon
    rows = summary_rows(out)
    for label in ("reference ranks the chosen response first", "RLHF optimum ranks the chosen response first",
                  "policy ranks the chosen response first", "pairs not proven right: at most the mean",
                  "critical loss: median", "in U: the policy moved toward the chosen"):
        assert label in rows, label
    assert "pairs that a loss below log 2 would prove ranked right (by more than m), per loss:" in out
    assert "pairs whose own loss proves the policy ranks them right (by more than m), per loss:" in out
    # The numbers line up: every row with a number at both betas ends in the same column.
    first_block = out.split("\n\n")[1].splitlines()
    widths = {len(line) for line in first_block if len(next(iter(summary_rows(line).values()), [])) == 2}
    assert len(widths) == 1 and len(first_block) > 20, widths


@pytest.mark.parametrize("value", ["9" * 400, '"' + "x" * 400 + '"'])
def test_long_values_are_cut_in_row_messages(tmp_path, capsys, value):
    path = tmp_path / "long.jsonl"
    path.write_text('{"ref_chosen_logps": ' + value + ', "ref_rejected_logps": -2}\n')
    line = run_error(capsys, path)
    assert "row 1 (line 1), column 'ref_chosen_logps'" in line and len(line) < 250 and "chars)" in line, line


def test_betas_that_print_alike_are_an_error(sample, capsys):
    """Results are keyed by 6 significant digits: 1 and 1.0000001 both print as "1" (they were merged silently)."""
    _, jsonl, _ = sample
    line = run_error(capsys, jsonl, "--beta", "1", "1.0000001")
    assert "1.0000001" in line and "both print as '1'" in line
    assert run_json(capsys, jsonl, "--beta", "1", "1.00001")["critical_loss"].keys() == {"1", "1.00001"}


# ---------------------------------------------------------------------------------------------------------------
# Issue 17 item 6: --pairs-out must not overwrite the input


def test_pairs_out_never_overwrites_the_input(sample, tmp_path, capsys):
    _, jsonl, _ = sample
    data = tmp_path / "in.jsonl"
    data.write_bytes(jsonl.read_bytes())
    link, hard = tmp_path / "link.jsonl", tmp_path / "hard.jsonl"
    link.symlink_to(data)
    hard.hardlink_to(data)
    (tmp_path / "sub").mkdir()
    before = data.read_bytes()
    for out in (data, tmp_path / "sub" / ".." / "in.jsonl", link, hard):
        line = run_error(capsys, data, "--pairs-out", str(out))
        assert line.startswith(f"error: paper_checks.py audit: --pairs-out: {out} is the input file {data}"), line
        assert data.read_bytes() == before  # nothing written, not even truncated
    assert capsys.readouterr().out == ""
    run_json(capsys, data, "--pairs-out", str(tmp_path / "flags.jsonl"))  # another file is fine
    assert (tmp_path / "flags.jsonl").read_text().count("\n") == N


# ---------------------------------------------------------------------------------------------------------------
# Issue 17 item 11: one strictness (conflicting alias columns, duplicate keys anywhere, a BOM)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_conflicting_alias_columns_are_an_error_naming_both(tmp_path, capsys, fmt):
    path = tmp_path / f"both.{fmt}"
    if fmt == "jsonl":
        path.write_text('{"ref_chosen_logps": -1, "ref_rejected_logps": -2, "reference_chosen_logps": -5, '
                        '"reference_rejected_logps": -2}\n' * 3)
    else:
        path.write_text("ref_chosen_logps,reference_chosen_logps,ref_rejected_logps\n-1,-5,-2\n" * 1)
    line = run_error(capsys, path)
    assert "both 'ref_chosen_logps' and 'reference_chosen_logps' are given" in line, line
    # A later row that brings the other name is a row with inconsistent columns, never read silently.
    later = tmp_path / "later.jsonl"
    later.write_text('{"ref_chosen_logps": -1, "ref_rejected_logps": -2}\n' * 3
                     + '{"ref_chosen_logps": -1, "ref_rejected_logps": -2, "reference_chosen_logps": -9}\n')
    line = run_error(capsys, later)
    assert "row 4 (line 4), column 'reference_chosen_logps'" in line and "absent from the first row" in line, line
    # Only the alias: read as ours, and said so.
    alias = tmp_path / "alias.jsonl"
    alias.write_text('{"reference_chosen_logps": -1, "reference_rejected_logps": -2}\n' * 3)
    r = run_json(capsys, alias)
    assert r["n_pairs"] == 3 and r["settings"]["column_aliases"] == {
        "reference_chosen_logps": "ref_chosen_logps", "reference_rejected_logps": "ref_rejected_logps"}


@pytest.mark.parametrize("where", [1, 2, 5000])
def test_a_duplicate_of_any_key_is_rejected_on_every_row(tmp_path, capsys, where):
    """The fast path once let a duplicate of a key the audit does not read through (json keeps the last value);
    the first row and the per-row parser rejected it. Now every row is judged the same."""
    good = '{"ref_chosen_logps": -1, "ref_rejected_logps": -2, "prompt": "a \\": b"}\n'
    dup = '{"ref_chosen_logps": -1, "ref_rejected_logps": -2, "prompt": "a", "prompt" : "b"}\n'
    path = tmp_path / "dup.jsonl"
    path.write_text(good * (where - 1) + dup + good * 3)
    line = run_error(capsys, path, "--chunk-rows", "64")
    assert f"row {where} (line {where})" in line and "duplicate key 'prompt'" in line, line
    r = run_json(capsys, path, "--skip-invalid", "--chunk-rows", "64")
    assert r["n_pairs"] == where + 2 and r["skipped_rows"]["by_reason"] == {"duplicate key": 1}
    nested = tmp_path / "nested.jsonl"  # keys of a nested object are no duplicates of the row's keys
    nested.write_text('{"ref_chosen_logps": -1, "ref_rejected_logps": -2, "meta": {"prompt": 1, "id": 2}}\n' * 300)
    assert run_json(capsys, nested, "--chunk-rows", "64")["n_pairs"] == 300


def test_a_bom_is_accepted_in_both_formats_and_read_as_without(tmp_path, capsys):
    rows = '{"ref_chosen_logps": -1, "ref_rejected_logps": -2}\n{"ref_chosen_logps": -3, "ref_rejected_logps": -1}\n'
    plain, bom = tmp_path / "plain.jsonl", tmp_path / "bom.jsonl"
    plain.write_text(rows)
    bom.write_bytes(b"\xef\xbb\xbf" + rows.encode())
    a, b = run_json(capsys, plain), run_json(capsys, bom)
    assert {k: v for k, v in a.items() if k != "file"} == {k: v for k, v in b.items() if k != "file"}


# ---------------------------------------------------------------------------------------------------------------
# Issue 17 item 18: a door for Python users who hold arrays


def test_from_arrays_gives_the_file_audit(sample, capsys):
    cols, jsonl, _ = sample
    config = A.AuditConfig(betas=(0.1, 1.0))
    from_file = A.audit(A.read_pairs(jsonl), config)
    from_arrays = A.audit_arrays(cols, config)
    assert from_arrays["file"] == "<arrays>" and from_arrays["format"] == "arrays"
    assert from_arrays["settings"]["json_parser"] is None
    strip = ("file", "format", "settings")
    assert {k: v for k, v in from_arrays.items() if k not in strip} == {
        k: v for k, v in from_file.items() if k not in strip}
    data = A.PairData.from_arrays({k: list(v) for k, v in cols.items()}, name="mine")  # sequences work too
    assert data.n_pairs == N and data.path.name == "mine" and data.fmt == "arrays"
    np.testing.assert_array_equal(data.columns["chosen_logps"], cols["chosen_logps"])
    alias = A.PairData.from_arrays({"reference_chosen_logps": [-1.0], "reference_rejected_logps": [-2.0]})
    assert alias.aliases_used == {"reference_chosen_logps": "ref_chosen_logps",
                                  "reference_rejected_logps": "ref_rejected_logps"}
    assert list(alias.columns) == ["ref_chosen_logps", "ref_rejected_logps"]


def test_from_arrays_checks_every_value_like_a_file():
    good = {"ref_chosen_logps": np.array([-1.0, -2.0, -3.0]), "ref_rejected_logps": np.array([-2.0, -1.0, -1.0]),
            "chosen_logps": np.array([-1.0, -1.0, 0.5]), "rejected_logps": np.array([-2.0, -2.0, -2.0])}
    with pytest.raises(A.AuditInputError, match=r"^row 3, column 'chosen_logps': a positive log-probability"):
        A.PairData.from_arrays(good)
    data = A.PairData.from_arrays(good, skip_invalid=True)
    assert data.n_pairs == 2 and data.skipped == {"positive log-probability": 1}
    bad = [({**good, "chosen_logps": good["chosen_logps"][:2]}, "columns of different lengths"),
           ({k: v for k, v in good.items() if k != "rejected_logps"}, "'chosen_logps' is given without"),
           ({"ref_chosen_logps": [-1.0]}, "missing column 'ref_rejected_logps'"),
           ({**good, "reference_chosen_logps": [-1.0, -1.0, -1.0]}, "both 'ref_chosen_logps' and"),
           ({**good, "ref_chosen_logps": np.ones((3, 1))}, "1-D array"),
           ({**good, "ref_chosen_logps": np.array(["a", "b", "c"])}, "numbers are needed"),
           ({"ref_chosen_logps": [], "ref_rejected_logps": []}, "no pairs"),
           ({**good, "ref_chosen_logps": [np.nan, -1.0, -1.0]}, "row 1, column 'ref_chosen_logps': not a finite")]
    for columns, message in bad:
        with pytest.raises(A.AuditInputError, match=re.escape(message)):
            A.PairData.from_arrays(columns)


def test_the_package_shows_the_flow_and_keeps_the_api():
    """Issue 17 item 18: dpo_rlhf_checks/audit is a package whose files follow read -> columns -> statistics ->
    report -> cli; every name of the old module is still imported from dpo_rlhf_checks.audit."""
    import importlib

    from dpo_rlhf_checks.audit import columns, read, report, statistics

    assert A.__file__.endswith("audit/__init__.py")
    for name in ("read", "columns", "statistics", "report", "cli", "synthetic"):
        assert importlib.import_module(f"dpo_rlhf_checks.audit.{name}").__doc__
    homes = {"read_pairs": read, "detect_format": read, "PairData": columns, "SpooledColumns": columns,
             "AuditConfig": statistics, "pair_statistics": statistics, "audit": report, "audit_arrays": report,
             "format_summary": report, "main": A.cli}
    for name, module in homes.items():
        assert getattr(A, name) is getattr(module, name), name
    for name in A.__all__:
        assert getattr(A, name) is not None, name
    # A file of the package is at most a third of the old 1,344 lines.
    from pathlib import Path

    sizes = {p.name: len(p.read_text().splitlines()) for p in Path(A.__file__).parent.glob("*.py")}
    assert max(sizes.values()) < 600, sizes


def test_tunable_constants_set_on_the_package_reach_their_module(sample, monkeypatch):
    _, jsonl, _ = sample
    monkeypatch.setattr(A, "STAT_CHUNK", 96)
    data = A.read_pairs(jsonl)
    assert [len(c["ref_chosen_logps"]) for c in data.chunks()][:2] == [96, 96]
    monkeypatch.setattr(A, "CHUNK_CHARS", 1000)
    from dpo_rlhf_checks.audit import read

    assert read.CHUNK_CHARS == 1000


def test_reward_and_reference_rates_with_ties_worked_by_hand():
    """Six pairs without a policy, ties on every boundary, each rate counted by hand: delta_ref = 0 ranks right
    (>= 0); dr = 0 does not agree with the reward (> 0); beta delta_ref + dr = 0 both violates the assumption
    (<= 0) and ranks right under the idealised policy (>= 0). The critical-loss quantiles equal np.quantile of
    softplus(beta delta_ref) computed here (a reference-only audit feeds the critical losses alone)."""
    rc = np.array([-1.0, -2.0, -1.0, -3.0, -1.0, -2.0])
    rr = np.array([-2.0, -1.0, -1.0, -1.0, -4.0, -1.0])  # delta_ref = 1, -1, 0, -2, 3, -1
    cw = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 1.0])
    cl = np.array([0.0, 0.0, 1.0, 0.5, 3.0, 0.0])  # dr = 1, 0, 1, 0, -2, 1
    r = A.audit_arrays({"ref_chosen_logps": rc, "ref_rejected_logps": rr, "chosen_reward": cw,
                        "rejected_reward": cl}, A.AuditConfig(betas=(0.5, 1.0)))
    assert r["n_pairs"] == 6
    assert r["reference_ranking_accuracy"] == 3 / 6  # delta_ref >= 0: pairs 1, 3, 5
    assert r["reward_agreement_rate"] == 3 / 6  # dr > 0: pairs 1, 3, 6 (not the ties 2 and 4)
    # beta = 1: beta delta_ref + dr = 2, -1, 1, -2, 1, 0; beta = 0.5: 1.5, -0.5, 1, -1, -0.5, 0.5
    assert r["assumption_violation_rate"] == {"0.5": 3 / 6, "1": 3 / 6}
    assert r["idealized_ranking_accuracy"] == {"0.5": 3 / 6, "1": 4 / 6}
    delta_ref = rc - rr
    for key, beta in (("0.5", 0.5), ("1", 1.0)):
        crit = np.logaddexp(0.0, beta * delta_ref)
        got = r["critical_loss"][key]
        assert got["min"] == pytest.approx(crit.min(), rel=1e-12) and got["max"] == pytest.approx(crit.max(), rel=1e-12)
        assert got["mean"] == pytest.approx(crit.mean(), rel=1e-12)
        for name, q in (("p05", 0.05), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p95", 0.95)):
            assert got[name] == pytest.approx(np.quantile(crit, q), rel=1e-12), (key, name)


@pytest.mark.parametrize("delta, bound", [
    (0.5, np.logaddexp(0.0, -0.5) / np.log(2.0)),  # mean loss / min l_crit = 0.684: the bound itself
    (-0.5, 1.0),  # 0.974 / 0.693 = 1.405: capped at 1
])
def test_uncertified_bound_from_the_mean_loss_worked_by_hand(delta, bound):
    """delta_ref = 0 for every pair, so l_crit = log 2 everywhere (its min); the DPO loss is softplus(-beta delta),
    beta = 1. Markov's bound on the uncertified fraction is min(1, mean loss / min l_crit): 0.684 below the cap,
    1 above it (a cap of 0.5 or 2, or the branch for min l_crit <= 0, gives another number)."""
    cols = {"ref_chosen_logps": np.array([-2.0, -3.0]), "ref_rejected_logps": np.array([-2.0, -3.0]),
            "chosen_logps": np.array([-2.0, -3.0]) + delta, "rejected_logps": np.array([-2.0, -3.0])}
    r = A.audit_arrays(cols, A.AuditConfig(betas=(1.0,)))
    assert r["critical_loss"]["1"]["min"] == pytest.approx(np.log(2.0), rel=1e-15)
    assert r["uncertified_bound_from_mean_dpo_loss"]["1"] == pytest.approx(bound, rel=1e-14)


def test_uncertified_bound_when_the_least_critical_loss_underflows_to_zero():
    """beta delta_ref = -1000: softplus(-1000) is 0 in float64, so min l_crit = 0 and Markov's bound says nothing:
    exactly 1 (the branch for min l_crit <= 0), not a division by zero."""
    cols = {"ref_chosen_logps": np.array([-1001.0, -2.0]), "ref_rejected_logps": np.array([-1.0, -2.0]),
            "chosen_logps": np.array([-1.0, -1.5]), "rejected_logps": np.array([-1.0, -2.0])}
    r = A.audit_arrays(cols, A.AuditConfig(betas=(1.0,)))
    assert r["critical_loss"]["1"]["min"] == 0.0
    assert r["uncertified_bound_from_mean_dpo_loss"]["1"] == 1.0


def test_policy_ranking_accuracy_counts_a_tie_as_ranked_right():
    """delta = 0, 1, -1: the ranking accuracy 1[delta >= 0] is 2/3 (a tie ranks right, Chen et al. 2024); the
    in-U fraction (delta_ref < delta < 0, delta_ref = -2) is 1/3."""
    cols = {"ref_chosen_logps": np.array([-3.0, -3.0, -3.0]), "ref_rejected_logps": np.array([-1.0, -1.0, -1.0]),
            "chosen_logps": np.array([-2.0, -1.0, -3.0]), "rejected_logps": np.array([-2.0, -2.0, -2.0])}
    r = A.audit_arrays(cols, A.AuditConfig(betas=(1.0,)))
    assert r["policy_ranking_accuracy"] == 2 / 3
    assert r["frac_in_undesirable"] == 1 / 3
