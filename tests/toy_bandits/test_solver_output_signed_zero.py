"""``solve``'s output writes a negative zero as 0 (``toy_bandits.solve_output._num``; a survivor of mutation, seed
1120)."""

import json
import math

import numpy as np

from toy_bandits.cli import main
from toy_bandits.solve_output import _num


def _floats(x):
    if isinstance(x, float):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _floats(v)
    elif isinstance(x, list):
        for v in x:
            yield from _floats(v)


def test_a_negative_zero_multiplier_is_printed_as_zero(tmp_path, capsys):
    """An instance given with margin -0.0 (valid JSON): pair (0, 1) ties (equal pi_ref and reward), so delta* = 0 =
    m and its constraint does not bind; pair (2, 0) holds. Both multipliers are 0 by hand. CVXPY's dual for the
    first comes back as -0.0; ``_num`` (documented: "-0.0 printed as 0.0") must print 0 with a positive sign bit, in
    --json and in the text table. ``x - 0.0`` for ``x + 0.0`` printed ``"multipliers": [-0.0, 0.0]`` and
    ``multipliers [-0, 0]`` (a survivor of mutation)."""
    assert math.copysign(1.0, _num(-0.0)) == 1.0 and math.copysign(1.0, _num(np.float64(-0.0))) == 1.0
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
