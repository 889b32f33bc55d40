"""tests/conftest.py's guard on pytest.approx: a nonzero expected value below 1e-11 needs an explicit abs=, because
pytest's default absolute tolerance (1e-12, kept when only rel= is given) would decide the comparison."""
import pytest


def test_the_default_absolute_tolerance_would_pass_a_wrong_tiny_value():
    # what the guard prevents: 1.7e-14 "equals" 1.2e-14 under pytest's own defaults (the test_rounding_bounds case)
    from conftest import _APPROX
    assert 1.7e-14 == _APPROX(1.2e-14, rel=1e-12)
    assert 1.7e-14 != pytest.approx(1.2e-14, rel=1e-12, abs=0)


@pytest.mark.parametrize("expected", [1.2e-14, [1.0, 5e-300], {"a": -3e-12}])
def test_a_tiny_expected_value_without_abs_is_refused(expected):
    with pytest.raises(ValueError, match="needs an explicit abs="):
        pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("expected", [0.0, 1e-11, 2.5, [0.0, 1.0], "text"])
def test_other_values_pass_through(expected):
    assert expected == pytest.approx(expected)
