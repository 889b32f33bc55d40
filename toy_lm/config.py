"""Configuration of the language-model stage: one frozen dataclass, three named presets, JSON files.

Every number that changes an answer (``betas``, margins, learning rates, the fraction of prompts
whose reference favours ``y_l``) lives here and nowhere else; the checks print the whole config
into the report evidence.

A *cell* of the stage is one (beta, optimizer, labels) combination; every cell trains every method of
its label kind from the same reference, on the same pairs and seeds. The regime of a cell is its scale
``beta * |delta_ref|`` (median over the pairs the reference misranks; docs/theory.md §14).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

METHODS = ("dpo", "dpo_bt", "cpo_eq17", "cpo_clip", "cpo_smooth", "cpo_easy", "ipo", "dpop", "cpo_clip_bt",
           "cpo_smooth_bt")
# "<loss>_bt": the loss trained on Bradley-Terry-sampled labels (both orders, weighted by the label frequency).
BT_METHODS = {"dpo_bt": "dpo", "cpo_clip_bt": "cpo_clip", "cpo_smooth_bt": "cpo_smooth"}
OPTIMIZERS = ("sgd", "adam")
LOOK_SCHEDULES = ("double", "step")  # toy_lm.design.look_sizes
# Upper bounds of the integer fields: far above any preset (the large one has 512 prompts, n_embd 128, 1500 SFT steps),
# low enough that a typo (an extra three zeros) is a one-line error before any allocation, not an out-of-memory crash
# or an hour of training.
INTS_MAX = {"n_train_prompts": 100_000, "n_heldout_prompts": 100_000, "n_candidates": 1_000, "n_responses": 10_000,
            "response_len": 1_024, "n_prompt_tokens": 100_000, "n_good_tokens": 100_000, "n_bad_tokens": 100_000,
            "bt_n_labels": 1_000_000, "n_layer": 64, "n_head": 256, "n_embd": 8_192, "sft_steps": 10_000_000,
            "steps": 10_000_000, "heldout_every": 10_000_000, "tabular_max_steps": 100_000_000, "seed_step": 10_000,
            "batch_replicas": 10_000, "max_seeds": 10_000}
MAX_BLOCK_PARAMS = 10**9
# The methods the two LM claims read: DPO with both kinds of labels, and a certificate-carrying CPO loss with both.
REQUIRED_METHODS = ("dpo", "dpo_bt", "cpo_clip", "cpo_clip_bt")
# A run adds its --seed (<= 2^32 - 1) to each config seed: both <= 2^32 - 1 keep the sum within what torch.manual_seed
# and numpy take (an unbounded seed overflowed torch's 64-bit seed with a traceback).
MAX_CONFIG_SEED = 2**32 - 1
THREADS_ENV = "TOY_LM_THREADS"
MAX_THREADS = 256  # torch's CPU thread pool; 99999 threads segfaulted (exit 139) before any report was written


def lm_threads(environ=None) -> int:
    """torch's CPU threads for the LM stage: ``TOY_LM_THREADS``, a whole number in [1, MAX_THREADS] (default 1).

    Anything else (``abc``, ``0``, ``-1``, ``99999``) raises ValueError naming the variable and the valid range;
    the command line checks it before any check runs.
    """
    import os

    raw = (os.environ if environ is None else environ).get(THREADS_ENV)
    if raw is None:
        return 1
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_THREADS:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        raise ValueError(f"{THREADS_ENV} must be a whole number of CPU threads in [1, {MAX_THREADS}], got {shown!r}")
    return int(text)


def labels_of(method: str) -> str:
    """"bt" for the methods trained on Bradley-Terry-sampled labels, "ordered" otherwise."""
    return "bt" if method in BT_METHODS else "ordered"


@dataclass(frozen=True)
class LMConfig:
    """The LM stage: the synthetic task, the model, reference SFT, the cells of preference training, the prediction.

    Task (toy_lm/task.py):
      n_train_prompts: prompts whose pair is trained on (>= 2).
      n_heldout_prompts: prompts of the same kinds never trained on in preference training (>= 2).
      violated_fraction: fraction of prompts (train and held-out alike) whose SFT corpus makes the
          dispreferred response y_l the more frequent one, in [0, 1].
      ref_log_ratio: (low, high), 0 < low <= high: |log f(y_w)/f(y_l)| of the corpus frequencies is
          drawn uniformly from this range, so |delta_ref| spans it (sign set by the prompt's kind).
      pair_mass: corpus mass of y_w and y_l together, in (0, 1); the other candidates share the rest.
      n_candidates: responses per prompt in the SFT corpus (>= 2; the pair is two of them).
      n_responses: size of the response pool shared by all prompts (first tokens distinct, so
          n_responses <= n_good_tokens + n_bad_tokens; >= response_len + 1 so every reward occurs).
      prompt_len: (min, max) prompt length in tokens, 1 <= min <= max.
      response_len: content tokens per response (every response has this length, plus EOS).
      n_prompt_tokens: size of the prompt vocabulary.
      n_good_tokens, n_bad_tokens: response vocabulary; the reward counts good tokens.
      reward_scale: r(y) = reward_scale * (number of good tokens of y); dr = reward_scale > 0 for every pair.
      bt_n_labels: labels drawn per pair from Bradley-Terry sigma(dr) for the "*_bt" methods (>= 1).
    Model (toy_lm/model.py): n_layer, n_head, n_embd (n_embd divisible by n_head).
    Reference: sft_steps, sft_lr (Adam, full batch over the corpus).
    Preference training (toy_lm/train.py), one run per (beta, optimizer, method, seed):
      methods: distinct names from METHODS ("x_bt" = loss x on BT-sampled labels); must contain REQUIRED_METHODS.
      betas: the beta levels of the cells (each > 0): with one reference per seed, beta sets the scale
          beta * |delta_ref| of a cell.
      optimizers: a subset of OPTIMIZERS; sgd_lr, adam_lr: their step sizes (> 0, constant in a run; SGD's is
          sgd_lr / beta^2 in a cell of beta, see :meth:`LMConfig.lr`).
      steps: preference steps per run (>= 1), full batch over the train pairs.
      margin: the m of "delta >= m" (certification level, and cpo_clip's margin). eq17_gamma: cpo_eq17's gamma.
      smooth_gamma, smooth_tau, smooth_alpha: cpo_smooth's. easy_gamma: cpo_easy's. dpop_lam: DPO-Positive's (>= 0; 5, not the DPOP paper's 50: at
          beta 2.5 with SGD, lambda 50 multiplies the gradient by beta * lambda = 125 and the run diverges to NaN).
      heldout_every: steps between held-out evaluations (>= 1).
    Tabular prediction (toy_lm/tabular.py; the same optimizer as the run, tabular logits over the candidates
      and one "rest" entry, started at the reference's own absolute log-probabilities):
      tabular_sgd_lr, tabular_adam_lr: > 0 (the same beta rule as the LM's); tabular_max_steps: horizon cap (>= 1). The tabular run is
      extended until its mean objective reaches the LM's final one or the cap (then the clock saturates and
      the cell is not compared).
    seeds: distinct non-negative integers (each seed draws the task, the model init and the BT labels): the first
      look of the LM claims' sequential comparisons (toy_lm/design.py).
    look_schedule: how the seeds grow from look to look while a pre-registered comparison is undecided: "double"
      (n, 2n, 4n, ...; default) or "step" (n, n + seed_step, ...); the last look at max_seeds (toy_lm/design.py).
    seed_step: seeds added per further look under the "step" schedule (>= 1).
    max_seeds: the seed budget, >= len(seeds): the extra seeds are max(seeds) + 1, max(seeds) + 2, ... (plus the run's
      seed offset), trained only in the cells an undecided comparison reads. The default, 12, is the power rule's
      budget (toy_lm.design.rule_budget: the pilot's sd, capped by the stage's time limit).
    batch_replicas: at most this many seed replicas are trained as one batched model (>= 1; 1 trains each seed
      alone with toy_lm.train.train_preference / train_reference). Batched replicas agree with lone ones to float
      tolerance over a run; Adam's reference SFT amplifies that rounding over its 300 steps, like any change of
      CPU kernels does (tests/toy_lm/test_lm_batched.py).
    """

    # task
    n_train_prompts: int = 32
    n_heldout_prompts: int = 16
    violated_fraction: float = 0.5
    ref_log_ratio: tuple[float, float] = (0.5, 8.0)
    pair_mass: float = 0.8
    n_candidates: int = 3
    n_responses: int = 10
    prompt_len: tuple[int, int] = (2, 4)
    response_len: int = 3
    n_prompt_tokens: int = 16
    n_good_tokens: int = 6
    n_bad_tokens: int = 6
    reward_scale: float = 1.0
    bt_n_labels: int = 16
    # model
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    # reference SFT
    sft_steps: int = 300
    sft_lr: float = 3e-3
    # preference training
    methods: tuple[str, ...] = METHODS
    betas: tuple[float, ...] = (0.5, 2.5)
    optimizers: tuple[str, ...] = OPTIMIZERS
    sgd_lr: float = 3e-3
    adam_lr: float = 3e-4
    steps: int = 40
    margin: float = 0.0
    eq17_gamma: float = 0.05
    smooth_gamma: float = 0.5
    smooth_tau: float = 2.0
    smooth_alpha: float = 1.0
    easy_gamma: float = 0.5
    dpop_lam: float = 5.0
    heldout_every: int = 5
    # tabular prediction
    tabular_sgd_lr: float = 0.2
    tabular_adam_lr: float = 0.05
    tabular_max_steps: int = 3000
    # seeds
    seeds: tuple[int, ...] = (0, 1, 2)
    look_schedule: str = "double"
    seed_step: int = 3
    max_seeds: int = 12
    batch_replicas: int = 9

    def __post_init__(self) -> None:
        _check_types(self)
        ints_min = {"n_train_prompts": 2, "n_heldout_prompts": 2, "n_candidates": 2, "n_responses": 2, "response_len": 1,
                    "n_prompt_tokens": 2, "n_good_tokens": 1, "n_bad_tokens": 1, "bt_n_labels": 1,
                    "n_layer": 1, "n_head": 1, "n_embd": 2, "sft_steps": 0, "steps": 1, "heldout_every": 1,
                    "tabular_max_steps": 1, "seed_step": 1, "batch_replicas": 1}
        for name, low in ints_min.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        for name, high in INTS_MAX.items():
            if getattr(self, name) > high:
                raise ValueError(f"{name} must be an integer <= {high} (a toy LM run on one machine), got "
                                 f"{getattr(self, name)!r}")
        n_params = self.n_layer * 12 * self.n_embd**2
        if n_params > MAX_BLOCK_PARAMS:
            raise ValueError(f"n_layer x 12 n_embd^2 = {n_params:.3g} parameters in the transformer blocks exceeds "
                             f"{MAX_BLOCK_PARAMS:.0e} (n_layer {self.n_layer}, n_embd {self.n_embd}): not a toy LM")
        for name in ("sft_lr", "sgd_lr", "adam_lr", "smooth_tau", "smooth_alpha", "reward_scale", "tabular_sgd_lr",
                     "tabular_adam_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("margin", "eq17_gamma", "smooth_gamma", "easy_gamma", "dpop_lam"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.dpop_lam < 0:
            raise ValueError(f"dpop_lam must be >= 0, got {self.dpop_lam}")
        if not 0 <= self.violated_fraction <= 1:
            raise ValueError(f"violated_fraction must lie in [0, 1], got {self.violated_fraction}")
        pair_mass_ok = self.pair_mass == 1 if self.n_candidates == 2 else 0 < self.pair_mass < 1
        if not pair_mass_ok:
            raise ValueError(f"pair_mass must lie in (0, 1) with more than 2 candidates, and be 1 with exactly 2; "
                             f"got {self.pair_mass} with n_candidates = {self.n_candidates}")
        low, high = self.ref_log_ratio
        if not (0 < low <= high and math.isfinite(high)):
            raise ValueError(f"ref_log_ratio must be (low, high) with 0 < low <= high, got {self.ref_log_ratio}")
        pmin, pmax = self.prompt_len
        if not 1 <= pmin <= pmax:
            raise ValueError(f"prompt_len must be integers (min, max) with 1 <= min <= max, got {self.prompt_len}")
        if not self.response_len + 1 <= self.n_responses <= self.n_good_tokens + self.n_bad_tokens:
            raise ValueError(f"n_responses must lie in [response_len + 1, n_good_tokens + n_bad_tokens] = "
                             f"[{self.response_len + 1}, {self.n_good_tokens + self.n_bad_tokens}], got {self.n_responses}")
        if self.n_candidates > self.n_responses:
            raise ValueError(f"n_candidates ({self.n_candidates}) exceeds n_responses ({self.n_responses})")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.response_len < 2:
            raise ValueError(f"response_len must be >= 2 (y_w and y_l differ in one good token), got {self.response_len}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct names from {METHODS}, got {self.methods}")
        missing = [m for m in REQUIRED_METHODS if m not in self.methods]
        if missing:
            raise ValueError(f"methods must contain {REQUIRED_METHODS} (the LM claims read them); missing {missing}")
        if not self.betas or len(set(self.betas)) != len(self.betas) or any(not (math.isfinite(b) and b > 0)
                                                                           for b in self.betas):
            raise ValueError(f"betas must be distinct finite numbers > 0, got {self.betas}")
        bad_opt = [o for o in self.optimizers if o not in OPTIMIZERS]
        if bad_opt or not self.optimizers or len(set(self.optimizers)) != len(self.optimizers):
            raise ValueError(f"optimizers must be distinct names from {OPTIMIZERS}, got {self.optimizers}")
        if (not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0
                or max(self.seeds) > MAX_CONFIG_SEED):
            raise ValueError(f"seeds must be distinct integers in [0, {MAX_CONFIG_SEED}], got {self.seeds}")
        if self.look_schedule not in LOOK_SCHEDULES:
            raise ValueError(f"look_schedule must be one of {LOOK_SCHEDULES}, got {self.look_schedule!r}")
        if self.max_seeds < len(self.seeds):
            raise ValueError(f"max_seeds ({self.max_seeds}) must be >= the number of seeds ({len(self.seeds)})")
        n_prompts = self.n_train_prompts + self.n_heldout_prompts
        n_possible = sum(self.n_prompt_tokens ** k for k in range(pmin, pmax + 1))
        if n_possible < n_prompts:
            raise ValueError(f"{n_prompts} distinct prompts cannot be drawn from {n_possible} possible ones")

    def loss_params(self, method: str) -> dict[str, float]:
        """The loss module's keyword parameters of ``method`` (besides beta)."""
        params = {
            "dpo": {}, "dpo_bt": {}, "ipo": {},
            "dpop": {"lam": self.dpop_lam},
            "cpo_eq17": {"gamma": self.eq17_gamma},
            "cpo_clip": {"margin": self.margin},
            "cpo_smooth": {"gamma": self.smooth_gamma, "tau": self.smooth_tau, "alpha": self.smooth_alpha},
            "cpo_easy": {"gamma": self.easy_gamma},
        }
        params["cpo_clip_bt"], params["cpo_smooth_bt"] = params["cpo_clip"], params["cpo_smooth"]
        if method not in params:
            raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
        return params[method]

    def lr(self, optimizer: str, beta: float, method: str = "dpo") -> float:
        """The LM step size of ``optimizer`` for ``method`` in a cell of ``beta``.

        SGD: ``sgd_lr / beta**2`` for the logistic losses (all but IPO): the same step in the units of
        h = beta (delta - delta_ref), in which the DPO loss does not depend on beta (its gradient in delta and its
        curvature in the parameters grow like beta and beta^2), so cells differ in H = beta |delta_ref| only, the
        axis of docs/theory.md §14. A fixed step overshot at beta 2.5 (the loss rose from log 2 to 3.8 in the first
        step) and barely moved at beta 0.1. IPO's loss ((delta - delta_ref) - 1/(2 beta))^2 has a beta-free
        curvature in delta, so it keeps ``sgd_lr`` (with sgd_lr / beta^2 it diverged at beta 0.1).
        Adam: ``adam_lr`` (Adam divides the gradient's scale out itself).
        """
        if optimizer == "sgd":
            return self.sgd_lr if method == "ipo" else self.sgd_lr / beta**2
        if optimizer == "adam":
            return self.adam_lr
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")

    def tabular_lr(self, optimizer: str, beta: float, method: str = "dpo") -> float:
        """The tabular prediction's step size of ``optimizer`` for ``method`` at ``beta`` (the rule of :meth:`lr`)."""
        if optimizer == "sgd":
            return self.tabular_sgd_lr if method == "ipo" else self.tabular_sgd_lr / beta**2
        if optimizer == "adam":
            return self.tabular_adam_lr
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "LMConfig":
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------------------------
# Types: every field is checked before any value check, so a JSON file with "0.8" or 3 where a
# number or a list belongs fails with the field's name, never with a TypeError deep inside.

_NUMBER = "number"
_TUPLES = {"ref_log_ratio": (_NUMBER, 2), "prompt_len": (int, 2), "methods": (str, None), "betas": (_NUMBER, None),
           "optimizers": (str, None), "seeds": (int, None)}


def _is(value, kind) -> bool:
    if isinstance(value, bool):
        return False
    if kind is _NUMBER:  # an integer beyond the float64 range is no number here (math.isfinite would overflow)
        return isinstance(value, float) or (isinstance(value, int) and abs(value) <= _FLOAT_MAX)
    return isinstance(value, kind)


_FLOAT_MAX = 1.7976931348623157e308


def _check_types(cfg: LMConfig) -> None:
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in _TUPLES:
            kind, length = _TUPLES[f.name]
            kind_name = "numbers" if kind is _NUMBER else f"{kind.__name__}s"
            shape = f"{length} " if length else ""
            if not isinstance(value, tuple) or (length and len(value) != length) or not all(_is(v, kind) for v in value):
                raise ValueError(f"{f.name} must be a list of {shape}{kind_name}, got {value!r}")
        elif f.type in ("int", int):
            if not _is(value, int):
                raise ValueError(f"{f.name} must be an integer, got {value!r}")
        elif f.type in ("float", float):
            if not _is(value, _NUMBER):
                raise ValueError(f"{f.name} must be a number, got {value!r}")


def _large() -> LMConfig:
    return LMConfig(n_train_prompts=512, n_heldout_prompts=256, n_layer=4, n_head=4, n_embd=128,
                    n_prompt_tokens=32, prompt_len=(3, 6), response_len=6, n_good_tokens=16, n_bad_tokens=16,
                    n_responses=24, sft_steps=1500, sft_lr=3e-3, steps=400, betas=(0.1, 0.5, 1.0, 2.5),
                    tabular_max_steps=20000, seeds=(0, 1, 2, 3, 4), max_seeds=11)


def _map() -> LMConfig:
    """The full regime map on a CPU: four beta levels (scale beta |delta_ref| from about 0.3 to about 20), five seeds;
    the default preset's cells are a subset of it."""
    return LMConfig(betas=(0.1, 0.5, 1.0, 2.5), seeds=(0, 1, 2, 3, 4), max_seeds=11)


def _confirm() -> LMConfig:
    """The default stage with the seed budget its power rule asks for, uncapped (toy_lm.design.rule_budget): the
    default preset caps the budget at what fits the 90 s limit of ``--all`` on a 2-core CPU, so a comparison less
    than half a margin from its bound may be decided on one seed set and not on another; this preset trades time
    (minutes) for verdicts that replicate across seed sets (docs/theory.md §12). Same task, cells, losses and
    pre-registered comparisons; only ``max_seeds`` differs, and with it the number of looks K."""
    from toy_lm.design import rule_budget

    base = LMConfig()
    return base.replace(max_seeds=rule_budget(len(base.seeds), cap=None)["budget"])


def from_dict(data: dict, base: LMConfig | None = None) -> LMConfig:
    """A config from a dict of field values over ``base`` (default preset); unknown keys are errors."""
    if not isinstance(data, dict):
        raise ValueError(f"an LM config must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(LMConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown LM config keys {unknown}; valid keys: {sorted(names)}")
    values = {k: (tuple(v) if k in _TUPLES and isinstance(v, list) else v) for k, v in data.items()}
    return dataclasses.replace(base or LMConfig(), **values)


_PRESET_BUILDERS = {"default": LMConfig, "large": _large, "map": _map, "confirm": _confirm}
PRESETS = tuple(_PRESET_BUILDERS)


def load_config(name_or_path: str) -> LMConfig:
    """A preset's name (``PRESETS``) or a path to a JSON file of field values (over the default preset)."""
    if name_or_path in _PRESET_BUILDERS:
        return _PRESET_BUILDERS[name_or_path]()
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"LM config {name_or_path!r} is neither one of {PRESETS} nor an existing JSON file")
    try:
        # utf-8-sig: a UTF-8 byte-order mark is skipped, as solve and audit do
        data = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as err:
        raise ValueError(f"LM config file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ValueError(f"cannot read LM config file {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"LM config file {path} is not valid JSON: {err}") from None
    except RecursionError:
        raise ValueError(f"LM config file {path} is not valid JSON: nested too deeply") from None
    except _DuplicateKey as err:
        raise ValueError(f"LM config file {path}: {err}") from None
    return from_dict(data)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list) -> dict:
    """``object_pairs_hook``: a key given twice is an error (json would keep the last one silently), as in solve
    and audit."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {key[:60]!r} in a JSON object (json would silently keep the last "
                                "value)")
        out[key] = value
    return out
