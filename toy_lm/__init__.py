"""The small language-model stage (docs/theory.md §12, §14): a tiny causal transformer trained with DPO, its
BT-labelled form, the CPO variants, IPO and DPO-Positive from a reference that favours the dispreferred
response on a controlled fraction of prompts, in cells (beta x optimizer x labels) from fast to slow regimes,
compared pair by pair with the tabular theory run with the same optimizer.

Modules: ``config`` (LMConfig, presets, JSON files), ``model`` (TinyGPT, sequence_logps), ``task``
(the synthetic task), ``train`` (reference SFT, preference training, per-step records), ``tabular`` (the
tabular theory with the run's optimizer; time in U), ``predict`` (the prediction of a cell and its comparison),
``stage`` (the whole stage, cached, extended by seeds per look; regimes; time-in-U law), ``design`` (the
pre-registered comparisons, intervals and looks), ``decide`` (their sequential evaluation), ``ceiling`` (what a
certificate-carrying loss's population minimiser reaches on sampled labels), ``claims`` (the methods of the two LM claims),
``lm_map`` (the ``paper_checks.py lm-map`` subcommand).
"""

from toy_lm.config import METHODS, LMConfig, load_config
from toy_lm.model import TinyGPT, resolve_device, sequence_logps

__all__ = ["METHODS", "LMConfig", "TinyGPT", "load_config", "resolve_device", "sequence_logps"]
