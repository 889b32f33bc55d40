"""A small causal transformer (nanoGPT style) and sequence log-probabilities of responses.

Sequences are laid out as ``[BOS] prompt [SEP] response [EOS] [PAD ...]`` and right-padded,
so with causal attention no real position ever attends to padding and no attention mask is
needed; padding is excluded from the log-probabilities by the response mask.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor

PAD, BOS, SEP, EOS = 0, 1, 2, 3
N_SPECIAL = 4


def resolve_device(device: str) -> torch.device:
    """"auto" (cuda when available, else cpu), "cpu" or "cuda"; anything else is a ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
        return torch.device("cuda")
    raise ValueError(f"device must be one of ('auto', 'cpu', 'cuda'), got {device!r}")


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention then an MLP, each with a residual."""

    fused_attention = True  # False on the stacked copy of seed replicas (toy_lm.train.train_preference_batched)

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.qkv(self.ln_1(x)).split(c, dim=2)
        # (B, n_head, T, C / n_head)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        if self.fused_attention:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # the same causal softmax attention written out: torch.func.vmap batches it (it has no rule for the fused one)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, n_head, T, T)
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            att = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ v
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """Token and position embeddings, ``n_layer`` blocks, final LayerNorm, tied output head."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) int64 -> logits (B, T, V); position t predicts token t + 1."""
        b, t = tokens.shape
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.block_size}")
        pos = torch.arange(t, device=tokens.device)
        x = self.wte(tokens) + self.wpe(pos)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # (B, T, V), weights tied with the embedding

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class SeqLogps(NamedTuple):
    """Per sequence (B,): summed response log-probability, per-token mean, and the response length."""

    sum: Tensor
    mean: Tensor
    length: Tensor


def sequence_logps(model: nn.Module, tokens: Tensor, response_mask: Tensor) -> SeqLogps:
    """Log-probability of each sequence's response given its prompt, summed and per-token mean.

    tokens: (B, T) int64. response_mask: (B, T) bool, True on the response tokens (EOS included),
    never on position 0 and never on padding. One forward pass gives both numbers.
    log pi(y | x) = sum_t mask[t] log p(tokens[t] | tokens[:t]); mean = sum / (number of masked tokens).
    """
    if tokens.shape != response_mask.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and response_mask {tuple(response_mask.shape)} differ")
    if response_mask[:, 0].any():
        raise ValueError("response_mask must be False at position 0 (nothing predicts the first token)")
    length = response_mask.sum(dim=1)  # (B,)
    if (length == 0).any():
        raise ValueError("every sequence needs at least one response token")
    logits = model(tokens[:, :-1])  # (B, T-1, V): position t predicts token t + 1
    total = response_logp_sum(logits, tokens, response_mask)
    return SeqLogps(total, total / length.to(total.dtype), length)


def response_logp_sum(logits: Tensor, tokens: Tensor, response_mask: Tensor) -> Tensor:
    """(B,) summed log-probability of each sequence's response from the model's logits (B, T-1, V) of
    ``tokens[:, :-1]``; the computation of :func:`sequence_logps`, without its input checks (which branch on
    values), so that torch.func.vmap can batch it (the per-row Jacobian, toy_lm/kernel.py). Callers validate."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # half-precision logits lose the small differences delta is made of
    # log_softmax + gather, never log(softmax): stable for any logit scale.
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, T-1)
    mask = response_mask[:, 1:].to(token_logps.dtype)
    return (token_logps * mask).sum(dim=1)  # padding and prompt contribute exactly 0
