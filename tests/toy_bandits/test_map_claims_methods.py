"""The map methods (toy_bandits.map_claims): the U_eps convex program knows no closed form, planted errors flip
the methods that used to compare a quantity with itself, and no method merges another."""

import math

import numpy as np
import pytest

from dpo_rlhf_checks.result import CheckContext, MethodResult
from toy_bandits import map_claims as mc


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return CheckContext(seed=0, quick=True, out_dir=tmp_path_factory.mktemp("out"))


@pytest.mark.parametrize("d_ref, beta", [(-3.0, 0.5), (-1.0, 2.0), (-0.1, 1.0), (0.1, 1.0), (1.0, 0.5)])
def test_min_loss_program_finds_l_crit_without_knowing_it(d_ref, beta):
    p0 = 0.7 / (1.0 + math.exp(-d_ref))
    value, u, status = mc._min_loss_not_preferring_w(np.array([p0, 0.7 - p0, 0.3]), beta, 0, 1)
    assert value == pytest.approx(float(np.logaddexp(0.0, beta * d_ref)), abs=1e-6)  # l_crit (docs/theory.md §7)
    assert abs(u[0] - u[1]) <= 1e-5 and float(np.logaddexp.reduce(u)) <= 1e-7  # minimiser on pi_w = pi_l


def test_convex_method_does_not_use_the_closed_form_inverse(ctx, monkeypatch):
    import toy_bandits.maps as maps

    def forbidden(*args, **kwargs):
        raise AssertionError("the convex method must not use the closed-form inverse of the loss")

    monkeypatch.setattr(maps, "delta_at_loss", forbidden)
    monkeypatch.setattr(maps, "pair_target_policy", forbidden)
    res = mc.undesirable_space_convex(ctx)
    assert isinstance(res, MethodResult) and res.literal is True
    assert res.evidence["max_abs_min_loss_minus_l_crit"] < 1e-6 and res.evidence["instances"] > 0


def test_random_method_flips_on_a_planted_gibbs_error(ctx, monkeypatch):
    """pi* in U used to be checked on delta* = delta_ref + s with s > 0 sampled (it could not fail); now pi* comes from
    the Gibbs policy, and a wrong one is caught."""
    import toy_bandits.rlhf as rlhf

    assert mc.undesirable_space_random(ctx).literal is True
    real = rlhf.log_gibbs_policy
    monkeypatch.setattr(rlhf, "log_gibbs_policy", lambda p, r, b: real(p, r, 0.5 * np.asarray(b)))
    bad = mc.undesirable_space_random(ctx)
    assert bad.literal is False and bad.counterexample


def test_population_simulation_reads_delta_star_from_the_gibbs_policy(ctx, monkeypatch):
    import toy_bandits.rlhf as rlhf

    res = mc.equiv_population_simulation(ctx)
    assert (res.literal, res.amended) == (False, True)
    assert "phase_diagram" not in res.evidence  # the phase diagram against its own formula is gone
    real = rlhf.gibbs_policy
    monkeypatch.setattr(rlhf, "gibbs_policy", lambda p, r, b: real(p, 1.1 * np.asarray(r), b))
    bad = mc.equiv_population_simulation(ctx)
    assert bad.amended is False


def test_certificate_predictions_are_computed_not_typed(ctx):
    c_star = mc.eq17_critical_ratio()["c_star_brent"]
    assert mc.predicted_certifies("cpo_eq17", 1.0, {"gamma": 1.01 * c_star}) is True
    assert mc.predicted_certifies("cpo_eq17", 1.0, {"gamma": 0.99 * c_star}) is False
    assert mc.predicted_certifies("cpo_smooth", 1.0, {"gamma": -0.6, "tau": 2.0, "alpha": 0.5}) is True
    assert mc.predicted_certifies("cpo_smooth", 1.0, {"gamma": -0.8, "tau": 2.0, "alpha": 0.5}) is False
    with pytest.raises(ValueError, match="valid"):
        mc.predicted_certifies("ipo", 1.0, {})
    derived = mc.cpo_loss_certificates_derived(ctx)
    search = mc.cpo_loss_certificates_search(ctx)
    assert derived.literal is False and derived.amended is True
    assert search.literal is False and search.amended is True
    assert derived.amended_statement == search.amended_statement  # one text: merged without contradiction
    # the search compares with the derived prediction: measured, they share it (README, "Independent methods")
    assert "toy_bandits.map_claims.predicted_certifies" in set(derived.depends_on) & set(search.depends_on)


def test_code_default_regimes_are_the_code_defaults_and_certify_in_both_methods(ctx):
    """The regimes labelled "code default(s)" and "released checkpoint" are the settings the amended statement says
    qualify (registry: "the code defaults gamma=0.5, tau=2, alpha=1 and the released alpha=0.25 qualify"). Their
    parameters are read here from where the toolkit keeps them (atlas_rows.PAPER_CPO_ROWS, the authors' code
    defaults at the Setting default beta, and the one released row; the clip margin from the target's signature),
    not retyped, and each of them certifies by the derived condition and on the search grid."""
    import inspect

    from dpo_rlhf_checks.atlas_rows import PAPER_CPO_ROWS, Setting
    from dpo_rlhf_checks.losses import _clip_target

    default_beta = Setting("cpo_clip").beta
    code = {s.loss: s for s in PAPER_CPO_ROWS if s.beta == default_beta}
    released = [s for s in PAPER_CPO_ROWS if s.beta != default_beta]
    assert sorted(code) == ["cpo_clip", "cpo_easy", "cpo_eq17", "cpo_smooth"] and len(released) == 1
    clip_margin = inspect.signature(_clip_target).parameters["margin"].default
    labelled = {note: (name, beta, params) for name, beta, params, _nll, note in mc._regimes()
                if "code default" in note or "released" in note}
    assert len(labelled) == 4
    for note, (name, beta, params) in labelled.items():
        if name == "cpo_clip":  # only the margin is the code's: the regime's beta is 1
            assert params.get("margin", clip_margin) == code[name].params.get("margin", clip_margin) == 0.0, note
        elif "released" in note:
            assert (name, beta, params) == (released[0].loss, released[0].beta, released[0].params), note
        else:
            assert (beta, params) == (code[name].beta, code[name].params), note
    for method, key in ((mc.cpo_loss_certificates_derived, "predicted_certifies"),
                        (mc.cpo_loss_certificates_search, "certifies_on_grid")):
        rows = [r for r in method(ctx).evidence["regimes"] if r["regime"] in labelled]
        assert len(rows) == 4 and all(r[key] is True for r in rows), (method.__name__, rows)


def test_no_hand_merge_is_left():
    src = open(mc.__file__).read()
    assert "def _merge" not in src and "theory.claims" not in src and "decide(" not in src


def test_predicted_certifies_refuses_a_nonpositive_beta():
    # d73abc3 guarded cpo_eq17 by gamma >= 0, a clause that decides nothing at beta > 0 (gamma / beta >= c* > 0
    # already needs gamma > 0); at beta < 0 (gamma = beta = -1: gamma / beta = 1 >= c*) only that clause said False.
    # beta <= 0 is not a DPO temperature: a one-line error for every variant.
    c_star = mc.eq17_critical_ratio()["c_star_brent"]
    for name, params in (("cpo_eq17", {"gamma": -1.0}), ("cpo_clip", {}), ("dpo", {})):
        for beta in (-1.0, 0.0, float("nan")):
            with pytest.raises(ValueError, match="beta must be > 0"):
                mc.predicted_certifies(name, beta, params)
    # eq17 at beta > 0: gamma = 0 and gamma < 0 never certify (c* = 0.2239 > 0); the boundary gamma = c* beta does
    assert mc.predicted_certifies("cpo_eq17", 1.0, {"gamma": 0.0}) is False
    assert mc.predicted_certifies("cpo_eq17", 2.0, {"gamma": -0.1}) is False
    assert mc.predicted_certifies("cpo_eq17", 2.0, {"gamma": 2.0 * c_star}) is True


def _derived_condition(name, beta, params, nll_max):
    """The conditions of docs/theory.md §10, written out here (c* by a dense grid of p(1-p) log((1-p)/p))."""
    if name == "dpo":
        return False
    if name == "cpo_eq17":
        p = np.linspace(1e-6, 0.5, 2_000_001)
        return params["gamma"] / beta >= float(np.max(p * (1 - p) * np.log((1 - p) / p)))
    if name == "cpo_clip":
        return params.get("margin", 0.0) >= 0
    if name == "cpo_smooth":
        g, tau, a = params["gamma"], params["tau"], params["alpha"]
        if a > 1:
            return False
        if a == 1:
            return g >= 0
        return g >= (a * math.log(a) + (1 - a) * math.log1p(-a)) / (a * tau)
    assert name == "cpo_easy"
    bound = (math.sqrt(2) - 1) ** 2 * nll_max ** 2 if nll_max is not None else math.inf
    return params["gamma"] < 0 and -params["gamma"] / beta >= bound


def test_regimes_sit_on_both_sides_of_each_derived_condition():
    # _regimes() is the set of test points of cpo-loss-certificates' derived and search methods: the search can only
    # catch a wrong condition on a side of it that some regime visits. Each condition that can go either way (eq17;
    # clip; smooth with alpha = 1; smooth with alpha < 1; easy with bounded NLLs) must have regimes on both sides,
    # by the conditions written out here, and predicted_certifies must agree with them at every regime.
    sides: dict[str, set] = {}
    for name, beta, params, nll_max, _note in mc._regimes():
        want = _derived_condition(name, beta, params, nll_max)
        assert mc.predicted_certifies(name, beta, params, nll_max) is want, (name, beta, params, nll_max)
        if name == "cpo_smooth":
            group = "cpo_smooth alpha " + ("= 1" if params["alpha"] == 1 else "< 1" if params["alpha"] < 1 else "> 1")
        else:
            group = name + (" bounded NLL" if nll_max is not None else "")
        sides.setdefault(group, set()).add(want)
    for group in ("cpo_eq17", "cpo_clip", "cpo_smooth alpha = 1", "cpo_smooth alpha < 1", "cpo_easy bounded NLL"):
        assert sides[group] == {True, False}, group
    assert sides["dpo"] == sides["cpo_smooth alpha > 1"] == sides["cpo_easy"] == {False}


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_search_catches_a_wrong_easy_bound_on_either_side(ctx, monkeypatch, scale):
    """cpo_easy on mean NLLs <= L = 3 certifies iff gamma < 0 and |gamma|/beta >= (sqrt 2 - 1)^2 L^2 = 27 - 18 sqrt 2
    = 1.5442 (T = b - a + G (1/a + 1/b), G = |gamma|/beta, is least at a = L, b = sqrt G: 2 sqrt G - L + G/L >= 0).
    A derived condition with that bound halved or doubled must turn the search method's amended False: the regimes
    must visit both sides of the bound with gamma < 0, where the grid search decides (by hand, T_min = -0.0886 at
    G = 0.95 x 1.5442, +0.0872 at 1.05 x). A regime with gamma > 0 is on the failing side of every bound, so it cannot
    catch a bound that is too small: `-0.95 * easy_bound` -> `0.95 * easy_bound` in _regimes left the halved bound
    (and the bound (sqrt 2 - 1)^2 L, without the square) undetected. (a survivor of mutation)"""
    bound = 27.0 - 18.0 * math.sqrt(2.0)
    bounded = [(beta, params) for name, beta, params, nll_max, _ in mc._regimes()
               if name == "cpo_easy" and nll_max == 3.0]
    ratios = sorted(-params["gamma"] / beta / bound for beta, params in bounded if params["gamma"] < 0)
    assert any(0.5 < r < 1.0 for r in ratios) and any(1.0 < r < 2.0 for r in ratios), ratios
    true_condition = mc.predicted_certifies

    def wrong_bound(name, beta, params, nll_max=None):
        if name == "cpo_easy" and nll_max is not None:
            return params["gamma"] < 0 and -params["gamma"] / beta >= scale * bound
        return true_condition(name, beta, params, nll_max)

    monkeypatch.setattr(mc, "predicted_certifies", wrong_bound)
    res = mc.cpo_loss_certificates_search(ctx)
    assert res.amended is False
    missed = [r for r in res.evidence["regimes"] if not r["prediction_matches"]]
    # the mismatch is the bounded regime on the side the wrong bound moved across: below it (0.95) when halved,
    # where the grid finds loss < log 2 with delta < 0; above it (1.05) when doubled, where the grid finds none
    side = "= 0.95 bound" if scale < 1 else "= 1.05 bound"
    assert [(r["variant"], r["regime"].endswith(side), r["certifies_on_grid"]) for r in missed] == [
        ("cpo_easy", True, scale > 1)]


def test_random_method_evaluates_points_of_U_and_needs_the_reference_terms(ctx, monkeypatch):
    """Gap 4e48bf6482 (map_claims.py:285, `base + d_u` -> `d_u`): the points handed to dpo_loss must lie in U
    (delta_ref < pc - pr < 0, checked here on the tensors themselves), and a dpo_loss without its reference terms
    must turn the literal False: on U, softplus(-(pc - pr)) > log 2 since pc - pr < 0 (docs/theory.md §2)."""
    import dpo_rlhf_checks.losses as losses

    seen = []

    def no_reference(pc, pr, rc, rr, *, beta):
        seen.append(((pc - pr).numpy().copy(), (rc - rr).numpy().copy()))
        return losses.LossOutput(losses._softplus(-beta * (pc - pr)), *losses._rewards(beta, pc, pr, rc, rr))

    monkeypatch.setattr(losses, "dpo_loss", no_reference)
    bad = mc.undesirable_space_random(ctx)
    assert len(seen) == 1
    delta, delta_ref = seen[0]
    assert delta.size == bad.evidence["points_of_U_checked"] > 1000
    assert np.all(delta_ref < delta) and np.all(delta < 0.0)  # every evaluated point is in U
    assert bad.literal is False and bad.evidence["all_have_loss_below_log2"] is False
    assert bad.counterexample["loss_below_log2_on_U"] is False
    # by hand: without the reference terms the loss on U is softplus(-delta) > log 2 by log(1 + e^{-delta}) - log 2
    assert bad.evidence["max_loss_on_U_minus_log2"] == pytest.approx(
        float(np.max(np.logaddexp(0.0, -delta)) - math.log(2.0)), rel=1e-9)
    assert bad.evidence["max_loss_on_U_minus_log2"] > 0.0


def test_convex_method_with_no_instance_in_its_filter_cannot_pass(ctx, monkeypatch):
    """Part (2) of the convex method (CVXPY's pi* in U on random instances with beta delta_ref + dr < -1e-3 and
    dr > 1e-3) must see at least one instance: 'n_in == n_used > 0'. Every drawn reward vector is sorted ascending here
    (so dr = r(0) - r(1) <= 0 on every draw and the filter keeps none of the 600 tries); part (1) is unchanged and still
    right (non-empty iff delta_ref < 0 on its 10 programs). Then the method has no evidence for 'pi* in U' and its
    literal must not be True. With '>= 0' (a survivor of mutation, map_claims.py:396) it passed on 0/0 instances
    (measured: literal True; unplanted False), as it does for a filter error such as dr > 1e3 for dr > 1e-3."""
    real_rng = np.random.default_rng

    class SortedRewards:
        def __init__(self, rng):
            self._rng = rng

        def __getattr__(self, name):
            return getattr(self._rng, name)

        def normal(self, *args, **kwargs):
            return np.sort(self._rng.normal(*args, **kwargs))

    class Random:
        def __getattr__(self, name):
            return getattr(np.random, name)

        def default_rng(self, *args, **kwargs):
            return SortedRewards(real_rng(*args, **kwargs))

    class Numpy:
        random = Random()

        def __getattr__(self, name):
            return getattr(np, name)

    monkeypatch.setattr(mc, "np", Numpy())
    res = mc.undesirable_space_convex(ctx)
    rows = res.evidence["min_loss_programs"]
    assert len(rows) == 10 and all(r["U_nonempty_by_program"] == (r["delta_ref"] < 0) for r in rows)
    assert res.evidence["instances"] == 0 and res.evidence["pi_star_by_cvxpy"] == []
    assert res.literal is not True


def test_population_simulation_needs_every_pair_of_an_instance_at_delta_star(ctx, monkeypatch):
    """Pins that equiv_population_simulation's per-instance 'converged_to_pi_star' reads the WORST of the instance's
    six pair errors |delta_T - delta*| (the docstring: 'tolerance 1e-6 on every pair'), not the best one (a survivor
    of mutation: err_delta[n].max() -> .min() kept every verdict). The trained trajectory is handed back with one
    pair (the last, (2, 3)) of the first instance moved by 1e-3, its policy untouched: that instance has five pairs at
    ~1e-14 and one at 1e-3 > tol = 1e-6, so it has not converged; every other instance is unchanged."""
    import toy_bandits.dynamics as dyn

    real = dyn.train_tabular
    calls = []

    def moved(*a, **k):
        traj = real(*a, **k)
        if not calls:
            traj.delta[-1, 0, -1] += 1e-3
        calls.append(1)
        return traj

    monkeypatch.setattr(dyn, "train_tabular", moved)
    res = mc.equiv_population_simulation(ctx)
    rows = res.evidence["instances"]
    first = rows[0]
    assert first["max_err_delta"] == pytest.approx(1e-3, rel=1e-6)
    assert first["max_err_pi"] <= 1e-6  # the policy is still pi*: only the pair's delta is off
    assert first["converged_to_pi_star"] is False
    assert all(r["converged_to_pi_star"] for r in rows[1:])  # measured: every other instance at ~1e-14
    assert res.amended is False  # 'training reaches pi* on every instance' no longer holds


def test_certificate_search_counterexample_delta_ref_is_its_reference_margin():
    """A counterexample of the certificate search reports the reference log-probs (log pi_ref(y_w), log pi_ref(y_l)),
    their margin delta_ref and the target T there. For cpo_eq17 (docs/theory.md §10: loss -log sigma(beta (delta -
    delta_ref) - m_ref), m_ref = gamma (1/pi_ref(y_w) + 1/pi_ref(y_l))) the target is written out here by hand, T =
    delta_ref + (gamma / beta) (e^-lw + e^-ll) with delta_ref = lw - ll; the reported delta_ref must be that margin and
    the reported T must follow from it (rel 1e-12). Regimes gamma = -0.1 (beta 1) and gamma = 0 (DPO: T = delta_ref).
    (a survivor of mutation: delta_ref written rc + rr, -5.0 read -5.0134, no verdict moved.)"""
    rc, rr = mc._reference_grid()
    for beta, gamma in ((1.0, -0.1), (1.0, 0.0), (0.5, 0.05)):
        cx = mc._certificate_search("cpo_eq17", beta, {"gamma": gamma}, rc, rr)["counterexample"]
        assert cx is not None
        lw, ll = cx["ref_chosen_logp"], cx["ref_rejected_logp"]
        assert cx["delta_ref"] == pytest.approx(lw - ll, rel=1e-12, abs=1e-12)
        t_hand = (lw - ll) + gamma / beta * (math.exp(-lw) + math.exp(-ll))
        assert cx["target_T"] == pytest.approx(t_hand, rel=1e-9, abs=1e-12)
        assert cx["target_T"] == pytest.approx(cx["delta_ref"] + gamma / beta * (math.exp(-lw) + math.exp(-ll)),
                                               rel=1e-9, abs=1e-12)
        assert cx["delta"] < 0 and cx["loss"] < math.log(2)


def test_training_method_runs_eq17_at_the_gamma_its_note_states(ctx):
    """cpo-loss-certificates' training method (tabular, pi_ref = (0.04, 0.8, 0.16), pair (0, 1), beta = 1) trains
    cpo_eq17 at gamma = 0.5, as its evidence note says ("eq17 gamma/beta = 0.5 >= c*"); a run at another gamma on the
    same side of c* = 0.2239 kept every verdict but left the note wrong (a survivor of mutation: gamma 0.5 -> 0.25).
    Pinned by hand at step 0 (policy = reference, delta = delta_ref = -log 20): DPO's loss is softplus(0) = log 2, and
    Eq. 17's is softplus(beta (T - delta)) = softplus(m_ref), m_ref = gamma (1/0.04 + 1/0.8) = 0.5 * 26.25 = 13.125,
    so 13.125 + log(1 + e^-13.125) = 13.1250019947 (gamma 0.25 gives 6.5639). DPO has steps with loss < log 2 and
    delta < 0, eq17 none, and the certificate is exact at every step of every variant."""
    import re

    res = mc.cpo_loss_certificates_training(ctx)
    ev = res.evidence
    assert ev["pi_ref"].tolist() == [0.04, 0.8, 0.16] and ev["beta"] == 1.0 and ev["pair"] == [0, 1]
    rows = ev["variants"]
    assert rows["dpo"]["loss_start"] == pytest.approx(math.log(2.0), abs=1e-12)
    m_ref = 0.5 * (1 / 0.04 + 1 / 0.8)
    assert m_ref == pytest.approx(13.125, abs=1e-12)
    assert rows["cpo_eq17"]["loss_start"] == pytest.approx(13.125 + math.log1p(math.exp(-13.125)), abs=1e-9)
    stated = re.search(r"eq17 gamma/beta = ([0-9.]+) >= c\* = ([0-9.]+)", ev["note"])
    assert stated is not None, ev["note"]
    assert float(stated.group(1)) == rows["cpo_eq17"]["params"]["gamma"] / ev["beta"] == 0.5
    assert float(stated.group(2)) == pytest.approx(mc.C_STAR_STATED, abs=1e-4)
    assert rows["dpo"]["steps_loss_below_log2_but_delta_negative"] > 0
    assert rows["cpo_eq17"]["steps_loss_below_log2_but_delta_negative"] == 0
    assert all(r["certificate_exact"] for r in rows.values())
    assert res.amended is True
