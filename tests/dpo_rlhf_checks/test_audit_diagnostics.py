"""audit_diagnostics: the chosen-log-prob-fell fraction, the exact split of the implicit-reward accuracy
minus the ranking accuracy, per-pair flags (--pairs-out); audit reading other tools' column names."""

import json

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dpo_rlhf_checks import audit as A
from dpo_rlhf_checks import audit_diagnostics as D

logp = st.floats(min_value=-50, max_value=0, allow_nan=False)
# small integers make ties (delta = 0, delta = delta_ref) common: the split must stay exact there
tie_logp = st.integers(min_value=-4, max_value=0).map(float)


@given(st.lists(st.tuples(st.one_of(logp, tie_logp), st.one_of(logp, tie_logp), st.one_of(logp, tie_logp),
                          st.one_of(logp, tie_logp)), min_size=1, max_size=60))
@example([(0.0, 0.0, 0.0, 0.0)])
@example([(-1.0, -2.0, -2.0, -1.0)])
def test_split_is_an_exact_identity(rows):
    rc, rr, pc, pr = (np.array(c) for c in zip(*rows))
    d = D.diagnostics(rc, rr, pc, pr)
    s = d["accuracy_split"]
    assert s["holds_in_counts"]
    c = d["counts"]
    assert c["implicit_reward_accurate"] - c["policy_ranked_right"] == c["in_U"] - c["right_below_reference"]
    # against the definitions, pair by pair
    delta, dref = pc - pr, rc - rr
    assert c["in_U"] == int(np.sum((dref < delta) & (delta < 0)))
    assert c["right_below_reference"] == int(np.sum((0 <= delta) & (delta <= dref)))
    assert d["frac_chosen_logp_fell"] == pytest.approx(np.mean(pc < rc))
    # the two sets of the split are disjoint from each other
    f = D.pair_flags(rc, rr, pc, pr)
    assert not np.any(f["in_U"] & f["right_below_reference"])
    assert np.array_equal(f["in_U"], f["h_positive"] & ~((pc - pr) >= 0))


def test_planted_answers_of_the_example_file():
    data = A.read_pairs("examples/sample_pairs.jsonl")
    r = A.audit(data, A.AuditConfig())
    d = r["diagnostics"]
    assert d["accuracy_split"]["frac_in_U"] == pytest.approx(0.2)  # planted: 0.2 of pairs in U
    assert d["policy_ranking_accuracy"] == pytest.approx(0.8)  # planted
    assert d["policy_ranking_accuracy"] == r["policy_ranking_accuracy"]
    assert d["accuracy_split"]["frac_in_U"] == r["frac_in_undesirable"]
    assert d["implicit_reward_accuracy"] - d["policy_ranking_accuracy"] == pytest.approx(
        d["accuracy_split"]["frac_in_U"] - d["accuracy_split"]["frac_right_below_reference"], abs=1e-12)
    text = A.format_summary(r)
    assert "overstatement = frac in U - frac right-below-reference" in text


def test_the_regime_where_trainers_accuracy_overstates():
    """A policy that lowered both log-probs and sits in U on most pairs: rewards/accuracies near 1, ranking near 0."""
    n = 100
    rr = -np.linspace(20, 40, n)
    rc = rr - 3.0  # the reference prefers the rejected response by 3 nats
    pc, pr = rc - 5.0, rr - 7.0  # delta = -1: in U (delta_ref = -3 < -1 < 0); both log-probs fell
    d = D.diagnostics(rc, rr, pc, pr)
    assert d["implicit_reward_accuracy"] == 1.0
    assert d["policy_ranking_accuracy"] == 0.0
    assert d["accuracy_overstatement"] == 1.0 == d["accuracy_split"]["frac_in_U"]
    assert d["frac_chosen_logp_fell"] == 1.0 and d["frac_both_logps_fell"] == 1.0


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairs_out_flags_via_the_cli(tmp_path, capsys):
    out = tmp_path / "flags.jsonl"
    assert A.main(["examples/sample_pairs.jsonl", "--pairs-out", str(out)]) == 0
    flags = [json.loads(x) for x in open(out)]
    data = A.read_pairs("examples/sample_pairs.jsonl")
    c = data.columns
    assert len(flags) == data.n_pairs
    assert [f["in_U"] for f in flags] == list((c["ref_chosen_logps"] - c["ref_rejected_logps"] <
                                               c["chosen_logps"] - c["rejected_logps"]) &
                                              (c["chosen_logps"] - c["rejected_logps"] < 0))
    assert [f["chosen_logp_fell"] for f in flags] == list(c["chosen_logps"] < c["ref_chosen_logps"])
    capsys.readouterr()
    ref_only = _write(tmp_path / "ref.jsonl", [{"ref_chosen_logps": -1.0, "ref_rejected_logps": -2.0}])
    assert A.main([str(ref_only), "--pairs-out", str(tmp_path / "f2.jsonl")]) == 2
    assert "needs the policy's columns" in capsys.readouterr().err


def test_older_trl_column_names_are_read(tmp_path):
    data = A.read_pairs("examples/sample_pairs.jsonl")
    rows = [json.loads(x) for x in open("examples/sample_pairs.jsonl")]
    renamed = [{("reference_" + k[4:] if k.startswith("ref_") else k): v for k, v in r.items()} for r in rows]
    path = _write(tmp_path / "old_trl.jsonl", renamed)
    old = A.read_pairs(path)
    for k in data.columns:
        np.testing.assert_array_equal(old.columns[k], data.columns[k])
    r = A.audit(old, A.AuditConfig())
    assert r["settings"]["column_aliases"] == {"reference_chosen_logps": "ref_chosen_logps",
                                               "reference_rejected_logps": "ref_rejected_logps"}
    assert r["policy_ranking_accuracy"] == pytest.approx(0.8)
    csv = tmp_path / "old.csv"
    csv.write_text("reference_chosen_logps,reference_rejected_logps\n-1.0,-2.0\n-3.0,-2.0\n")
    assert A.audit(A.read_pairs(csv), A.AuditConfig())["reference_ranking_accuracy"] == 0.5
    bad = _write(tmp_path / "bad.jsonl", [{"reference_chosen_logps": 0.5, "reference_rejected_logps": -1.0}])
    with pytest.raises(A.AuditInputError, match="column 'reference_chosen_logps': a positive log-probability"):
        A.read_pairs(bad)


def test_authors_export_is_read_as_per_token_means(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(10):
        rc, rr, pc, pr = (-float(x) for x in rng.uniform(0.5, 3.0, 4))  # per-token means, nats per token
        rows.append({"loss": 0.7, "chosen_logps": pc, "rejected_logps": pr, "ref_chosen_logps": rc,
                     "ref_rejected_logps": rr, "logratios": pc - pr, "ref_logratios": rc - rr, "ada_margin": 0.1})
    data = A.read_pairs(_write(tmp_path / "export.jsonl", rows))
    assert data.logps_kind == "mean"
    r = A.audit(data, A.AuditConfig())
    assert "per-token MEAN" in r["settings"]["logps"]
    assert r["certified_fraction"]["cpo_easy"]["0.1"] is not None  # cpo_easy is defined on means: audited
    plain = A.audit(A.read_pairs(_write(tmp_path / "plain.jsonl", [{k: v for k, v in x.items() if k in A.RECOGNIZED}
                                                                     for x in rows])), A.AuditConfig())
    assert plain["settings"]["logps"].startswith("as given")
    assert "cpo_easy" not in plain["certified_fraction"]


def test_bad_pairs_out_is_an_argument_error_before_any_work(tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):  # the data must not even be read when --pairs-out cannot be written
        raise AssertionError("read_pairs ran before --pairs-out was checked")

    monkeypatch.setattr(A.cli, "read_pairs", no_work)  # where the command line calls it
    for bad, why in ((tmp_path, "is a folder"), (tmp_path / "missing" / "f.jsonl", "does not exist")):
        assert A.main(["examples/sample_pairs.jsonl", "--pairs-out", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--pairs-out" in err[0] and why in err[0], err


def test_flags_and_counts_of_pairs_worked_by_hand():
    """Seven pairs whose deltas are exact in binary, every flag and count worked out by hand, ties on both sides:
    delta_ref = 0 counts as the reference ranking right, delta = 0 as the policy ranking right (a flipped ranking
    flag of the other direction, or a mean in place of a count, changes one of these numbers)."""
    rows = [  # (rc, rr, pc, pr)
        (-1.0, -2.0, -2.0, -1.0),  # A: delta_ref +1, delta -1: flipped to wrong
        (-2.0, -1.0, -1.0, -2.0),  # B: delta_ref -1, delta +1: flipped to right, h > 0
        (-1.0, -1.0, -1.5, -1.0),  # C: delta_ref 0 (right), delta -0.5: flipped to wrong
        (-2.0, -1.0, -3.0, -3.0),  # D: delta_ref -1, delta 0 (right): flipped to right, h > 0
        (-1.0, -3.0, -0.5, -3.5),  # E: delta_ref 2, delta 3: not flipped, h > 0
        (-3.0, -1.0, -2.5, -1.5),  # F: delta_ref -2, delta -1: in U, h > 0
        (-1.0, -3.0, -1.5, -2.5),  # G: delta_ref 2, delta 1: right below the reference
    ]
    rc, rr, pc, pr = (np.array(col) for col in zip(*rows))
    flags = D.pair_flags(rc, rr, pc, pr)
    expected = {
        "ranking_flipped": [1, 1, 1, 1, 0, 0, 0],
        "in_U": [0, 0, 0, 0, 0, 1, 0],
        "h_positive": [0, 1, 0, 1, 1, 1, 0],
        "right_below_reference": [0, 0, 0, 0, 0, 0, 1],
        "chosen_logp_fell": [1, 0, 1, 1, 0, 0, 1],  # pc < rc
        "rejected_logp_fell": [0, 1, 0, 1, 1, 1, 0],  # pr < rr
    }
    for name, values in expected.items():
        assert flags[name].tolist() == [bool(v) for v in values], name
    counts = D.diagnostic_counts(rc, rr, pc, pr)
    assert counts == {"implicit_reward_accurate": 4, "policy_ranked_right": 4, "in_U": 1, "right_below_reference": 1,
                      "chosen_logp_fell": 4, "rejected_logp_fell": 4, "both_logps_fell": 1, "flipped_to_right": 2,
                      "flipped_to_wrong": 2}
    diag = D.diagnostics(rc, rr, pc, pr)
    assert diag["frac_ranking_flipped_to_right"] == 2 / 7 and diag["frac_ranking_flipped_to_wrong"] == 2 / 7
    assert diag["implicit_reward_accuracy"] == 4 / 7 and diag["policy_ranking_accuracy"] == 4 / 7
    assert diag["accuracy_overstatement"] == 0.0 and diag["accuracy_split"]["holds_in_counts"]
    assert diag["frac_both_logps_fell"] == 1 / 7 and diag["frac_chosen_logp_fell"] == 4 / 7
    assert diag["frac_rejected_logp_fell"] == 4 / 7
