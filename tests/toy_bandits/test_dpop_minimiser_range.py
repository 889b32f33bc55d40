"""dpop_minimiser is the argmin over its whole documented range [-80, 80], not only near 0."""

import numpy as np
import pytest

from toy_bandits.cpo_population import dpop_minimiser, dpop_population_loss


@pytest.mark.parametrize("d_ref, dr, beta, expected", [
    (0.0, 5.0, 0.1, 50.0),     # delta_ref + dr / beta = 0 + 50
    (-10.0, 7.5, 0.1, 65.0),   # -10 + 75
    (20.0, -9.5, 0.1, -75.0),  # 20 - 95
    (0.0, -2.2, 0.05, -44.0),  # 0 - 44
])
def test_dpop_minimiser_with_lam_zero_is_dpos_closed_form_far_from_zero(d_ref, dr, beta, expected):
    """With lam = 0 DPO-Positive is DPO, whose population loss q softplus(-beta x) + (1 - q) softplus(beta x), x =
    delta - delta_ref, q = sigma(dr), is minimised at beta x = dr (by hand: q sigma(-beta x) = (1 - q) sigma(beta x)),
    i.e. delta = delta_ref + dr/beta. Pinned at minimisers with |delta| in (40, 80), inside the grid [-80, 80] the
    docstring states: a grid cut to [-80, 40] returned 40 where the minimiser is 50 or 65 (the two positive cases),
    and kept every sign, so no verdict and no other test moved (a survivor of mutation:
    toy_bandits/cpo_population.py::dpop_minimiser::const-half::6269da5d5a)."""
    assert float(dpop_minimiser(d_ref, dr, beta=beta, lam=0.0)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("d_ref, dr", [(50.0, 1.0), (60.0, -0.5), (-50.0, -1.0), (55.0, 2.0)])
def test_dpop_minimiser_far_from_zero_is_the_argmin_of_a_fine_grid(d_ref, dr):
    """lam = 50, beta = 0.1 (the phase figure's DPO-Positive setting) at delta_ref of size 50-60: the golden-section
    result has a loss within 1e-9 of the smallest loss on a 0.001-step grid of [-80, 80] and lies within 1e-3 of that
    grid's argmin (here 50, 55, -50, 55, all beyond 40 in size). A search grid cut to [-80, 40] returned 40 at the
    three positive ones (loss higher than the grid's least by 0.35, 0.22, 0.83; a survivor of mutation: toy_bandits/cpo_population.py::dpop_minimiser::const-half::6269da5d5a)."""
    x = float(dpop_minimiser(d_ref, dr, beta=0.1, lam=50.0))
    grid = np.linspace(-80.0, 80.0, 160001)
    vals = dpop_population_loss(grid, d_ref, dr, beta=0.1, lam=50.0)
    assert abs(grid[np.argmin(vals)]) > 45
    assert float(dpop_population_loss(x, d_ref, dr, beta=0.1, lam=50.0)) <= vals.min() + 1e-9
    assert x == pytest.approx(grid[np.argmin(vals)], abs=1e-3)


@pytest.mark.parametrize("d_ref, dr, beta", [
    (0.0, -7.995, 0.1),    # delta_ref + dr / beta = -79.95
    (-70.0, -0.995, 0.1),  # -70 - 9.95 = -79.95
    (0.0, -3.9975, 0.05),  # -79.95
    (0.0, 7.995, 0.1),     # +79.95, the other end of the grid
])
def test_dpop_minimiser_at_the_ends_of_its_grid(d_ref, dr, beta):
    """lam = 0 (DPO, minimiser delta_ref + dr/beta by hand, as above) with the minimiser at +-79.95, inside the range
    [-80, 80] the docstring states but within half a grid step (0.2) of its end, where the best grid point is the
    first (or last) one and the golden-section bracket is [grid[0], grid[1]]. Pins the result to 1e-5 (measured error
    4e-7). A bracket whose lower end was grid[max(1 - i, 0)] instead of grid[max(i - 1, 0)] collapsed to
    [grid[1], grid[1]] at i = 0 and returned -79.8 at the three negative cases (off by 0.15; every other point of
    [-79.8, 80] and every sign unchanged, so no verdict moved; a survivor of mutation:
    toy_bandits/cpo_population.py::dpop_minimiser::swap-args::b47e10b9f1)."""
    assert float(dpop_minimiser(d_ref, dr, beta=beta, lam=0.0)) == pytest.approx(d_ref + dr / beta, abs=1e-5)
