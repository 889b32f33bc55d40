"""Integrations with other libraries (optional; each needs its library, from the ``hf`` extra).

- :mod:`dpo_rlhf_checks.integrations.trl`: a TRL ``DPOTrainer`` that trains with any loss of
  :mod:`dpo_rlhf_checks.losses` (the Constrained PO variants by name) and logs the paper's diagnostics.
- :mod:`dpo_rlhf_checks.integrations.tiny`: a tiny GPT-2-style model and tokenizer built locally
  (random weights, no download), for tests, benchmarks and a first try of ``score``.
"""
