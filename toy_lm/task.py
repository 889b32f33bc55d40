"""The synthetic preference task with a known ground truth (docs/theory.md §12).

Each prompt is a short sequence of prompt tokens; it has ``n_candidates`` candidate responses
of ``response_len`` content tokens, taken from one pool of ``n_responses`` responses shared by
all prompts (distinct first tokens). The ground-truth reward counts "good" tokens:
``r(y) = reward_scale * #good(y)``. Candidate 0 is ``y_w`` and candidate 1 is ``y_l``; ``y_w``
has exactly one more good token, so the reward gap is ``dr = reward_scale`` for every pair.

The reference's SFT corpus gives each prompt's candidates frequencies ``f``: the pair shares
``pair_mass`` with ``|log f(y_w)/f(y_l)|`` drawn uniformly from ``ref_log_ratio``; on a
``violated_fraction`` of prompts the *dispreferred* ``y_l`` is the more frequent one. The other
candidates share the rest equally. The reference trained on this corpus therefore favours
``y_l`` on those prompts by an amount the corpus controls and ``delta_ref`` measures.

Held-out prompts are drawn the same way (same kinds, same fraction); they are in the SFT
corpus but never in preference training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from toy_lm.config import LMConfig
from toy_lm.model import BOS, EOS, N_SPECIAL, PAD, SEP

W, L = 0, 1  # candidate indices of y_w and y_l


@dataclass(frozen=True)
class Task:
    """One drawn task. N = n_train + n_heldout prompts, K candidates, S = padded sequence length.

    tokens: (N, K, S) int64 sequences [BOS] prompt [SEP] response [EOS] [PAD ...].
    response_mask: (N, K, S) bool, True on response tokens and EOS.
    corpus_freq: (N, K) SFT corpus frequencies (rows sum to 1).
    designed_log_ratio: (N,) log f(y_w) / f(y_l) of the corpus (what delta_ref should approach).
    violated: (N,) bool, the corpus favours y_l.
    reward: (N, K) ground-truth reward; dr: (N,) r(y_w) - r(y_l) (> 0).
    q_hat: (N,) fraction of ``bt_n_labels`` Bradley-Terry labels sigma(dr) that chose y_w.
    n_train: the first n_train prompts are trained on, the rest are held out.
    vocab_size, block_size, response_tokens (= response_len + 1, EOS included).
    """

    tokens: torch.Tensor
    response_mask: torch.Tensor
    corpus_freq: np.ndarray
    designed_log_ratio: np.ndarray
    violated: np.ndarray
    reward: np.ndarray
    dr: np.ndarray
    q_hat: np.ndarray
    n_train: int
    vocab_size: int
    block_size: int
    response_tokens: int

    @property
    def n_prompts(self) -> int:
        return self.tokens.shape[0]

    def split(self, which: str) -> slice:
        """Prompt indices of "train" or "heldout"."""
        if which == "train":
            return slice(0, self.n_train)
        if which == "heldout":
            return slice(self.n_train, self.n_prompts)
        raise ValueError(f"split must be 'train' or 'heldout', got {which!r}")


def _draw_prompts(rng: np.random.Generator, cfg: LMConfig, n: int) -> list[tuple[int, ...]]:
    seen: set[tuple[int, ...]] = set()
    prompts = []
    pmin, pmax = cfg.prompt_len
    while len(prompts) < n:
        length = int(rng.integers(pmin, pmax + 1))
        prompt = tuple(int(t) for t in N_SPECIAL + rng.integers(0, cfg.n_prompt_tokens, size=length))
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts


def _draw_pool(rng: np.random.Generator, cfg: LMConfig) -> list[tuple[int, ...]]:
    """``n_responses`` distinct responses with distinct first tokens and every good-token count 0..len."""
    good0 = N_SPECIAL + cfg.n_prompt_tokens
    bad0 = good0 + cfg.n_good_tokens
    counts = [c % (cfg.response_len + 1) for c in range(cfg.n_responses)]  # every count at least once
    pool: list[tuple[int, ...]] = []
    firsts: set[int] = set()
    for n_good in counts:
        while True:
            toks = [good0 + int(rng.integers(cfg.n_good_tokens)) for _ in range(n_good)]
            toks += [bad0 + int(rng.integers(cfg.n_bad_tokens)) for _ in range(cfg.response_len - n_good)]
            cand = tuple(int(t) for t in rng.permutation(toks))
            if cand[0] not in firsts:
                firsts.add(cand[0])
                pool.append(cand)
                break
    return pool


def make_task(cfg: LMConfig, seed: int) -> Task:
    """Draw prompts, candidates, corpus frequencies and BT labels, all from ``seed``."""
    rng = np.random.default_rng(seed)
    n = cfg.n_train_prompts + cfg.n_heldout_prompts
    k, length = cfg.n_candidates, cfg.response_len
    prompts = _draw_prompts(rng, cfg, n)
    good0 = N_SPECIAL + cfg.n_prompt_tokens
    vocab_size = good0 + cfg.n_good_tokens + cfg.n_bad_tokens
    block_size = 1 + cfg.prompt_len[1] + 1 + length + 1

    # Kinds: exactly round(violated_fraction * n) prompts of each split favour y_l in the corpus.
    violated = np.zeros(n, dtype=bool)
    for lo, hi in ((0, cfg.n_train_prompts), (cfg.n_train_prompts, n)):
        n_viol = int(round(cfg.violated_fraction * (hi - lo)))
        violated[lo + rng.permutation(hi - lo)[:n_viol]] = True
    magnitude = rng.uniform(*cfg.ref_log_ratio, size=n)
    designed = np.where(violated, -magnitude, magnitude)

    tokens = torch.full((n, k, block_size), PAD, dtype=torch.int64)
    mask = torch.zeros((n, k, block_size), dtype=torch.bool)
    reward = np.zeros((n, k))
    freq = np.zeros((n, k))
    pool = _draw_pool(rng, cfg)
    n_good = np.array([sum(good0 <= t < good0 + cfg.n_good_tokens for t in y) for y in pool])
    for i, prompt in enumerate(prompts):
        g = int(rng.integers(0, length))  # y_l has g good tokens (0 .. length-1), y_w has g + 1
        w = int(rng.choice(np.flatnonzero(n_good == g + 1)))
        l = int(rng.choice(np.flatnonzero(n_good == g)))
        others = [j for j in rng.permutation(len(pool)) if j not in (w, l)][: k - 2]
        cands = [pool[j] for j in (w, l, *others)]
        # f(y_w) / f(y_l) = exp(designed), together pair_mass; log space via a logistic split.
        p_w = 1.0 / (1.0 + np.exp(-designed[i]))
        freq[i, W], freq[i, L] = cfg.pair_mass * p_w, cfg.pair_mass * (1 - p_w)
        if k > 2:
            freq[i, 2:] = (1 - cfg.pair_mass) / (k - 2)
        for j, cand in enumerate(cands):
            seq = (BOS, *prompt, SEP, *cand, EOS)
            tokens[i, j, : len(seq)] = torch.tensor(seq)
            mask[i, j, len(prompt) + 2 : len(seq)] = True  # the response and its EOS
            reward[i, j] = cfg.reward_scale * sum(good0 <= t < good0 + cfg.n_good_tokens for t in cand)
    dr = reward[:, W] - reward[:, L]
    # Bradley-Terry labels: y_w wins with probability sigma(dr); q_hat is the sampled frequency.
    q = 1.0 / (1.0 + np.exp(-dr))
    q_hat = (rng.random((n, cfg.bt_n_labels)) < q[:, None]).mean(axis=1)
    return Task(tokens=tokens, response_mask=mask, corpus_freq=freq, designed_log_ratio=designed,
                violated=violated, reward=reward, dr=dr, q_hat=q_hat, n_train=cfg.n_train_prompts,
                vocab_size=vocab_size, block_size=block_size, response_tokens=length + 1)
