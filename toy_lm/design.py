"""The pre-registered design of the two LM claims (docs/theory.md §12): what is compared, against which bound,
decided how. Fixed before any run; printed in the report; the registry's statements cite these numbers
(tests/toy_lm/test_lm_design.py checks that they agree).

Seeds are the replication unit. A *comparison* reads one number per seed (a seed-level value: a fraction of
that seed's P train pairs, a difference of two such fractions, or a mean loss) in one cell (beta, optimizer,
method), and tests a bound on its mean over seeds:

  at_least b:  decided True when the interval's lower end > b, False when its upper end < b;
  at_most b:   decided True when the upper end < b, False when the lower end > b;
  within t:    decided True when the interval lies inside (-t, t), False when it lies wholly outside.

Otherwise the comparison is undecided at that look.

Interval: the two-sided Student-t interval of the mean of the seed-level values, mean +- t_{n-1} sd / sqrt(n),
at level 1 - alpha / K, where K is the number of planned looks (Bonferroni over the looks: the chance that any
look decides wrongly is at most alpha). A fraction of P pairs moves in steps of 1/P, so its seed-level standard
deviation is floored at the rounding's, 1 / (P sqrt(12)) (Sheppard): three seeds that agree to the last pair
are not read as a zero-variance measurement. One seed gives no interval.

Sequential looks: the first look uses the config's ``seeds``; while a comparison is undecided, more seeds are
trained (only the cells the undecided comparisons read), up to ``max_seeds`` in all. The default schedule doubles
the seeds at each look (3, 6, 12: ``look_schedule = "double"``; ``"step"`` adds ``seed_step`` per look). A comparison
is decided at the first look whose interval clears its bound, and stays so. Undecided after the last look: the
method that needs it is ``inconclusive``. Every comparison of a method walks the same looks, so the outcome does
not depend on the order in which methods run.

Seed budget, by a power rule (fixed before the confirming runs; :func:`power_budget`, tests/toy_lm/test_lm_design.py).
A comparison whose true mean lies a distance d from its bound is decided by the last look (n seeds, K looks) with
probability P(T > t_{n-1, 1 - alpha/(2K)}), T noncentral t with n - 1 degrees of freedom and noncentrality
sqrt(n) d / sd (exact for normal seed-level values; a decision at an earlier look only adds to it):
:func:`decision_power`. The rule: the
budget is the smallest size on the look schedule at which a comparison d* = half its family's margin from its
bound is decided with probability >= 0.9, using the family's pooled seed-level sd from a pilot (:data:`PILOT`),
taken over every family and capped at :data:`BUDGET_CAP` seeds, the most whose stage fits the 90 s limit on this
CPU (each seed beyond the first look costs a 300-step reference SFT, about 2.3 CPU s, before any cell). Families and
margins: the fractions in U (``min_fail_frac`` = 0.10), the amounts (``tol_frac_in_U`` = 0.10), the shortfalls
(``fix_margin`` = 0.05). With the pilot's sds the rule asks 24, 12 and 96 seeds; the cap makes it 12. So at 12 seeds
an amount 0.05 from +-0.10 is decided with probability 0.96, a fraction in U 0.05 from 0.10 with 0.72, and a
shortfall 0.025 from 0.05 with 0.19 (:func:`family_power`): a shortfall that close to its bound is expected to
stay undecided (inconclusive), on any seed set; one a whole margin (0.05) away is decided with probability 0.74.

The pilot (:data:`PILOT`): the default stage of commit 9d50b89 (budget 9, looks 3, 6, 9) on seed sets 0-8 and
1000-1008 (``--seed 0`` and ``--seed 1000``), every comparison with at least two seeds, the sd pooled within each
family (sum of squared deviations over the sum of degrees of freedom). The confirming runs use seed sets never used
before (``--seed 2000``, ``--seed 3000``) and the pilot's own seed sets again under this design.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

TESTS = ("at_least", "at_most", "within")


@dataclass(frozen=True)
class LMDesign:
    """The numbers of the LM claims' comparisons (all fixed before any run).

    alpha: error probability of one comparison over all its looks (two-sided interval, Bonferroni over looks).
    slow_beta: the beta level of the judged ordered-label cells (the slow regime by design: the default
        reference puts the median beta |delta_ref| of its misranked pairs near 13 there, docs/theory.md §14).
    min_fail_frac: DPO's failure is present when the mean fraction of train pairs in U at the end is >= this.
    low_loss: ... at a mean final training loss <= this (half of log 2: "far below log 2").
    tol_frac_in_U: the observed fraction in U agrees with the tabular prediction when the mean over seeds of
        (observed - predicted) lies within +- this.
    fix_margin: a CPO carrier fixes a cell when the mean over seeds of its shortfall (the attainable fraction
        of train pairs with delta >= m minus the reached one) is <= this: half of ``min_fail_frac``, so a
        "fixed" cell leaves at most half of what counts as a failure.
    carriers / carriers_bt: the certificate-carrying CPO losses judged (implicit target T >= m on every pair by
        their formula, docs/theory.md §10), with ordered and with Bradley-Terry labels.
    atlas_tol_frac_in_U: the U-atlas's LM column (toy_lm/atlas_lm.py): in each loss's slow ordered SGD cell the
        observed fraction in U agrees with that loss's tabular prediction when the mean over seeds of (observed -
        predicted) lies within +- this. The same bar as DPO's own ``tol_frac_in_U`` (every loss is held to what the
        DPO cell is held to: about 3 of the default 32 train pairs, three times a fraction's 1/P step), fixed before
        any atlas run.
    """

    alpha: float = 0.05
    slow_beta: float = 2.5
    min_fail_frac: float = 0.10
    low_loss: float = 0.5 * math.log(2)
    tol_frac_in_U: float = 0.10
    fix_margin: float = 0.05
    carriers: tuple[str, ...] = ("cpo_clip", "cpo_smooth")
    carriers_bt: tuple[str, ...] = ("cpo_clip_bt", "cpo_smooth_bt")
    atlas_tol_frac_in_U: float = 0.10

    def to_dict(self) -> dict:
        return asdict(self)


DESIGN = LMDesign()


@dataclass(frozen=True)
class Spec:
    """One pre-registered comparison.

    name: a readable id ("fail_frac beta 2.5 sgd dpo"). key: the cell (beta, optimizer, method).
    quantity: which seed-level value (see :data:`QUANTITIES`). test, bound: see the module docstring.
    """

    name: str
    key: tuple[float, str, str]
    quantity: str
    test: str
    bound: float

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise ValueError(f"test must be one of {TESTS}, got {self.test!r}")
        if self.quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {tuple(QUANTITIES)}, got {self.quantity!r}")


# name -> (is a fraction of the train pairs (floored sd), needs the tabular prediction, what it is)
QUANTITIES = {
    "obs_frac_in_U": (True, False, "observed fraction of train pairs in U at the end"),
    "final_loss": (False, False, "mean training loss at the end"),
    "obs_minus_pred_frac_in_U": (True, True, "observed minus predicted fraction of train pairs in U at the end"),
    "pred_frac_in_U": (True, True, "predicted fraction of train pairs in U at the LM's end (tabular, matched time)"),
    "shortfall_vs_one": (True, False, "1 - observed fraction of train pairs with delta >= m"),
    "shortfall_vs_ceiling": (True, False, "ceiling - observed fraction with delta >= m; ceiling: fraction whose "
                                          "exact population minimiser on the seed's sampled labels has delta >= m"),
    "pred_shortfall_vs_one": (True, True, "1 - predicted fraction with delta >= m"),
    "pred_shortfall_vs_ceiling": (True, True, "ceiling - predicted fraction with delta >= m (ceiling from the "
                                              "tabular loss's own derivative at delta = m)"),
}


LOOK_SCHEDULES = ("double", "step")


def look_sizes(n_initial: int, seed_step: int, max_seeds: int, schedule: str = "double") -> list[int]:
    """The number of seeds at each planned look: ``"double"``: n_initial, 2 n_initial, 4 n_initial, ...;
    ``"step"``: n_initial, n_initial + seed_step, ...; the last look at max_seeds (one look when n_initial >=
    max_seeds)."""
    if schedule not in LOOK_SCHEDULES:
        raise ValueError(f"look schedule must be one of {LOOK_SCHEDULES}, got {schedule!r}")
    if n_initial < 1:
        raise ValueError(f"the first look needs at least one seed, got {n_initial}")
    sizes = [n_initial]
    while sizes[-1] < max_seeds:
        grown = 2 * sizes[-1] if schedule == "double" else sizes[-1] + max(seed_step, 1)
        sizes.append(min(grown, max_seeds))
    return sizes


def config_looks(cfg) -> list[int]:
    """The seeds at each planned look of an LM config (``toy_lm.config.LMConfig``): :func:`look_sizes` of its first
    seed set, seed step, budget and look schedule; the one plan every LM claim, the atlas's LM column and the report
    read."""
    return look_sizes(len(cfg.seeds), cfg.seed_step, cfg.max_seeds, cfg.look_schedule)


def n_looks(n_initial: int, seed_step: int, max_seeds: int, schedule: str = "double") -> int:
    """Planned looks (>= 1): the length of :func:`look_sizes`."""
    return len(look_sizes(n_initial, seed_step, max_seeds, schedule))


# ----------------------------------------------------------------------------------------------
# The seed budget by a power rule (module docstring)

# Pooled seed-level sd of each family of comparisons in the pilot (seed sets 0-8 and 1000-1008, commit 9d50b89's
# default stage; benchmarks/pilot_sd.py recomputes them from the two report.json files): (sd, degrees of freedom,
# comparisons). Fixed before the confirming runs.
PILOT = {
    "fraction_in_U": (0.0506, 73, 20),   # obs_frac_in_U, pred_frac_in_U (bound min_fail_frac)
    "amount": (0.0357, 83, 16),          # obs_minus_pred_frac_in_U (bound +-tol_frac_in_U)
    "shortfall": (0.0494, 442, 80),      # shortfall_vs_one/_vs_ceiling and their predictions (bound fix_margin)
}
FAMILY_OF = {"obs_frac_in_U": "fraction_in_U", "pred_frac_in_U": "fraction_in_U", "obs_minus_pred_frac_in_U": "amount",
             "shortfall_vs_one": "shortfall", "shortfall_vs_ceiling": "shortfall", "pred_shortfall_vs_one": "shortfall",
             "pred_shortfall_vs_ceiling": "shortfall"}  # final_loss: decided at the first look in every pilot run
POWER_TARGET = 0.9
BUDGET_CAP = 12  # seeds: the most whose default stage fits the 90 s limit here (module docstring)


def family_margin(family: str, design: "LMDesign | None" = None) -> float:
    """The margin a family's bound is stated in: min_fail_frac, tol_frac_in_U or fix_margin."""
    design = design or DESIGN
    return {"fraction_in_U": design.min_fail_frac, "amount": design.tol_frac_in_U,
            "shortfall": design.fix_margin}[family]


def decision_power(sd: float, distance: float, n: int, k: int, alpha: float = 0.05) -> float:
    """Probability that the interval over ``n`` seeds (level 1 - alpha/k) clears a bound ``distance`` away from the
    true mean, for normal seed-level values with sd ``sd``: the interval's near end is past the bound when
    sqrt(n) (mean - bound) / s > t_{n-1, 1 - alpha/(2k)}, and that statistic is noncentral t with n - 1 degrees of
    freedom and noncentrality sqrt(n) distance / sd (exact for normal values; 0 for n < 2)."""
    from scipy.stats import nct
    from scipy.stats import t as student_t

    if n < 2:
        return 0.0
    crit = float(student_t.ppf(1 - alpha / (2 * k), n - 1))
    return float(nct.sf(crit, n - 1, math.sqrt(n) * abs(distance) / sd))


def power_budget(sd: float, distance: float, n_initial: int, cap: int, power: float = POWER_TARGET,
                 alpha: float = 0.05, schedule: str = "double") -> int | None:
    """The smallest look size n <= cap of the schedule (its looks up to n: K of them) at which a comparison
    ``distance`` from its bound is decided with probability >= ``power``; None when even ``cap`` seeds do not reach
    it. The schedule is the doubling one from n_initial, cut at each candidate n."""
    for n in look_sizes(n_initial, 1, 10**6 if schedule == "double" else cap, schedule):
        if n > cap:
            break
        k = n_looks(n_initial, 1, n, schedule)
        if decision_power(sd, distance, n, k, alpha) >= power:
            return n
    return None


def rule_budget(n_initial: int = 3, cap: int | None = BUDGET_CAP, design: "LMDesign | None" = None,
                pilot: dict | None = None) -> dict:
    """The budget rule of the module docstring: per family, the power-rule size without a cap (d* = half the
    family's margin, the pilot's pooled sd, power >= POWER_TARGET); the budget is their maximum, capped at ``cap``
    (None: uncapped, the ``confirm`` preset of toy_lm/config.py); and each family's power at that budget."""
    design, pilot = design or DESIGN, pilot or PILOT
    wanted = {f: power_budget(sd, family_margin(f, design) / 2, n_initial, 10**6, alpha=design.alpha)
              for f, (sd, _, _) in pilot.items()}
    budget = max(wanted.values()) if cap is None else min(max(wanted.values()), cap)
    return {"wanted": wanted, "budget": budget, "power": family_power(budget, n_initial, design, pilot)}


def family_power(n: int, n_initial: int = 3, design: "LMDesign | None" = None, pilot: dict | None = None,
                 fraction_of_margin: float = 0.5) -> dict[str, float]:
    """Each family's probability of deciding, by ``n`` seeds, a comparison ``fraction_of_margin`` x margin from its
    bound (the pilot's pooled sd; looks of the doubling schedule up to n)."""
    design, pilot = design or DESIGN, pilot or PILOT
    k = n_looks(n_initial, 1, n)
    return {f: decision_power(sd, fraction_of_margin * family_margin(f, design), n, k, design.alpha)
            for f, (sd, _, _) in pilot.items()}


def seed_interval(values, level: float, resolution: float | None = None) -> dict:
    """Two-sided Student-t interval of the mean of seed-level ``values`` at confidence ``level``.

    resolution: the step of the values (1/P for a fraction of P pairs): the standard deviation used is at least
    resolution / sqrt(12). Returns {"mean", "lo", "hi", "n", "sd", "sd_used", "level", "method"}; with fewer than
    two values lo = -inf, hi = inf.
    """
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"seed-level values must be a non-empty 1-D array of finite numbers, got {values!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n, mean = x.size, float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else math.inf
    sd_used = max(sd, resolution / math.sqrt(12)) if resolution else sd
    if n < 2:
        lo, hi = -math.inf, math.inf
    else:
        half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd_used / math.sqrt(n)
        lo, hi = mean - half, mean + half
    return {"mean": mean, "lo": lo, "hi": hi, "n": n, "sd": sd if n > 1 else None, "sd_used": sd_used if n > 1 else None,
            "level": level, "method": "Student-t over seeds" + (", sd >= resolution/sqrt(12)" if resolution else "")}


def decide_bound(test: str, bound: float, lo: float, hi: float) -> bool | None:
    """True / False when the interval [lo, hi] clears the bound one way, None when it straddles it."""
    if test == "at_least":
        return True if lo > bound else (False if hi < bound else None)
    if test == "at_most":
        return True if hi < bound else (False if lo > bound else None)
    if test == "within":
        if -bound < lo and hi < bound:
            return True
        return False if (lo > bound or hi < -bound) else None
    raise ValueError(f"test must be one of {TESTS}, got {test!r}")


def and3(values) -> bool | None:
    """Three-valued AND: False if any is False, else None if any is undecided, else True (True when empty)."""
    values = list(values)
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


# ----------------------------------------------------------------------------------------------
# The comparisons of each method (cells fixed by the design: beta, optimizer, labels; never by an outcome)


def _dpo_keys(cfg, labels: str) -> list[tuple]:
    method = "dpo" if labels == "ordered" else "dpo_bt"
    return [(b, o, method) for b in cfg.betas for o in cfg.optimizers]


def dpo_failure_specs(cfg, design: LMDesign = DESIGN) -> dict[str, list[Spec]]:
    """The comparisons of lm-dpo-failure, by part:

    fail: in the slow cells (slow_beta, each optimizer) ordered DPO ends with mean fraction in U >= min_fail_frac
        and mean final loss <= low_loss;
    amount_ordered / amount_bt: in every DPO cell, mean(observed - predicted fraction in U) within +- tol_frac_in_U;
    predicted_slow_ordered / predicted_fast_ordered / predicted_bt: the tabular prediction has mean fraction in
        U >= min_fail_frac (slow ordered cells, the other ordered cells, every BT cell).
    """
    slow = [(design.slow_beta, o, "dpo") for o in cfg.optimizers]
    fail = []
    for key in slow:
        fail.append(Spec(f"fail_frac {_cell(key)}", key, "obs_frac_in_U", "at_least", design.min_fail_frac))
        fail.append(Spec(f"fail_loss {_cell(key)}", key, "final_loss", "at_most", design.low_loss))

    def amount(keys):
        return [Spec(f"amount {_cell(k)}", k, "obs_minus_pred_frac_in_U", "within", design.tol_frac_in_U) for k in keys]

    def predicted(keys):
        return [Spec(f"predicted {_cell(k)}", k, "pred_frac_in_U", "at_least", design.min_fail_frac) for k in keys]

    ordered = _dpo_keys(cfg, "ordered")
    fast = [k for k in ordered if k[0] != design.slow_beta]
    return {"fail": fail, "amount_ordered": amount(ordered), "amount_bt": amount(_dpo_keys(cfg, "bt")),
            "predicted_slow_ordered": predicted(slow), "predicted_fast_ordered": predicted(fast),
            "predicted_bt": predicted(_dpo_keys(cfg, "bt"))}


def cpo_fix_specs(cfg, design: LMDesign = DESIGN) -> dict[str, list[Spec]]:
    """The comparisons of lm-cpo-fix, by part (judged cells: ordered labels at slow_beta, BT labels everywhere):

    ordered: each carrier's mean shortfall 1 - (fraction with delta >= m) <= fix_margin (its ceiling is 1);
    bt_vs_one: each BT carrier's mean shortfall against 1 <= fix_margin (the literal "on the trained pairs");
    bt_vs_ceiling: against the fraction its own population minimiser reaches on the same labels (the amendment);
    pred_*: the same three on the tabular prediction.
    """
    ordered = [(design.slow_beta, o, m) for o in cfg.optimizers for m in design.carriers if m in cfg.methods]
    bt = [(b, o, m) for b in cfg.betas for o in cfg.optimizers for m in design.carriers_bt if m in cfg.methods]
    fm = design.fix_margin

    def specs(keys, quantity):
        return [Spec(f"{quantity} {_cell(k)}", k, quantity, "at_most", fm) for k in keys]

    return {"ordered": specs(ordered, "shortfall_vs_one"), "bt_vs_one": specs(bt, "shortfall_vs_one"),
            "bt_vs_ceiling": specs(bt, "shortfall_vs_ceiling"),
            "pred_ordered": specs(ordered, "pred_shortfall_vs_one"), "pred_bt_vs_one": specs(bt, "pred_shortfall_vs_one"),
            "pred_bt_vs_ceiling": specs(bt, "pred_shortfall_vs_ceiling")}


def _cell(key) -> str:
    beta, opt, method = key
    return f"beta {beta:g} {opt} {method}"
