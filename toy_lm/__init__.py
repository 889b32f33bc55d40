"""The small language-model stage (THEORY.md §12): a tiny causal transformer trained with DPO, its
BT-labelled form, the CPO variants, IPO and DPO-Positive from a reference that favours the dispreferred
response on a controlled fraction of prompts, compared pair by pair with the tabular theory.

Modules: ``config`` (LMConfig, presets, JSON files), ``model`` (TinyGPT, sequence_logps), ``task``
(the synthetic task), ``train`` (reference SFT, preference training, per-step records), ``predict``
(the tabular prediction and its comparison), ``stage`` (the whole stage, cached), ``claims`` (the checks).
"""

from toy_lm.config import METHODS, LMConfig, load_config
from toy_lm.model import TinyGPT, resolve_device, sequence_logps

__all__ = ["METHODS", "LMConfig", "TinyGPT", "load_config", "resolve_device", "sequence_logps"]
