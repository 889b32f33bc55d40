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
KEYS = {"rlhf_optimum", "cpo_optimum", "multipliers", "price_of_alignment", "pairs", "status", "status_reason",
        "method", "kkt_residuals", "cpo_reason", "nulls"}
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
    code, out, err = _run(capsys, ["--json", "--instance", _write(tmp_path, data)])
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
        code, out, err = _run(capsys, ["--json", "--instance", _write(tmp_path, data), "--solver", solver])
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
    code, out, _ = _run(capsys, ["--json", "--instance", _write(tmp_path, data)])
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
    run = subprocess.run([sys.executable, "paper_checks.py", "solve", "--json", "--instance", good], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    res = json.loads(run.stdout)
    assert res["multipliers"] == [pytest.approx(0.5, rel=1e-12)]
    assert res["cpo_optimum"] == [pytest.approx(0.5, abs=1e-15)] * 2
    bad = subprocess.run([sys.executable, "paper_checks.py", "solve", "--instance", str(tmp_path / "none.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------------------------------
# Issue 11: no silent wrong answers

def _solve_json(tmp_path, capsys, data, *extra):
    code, out, err = _run(capsys, ["--json", "--instance", _write(tmp_path, data), *extra])
    return code, (json.loads(out) if out else None), err


def _finite_numbers(obj):
    """Every number in a parsed JSON value (bools excluded)."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _finite_numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _finite_numbers(v)]
    return [obj] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def test_tiny_beta_huge_reward_is_a_point_mass_never_nan(tmp_path, capsys):
    # r / beta = 1e304: pi* is the point mass on response 1, and the pair's log-odds are beyond what float64
    # resolves for the constrained optimum, which is then explicitly not computed (null with a reason).
    data = {"pi_ref": [0.5, 0.5], "reward": [0.0, 1e300], "beta": 1e-4, "preferences": [[0, 1]], "margin": 0}
    code, res, err = _solve_json(tmp_path, capsys, data)
    assert code == 0 and "Warning" not in err
    assert res["rlhf_optimum"] == [0.0, 1.0]
    assert res["cpo_optimum"] is None and "float64" in res["cpo_reason"] and res["status"] == "not_solved"
    assert res["pairs"][0]["delta_star"] == pytest.approx(-1e304, rel=1e-12)
    assert res["pairs"][0]["assumption_holds"] is False
    assert all(math.isfinite(x) for x in _finite_numbers(res))


def test_huge_reward_with_moderate_beta_solved_in_log_space(tmp_path, capsys):
    # was [NaN, 0, 0] "optimal" and a bare NaN (invalid JSON); now the point mass, two pairs, strict JSON
    data = {"pi_ref": [0.3, 0.3, 0.4], "reward": [1e300, 0.0, 0.0], "beta": 0.5, "preferences": [[0, 1]],
            "margin": 0}
    code, res, _ = _solve_json(tmp_path, capsys, data)
    assert code == 0 and res["rlhf_optimum"] == [1.0, 0.0, 0.0]
    assert res["pairs"][0]["delta_star"] == pytest.approx(2e300, rel=1e-12)


@pytest.mark.parametrize("reward", [[0, 1e308], [1e301, 0]])
def test_reward_beyond_the_domain_is_rejected_with_the_reason(tmp_path, capsys, reward):
    data = {"pi_ref": [0.5, 0.5], "reward": reward, "beta": 1e-4, "preferences": [[0, 1]], "margin": 0}
    code, res, err = _solve_json(tmp_path, capsys, data)
    assert code == 2 and res is None and err.count("\n") == 1 and "reward[" in err and "1e+300" in err


def test_huge_beta_keeps_the_assumption_sign(tmp_path, capsys):
    # dr / beta = 1e-300 vanishes in log(0.5) + 1e-300: delta* must still be > 0, and in_U exact
    data = {"pi_ref": [0.5, 0.5], "reward": [0.0, 1.0], "beta": 1e300, "preferences": [[1, 0]], "margin": 0}
    code, res, _ = _solve_json(tmp_path, capsys, data)
    assert code == 0 and res["pairs"][0]["delta_star"] == pytest.approx(1e-300, rel=1e-12, abs=0)
    assert res["pairs"][0]["assumption_holds"] is True and res["pairs"][0]["in_U"] is False
    # reference favours y_l by 1e-10, reward favours y_w by 1: delta* = -1e-10 + 1e-300 < 0 and > delta_ref: in U
    p = 0.5 - 2.5e-11
    data = {"pi_ref": [p, 1 - p], "reward": [0.0, 1.0], "beta": 1e300, "preferences": [[0, 1]], "margin": 0}
    data["reward"] = [1.0, 0.0]
    code, res, _ = _solve_json(tmp_path, capsys, data)
    pair = res["pairs"][0]
    assert pair["delta_ref"] < 0 and pair["assumption_holds"] is False and pair["in_U"] is True


WRONG_TYPES = [
    ("string in a list", {"pi_ref": ["0.5", 0.5]}, "pi_ref[0]: must be a number, got str"),
    ("string reward", {"reward": [0, "1"]}, "reward[1]: must be a number, got str"),
    ("boolean", {"reward": [True, False]}, "reward[0]: must be a number, got bool"),
    ("null", {"reward": [0, None]}, "reward[1]: must be a number, got null"),
    ("string beta", {"beta": "0.5"}, "beta: must be a number, got str"),
    ("null margin", {"margin": None}, "margin: must be a number, got null"),
    ("bool index", {"preferences": [[True, 0]]}, "preferences[0]: winner must be an integer index"),
    ("huge integer", {"reward": [0, 10 ** 400]}, "beyond the float64 range"),
    ("margin too large", {"margin": 710}, "margin: must lie in [0, 700]"),
    ("beta too small", {"beta": 1e-320}, "beta: must lie in"),
]


@pytest.mark.parametrize("name, patch, needle", WRONG_TYPES, ids=[w[0] for w in WRONG_TYPES])
def test_wrong_types_exit_2_naming_the_field(tmp_path, capsys, name, patch, needle):
    data = {"pi_ref": [0.5, 0.5], "reward": [0.0, 1.0], "beta": 1.0, "preferences": [[0, 1]], "margin": 0.0}
    data.update(patch)
    code, out, err = _run(capsys, ["--instance", _write(tmp_path, data)])
    assert code == 2 and out == "" and err.count("\n") == 1 and needle in err, err
    assert len(err) < 400


def test_duplicate_key_exit_2(tmp_path, capsys):
    text = '{"pi_ref": [0.5, 0.5], "reward": [0, 1], "beta": 1, "beta": 2, "preferences": [], "margin": 0}'
    code, out, err = _run(capsys, ["--instance", _write(tmp_path, text)])
    assert code == 2 and "duplicate key 'beta'" in err and err.count("\n") == 1


def test_huge_literal_is_cut_in_the_message(tmp_path, capsys):
    text = '{"pi_ref": [0.5, 0.5], "reward": [0, "' + "9" * 400 + '"], "beta": 1, "preferences": [], "margin": 0}'
    code, _, err = _run(capsys, ["--instance", _write(tmp_path, text)])
    assert code == 2 and len(err) < 200 and "chars)" in err


@pytest.mark.parametrize("margin", [55.0, 200.0])
def test_chain_with_large_margin_solves_with_a_stated_fallback(tmp_path, capsys, margin):
    # (margins 300 and 700 put pi_c(3) = e^-900.. below the float range: not computed, see
    # test_constrained_optimum_below_the_float_range_is_not_computed_with_the_reason)
    # CLARABEL raised SolverError (a traceback, exit 1) on such chains; auto now falls back to the dual and says so
    data = {"pi_ref": [0.2, 0.3, 0.1, 0.4], "reward": [0.0, 1.0, 0.5, 2.0], "beta": 0.7,
            "preferences": [[0, 1], [1, 2], [2, 3]], "margin": margin}
    code, res, err = _solve_json(tmp_path, capsys, data)
    assert code == 0 and "Traceback" not in err
    assert res["status"] == "optimal" and max(res["kkt_residuals"].values()) <= 1e-9
    assert [p["delta_cpo"] for p in res["pairs"]] == [pytest.approx(margin, rel=1e-9)] * 3
    assert res["method"]["used"] in ("dual", "cvxpy:CLARABEL") and res["method"]["why"].startswith("auto: 3 pairs")
    if res["method"]["used"] == "dual":
        assert "CLARABEL failed" in res["method"]["why"]
    ref = solve(BanditInstance.from_json(data), "dual")
    np.testing.assert_allclose(res["cpo_optimum"], ref.pi, atol=1e-12)


def test_auto_status_follows_the_kkt_residuals(tmp_path, capsys):
    data = {"pi_ref": [0.25, 0.25, 0.25, 0.25], "reward": [0.0, 0.5, 1.0, 2.0], "beta": 1.0,
            "preferences": [[0, 1], [1, 2], [2, 3]], "margin": 0.5}
    code, res, _ = _solve_json(tmp_path, capsys, data)
    assert code == 0 and res["method"]["used"] == "cvxpy:CLARABEL"
    worst = max(res["kkt_residuals"].values())
    assert (res["status"] == "optimal") == (worst <= 1e-9)
    assert "KKT residual" in res["status_reason"]


def test_sections_by_default(tmp_path, capsys):
    data = {"pi_ref": [0.9, 0.1], "reward": [0.0, 1.0], "beta": 0.5, "preferences": [[1, 0]], "margin": 0.2}
    code, out, _ = _run(capsys, ["--instance", _write(tmp_path, data)])
    assert code == 0
    for heading in ("RLHF optimum pi*", "Constrained (CPO) optimum pi_c", "Pairs", "Solved by: closed-form",
                    "Status: optimal"):
        assert heading in out
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("1     0"))
    assert row[:6] == ["1", "0", "-2.19722", "-0.197225", "fails", "yes"] and float(row[6]) == pytest.approx(0.2)


@pytest.mark.parametrize("margin", [355, 700])
def test_constrained_optimum_below_the_float_range_is_not_computed_with_the_reason(tmp_path, capsys, margin):
    # Issue 17: the chain 0 > 1 > 2 with margin 700 printed pi_c = [1, 9.86e-305, 0] next to delta_cpo = 700 on
    # (1, 2), status "optimal" with residuals ~0 (probability-space residuals vanish with the probabilities).
    # pi_c(2) = e^{-2m} (up to the normaliser ~1) is below the smallest normal float (e^-708.4) from m = 355 on.
    data = {"pi_ref": [0.3, 0.4, 0.3], "reward": [0.0, 0.0, 0.0], "beta": 1.0, "preferences": [[0, 1], [1, 2]],
            "margin": margin}
    code, res, err = _solve_json(tmp_path, capsys, data)
    assert code == 0 and "Traceback" not in err
    assert res["cpo_optimum"] is None and res["status"] == "not_solved"
    assert "underflows" in res["cpo_reason"] and "response 2" in res["cpo_reason"]
    assert f"log pi_c = {-2 * margin}" in res["cpo_reason"]
    assert [p["delta_cpo"] for p in res["pairs"]] == [None, None]


def test_constrained_optimum_just_inside_the_float_range_is_solved(tmp_path, capsys):
    # m = 354: pi_c(2) = e^-708 = 3.3e-308, normal; solved, delta_cpo = m on both pairs (the constraints bind)
    data = {"pi_ref": [0.3, 0.4, 0.3], "reward": [0.0, 0.0, 0.0], "beta": 1.0, "preferences": [[0, 1], [1, 2]],
            "margin": 354}
    code, res, _ = _solve_json(tmp_path, capsys, data)
    assert code == 0 and res["status"] == "optimal"
    assert res["cpo_optimum"][2] == pytest.approx(math.exp(-708), rel=1e-9, abs=0)
    assert [p["delta_cpo"] for p in res["pairs"]] == [pytest.approx(354, abs=1e-9)] * 2


@pytest.mark.parametrize("margin", [300.0, 700.0])
def test_four_response_chain_below_the_float_range_is_not_computed(tmp_path, capsys, margin):
    # the former test_chain_with_large_margin_solves_with_a_stated_fallback[300, 700] asserted "optimal" here
    data = {"pi_ref": [0.2, 0.3, 0.1, 0.4], "reward": [0.0, 1.0, 0.5, 2.0], "beta": 0.7,
            "preferences": [[0, 1], [1, 2], [2, 3]], "margin": margin}
    code, res, err = _solve_json(tmp_path, capsys, data)
    assert code == 0 and "Traceback" not in err and res["status"] == "not_solved"
    assert res["cpo_optimum"] is None and "underflows" in res["cpo_reason"] and "response 3" in res["cpo_reason"]
    # the library answer stays exact in log space: delta_c = m on every pair
    ref = solve(BanditInstance.from_json(data), "dual")
    np.testing.assert_allclose(ref.delta_c, margin, rtol=1e-9)
    assert ref.log_pi[3] < -708.4


def test_solve_note_names_the_method_asked_for():
    """solve()'s note says which method ran: `cvxpy` asked for by name is "cvxpy (CLARABEL)", `auto` on three pairs
    gives its reason ("auto: 3 pairs have no closed form, ..."). The two were swapped by a flipped comparison
    (`method != "auto"`) that no test caught: the CLI's method "why" is this note, but the one CLI test that reads
    it (large margins) takes the dual-fallback note, not the CLARABEL-success line."""
    data = {"pi_ref": [0.25, 0.25, 0.25, 0.25], "reward": [0.0, 0.5, 1.0, 2.0], "beta": 1.0,
            "preferences": [[0, 1], [1, 2], [2, 3]], "margin": 0.5}
    inst = BanditInstance.from_json(data)
    assert solve(inst, "cvxpy").note == "cvxpy (CLARABEL)"
    assert solve(inst, "auto").note.startswith("auto: 3 pairs have no closed form, so CVXPY (CLARABEL)")


def test_a_solver_failure_exits_1_and_an_unresolvable_instance_exits_0(tmp_path, capsys, monkeypatch):
    """The documented exit codes of ``solve``: 1 when the solver failed (a ConstrainedSolveError), 0 when float64
    cannot resolve the instance (UnresolvedInstanceError, a reason printed). No real instance makes CLARABEL fail
    reliably, so the failure is injected into the solve call result_json makes. An exit code of 0.5 for the failure
    (a survivor of mutation) went unnoticed: ``sys.exit(0.5)`` still exits 1, but prints "0.5" to stderr, and the
    Python API returned 0.5."""
    import toy_bandits.solve_output as so
    from toy_bandits.constrained import ConstrainedSolveError, UnresolvedInstanceError

    inst = _write(tmp_path, {"pi_ref": [0.5, 0.5], "reward": [0.0, 1.0], "beta": 1.0, "preferences": [[0, 1]],
                             "margin": 0.0})
    for err, expected in ((ConstrainedSolveError("CLARABEL returned status 'infeasible'"), 1),
                          (UnresolvedInstanceError("beyond float64"), 0)):
        def failing(*args, _err=err, **kwargs):
            raise _err

        monkeypatch.setattr(so, "solve", failing)
        code, out, err_text = _run(capsys, ["--json", "--instance", inst])
        assert type(code) is int and code == expected
        res = json.loads(out)
        assert res["status"] == "not_solved" and res["cpo_optimum"] is None
        assert str(err) in res["cpo_reason"]
