"""Each LM method's declared depends_on covers the formulas it measurably executes (issue 16: the LM simulation's
depends_on omitted the LM loss it reads through the loss-matched clock)."""

import json

import pytest

from dpo_rlhf_checks.result import CheckContext
from dpo_rlhf_checks.tracing import measure_calls

MICRO = {"n_train_prompts": 6, "n_heldout_prompts": 2, "n_embd": 16, "sft_steps": 10, "steps": 4, "seeds": [0, 1],
         "max_seeds": 4, "seed_step": 2, "heldout_every": 2}
FORMULA_MODULES = ("dpo_rlhf_checks.losses", "toy_lm.train", "toy_lm.model", "toy_lm.tabular", "toy_lm.predict",
                   "toy_lm.ceiling", "toy_lm.task", "toy_bandits")
VALIDATION = ("_check_", "_is_real", "_validate_params")  # input checks: no formula
NAMES = ("lm_dpo_failure_training", "lm_dpo_failure_tabular", "lm_dpo_failure_comparison", "lm_cpo_fix_training",
         "lm_cpo_fix_tabular")


def _formulas(measured):
    out = set()
    for name in measured:
        last = name.rsplit(".", 1)[-1]
        if not name.startswith(FORMULA_MODULES) or last.startswith("<") or last.startswith(VALIDATION):
            continue
        out.add(name)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_declared_depends_on_covers_what_the_method_executes_when_it_runs_first(name, tmp_path):
    from toy_lm import claims, stage

    stage._CACHE.clear()  # this method trains the stage itself, as the first LM method of a run does
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(MICRO))
    ctx = CheckContext(out_dir=tmp_path / "out", lm_config=str(path), device="cpu")
    result, measured = measure_calls(getattr(claims, name), ctx)
    missing = sorted(_formulas(measured) - set(result.depends_on))
    assert not missing, missing
    stage._CACHE.clear()


def test_the_simulations_declare_the_lm_loss_they_read():
    from toy_lm import claims

    for sim in (claims._DEPS_STAGE,):
        assert {"dpo_rlhf_checks.losses.dpo_loss", "dpo_rlhf_checks.losses.dpo_bt_loss",
                "toy_lm.train.pair_losses"} <= set(sim)
