"""Symbolic checks of the paper's analytic claims (THEORY.md §1-§9, §11).

- :mod:`theory.symbols`: SymPy symbols with their assumptions, proof and numeric helpers.
- :mod:`theory.derivations`: the cached SymPy derivations, one function per THEORY.md section.
- :mod:`theory.claims`: the ``check_xxx(ctx) -> CheckResult`` functions the registry names.

Modules load lazily (``theory.claims`` imports torch through the loss library).
"""
