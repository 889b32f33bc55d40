"""The linearised-LM (empirical NTK) prediction, toy_lm/kernel.py: its analytic reductions and its bookkeeping.

- K = P I on each pair's two responses (no sharing) is the tabular prediction exactly (SGD; Adam up to its eps);
- a rank-1 shared component K = a I + b u u^T has closed forms: IPO's linear recurrence (numpy and SymPy), and
  ordered DPO's flow time for identical pairs (toy_bandits.dynamics.ordered_pair_flow_time, independent code);
- the own/cross split adds up to the change of delta, and the written-out Adam is torch's Adam;
- J agrees with row-by-row autograd and with finite differences.
Planted errors in the dynamics (a dropped cross term, a factor 2 on eta) fail the closed-form checks
(:func:`test_closed_form_detects_planted_errors`).
"""

import math

import numpy as np
import pytest
import sympy as sp
import torch

from toy_bandits.dynamics import ordered_pair_flow_time
from toy_lm.kernel import (decomposition, flat_params, logp_jacobian, mass_changes, run_linearised, squeezing,
                           task_responses)
from toy_lm.tabular import run_tabular


def _instances(p=5, seed=0):
    rng = np.random.default_rng(seed)
    ref = np.log(rng.dirichlet(np.ones(4), size=p))[:, :3]  # (P, 3) candidates' log-probs, mass < 1
    q = rng.uniform(0.3, 0.9, size=p)
    return ref, q


def _tabular(method, ref, q, optimizer, lr, steps, beta=1.5, params=None):
    p = ref.shape[0]
    return run_tabular(method, ref, n_tokens=4, beta=beta, params=params or {}, q=q, optimizer=optimizer, lr=lr,
                       groups=np.zeros(p, int), stop_objective=np.array([-np.inf]), max_steps=steps)


def _linear(method, ref, q, optimizer, lr, steps, kernel=None, jacobian=None, beta=1.5, params=None, z0=None):
    p = ref.shape[0]
    z0 = np.concatenate([ref[:, 0], ref[:, 1]]) if z0 is None else z0
    return run_linearised(method, beta=beta, params=params or {}, q=q, ref_logp_w=ref[:, 0], ref_logp_l=ref[:, 1],
                          z0=z0, kernel=kernel, jacobian=jacobian, optimizer=optimizer, lr=lr, steps=steps,
                          n_tokens=4)


# ----------------------------------------------------------------------------------------------
# K = I per prompt: the tabular prediction


@pytest.mark.parametrize("method,params", [("dpo", {}), ("dpo_bt", {}), ("cpo_clip", {"margin": 0.0}), ("ipo", {}),
                                           ("cpo_smooth", {"gamma": 0.5, "tau": 2.0, "alpha": 1.0})])
def test_identity_kernel_is_the_tabular_prediction_sgd(method, params):
    """The tabular run trains each instance on its own loss term (their sum); the linear model the mean over the P
    pairs, so the tabular step lr corresponds to the kernel P I at the same lr (delta's kernel 2P per pair, the
    tabular softmax's |e_w - e_l|^2 = 2 times P). Exact, to float64 rounding."""
    ref, q = _instances()
    p = ref.shape[0]
    tab = _tabular(method, ref, q, "sgd", 0.3, 30, params=params)
    lin = _linear(method, ref, q, "sgd", 0.3, 30, kernel=p * np.eye(2 * p), params=params)
    assert np.abs(lin.delta - tab.delta).max() < 1e-12
    assert np.abs(lin.delta[-1] - lin.delta[0]).max() > 0.3  # it moved: the agreement is not the trivial one
    assert np.abs(lin.cross).max() == 0.0  # no shared parameters, no cross-pair share


def test_identity_kernel_pinned_numbers():
    """Pinned: ordered DPO, beta 1.5, SGD lr 0.3 on the mean, K = P I, 30 steps from the reference. Every pair starts
    at h = 0, so each follows the one-pair recurrence h' = h + 2 * 0.3 * beta^2 sigma(-h) (the kernel's 2P on delta
    times the mean's 1/P), written out here by hand."""
    ref, q = _instances()
    lin = _linear("dpo", ref, q, "sgd", 0.3, 30, kernel=5 * np.eye(10))
    np.testing.assert_allclose(lin.delta[0], ref[:, 0] - ref[:, 1], rtol=0, atol=1e-15)
    h = 0.0
    for _ in range(30):
        h += 2 * 0.3 * 1.5 ** 2 / (1 + math.exp(h))
    np.testing.assert_allclose(1.5 * (lin.delta[-1] - lin.delta[0]), h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lin.delta[-1] - lin.delta[0], 2.4584792471709, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["dpo", "dpo_bt", "ipo"])
def test_identity_jacobian_is_the_tabular_prediction_adam(method):
    """Adam on theta of z = z0 + I theta is tabular Adam: the normaliser's logit gets no gradient in delta's losses.
    One pair: exact. Five pairs: the mean divides each gradient by P, which Adam removes up to its eps (1e-8)."""
    ref, q = _instances(p=1)
    tab = _tabular(method, ref, q, "adam", 0.05, 30)
    lin = _linear(method, ref, q, "adam", 0.05, 30, jacobian=np.eye(2))
    assert np.abs(lin.delta - tab.delta).max() < 1e-12
    ref, q = _instances(p=5)
    tab = _tabular(method, ref, q, "adam", 0.05, 30)
    lin = _linear(method, ref, q, "adam", 0.05, 30, jacobian=np.eye(10))
    assert np.abs(lin.delta - tab.delta).max() < 1e-6
    assert np.abs(lin.delta[-1] - lin.delta[0]).min() > 0.1


# ----------------------------------------------------------------------------------------------
# A rank-1 shared component: closed forms


def _rank1_kernel(p, a, b):
    """K = a I + b u u^T on the 2P train rows, u = +1 on the chosen rows and -1 on the rejected: a shared "quality"
    direction. In delta: K_delta = D K D^T = 2a I + 4b 1 1^T."""
    u = np.concatenate([np.ones(p), -np.ones(p)])
    return a * np.eye(2 * p) + b * np.outer(u, u)


def ipo_closed_form(h0, beta, eta, a, b, t):
    """IPO, l = (h - c)^2 with h = delta - delta_ref, c = 1/(2 beta), mean over P pairs, SGD in kernel form with
    K_delta = 2a I + 4b 1 1^T: x = h - c obeys x' = (I - (2 eta / P) K_delta) x, whose eigenvalues are
    lam_perp = 1 - 4 eta a / P (on vectors summing to 0) and lam_par = 1 - 4 eta (a + 2 b P) / P (on 1). So
    x_t = lam_perp^t (x_0 - mean(x_0)) + lam_par^t mean(x_0)."""
    p = h0.shape[0]
    x0 = h0 - 1.0 / (2 * beta)
    lam_perp, lam_par = 1 - 4 * eta * a / p, 1 - 4 * eta * (a + 2 * b * p) / p
    return 1.0 / (2 * beta) + lam_perp ** t * (x0 - x0.mean()) + lam_par ** t * x0.mean()


def _ipo_case(kernel=None, eta=0.4):
    ref, q = _instances(p=6, seed=3)
    p, beta, a, b = 6, 0.8, 0.7, 0.25
    rng = np.random.default_rng(7)
    z0 = np.concatenate([ref[:, 0], ref[:, 1]]) + rng.normal(0, 0.5, 2 * p)  # start away from the reference: h_0 varies
    k = _rank1_kernel(p, a, b) if kernel is None else kernel(p, a, b)
    lin = _linear("ipo", ref, q, "sgd", eta, 25, kernel=k, beta=beta, z0=z0)
    h = lin.delta - (ref[:, 0] - ref[:, 1])
    expected = np.stack([ipo_closed_form(h[0], beta, eta, a, b, t) for t in range(26)])
    return h, expected


def test_rank1_ipo_closed_form():
    h, expected = _ipo_case()
    assert np.abs(h - expected).max() < 1e-11
    assert np.std(h[0]) > 0.1 and abs(h[-1].mean() - h[0].mean()) > 0.1  # both eigen-directions are exercised


def test_rank1_eigenvalues_symbolic():
    """SymPy: (I - (2 eta / P) K_delta) has eigenvalue lam_par on 1 and lam_perp on e_1 - e_2 (P = 4, symbolic a, b,
    eta), so the closed form above is the recurrence's solution; and numerically at a random point."""
    a, b, eta = sp.symbols("a b eta", positive=True)
    p = 4
    k_delta = 2 * a * sp.eye(p) + 4 * b * sp.ones(p, p)
    m = sp.eye(p) - (2 * eta / p) * k_delta
    one, perp = sp.ones(p, 1), sp.Matrix([1, -1, 0, 0])
    lam_par, lam_perp = 1 - 4 * eta * (a + 2 * b * p) / p, 1 - 4 * eta * a / p
    assert sp.simplify(m * one - lam_par * one) == sp.zeros(p, 1)
    assert sp.simplify(m * perp - lam_perp * perp) == sp.zeros(p, 1)
    assert sp.simplify(m * one - lam_perp * one) != sp.zeros(p, 1)  # b's cross term is what separates them
    num = {a: 0.7, b: 0.25, eta: 0.4}
    mn = np.array(m.subs(num).evalf(), dtype=float)
    np.testing.assert_allclose(mn @ np.ones(p), float(lam_par.subs(num)) * np.ones(p), rtol=0, atol=1e-14)


def test_rank1_dpo_identical_pairs_follow_the_flow_time():
    """Ordered DPO, P identical pairs from the reference, K_delta = 2a I + 4b 1 1^T: all deltas move together with
    delta' = -eta (2a + 4bP) / P * l'(delta), the tabular flow d delta/dt = -2 l'(delta) at t = eta (a + 2bP) / P
    per step. So the crossing step is ordered_pair_flow_time / (eta (a + 2bP) / P), to Euler's O(eta)."""
    p, beta, a, b, eta = 8, 1.0, 0.5, 0.3, 0.02
    delta_ref = -2.0
    ref = np.tile(np.log([0.1, 0.1 * math.exp(-delta_ref), 0.05]), (p, 1))  # delta_ref = -2 on every pair
    q = np.ones(p)
    lin = _linear("dpo", ref, q, "sgd", eta, 3000, kernel=_rank1_kernel(p, a, b), beta=beta)
    crossed = int(np.argmax(lin.delta[:, 0] > 0))
    assert crossed > 0 and np.ptp(lin.delta[-1]) < 1e-12
    expected = float(ordered_pair_flow_time(np.array([delta_ref]), beta)[0]) / (eta * (a + 2 * b * p) / p)
    assert abs(crossed - expected) / expected < 0.01
    # the shared component carries most of it: own share 2a + 4b of (2a + 4bP)
    own, cross = lin.own[:crossed].sum(0)[0], lin.cross[:crossed].sum(0)[0]
    assert abs(own / (own + cross) - (2 * a + 4 * b) / (2 * a + 4 * b * p)) < 1e-9


def test_closed_form_detects_planted_errors():
    """The closed-form checks fail on a wrong kernel dynamics: the cross term dropped (diagonal of K only), or the
    step size doubled (the kernel doubled is the same update)."""
    h, expected = _ipo_case(kernel=lambda p, a, b: np.diag(np.diag(_rank1_kernel(p, a, b))))
    assert np.abs(h - expected).max() > 1e-2
    h, expected = _ipo_case(kernel=lambda p, a, b: 2 * _rank1_kernel(p, a, b), eta=0.2)
    h2, _ = _ipo_case(eta=0.2)
    assert np.abs(h - _ipo_case(eta=0.4)[1]).max() < 1e-11  # 2K at eta/2 is K at eta
    assert np.abs(h2 - h).max() > 1e-2


# ----------------------------------------------------------------------------------------------
# The decomposition and the optimizer


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.3), ("adam", 0.05)])
def test_own_plus_cross_is_the_change(optimizer, lr):
    ref, q = _instances(p=6, seed=1)
    rng = np.random.default_rng(2)
    jac = rng.normal(size=(12, 40))
    lin = _linear("dpo", ref, q, optimizer, lr, 20, jacobian=jac)
    np.testing.assert_allclose(lin.own + lin.cross, np.diff(lin.delta, axis=0), rtol=0, atol=1e-11)
    np.testing.assert_allclose(lin.influence.sum(1), lin.delta[-1] - lin.delta[0], rtol=0, atol=1e-11)
    np.testing.assert_allclose(lin.change_by_row.sum(1), lin.z[-1] - lin.z[0], rtol=0, atol=1e-11)
    assert np.abs(lin.cross).max() > 1e-3  # a random J shares parameters


def test_written_out_adam_is_torch_adam():
    ref, q = _instances(p=4, seed=5)
    rng = np.random.default_rng(4)
    jac = torch.as_tensor(rng.normal(size=(8, 30)))
    lin = _linear("dpo_bt", ref, q, "adam", 0.05, 25, jacobian=jac.numpy())
    theta = torch.zeros(30, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    z0 = torch.as_tensor(np.concatenate([ref[:, 0], ref[:, 1]]))
    from toy_lm.tabular import tabular_pair_losses

    for _ in range(25):
        z = z0 + jac @ theta
        obj, _ = tabular_pair_losses("dpo_bt", 1.5, {}, torch.as_tensor(q), z[:4], z[4:], z0[:4], z0[4:])
        opt.zero_grad()
        obj.mean().backward()
        opt.step()
    z = (z0 + jac @ theta).detach().numpy()
    np.testing.assert_allclose(lin.z[-1], z, rtol=0, atol=1e-10)


def test_decomposition_counts():
    """A hand-made run: two misranked pairs, one carried out by the cross share, one kept in by it."""
    from toy_lm.kernel import KernelRun

    infl = np.array([[0.5, 1.0, 0.0], [0.0, 2.0, -1.5], [0.0, 0.0, 0.1]])
    delta_ref = np.array([-1.0, -1.5, 0.5])
    end = delta_ref + infl.sum(1)
    kr = KernelRun(z=np.zeros((2, 6)), delta=np.stack([delta_ref, end]), objective=np.zeros(2),
                   own=np.diag(infl)[None], cross=(infl.sum(1) - np.diag(infl))[None], influence=infl,
                   change_by_row=np.zeros((6, 6)), relinearised_at=[0])
    d = decomposition(kr, delta_ref)
    assert d["misranked"] == 2
    assert d["out_by_cross"] == 0.5 and d["kept_in_by_cross"] == 0.5 and d["out_by_own"] == 0.0
    assert d["own_mean"] == pytest.approx(1.25) and d["cross_mean"] == pytest.approx(-0.25)


def test_decomposition_splits_the_misranked_pairs_at_ties():
    """The docstring's split at its boundaries, by hand: a pair whose own share lands exactly on 0 (delta_ref + own = 0)
    counts as taken out by its own gradient, one that ends exactly on 0 as out of U, a cross share of exactly 0 is not
    negative; a pair at delta_ref = 0 is not misranked. So the four classes partition the misranked pairs (they add
    up to 1), and the end is the run's last step, not an earlier one."""
    from toy_lm.kernel import KernelRun

    infl = np.array([[1.0, 0.5, 0.0, 0.0, 0.0, 0.0],     # A: alone = 0, cross +0.5 -> end 0.5: out by own
                     [0.0, 1.0, -0.5, 0.0, 0.0, 0.0],    # B: alone = 0, cross -0.5 -> end -0.5: kept in by cross
                     [0.0, 0.0, 0.5, 1.0, 0.5, 0.0],     # C: alone = -1.5, cross 1.5 -> end = 0: out by cross
                     [0.25, 0.0, 0.0, 0.25, 0.0, 0.0],   # D: alone = -1.75, cross 0.25 -> end -1.5: in both
                     [0.0, 0.0, 0.0, 0.0, 1.0, 0.0],     # F: alone = 0, cross 0 -> end = 0: out by own
                     [0.0, 0.0, 0.0, 0.0, 0.0, 0.1]])    # E: delta_ref = 0, not misranked
    delta_ref = np.array([-1.0, -1.0, -2.0, -2.0, -1.0, 0.0])
    end = np.array([0.5, -0.5, 0.0, -1.5, 0.0, 0.1])
    np.testing.assert_array_equal(delta_ref + infl.sum(1), end)  # exact in binary: the ties are ties
    mid = -end - 1.0  # an earlier step, every class different
    kr = KernelRun(z=np.zeros((3, 12)), delta=np.stack([delta_ref, mid, end]), objective=np.zeros(3),
                   own=np.diag(infl)[None], cross=(infl.sum(1) - np.diag(infl))[None], influence=infl,
                   change_by_row=np.zeros((12, 12)), relinearised_at=[0])
    obs = np.array([0.0, -1.0, 3.0, -2.0, -4.0, 5.0])  # the LM's end: A (exactly 0) and C left U, B, D and F stayed
    d = decomposition(kr, delta_ref, obs)
    assert d["misranked"] == 5
    assert (d["out_by_own"], d["kept_in_by_cross"], d["out_by_cross"], d["in_both"]) == (0.4, 0.2, 0.2, 0.2)
    assert d["cross_negative"] == 0.2
    assert d["own_mean"] == pytest.approx((1 + 1 + 0.5 + 0.25 + 1) / 5, rel=1e-15)
    assert d["cross_mean"] == pytest.approx((0.5 - 0.5 + 1.5 + 0.25 + 0) / 5, rel=1e-15)
    assert d["abs_cross_over_abs_own_median"] == 0.5  # median of 0.5, 0.5, 3, 1, 0
    assert (d["lm_left_own_mean"], d["lm_left_cross_mean"]) == (0.75, 1.0)  # A and C
    assert d["lm_in_U_own_mean"] == pytest.approx(2.25 / 3, rel=1e-15)  # B, D, F
    assert d["lm_in_U_cross_mean"] == pytest.approx(-0.25 / 3, rel=1e-15)


def test_mass_changes_counts_an_unchanged_chosen_as_not_fallen():
    """frac_chosen_fell is the share of prompts whose log pi(y_w) went down strictly: of five prompts, one unchanged
    (the same float), one up and three down make 3/5 (an unchanged one counted as fallen would make 4/5)."""
    p = 5
    kinds = ("w",) * p + ("l",) * p + ("other",) * p
    z0 = np.log(np.r_[np.full(p, 0.3), np.full(p, 0.2), np.full(p, 0.1)])
    z1 = np.log(np.r_[[0.3, 0.4, 0.2, 0.1, 0.25], np.full(p, 0.2), np.full(p, 0.1)])
    m = mass_changes(z0, z1, kinds, p)
    assert m["frac_chosen_fell"] == 0.6
    assert m["d_log_chosen"] == pytest.approx(np.mean(np.log([1.0, 4 / 3, 2 / 3, 1 / 3, 0.25 / 0.3])), rel=1e-12)
    assert m["d_log_rejected"] == 0.0 and m["d_log_other_candidates"] == 0.0
    rest0, rest1 = 1 - 0.6, 1 - np.array([0.6, 0.7, 0.5, 0.4, 0.55])
    assert m["d_log_rest"] == pytest.approx(np.mean(np.log(rest1 / rest0)), rel=1e-12)


def test_mass_changes_and_squeezing_on_a_known_case():
    kinds = ("w", "w", "l", "l", "other", "other")
    z0 = np.log([0.5, 0.4, 0.2, 0.3, 0.1, 0.1])
    z1 = np.log([0.6, 0.2, 0.1, 0.3, 0.2, 0.1])
    m = mass_changes(z0, z1, kinds, 2)
    assert m["d_log_chosen"] == pytest.approx(np.mean(np.log([0.6 / 0.5, 0.2 / 0.4])))
    assert m["d_log_rest"] == pytest.approx(np.mean(np.log([0.1 / 0.2, 0.4 / 0.2])))
    assert m["frac_chosen_fell"] == 0.5
    from toy_lm.kernel import KernelRun

    c = np.zeros((6, 4))
    c[:, :2] = [[1, 0], [2, 1], [0, 1], [-1, 3], [0, 0], [3, -1]]  # the chosen rows' gradients
    c[:, 2:] = [[-1, 0], [0, 0], [-2, 0], [0, -2], [1, 0], [0, 3]]  # the rejected rows' gradients
    kr = KernelRun(z=np.zeros((2, 6)), delta=np.zeros((2, 2)), objective=np.zeros(2), own=np.zeros((1, 2)),
                   cross=np.zeros((1, 2)), influence=np.zeros((2, 2)), change_by_row=c, relinearised_at=[0])
    s = squeezing(kr, kinds, 2)
    # row sums: push (rejected columns) -1, 0, -2, -2, 1, 3; pull (chosen columns) 1, 3, 1, 2, 0, 2; rows 0-1 chosen,
    # 2-3 rejected, 4-5 other
    assert s == {"pushdown_on_chosen": -0.5, "pushdown_on_rejected": -2.0, "pushdown_on_other": 2.0,
                 "pullup_on_chosen": 2.0, "pullup_on_rejected": 1.5, "pullup_on_other": 1.0}


# ----------------------------------------------------------------------------------------------
# J


@pytest.fixture(scope="module")
def small_model_and_task():
    from toy_lm.config import LMConfig
    from toy_lm.task import make_task
    from toy_lm.train import build_model

    cfg = LMConfig(n_train_prompts=4, n_heldout_prompts=2, n_embd=8, n_head=2, n_layer=1)
    task = make_task(cfg, 3)
    model = build_model(task, cfg, 3, torch.device("cpu"))
    return model, task


def test_jacobian_matches_rowwise_autograd_and_finite_differences(small_model_and_task):
    import copy

    from toy_lm.model import sequence_logps

    model, task = small_model_and_task
    resp = task_responses(task)
    z, jac = logp_jacobian(model, resp)
    assert jac.shape == (resp.n, model.n_params())
    m64 = copy.deepcopy(model).double()
    rows = []
    for i in range(resp.n):
        out = sequence_logps(m64, resp.tokens[i:i + 1], resp.mask[i:i + 1]).sum[0]
        grads = torch.autograd.grad(out, list(m64.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    np.testing.assert_allclose(jac.numpy(), torch.stack(rows).numpy(), rtol=0, atol=1e-10)
    theta = flat_params(model)
    d = torch.randn(theta.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = 1e-6
    zs = []
    for sign in (1, -1):
        torch.nn.utils.vector_to_parameters(theta + sign * eps * d, m64.parameters())
        with torch.no_grad():
            zs.append(sequence_logps(m64, resp.tokens, resp.mask).sum)
    fd = (zs[0] - zs[1]) / (2 * eps)
    assert (fd - jac @ d).abs().max() < 1e-6 * max(1.0, (jac @ d).abs().max().item())
    # chunked rows are the same rows
    _, jac2 = logp_jacobian(model, resp, chunk=5)
    np.testing.assert_allclose(jac2.numpy(), jac.numpy(), rtol=0, atol=1e-12)


def test_per_row_jacobian_is_jacrev_of_the_batch(small_model_and_task):
    """J by vmap of per-row gradients is the Jacobian torch.func.jacrev takes of the whole batch (the former method,
    B times the work) to float64 rounding, and z is sequence_logps' own."""
    import copy

    from torch.func import functional_call, jacrev

    from toy_lm.model import sequence_logps

    model, task = small_model_and_task
    resp = task_responses(task)
    z, jac = logp_jacobian(model, resp)
    m64 = copy.deepcopy(model).double()
    for block in m64.blocks:
        block.fused_attention = False
    params = {k: v.detach() for k, v in m64.named_parameters()}

    def z_of(p):
        return sequence_logps(lambda x: functional_call(m64, p, (x,)), resp.tokens, resp.mask).sum

    full = jacrev(z_of)(params)
    ref = torch.cat([full[k].reshape(resp.n, -1) for k in params], dim=1)
    assert (jac - ref).abs().max().item() <= 1e-12 * ref.abs().max().item()
    with torch.no_grad():
        np.testing.assert_array_equal(z.numpy(), z_of(params).numpy())


def test_bad_input_is_one_clear_error():
    ref, q = _instances(p=2)
    with pytest.raises(ValueError, match="optimizer"):
        _linear("dpo", ref, q, "rmsprop", 0.1, 3, kernel=np.eye(4))
    with pytest.raises(ValueError, match="kernel must be"):
        _linear("dpo", ref, q, "sgd", 0.1, 3, kernel=np.eye(3))
    with pytest.raises(ValueError, match="Jacobian"):
        _linear("dpo", ref, q, "adam", 0.1, 3, kernel=np.eye(4))
    for bad_lr in (0.0, -1.0, float("nan"), float("inf")):  # lr must be finite and > 0; 0 would never move
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            _linear("dpo", ref, q, "sgd", bad_lr, 3, kernel=np.eye(4))
    with pytest.raises(ValueError, match="steps >= 0"):
        _linear("dpo", ref, q, "sgd", 0.1, -1, kernel=np.eye(4))
    with pytest.raises(ValueError, match="kernel or the Jacobian"):
        _linear("dpo", ref, q, "sgd", 0.1, 3)
    with pytest.raises(ValueError, match="at least 4"):
        _linear("dpo", ref, q, "sgd", 0.1, 3, kernel=np.eye(3), z0=np.zeros(3))
    common = dict(beta=1.5, params={}, q=q, ref_logp_w=ref[:, 0], ref_logp_l=ref[:, 1], z0=ref[:, :2].T.ravel(),
                  kernel=np.eye(4), optimizer="sgd", lr=0.1, steps=3, n_tokens=4)
    with pytest.raises(ValueError, match="together"):
        run_linearised("dpo", relinearise=lambda t: np.eye(4), **common)
    with pytest.raises(ValueError, match="relinearise_every must be >= 1"):
        run_linearised("dpo", relinearise=lambda t: np.eye(4), relinearise_every=0, **common)
    # the boundaries themselves are accepted: steps = 0 records only the start; a tiny lr > 0 runs
    run0 = _linear("dpo", ref, q, "sgd", 0.1, 0, kernel=np.eye(4))
    assert len(run0.objective) == 1
    np.testing.assert_array_equal(np.asarray(run0.z)[0], np.concatenate([ref[:, 0], ref[:, 1]]))
    assert len(_linear("dpo", ref, q, "sgd", 1e-300, 2, kernel=np.eye(4)).objective) == 3


# ----------------------------------------------------------------------------------------------
# Against a real (tiny) LM run


@pytest.fixture(scope="module")
def tiny_run():
    from toy_lm.config import LMConfig
    from toy_lm.kernel import linearise_seed
    from toy_lm.task import make_task
    from toy_lm.train import all_logps, train_reference

    cfg = LMConfig(n_train_prompts=6, n_heldout_prompts=2, n_embd=8, n_head=2, n_layer=1, sft_steps=30, steps=6)
    task = make_task(cfg, 1)
    ref = train_reference(task, cfg, 1, torch.device("cpu"))
    lp = all_logps(ref, task, torch.device("cpu"))
    return cfg, task, ref, lp, linearise_seed(ref, task)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_first_step_matches_the_lm_to_first_order(tiny_run, optimizer):
    """One LM step against one linearised step at the run's rule: the linear model is the LM's first-order Taylor
    expansion, so the first step's change of delta agrees up to second order in the step and the LM's float32
    rounding (measured: 0.3% at a tenth of the config's step; a factor 2 on eta or a dropped cross term is off by
    tens of percent)."""
    from toy_lm.kernel import predict_seed
    from toy_lm.train import train_preference

    cfg, task, ref, lp, lin = tiny_run
    c = cfg.replace(steps=1, sgd_lr=cfg.sgd_lr * 0.1, adam_lr=cfg.adam_lr * 0.1)
    rec = train_preference("dpo", task, ref, lp, c, 1, torch.device("cpu"), beta=1.0, optimizer=optimizer)
    kp = predict_seed("dpo", 1.0, optimizer, rec, task, ref, lp, c, 1, lin)
    obs = rec.delta_sum[1].astype(np.float64) - rec.delta_sum[0]
    pred = kp.linear_run.delta[1] - kp.linear_run.delta[0]
    assert np.abs(pred - obs).max() / np.abs(obs).max() < 0.02
    own_only = kp.linear_run.own[0]  # the tabular-like prediction without the cross share is far off
    assert np.abs(own_only - obs).max() / np.abs(obs).max() > 0.1


def test_relinearised_with_the_same_jacobian_is_the_plain_run(tiny_run):
    cfg, task, ref, lp, lin = tiny_run
    p = task.n_train
    tr = task.split("train")
    common = dict(beta=1.0, params={}, q=task.q_hat[tr], ref_logp_w=lin.z0[:p], ref_logp_l=lin.z0[p:2 * p],
                  z0=lin.z0, optimizer="adam", lr=1e-3, steps=6, n_tokens=task.response_tokens)
    plain = run_linearised("dpo", jacobian=lin.jacobian, **common)
    again = run_linearised("dpo", jacobian=lin.jacobian, relinearise=lambda t: lin.jacobian, relinearise_every=2, **common)
    assert again.relinearised_at == [0, 2, 4]
    np.testing.assert_allclose(again.z, plain.z, rtol=0, atol=1e-12)


def test_relinearised_tracks_the_lm_closer(tiny_run):
    """Re-linearising every step at the LM's own parameters follows the LM more closely than the fixed kernel."""
    from toy_lm.kernel import predict_seed
    from toy_lm.train import train_preference

    cfg, task, ref, lp, lin = tiny_run
    c = cfg.replace(steps=6, adam_lr=3e-2)
    rec = train_preference("dpo", task, ref, lp, c, 1, torch.device("cpu"), beta=1.0, optimizer="adam")
    kp = predict_seed("dpo", 1.0, "adam", rec, task, ref, lp, c, 1, lin, relinearise_every=1)
    obs = rec.delta_sum.astype(np.float64)
    err_plain = np.abs(kp.linear_run.delta - obs).max()
    err_relin = np.abs(kp.relin_run.delta - obs).max()
    assert kp.relin_run.relinearised_at == [0, 1, 2, 3, 4, 5]
    assert err_relin < err_plain, (err_relin, err_plain)


def test_comparison_censors_a_pair_the_lm_never_moved_out_of_U_at_steps_plus_one():
    """kernel.comparison's crossing steps, by hand on a 4-step record with three misranked pairs (delta_ref = -1):
    pair 0 first has delta > 0 at step 2, pair 1 at the last step (4), pair 2 never. Both the LM's and the
    linearised crossing steps must be 2, 4 and 5 = steps + 1 (the censor time_in_U_fits reads as "still in U"), so
    the never-crossing pair is the only censored one. An LM censor of steps (a survivor of mutation) gave obs_cross
    [2, 4, 4]: the pair that stayed in U read as leaving it at the last step, uncensored in the time-in-U slope."""
    from types import SimpleNamespace

    from toy_lm.kernel import KernelRun, comparison
    from toy_lm.stage import time_in_U_fits

    steps = 4
    delta_ref = np.array([-1.0, -1.0, -1.0])
    traj = np.array([[-1.0, -1.0, -1.0], [-0.5, -0.8, -0.9], [0.2, -0.5, -0.8], [0.5, -0.1, -0.7],
                     [0.9, 0.1, -0.6]])
    kr = KernelRun(z=np.zeros((steps + 1, 6)), delta=traj.copy(), objective=np.linspace(1.0, 0.5, steps + 1),
                   own=np.zeros((steps, 3)), cross=np.zeros((steps, 3)), influence=np.zeros((3, 3)),
                   change_by_row=np.zeros((6, 6)), relinearised_at=[0])
    rec = SimpleNamespace(objective=np.linspace(1.0, 0.4, steps + 1), delta_sum=traj.astype(np.float32),
                          in_U=(delta_ref < traj) & (traj < 0))
    c = comparison(kr, rec, delta_ref)
    assert c.pred_cross.tolist() == [2, 4, 5]
    assert c.obs_cross.tolist() == [2, 4, 5]
    tf = time_in_U_fits(np.ones(3), c.obs_cross.astype(float), c.pred_cross.astype(float), np.zeros(3, int),
                        steps + 1)
    assert tf["lm_censored"].tolist() == [False, False, True]
    assert tf["pred_censored"].tolist() == [False, False, True]


def test_task_responses_tracks_each_train_prompts_other_candidates_once(small_model_and_task):
    """task_responses' row layout, checked against the task's own token table: P chosen, P rejected, then one row
    per train prompt for each candidate j = 2..K-1 (never y_w = 0 or y_l = 1 again), then the Q held-out pairs.
    The "other" rows feed the documented squeezing numbers (pushdown_on_other, pullup_on_other) and the mass
    changes; starting the loop at candidate 1 (a survivor of mutation) tracked every y_l a second time as an
    "other" candidate and moved pushdown_on_other from -0.081 to -0.121 on a 6-prompt run, no verdict changing."""
    from toy_lm.kernel import task_responses
    from toy_lm.task import L, W

    _, task = small_model_and_task
    tr = np.arange(task.n_prompts)[task.split("train")]
    ho = np.arange(task.n_prompts)[task.split("heldout")]
    p, q, k = len(tr), len(ho), task.tokens.shape[1]
    assert k >= 3 and p == task.n_train
    r = task_responses(task)
    kinds = list(r.kinds)
    assert r.n == 2 * p + (k - 2) * p + 2 * q
    assert kinds == ["w"] * p + ["l"] * p + ["other"] * ((k - 2) * p) + ["ho_w"] * q + ["ho_l"] * q
    expected = [task.tokens[i, W] for i in tr] + [task.tokens[i, L] for i in tr]
    expected += [task.tokens[i, j] for j in range(2, k) for i in tr]
    expected += [task.tokens[i, W] for i in ho] + [task.tokens[i, L] for i in ho]
    for row, want in zip(r.tokens, expected):
        assert torch.equal(row, want)
    others = np.flatnonzero(np.array(kinds) == "other")
    for b in others:  # an "other" row is neither the chosen nor the rejected response of its prompt
        i = tr[r.prompt[b]]
        assert not torch.equal(r.tokens[b], task.tokens[i, W]) and not torch.equal(r.tokens[b], task.tokens[i, L])


def test_task_responses_label_every_row_once_with_its_prompt(small_model_and_task):
    """kinds and prompt have one entry per tracked row: 2P train rows, (K - 2) P other candidates, then the held-out
    pairs' chosen and rejected, n_prompts - P of each, labelled with prompts P..n_prompts-1 (by hand for 4 train and 2
    held-out prompts). A wrong held-out count made kinds and prompt longer than the rows, so mass_changes raised and
    describe() silently dropped mass_linear (a survivor of mutation)."""
    _, task = small_model_and_task
    resp = task_responses(task)
    p, k = 4, task.tokens.shape[1]
    n = 2 * p + (k - 2) * p + 2 * 2
    assert resp.n == n and len(resp.kinds) == n and len(resp.prompt) == n
    assert resp.kinds[-4:] == ("ho_w", "ho_w", "ho_l", "ho_l")
    assert list(resp.prompt[-4:]) == [4, 5, 4, 5]
