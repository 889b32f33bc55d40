"""Configuration of the language-model stage: one frozen dataclass, two named presets, JSON files.

Every number that changes an answer (``beta``, margins, the fraction of prompts whose
reference favours ``y_l``) lives here and nowhere else; the checks print the whole config
into the report evidence.
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
OPTIMIZERS = ("adam", "sgd")
PRESETS = ("default", "large")


@dataclass(frozen=True)
class LMConfig:
    """One LM run: the synthetic task, the model, reference SFT, preference training, the tabular prediction.

    Task (toy_lm/task.py):
      n_train_prompts: prompts whose pair is trained on (>= 2).
      n_heldout_prompts: prompts of the same kinds never trained on in preference training (>= 2).
      violated_fraction: fraction of prompts (train and held-out alike) whose SFT corpus makes the
          dispreferred response y_l the more frequent one, in [0, 1].
      ref_log_ratio: (low, high), 0 < low <= high: |log f(y_w)/f(y_l)| of the corpus frequencies is
          drawn uniformly from this range, so delta_ref spans it (sign set by the prompt's kind).
      pair_mass: corpus mass of y_w and y_l together, in (0, 1); the other candidates share the rest.
      n_candidates: responses per prompt in the SFT corpus (>= 2; the pair is two of them).
      n_responses: size of the response pool shared by all prompts (first tokens distinct, so
          n_responses <= n_good_tokens + n_bad_tokens; >= response_len + 1 so every reward occurs).
      prompt_len: (min, max) prompt length in tokens, 1 <= min <= max.
      response_len: content tokens per response (every response has this length, plus EOS).
      n_prompt_tokens: size of the prompt vocabulary.
      n_good_tokens, n_bad_tokens: response vocabulary; the reward counts good tokens.
      reward_scale: r(y) = reward_scale * (number of good tokens of y); y_w has one more good token
          than y_l, so the reward gap is dr = reward_scale > 0 for every pair.
      bt_n_labels: labels drawn per pair from Bradley-Terry sigma(dr) for the "*_bt" methods (>= 1).
    Model (toy_lm/model.py): n_layer, n_head, n_embd (n_embd divisible by n_head).
    Reference: sft_steps, sft_lr (Adam, full batch over the corpus).
    Preference training (toy_lm/train.py):
      methods: names from METHODS ("x_bt" = loss x on BT-sampled labels). steps, lr, optimizer ("adam" or "sgd"): the same for every method.
      beta: > 0, of every loss. margin: the m of "delta >= m" (certification level, and cpo_clip's
          margin; the tabular prediction supports cpo_clip only with margin 0, its code default, because
          toy_bandits.dynamics.train_tabular does not pass a margin on to cpo_clip). eq17_gamma: cpo_eq17's gamma. smooth_gamma, smooth_tau, smooth_alpha: cpo_smooth's.
      easy_gamma: cpo_easy's gamma. dpop_lam: DPO-Positive's lambda (>= 0).
      heldout_every: steps between held-out evaluations (>= 1).
    Tabular prediction (toy_bandits.dynamics.train_tabular):
      tabular_lr: > 0; tabular_steps: horizon of the tabular run (its clock is matched to the LM's
      by the mean training loss, toy_lm/predict.py).
    seeds: the seeds of the runs (each seed draws the task, the model init and the BT labels).
    """

    # task
    n_train_prompts: int = 48
    n_heldout_prompts: int = 16
    violated_fraction: float = 0.5
    ref_log_ratio: tuple[float, float] = (0.25, 3.0)
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
    steps: int = 50
    lr: float = 1e-3
    optimizer: str = "adam"
    beta: float = 1.0
    margin: float = 0.0
    eq17_gamma: float = 0.05
    smooth_gamma: float = 0.5
    smooth_tau: float = 2.0
    smooth_alpha: float = 1.0
    easy_gamma: float = 0.5
    dpop_lam: float = 50.0
    heldout_every: int = 5
    # tabular prediction
    tabular_lr: float = 0.2
    tabular_steps: int = 300
    # seeds
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        ints_min = {"n_train_prompts": 2, "n_heldout_prompts": 2, "n_candidates": 2, "n_responses": 2, "response_len": 1,
                    "n_prompt_tokens": 2, "n_good_tokens": 1, "n_bad_tokens": 1, "bt_n_labels": 1,
                    "n_layer": 1, "n_head": 1, "n_embd": 2, "sft_steps": 0, "steps": 1, "heldout_every": 1,
                    "tabular_steps": 1}
        for name, low in ints_min.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        positive = ("sft_lr", "lr", "beta", "smooth_tau", "smooth_alpha", "reward_scale", "tabular_lr")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("margin", "eq17_gamma", "smooth_gamma", "easy_gamma", "dpop_lam"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
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
        if not (isinstance(pmin, int) and isinstance(pmax, int) and 1 <= pmin <= pmax):
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
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers, got {self.seeds}")
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "LMConfig":
        return dataclasses.replace(self, **changes)


def _large() -> LMConfig:
    return LMConfig(n_train_prompts=512, n_heldout_prompts=256, n_layer=4, n_head=4, n_embd=128,
                    n_prompt_tokens=32, prompt_len=(3, 6), response_len=6, n_good_tokens=16, n_bad_tokens=16, n_responses=24,
                    sft_steps=1500, sft_lr=3e-3, steps=600, lr=5e-4, tabular_steps=2000, seeds=(0, 1, 2, 3, 4))


_TUPLE_FIELDS = {"ref_log_ratio", "prompt_len", "methods", "seeds"}


def from_dict(data: dict, base: LMConfig | None = None) -> LMConfig:
    """A config from a dict of field values over ``base`` (default preset); unknown keys are errors."""
    if not isinstance(data, dict):
        raise ValueError(f"an LM config must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(LMConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown LM config keys {unknown}; valid keys: {sorted(names)}")
    values = {k: (tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v) for k, v in data.items()}
    return dataclasses.replace(base or LMConfig(), **values)


def load_config(name_or_path: str) -> LMConfig:
    """"default", "large", or a path to a JSON file of field values (over the default preset)."""
    if name_or_path == "default":
        return LMConfig()
    if name_or_path == "large":
        return _large()
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"LM config {name_or_path!r} is neither one of {PRESETS} nor an existing JSON file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"LM config file {path} is not valid JSON: {err}") from None
    return from_dict(data)
