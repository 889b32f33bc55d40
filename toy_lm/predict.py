"""The toy theory's prediction of an LM run, and its comparison with what the run did.

Prediction. Each train prompt becomes one tabular instance: ``pi_ref`` is the trained
reference's distribution over the prompt's candidates (its summed sequence log-probabilities,
renormalised over the candidates) and the pair is (y_w, y_l). :func:`toy_bandits.dynamics.train_tabular`
runs plain gradient descent with the method's loss, ``beta`` and parameters, ordered labels
(``labels="bt"`` with the sampled label frequency ``q_hat`` for the "*_bt" methods).
cpo_easy is trained on per-token mean log-probabilities; with every response of length n
(content + EOS), cpo_easy on means with (beta, gamma) is exactly cpo_easy on sums with
(beta / n, gamma * n), and its margin m on means is n * m on sums, which is what the tabular run uses.

Clock. Tabular steps and LM steps are different clocks. They are matched by the mean training
objective: LM step t corresponds to the first tabular step whose mean objective is <= the LM's
mean objective at t (the running minimum, so the map is monotone). The map uses one aggregate
number per step and nothing per pair. When the LM reaches a lower objective than the tabular run
does within its horizon, the clock saturates at the horizon; this is reported (``clock_saturated``).

Comparison, per pair of the train split: predicted and observed sign of delta at the end
(confusion table and agreement), membership of U at the end, and the crossing order: the first
LM step at which delta > 0, for the pairs the reference misranks (delta_ref < 0); a pair that
does not cross by the end is censored at steps + 1 on both sides; Spearman and Kendall rank
correlations of predicted against observed crossing steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from dpo_rlhf_checks.losses import get_loss
from toy_bandits.dynamics import train_tabular
from toy_lm.config import BT_METHODS, LMConfig
from toy_lm.model import SeqLogps
from toy_lm.task import L, W, Task
from toy_lm.train import RunRecord, uses_mean


@dataclass
class Comparison:
    """Predicted against observed for one run (P train pairs, S LM steps, T tabular steps).

    tab_objective: (T,) tabular mean objective; tab_delta: (T, P) tabular delta (summed).
    clock: (S,) tabular step matched to each LM step. clock_saturated: the LM ended below the
    tabular horizon's objective. pred_delta, obs_delta: (P,) at the end (summed).
    pred_cross, obs_cross: (P,) first LM step with delta > 0 (steps + 1 when it never happens; 0 for
    pairs that start aligned). violated: (P,) delta_ref < 0 under the trained reference.
    """

    tab_objective: np.ndarray
    tab_delta: np.ndarray
    clock: np.ndarray
    clock_saturated: bool
    delta_ref: np.ndarray  # (P,) the LM reference's (float32 arithmetic)
    tab_delta_ref: np.ndarray  # (P,) the same in the tabular run (float64; equal up to rounding)
    pred_delta: np.ndarray
    obs_delta: np.ndarray
    pred_cross: np.ndarray
    obs_cross: np.ndarray
    violated: np.ndarray

    @property
    def predicted_frac_in_U(self) -> float:
        return float(np.mean((self.tab_delta_ref < self.pred_delta) & (self.pred_delta < 0)))

    @property
    def observed_frac_in_U(self) -> float:
        return float(np.mean((self.delta_ref < self.obs_delta) & (self.obs_delta < 0)))

    @property
    def confusion(self) -> dict[str, int]:
        """Counts of (predicted, observed) aligned (delta > 0) / misaligned at the end."""
        p, o = self.pred_delta > 0, self.obs_delta > 0
        return {"pred_aligned_obs_aligned": int(np.sum(p & o)), "pred_aligned_obs_misaligned": int(np.sum(p & ~o)),
                "pred_misaligned_obs_aligned": int(np.sum(~p & o)),
                "pred_misaligned_obs_misaligned": int(np.sum(~p & ~o))}

    @property
    def agreement(self) -> float:
        """Fraction of pairs whose predicted and observed sign of delta agree at the end."""
        return float(np.mean((self.pred_delta > 0) == (self.obs_delta > 0)))

    def rank_correlation(self) -> dict[str, float]:
        """Spearman and Kendall of crossing steps over the misranked pairs (nan when one side is constant)."""
        v = self.violated
        pred, obs = self.pred_cross[v], self.obs_cross[v]
        if v.sum() < 3 or np.all(pred == pred[0]) or np.all(obs == obs[0]):
            return {"spearman": math.nan, "kendall": math.nan, "n_pairs": int(v.sum())}
        return {"spearman": float(spearmanr(pred, obs).statistic), "kendall": float(kendalltau(pred, obs).statistic),
                "n_pairs": int(v.sum())}


def tabular_reference(ref_logps: SeqLogps, task: Task) -> np.ndarray:
    """(P, K) the reference's distribution over each train prompt's candidates (renormalised, float64)."""
    logp = ref_logps.sum[task.split("train")].double()
    return torch.softmax(logp, dim=1).numpy()


def _bt_objective(loss_name: str, delta: np.ndarray, delta_ref: np.ndarray, q: np.ndarray, beta: float,
                  params: dict) -> np.ndarray:
    """Mean BT-labelled objective (T,) ``q l(w, l) + (1 - q) l(l, w)`` from deltas (T, P), via the loss module.

    For dpo, cpo_clip and cpo_smooth the loss depends on the log-probabilities only through delta and
    delta_ref, so any log-probabilities with these differences give the same value:
    chosen = -relu(-delta), rejected = -relu(delta) (both <= 0, difference delta).
    """
    d = torch.as_tensor(delta)
    dr = torch.as_tensor(np.broadcast_to(delta_ref, delta.shape).copy())
    qt = torch.as_tensor(np.broadcast_to(q, delta.shape).copy())
    loss = get_loss(loss_name)
    pc, pr, rc, rr = -torch.relu(-d), -torch.relu(d), -torch.relu(-dr), -torch.relu(dr)
    forward = loss(pc, pr, rc, rr, beta=beta, **params).losses
    backward = loss(pr, pc, rr, rc, beta=beta, **params).losses
    return (qt * forward + (1 - qt) * backward).mean(dim=1).numpy()


def _first_crossing(delta: np.ndarray, censor: int) -> np.ndarray:
    """(P,) first index t with delta[t] > 0, ``censor`` where there is none. delta: (S, P)."""
    pos = delta > 0
    return np.where(pos.any(axis=0), pos.argmax(axis=0), censor)


def predict(method: str, record: RunRecord, ref_logps: SeqLogps, task: Task, cfg: LMConfig) -> Comparison:
    """Run the tabular theory for ``method`` and compare it with the LM run ``record``."""
    pi_ref = tabular_reference(ref_logps, task)
    n_pairs = pi_ref.shape[0]
    pairs = np.tile(np.array([[[W, L]]]), (n_pairs, 1, 1))  # (P, 1, 2)
    params = dict(cfg.loss_params(method))
    beta, margin = cfg.beta, cfg.margin
    if uses_mean(method):
        n = task.response_tokens
        beta, margin, params["gamma"] = beta / n, margin * n, params["gamma"] * n
    loss_name, labels, q = method, "ordered", None
    q_train = task.q_hat[task.split("train")]
    if method in BT_METHODS:
        loss_name, labels, q = BT_METHODS[method], "bt", q_train[:, None]
    if loss_name == "cpo_clip" and params["margin"] != margin:
        # train_tabular has one margin for cpo_clip: its target max(delta_ref, margin) and the certificate level.
        raise ValueError("the tabular prediction of cpo_clip needs its loss margin equal to the certificate margin; "
                         f"got loss margin {params['margin']} and certificate margin {margin}")
    params.pop("margin", None)
    traj = train_tabular(pi_ref, pairs, loss_name, beta=beta, steps=cfg.tabular_steps, lr=cfg.tabular_lr,
                         labels=labels, q=q, margin=margin, **params)
    tab_delta = traj.delta[:, :, 0]  # (T, P)
    delta_ref_tab = traj.delta_ref[:, 0]
    if method in BT_METHODS:
        tab_obj = _bt_objective(loss_name, tab_delta, delta_ref_tab, q_train, beta, params)
    else:
        tab_obj = traj.loss[:, :, 0].mean(axis=1)
    # Monotone clock: first tabular step whose running-min objective is <= the LM's objective.
    running = np.minimum.accumulate(tab_obj)
    lm_obj = np.minimum.accumulate(record.objective)
    clock = np.searchsorted(-running, -lm_obj, side="left")  # running is non-increasing
    saturated = bool(clock[-1] >= len(running))
    clock = np.minimum(clock, len(running) - 1)
    steps = len(record.objective) - 1
    tab_cross = _first_crossing(tab_delta, censor=len(running))  # tabular steps
    # A tabular crossing step maps to the first LM step whose clock reaches it.
    pred_cross = np.searchsorted(clock, tab_cross, side="left")
    pred_cross = np.where(pred_cross > steps, steps + 1, pred_cross)
    delta_ref = (ref_logps.sum[task.split("train"), W] - ref_logps.sum[task.split("train"), L]).numpy()
    return Comparison(
        tab_objective=tab_obj, tab_delta=tab_delta, clock=clock, clock_saturated=saturated,
        delta_ref=delta_ref, tab_delta_ref=delta_ref_tab, pred_delta=tab_delta[clock[-1]], obs_delta=record.delta_sum[-1],
        pred_cross=pred_cross, obs_cross=_first_crossing(record.delta_sum, censor=steps + 1),
        violated=delta_ref < 0,
    )
