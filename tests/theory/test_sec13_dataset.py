"""theory.sec13_dataset: the symbolic methods of the data-set claims (§13)."""

import math

import pytest
import sympy as sp

from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory.sec13_dataset import dataset_minimiser_symbolic, length_symbolic, listwise_symbolic


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return CheckContext(seed=0, quick=True, out_dir=tmp_path_factory.mktemp("out"))


def test_dataset_symbolic_finds_the_counterexamples_and_proves_the_amendment(ctx):
    r = dataset_minimiser_symbolic(ctx)
    assert isinstance(r, MethodResult) and r.literal is False and r.amended is True
    assert r.depends_on and all(d.startswith("theory.sec13_dataset._") for d in r.depends_on)  # its own SymPy only
    ev = r.evidence
    assert ev["cycle_beta_h"]["(0,1)"] == pytest.approx(0.8392352499821958, abs=1e-12)
    assert ev["cycle_beta_h"]["(1,2)"] + ev["cycle_beta_h"]["(2,0)"] + ev["cycle_beta_h"]["(0,1)"] == pytest.approx(0, abs=1e-15)
    assert ev["cycle_gradient_max"] < 1e-40
    assert ev["pooled_beta_h01"] == pytest.approx(1.0560978190260222, abs=1e-12)
    assert ev["contradictory_h_star"] == "log(a/b)/beta"
    assert ev["single_pair_always_negative"] and ev["chain_directional_derivative_negative"]


def test_listwise_symbolic(ctx):
    r = listwise_symbolic(ctx)
    assert r.literal is False and r.amended is True
    ex = r.evidence["example"]
    assert ex["loss"] < math.log(6) and ex["log pi(y_3) - log pi(y_2)"] == pytest.approx(0.1, abs=1e-15)
    assert r.evidence["gradient_numeric_max"] < 1e-30
    assert r.evidence["misordered_limit"] in ("log(exp(c) + 1)", "-log(1/(exp(c) + 1))")


def test_listwise_symbolic_reports_log_6_as_log_6(ctx):
    """The example compares its Plackett-Luce loss with log 6 (the loss of the reference, k = 3) and prints that bound
    in the evidence, the counterexample and the summary ("L=1.3875 < log 6=1.7918"). Pins the printed bound against
    math.log(6) = 1.791759469228055: with sp.N's arguments swapped (sp.N(20, sp.log(6)), the number 20 at log 6
    digits) every verdict held and all three read 20.0 (a survivor of mutation)."""
    r = listwise_symbolic(ctx)
    assert r.evidence["example"]["log 6"] == pytest.approx(math.log(6), rel=1e-15)
    assert r.counterexample["listwise_U_with_ordered_reference"]["log 6"] == pytest.approx(math.log(6), rel=1e-15)
    assert "log 6=1.7918" in r.summary


def test_length_symbolic(ctx):
    r = length_symbolic(ctx)
    assert r.literal is False and r.amended is True
    assert r.evidence["stationary_point"] == "[dr/beta]"
    assert r.counterexample["mean_certifies_sum_does_not"]["delta"] == "-40"
    # (3) for every pair of lengths, not at one pair: on the set delta_mean = c, delta = L_w c + b (L_w/L_l - 1), whose
    # slope in b is g/L_l > 0 for L_w = L_l + g (delta -> -oo as b -> -oo) and -g/(L_w + g) < 0 for L_l = L_w + g
    assert r.evidence["minimiser_set_delta_limit_Lw>Ll"] == "-oo"
    assert r.evidence["minimiser_set_delta_limit_Lw<Ll"] == "oo"


# --- issue 16 repairs: literals that can come out either way, and no use of rng before it exists ---------------

def test_pair_logodds_is_computed_from_the_labels():
    import sympy as sp

    from theory import sec13_dataset as m

    lo = m._pair_logodds({(0, 1): 2, (1, 0): 1, (1, 2): 3})
    assert lo[(0, 1)] == sp.log(2) and lo[(1, 0)] == -sp.log(2) and lo[(1, 2)] == sp.oo
    # the literal's comparison: a finite beta h equal to log(2) agrees; an infinite log-odds never does
    assert m._literal_mismatch({(0, 1): sp.log(2)}, {(0, 1): lo[(0, 1)]}) == {}
    assert m._literal_mismatch({(1, 2): sp.Integer(5)}, {(1, 2): lo[(1, 2)]}) != {}


def test_dataset_symbolic_literal_on_the_cycle_is_computed_not_typed(ctx, monkeypatch):
    # c9d097b typed cycle_logodds_infinite = True, so the cycle's literal could never hold. Plant log-odds that equal
    # the minimiser's own beta h: the cycle's and the pooled graph's literal tests must then pass.
    from theory import sec13_dataset as m

    r = m.dataset_minimiser_symbolic(ctx)
    assert r.evidence["cycle_literal_holds"] is False and r.evidence["pooled_literal_holds"] is False
    assert r.evidence["cycle_pair_logodds"] == {"(0,1)": "oo", "(1,2)": "oo", "(2,0)": "oo"}

    def planted(labels):
        import sympy as sp
        k = sp.Symbol("k", positive=True)
        if labels == m.CYCLE_LABELS:
            kk = [rt for rt in sp.solve((2 - k) * (1 - k) ** 2 - k ** 3, k) if rt.is_real and 0 < rt < 1][0]
            return {e: sp.log((n - kk) / kk) for e, n in labels.items()}
        z = [s for s in sp.solve(2 * k ** 2 / (1 + k ** 2) + 4 * k / (1 + k) - 4, k) if s.is_positive][0]
        th = {0: sp.log(z), 1: -sp.log(z), 2: sp.Integer(0)}
        return {(i, j): th[i] - th[j] for (i, j) in labels}

    monkeypatch.setattr(m, "_pair_logodds", planted)
    r2 = m.dataset_minimiser_symbolic(ctx)
    assert r2.evidence["cycle_literal_holds"] is True and r2.evidence["pooled_literal_holds"] is True
    assert r2.literal is False  # the single pair and the chain still have no finite minimiser


def test_length_symbolic_literal_is_evaluated_on_its_instances(ctx, monkeypatch):
    # c9d097b built the literal from typed integers; now delta and delta_mean come from (a, L_w, b, L_l) alone.
    from theory import sec13_dataset as m

    rows = [m._length_row(ex) for ex in m._length_instances()]
    assert [(r["delta"], r["delta_mean"]) for r in rows] == [("-40", "2/5"), ("10", "-3/2")]
    assert all(r["feasible"] and r["signs_disagree"] for r in rows)
    # equal lengths: the signs agree on every policy, so the literal test passes on such instances
    same = ({"a": -3, "L_w": 7, "b": -5, "L_l": 7}, {"a": -9, "L_w": 4, "b": -2, "L_l": 4})
    monkeypatch.setattr(m, "_length_instances", lambda: same)
    r = m.length_symbolic(ctx)
    assert r.literal is True and r.counterexample is None
    assert r.evidence["example_mean_yes_sum_no"]["signs_disagree"] is False


@pytest.mark.parametrize("a, b, want", [
    # a = 0: e^0 + e^b = 1 + e^b > 1 for every finite b (branch point c9d097b..a28931f rounded 1 + e^-80 to 1 at 30
    # digits and called these feasible)
    (0, -80, False), (0, -200, False), (0, -10**6, False), (0, 0, False), (sp.Rational(1, 10), -5, False),
    # a = b = -log 2 (= -0.69314718056) is the boundary: 2 e^a = e^(a + log 2), < 1 iff a < -log 2
    (sp.Rational(-6931471806, 10**10), sp.Rational(-6931471806, 10**10), True),
    (sp.Rational(-6931471805, 10**10), sp.Rational(-6931471805, 10**10), False),
    # a = -1e-30: 1 - e^a lies in (1e-30 - 5e-61, 1e-30) and ln(1e-30) = -69.0776, so e^-69 = 1.081e-30 is too much
    # and e^-70 = 0.398e-30 fits (a 30-digit sum rounds 1 + 8e-32 to 1 and calls b = -69 feasible)
    (sp.Rational(-1, 10**30), -69, False), (sp.Rational(-1, 10**30), -70, True),
    (sp.Rational(-1, 10**30), sp.Rational(-1, 10**30), False),  # ~ 2
    # closer than 64 bits resolve: log(1 - e^-eps) = log(eps) - eps/2 + O(eps^2), eps = 1e-30, 30 ln 10 =
    # 69.07755278982137052053974364053092..., so the boundary is b* = -69.07755278982137052053974364053142...
    (sp.Rational(-1, 10**30), sp.Rational(-690775527898213705205397436405312, 10**31), False),  # b > b* by 2.2e-31
    (sp.Rational(-1, 10**30), sp.Rational(-690775527898213705205397436405316, 10**31), True),  # b < b* by 1.8e-31
    # extreme magnitudes: e^-1e6 ~ 1e-434295 < 1 - e^-1e-30 ~ 1e-30
    (-10**6, sp.Rational(-1, 10**30), True), (-10**9, -10**9, True), (-1, -1, True),  # 2/e = 0.736
    (sp.Rational(-1, 2), sp.Rational(-1, 2), False),  # 2 e^-0.5 = 1.213
])
def test_length_row_feasibility_is_exact_at_every_magnitude(a, b, want):
    from theory import sec13_dataset as m

    for x, y in ((a, b), (b, a)):  # symmetric in the two responses
        assert m._exp_sum_at_most_one(sp.Rational(x), sp.Rational(y)) is want
        row = m._length_row({"a": x, "L_w": 3, "b": y, "L_l": 7})
        assert row["feasible"] is want


def test_listwise_symbolic_numeric_fallback_does_not_crash(ctx, monkeypatch):
    # c9d097b used rng in the fallback of the relabelling symmetry before assigning it (UnboundLocalError).
    from theory import sec13_dataset as m

    real, calls = m._zero, []

    def planted(expr):  # the second _zero of listwise_symbolic is the relabelling symmetry: say "not proved"
        calls.append(expr)
        return False if len(calls) == 2 else real(expr)

    monkeypatch.setattr(m, "_zero", planted)
    r = m.listwise_symbolic(ctx)
    # the 50-digit check still runs (no crash), but numbers alone no longer pass an identity simplify did not prove
    assert r.evidence["relabelling_symmetry_numeric_max"] < 1e-40
    assert r.evidence["relabelling_symmetry_proved"] is False and r.evidence["relabelling_symmetry"] is False
    assert r.amended is False


def test_listwise_example_and_one_ranking_reproduce_by_hand(ctx):
    """The counterexample reproduces from its own reported numbers: pi_ref ~ (1, e^-1, e^-2), scores s = beta u, the
    PL loss -[s_1 - log(e^s_1 + e^s_2 + e^s_3)] - [s_2 - log(e^s_2 + e^s_3)] below log 6 = 1.7918 and log pi(y_3) -
    log pi(y_2) = (-2 + u_3) - (-1 + u_2) = 0.1 > 0 (misordered). One ranking, s = T (2, 1, 0): by hand dL/dT = -3 +
    (2 e^2T + e^T)/(e^2T + e^T + 1) + e^T/(e^T + 1) < 0, and the method proves it negative (no grid)."""
    ev = listwise_symbolic(ctx).evidence
    ex = ev["example"]
    s = [ex["beta"] * x for x in ex["u = log pi - log pi_ref"]]
    lse = lambda v: max(v) + math.log(sum(math.exp(x - max(v)) for x in v))  # noqa: E731
    loss = -(s[0] - lse(s)) - (s[1] - lse(s[1:]))
    assert ex["loss"] == pytest.approx(loss, rel=1e-12) and loss < math.log(6)
    u = ex["u = log pi - log pi_ref"]
    assert ex["log pi(y_3) - log pi(y_2)"] == pytest.approx((-2 + u[2]) - (-1 + u[1]), abs=1e-12)
    assert ev["one_ranking_no_minimiser"] is True
    d = sp.sympify(ev["one_ranking_derivative"])
    for t in (-30.0, -1.0, 0.0, 0.7, 10.0):  # 10, not more: the hand form cancels to ~2 e^-T
        e1, e2 = math.exp(t), math.exp(2 * t)
        want = -3 + (2 * e2 + e1) / (e2 + e1 + 1) + e1 / (e1 + 1)
        assert float(d.subs("T", t)) == pytest.approx(want, rel=1e-9, abs=1e-300) and want < 0


# --- proof AND numbers: a 50-digit evaluation that disagrees fails an identity that simplify proved ---------------

def test_numbers_can_fail_a_proved_identity(ctx, monkeypatch):
    """The BT identity, the a:b curvature and the relabelling symmetry were `proved or numbers agree`, so the numbers
    could never fail a proved identity (a mutant that broke them survived). Now both must hold: with every 50-digit
    evaluation reporting a disagreement of 1, the methods that rest on them no longer prove their amendment."""
    from theory import sec13_dataset as m

    ok = m.dataset_minimiser_symbolic(ctx)
    assert ok.evidence["bt_identity_proved"] is True and ok.evidence["bt_identity_numeric_max_err"] < 1e-40
    assert ok.evidence["contradictory_curvature_positive_proved"] is True
    assert ok.evidence["contradictory_curvature_min_numeric"] == 0.0
    lw = m.listwise_symbolic(ctx)
    assert lw.evidence["relabelling_symmetry_proved"] is True and lw.evidence["relabelling_symmetry_numeric_max"] < 1e-40
    ln = m.length_symbolic(ctx)
    assert ln.evidence["strictly_convex_proved"] is True and ln.evidence["curvature_min_at_points"] > 0

    monkeypatch.setattr(m, "_num_zero", lambda *a, **k: 1.0)
    bad = m.dataset_minimiser_symbolic(ctx)
    assert bad.amended is False
    assert bad.evidence["bt_identity_proved"] is True and bad.evidence["contradictory_curvature_positive"] is False
    assert m.listwise_symbolic(ctx).amended is False


@pytest.mark.parametrize("above, want", [(False, True), (True, False)])
def test_length_row_feasibility_is_decided_at_the_last_precision_step(above, want):
    """Pins _exp_sum_at_most_one's loop bound `iv.prec <= 1 << 16` (a survivor of mutation: sec13_dataset.py:357
    `<=` -> `<` survived; it skips the 65,536-bit step the error message promises). a = -1 and b = the 40,000-bit
    dyadic rational just below (or just above) b* = log(1 - e^-1), found with mpmath at 42,000 bits: |b - b*| <
    2^-40000, so 32,768 bits cannot decide and 65,536 bits do. Below b*: e^a + e^b < 1 (feasible); above: > 1."""
    import mpmath

    from theory.sec13_dataset import _exp_sum_at_most_one

    bits = 40000
    with mpmath.workprec(bits + 2000):
        n = int(mpmath.floor(mpmath.log(-mpmath.expm1(-1)) * mpmath.mpf(2) ** bits))
    b = sp.Rational(n + int(above), 2 ** bits)
    assert _exp_sum_at_most_one(sp.Integer(-1), b) is want


def test_listwise_example_reference_order_is_read_from_differences_not_signs(monkeypatch):
    """listwise_symbolic's example needs a correctly ordered reference, pi_ref proportional to (1, e^-1, e^-2); it
    checks the order on log pi_ref(y_i) - log pi_ref(y_(i+1)) (= 1 and 1). Order is invariant to a common shift of
    the log reference (an unnormalised one): here the normaliser log(1 + e^-1 + e^-2) = 0.408 is replaced by
    0.408 - 5, so log pi_ref = (4.59, 3.59, 2.59) - still ordered, and the example's loss and misordering (which use
    u = log pi - log pi_ref only) do not move: the verdict must stay literal False, amended True, with the same example
    numbers (loss 1.38752 < log 6 = 1.79176, log pi(y_3) - log pi(y_2) = 0.1). A test that reads only the sign of
    -log pi_ref(y_(i+1)) (a survivor of mutation: log_ref[i] - log_ref[i + 1] -> -log_ref[i + 1]) is True for every
    normalised reference, misordered ones included, and is False here."""
    import theory.sec13_dataset as T

    target = 1 + sp.exp(-1) + sp.exp(-2)

    class ShiftedLog:
        def __getattr__(self, name):
            return getattr(sp, name)

        @staticmethod
        def log(x, *a):
            return sp.log(x, *a) - 5 if (not a and x == target) else sp.log(x, *a)

    ctx = CheckContext(seed=0, quick=True)
    base = listwise_symbolic(ctx)
    monkeypatch.setattr(T, "sp", ShiftedLog())
    shifted = listwise_symbolic(ctx)
    assert (base.literal, base.amended) == (False, True)
    assert (shifted.literal, shifted.amended) == (False, True)
    ex = shifted.evidence["example"]
    assert ex["loss"] == pytest.approx(1.3875170974500834, rel=1e-12)
    assert ex["loss"] < ex["log 6"] == pytest.approx(math.log(6), rel=1e-12)
    assert ex["log pi(y_3) - log pi(y_2)"] == pytest.approx(0.1, rel=1e-12)
