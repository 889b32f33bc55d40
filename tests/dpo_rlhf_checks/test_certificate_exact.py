"""The pairwise certificate (losses.alignment_certificate) is never given to a pair with delta <= margin, in float32
and float64 at extreme magnitudes, nor in what the audit and the TRL diagnostics count (issue 17, item 1).

Truth is exact arithmetic on the float inputs (Fraction), and mpmath checks the rounding bound the certificate
rests on (losses.certificate_tolerance). Strategies: beta log-uniform on [1e-4, 1e4], log-probabilities of scale
0.1 to 1e3, pairs placed at a relative 1e-16..1 from the margin on both sides.
"""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from dpo_rlhf_checks import losses as L

mpmath.mp.prec = 200
PARAMS = {"dpo": {}, "cpo_clip": {}, "cpo_smooth": {"gamma": 0.5, "tau": 2.0, "alpha": 1.0},
          "cpo_eq17": {"gamma": 1e-3}, "cpo_easy": {"gamma": 0.5}}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def above(pc: float, pr: float, margin: float) -> bool:
    """delta > margin in exact arithmetic on the float values."""
    return Fraction(pc) - Fraction(pr) > Fraction(margin)


def draw(seed: int, name: str, dtype: torch.dtype, n: int = 64):
    rng = np.random.default_rng(seed)
    beta = float(10 ** rng.uniform(-4, 4))
    margin = float(rng.choice([0.0, rng.uniform(0, 3), 10 ** rng.uniform(-3, 3)]))
    scale = 10 ** rng.uniform(-1, 3)
    rc, rr = -np.abs(rng.normal(0, scale, n)), -np.abs(rng.normal(0, scale, n))
    if name == "cpo_eq17":  # 1/pi_ref: keep the margin finite (|log pi_ref| <= 10)
        rc, rr = rc / scale * 5, rr / scale * 5
    if name == "cpo_easy":
        rc, rr = np.minimum(rc, -1e-3), np.minimum(rr, -1e-3)
    pc = -np.abs(rng.normal(0, scale, n))
    off = rng.normal(0, 1, n) * 10 ** rng.uniform(-16, 0, n) * np.maximum(1.0, np.abs(pc))
    pr = np.minimum(pc - margin + off, 0.0)
    t = [torch.tensor(a, dtype=dtype) for a in (pc, pr, rc, rr)]
    params = {"margin": margin} if name == "cpo_clip" else PARAMS[name]
    return beta, margin, params, t


def certify(name, beta, margin, params, t):
    out = L.get_loss(name)(*t, beta=beta, **params).losses
    target = L.implicit_target(name, t[2], t[3], beta=beta, **params)
    return out, target, L.alignment_certificate(out, target, beta=beta, margin=margin)


@given(st.integers(0, 2**32 - 1), st.sampled_from(sorted(PARAMS)), st.sampled_from(sorted(DTYPES)))
@example(1, "dpo", "float32")
@example(7, "cpo_eq17", "float64")
def test_no_pair_with_delta_at_most_margin_is_certified(seed, name, dtype):
    beta, margin, params, t = draw(seed, name, DTYPES[dtype])
    losses, target, cert = certify(name, beta, margin, params, t)
    pc, pr = (x.double().numpy() for x in t[:2])
    tol = L.certificate_tolerance(target, beta=beta, margin=margin).numpy()
    assert target.dtype == DTYPES[dtype]
    for i in range(pc.size):
        ok = above(float(pc[i]), float(pr[i]), margin)
        if bool(cert[i]):
            assert ok, (name, dtype, beta, margin, float(pc[i]), float(pr[i]))
        if not ok and math.isfinite(float(target[i])) and tol[i] < 0.5:
            # the bound the certificate rests on: a pair with delta <= m has its loss within the derived part of
            # certificate_tolerance (<= 0.4 tol, losses.certificate_tolerance) of softplus(beta (T - delta)), exact
            # with T the float target
            d = mpmath.mpf(float(pc[i])) - mpmath.mpf(float(pr[i]))
            x = mpmath.mpf(beta) * (mpmath.mpf(float(target[i])) - d)
            exact = mpmath.log1p(mpmath.exp(x))
            fi = torch.finfo(DTYPES[dtype])  # below the normal range a value errs by up to the smallest subnormal
            assert abs(float(losses[i]) - exact) <= 0.4 * tol[i] * exact + 4 * fi.tiny * fi.eps, (
                name, dtype, float(losses[i]), exact)


# Pairs the base commit certified with delta <= margin (found by the search above on c9d097b):
# (dtype, loss, params, beta, margin, pc, pr, rc, rr)
PINNED = [
    ("float32", "dpo", {}, 0.005066050070652352, 0.0, -4.095771312713623, -4.09576940536499, -1.9259357452392578,
     -3.0840811729431152),
    ("float32", "cpo_clip", {"margin": 0.5}, 0.6270527859802828, 0.5, -0.09316357225179672, -0.5931635499000549,
     -0.02931215427815914, -0.62473064661026),
    ("float32", "cpo_eq17", {"gamma": 0.001}, 0.0008664981739878033, 0.0, -10.383064270019531, -10.383060455322266,
     -1.3028661012649536, -0.6707514524459839),
    ("float64", "dpo", {}, 0.00019893495631256446, 0.0, -143.35114739535666, -143.35114739535646, -1.241782520571396,
     -72.54534060181557),
    ("float64", "cpo_clip", {"margin": 0.5}, 0.0002858367066238612, 0.5, -2.4198430437819276, -2.9198430437817082,
     -3.2184169370967424, -3.978613573264266),
    ("float64", "cpo_eq17", {"gamma": 0.001}, 0.005487307559891354, 0.0, -0.07473478354627677, -0.07473478354627507,
     -1.7227673265188863, -1.9748634009256596),
]


@pytest.mark.parametrize("dtype, name, params, beta, margin, pc, pr, rc, rr", PINNED)
def test_pinned_pairs_the_base_commit_certified(dtype, name, params, beta, margin, pc, pr, rc, rr):
    assert not above(pc, pr, margin)
    t = [torch.tensor([v], dtype=DTYPES[dtype]) for v in (pc, pr, rc, rr)]
    assert not bool(certify(name, beta, margin, params, t)[2][0])


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_the_certificate_still_certifies_what_rounding_cannot_touch(dtype):
    """Not vacuous: delta = margin + 1e-3 relative to the scale certifies at beta = 1 (float32: eps 1.2e-7)."""
    d = DTYPES[dtype]
    rc, rr = torch.tensor([-3.0, -50.0], dtype=d), torch.tensor([-1.0, -20.0], dtype=d)
    pc, pr = torch.tensor([-2.0, -30.0], dtype=d), torch.tensor([-2.01, -30.05], dtype=d)
    for name in ("dpo", "cpo_clip", "cpo_smooth"):
        assert bool(certify(name, 1.0, 0.0, PARAMS[name], [pc, pr, rc, rr])[2].all()), name
    # and refuses where float32 cannot see delta at all (beta |T| ~ 1e8 > 1/(20 eps))
    big = torch.tensor([-1e8], dtype=d)
    assert not bool(certify("dpo", 1.0, 0.0, {}, [torch.tensor([-1.0], dtype=d), torch.tensor([-2.0], dtype=d),
                                                  torch.tensor([-1.0], dtype=d), big])[2][0]) or dtype == "float64"


def test_the_audit_certifies_no_pair_with_delta_at_most_margin(tmp_path):
    """audit's certified_fraction counts the same certificate: on 2,000 pairs with delta <= m by 1e-16..1e-6
    (relative), every variant certifies none (the base commit certified some of them)."""
    from dpo_rlhf_checks import audit as A

    rng = np.random.default_rng(5)
    n = 2000
    rc, rr = -rng.uniform(0.1, 400, n), -rng.uniform(0.1, 400, n)
    pc = -rng.uniform(0.1, 400, n)
    pr = pc + np.abs(pc) * 10 ** rng.uniform(-16, -6, n)  # delta = pc - pr < 0 = m (barely)
    pr = np.minimum(pr, 0.0)
    assert not any(above(float(a), float(b), 0.0) for a, b in zip(pc, pr))
    cols = {"chosen_logps": pc, "rejected_logps": pr, "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    path = A.write_pairs(tmp_path / "p.jsonl", cols)
    res = A.audit(A.read_pairs(path), A.AuditConfig(betas=(1e-4, 0.1, 1e3)))
    fractions = [v for by_beta in res["certified_fraction"].values() for v in by_beta.values() if v is not None]
    assert fractions and max(fractions) == 0.0, res["certified_fraction"]


def test_trl_diagnostics_certify_no_float32_pair_with_delta_at_most_margin():
    """batch_diagnostics on float32 tensors (as a float32 trainer passes them): the base commit compared the float32
    loss with a float64 critical loss and certified pairs with delta < 0."""
    pytest.importorskip("trl")
    from dpo_rlhf_checks.integrations.trl import batch_diagnostics

    rng = np.random.default_rng(9)
    n = 4000
    rc, rr = -rng.uniform(0.1, 10, n), -rng.uniform(0.1, 10, n)
    pc = -rng.uniform(0.1, 10, n)
    t32 = [torch.tensor(a, dtype=torch.float32) for a in (pc, rc, rr)]
    pc32 = t32[0]
    pr32 = torch.nextafter(pc32, torch.zeros_like(pc32))  # one float32 ulp above pc: delta < 0 exactly
    assert bool((pc32 < pr32).all())
    for beta in (1e-3, 0.1, 10.0):
        losses = L.dpo_loss(pc32, pr32, t32[1], t32[2], beta=beta).losses
        out = batch_diagnostics(pc32, pr32, t32[1], t32[2], losses, loss_name="dpo", params={}, beta=beta)
        assert out["diagnostics/certified_fraction"] == 0.0, (beta, out["diagnostics/certified_fraction"])
    # not vacuous: delta = +0.5 is certified on every pair
    pr_ok = pc32 - 0.5
    losses = L.dpo_loss(pc32, pr_ok, t32[1], t32[2], beta=0.1).losses
    out = batch_diagnostics(pc32, pr_ok, t32[1], t32[2], losses, loss_name="dpo", params={}, beta=0.1)
    assert out["diagnostics/certified_fraction"] == 1.0
