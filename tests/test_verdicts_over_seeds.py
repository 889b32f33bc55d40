"""Every non-LM claim gives one verdict over 8 seeds in quick mode (issue 17, item 2: cpo-penalized-eq10 read
"fails" on seeds 1 and 3 and holds-amended on the others). Slow: every claim 8 times, minutes
(`pytest -m slow tests/test_verdicts_over_seeds.py`). The LM claims follow the verdict-trust issue."""

from __future__ import annotations

import pytest

from dpo_rlhf_checks.registry import CLAIMS
from dpo_rlhf_checks.report import run_claim
from dpo_rlhf_checks.result import CheckContext

SEEDS = range(8)
NON_LM = [c for c in CLAIMS if not c.id.startswith("lm-")
          and not any(t.startswith("toy_lm") for t in (c.methods or {}).values())]


@pytest.mark.slow
@pytest.mark.parametrize("claim", NON_LM, ids=[c.id for c in NON_LM])
def test_one_verdict_per_claim_over_8_seeds(claim, tmp_path):
    verdicts = {}
    for seed in SEEDS:
        entry = run_claim(claim, CheckContext(seed=seed, quick=True, out_dir=tmp_path / str(seed)))
        verdicts[seed] = entry["verdict"]
        if entry["verdict"] == "error":
            pytest.fail(f"{claim.id} seed {seed}: {entry['summary'][:500]}")
    assert len(set(verdicts.values())) == 1, f"{claim.id}: verdict depends on the seed: {verdicts}"
