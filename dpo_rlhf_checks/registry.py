"""The claim registry: every claim of THEORY.md with a stable id and its check.

Ids are stable: later tooling reads them from ``report.json``. Never rename one; add new
ids instead. Each claim names its check functions as ``"module:function"`` strings, most
complete first; the runner uses the first one whose module exists. This keeps imports
lazy (torch and cvxpy load only when a check needs them) and lets a claim start with its
symbolic check and gain numeric and training evidence as the toolkit grows.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Claim:
    """One claim to check.

    id: stable identifier (kebab-case).
    title: a few words.
    paper_ref: where the paper makes it (section / equation), or THEORY.md's section.
    statement: the formal statement the toolkit checks, in words and math.
    checks: candidate check functions, ``"module:function"``, most complete first (legacy; issue 9
        replaces it by ``methods``).
    methods: the claim's methods, name -> ``"module:function"``; each function returns a
        :class:`~dpo_rlhf_checks.result.MethodResult`. Names are one of ``result.METHODS``,
        optionally with a suffix after a dash (``"numeric-mpmath"``).
    """

    id: str
    title: str
    paper_ref: str
    statement: str
    checks: tuple[str, ...] = ()
    methods: dict[str, str] = field(default_factory=dict)

    def resolve(self) -> Callable | None:
        """The first candidate check whose module is present, or None when none is."""
        for target in self.checks:
            module_name, _, func_name = target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as err:
                # Only a missing *check module* means "not implemented yet"; a missing
                # dependency inside an existing module is a real error and propagates.
                if err.name is not None and module_name.startswith(err.name):
                    continue
                raise
            func = getattr(module, func_name, None)
            if func is not None:
                return func
        return None


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "rlhf-closed-form",
        "RLHF optimum is the Gibbs policy",
        "Sec. 2, Eq. 3/5; THEORY.md §1",
        "J(pi) = E_pi[r] - beta KL(pi || pi_ref) is strictly concave on the simplex; its unique maximiser is "
        "pi*(y) = pi_ref(y) exp(r(y)/beta) / Z with Z = sum_y pi_ref(y) exp(r(y)/beta); J(pi*) = beta log Z; "
        "delta* = delta_ref + dr/beta.",
        ("theory.claims:check_rlhf_closed_form",),
    ),
    Claim(
        "dpo-reparam",
        "DPO reparameterisation and loss",
        "Sec. 2, Eq. 8; THEORY.md §2",
        "r(y) = beta log(pi*(y)/pi_ref(y)) + beta log Z; under Bradley-Terry P(y_w > y_l) = sigma(dr) = "
        "sigma(beta (delta* - delta_ref)) and Z cancels; the per-pair loss is "
        "softplus(-beta (delta_pi - delta_ref)) and equals log 2 at pi = pi_ref.",
        ("theory.claims:check_dpo_reparam",),
    ),
    Claim(
        "assumption-iff",
        "The implicit assumption",
        "Sec. 3; THEORY.md §3",
        "pi*(y_w) > pi*(y_l) <=> delta* > 0 <=> beta delta_ref + dr > 0 <=> dr > beta log(pi_ref(y_l)/pi_ref(y_w)).",
        ("theory.claims:check_assumption_iff",),
    ),
    Claim(
        "equiv-population",
        "Conditional equivalence, population reading",
        "Sec. 3, main theorem; THEORY.md §4(a)",
        "Reading (a): the BT-labelled population loss l_q, q = sigma(dr), is minimised exactly where "
        "beta (delta_pi - delta_ref) = dr, i.e. at delta* of pi*; the paper says DPO and RLHF are equivalent "
        "iff the assumption holds for every pair.",
        ("toy_bandits.map_claims:check_equiv_population", "theory.claims:check_equiv_population"),
    ),
    Claim(
        "equiv-ordered-pair",
        "Conditional equivalence, ordered-pair reading",
        "Sec. 3, main theorem; THEORY.md §4(b)",
        "Reading (b), the paper's theorem applied to the per-pair loss l with deterministic labels: pi* minimises "
        "(or is a stationary point of) l exactly when the assumption holds. Checked with it: whether l has a finite "
        "minimiser at all, and how long finite training leaves a violated pair in U.",
        ("toy_bandits.map_claims:check_equiv_ordered_pair", "theory.claims:check_equiv_ordered_pair"),
    ),
    Claim(
        "relative-advantage",
        "DPO sees relative, alignment is absolute",
        "Sec. 3; THEORY.md §5",
        "l depends on pi only through delta_pi - delta_ref; dl/d delta_pi = -beta sigma(-beta (delta_pi - delta_ref)) "
        "< 0 everywhere; alignment is the sign of delta_pi.",
        ("theory.claims:check_relative_advantage",),
    ),
    Claim(
        "undesirable-space",
        "The undesirable solution space U",
        "Def. 3.3; THEORY.md §6",
        "U = {pi : delta_ref < delta_pi < 0} is non-empty iff delta_ref < 0; every pi in U has DPO loss < log 2 yet "
        "prefers y_l; when the assumption fails and dr > 0, pi* lies in U.",
        ("toy_bandits.map_claims:check_undesirable_space", "theory.claims:check_undesirable_space"),
    ),
    Claim(
        "gradient-weakening",
        "DPO gradient weakens through U",
        "Sec. 3 (wording on U); THEORY.md §6",
        "The gradient factor sigma(-beta (delta_pi - delta_ref)) decreases as delta_pi rises through U; at the "
        "boundary delta_pi -> 0 it equals sigma(beta delta_ref) (weakened, not vanished).",
        ("theory.claims:check_gradient_weakening",),
    ),
    Claim(
        "loss-delta-bridge",
        "Loss-to-delta bridge",
        "Sec. 3 (named); formula reconstructed, THEORY.md §7",
        "l is strictly decreasing and invertible in delta_pi: delta_pi = delta_ref - (1/beta) log(e^l - 1); "
        "pi(y_w) > pi(y_l) <=> l < l_crit = softplus(beta delta_ref); l_crit < log 2 when delta_ref < 0.",
        ("theory.claims:check_loss_delta_bridge",),
    ),
    Claim(
        "soft-margin-ranking",
        "DPO as soft-margin ranking",
        "Sec. 5, Eq. 27-28; THEORY.md §8",
        "With s = beta delta_pi, t = beta delta_ref: l = softplus(t - s), target negative iff the reference prefers "
        "y_l; with a = delta_ref - delta_pi, 0 <= softplus(beta a)/beta - max(0, a) <= log(2)/beta, so l/beta -> "
        "max(0, a) as beta -> infinity.",
        ("theory.claims:check_soft_margin_ranking",),
    ),
    Claim(
        "cpo-constrained-kkt",
        "Constrained RLHF: KKT closed form",
        "Sec. 4; THEORY.md §9(a)",
        "max J(pi) s.t. delta_pi >= m for every pair is a convex program with a unique solution when feasible; for "
        "one pair pi_c(y) ∝ pi_ref(y) exp((r(y) + mu a(y))/beta), a(y_w) = 1, a(y_l) = -e^m, and "
        "mu = max(0, (beta m - beta delta_ref - dr)/(1 + e^m)).",
        ("toy_bandits.solver_claims:check_cpo_constrained_kkt", "theory.claims:check_cpo_constrained_kkt"),
    ),
    Claim(
        "cpo-penalized-eq10",
        "Penalised CPO objective as printed",
        "Sec. 4, Eq. 10; THEORY.md §9(b)",
        "The penalised objective as printed, max J(pi) + gamma (log pi(y_w) - log pi(y_l)) with a fixed gamma > 0, "
        "is a well-posed maximisation whose maximiser is the CPO policy. Checked with it: is it bounded, what are its "
        "stationary points and of which kind?",
        ("toy_bandits.solver_claims:check_cpo_penalized_eq10", "theory.claims:check_cpo_penalized_eq10"),
    ),
    Claim(
        "cpo-stationary-margin",
        "Adaptive margin at stationarity",
        "Sec. 4, Eq. 13-16; THEORY.md §9(b)",
        "Stationary points of Eq. 10 satisfy beta (delta - delta_ref) = dr + m* with m* = gamma (1/pi(y_w) + "
        "1/pi(y_l)); gamma relates to the KKT multiplier of the log-form constraint of §9(a).",
        ("theory.claims:check_cpo_stationary_margin",),
    ),
    Claim(
        "cpo-loss-certificates",
        "CPO losses certify alignment",
        "Sec. 4, Eq. 17 and the authors' code; THEORY.md §10",
        "For each CPO loss variant (Eq. 17 and the code's clip, smooth and easy options), loss < log 2 certifies "
        "delta >= 0. Checked with it: under which parameters it does, and for which delta (summed or per-token "
        "mean).",
        ("toy_bandits.map_claims:check_cpo_loss_certificates",),
    ),
    Claim(
        "price-of-alignment",
        "Price of alignment",
        "Sec. 4; THEORY.md §9(c)",
        "J(pi*) - J(pi_c) >= 0, with equality iff every constraint already holds at pi*.",
        ("toy_bandits.solver_claims:check_price_of_alignment",),
    ),
    Claim(
        "lm-dpo-failure",
        "DPO failure appears in LM training",
        "Sec. 6 mechanism; THEORY.md §12",
        "A small LM trained with DPO from a reference that favours y_l lowers its loss while the affected pairs stay "
        "in U, in the amount the toy theory predicts.",
        ("toy_lm.claims:check_lm_dpo_failure",),
    ),
    Claim(
        "lm-cpo-fix",
        "CPO fixes it in LM training",
        "Sec. 4/6; THEORY.md §12",
        "CPO variants that carry a certificate end with delta >= m on the trained pairs; compared on held-out pairs "
        "with DPO, IPO and DPO-Positive.",
        ("toy_lm.claims:check_lm_cpo_fix",),
    ),
    Claim(
        "benchmark-table",
        "Reported benchmark results",
        "Sec. 6, main table; THEORY.md §11",
        "The stated gains follow from the table's own numbers (CPO - DPO = +0.55 AE2 WR, CPO - SimPO = +0.66 LC, "
        "+2.6 and +3.7 Arena-Hard over SimPO and DPO), and which Arena-Hard intervals overlap. The 8B-model "
        "results themselves are not re-run here (that needs 8B-model training); the evidence says so.",
        ("theory.claims:check_benchmark_table",),
    ),
    # --- Beyond one pair: the theory at the level of a data set (docs/theory.md §13; issue 10) ---
    Claim(
        "dataset-ordered-minimiser",
        "Empirical ordered-pair DPO on a comparison multigraph",
        "Beyond the paper (one prompt, many labelled pairs); docs/theory.md §13, §4(b)",
        "The natural extension of the single-pair facts to a data set: the empirical ordered-pair DPO loss "
        "L(pi) = sum_(i,j) n_ij softplus(-beta h_ij), h_ij = delta_ij - delta_ref_ij, over labels (i, j, n_ij) on one "
        "prompt's responses has a finite minimiser for every data set, and at it each labelled pair has "
        "beta h_ij = log(n_ij / n_ji), its own label log-odds (the data-set version of beta h = dr), so the optimum "
        "ranks i over j iff beta delta_ref_ij + log(n_ij / n_ji) > 0. Checked with it: when a finite minimiser exists "
        "(single pair, chain, DAG, cycle, contradictory repeats; the Bradley-Terry MLE existence condition), what it "
        "is, and which pairs the empirical optimum ranks the wrong way.",
        methods={"symbolic": "theory.sec13_dataset:dataset_minimiser_symbolic",
                 "convex": "toy_bandits.dataset_claims:dataset_minimiser_convex",
                 "numeric": "toy_bandits.dataset_claims:dataset_minimiser_numeric",
                 "simulation": "toy_bandits.dataset_claims:dataset_minimiser_simulation"},
    ),
    Claim(
        "finite-label-sign",
        "Finite BT labels: the sign of the empirical optimum",
        "Beyond the paper; docs/theory.md §13, §2, §3",
        "With n Bradley-Terry labels per pair (k ~ Binomial(n, sigma(dr)) wins of y_w), the empirical population "
        "optimum uses q_hat = k/n in place of sigma(dr) and ranks y_w first iff beta delta_ref + logit(k/n) > 0. The "
        "natural expectation: the probability P_n that it ranks the pair unlike pi* is below 1/2 and falls "
        "monotonically to 0 as n grows (more labels never hurt). Checked with it: P_n exactly and by simulation as a "
        "function of n, beta delta_ref and dr, against pi* and against the human preference, and the n needed for "
        "a given error rate.",
        methods={"numeric": "toy_bandits.dataset_claims:finite_label_numeric",
                 "simulation": "toy_bandits.dataset_claims:finite_label_simulation"},
    ),
    Claim(
        "listwise-equivalence",
        "Listwise (Plackett-Luce) DPO on rankings of k > 2",
        "Beyond the paper; docs/theory.md §13, §3, §6",
        "For a ranking y_1 > ... > y_k (k > 2) and the Plackett-Luce form of DPO (scores s_t = beta (log pi(y_t) - "
        "log pi_ref(y_t))), the pairwise theory carries over: the listwise DPO optimum under PL labels agrees with the "
        "human ranking iff the pairwise condition beta delta_ref + dr > 0 holds for every adjacent pair, and, as for "
        "one pair (§6), a policy with listwise loss below the reference's log k! that misorders the list exists only "
        "when the reference itself misorders some pair.",
        methods={"symbolic": "theory.sec13_dataset:listwise_symbolic",
                 "convex": "toy_bandits.dataset_claims:listwise_convex",
                 "numeric": "toy_bandits.dataset_claims:listwise_numeric"},
    ),
    Claim(
        "length-normalised",
        "Per-token-mean log-ratios (SimPO, the authors' code)",
        "Beyond the paper (its code uses means); docs/theory.md §13, §3, §7",
        "Replacing summed log-ratios by per-token means delta_mean = log pi(y_w)/|y_w| - log pi(y_l)/|y_l| leaves the "
        "theory unchanged: the mean-delta DPO optimum ranks y_w first iff beta delta_ref + dr > 0, and a mean-delta "
        "loss below its critical value softplus(beta delta_mean_ref) certifies pi(y_w) > pi(y_l). Checked with it: "
        "the mean condition, where it disagrees with the summed one (by lengths), and counterexamples where one "
        "certifies and the other does not.",
        methods={"symbolic": "theory.sec13_dataset:length_symbolic",
                 "numeric": "toy_bandits.dataset_claims:length_numeric"},
    ),
    Claim(
        "cpo-population-alignment",
        "BT-population minimiser of each CPO loss",
        "Sec. 4, Eq. 17 and the authors' code; docs/theory.md §10, §13",
        "With Bradley-Terry labels (y_w chosen with probability sigma(dr)), the population minimiser of every CPO loss "
        "variant (clip, smooth, Eq. 17) ranks y_w first whenever the human prefers it (dr > 0), repairing DPO's "
        "failure region {dr > 0 > beta delta_ref + dr}; compared with DPO, IPO and DPO-Positive. Checked with it: for "
        "which (beta delta_ref, dr, parameters) each loss's minimiser ranks y_w first (a phase figure per loss).",
        methods={"numeric": "toy_bandits.dataset_claims:cpo_population_numeric",
                 "numeric-torch": "toy_bandits.dataset_claims:cpo_population_torch"},
    ),
)

_BY_ID = {claim.id: claim for claim in CLAIMS}
assert len(_BY_ID) == len(CLAIMS), "duplicate claim ids"


def get_claim(claim_id: str) -> Claim:
    """The claim with this id; a KeyError lists the valid ids."""
    try:
        return _BY_ID[claim_id]
    except KeyError:
        raise KeyError(f"unknown claim id {claim_id!r}; valid ids: {', '.join(_BY_ID)}") from None
