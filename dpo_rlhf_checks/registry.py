"""The claim registry: every claim the toolkit checks (or records as not checked), with its methods.

Ids are stable: later tooling reads them from ``report.json``. Never rename one; add new ids instead.

How to add a claim (append it at the end of ``CLAIMS``)::

    Claim(
        "my-claim-id",                     # stable kebab-case id
        "A few words",                     # title
        "Sec. 4, Eq. 10; docs/theory.md §9",   # where the paper makes it
        "The statement the toolkit checks, in words and math.",
        methods={"symbolic": "theory.sec9_cpo:my_claim_symbolic",      # name -> "module:function"
                 "convex": "toy_bandits.solver_claims:my_claim_convex"},
    )

or, for a claim this toolkit does not check, ``Claim(id, title, paper_ref, statement,
not_checked="the reason")`` (no methods).

A claim whose methods are too slow for ``--all``'s budget at the default LM config gets ``slow="why, and its
measured cost"``: it keeps its methods, ``--all`` at the default LM config lists it as not-checked with the reason
:func:`slow_reason` builds from that field (naming the commands that run it), and ``--only ID``, ``--all`` with
another ``--lm-config`` and, for a claim of the LM stage (:func:`runs_in_lm_map`), ``lm-map`` compute its verdict.

- ``methods`` maps a method name to a ``"module:function"`` string. The name is one of
  :data:`dpo_rlhf_checks.result.METHODS` (symbolic, numeric, convex, simulation, training), optionally
  with a suffix after a dash (``"numeric-search"``). The runner imports the module and looks up the
  function *when it runs* (imports stay lazy: torch and cvxpy load only when a method needs them); a
  missing module or function is a crash of that method (verdict ``error``), never a skipped method.
- Each function has the signature ``fn(ctx: CheckContext) -> MethodResult``, measures its own literal
  and amended booleans, names in ``depends_on`` the toolkit formulas it takes as given, and never calls
  another method of the same claim. The runner merges all methods with one rule
  (:func:`dpo_rlhf_checks.result.merge_methods`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dpo_rlhf_checks.result import METHODS


@dataclass(frozen=True)
class Claim:
    """One claim to check.

    id: stable identifier (kebab-case).
    title: a few words.
    paper_ref: where the paper makes it (section / equation), and the theory section.
    statement: the formal statement the toolkit checks, in words and math.
    methods: name -> ``"module:function"`` (see the module docstring); empty iff ``not_checked`` is set.
    not_checked: the reason this claim is not checked here (verdict ``not-checked``), else None.
    amendment: the amended statement, registry text written before any run: a testable hypothesis with its
        numbers, which the methods' ``amended`` tests test. A ``holds-amended`` claim reports this text,
        never one assembled from the run's results (None: the claim tests no amendment).
    slow: why ``--all`` at the default LM config leaves this claim out, with its measured cost (None: it runs in
        ``--all``). Only a claim with methods can be slow; see :func:`slow_reason` for where it runs.
    """

    id: str
    title: str
    paper_ref: str
    statement: str
    methods: dict[str, str] = field(default_factory=dict)
    not_checked: str | None = None
    amendment: str | None = None
    slow: str | None = None

    def __post_init__(self) -> None:
        if bool(self.methods) == bool(self.not_checked):
            raise ValueError(f"claim {self.id!r}: give methods or a not_checked reason (exactly one of them)")
        if self.slow is not None and (not isinstance(self.slow, str) or not self.slow.strip() or not self.methods):
            raise ValueError(f"claim {self.id!r}: slow must be a non-empty reason, on a claim with methods")
        for name, target in self.methods.items():
            if name.split("-", 1)[0] not in METHODS:
                raise ValueError(f"claim {self.id!r}: method name {name!r} must start with one of {METHODS}")
            module_name, sep, func_name = target.partition(":")
            if not (sep and module_name and func_name):
                raise ValueError(f"claim {self.id!r}: method {name!r} target {target!r} is not 'module:function'")


def runs_in_lm_map(claim: Claim) -> bool:
    """Whether ``paper_checks.py lm-map`` computes this claim's verdict: a slow claim every method of which reads
    the LM stage (a ``toy_lm`` module), run there on the map's own stage."""
    return bool(claim.slow) and all(t.startswith("toy_lm.") for t in claim.methods.values())


def slow_reason(claim: Claim) -> str:
    """The not-checked reason ``--all`` gives a slow claim at the default LM config, from its ``slow`` field: why,
    and the commands that compute its verdict."""
    if not claim.slow:
        raise ValueError(f"claim {claim.id!r} is not slow")
    runs = [f"`python paper_checks.py --only {claim.id}`", "`python paper_checks.py --all --lm-config map`"]
    if runs_in_lm_map(claim):
        runs.append("`python paper_checks.py lm-map`")
    return (f"not run by --all at the default LM config: {claim.slow.rstrip('.')}. Its verdict is computed by "
            + ", ".join(runs[:-1]) + " and " + runs[-1])


def resolve_method(target: str):
    """The function named by ``"module:function"``, imported now. Raises (ImportError, AttributeError) when
    it is not there: the runner records that as a crash of the method."""
    import importlib

    module_name, _, func_name = target.partition(":")
    module = importlib.import_module(module_name)
    func = getattr(module, func_name, None)
    if func is None:
        raise AttributeError(f"module {module_name!r} has no function {func_name!r} (method target {target!r})")
    return func


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "rlhf-closed-form",
        "RLHF optimum is the Gibbs policy",
        "Sec. 2, Eq. 3/5; docs/theory.md §1",
        "J(pi) = E_pi[r] - beta KL(pi || pi_ref) is strictly concave on the simplex; its unique maximiser is "
        "pi*(y) = pi_ref(y) exp(r(y)/beta) / Z with Z = sum_y pi_ref(y) exp(r(y)/beta); J(pi*) = beta log Z; "
        "delta* = delta_ref + dr/beta.",
        methods={"symbolic": "theory.sec1_rlhf:rlhf_closed_form_symbolic",
                 "numeric": "theory.sec1_rlhf:rlhf_closed_form_numeric"},
    ),
    Claim(
        "dpo-reparam",
        "DPO reparameterisation and loss",
        "Sec. 2, Eq. 8; docs/theory.md §2",
        "r(y) = beta log(pi*(y)/pi_ref(y)) + beta log Z; under Bradley-Terry P(y_w > y_l) = sigma(dr) = "
        "sigma(beta (delta* - delta_ref)) and Z cancels; the per-pair loss is "
        "softplus(-beta (delta_pi - delta_ref)) and equals log 2 at pi = pi_ref.",
        methods={"symbolic": "theory.sec2_dpo:dpo_reparam_symbolic",
                 "numeric": "theory.sec2_dpo:dpo_reparam_numeric"},
    ),
    Claim(
        "assumption-iff",
        "The implicit assumption",
        "Sec. 3; docs/theory.md §3",
        "pi*(y_w) > pi*(y_l) <=> delta* > 0 <=> beta delta_ref + dr > 0 <=> dr > beta log(pi_ref(y_l)/pi_ref(y_w)).",
        methods={"symbolic": "theory.sec3_assumption:assumption_iff_symbolic",
                 "numeric": "theory.sec3_assumption:assumption_iff_numeric"},
    ),
    Claim(
        "equiv-population",
        "Conditional equivalence, population reading",
        "Sec. 3, main theorem; docs/theory.md §4(a)",
        "Reading (a): the BT-labelled population loss l_q, q = sigma(dr), is minimised exactly where "
        "beta (delta_pi - delta_ref) = dr, i.e. at delta* of pi*; the paper says DPO and RLHF are equivalent "
        "iff the assumption holds for every pair.",
        methods={"symbolic": "theory.sec4_equivalence:equiv_population_symbolic",
                 "numeric": "theory.sec4_equivalence:equiv_population_numeric",
                 "simulation": "toy_bandits.map_claims:equiv_population_simulation"},
        amendment=(
            "Population reading: for every pair and every beta > 0, l_q with q = sigma(dr) is strictly convex in h = "
            "beta (delta_pi - delta_ref) with unique minimiser h = dr, i.e. delta_pi = delta* = delta_ref + dr/beta, "
            "the log-odds of the RLHF optimum, whether or not the assumption holds. DPO and RLHF are equivalent "
            "unconditionally in this reading; the assumption decides only whether the common optimum prefers y_w."),
    ),
    Claim(
        "equiv-ordered-pair",
        "Conditional equivalence, ordered-pair reading",
        "Sec. 3, main theorem; docs/theory.md §4(b)",
        "Reading (b), the paper's theorem applied to the per-pair loss l with deterministic labels: pi* minimises "
        "(or is a stationary point of) l exactly when the assumption holds. Checked with it: whether l has a finite "
        "minimiser at all, and how long finite training leaves a violated pair in U.",
        methods={"symbolic": "theory.sec4_equivalence:equiv_ordered_pair_symbolic",
                 "numeric": "theory.sec4_equivalence:equiv_ordered_pair_numeric",
                 "simulation": "toy_bandits.map_claims:equiv_ordered_pair_simulation"},
        amendment=(
            "Ordered-pair reading: l(delta) = softplus(-beta (delta - delta_ref)) is strictly decreasing with "
            "infimum 0 approached only as delta -> +inf, so it has no finite minimiser and no stationary point; pi* "
            "is neither a minimiser nor stationary (dl/d delta = -beta sigma(-dr) there) whether or not the "
            "assumption holds. Gradient flow raises delta monotonically; from delta_ref < 0 it reaches delta = 0 at "
            "t = (U0 + e^U0 - 1)/beta^2 with U0 = -beta delta_ref when the flow is taken in delta (d delta/dt = "
            "-dl/d delta), and at half that time on tabular softmax logits (d delta/dt = -2 dl/d delta)."),
    ),
    Claim(
        "relative-advantage",
        "DPO sees relative, alignment is absolute",
        "Sec. 3; docs/theory.md §5",
        "l depends on pi only through delta_pi - delta_ref; dl/d delta_pi = -beta sigma(-beta (delta_pi - delta_ref)) "
        "< 0 everywhere; alignment is the sign of delta_pi.",
        methods={"symbolic": "theory.sec5_relative:relative_advantage_symbolic",
                 "numeric": "theory.sec5_relative:relative_advantage_numeric"},
    ),
    Claim(
        "undesirable-space",
        "The undesirable solution space U",
        "Def. 3.3; docs/theory.md §6",
        "U = {pi : delta_ref < delta_pi < 0} is non-empty iff delta_ref < 0; every pi in U has DPO loss < log 2 yet "
        "prefers y_l; when the assumption fails and dr > 0, pi* lies in U.",
        methods={"symbolic": "theory.sec6_undesirable:undesirable_space_symbolic",
                 "numeric": "theory.sec6_undesirable:undesirable_space_numeric",
                 "numeric-grid": "toy_bandits.map_claims:undesirable_space_grid",
                 "simulation": "toy_bandits.map_claims:undesirable_space_random",
                 "convex": "toy_bandits.map_claims:undesirable_space_convex"},
    ),
    Claim(
        "gradient-weakening",
        "DPO gradient weakens through U",
        "Sec. 3 (wording on U); docs/theory.md §6",
        "The gradient factor sigma(-beta (delta_pi - delta_ref)) decreases as delta_pi rises through U; at the "
        "boundary delta_pi -> 0 it equals sigma(beta delta_ref) (weakened, not vanished).",
        methods={"symbolic": "theory.sec6_undesirable:gradient_weakening_symbolic",
                 "numeric": "theory.sec6_undesirable:gradient_weakening_numeric"},
    ),
    Claim(
        "loss-delta-bridge",
        "Loss-to-delta bridge",
        "Sec. 3 (named); formula reconstructed, docs/theory.md §7",
        "l is strictly decreasing and invertible in delta_pi: delta_pi = delta_ref - (1/beta) log(e^l - 1); "
        "pi(y_w) > pi(y_l) <=> l < l_crit = softplus(beta delta_ref); l_crit < log 2 when delta_ref < 0.",
        methods={"symbolic": "theory.sec7_bridge:loss_delta_bridge_symbolic",
                 "numeric": "theory.sec7_bridge:loss_delta_bridge_numeric"},
    ),
    Claim(
        "soft-margin-ranking",
        "DPO as soft-margin ranking",
        "Sec. 5, Eq. 27-28; docs/theory.md §8",
        "With s = beta delta_pi, t = beta delta_ref: l = softplus(t - s), target negative iff the reference prefers "
        "y_l; with a = delta_ref - delta_pi, 0 <= softplus(beta a)/beta - max(0, a) <= log(2)/beta, so l/beta -> "
        "max(0, a) as beta -> infinity.",
        methods={"symbolic": "theory.sec8_soft_margin:soft_margin_ranking_symbolic",
                 "numeric": "theory.sec8_soft_margin:soft_margin_ranking_numeric"},
    ),
    Claim(
        "cpo-constrained-kkt",
        "Constrained RLHF: KKT closed form",
        "Sec. 4; docs/theory.md §9(a)",
        "max J(pi) s.t. delta_pi >= m for every pair is a convex program with a unique solution when feasible; for "
        "one pair pi_c(y) ∝ pi_ref(y) exp((r(y) + mu a(y))/beta), a(y_w) = 1, a(y_l) = -e^m, and "
        "mu = max(0, (beta m - beta delta_ref - dr)/(1 + e^m)).",
        methods={"symbolic": "theory.sec9_cpo:cpo_constrained_kkt_symbolic",
                 "numeric": "theory.sec9_cpo:cpo_constrained_kkt_numeric",
                 "convex": "toy_bandits.solver_claims:cpo_constrained_kkt_convex"},
    ),
    Claim(
        "cpo-penalized-eq10",
        "Penalised CPO objective as printed",
        "Sec. 4, Eq. 10; docs/theory.md §9(b)",
        "The penalised objective as printed, max J(pi) + gamma (log pi(y_w) - log pi(y_l)) with a fixed gamma > 0, "
        "is a well-posed maximisation whose maximiser is the CPO policy. Checked with it: is it bounded, what are its "
        "stationary points and of which kind?",
        methods={"symbolic": "theory.sec9_cpo:cpo_penalized_eq10_symbolic",
                 "numeric": "theory.sec9_cpo:cpo_penalized_eq10_numeric",
                 "numeric-k": "toy_bandits.solver_claims:cpo_penalized_eq10_general_k"},
        amendment=(
            "Eq. 10 as printed is unbounded above: as pi(y_l) -> 0, gamma (log pi(y_w) - log pi(y_l)) -> +inf while "
            "J stays bounded, so it has no maximiser. With two responses its interior stationary points number 0 "
            "(G_min > 0) or 2 (G_min < 0): the smaller delta a strict local maximiser, the larger a strict local "
            "minimiser. With gamma = nu* = mu pi_c(y_w) the constrained optimum pi_c of §9(a) is one of them: with "
            "two responses a local maximiser iff mu (e^m - 1) < beta, else a local minimiser (two responses have a "
            "one-dimensional simplex, so there is no saddle). For K = 3..5 responses its interior stationary points "
            "number 0 or 2: a local maximum and an index-1 saddle; they satisfy Eq. 13-16, beta (delta - delta_ref) "
            "= dr + gamma (1/pi(y_w) + 1/pi(y_l)). With gamma = nu* = mu pi_c(y_w) (the log-form KKT multiplier of "
            "§9(a)), pi_c is a stationary point of Eq. 10: for K >= 3 a local maximum unless d_l > 1 / sum_{y != l} "
            "1/|d_y| (d the diagonal Hessian of F), where it is an index-1 saddle. Eq. 10 is the Lagrangian of the "
            "constrained problem, not an objective to maximise."),
    ),
    Claim(
        "cpo-stationary-margin",
        "Adaptive margin at stationarity",
        "Sec. 4, Eq. 13-16; docs/theory.md §9(b)",
        "Stationary points of Eq. 10 satisfy beta (delta - delta_ref) = dr + m* with m* = gamma (1/pi(y_w) + "
        "1/pi(y_l)); gamma relates to the KKT multiplier of the log-form constraint of §9(a).",
        methods={"symbolic": "theory.sec9_cpo:cpo_stationary_margin_symbolic",
                 "numeric": "theory.sec9_cpo:cpo_stationary_margin_numeric"},
    ),
    Claim(
        "cpo-loss-certificates",
        "CPO losses certify alignment",
        "Sec. 4, Eq. 17 and the authors' code; docs/theory.md §10",
        "For each CPO loss variant (Eq. 17 and the code's clip, smooth and easy options), loss < log 2 certifies "
        "delta >= 0. Checked with it: under which parameters it does, and for which delta (summed or per-token "
        "mean).",
        methods={"numeric-derived": "toy_bandits.map_claims:cpo_loss_certificates_derived",
                 "numeric-search": "toy_bandits.map_claims:cpo_loss_certificates_search",
                 "simulation": "toy_bandits.map_claims:cpo_loss_certificates_training"},
        amendment=(
            "For the target-form losses softplus(beta (T - delta)), loss < log 2 <=> delta > T, so it certifies "
            "delta > 0 for every reference exactly when inf T >= 0: cpo_clip with margin >= 0 (code default 0); "
            "cpo_smooth with alpha = 1 and gamma >= 0, or alpha < 1 and gamma >= -H(alpha)/(alpha tau), H the binary "
            "entropy in nats (the code defaults gamma=0.5, tau=2, alpha=1 and the released alpha=0.25 qualify), "
            "never alpha > 1; cpo_eq17 with gamma/beta >= c* = 0.223872 (= max_p p(1-p) log((1-p)/p)); never DPO and "
            "never cpo_easy on unbounded mean NLLs (with mean NLLs bounded by L it needs gamma < 0 and |gamma|/beta "
            ">= (sqrt2-1)^2 L^2). IPO and DPO-Positive have no target form and no loss-level certificate. The "
            "certificate is about the delta the loss is computed from: a per-token-mean certificate says nothing "
            "about the summed delta when lengths differ."),
    ),
    Claim(
        "price-of-alignment",
        "Price of alignment",
        "Sec. 4; docs/theory.md §9(c)",
        "J(pi*) - J(pi_c) >= 0, with equality iff every constraint already holds at pi*.",
        methods={"numeric": "toy_bandits.solver_claims:price_of_alignment_closed_form",
                 "convex": "toy_bandits.solver_claims:price_of_alignment_convex"},
    ),
    Claim(
        "lm-dpo-failure",
        "DPO failure appears in LM training",
        "Sec. 6 mechanism; docs/theory.md §12, §14",
        "A small LM trained with DPO from a reference that favours y_l lowers its loss while the affected pairs stay "
        "in U, in the amount the toy theory predicts. Pre-registered design (toy_lm/design.py; cells fixed by beta, "
        "optimizer and labels; seeds are the replication unit): (fail) in the slow cells (beta 2.5, SGD and Adam) "
        "ordered-pair DPO ends with a mean fraction of train pairs in U >= 0.10 at a mean final loss <= 0.5 log 2; "
        "(amount) in every DPO cell (beta 0.5 and 2.5, SGD and Adam, ordered and Bradley-Terry labels) the mean over "
        "seeds of observed minus predicted fraction in U (tabular theory, same optimizer, loss-matched time) lies "
        "within +-0.10; (predicted) the tabular theory predicts a mean fraction in U >= 0.10 in every DPO cell. Each "
        "comparison is decided by a two-sided Student-t interval of the mean over seeds (level 1 - 0.05/K for K "
        "planned looks, Bonferroni; the sd of a fraction of P pairs floored at 1/(P sqrt 12)) that must clear its "
        "bound; 3 seeds, doubled at each look while undecided (3, 6, 12), up to 12 (the budget of a power rule, "
        "capped by the default stage's 90 s limit: toy_lm/design.py; with --lm-config confirm the rule's uncapped "
        "budget, looks 3, 6, 12, 24, 48, 96); still undecided: inconclusive.",
        methods={"training": "toy_lm.claims:lm_dpo_failure_training",
                 "simulation": "toy_lm.claims:lm_dpo_failure_tabular",
                 "training-comparison": "toy_lm.claims:lm_dpo_failure_comparison"},
        amendment="The failure appears where the tabular theory places it (docs/theory.md §14), and its amount is the "
                  "predicted one where the population optimum pins it: (fail) as stated, in the slow cells (beta 2.5, "
                  "SGD and Adam) ordered-pair DPO ends with a mean fraction of train pairs in U >= 0.10 at mean final "
                  "loss <= 0.5 log 2; (amount) with Bradley-Terry labels, in every cell, the mean of observed minus "
                  "predicted fraction in U lies within +-0.10 (with ordered labels the amount depends on how far the "
                  "dynamics got, which is not claimed); (predicted) the tabular theory predicts a mean fraction in U "
                  ">= 0.10 in the slow ordered cells and in every Bradley-Terry cell. Same intervals, looks and budget "
                  "as the statement.",
    ),
    Claim(
        "lm-cpo-fix",
        "CPO fixes it in LM training",
        "Sec. 4/6; docs/theory.md §12, §10, §13",
        "CPO variants that carry a certificate (cpo_clip, cpo_smooth: implicit target T >= m on every pair) end with "
        "delta >= m on the trained pairs. Pre-registered design (toy_lm/design.py): judged cells fixed by the design, "
        "where the theory places DPO's failure, never by DPO's outcome: ordered labels at beta 2.5 (SGD and Adam; "
        "cpo_clip, cpo_smooth) and Bradley-Terry labels at beta 0.5 and 2.5 (SGD and Adam; cpo_clip_bt, "
        "cpo_smooth_bt). In each, the mean over seeds of the shortfall 1 - (fraction of train pairs with delta >= m) "
        "is <= 0.05 (training: the LM's records; simulation: the tabular prediction). Decided by the intervals, looks "
        "and budget of lm-dpo-failure (t-interval over seeds at level 1 - 0.05/K; 3, 6, 12 seeds; 3, 6, 12, 24, 48, 96 with --lm-config "
        "confirm); still undecided: "
        "inconclusive. Held-out ranking accuracy is reported beside DPO, IPO and DPO-Positive.",
        methods={"training": "toy_lm.claims:lm_cpo_fix_training", "simulation": "toy_lm.claims:lm_cpo_fix_tabular"},
        amendment="With ordered labels as stated (mean shortfall of 1 - fraction with delta >= m at most 0.05). With "
                  "Bradley-Terry labels each carrier reaches what its own population minimiser reaches on the same "
                  "sampled labels: the mean over seeds of (ceiling - fraction of train pairs with delta >= m) is at "
                  "most 0.05, where the ceiling is the fraction of the seed's train pairs whose exact population "
                  "minimiser (label frequency q_hat of that seed's 16 labels) has delta >= m (docs/theory.md §13: "
                  "with BT labels the minimiser of a certificate-carrying loss need not rank y_w first).",
    ),
    Claim(
        "benchmark-table",
        "Arithmetic of the benchmark table",
        "Sec. 6, main table; docs/theory.md §11",
        "The stated gains follow from the table's own numbers (CPO - DPO = +0.55 AE2 WR, CPO - SimPO = +0.66 LC, "
        "+2.6 and +3.7 Arena-Hard over SimPO and DPO); which Arena-Hard intervals overlap is reported. Only the "
        "table's arithmetic: the results themselves are the claim benchmark-8b-results.",
        methods={"numeric": "theory.sec11_table:benchmark_table_arithmetic"},
    ),
    Claim(
        "benchmark-8b-results",
        "The 8B-model benchmark results",
        "Sec. 6, main table; docs/theory.md §11",
        "Llama-3-8B-Instruct trained with CPO on llama3-ultrafeedback-armorm reaches AE2 WR 25.15, LC 26.57 and "
        "Arena-Hard 32.6, above DPO and SimPO trained the same way.",
        not_checked="needs training and evaluating 8B models (AlpacaEval 2, Arena-Hard with a GPT-4 judge); out of reach "
                    "here. The table's own arithmetic is the claim benchmark-table; the mechanism at small scale is "
                    "lm-dpo-failure and lm-cpo-fix.",
    ),
    Claim(
        "e-cpoc",
        "The conservative variant E-CPOC",
        "Sec. 4/6 (named); docs/theory.md §10",
        "E-CPOC, the paper's conservative CPO variant, improves on CPO.",
        not_checked="its formula is not public; the toolkit attributes no formula to it (its own conservative variants "
                    "carry the toolkit's own names).",
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
        amendment=(
            "L(u) = sum n_ij softplus(-beta h_ij) is the Bradley-Terry negative log-likelihood with scores theta = "
            "beta u. It has a finite minimiser iff every weakly connected component of the win graph (i -> j when "
            "n_ij >= 1) is strongly connected; then beta h_ij = theta_i - theta_j of the BT MLE, which pools "
            "indirect comparisons and in general differs from the pair's own log(n_ij/n_ji) (equal for a lone "
            "contradictory pair). Otherwise (a single pair, a chain, a DAG, a dominated group) h -> +inf exactly on "
            "the labelled pairs between different strongly connected components, and h inside each one converges to "
            "that component's BT MLE. The empirical optimum ranks a labelled pair i over j iff beta delta_ref_ij + "
            "beta h_ij > 0: the pair's dr is replaced by the MLE gap."),
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
        amendment=(
            "With n BT labels, k ~ Binomial(n, sigma(dr)), the empirical optimum ranks y_w first iff beta delta_ref "
            "+ logit(k/n) > 0 and ties (delta = 0, ranking neither first) iff it is = 0. The probability P_n that it "
            "ranks the pair unlike pi* (a tie ranks unlike a strictly ordered pi*, on either side) is the binomial "
            "mass on the wrong side of t = sigma(-beta delta_ref); it obeys exp(-n KL(k*/n || sigma(dr))) / (n + 1) "
            "<= P_n <= exp(-n KL(t || sigma(dr))) (method of types and Chernoff; k* the count nearest n t strictly "
            "on the wrong side), so it falls to 0 exponentially at the rate KL(t || sigma(dr)) whenever beta "
            "delta_ref + dr != 0, but it need not be monotone in n nor below 1/2 at small n (the literal's "
            "counterexamples). Against the human preference (sign of dr) it tends to 1 in the violated region (dr > "
            "0 > beta delta_ref + dr) and to 0 elsewhere: more labels make DPO converge to the wrong ranking there."),
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
        amendment=(
            "With rankings drawn from Plackett-Luce with the rewards r, the expected listwise DPO loss is minimised "
            "exactly at s = beta (log pi - log pi_ref) = r + const, i.e. at the RLHF optimum pi*, ordered by log "
            "pi_ref(y) + r(y)/beta; it agrees with the human ranking iff beta delta_ref(y_t, y_{t+1}) + r(y_t) - "
            "r(y_{t+1}) > 0 for every adjacent pair (adjacent suffices: pi*'s order is transitive). One observed "
            "ranking has no finite minimiser. The listwise undesirable set {L < log k!, pi(y_{t+1}) > pi(y_t) for "
            "some t} is non-empty iff beta delta_ref(y_t, y_{t+1}) < log(k! - 1) for some adjacent t (inf of L over "
            "policies misordering t is softplus(beta delta_ref(y_t, y_{t+1})), not attained): for k = 2 this is "
            "delta_ref < 0, for k >= 3 it includes references that order the list correctly. A loss L <= min_t "
            "softplus(beta delta_ref(y_t, y_{t+1})) certifies the whole order."),
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
        amendment=(
            "With per-token means, the BT population minimiser of the mean-delta DPO loss satisfies beta (delta_mean "
            "- delta_mean_ref) = dr: it ranks y_w first per token iff beta delta_mean_ref + dr > 0 (delta_mean_ref = "
            "log pi_ref(y_w)/|y_w| - log pi_ref(y_l)/|y_l|), a different condition from beta delta_ref + dr > 0: "
            "with equal lengths L it is the summed condition with beta/L in place of beta (delta_mean = delta/L), "
            "with unequal lengths the lengths enter as well. The mean loss fixes only delta_mean, so its minimisers "
            "do not fix the sign of the summed delta: they include policies with pi(y_w) < pi(y_l) whenever |y_w| > "
            "|y_l| and with pi(y_w) > pi(y_l) whenever |y_w| < |y_l|. Per pair (log-probabilities <= 0): delta_mean "
            "> 0 implies delta > 0 when |y_w| <= |y_l|, and delta > 0 implies delta_mean > 0 when |y_w| >= |y_l|; so "
            "the mean-delta certificate (loss < softplus(beta delta_mean_ref)) certifies pi(y_w) > pi(y_l) only when "
            "|y_w| <= |y_l|."),
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
        amendment=(
            "With BT labels on one pair (K = 2; each label order scored with its own reference target), the "
            "population minimiser of a target-form loss softplus(beta (T(delta_ref) - delta)) ranks y_w first iff dr "
            "+ log sigma(beta T(delta_ref)) - log sigma(beta T(-delta_ref)) > 0; DPO iff beta delta_ref + dr > 0; "
            "IPO iff beta delta_ref + sigma(dr) - 1/2 > 0; the clipped target (HyPO, margin 0) iff dr > log(2 "
            "sigma(beta |delta_ref|)) when delta_ref < 0 (a threshold between 0 and log 2) and dr > -log(2 "
            "sigma(beta delta_ref)) when delta_ref >= 0. The toolkit's own losses, minimised directly, give these "
            "signs at every sampled point of beta delta_ref in [-6, 3], dr in [-1, 5] whose minimiser is not within "
            "0.01 of 0 and whose loss stays below 1e6 (where float64 still resolves delta). None of the four CPO "
            "settings checked (clip with margin 0; smooth at the code defaults beta 0.1, "
            "gamma 0.5, tau 2, alpha 1; smooth at the released beta 2.5, alpha 0.25; Eq. 17 with beta 0.1, gamma "
            "0.05) ranks y_w first on all of dr > 0: each has a beta delta_ref in [-6, 3] where its threshold in dr "
            "is positive."),
    ),
    Claim(
        "gpo-absorbing-U",
        "Preference losses with a finite minimiser: U is absorbing",
        "Beyond the paper (GPO, Tang et al. 2024, arXiv 2402.05749); docs/theory.md §16",
        "Ordered-pair training (every label y_w > y_l; free log-ratio gradient flow dr/dt = -grad_r l of the two "
        "summed log-ratios r_w, r_l, started at the reference r = 0) with l = f(beta h), f convex with a finite "
        "minimiser t_f (or flat from t_f on), ends at h = t_f/beta, so it ends in U = {delta_ref < delta < 0} iff "
        "beta delta_ref < -t_f. Checked for every TRL 1.16 DPOTrainer loss whose f has a finite minimiser or flat "
        "point (hinge, ipo, exo_pair; sppo_hard, whose absolute terms pin h), at TRL's settings and with TRL's own h "
        "(per-token for ipo, f-divergence scores for f_divergence_type != reverse_kl), and for convex f in general.",
        methods={"symbolic": "theory.gpo_atlas:absorbing_symbolic",
                 "simulation": "toy_bandits.gpo_flow:absorbing_flow"},
        amendment=(
            "Let D = delta_end - delta_ref be where free log-ratio flow from the reference stops; the pair ends in U "
            "iff D > 0 and beta delta_ref < -beta D. For convex f with minimiser t_f on summed reverse-KL h, D = "
            "t_f/beta (the literal when t_f > 0); t_f <= 0 never ends in U (delta ends at or below delta_ref). With "
            "TRL's per-token h = r_w/n_w - r_l/n_l (loss_type='ipo'), D = (t_f/beta)(1/n_w + 1/n_l)/(1/n_w^2 + "
            "1/n_l^2), n t_f/beta for equal lengths n: IPO (t_f = 1/2) ends in U iff beta delta_ref < -n/2, i.e. "
            "per-token beta delta_ref/n < -1/2. With an f-divergence score s the flow keeps G(r_w) + G(r_l) = 0, G(r) = "
            "int_0^r du/s'(u), and stops where s(r_w) - s(r_l) = t_f/beta; D = r_w - r_l there, not t_f/beta. "
            "exo_pair (unimodal, not convex) ends at t_f = log((1 - eps)/eps) as convex f does; sppo_hard ends at r_w = "
            "1/(2 beta), r_l = -1/(2 beta), D = 1/beta. DiscoPOP at TRL's tau = 0.05 (not convex, not monotone) "
            "stops at its local minimum t ~ -0.119: D < 0, so delta ends below delta_ref (never in U) and a pair with "
            "0 < beta delta_ref < 0.119 ends ranked the wrong way."),
    ),
    Claim(
        "gpo-transient-U",
        "Preference losses that decrease to +inf: the time spent in U",
        "Beyond the paper (GPO, Tang et al. 2024, arXiv 2402.05749); docs/theory.md §16",
        "Ordered-pair training (free log-ratio gradient flow from the reference, as in gpo-absorbing-U) with l = "
        "f(beta (delta - delta_ref)), f strictly decreasing with infimum at t = +inf, leaves U in finite time, at "
        "T(U0) = (1/(2 beta^2)) int_0^U0 dt/(-f'(t)), U0 = -beta delta_ref > 0; for every such TRL loss this time "
        "grows like DPO's, exponentially in beta |delta_ref|: for the logistic f (loss_type='sigmoid') T = (U0 + "
        "e^U0 - 1)/(2 beta^2).",
        methods={"symbolic": "theory.gpo_atlas:transient_symbolic",
                 "simulation": "toy_bandits.gpo_flow:transient_flow"},
        amendment=(
            "T(U0) = (1/(2 beta^2)) int_0^U0 dt/(-f'(t)) holds for every strictly decreasing f on summed reverse-KL "
            "h (per-token h with equal lengths n, loss_type='sigmoid_norm': (n^2/(2 beta^2)) int_0^(U0/n)); its "
            "growth in U0 follows the tail of -f'. Exponential for the logistic f (sigmoid; robust with eps = 0): "
            "(U0 + e^U0 - 1)/(2 beta^2). Linear for loss_type='robust' with eps = label_smoothing in (0, 1/2), "
            "because -f' -> eps/(1 - 2 eps) > 0: T = ((1 - 2 eps)/(2 beta^2)) [U0/(1 - eps) + ((1 - 2 eps)/(eps (1 - "
            "eps))) log(1 - eps + eps e^U0)] ~ (1 - 2 eps) U0/(2 eps beta^2). The exponential f = e^-t (not a TRL "
            "option): (e^U0 - 1)/(2 beta^2). The absolute-term losses leave U with laws of their own under the same "
            "flow: bco_pair T = (U0/2 + e^(U0/2) - 1)/beta^2 (half DPO's exponent), apo_zero T = (U0 + 2 "
            "sinh(U0/2))/beta^2."),
    ),
    Claim(
        "loss-population-optimum",
        "Which preference loss recovers pi* under Bradley-Terry labels",
        "Beyond the paper; docs/theory.md §16, §4(a)",
        "Under Bradley-Terry labels (y_w preferred with probability q = sigma(dr)), the population minimiser of every "
        "TRL 1.16 per-pair preference loss is the RLHF optimum pi*: beta (delta - delta_ref) = dr.",
        methods={"symbolic": "theory.gpo_atlas:population_symbolic",
                 "numeric": "toy_bandits.gpo_flow:population_numeric"},
        amendment=(
            "With t = beta h, the population loss q f(t) + (1 - q) f(-t) (or its per-response analogue with free "
            "log-ratios) is minimised at: t* = dr (pi*) for sigmoid, robust with eps = 0 and nca_pair (which also pins "
            "beta r_w = log(2 q)); t* = dr on per-token h for sigmoid_norm (pi* of beta/n for equal lengths n); t* = "
            "q - 1/2 for ipo (per-token h); t* = sign(dr) for hinge (q != 1/2); t* = (2 q - 1) log((1 - eps)/eps) for "
            "exo_pair; t* = log((q - eps)/(1 - q - eps)) for robust with eps in (0, 1/2) and eps < q < 1 - eps (t* -> "
            "+inf for q >= 1 - eps, -inf for q <= eps); t* = 2 dr for bco_pair; t* = 2 q - 1 for sppo_hard; no finite "
            "minimiser for apo_zero and apo_down (t -> sign(dr) inf); t* != dr for discopop (tau = 0.05). Under "
            "f_divergence_type != reverse_kl, in a normalised two-response bandit, the sigmoid loss's minimiser "
            "satisfies s(r_w) - s(r_l) = dr/beta (the f-regularised optimum), not pi*'s r_w - r_l = dr/beta. So only "
            "sigmoid (reverse_kl), robust with eps = 0 and nca_pair recover pi*; aot and aot_unpaired (batch-coupled) "
            "and sft (reference-free) are outside the per-pair reading."),
    ),
    # --- Beyond the paper: shared parameters in the LM (docs/theory.md §17; issue 18) ---
    Claim(
        "lm-kernel-prediction",
        "The linearised LM (empirical NTK) predicts which pairs stay in U",
        "Beyond the paper; docs/theory.md §17, §12, §14",
        "The LM linearised at its reference, z(theta) = z_0 + J (theta - theta_0) with J the Jacobian of every "
        "response's summed log-probability (empirical NTK K = J J^T), trained with the run's own loss, labels, "
        "optimizer (SGD in kernel form z' = z - eta K dL/dz; Adam on theta), step size and steps (toy_lm/kernel.py), "
        "predicts the LM: (fraction) in every DPO cell of the config (ordered and Bradley-Terry labels, every beta "
        "and optimizer) the mean over seeds of observed minus linearised fraction of train pairs in U at the end "
        "lies within +-0.05, each decided by the two-sided Student-t interval of the mean over seeds at level "
        "1 - 0.05/K (K planned looks; the sd of a fraction of P pairs floored at 1/(P sqrt 12)) with the looks and "
        "seed budget of lm-dpo-failure (the config's look schedule; at the default 3 seeds, doubled at each look "
        "while undecided up to the budget of 12: looks at 3, 6, 12 seeds; still undecided: inconclusive); (time) for ordered-pair DPO under each optimizer, the slope of log(time in U) against "
        "beta |delta_ref| of the linearised prediction (first step with delta > 0, censored at the run's end, "
        "one intercept per beta level, Tobit maximum likelihood: the estimator of the time-in-U law) lies within "
        "two standard errors (the LM fit's) of the LM's slope on the same pairs and seeds. Checked numerically "
        "besides: with K = P I on each pair (no shared parameters) the predictor is the tabular prediction "
        "exactly, and with a rank-1 shared component K = a I + b u u^T it follows its closed forms (IPO's linear "
        "recurrence; ordered DPO's flow time for identical pairs).",
        methods={"numeric": "toy_lm.kernel_claim:lm_kernel_numeric",
                 "training": "toy_lm.kernel_claim:lm_kernel_training"},
        amendment="Feature learning explains what the fixed linearisation misses: re-linearised every 10 steps at "
                  "the LM's actual parameters (J taken again every 10 steps, at 10, 20, 30 of a 40-step run, from a lone-replica LM run of the "
                  "cell; the predicted log-probabilities and the optimizer state carried on), the predictor meets "
                  "both tests as stated: in every DPO cell the mean over seeds of observed minus re-linearised "
                  "fraction in U lies within +-0.05 (the same intervals, looks and budget), and for ordered-pair "
                  "DPO under each optimizer its time-in-U slope lies within two standard errors of the LM's. The "
                  "numeric reductions as stated.",
        slow=("its looks train up to 12 seeds of the 8 DPO cells and predict each seed twice, linearised and "
              "re-linearised (J again at steps 10, 20, 30 from a lone LM run): 175 s wall after the stage's first look "
              "(61 s of it training the extra seeds), 230 s with it, 132 CPU s for the whole command, on this "
              "2-core machine under load (docs/theory.md §17); beyond --all's 90 s LM budget"),
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
