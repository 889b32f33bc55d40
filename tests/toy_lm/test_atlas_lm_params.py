"""toy_lm.atlas_lm: the parameters of the LM cell of a loss are the ones its comment and the U-atlas row state (a
survivor of mutation, seed 1123)."""

from dpo_rlhf_checks.atlas_rows import ROWS
import toy_lm.atlas_lm as A


def test_lm_cpo_alphapo_cell_runs_alphapo_at_alpha_one_quarter():
    """The LM column's cpo_alphapo cell must train AlphaPO at alpha 0.25, as LM_PARAMS' comment states ("alpha 0.25;
    TRL's default 0 makes it cpo_simpo") and as the U-atlas row it is the LM column of (atlas_rows: beta 2,
    simpo_gamma 0.5, alpha 0.25). alpha 0.5 in LM_PARAMS ran a different loss under the same row name (at beta 2,
    gamma 0.5 the per-pair loss on chosen/rejected mean log-probs (-2, -1) was 4.79 instead of 3.45) and no test or
    claim noticed (a survivor of mutation)."""
    params = A.loss_params("cpo_alphapo")
    assert params["alpha"] == 0.25
    assert params["simpo_gamma"] == 0.5
    assert params["label_smoothing"] == 0.0
    row = next(s for s in ROWS if s.loss == "cpo_alphapo")
    assert {k: params[k] for k in row.params} == row.params
