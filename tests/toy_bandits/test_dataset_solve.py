"""``solve`` on data-set instances (labels, ranking, lengths): output and error contract."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from toy_bandits.dataset_solve import DatasetInstance, result_json

REPO = Path(__file__).resolve().parents[2]
BASE = {"pi_ref": [0.5, 0.3, 0.2], "reward": [1.0, 0.0, 0.5], "beta": 1.0, "margin": 0.0}


def _solve(data):
    out, code = result_json(DatasetInstance.from_json(data))
    return json.loads(json.dumps(out)), code  # what the CLI prints


def test_three_cycle_has_a_finite_minimiser_with_the_symbolic_values():
    out, code = _solve({**BASE, "labels": [[0, 1, 2], [1, 2, 1], [2, 0, 1]]})
    assert code == 0 and out["dpo_unbounded"] is None
    h = {(e["winner"], e["loser"]): e["h"] for e in out["dpo_empirical"]}
    assert h[(0, 1)] == pytest.approx(0.8392352499821958, abs=1e-9)
    assert h[(1, 2)] == pytest.approx(h[(2, 0)], abs=1e-12)
    assert out["rlhf_optimum"] == pytest.approx([0.68336822, 0.15083827, 0.16579351], abs=1e-8)


def test_chain_with_contradiction_is_unbounded_on_the_dominated_pair_only():
    out, _ = _solve({**BASE, "beta": 0.5, "labels": [[0, 1, 3], [1, 2, 1], [1, 0, 1]]})
    h = {(e["winner"], e["loser"]): e["h"] for e in out["dpo_empirical"]}
    assert h[(0, 1)] == pytest.approx(2 * 1.0986122886681098, rel=1e-10)  # log(3/1) / beta
    assert h[(1, 2)] is None
    assert "(1, 2)" in out["dpo_unbounded"] and "{2}" in out["dpo_unbounded"]
    assert [(p["winner"], p["loser"]) for p in out["pairs"]] == [(0, 1), (1, 2)]  # majority directions


def test_ranking_gives_adjacent_constraints_and_null_h_and_lengths_add_the_mean_conditions():
    out, _ = _solve({**BASE, "ranking": [0, 2, 1], "lengths": [30, 10, 12]})
    assert [(p["winner"], p["loser"]) for p in out["pairs"]] == [(0, 2), (2, 1)]
    assert all(e["h"] is None for e in out["dpo_empirical"]) and "ranking [0, 2, 1]" in out["dpo_unbounded"]
    ln = out["length_normalised"][0]
    assert ln["delta_mean_ref"] == pytest.approx(math.log(0.5) / 30 - math.log(0.2) / 12, rel=1e-12)  # |y_0|=30, |y_2|=12
    assert ln["mean_certificate_implies_summed"] is False


@pytest.mark.parametrize("beta, reward, expected", [
    # pair (2, 1): 1.0 * log(0.2/0.3) + (0.5 - 0.0) = -0.4055 + 0.5 = +0.0945 > 0 (delta_ref < 0, yet it holds)
    (1.0, [1.0, 0.0, 0.5], {(0, 2): True, (2, 1): True}),
    # pair (0, 2): 0.5 * log(0.5/0.2) + (0.0 - 0.5) = 0.4581 - 0.5 = -0.0419 < 0 (delta_ref > 0, yet it fails)
    (0.5, [0.0, 0.0, 0.5], {(0, 2): False, (2, 1): True}),
])
def test_length_output_summed_condition_is_beta_delta_ref_plus_dr(beta, reward, expected):
    """length_normalised's summed_condition is the population condition beta delta_ref + dr > 0 of each pair, not the
    sign of delta_ref alone (a survivor of mutation: with dr dropped it printed 'fails' for (2, 1) in the first case
    and 'holds' for (0, 2) in the second). Expected values by hand from pi_ref = (0.5, 0.3, 0.2), ranking [0, 2, 1];
    mean_condition by hand as well, lengths (30, 10, 12)."""
    out, _ = _solve({**BASE, "beta": beta, "reward": reward, "ranking": [0, 2, 1], "lengths": [30, 10, 12]})
    got = {(e["winner"], e["loser"]): e for e in out["length_normalised"]}
    assert set(got) == set(expected)
    pi, lens = [0.5, 0.3, 0.2], [30, 10, 12]
    for (w, l), want in expected.items():
        e = got[(w, l)]
        assert e["delta_ref"] == pytest.approx(math.log(pi[w] / pi[l]), rel=1e-12)
        assert e["summed_condition"] is want
        mean_value = beta * (math.log(pi[w]) / lens[w] - math.log(pi[l]) / lens[l]) + (reward[w] - reward[l])
        assert abs(mean_value) > 1e-3 and e["mean_condition"] is (mean_value > 0)


@pytest.mark.parametrize("extra, message", [
    ({"labels": [[0, 1, 0]]}, r"^labels\[0\]: count must be a whole number >= 1"),
    ({"labels": [[0, 1, 2.5]]}, r"^labels\[0\]: count"),
    ({"labels": [[0, 3, 1]]}, r"^labels\[0\]: loser index 3"),
    ({"labels": [[0, 1, 1]], "preferences": [[0, 1]]}, r"^labels: give exactly one of"),
    ({"ranking": [0, 0]}, r"^ranking: indices must be distinct"),
    ({"ranking": [0]}, r"^ranking: must rank at least 2"),
    ({"preferences": [[0, 1]], "lengths": [3, 0, 2]}, r"^lengths\[1\]: must be a whole number"),
    ({"preferences": [[0, 1]], "lengths": [3, 2]}, r"^lengths: must have one entry per response"),
    ({"lengths": [3, 2, 1]}, r"^preferences: give exactly one of"),
    ({"labels": [[0, 1, 1]], "colour": 1}, r"^instance: unknown key"),
    ({"labels": [[0, 1, 2], [1, 2, 1], [2, 0, 1]], "margin": 0.1}, r"^labels: the majority directions contain the cycle"),
])
def test_bad_input_is_a_value_error_naming_the_field(extra, message):
    with pytest.raises(ValueError, match=message):
        DatasetInstance.from_json({**BASE, **extra})


@pytest.mark.parametrize("ranking, where", [([0, 3], 1), ([3, 0, 1], 0), ([0, 1, 3], 2), ([0, -1], 1)])
def test_ranking_index_k_is_refused_as_a_ranking_index(ranking, where):
    """A ranking index must lie in [0, K): with K = 3 (BASE), index 3 (= K, one past the last response) and -1 are
    refused by the ranking's own check, naming ranking[i] and the index; the largest valid index K - 1 = 2 passes
    (ranking [2, 0, 1] gives the adjacent pairs (2, 0), (0, 1)). Pins the upper boundary of that check: with
    ``0 <= v <= k`` (a survivor of mutation) index K passed it and only the later preferences check caught it, with
    "preferences[0]: loser index 3 is out of range", a key this instance does not have."""
    v = ranking[where]
    with pytest.raises(ValueError, match=rf"^ranking\[{where}\]: index {v} is out of range \[0, 3\)"):
        DatasetInstance.from_json({**BASE, "ranking": ranking})
    ok = DatasetInstance.from_json({**BASE, "ranking": [2, 0, 1]})
    assert ok.ranking == (2, 0, 1) and sorted(ok.labels) == [(0, 1), (2, 0)]


def test_missing_base_key_is_named():
    data = {k: v for k, v in BASE.items() if k != "beta"}
    with pytest.raises(ValueError, match=r"^beta: missing"):
        DatasetInstance.from_json({**data, "labels": [[0, 1, 1]]})


def _cli(tmp_path, data, *extra):
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(data))
    return subprocess.run([sys.executable, "paper_checks.py", "solve", "--instance", str(path), "--json", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_readable_output_names_the_unbounded_pair(tmp_path):
    path = tmp_path / "inst.json"
    path.write_text(json.dumps({**BASE, "labels": [[0, 1, 2]]}))
    res = subprocess.run([sys.executable, "paper_checks.py", "solve", "--instance", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Empirical ordered-pair DPO minimiser" in res.stdout
    assert "0 > 1" in res.stdout and "no finite minimiser" in res.stdout


def test_cli_prints_dpo_empirical_and_exits_2_with_one_line_on_bad_labels(tmp_path):
    ok = _cli(tmp_path, {**BASE, "labels": [[0, 1, 1], [1, 0, 1]]})
    assert ok.returncode == 0
    out = json.loads(ok.stdout)
    assert out["dpo_empirical"] == [{"winner": 0, "loser": 1, "h": 0.0}, {"winner": 1, "loser": 0, "h": 0.0}]
    bad = _cli(tmp_path, {**BASE, "labels": [[0, 1, -1]]})
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == ["error: labels[0]: count must be a whole number >= 1, got -1"]


def test_cli_plain_instance_output_has_no_new_keys(tmp_path):
    res = _cli(tmp_path, {**BASE, "preferences": [[0, 1]]})
    assert res.returncode == 0 and "dpo_empirical" not in json.loads(res.stdout)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(1, 4)), min_size=1, max_size=8)
       .filter(lambda e: any(a != b for a, b, _ in e)))
@settings(max_examples=25 * settings.default.max_examples // 60)
def test_any_valid_label_set_gives_one_entry_per_distinct_ordered_pair_and_a_consistent_unbounded_note(edges):
    labels = [[a, b, n] for a, b, n in edges if a != b]
    out, code = _solve({**BASE, "labels": labels})
    assert code == 0
    distinct = list(dict.fromkeys((a, b) for a, b, _ in labels))
    assert [(e["winner"], e["loser"]) for e in out["dpo_empirical"]] == distinct
    nulls = [e for e in out["dpo_empirical"] if e["h"] is None]
    assert (out["dpo_unbounded"] is None) == (not nulls)
    for e in nulls:
        assert f"({e['winner']}, {e['loser']})" in out["dpo_unbounded"]
    h = {(e["winner"], e["loser"]): e["h"] for e in out["dpo_empirical"]}
    for (a, b), v in h.items():  # antisymmetry where both orders are labelled
        if v is not None and (b, a) in h:
            assert h[(b, a)] == pytest.approx(-v, abs=1e-12)
    # the constraint graph: the strict majority direction of each labelled pair
    majority = {(a, b) for (a, b) in distinct
                if sum(n for x, y, n in labels if (x, y) == (a, b)) > sum(n for x, y, n in labels if (x, y) == (b, a))}
    assert {(p["winner"], p["loser"]) for p in out["pairs"]} == majority


def test_no_import_circle_between_the_solve_command_and_dataset_solve():
    """Issue 17 item 18: toy_bandits.dataset_solve once imported toy_bandits.cli (lazily, inside result_json) while
    cli imported dataset_solve. The plain solve output lives in toy_bandits.solve_output; neither imports cli."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for name in ("dataset_solve", "solve_output"):
        tree = ast.parse((root / "toy_bandits" / f"{name}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not any(m and m.startswith("toy_bandits.cli") for m in imported), (name, imported)
    probe = ("import sys, toy_bandits.dataset_solve as d; from toy_bandits import cli; "
             "print('toy_bandits.cli' in sys.modules, cli.result_json is d.base_result_json)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.split() == ["True", "True"]
    assert subprocess.run([sys.executable, "-c", "import sys, toy_bandits.dataset_solve; "
                           "print('toy_bandits.cli' in sys.modules)"], capture_output=True, text=True, cwd=root,
                          check=True).stdout.strip() == "False"


def test_length_output_takes_the_implication_from_length_norm(monkeypatch):
    # c9d097b recomputed |y_w| <= |y_l| inline and left toy_bandits.length_norm.mean_implies_summed dead: one
    # formula now decides both; a planted change of it shows in solve's output.
    import toy_bandits.dataset_solve as ds

    data = {**BASE, "ranking": [0, 2, 1], "lengths": [30, 10, 12]}
    assert _solve(data)[0]["length_normalised"][0]["mean_certificate_implies_summed"] is False
    monkeypatch.setattr(ds, "mean_implies_summed", lambda lw, ll: lw >= ll)  # planted: the wrong direction
    assert _solve(data)[0]["length_normalised"][0]["mean_certificate_implies_summed"] is True


def test_length_output_prints_the_summed_reference_log_odds_and_its_condition_by_hand():
    """``length_normalised`` prints per pair the summed reference log-odds delta_ref = log pi_ref(w) - log pi_ref(l)
    and the summed condition beta delta_ref + dr > 0 (README, data sets). By hand, pi_ref = (0.5, 0.3, 0.2),
    r = (1, 0, 0.5), beta = 1, ranking [0, 2, 1]: (0, 2) has delta_ref = log 2.5 = 0.91629 and 0.91629 + 0.5 > 0;
    (2, 1) has log(2/3) = -0.40547 and -0.40547 + 0.5 = 0.0945 > 0: both hold. With beta = 3 and the pair (1, 0):
    3 log 0.6 - 1 = -2.53, fails. Pins the delta_ref sign (a survivor of mutation:
    toy_bandits/dataset_solve.py::length_json::sign::e7fcc8b3bd, log pi_ref(w) + log pi_ref(l), printed -2.30 and
    -2.81 and turned both summed conditions to "fails")."""
    from toy_bandits.dataset_solve import format_dataset_sections

    out, _ = _solve({**BASE, "ranking": [0, 2, 1], "lengths": [30, 10, 12]})
    rows = {(r["winner"], r["loser"]): r for r in out["length_normalised"]}
    assert rows[(0, 2)]["delta_ref"] == pytest.approx(0.9162907318741551, rel=1e-12)  # log(0.5 / 0.2)
    assert rows[(2, 1)]["delta_ref"] == pytest.approx(-0.4054651081081644, rel=1e-12)  # log(0.2 / 0.3)
    assert rows[(0, 2)]["summed_condition"] is True and rows[(2, 1)]["summed_condition"] is True
    assert rows[(0, 2)]["delta_mean_ref"] == pytest.approx(math.log(0.5) / 30 - math.log(0.2) / 12, rel=1e-12)
    table = format_dataset_sections(out)
    assert "0.916291" in table and "-0.405465" in table
    out, _ = _solve({**BASE, "beta": 3.0, "preferences": [[1, 0]], "lengths": [3, 4, 5]})
    (row,) = out["length_normalised"]
    assert row["delta_ref"] == pytest.approx(-0.5108256237659907, rel=1e-12)  # log(0.3 / 0.5)
    assert row["summed_condition"] is False  # 3 (-0.5108) + (0 - 1) = -2.53
