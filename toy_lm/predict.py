"""The toy theory's prediction of an LM cell, and its comparison with what the runs did (docs/theory.md §12, §14).

Prediction. :func:`toy_lm.tabular.run_tabular` trains one tabular instance per train prompt, from the
reference's own absolute log-probabilities, with the run's loss, labels, beta and optimizer rule (SGD or
Adam), all seeds of the cell in one batch.

Clock. Tabular steps and LM steps are different clocks. They are matched by the mean training
objective, per seed: LM step t corresponds to the first tabular step whose running-min mean objective
is <= the LM's running-min objective at t. The map uses one aggregate number per step and nothing per
pair. The tabular run is extended until it reaches the LM's final objective; when it has not by
``tabular_max_steps``, the clock saturates and the cell is *not compared* (a saturated clock pins the
prediction at an arbitrary horizon, so its agreement would test nothing).

Comparison, per pair of the train split: membership of U at the end (predicted at the matched time
against observed), the sign of delta, and the crossing step (first LM step with delta > 0; steps + 1 when
never). A cell is also not compared when it is *trivial*: predicted and observed fractions in U both 0
and no pair in U at any step of either run (nothing could have come out otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toy_lm.config import LMConfig
from toy_lm.model import SeqLogps
from toy_lm.tabular import run_tabular
from toy_lm.task import L, W, Task
from toy_lm.train import RunRecord, uses_mean


@dataclass
class Comparison:
    """Predicted against observed for one seed of one cell and method (P train pairs, S = steps + 1 LM steps).

    clock: (S,) tabular step matched to each LM step. clock_saturated: the LM ended below every objective the
    tabular run reached within its horizon. delta_ref: (P,) the reference's (summed). pred_delta, obs_delta:
    (P,) at the end (summed). pred_in_U_max, obs_in_U_max: the largest fraction of pairs in U at any step up to
    the end (tabular up to the matched step). pred_cross, obs_cross: (P,) first LM step with delta > 0.
    tab_final_objective: the tabular objective at its horizon; lm_final_objective: the LM's running minimum.
    n_tokens: tokens per response (cpo_easy's delta is the summed one over n_tokens).
    """

    clock: np.ndarray
    clock_saturated: bool
    delta_ref: np.ndarray
    pred_delta: np.ndarray
    obs_delta: np.ndarray
    pred_in_U_max: float
    obs_in_U_max: float
    pred_cross: np.ndarray
    obs_cross: np.ndarray
    tab_final_objective: float
    lm_final_objective: float

    @property
    def violated(self) -> np.ndarray:
        return self.delta_ref < 0

    @property
    def pred_in_U(self) -> np.ndarray:
        return (self.delta_ref < self.pred_delta) & (self.pred_delta < 0)

    @property
    def obs_in_U(self) -> np.ndarray:
        return (self.delta_ref < self.obs_delta) & (self.obs_delta < 0)

    @property
    def predicted_frac_in_U(self) -> float:
        return float(self.pred_in_U.mean())

    @property
    def observed_frac_in_U(self) -> float:
        return float(self.obs_in_U.mean())

    @property
    def agreement(self) -> float:
        """Fraction of pairs whose predicted and observed membership of U at the end agree."""
        return float(np.mean(self.pred_in_U == self.obs_in_U))

    @property
    def sign_agreement(self) -> float:
        """Fraction of pairs whose predicted and observed sign of delta agree at the end."""
        return float(np.mean((self.pred_delta > 0) == (self.obs_delta > 0)))


def _first_crossing(delta: np.ndarray, censor: int) -> np.ndarray:
    """(P,) first index t with delta[t] > 0, ``censor`` where there is none. delta: (S, P)."""
    pos = delta > 0
    return np.where(pos.any(axis=0), pos.argmax(axis=0), censor)


def predict_cell(method: str, beta: float, optimizer: str, runs: list[tuple[RunRecord, SeqLogps, Task]],
                 cfg: LMConfig, pair_loss=None, tabular_lr: float | None = None) -> list[Comparison]:
    """The tabular prediction of ``method`` in one cell, one :class:`Comparison` per seed run (record, ref, task).

    pair_loss, tabular_lr: None (``method``'s loss and ``cfg.tabular_lr``), or a loss callable for
    :func:`toy_lm.tabular.run_tabular` over the runs' train pairs in order and its step size (the U-atlas,
    toy_lm/atlas_lm.py)."""
    refs, qs, groups, stops = [], [], [], []
    for g, (rec, lp, task) in enumerate(runs):
        tr = task.split("train")
        refs.append(lp.sum[tr].double().numpy())
        qs.append(task.q_hat[tr])
        groups.append(np.full(task.n_train, g))
        stops.append(np.min(rec.objective))
    n_tokens = runs[0][2].response_tokens
    own = pair_loss is None
    if not own and tabular_lr is None:
        raise ValueError("predict_cell with a pair_loss needs its tabular_lr")
    tab = run_tabular(method, np.concatenate(refs), n_tokens=n_tokens, beta=beta,
                      params=cfg.loss_params(method) if own else {}, q=np.concatenate(qs), optimizer=optimizer,
                      lr=cfg.tabular_lr(optimizer, beta, method) if own else tabular_lr,
                      groups=np.concatenate(groups), stop_objective=np.asarray(stops),
                      max_steps=cfg.tabular_max_steps, pair_loss=pair_loss)
    out, start = [], 0
    for g, (rec, lp, task) in enumerate(runs):
        p = task.n_train
        tab_obj = tab.objective[:, g]
        tab_delta = tab.delta[:, start:start + p]
        start += p
        running = np.minimum.accumulate(tab_obj)
        lm_obj = np.minimum.accumulate(rec.objective)
        clock = np.searchsorted(-running, -lm_obj, side="left")  # running is non-increasing
        saturated = bool(clock[-1] >= len(running))
        clock = np.minimum(clock, len(running) - 1)
        steps = len(rec.objective) - 1
        tab_cross = _first_crossing(tab_delta, censor=len(running))
        pred_cross = np.searchsorted(clock, tab_cross, side="left")  # first LM step whose clock reaches it
        pred_cross = np.where(pred_cross > steps, steps + 1, pred_cross)
        tr = task.split("train")
        delta_ref = (lp.sum[tr, W] - lp.sum[tr, L]).double().numpy()
        upto = tab_delta[: clock[-1] + 1]
        pred_u = ((delta_ref < upto) & (upto < 0)).mean(axis=1).max()
        out.append(Comparison(
            clock=clock, clock_saturated=saturated, delta_ref=delta_ref, pred_delta=tab_delta[clock[-1]],
            obs_delta=rec.delta_sum[-1].astype(np.float64), pred_in_U_max=float(pred_u),
            obs_in_U_max=float(rec.in_U.mean(axis=1).max()), pred_cross=pred_cross,
            obs_cross=_first_crossing(rec.delta_sum, censor=steps + 1),
            tab_final_objective=float(running[-1]), lm_final_objective=float(lm_obj[-1])))
    return out


def compare_cell(comparisons: list[Comparison], tol: float) -> dict:
    """Whether a cell's prediction is a genuine test, and if so whether it agrees.

    Returns {"compared", "reason_not_compared", "predicted_frac_in_U", "observed_frac_in_U", "agreement",
    "within_tol"}: fractions are means over seeds; agreement is the mean per-pair agreement of U membership
    (None when not compared); within_tol: |predicted - observed| <= tol (None when not compared).
    """
    pred = float(np.mean([c.predicted_frac_in_U for c in comparisons]))
    obs = float(np.mean([c.observed_frac_in_U for c in comparisons]))
    saturated = [i for i, c in enumerate(comparisons) if c.clock_saturated]
    reason = None
    if saturated:
        c = comparisons[saturated[0]]
        reason = (f"clock saturated in {len(saturated)} of {len(comparisons)} seeds: the LM reached objective "
                  f"{c.lm_final_objective:.3g}, the tabular run only {c.tab_final_objective:.3g} within its horizon")
    elif not any(c.violated.any() for c in comparisons):
        reason = "trivial: no train pair is misranked by the reference, so U is empty"
    elif pred == 0 and obs == 0 and all(c.pred_in_U_max == 0 and c.obs_in_U_max == 0 for c in comparisons):
        reason = "trivial: predicted and observed fraction in U are 0 and no pair entered U at any step of either run"
    compared = reason is None
    agreement = float(np.mean([c.agreement for c in comparisons])) if compared else None
    return {"compared": compared, "reason_not_compared": reason, "predicted_frac_in_U": pred,
            "observed_frac_in_U": obs, "agreement": agreement,
            "within_tol": (abs(pred - obs) <= tol) if compared else None}


def own_delta(delta_sum: np.ndarray, method: str, n_tokens: int) -> np.ndarray:
    """The delta a method's loss reads: per-token mean for cpo_easy (equal lengths: sum / n_tokens), else summed."""
    return delta_sum / n_tokens if uses_mean(method) else delta_sum

