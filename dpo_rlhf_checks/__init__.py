"""dpo-rlhf-checks: checks of the theory of "Conditional Equivalence of DPO and RLHF".

The public surface is small: the claim registry, the method contract and its one merge rule, the runner
(:mod:`dpo_rlhf_checks.report`), and the loss library
(:mod:`dpo_rlhf_checks.losses`).
"""

__version__ = "0.1.0"

from dpo_rlhf_checks.result import (ERROR_VERDICT, METHODS, VERDICTS, CheckContext, CheckResult, MethodResult, decide,
                                    independent_methods, merge_methods, not_checked)
from dpo_rlhf_checks.registry import CLAIMS, Claim, get_claim

__all__ = [
    "CLAIMS",
    "ERROR_VERDICT",
    "Claim",
    "CheckContext",
    "CheckResult",
    "METHODS",
    "MethodResult",
    "VERDICTS",
    "__version__",
    "decide",
    "get_claim",
    "independent_methods",
    "merge_methods",
    "not_checked",
]
