"""The rows of the U-atlas: every TRL 1.16 preference loss at the settings a user picks (data only, no formulas).

One :class:`Setting` per row: the loss's TRL name (:data:`dpo_rlhf_checks.pref_losses.SPECS`), beta (TRL's default
0.1 unless the loss's own paper recommends otherwise), its own parameters, ``f_divergence_type`` (with
``f_alpha_divergence_coef``, TRL's a; the f-DPO paper's alpha is 1 - a) and, for per-token losses, the completion
lengths ``n_w = n_l = n``. The symbolic module (:mod:`theory.gpo_atlas`) and the bandit flow
(:mod:`toy_bandits.gpo_flow`) each derive every row from these settings on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Setting:
    """One atlas row. loss: TRL's loss_type (``cpo_*`` for CPOTrainer's); beta > 0; params: the loss's own
    keyword parameters (TRL config names); f_div: f_divergence_type; alpha_coef: f_alpha_divergence_coef (only
    for alpha_divergence); n: completion length of both responses for per-token losses (ipo, sigmoid_norm, sft,
    cpo_ipo / cpo_simpo / cpo_alphapo), 1 otherwise."""

    loss: str
    beta: float = 0.1
    params: dict = field(default_factory=dict)
    f_div: str = "reverse_kl"
    alpha_coef: float | None = None
    n: int = 1

    @property
    def key(self) -> str:
        """A unique, readable row name: ``loss[param=value,...]``."""
        parts = [f"beta={self.beta:g}"]
        parts += [f"{k}={v:g}" for k, v in sorted(self.params.items())]
        if self.f_div != "reverse_kl":
            parts.append(self.f_div + (f"(a={self.alpha_coef:g})" if self.alpha_coef is not None else ""))
        if self.n != 1:
            parts.append(f"n={self.n}")
        return f"{self.loss}[{','.join(parts)}]"


# TRL's f-divergence choices, exercised on the three f shapes that matter: logistic (transient), hinge (flat) and
# IPO (finite minimiser). a = 0.5 is TRL's documented default of f_alpha_divergence_coef.
_FDIVS = (("forward_kl", None), ("js_divergence", None), ("alpha_divergence", 0.5))

ROWS: tuple[Setting, ...] = (
    Setting("sigmoid"),
    *(Setting("sigmoid", f_div=f, alpha_coef=a) for f, a in _FDIVS),
    Setting("sigmoid_norm", n=10),
    Setting("hinge"),
    *(Setting("hinge", f_div=f, alpha_coef=a) for f, a in _FDIVS),
    Setting("ipo"),
    Setting("ipo", n=10),
    *(Setting("ipo", f_div=f, alpha_coef=a) for f, a in _FDIVS),
    Setting("exo_pair", params={"label_smoothing": 1e-3}),  # the EXO paper's value, which TRL's error message names
    Setting("robust", params={"label_smoothing": 0.1}),
    Setting("discopop", params={"discopop_tau": 0.05}),
    Setting("nca_pair"),
    Setting("bco_pair"),
    Setting("sppo_hard"),
    Setting("apo_zero"),
    Setting("apo_down"),
    Setting("sft", n=10),
    Setting("aot"),
    Setting("aot_unpaired"),
    Setting("cpo_sigmoid"),
    Setting("cpo_hinge"),
    Setting("cpo_ipo", n=10),
    Setting("cpo_simpo", beta=2.0, params={"simpo_gamma": 0.5}, n=10),  # SimPO's recommended beta 2, gamma 0.5
    Setting("cpo_alphapo", beta=2.0, params={"simpo_gamma": 0.5, "alpha": 0.25}, n=10),
)

# Rows' classes as the symbolic derivation names them (the bandit measures its own).
CLASSES = ("absorbing", "transient", "pinned", "batch-coupled", "empty-U", "wrong-way")
