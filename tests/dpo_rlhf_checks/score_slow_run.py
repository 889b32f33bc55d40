"""Run by test_score_resume.py: ``score`` with every forward pass slowed (so a test can interrupt it mid-run)."""

import sys
import time

from dpo_rlhf_checks import score as S

real = S.sequence_logps


def slow(*args, **kwargs):
    time.sleep(float(sys.argv[1]))
    return real(*args, **kwargs)


S.sequence_logps = slow
sys.exit(S.main(sys.argv[2:]))
