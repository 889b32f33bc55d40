"""Symbolic and numeric methods of the paper's analytic claims (docs/theory.md §1-§9, §11).

- :mod:`theory.symbols`: SymPy symbols with their assumptions, proof and numeric helpers.
- :mod:`theory.derivations`: the cached SymPy derivations (general K where a claim is about K responses).
- :mod:`theory.common`: tolerances, seeded instances, the DPO loss through the toolkit.
- :mod:`theory.sec1_rlhf` ... :mod:`theory.sec11_table`: one module per section, each holding that section's
  method functions ``<claim>_<method>(ctx) -> MethodResult`` that the registry names.

Modules load lazily (the numeric methods import torch through the loss library).
"""
