"""``solve``'s reading and printing (issue 17, items 11 and 13): a UTF-8 BOM, plural words, round-off zeros."""

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import toy_bandits.solve_output as S  # where result_json calls solve
from toy_bandits.cli import main

REPO = Path(__file__).resolve().parents[2]
EPS = np.finfo(np.float64).eps


def _floats(x):
    """Every float in a parsed JSON value."""
    if isinstance(x, float):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _floats(v)
    elif isinstance(x, list):
        for v in x:
            yield from _floats(v)


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_utf8_bom_is_skipped_as_audit_skips_it(tmp_path, capsys):
    text = (REPO / "examples" / "violated_pair.json").read_bytes()
    plain, bom = tmp_path / "plain.json", tmp_path / "bom.json"
    plain.write_bytes(text)
    bom.write_bytes(b"\xef\xbb\xbf" + text)
    code_plain, out_plain, _ = _run(capsys, ["--json", "--instance", str(plain)])
    code_bom, out_bom, err = _run(capsys, ["--json", "--instance", str(bom)])
    assert code_plain == code_bom == 0 and err == ""
    assert json.loads(out_bom) == json.loads(out_plain)
    # a BOM in the middle, or UTF-16, is still not UTF-8 JSON
    bad = tmp_path / "bad.json"
    bad.write_bytes(text[:1] + b"\xef\xbb\xbf" + text[1:])
    code, out, err = _run(capsys, ["--instance", str(bad)])
    assert code == 2 and out == "" and err.count("\n") == 1


@pytest.mark.parametrize("pairs, words", [([[0, 1]], "1 preference pair,"), ([[0, 1], [1, 2]], "2 preference pairs,"),
                                          ([], "0 preference pairs,")])
def test_pairs_are_counted_in_plural_only_when_not_one(pairs, words, tmp_path, capsys):
    path = tmp_path / "inst.json"
    path.write_text(json.dumps({"pi_ref": [0.2, 0.3, 0.5], "reward": [1, 0, 0], "beta": 1, "preferences": pairs,
                                "margin": 0}))
    code, out, _ = _run(capsys, ["--instance", str(path)])
    assert code == 0 and f"instance: K = 3 responses, {words} beta = 1" in out.splitlines()[0]


def test_the_readme_examples_print_exact_zeros_not_round_off(capsys):
    """violated_pair: the active pair's delta_cpo is m = 0 (printed -2.22045e-16 before); labels_dataset: no
    constraint binds, so pi_c = pi* and the price is 0 (printed -2.93685e-17 before)."""
    code, out, _ = _run(capsys, ["--json", "--instance", str(REPO / "examples" / "violated_pair.json")])
    res = json.loads(out)
    assert code == 0 and res["multipliers"][0] > 0.1  # the constraint binds: delta_cpo = m = 0 exactly
    assert res["pairs"][0]["delta_cpo"] == 0.0
    code, text, _ = _run(capsys, ["--instance", str(REPO / "examples" / "violated_pair.json")])
    row = [line for line in text.splitlines() if line.split()[:2] == ["0", "1"]][0]
    assert row.split()[-1] == "0" and not re.search(r"-\d(\.\d+)?e-1\d", text), text  # no printed -2.2e-16
    code, out, _ = _run(capsys, ["--json", "--instance", str(REPO / "examples" / "labels_dataset.json")])
    res = json.loads(out)
    assert code == 0 and res["multipliers"] == [0.0, 0.0] and res["price_of_alignment"] == 0.0
    code, text, _ = _run(capsys, ["--instance", str(REPO / "examples" / "labels_dataset.json")])
    assert "price of alignment J(pi*) - J(pi_c) = 0  (§9c)" in text and not re.search(r"-\d(\.\d+)?e-1\d", text)


def test_a_value_beyond_its_rounding_bound_is_printed_as_computed(tmp_path, capsys, monkeypatch):
    """Planted: a solver answer off by 1e-9 in delta_cpo and -1e-9 in the price (far beyond rounding) is printed
    as is, negative sign and all; one within its bound (2 ulps) becomes 0."""
    real_solve = S.solve

    def off(offset):
        def solve(inst, **kwargs):
            sol = real_solve(inst, **kwargs)
            return dataclasses.replace(sol, delta_c=sol.delta_c + offset, price_of_alignment=offset)
        return solve

    path = str(REPO / "examples" / "violated_pair.json")
    monkeypatch.setattr(S, "solve", off(-1e-9))
    res = json.loads(_run(capsys, ["--json", "--instance", path])[1])
    assert res["pairs"][0]["delta_cpo"] == pytest.approx(-1e-9, rel=1e-6) and res["price_of_alignment"] == -1e-9
    monkeypatch.setattr(S, "solve", off(-2 * EPS))
    res = json.loads(_run(capsys, ["--json", "--instance", path])[1])
    assert res["pairs"][0]["delta_cpo"] == 0.0 and res["price_of_alignment"] == 0.0


def test_rounding_bounds():
    assert S._rounding_zero(-3e-16, S._delta_bound(-1.1, -1.1)) == 0.0
    assert S._rounding_zero(-3e-12, S._delta_bound(-1.1, -1.1)) == -3e-12
    assert S._rounding_zero(-3e-16, S._delta_bound(-np.inf, -1.0)) == -3e-16  # no bound from an infinite log
    # the bound grows with the magnitude of the logs: 1e-13 is round-off next to log-probabilities of -1e3
    assert S._rounding_zero(1e-13, S._delta_bound(-1e3, -1e3)) == 0.0
    pi = np.array([0.5, 0.5])
    assert S._price_bound(pi, np.log(pi), np.log(pi), beta=1.0) == pytest.approx(16 * EPS * 2 * (1 + 2 * np.log(2)),
                                                                   rel=1e-12, abs=0)


def test_price_bound_skips_a_zero_probability_entry():
    """A response with pi(y) = 0 (log pi(y) = -inf) adds nothing to beta sum_y pi(y) (log pi - log pi*), so nothing to
    its rounding bound: the bound is the finite sum over the other entries (K = 3 still counts the terms), and a
    price of -8e-17 there is round-off, printed as 0."""
    pi = np.array([0.25, 0.75, 0.0])
    log_star = np.log([0.2, 0.7, 0.1])
    with np.errstate(divide="ignore"):
        log_pi = np.log(pi)
    by_hand = 16 * EPS * 3 * 0.5 * (0.25 * (1 + np.log(4) - np.log(0.2)) + 0.75 * (1 - np.log(0.75) - np.log(0.7)))
    bound = S._price_bound(pi, log_pi, log_star, beta=0.5)
    assert bound == pytest.approx(by_hand, rel=1e-12, abs=0)  # abs=0: the default abs 1e-12 would swallow 1e-14
    assert S._rounding_zero(-8e-17, bound) == 0.0


@pytest.mark.parametrize("delta_ref, dr, beta", [(-0.5, 0.5, 1.0), (-1.0, 3.0, 3.0), (-0.25, 1e-300, 4e-300),
                                                 (-0.5, 2.0 ** 999, 2.0 ** 1000)])
def test_an_exact_tie_is_neither_the_assumption_nor_in_u(delta_ref, dr, beta):
    """At beta delta_ref + dr = 0 exactly (each case checked by hand: -0.5 + 0.5, -3 + 3, -1e-300 + 1e-300 with
    4e-300 / 4 = 1e-300 exact in binary, -2^999 + 2^999) delta* = 0: pi* sits on the boundary delta = 0 of U, so
    ``assumption_holds`` (delta* > 0) and ``in_U`` (delta_ref < delta* < 0) are both False. One ulp of dr either side
    moves it into the assumption or into U, so the exact sign decides. Pins the ``x < 0`` of
    ``assumption_and_u``'s sign; with ``x <= 0`` a tie with dr > 0 was reported in U (a survivor of mutation)."""
    from toy_bandits.constrained import assumption_and_u

    holds, in_u = assumption_and_u(np.array([delta_ref]), np.array([dr]), beta)
    assert (bool(holds[0]), bool(in_u[0])) == (False, False)
    holds, in_u = assumption_and_u(np.array([delta_ref]), np.array([np.nextafter(dr, np.inf)]), beta)
    assert (bool(holds[0]), bool(in_u[0])) == (True, False)
    holds, in_u = assumption_and_u(np.array([delta_ref]), np.array([np.nextafter(dr, 0.0)]), beta)
    assert (bool(holds[0]), bool(in_u[0])) == (False, True)


def test_solve_prints_a_tied_pair_as_not_in_u(tmp_path, capsys):
    """``solve --json`` on a pair at the exact tie: pi_ref(w) = 1/4, pi_ref(l) = 1/2, so delta_ref = log(1/4) -
    log(1/2) = -log 2 (float64: log(0.25) = 2 log(0.5) exactly), and r(w) - r(l) = log 2 with beta = 1 gives
    delta* = 0. Expected by hand: delta_star 0, assumption_holds False, in_U False (U is open at delta = 0, docs §6).
    A mutant of ``assumption_and_u`` that counted the tie as negative printed in_U true (a survivor of mutation)."""
    inst = tmp_path / "tie.json"
    inst.write_text(json.dumps({"pi_ref": [0.5, 0.25, 0.25], "reward": [0.0, math.log(2.0), 0.0], "beta": 1.0,
                                "preferences": [[1, 0]], "margin": 0.0}))
    code, out, err = _run(capsys, ["--json", "--instance", str(inst)])
    assert code == 0 and err == ""
    (pair,) = json.loads(out)["pairs"]
    assert pair["delta_ref"] == -math.log(2.0) and pair["delta_star"] == 0.0
    assert pair["assumption_holds"] is False and pair["in_U"] is False


def test_price_of_alignment_is_zero_not_null_where_pi_star_is_a_point_mass(tmp_path, capsys):
    """No preference pairs, so pi_c = pi* and the price J(pi*) - J(pi_c) is 0 by hand; here r/beta = 1e309 overflows,
    so pi* = [0, 1] with log pi*(y_0) = -inf exactly. ``solve`` must print the price 0, not null ('not finite in
    float64'): a mask ``pi >= 0`` for ``pi > 0`` in rlhf.suboptimality made it 0 * inf = NaN (a survivor of
    mutation)."""
    path = tmp_path / "inst.json"
    path.write_text(json.dumps({"pi_ref": [0.5, 0.5], "reward": [0, 1e300], "beta": 1e-9, "preferences": [],
                                "margin": 0}))
    code, out, _ = _run(capsys, ["--json", "--instance", str(path)])
    res = json.loads(out)
    assert code == 0 and res["rlhf_optimum"] == [0.0, 1.0] and res["cpo_optimum"] == [0.0, 1.0]
    assert res["price_of_alignment"] == 0.0 and "price_of_alignment" not in res["nulls"]


def test_solve_json_prints_no_negative_zero_kkt_residual(capsys):
    """``solve --json`` on the README's examples/labels_dataset.json: no constraint binds, so both multipliers are 0
    and the dual residual max_k (-mu_k)^+ is 0 by hand; every KKT residual is >= 0 by definition, and the output
    writes a negative zero as 0.0 (``_num``; result_json adds 0.0 to each residual: np.max(-mu, initial=0.0) is -0.0
    when mu = 0). Pinned: every residual is printed with a positive sign bit, and no number anywhere in the output is a
    negative zero. ``float(v) - 0.0`` for ``+ 0.0`` printed ``"dual": -0.0`` (a survivor of mutation)."""
    for method in ("auto", "cvxpy"):
        code, out, _ = _run(capsys, ["--json", "--method", method, "--instance",
                                     str(REPO / "examples" / "labels_dataset.json")])
        res = json.loads(out)  # json keeps the sign of -0.0
        assert code == 0 and res["multipliers"] == [0.0, 0.0]
        kkt = res["kkt_residuals"]
        assert set(kkt) == {"primal", "dual", "slackness", "stationarity"}
        assert kkt["dual"] == 0.0 and math.copysign(1.0, kkt["dual"]) == 1.0, (method, kkt)
        assert all(v >= 0.0 and math.copysign(1.0, v) == 1.0 for v in kkt.values()), (method, kkt)
        assert not [v for v in _floats(res) if v == 0.0 and math.copysign(1.0, v) < 0], method


def test_a_negative_zero_multiplier_is_printed_as_zero(tmp_path, capsys):
    """An instance given with margin -0.0 (valid JSON): pair (0, 1) ties (equal pi_ref and reward), so delta* = 0 =
    m and its constraint does not bind; pair (2, 0) holds. Both multipliers are 0 by hand. CVXPY's dual for the
    first comes back as -0.0; ``_num`` (documented: "-0.0 printed as 0.0") must print 0 with a positive sign bit, in
    --json and in the text table. ``x - 0.0`` for ``x + 0.0`` printed ``"multipliers": [-0.0, 0.0]`` and
    ``multipliers [-0, 0]`` (a survivor of mutation)."""
    assert math.copysign(1.0, S._num(-0.0)) == 1.0 and math.copysign(1.0, S._num(np.float64(-0.0))) == 1.0
    path = tmp_path / "inst.json"
    path.write_text('{"pi_ref": [0.25, 0.25, 0.5], "reward": [0.0, 0.0, 1.0], "beta": 0.5, '
                    '"preferences": [[0, 1], [2, 0]], "margin": -0.0}')
    for method in ("auto", "cvxpy"):
        assert main(["--json", "--method", method, "--instance", str(path)]) == 0
        res = json.loads(capsys.readouterr().out)  # json keeps the sign of -0.0
        assert res["multipliers"] == [0.0, 0.0]
        assert [math.copysign(1.0, v) for v in res["multipliers"]] == [1.0, 1.0], (method, res["multipliers"])
        assert not [v for v in _floats(res) if v == 0.0 and math.copysign(1.0, v) < 0], method
    assert main(["--instance", str(path)]) == 0
    text = capsys.readouterr().out
    assert "multipliers [0, 0]" in text and "[-0" not in text, text


def test_status_is_optimal_inaccurate_when_one_kkt_residual_exceeds_the_tolerance(tmp_path, capsys, monkeypatch):
    """Pins that ``status`` reads the LARGEST KKT residual: a solver answer whose primal residual is planted at 3e-6
    (every other residual of this instance is <= 1.4e-16, measured) must be reported "optimal_inaccurate", with
    3e-06 named as the largest residual in status_reason; an untouched answer is "optimal" and its status_reason
    names the largest of the printed residuals (1.4e-16 here, not the smallest, 0). ``min`` for ``max`` printed
    "optimal" and "largest 0" for the planted answer (a survivor of mutation)."""
    real_solve = S.solve
    data = {"pi_ref": [0.25, 0.25, 0.25, 0.25], "reward": [0.0, 0.5, 1.0, 2.0], "beta": 1.0,
            "preferences": [[0, 1], [1, 2], [2, 3]], "margin": 0.5}
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(data))
    res = json.loads(_run(capsys, ["--json", "--method", "dual", "--instance", str(path)])[1])
    kkt = res["kkt_residuals"]
    assert res["status"] == "optimal" and 0.0 < max(kkt.values()) <= 1e-12 and min(kkt.values()) == 0.0
    assert f"largest {max(kkt.values()):.2g})" in res["status_reason"]

    def planted(inst, **kwargs):
        sol = real_solve(inst, **kwargs)
        return dataclasses.replace(sol, kkt={**sol.kkt, "primal": 3e-6})

    monkeypatch.setattr(S, "solve", planted)
    res = json.loads(_run(capsys, ["--json", "--method", "dual", "--instance", str(path)])[1])
    assert res["kkt_residuals"]["primal"] == 3e-6
    assert res["status"] == "optimal_inaccurate"
    assert res["status_reason"].startswith("the largest KKT residual is 3e-06 > 1e-09")
