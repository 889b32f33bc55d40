"""``paper_checks.py solve --instance FILE.json`` (toy_bandits.cli)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toy_bandits.cli import main
from toy_bandits.constrained import solve
from toy_bandits.instance import BanditInstance

REPO = Path(__file__).resolve().parents[2]
KEYS = {"rlhf_optimum", "cpo_optimum", "multipliers", "price_of_alignment", "pairs", "status"}
PAIR_KEYS = {"winner", "loser", "delta_ref", "delta_star", "assumption_holds", "in_U", "delta_cpo"}


def _write(tmp_path, data, name="inst.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_single_pair_output_matches_closed_form(tmp_path, capsys):
    # reference favours y_l = 0 (pi_ref 0.9 vs 0.1), reward agrees with the label: pi* lies in U
    data = {"pi_ref": [0.9, 0.1], "reward": [0.0, 1.0], "beta": 0.5, "preferences": [[1, 0]], "margin": 0.2}
    code, out, err = _run(capsys, ["--instance", _write(tmp_path, data)])
    assert code == 0 and err == ""
    res = json.loads(out)
    assert set(res) == KEYS
    assert res["status"] == "optimal"
    delta_ref = math.log(0.1 / 0.9)
    delta_star = delta_ref + 1.0 / 0.5
    (pair,) = res["pairs"]
    assert set(pair) == PAIR_KEYS and pair["winner"] == 1 and pair["loser"] == 0
    assert pair["delta_ref"] == pytest.approx(delta_ref, abs=1e-12)
    assert pair["delta_star"] == pytest.approx(delta_star, abs=1e-12)
    assert pair["assumption_holds"] is False and pair["in_U"] is True  # -2.197 < -0.197 < 0
    assert pair["delta_cpo"] == pytest.approx(0.2, abs=1e-12)  # the constraint binds at the margin
    mu = (0.5 * 0.2 - 0.5 * delta_ref - 1.0) / (1 + math.exp(0.2))
    assert res["multipliers"] == [pytest.approx(mu, rel=1e-12)]
    ref = solve(BanditInstance.from_json(data))
    np.testing.assert_allclose(res["cpo_optimum"], ref.pi, atol=1e-15)
    np.testing.assert_allclose(res["rlhf_optimum"], ref.pi_star, atol=1e-15)
    assert res["price_of_alignment"] == pytest.approx(ref.price_of_alignment, rel=1e-12)
    assert res["price_of_alignment"] > 0


def test_multi_pair_uses_cvxpy_and_agrees_with_dual(tmp_path, capsys):
    data = {"pi_ref": [0.25, 0.25, 0.25, 0.25], "reward": [0.0, 0.5, 1.0, 2.0], "beta": 1.0,
            "preferences": [[0, 1], [1, 2], [2, 3]], "margin": 0.5}
    for solver in ("CLARABEL", "SCS"):
        code, out, err = _run(capsys, ["--instance", _write(tmp_path, data), "--solver", solver])
        assert code == 0
        res = json.loads(out)
        assert res["status"] in ("optimal", "optimal_inaccurate")
        dual = solve(BanditInstance.from_json(data), "dual")
        np.testing.assert_allclose(res["cpo_optimum"], dual.pi, atol=1e-5 if solver == "CLARABEL" else 1e-3)
        assert len(res["multipliers"]) == 3 and all(m > 0 for m in res["multipliers"])  # chain, all bind
        assert [p["delta_cpo"] for p in res["pairs"]] == [pytest.approx(0.5, abs=1e-3)] * 3


def test_cycle_with_zero_margin_solves_with_ties(tmp_path, capsys):
    data = {"pi_ref": [0.4, 0.3, 0.2, 0.1], "reward": [0.0, 1.0, 2.0, 0.0], "beta": 1.0,
            "preferences": [[0, 1], [1, 2], [2, 0]], "margin": 0.0}
    code, out, _ = _run(capsys, ["--instance", _write(tmp_path, data)])
    assert code == 0
    pi = json.loads(out)["cpo_optimum"]
    assert max(pi[:3]) - min(pi[:3]) <= 1e-5


BAD = [
    ("missing file", None, "instance file not found"),
    ("malformed JSON", '{"pi_ref": [0.5, 0.5', "malformed JSON"),
    ("not an object", "[1, 2, 3]", "instance: must be a JSON object"),
    ("unknown key", {"pi_ref": [0.5, 0.5], "reward": [0, 1], "beta": 1, "preferences": [], "margin": 0, "x": 1},
     "unknown key"),
    ("missing key", {"pi_ref": [0.5, 0.5], "reward": [0, 1], "beta": 1, "preferences": []}, "margin: missing"),
    ("bad pi_ref", {"pi_ref": [0.5, 0.6], "reward": [0, 1], "beta": 1, "preferences": [], "margin": 0}, "pi_ref"),
    ("zero prob", {"pi_ref": [1.0, 0.0], "reward": [0, 1], "beta": 1, "preferences": [], "margin": 0}, "pi_ref"),
    ("NaN reward", '{"pi_ref": [0.5, 0.5], "reward": [0, NaN], "beta": 1, "preferences": [], "margin": 0}', "reward"),
    ("shape", {"pi_ref": [0.5, 0.5], "reward": [0, 1, 2], "beta": 1, "preferences": [], "margin": 0}, "reward"),
    ("beta", {"pi_ref": [0.5, 0.5], "reward": [0, 1], "beta": -1, "preferences": [], "margin": 0}, "beta"),
    ("margin", {"pi_ref": [0.5, 0.5], "reward": [0, 1], "beta": 1, "preferences": [], "margin": -1}, "margin"),
    ("self-pair", {"pi_ref": [0.5, 0.5], "reward": [0, 1], "beta": 1, "preferences": [[1, 1]], "margin": 0},
     "self-pair"),
    ("index", {"pi_ref": [0.5, 0.5], "reward": [0, 1], "beta": 1, "preferences": [[0, 2]], "margin": 0},
     "out of range"),
    ("cycle", {"pi_ref": [0.25] * 4, "reward": [0] * 4, "beta": 1, "preferences": [[0, 1], [1, 2], [2, 0]],
               "margin": 0.5}, "cycle 0 > 1 > 2 > 0"),
]


@pytest.mark.parametrize("name, data, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exit_2_one_line(tmp_path, capsys, name, data, needle):
    path = str(tmp_path / "nope.json") if data is None else _write(tmp_path, data)
    code, out, err = _run(capsys, ["--instance", path])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err
    assert "Traceback" not in err


def test_bad_arguments_exit_2_one_line(capsys):
    for argv in ([], ["--instance"], ["--instance", "x.json", "--solver", "ECOS"], ["--bogus"]):
        code, out, err = _run(capsys, argv)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), argv


def test_through_paper_checks(tmp_path):
    """The real entry point: ``python paper_checks.py solve --instance FILE`` (exit codes and streams)."""
    good = _write(tmp_path, {"pi_ref": [0.5, 0.5], "reward": [0.0, 1.0], "beta": 1.0, "preferences": [[0, 1]],
                             "margin": 0.0})
    run = subprocess.run([sys.executable, "paper_checks.py", "solve", "--instance", good], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    res = json.loads(run.stdout)
    assert res["multipliers"] == [pytest.approx(0.5, rel=1e-12)]
    assert res["cpo_optimum"] == [pytest.approx(0.5, abs=1e-15)] * 2
    bad = subprocess.run([sys.executable, "paper_checks.py", "solve", "--instance", str(tmp_path / "none.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
