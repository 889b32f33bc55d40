"""The tabular prediction's own losses (toy_lm.tabular.tabular_pair_losses) agree with the run's (toy_lm.train.pair_losses).

The two are written independently (the run's from dpo_rlhf_checks.losses), so a bug in either shows here.
"""

import pytest
import torch

from toy_lm.config import LMConfig
from toy_lm.tabular import tabular_pair_losses
from toy_lm.train import pair_losses

METHODS = ("dpo", "dpo_bt", "cpo_clip", "cpo_smooth", "cpo_eq17", "cpo_easy", "ipo", "dpop", "cpo_clip_bt",
           "cpo_smooth_bt")


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.5])
@pytest.mark.parametrize("method", METHODS)
def test_tabular_losses_agree_with_run_losses(method, beta):
    g = torch.Generator().manual_seed(0)
    n = 400
    pc, pr, rc, rr = (-(torch.rand(n, generator=g, dtype=torch.float64) * 6 + 0.05) for _ in range(4))
    q = torch.rand(n, generator=g, dtype=torch.float64)
    params = LMConfig().loss_params(method)
    obj_run, ord_run = pair_losses(method, beta, params, q, pc, pr, rc, rr)
    obj_tab, ord_tab = tabular_pair_losses(method, beta, params, q, pc, pr, rc, rr)
    torch.testing.assert_close(obj_tab, obj_run, rtol=0, atol=1e-10)
    torch.testing.assert_close(ord_tab, ord_run, rtol=0, atol=1e-10)
