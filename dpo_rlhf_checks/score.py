"""Score a preference data set with a causal LM: ``python paper_checks.py score --model M --data F --out PAIRS.jsonl``.

From a model and a data set to the per-pair log-probabilities ``audit`` reads (docs/theory.md §2, §6, §7):

    --model M                      the reference (alone), or the policy (with --ref-model)
    --ref-model R                  the reference; then the output has the policy's columns as well
    --reward-model RM              a sequence-classification model with one output: chosen_reward, rejected_reward

Data: JSON Lines (one object per line) or a local Hugging Face ``datasets`` folder (``save_to_disk``),
in TRL's preference format: ``prompt``, ``chosen``, ``rejected`` (or, TRL's implicit-prompt format,
only ``chosen`` and ``rejected``, whose common prefix is the prompt, as TRL extracts it) as strings,
or conversational (lists of ``{"role", "content"}`` messages, rendered with the tokenizer's chat
template; a row's ``tools`` and ``chat_template_kwargs`` columns go to the template, as in TRL). A bad
row (missing field, wrong type, a completion that tokenizes to nothing) is an error naming the row;
exit code 2. Rows TRL keeps or drops, score keeps or drops, and counts (integrity flags): a row whose
prompt alone fills ``--max-length`` under keep_start is dropped (the output skips its pair number); an
empty completion is scored (TRL's EOS, or the template's closing tokens). ``--strict`` makes either an
error naming the row.

Under ``accelerate launch`` (more than one process) each process scores every W-th length-sorted
batch and the main process writes one output, in data order, equal to a one-process run (the same
batches, so the same numbers). Out of memory halves the batch and retries (accelerate's
``find_executable_batch_size`` rule, see :func:`run_batched`). ``--device-map auto`` spreads a model
too large for one device (accelerate's big-model loading). Long runs write as they go (``--chunk-pairs``)
and ``--resume`` continues an interrupted one to a byte-identical file.

Tokenization is TRL's ``DPOTrainer``'s (TRL 1.16, ``DPOTrainer._prepare_dataset`` and
``DataCollatorForPreference``), so the numbers match a TRL run of the same model:

- strings: ``eos_token`` is appended to a completion that does not end with it; then
  ``prompt_ids = tok(prompt)``, ``prompt_chosen_ids = tok(prompt + chosen)`` (the tokenizer's own
  special tokens, e.g. a BOS, included);
- conversational: ``apply_chat_template(prompt, add_generation_prompt=True)`` and
  ``apply_chat_template(prompt + chosen)`` (no EOS added: the template closes the turn);
- the completion starts where the two token lists diverge (TRL's ``common_prefix_length``, the
  minimum over chosen and rejected), not always at ``len(prompt_ids)``;
- ``max_length`` (TRL's default 1024; ``--max-length 0`` for none) cuts prompt + completion per
  sequence, ``keep_start`` (TRL's default: the end of a long completion is cut) or ``keep_end``.

A completion's log-probability is the SUM over its (kept) tokens of ``log p(token | everything
before it)``, the prompt's tokens never counted; ``chosen_length`` / ``rejected_length`` are those
token counts, so ``audit`` can form per-token means. The forward pass is the model's own (right
padding, attention mask), log-softmax in float32 whatever ``--dtype`` (TRL's fused LM head computes
the same quantity in tiles, in the model's dtype: at float32 the two agree to float rounding).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from dpo_rlhf_checks.cli import (MAX_SEED, BadInput, OneLineParser, no_duplicate_keys, seed_problem,
                                 short_message)
from dpo_rlhf_checks.paths import output_file_problem, output_overwrites_input

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")
TRUNCATION_MODES = ("keep_start", "keep_end")
FIELDS = ("prompt", "chosen", "rejected")
TRL_DEFAULT_MAX_LENGTH = 1024  # DPOConfig.max_length
# Integrity thresholds (heuristics; each flag prints the numbers it read).
IDENTICAL_ATOL = 1e-6  # |policy - reference| per sequence, nats, below which two models "agree" on a sequence
TRAINED_REFERENCE_ACCURACY = 0.9  # a reference ranking this share of pairs right looks trained on the preferences
MIN_PAIRS_FOR_HEURISTICS = 20
# Level of the one-sided binomial tests behind reference_looks_trained: a flag fires on noise (two untrained
# models) with probability at most this, per test.
HEURISTIC_LEVEL = 0.01


class ScoreInputError(ValueError):
    """Bad data or arguments; the message names the row."""


class ScoreMemoryError(ScoreInputError):
    """Out of memory even at a batch of one sequence (settings too large for the device)."""


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ScoreConfig:
    """The settings of one scoring run; every one is printed with the result.

    batch_size: pairs per forward pass (each pair is two sequences), >= 1.
    max_length: the most tokens of prompt + completion per sequence (TRL's max_length), or None.
    truncation_mode: "keep_start" (cut the end; TRL's default) or "keep_end" (cut the start).
    device: "auto" (cuda when present), "cpu" or "cuda".
    dtype: the models' dtype: "float32", "bfloat16" or "float16"; log-softmax is float32 always.
    strict: False (TRL's behaviour: a row whose prompt fills max_length under keep_start is dropped, an empty
        completion is scored; both counted in the integrity flags) or True (either is an error naming the row).
    """

    batch_size: int = 8
    max_length: int | None = TRL_DEFAULT_MAX_LENGTH
    truncation_mode: str = "keep_start"
    device: str = "auto"
    dtype: str = "float32"
    strict: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        if self.max_length is not None and not (isinstance(self.max_length, int) and self.max_length >= 2):
            raise ValueError(f"max_length must be a whole number >= 2 or None, got {self.max_length!r}")
        if self.truncation_mode not in TRUNCATION_MODES:
            raise ValueError(f"truncation_mode must be one of {', '.join(TRUNCATION_MODES)}, got {self.truncation_mode!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not isinstance(self.strict, bool):
            raise ValueError(f"strict must be True or False, got {self.strict!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but torch sees no CUDA device")
        return torch.device(self.device)


# ----------------------------------------------------------------------------------------------
# Reading the data


def _check_messages(value: Any, where: str, name: str) -> None:
    if not isinstance(value, list) or not value:
        raise ScoreInputError(f"{where}: field {name!r} must be a non-empty list of messages")
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise ScoreInputError(f"{where}: field {name!r}, message {i + 1}: a message is an object with string "
                                  "'role' and 'content'")


def validate_row(row: Any, where: str, conversational: bool | None) -> bool:
    """Check one row of TRL's explicit-prompt preference format; returns whether it is conversational."""
    if not isinstance(row, dict):
        raise ScoreInputError(f"{where}: not a JSON object but {type(row).__name__}")
    for name in FIELDS:
        if name not in row or row[name] is None:
            raise ScoreInputError(f"{where}: missing field {name!r} (TRL's preference format: prompt, chosen, "
                                  "rejected)")
    kinds = {name: isinstance(row[name], list) for name in FIELDS}
    conv = kinds["chosen"]
    if len(set(kinds.values())) != 1:
        raise ScoreInputError(f"{where}: prompt, chosen and rejected must all be strings or all be message lists; "
                              f"got {', '.join(f'{k}: {type(row[k]).__name__}' for k in FIELDS)}")
    if conversational is not None and conv != conversational:
        raise ScoreInputError(f"{where}: {'conversational' if conv else 'string'} row in a "
                              f"{'conversational' if conversational else 'string'} data set")
    for name in FIELDS:
        if conv:
            _check_messages(row[name], where, name)
        elif not isinstance(row[name], str):
            raise ScoreInputError(f"{where}: field {name!r} must be a string, got {type(row[name]).__name__}")
    return conv


def empty_completions(row: dict) -> list[str]:
    """The fields among chosen and rejected whose text is empty or blank (TRL scores them: the EOS it appends to
    a string completion, or the chat template's closing tokens)."""
    out = []
    for name in ("chosen", "rejected"):
        value = row[name]
        text = "".join(m["content"] for m in value) if isinstance(value, list) else value
        if not text.strip():
            out.append(name)
    return out


def extract_prompt(row: dict) -> dict:
    """TRL's ``extract_prompt`` for the implicit-prompt format (TRL 1.16, ``trl.data_utils``).

    The prompt is the longest common prefix of ``chosen`` and ``rejected`` (messages, or characters of a
    string, the space before the divergence left to the completions); both completions lose it.
    """
    chosen, rejected = row["chosen"], row["rejected"]
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if chosen[idx - 1] == " ":  # remove space before the prompt
                idx -= 1
            break
    return {**row, "prompt": chosen[:idx], "chosen": chosen[idx:], "rejected": rejected[idx:]}


def load_rows(path, *, split: str | None = None) -> tuple[list[dict], list[str]]:
    """The rows of a JSON Lines file or a local ``datasets`` folder, validated; and where each came from.

    Returns (rows, where) with ``where[i]`` like ``"row 3 (line 4)"`` for error messages. A ScoreInputError's
    message does not repeat the path (the command puts it in front, once).
    """
    path = Path(path)
    rows: list[dict] = []
    where: list[str] = []
    if path.is_dir():
        try:
            import datasets
        except ImportError as err:  # pragma: no cover - datasets comes with the hf extra
            raise ScoreInputError(f"a folder; reading a datasets folder needs the 'datasets' package "
                                  "(pip install 'dpo-rlhf-checks[hf]')") from err
        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise ScoreInputError(f"not a saved datasets folder ({err})") from err
        if isinstance(ds, datasets.DatasetDict):
            names = list(ds)
            if split is None:
                if len(names) != 1 and "train" not in names:
                    raise ScoreInputError(f"a DatasetDict with splits {names}; choose one with --split")
                split = "train" if "train" in names else names[0]
            if split not in names:
                raise ScoreInputError(f"no split {split!r}; splits: {names}")
            ds = ds[split]
        elif split is not None:
            raise ScoreInputError(f"--split {split!r} given, but the folder holds one Dataset")
        for i, row in enumerate(ds):
            rows.append(row)
            where.append(f"row {i + 1}")
    else:
        if split is not None:  # a JSON Lines file has no splits; ignoring the flag would score what was not asked
            raise ScoreInputError(f"--split {split!r} given, but this is a JSON Lines file, which has no splits")
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                w = f"row {len(rows) + 1} (line {line_no})"
                try:  # a UTF-8 BOM on the first line is accepted, as audit does
                    text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise ScoreInputError(f"line {line_no}: not UTF-8 text ({err.reason} at byte {err.start} of "
                                          "the line)") from None
                if not text.strip():
                    continue
                try:  # a key given twice is an error, as in solve and audit (json would keep the last silently)
                    rows.append(json.loads(text, object_pairs_hook=no_duplicate_keys))
                except json.JSONDecodeError as err:
                    raise ScoreInputError(f"{w}: malformed JSON ({err.msg} at character {err.colno})") from None
                except BadInput as err:
                    raise ScoreInputError(f"{w}: {err}") from None
                where.append(w)
    if not rows:
        raise ScoreInputError("no data rows")
    # TRL's implicit-prompt format (no "prompt"; chosen and rejected share it), decided by the first row as in TRL.
    implicit = isinstance(rows[0], dict) and "prompt" not in rows[0]
    conv = None
    for i, (row, w) in enumerate(zip(rows, where)):
        if implicit and isinstance(row, dict) and "chosen" in row and "rejected" in row:
            if type(row["chosen"]) is not type(row["rejected"]) or not isinstance(row["chosen"], (str, list)):
                raise ScoreInputError(f"{w}: chosen and rejected must both be strings or both message lists")
            row = rows[i] = extract_prompt(row)
            if not row["prompt"]:
                raise ScoreInputError(f"{w}: no prompt field and chosen and rejected share no prefix (the implicit "
                                      "prompt is empty)")
        conv = validate_row(row, w, conv)
    return rows, where


# ----------------------------------------------------------------------------------------------
# Tokenization (TRL's DPOTrainer)


@dataclass
class TokenizedPair:
    """One pair as TRL's DPOTrainer tokenizes it, before truncation."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    prompt_not_prefix: bool = False  # the tokenized prompt alone differs from the start of prompt + completion


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Leading tokens two lists share (TRL's ``common_prefix_length``)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _chat_ids(tokenizer, messages, **kwargs) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def _template_kwargs(row: dict) -> dict[str, Any]:
    """The per-row chat-template arguments TRL 1.16 passes: ``tools`` (a list, or a JSON string of one) and the
    ``chat_template_kwargs`` mapping (e.g. ``{"enable_thinking": false}``); nothing when the row has neither."""
    out: dict[str, Any] = {}
    tools = row.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as err:
            raise ScoreInputError(f"field 'tools' is a string but not JSON ({err.msg})") from None
    if tools is not None:
        out["tools"] = tools
    kwargs = row.get("chat_template_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise ScoreInputError(f"field 'chat_template_kwargs' must be an object, got {type(kwargs).__name__}")
        out.update(kwargs)
    return out


def tokenize_pair(tokenizer, row: dict) -> TokenizedPair:
    """Prompt, chosen and rejected token ids of one row, exactly as TRL 1.16's DPOTrainer makes them.

    Conversational rows pass their ``tools`` and ``chat_template_kwargs`` columns to the chat template, as TRL does.
    """
    if isinstance(row["chosen"], list):
        kw = _template_kwargs(row)
        prompt_ids = _chat_ids(tokenizer, row["prompt"], add_generation_prompt=True, **kw)
        pc_ids = _chat_ids(tokenizer, row["prompt"] + row["chosen"], **kw)
        pr_ids = _chat_ids(tokenizer, row["prompt"] + row["rejected"], **kw)
    else:
        eos = tokenizer.eos_token
        if eos is None:
            raise ScoreInputError("the tokenizer has no eos_token (TRL appends it to every string completion)")
        chosen = row["chosen"] if row["chosen"].endswith(eos) else row["chosen"] + eos
        rejected = row["rejected"] if row["rejected"].endswith(eos) else row["rejected"] + eos
        prompt_ids = list(tokenizer(text=row["prompt"])["input_ids"])
        pc_ids = list(tokenizer(text=row["prompt"] + chosen)["input_ids"])
        pr_ids = list(tokenizer(text=row["prompt"] + rejected)["input_ids"])
    n = min(common_prefix_length(prompt_ids, pc_ids), common_prefix_length(prompt_ids, pr_ids))
    return TokenizedPair(prompt_ids[:n], pc_ids[n:], pr_ids[n:], prompt_not_prefix=n < len(prompt_ids))


def truncate(prompt_ids: list[int], completion_ids: list[int], max_length: int | None, mode: str
             ) -> tuple[list[int], int, int]:
    """TRL's collator truncation of one sequence: (kept ids, prompt tokens kept, completion tokens kept)."""
    ids = prompt_ids + completion_ids
    if max_length is None or len(ids) <= max_length:
        return ids, len(prompt_ids), len(completion_ids)
    if mode == "keep_start":
        kept = ids[:max_length]
        n_prompt = min(len(prompt_ids), max_length)
        return kept, n_prompt, max_length - n_prompt
    kept = ids[-max_length:]  # keep_end: the start of the prompt goes first
    n_completion = min(len(completion_ids), max_length)
    return kept, max_length - n_completion, n_completion


@dataclass
class Sequences:
    """The 2n sequences of n pairs (chosen first, then rejected), truncated, ready to batch."""

    ids: list[list[int]]  # (2n,) token lists
    n_prompt: np.ndarray  # (2n,) prompt tokens kept
    n_completion: np.ndarray  # (2n,) completion tokens kept (the tokens scored)
    truncated: np.ndarray  # (2n,) bool: the completion lost tokens to max_length

    @property
    def n_pairs(self) -> int:
        return len(self.ids) // 2


def build_sequences(pairs: Sequence[TokenizedPair], where: Sequence[str], config: ScoreConfig) -> Sequences:
    """Truncate every pair's two sequences as TRL's collator does; a completion cut to nothing is an error."""
    ids, n_prompt, n_comp, cut = [], [], [], []
    for side in ("chosen_ids", "rejected_ids"):
        for pair, w in zip(pairs, where):
            completion = getattr(pair, side)
            name = side[:-4]
            if not completion:
                raise ScoreInputError(f"{w}: the {name} completion tokenizes to nothing")
            kept, p, c = truncate(pair.prompt_ids, completion, config.max_length, config.truncation_mode)
            if p == 0:  # no prompt token (no BOS): the first token has no context; TRL's label shift drops it too
                p, c = 1, c - 1
            if c == 0:
                # TRL drops such examples (keep_start); a score of 0 would be silently wrong.
                raise ScoreInputError(f"{w}: the prompt ({len(pair.prompt_ids)} tokens) fills max_length "
                                      f"{config.max_length}: no {name} token is left to score (raise --max-length)")
            ids.append(kept)
            n_prompt.append(p)
            n_comp.append(c)
            cut.append(c < len(completion))
    return Sequences(ids, np.array(n_prompt), np.array(n_comp), np.array(cut, dtype=bool))


# ----------------------------------------------------------------------------------------------
# Log-probabilities


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices in batches of ``batch_size``, longest first, so each batch pads little (and OOM shows at once)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _pad_right(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


def completion_logps(logits: torch.Tensor, input_ids: torch.Tensor, n_prompt: torch.Tensor, n_completion: torch.Tensor
                     ) -> torch.Tensor:
    """Summed log-probabilities of the completion tokens.

    logits (B, T, V) of the model on input_ids (B, T) (right-padded); n_prompt, n_completion (B,): the
    sequence is prompt tokens [0, n_prompt) then completion tokens [n_prompt, n_prompt + n_completion).
    Token t is predicted at position t - 1; log-softmax in float32 (logsumexp, no exp overflow).
    Returns (B,) float32.
    """
    targets = input_ids[:, 1:]  # (B, T-1): the token each position predicts
    pos = torch.arange(1, input_ids.shape[1], device=input_ids.device)  # index of the predicted token
    mask = (pos >= n_prompt[:, None]) & (pos < (n_prompt + n_completion)[:, None])  # (B, T-1)
    logits = logits[:, :-1].float()
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (token_logps * mask).sum(dim=1)


def shard_of(lengths: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """The sequences process ``rank`` of ``world_size`` computes, in order: every ``world_size``-th of the
    length-sorted batches of ``batch_size`` (:func:`length_sorted_batches`), from batch ``rank`` on.

    Round-robin over the longest-first batches keeps the ranks' work close (each gets every W-th longest
    batch), and cut into batches of ``batch_size`` again, a rank's share gives back exactly the batches a
    single process forms: the same padding, so the same numbers.
    """
    mine = length_sorted_batches(lengths, batch_size)[rank::world_size]
    return np.concatenate(mine) if mine else np.empty(0, dtype=np.int64)


def _collective_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` where the process group's backend reduces it: NCCL only reduces CUDA tensors, gloo CPU ones.
    (The NCCL path is not exercised by the tests, which run on CPUs.)"""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t


@dataclass
class Parallel:
    """Where this process stands in a data-parallel run (``accelerate launch``); one process by default.

    rank, world_size: this process and the number of processes; reduce_sum(array) -> the elementwise sum
    over the processes (float64; every process gets it); reduce_min(int) -> the minimum over them.
    """

    rank: int = 0
    world_size: int = 1

    def reduce_sum(self, values: np.ndarray) -> np.ndarray:
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        t = _collective_tensor(torch.as_tensor(values, dtype=torch.float64))
        dist.all_reduce(t, op=dist.ReduceOp.SUM)  # gloo and NCCL both reduce float64 tensors
        return t.cpu().numpy()

    def counts(self, value: int) -> list[int]:
        """``value`` of every process, in rank order (a one-hot sum)."""
        one_hot = np.zeros(self.world_size)
        one_hot[self.rank] = value
        return [int(v) for v in self.reduce_sum(one_hot)]

    def reduce_min(self, value: int) -> int:
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        t = _collective_tensor(torch.tensor([value], dtype=torch.float64))
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())


def run_batched(compute, lengths: Sequence[int], *, batch_size: int, parallel: Parallel | None = None, progress=None,
                log=None) -> tuple[np.ndarray, int]:
    """``compute(idx) -> (len(idx),) float64`` over this process's share of the length-sorted batches of
    ``batch_size`` sequences; every other entry is 0 (so a sum over processes assembles the whole array).

    Out of memory: the batch halves and the share starts again, as accelerate's ``find_executable_batch_size``
    does, with its two parts: ``should_reduce_batch_size`` (CUDA, MPS, XPU and CPU allocator out-of-memory
    errors) and ``clear_device_cache`` after a failure. (The decorator itself runs ``gc.collect()`` on every
    call, 0.4 s on a busy machine, once per model and chunk; here it runs only after an out-of-memory error.)
    ``log(message)`` is told. Returns (values (len(lengths),) float64, the batch size that ran to the end);
    ``run_batched.last_share`` is the number of sequences this process computed.
    """
    from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size

    parallel = parallel or Parallel()
    share = shard_of(lengths, batch_size, parallel.rank, parallel.world_size)
    run_batched.last_share = len(share)
    out = np.zeros(len(lengths), dtype=np.float64)
    start_n = progress.n if progress is not None else 0
    bs = batch_size
    while True:
        try:
            for start in range(0, len(share), bs):
                idx = share[start:start + bs]
                out[idx] = compute(idx)
                if progress is not None:
                    progress.update(len(idx))
            return out, bs
        except Exception as err:  # noqa: BLE001 - anything but out of memory is raised again at once
            if not should_reduce_batch_size(err):
                raise
            clear_device_cache(garbage_collection=True)
            new = bs // 2
            if log is not None:
                log(f"out of memory at a batch of {bs} sequences"
                    + (f": retrying at {new}" if new else ": even one sequence does not fit"))
            if new == 0:
                raise ScoreMemoryError("out of memory even at a batch of one sequence: use a smaller --max-length, "
                                       "a smaller --dtype, or --device-map auto") from None
            bs = new
            out[:] = 0.0
            if progress is not None:  # the share starts again
                progress.n = start_n
                progress.refresh()


def _input_device(model, device):
    """Where a model's inputs go: ``device``, or, for a model spread by ``device_map``, its embedding's device."""
    if getattr(model, "hf_device_map", None):
        dev = model.get_input_embeddings().weight.device
        return torch.device("cpu") if dev.type == "meta" else dev
    return device


def sequence_logps(model, seqs: Sequences, *, batch_size: int, pad_id: int, device, progress=None,
                   parallel: Parallel | None = None, log=None) -> np.ndarray:
    """Summed completion log-probabilities (2n,) float64 of every sequence, length-sorted batches of 2 * batch_size.

    progress: a tqdm bar counting sequences, or None. parallel: this process's share only (0 elsewhere; see
    :func:`run_batched`). Out of memory halves the batch (``log`` is told); the batch that ran is in
    ``sequence_logps.last_batch`` (sequences).
    """
    device = _input_device(model, device)
    model.eval()

    def compute(idx):
        ids, mask = _pad_right([seqs.ids[i] for i in idx], pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (B, T, V)
        lp = completion_logps(logits, ids, torch.as_tensor(seqs.n_prompt[idx], device=ids.device),
                              torch.as_tensor(seqs.n_completion[idx], device=ids.device))
        return lp.double().cpu().numpy()

    with torch.inference_mode():
        out, used = run_batched(compute, [len(s) for s in seqs.ids], batch_size=2 * batch_size, parallel=parallel,
                                progress=progress, log=log)
    sequence_logps.last_batch = used
    return out


def reward_sequences(tokenizer, rows: Sequence[dict], max_length: int | None) -> list[list[int]]:
    """The 2n token lists a reward model scores (chosen of every row, then rejected), as TRL's RewardTrainer
    builds them (see :func:`reward_scores`)."""
    seqs = []
    for side in ("chosen", "rejected"):
        for row in rows:
            if isinstance(row[side], list):
                ids = _chat_ids(tokenizer, row["prompt"] + row[side], **_template_kwargs(row))
            else:
                eos = tokenizer.eos_token or ""
                text = row[side] if row[side].endswith(eos) else row[side] + eos
                ids = list(tokenizer(text=row["prompt"] + text)["input_ids"])
            seqs.append(ids[:max_length] if max_length is not None else ids)
    return seqs


def context_problem(model, lengths: Sequence[int], where: Sequence[str], what: str) -> str | None:
    """Why a sequence cannot be scored by ``model``: longer than its position limit (the config's
    ``max_position_embeddings``, GPT-2's ``n_positions``), or None. Past it a model with learned positions fails
    deep inside (GPT-2: an index error), one with rotary positions scores tokens it was never trained to place.
    lengths: (2n,) sequence lengths, chosen of every pair then rejected; where: (n,) the pairs' names."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(limit, int) or not len(lengths) or max(lengths) <= limit:
        return None
    i = int(np.argmax(np.asarray(lengths) > limit))
    n = len(lengths) // 2
    side = "chosen" if i < n else "rejected"
    return (f"{where[i % n]}: the {side} sequence has {lengths[i]} tokens, more than the {limit} positions of "
            f"{what} (its config's max_position_embeddings): set --max-length {limit} or less")


def reward_scores(model, tokenizer, rows: Sequence[dict], *, batch_size: int, max_length: int | None, device,
                  progress=None, parallel: Parallel | None = None, log=None) -> tuple[np.ndarray, np.ndarray]:
    """Scores (n,) of prompt + chosen and prompt + rejected by a one-output sequence-classification model.

    Inputs as TRL's RewardTrainer builds them: strings get the EOS appended to the completion and are
    tokenized as ``prompt + completion``; conversations are rendered whole with the chat template.
    Sequences longer than max_length are cut at the end (keep_start), as RewardTrainer filters them.
    parallel, log: as in :func:`sequence_logps`.
    """
    n_labels = getattr(model.config, "num_labels", None)
    if n_labels != 1:
        raise ScoreInputError(f"the reward model must have one output (num_labels=1), got num_labels={n_labels}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ScoreInputError("the reward model's tokenizer has neither a pad token nor an eos token")
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_id  # sequence classifiers find the last token through it
    seqs = reward_sequences(tokenizer, rows, max_length)
    device = _input_device(model, device)
    model.eval()

    def compute(idx):
        ids, mask = _pad_right([seqs[i] for i in idx], pad_id, device)
        return model(input_ids=ids, attention_mask=mask).logits[:, 0].double().cpu().numpy()

    with torch.inference_mode():
        out, _ = run_batched(compute, [len(s) for s in seqs], batch_size=2 * batch_size, parallel=parallel,
                             progress=progress, log=log)
    n = len(rows)
    return out[:n], out[n:]


# ----------------------------------------------------------------------------------------------
# Integrity checks


def integrity_checks(columns: dict[str, np.ndarray], seqs: Sequences, n_not_prefix: int) -> list[dict[str, Any]]:
    """What a user cannot see by eye; each flag states the numbers it read.

    - identical_models: the policy and the reference agree (|difference| <= 1e-6 nats) on every sequence
      (step 0 of training, or one checkpoint passed twice): every policy diagnostic is then trivial.
    - reference_looks_trained: the reference ranks >= 90% of the pairs right and a one-sided binomial
      test rejects "it ranks half right" at level HEURISTIC_LEVEL (references typically rank near half
      right, Chen et al. 2024); or, with a policy, the implicit reward ``h = beta (delta - delta_ref)``
      is positive on significantly fewer than half the pairs (binomial test, ties left out) AND the
      reference ranks significantly more pairs right than the policy (an exact McNemar test on the pairs
      where they disagree), each at level HEURISTIC_LEVEL (--model and --ref-model swapped?).
    - truncated: completions cut by max_length (their log-probabilities cover only the kept tokens).
    - prompt_not_prefix: pairs whose tokenized prompt is not a prefix of prompt + completion (TRL
      warns the same; the completion then starts where they diverge).
    """
    flags: list[dict[str, Any]] = []
    n = len(columns["ref_chosen_logps"])
    rc, rr = columns["ref_chosen_logps"], columns["ref_rejected_logps"]
    ref_acc = float(np.mean(rc - rr >= 0))
    if "chosen_logps" in columns:
        pc, pr = columns["chosen_logps"], columns["rejected_logps"]
        diff = np.maximum(np.abs(pc - rc), np.abs(pr - rr))
        same = float(np.mean(diff <= IDENTICAL_ATOL))
        if same == 1.0:
            flags.append({"check": "identical_models", "message": "the policy and the reference give the same "
                          f"log-probabilities on every pair (max |difference| {diff.max():.3g} nats): step 0 of training, "
                          "or the same checkpoint passed twice; every policy diagnostic is trivial", "value": same})
        h = (pc - pr) - (rc - rr)
        h_acc = float(np.mean(h > 0))
        pol_right, ref_right = pc - pr >= 0, rc - rr >= 0
        pol_acc = float(np.mean(pol_right))
        if same < 1.0 and n >= MIN_PAIRS_FOR_HEURISTICS:
            from scipy.stats import binomtest

            n_pos, n_nonzero = int(np.sum(h > 0)), int(np.sum(h != 0))
            p_h = binomtest(n_pos, n_nonzero, 0.5, alternative="less").pvalue if n_nonzero else 1.0
            b = int(np.sum(ref_right & ~pol_right))  # the reference right, the policy wrong
            c = int(np.sum(pol_right & ~ref_right))
            p_mcnemar = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
            if p_h < HEURISTIC_LEVEL and p_mcnemar < HEURISTIC_LEVEL:
                flags.append({"check": "reference_looks_trained", "message": f"the implicit reward is positive on "
                              f"only {h_acc:.0%} of pairs (binomial test against half: p = {p_h:.2g}) and the "
                              f"reference ranks more pairs right ({ref_acc:.0%}) than the policy ({pol_acc:.0%}; "
                              f"{b} against {c} where they disagree, p = {p_mcnemar:.2g}; level {HEURISTIC_LEVEL}): "
                              "were --model and --ref-model swapped?", "value": h_acc})
    if n >= MIN_PAIRS_FOR_HEURISTICS and ref_acc >= TRAINED_REFERENCE_ACCURACY:
        from scipy.stats import binomtest

        p_ref = binomtest(int(np.sum(rc - rr >= 0)), n, 0.5, alternative="greater").pvalue
        if p_ref < HEURISTIC_LEVEL:
            flags.append({"check": "reference_looks_trained", "message": f"the reference ranks {ref_acc:.0%} of pairs "
                          f"right (references typically rank near half; threshold 90%, and a binomial test against "
                          f"half gives p = {p_ref:.2g} < {HEURISTIC_LEVEL}): it looks trained on these preferences "
                          "(a DPO checkpoint as the reference?)", "value": ref_acc})
    n_cut = int(seqs.truncated.reshape(2, -1).any(axis=0).sum())
    if n_cut:
        flags.append({"check": "truncated", "message": f"{n_cut} of {n} pairs had a completion cut by max_length; "
                      "their log-probabilities cover only the kept tokens (see chosen_truncated, rejected_truncated)",
                      "value": n_cut / n})
    if n_not_prefix:
        flags.append({"check": "prompt_not_prefix", "message": f"on {n_not_prefix} pairs the tokenized prompt is not "
                      "a prefix of prompt + completion (chat template or a token merging across the boundary); as in "
                      "TRL, the completion starts where they diverge", "value": n_not_prefix / n})
    return flags


# ----------------------------------------------------------------------------------------------
# Loading models


def _looks_like_a_path(name: str) -> bool:
    """Whether ``name`` can only be a local path: a hub id is ``name`` or ``owner/name``, never absolute or dotted."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or name.endswith(("/", os.sep))
            or name.count("/") > 1 or os.sep != "/" and os.sep in name)


def model_path_problem(name: str) -> str | None:
    """Why the local folder ``name`` holds no model (missing, a file, no config.json), or None (a model folder,
    or a name that is not a local path and may be a hub id)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return f"{name} is a folder but holds no model (no config.json in it)"
        return None
    if path.exists():
        return f"{name} is a file, not a model folder"
    if _looks_like_a_path(name):
        return f"no model at {name}: no such folder"
    return None


def _load_model(path: str, config: ScoreConfig, device, auto_class: str, what: str, device_map: str | None = None):
    """A transformers model of ``auto_class`` and its tokenizer (pad token = eos when it has none, as TRL does).

    device_map: None (the model on ``device``) or "auto" (accelerate's big-model loading: the layers spread over
    the GPUs, then CPU memory, as they fit; the model is not moved afterwards).
    """
    import transformers

    problem = model_path_problem(path)
    if problem is not None:
        raise ScoreInputError(f"{what}: {problem}")
    # The config first, with transformers' warnings off: a folder whose config transformers cannot read is one
    # line naming the problem (not a tokenizer error after a logged warning). The loads below keep their
    # warnings (e.g. a reward head initialised at random).
    import transformers.utils.logging as tl

    verbosity = tl.get_verbosity()
    tl.set_verbosity_error()
    try:
        model_config = transformers.AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        where = "" if Path(path).expanduser().exists() else " (not a local folder; tried as a hub model id)"
        raise ScoreInputError(f"{what}: cannot load {path}{where}: {short_message(err, 1000)}") from None
    finally:
        tl.set_verbosity(verbosity)
    n_labels = getattr(model_config, "num_labels", None)
    if auto_class == "AutoModelForSequenceClassification" and n_labels != 1:
        # before the weights load: a causal LM's folder would get a random 2-output head (and a warning) first
        raise ScoreInputError(f"{what}: {path} has num_labels={n_labels}; a reward model has one output "
                              "(num_labels=1)")
    kwargs: dict[str, Any] = {"dtype": DTYPES[config.dtype]}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = getattr(transformers, auto_class).from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        where = "" if Path(path).expanduser().exists() else " (not a local folder; tried as a hub model id)"
        raise ScoreInputError(f"{what}: cannot load {path}{where}: {short_message(err, 1000)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device_map is None:
        model = model.to(device)
    return model.eval(), tokenizer


def load_causal_lm(path: str, config: ScoreConfig, device, *, what: str = "--model", device_map: str | None = None):
    """A causal LM and its tokenizer; ``what`` names it in errors (the option that gave it)."""
    return _load_model(path, config, device, "AutoModelForCausalLM", what, device_map)


def load_reward_model(path: str, config: ScoreConfig, device, *, what: str = "--reward-model",
                      device_map: str | None = None):
    """A sequence-classification reward model and its tokenizer."""
    return _load_model(path, config, device, "AutoModelForSequenceClassification", what, device_map)


# ----------------------------------------------------------------------------------------------
# Scoring


@dataclass
class ScoreResult:
    """Per-pair columns (float64 (n,) arrays, lengths whole numbers) and what the run measured."""

    columns: dict[str, np.ndarray]
    flags: list[dict[str, Any]]
    settings: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)
    pair_numbers: np.ndarray | None = None  # (n,) the 1-based input row of each scored pair (rows TRL drops skipped)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # Counted in sequences (two per pair) and shown in pairs: unit_scale 0.5 turns sequences/s into pairs/s.
    return tqdm(total=2 * total, desc=desc, unit="pair", unit_scale=0.5, file=sys.stderr, dynamic_ncols=True)


@dataclass
class Prepared:
    """Rows tokenized and truncated as TRL does, the rows TRL drops dropped (:func:`prepare_pairs`)."""

    rows: list[dict]  # the kept rows
    where: list[str]
    pairs: list[TokenizedPair]
    seqs: Sequences
    keep: np.ndarray  # (n,) the 0-based input index of each kept row
    dropped: list[str]  # names of the dropped rows
    n_empty: int  # rows with an empty completion (scored)
    tokenize_s: float = 0.0

    def fingerprint(self) -> str:
        """A hash of every kept sequence's token ids and boundaries: the same data, tokenized the same way."""
        import hashlib

        h = hashlib.sha256()
        h.update(np.asarray(self.keep, dtype=np.int64).tobytes())
        for ids in self.seqs.ids:
            h.update(np.asarray(ids, dtype=np.int64).tobytes() + b"|")
        h.update(self.seqs.n_prompt.astype(np.int64).tobytes() + self.seqs.n_completion.astype(np.int64).tobytes())
        return h.hexdigest()


def prepare_pairs(tokenizer, rows: Sequence[dict], config: ScoreConfig, where: Sequence[str] | None = None
                  ) -> Prepared:
    """Tokenize (TRL's DPOTrainer), drop the rows TRL drops (keep_start prompts that fill max_length) and count
    empty completions; with ``config.strict`` either is an error naming the row."""
    where = list(where) if where is not None else [f"row {i + 1}" for i in range(len(rows))]
    rows = list(rows)
    t0 = time.perf_counter()
    pairs = []
    n_empty = 0
    for row, w in zip(rows, where):
        empty = empty_completions(row)
        if empty and config.strict:
            raise ScoreInputError(f"{w}: empty completion in field {empty[0]!r} (--strict; TRL scores it: its EOS "
                                  "or the template's closing tokens)")
        n_empty += bool(empty)
        try:
            pairs.append(tokenize_pair(tokenizer, row))
        except ScoreInputError as err:
            raise ScoreInputError(f"{w}: {err}") from None
    # TRL drops a row whose prompt alone fills max_length under keep_start (DPOTrainer._prepare_dataset's filter
    # len(prompt_ids) < max_length): no completion token would be left. score does the same, and counts it.
    keep = np.arange(len(pairs))
    dropped: list[str] = []
    if config.max_length is not None and config.truncation_mode == "keep_start":
        fills = [i for i, p in enumerate(pairs) if len(p.prompt_ids) >= config.max_length]
        if fills and config.strict:
            i = fills[0]
            raise ScoreInputError(f"{where[i]}: the prompt ({len(pairs[i].prompt_ids)} tokens) fills max_length "
                                  f"{config.max_length}: no completion token is left to score (--strict; TRL drops "
                                  "the row)")
        if fills:
            keep = np.setdiff1d(keep, fills)
            if not len(keep):
                raise ScoreInputError(f"every row's prompt fills max_length {config.max_length}: nothing to score "
                                      "(raise --max-length)")
            dropped = [where[i] for i in fills]
            rows = [rows[i] for i in keep]
            pairs = [pairs[i] for i in keep]
            where = [where[i] for i in keep]
    seqs = build_sequences(pairs, where, config)
    return Prepared(rows, where, pairs, seqs, keep, dropped, n_empty, time.perf_counter() - t0)


def _subset(seqs: Sequences, idx: np.ndarray) -> Sequences:
    """The sequences of pairs ``idx`` (chosen then rejected), as a Sequences of their own."""
    n = seqs.n_pairs
    both = np.concatenate([idx, n + idx])
    return Sequences([seqs.ids[i] for i in both], seqs.n_prompt[both], seqs.n_completion[both], seqs.truncated[both])


def chunk_ranges(n: int, chunk_pairs: int | None) -> list[np.ndarray]:
    """Pairs [0, n) in consecutive chunks of ``chunk_pairs`` (one chunk when None)."""
    size = chunk_pairs or max(n, 1)
    return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]


def score_pairs(model, tokenizer, rows: Sequence[dict], *, config: ScoreConfig, ref_model=None, reward_model=None,
                reward_tokenizer=None, where: Sequence[str] | None = None, device=None, progress: bool = False,
                parallel: Parallel | None = None, log=None, prepared: Prepared | None = None,
                chunk_pairs: int | None = None, start_chunk: int = 0, previous: dict[str, np.ndarray] | None = None,
                on_chunk=None) -> ScoreResult:
    """Score pairs: ``model`` is the reference, or the policy when ``ref_model`` is given.

    rows: validated rows (:func:`validate_row`); where: their names for errors (default "row i").
    Returns the output columns: ref_chosen_logps, ref_rejected_logps, [chosen_logps, rejected_logps],
    chosen_length, rejected_length, prompt_length, chosen_truncated, rejected_truncated,
    [chosen_reward, rejected_reward].
    parallel: in a data-parallel run, this process scores its share of the batches (:func:`shard_of`) and
    every process gets the whole columns (a sum over the processes: each entry comes from exactly one, so
    the sum is that value, bit for bit). log(message): told when out of memory halves a batch.
    Long runs (the command's ``--resume``): the kept pairs are scored in consecutive chunks of
    ``chunk_pairs`` (length-sorted batches within a chunk, so a chunk's numbers do not depend on where a run
    started); ``on_chunk(k, idx, columns)`` is called after chunk k (pairs ``idx``); chunks before
    ``start_chunk`` are not scored, their model columns taken from ``previous`` (read back from the output).
    """
    parallel = parallel or Parallel()
    messages: list[str] = []

    def note(message: str) -> None:
        messages.append(message)
        if log is not None:
            log(message)

    device = device if device is not None else config.torch_device()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prep = prepared if prepared is not None else prepare_pairs(tokenizer, rows, config, where)
    seqs, n = prep.seqs, prep.seqs.n_pairs
    t1 = time.perf_counter()
    models = [("reference" if ref_model is not None else "model", ref_model if ref_model is not None else model)]
    if ref_model is not None:
        models.append(("policy", model))
    model_cols = ["ref_chosen_logps", "ref_rejected_logps"] + (["chosen_logps", "rejected_logps"]
                                                                if ref_model is not None else [])
    reward_cols = ["chosen_reward", "rejected_reward"] if reward_model is not None else []
    chunks = chunk_ranges(n, chunk_pairs)
    done = sum(len(c) for c in chunks[:start_chunk])
    cols: dict[str, np.ndarray] = {k: np.zeros(n) for k in model_cols + reward_cols}
    if start_chunk:
        for k in model_cols + reward_cols:
            if previous is None or k not in previous or len(previous[k]) != done:
                raise ScoreInputError(f"resuming at chunk {start_chunk} needs the {done} scored pairs' {k}")
            cols[k][:done] = previous[k]
    share = -(-(n - done) // parallel.world_size)  # this process's pairs, about
    bars = {name: _progress(share, f"log-probs ({name})", progress) for name, _ in models}
    if reward_model is not None:
        bars["rewards"] = _progress(share, "rewards", progress)
    batch_used = 2 * config.batch_size  # sequences
    computed = 0
    t_reward = 0.0
    for k in range(start_chunk, len(chunks)):
        idx = chunks[k]
        sub = _subset(seqs, idx)
        m_idx = len(idx)
        for name, m in models:
            lp = sequence_logps(m, sub, batch_size=config.batch_size, pad_id=pad_id, device=device,
                                progress=bars[name], parallel=parallel,
                                log=lambda msg, name=name: note(f"{name}: {msg}"))
            batch_used = min(batch_used, sequence_logps.last_batch)
            computed += run_batched.last_share
            lp = parallel.reduce_sum(lp)
            first = "ref" if name != "policy" else ""
            cols[f"{first}_chosen_logps".lstrip("_")][idx] = lp[:m_idx]
            cols[f"{first}_rejected_logps".lstrip("_")][idx] = lp[m_idx:]
        if reward_model is not None:
            tr = time.perf_counter()
            rewards = reward_scores(reward_model, reward_tokenizer or tokenizer, [prep.rows[i] for i in idx],
                                    batch_size=config.batch_size, max_length=config.max_length, device=device,
                                    progress=bars["rewards"], parallel=parallel,
                                    log=lambda msg: note(f"reward model: {msg}"))
            cols["chosen_reward"][idx], cols["rejected_reward"][idx] = (parallel.reduce_sum(r) for r in rewards)
            t_reward += time.perf_counter() - tr
        if on_chunk is not None:
            on_chunk(k, idx, _columns_of(cols, seqs, idx))
    for bar in bars.values():
        if bar is not None:
            bar.close()
    t3 = time.perf_counter()
    t2 = t3 - t_reward
    cols = _columns_of(cols, seqs, np.arange(n))
    flags = integrity_checks(cols, seqs, sum(p.prompt_not_prefix for p in prep.pairs))
    n_in = len(prep.keep) + len(prep.dropped)
    if prep.dropped:
        shown = ", ".join(prep.dropped[:3]) + (", ..." if len(prep.dropped) > 3 else "")
        flags.append({"check": "dropped_rows", "message": f"{len(prep.dropped)} of {n_in} rows dropped, as TRL drops "
                      f"them: the prompt fills max_length {config.max_length} (keep_start), no completion token is "
                      f"left ({shown}); the output skips their pair numbers (--strict: an error instead)",
                      "value": len(prep.dropped) / n_in})
    if prep.n_empty:
        flags.append({"check": "empty_completion", "message": f"{prep.n_empty} of {n_in} rows have an empty chosen "
                      "or rejected completion, scored as TRL scores it (the EOS, or the chat template's closing "
                      "tokens; --strict: an error instead)", "value": prep.n_empty / n_in})
    tokens = int(sum(len(s) for s in seqs.ids))
    settings = {
        "batch_size": config.batch_size, "max_length": config.max_length, "truncation_mode": config.truncation_mode,
        "device": str(device), "dtype": config.dtype, "processes": parallel.world_size, "strict": config.strict,
        "rows_read": n_in, "rows_dropped": len(prep.dropped), "pairs_with_empty_completion": prep.n_empty,
        "batch_sequences": 2 * config.batch_size, "batch_sequences_used": parallel.reduce_min(batch_used),
        "out_of_memory": messages, "chunk_pairs": chunk_pairs, "resumed_at_pair": done,
        "logps": "summed over completion tokens (prompt tokens never counted), TRL DPOTrainer tokenization",
        "format": "conversational" if isinstance(prep.rows[0]["chosen"], list) else "string",
    }
    scored = n - done
    scored_tokens = tokens - int(sum(len(s) for s in _subset(seqs, np.arange(done)).ids)) if done else tokens
    timing = {"tokenize_s": prep.tokenize_s, "logps_s": t2 - t1, "reward_s": t_reward, "pairs": n,
              "pairs_scored": scored, "tokens": tokens, "forward_passes": len(models),
              "sequences_per_process": parallel.counts(computed),
              "pairs_per_s": scored * len(models) / max(t2 - t1, 1e-12),
              "tokens_per_s": scored_tokens * len(models) / max(t2 - t1, 1e-12)}
    return ScoreResult(cols, flags, settings, timing, pair_numbers=prep.keep + 1)


def _columns_of(model_cols: dict[str, np.ndarray], seqs: Sequences, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The output columns of pairs ``idx``: the models' (given) and the lengths and flags (from the sequences)."""
    n = seqs.n_pairs
    out = {k: v[idx] for k, v in model_cols.items()}
    out["chosen_length"] = seqs.n_completion[idx].astype(np.float64)
    out["rejected_length"] = seqs.n_completion[n + idx].astype(np.float64)
    out["prompt_length"] = seqs.n_prompt[idx].astype(np.float64)
    out["chosen_truncated"] = seqs.truncated[idx]
    out["rejected_truncated"] = seqs.truncated[n + idx]
    return out


COLUMN_ORDER = ("ref_chosen_logps", "ref_rejected_logps", "chosen_logps", "rejected_logps", "chosen_length",
                "rejected_length", "chosen_reward", "rejected_reward", "prompt_length", "chosen_truncated",
                "rejected_truncated")


def write_scores(path, columns: dict[str, np.ndarray], pair_numbers: Sequence[int] | None = None) -> Path:
    """One JSON object per pair, in data order, floats at full precision (repr round-trips).

    pair_numbers: the 1-based input row of each pair (default 1..n); rows TRL drops leave gaps.
    """
    path = Path(path)
    names = [c for c in COLUMN_ORDER if c in columns]
    ints = {"chosen_length", "rejected_length", "prompt_length"}
    with open(path, "w", encoding="utf-8") as f:
        for i in range(len(columns[names[0]])):
            row = {"pair": int(pair_numbers[i]) if pair_numbers is not None else i + 1}
            for k in names:
                v = columns[k][i]
                row[k] = bool(v) if v.dtype == bool else int(v) if k in ints else float(v)
            f.write(json.dumps(row) + "\n")
    return path


# ----------------------------------------------------------------------------------------------
# Command line


def score_lines(columns: dict[str, np.ndarray], pair_numbers: Sequence[int]) -> str:
    """The output's JSON Lines of these pairs (the format of :func:`write_scores`)."""
    names = [c for c in COLUMN_ORDER if c in columns]
    ints = {"chosen_length", "rejected_length", "prompt_length"}
    lines = []
    for i in range(len(pair_numbers)):
        row: dict[str, Any] = {"pair": int(pair_numbers[i])}
        for k in names:
            v = columns[k][i]
            row[k] = bool(v) if v.dtype == bool else int(v) if k in ints else float(v)
        lines.append(json.dumps(row) + "\n")
    return "".join(lines)


PROGRESS_FORMAT = "dpo-rlhf-checks score progress"


def progress_path(out) -> Path:
    """The progress record beside an output: ``OUT.progress.json`` (removed when the run finishes)."""
    return Path(f"{out}.progress.json")


def read_progress(out) -> dict[str, Any] | None:
    """The progress record of an unfinished run into ``out``, or None when there is none."""
    path = progress_path(out)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ScoreInputError(f"--resume: cannot read the progress record {path}: {err}") from None
    if not isinstance(record, dict) or record.get("format") != PROGRESS_FORMAT:
        raise ScoreInputError(f"--resume: {path} is not a score progress record")
    return record


class ChunkWriter:
    """Appends each finished chunk's lines to the output in one write (whole lines even when killed), flushes
    them to disk, then rewrites the progress record (a temporary file renamed into place): the record never
    counts a line that is not on disk. On resume the output is cut back to the record's byte count first."""

    def __init__(self, out, record: dict[str, Any], pair_numbers: np.ndarray, *, resume_bytes: int | None):
        self.out, self.record, self.pair_numbers = Path(out), dict(record), pair_numbers
        self.path = progress_path(out)
        if resume_bytes is None:
            self.path.unlink(missing_ok=True)  # a stale record of another run
            self.fd = os.open(self.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        else:
            self.fd = os.open(self.out, os.O_WRONLY)
            os.ftruncate(self.fd, resume_bytes)  # lines written after the last record was saved
            os.lseek(self.fd, resume_bytes, os.SEEK_SET)

    def __call__(self, k: int, idx: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        data = score_lines(columns, self.pair_numbers[idx]).encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        os.fsync(self.fd)
        self.record.update(chunks_done=k + 1, pairs_done=int(idx[-1]) + 1,
                           bytes=self.record.get("bytes", 0) + len(data))
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.record, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)

    def pairs_written(self) -> int:
        return int(self.record.get("pairs_done", 0))

    def close(self, finished: bool) -> None:
        os.close(self.fd)
        if finished:
            self.path.unlink(missing_ok=True)


def read_back(out, n_bytes: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named columns of the first ``n_bytes`` of a score output (the pairs a resumed run keeps)."""
    with open(out, "rb") as f:
        data = f.read(n_bytes)
    if len(data) != n_bytes:
        raise ScoreInputError(f"--resume: {out} holds {len(data)} bytes, fewer than the {n_bytes} its progress record "
                              "counts; rerun without --resume")
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    try:
        return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in names}
    except KeyError as err:
        raise ScoreInputError(f"--resume: {out} has no column {err.args[0]!r}; rerun without --resume") from None


class Interrupted(Exception):
    """SIGINT or SIGTERM during scoring; the message says what was kept and how to resume."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    d = ScoreConfig()
    p = OneLineParser(
        prog="paper_checks.py score",
        description="Score a preference data set (JSON Lines or a local datasets folder, TRL's prompt/chosen/rejected "
        "format, strings or conversations) with a causal LM: summed completion log-probabilities, tokenized as TRL's "
        "DPOTrainer does, in the columns 'audit' reads. Exit code 2 on bad data or arguments. Under `accelerate "
        "launch` the pairs are split over the processes and one output is written, in data order.")
    p.add_argument("--model", required=True, help="the reference, or the policy when --ref-model is given (path or id)")
    p.add_argument("--data", required=True, type=Path, help="a .jsonl file or a datasets folder (save_to_disk)")
    p.add_argument("--out", required=True, help="where to write the per-pair JSON Lines")
    p.add_argument("--ref-model", default=None, help="the reference model; --model is then the policy")
    p.add_argument("--reward-model", default=None, help="a sequence-classification reward model (one output)")
    p.add_argument("--split", default=None, help="the split of a DatasetDict folder (default: train, or the only one)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"pairs per forward pass (default {d.batch_size}; halved and retried when out of memory)")
    p.add_argument("--max-length", type=int, default=d.max_length,
                   help=f"max tokens of prompt + completion, TRL's max_length (default {d.max_length}; 0: no limit)")
    p.add_argument("--truncation-mode", choices=TRUNCATION_MODES, default=d.truncation_mode,
                   help=f"TRL's truncation_mode (default {d.truncation_mode})")
    p.add_argument("--device", choices=DEVICES, default=d.device, help="auto (cuda when present), cpu or cuda")
    p.add_argument("--device-map", choices=("auto",), default=None,
                   help="auto: spread each model over the GPUs (then CPU memory) with accelerate's big-model "
                   "loading, for a model larger than one device (one process)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=d.dtype, help=f"model dtype (default {d.dtype})")
    p.add_argument("--strict", action="store_true",
                   help="stop at a row TRL drops (its prompt fills --max-length, keep_start) or scores with an empty "
                   "completion (default: do as TRL does, and count them)")
    p.add_argument("--audit", action="store_true", help="run 'audit' on the result and print its summary")
    p.add_argument("--beta", type=float, nargs="+", action="extend", metavar="B", help="beta(s) of the audit")
    p.add_argument("--pairs-out", default=None, help="with --audit and --ref-model: per-pair flags (JSON Lines)")
    p.add_argument("--json", action="store_true", help="print the result (and the audit) as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (neither score's nor the libraries')")
    p.add_argument("--seed", type=int, default=0,
                   help=f"torch seed, 0..{MAX_SEED} (scoring is deterministic; default 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command from its progress record (OUT.progress.json)")
    p.add_argument("--chunk-pairs", type=int, default=1024,
                   help="pairs scored and written per chunk, the unit of --resume (default 1024)")
    return p


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def main(argv: list[str] | None = None) -> int:
    """``paper_checks.py score``: 0 on success, 2 on bad arguments or data (one line on stderr).

    Under ``accelerate launch`` (``WORLD_SIZE`` > 1) every process scores its share and the main one writes.
    """
    try:
        return _main(argv)
    except (BadInput, ScoreInputError) as err:
        if _is_main_process():  # every process meets the same bad input; one line is enough
            print(f"error: {short_message(err, 1200)}", file=sys.stderr)
        return 2
    except Interrupted as err:
        if _is_main_process():
            print(f"error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:  # before the scoring started (reading, loading): nothing written yet
        if _is_main_process():
            print("error: interrupted (SIGINT) before any pair was written", file=sys.stderr)
        return 130


class _QuietLibraries:
    """Silence transformers', datasets' and huggingface_hub's progress bars for a block (``--no-progress``)."""

    def __enter__(self):
        import transformers.utils.logging as tl

        self._undo = []
        if tl.is_progress_bar_enabled():
            tl.disable_progress_bar()
            self._undo.append(tl.enable_progress_bar)
        try:
            import datasets

            if datasets.is_progress_bar_enabled():
                datasets.disable_progress_bars()
                self._undo.append(datasets.enable_progress_bars)
        except ImportError:  # pragma: no cover - datasets comes with the hf extra
            pass
        import huggingface_hub.utils as hh

        if not hh.are_progress_bars_disabled():
            hh.disable_progress_bars()
            self._undo.append(hh.enable_progress_bars)
        return self

    def __exit__(self, *exc):
        for undo in self._undo:
            undo()
        return False


def _parallel_state(device: str) -> tuple[Parallel, Any]:
    """This process's place in an ``accelerate launch`` run (one process without it) and accelerate's state."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Parallel(), None
    from accelerate import PartialState

    # gloo on CPU (no GPU here, or --device cpu), NCCL on GPUs
    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    return Parallel(state.process_index, state.num_processes), state


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = ScoreConfig(batch_size=args.batch_size, max_length=args.max_length or None,
                             truncation_mode=args.truncation_mode, device=args.device, dtype=args.dtype,
                             strict=args.strict)
    except ValueError as err:
        parser.error(str(err))
    if args.pairs_out is not None and not args.audit:
        parser.error("--pairs-out needs --audit")
    if args.pairs_out is not None and args.ref_model is None:
        parser.error("--pairs-out writes the policy's per-pair flags: it needs --ref-model (and --model the policy)")
    if args.beta is not None and not args.audit:
        parser.error("--beta needs --audit")
    if args.chunk_pairs < 1:
        parser.error(f"--chunk-pairs must be >= 1, got {args.chunk_pairs}")
    problem = seed_problem(args.seed)  # the range every command takes (torch's seed would overflow past 2^64)
    if problem is not None:
        parser.error(f"--seed: {problem}")
    if args.resume and read_progress(args.out) is None:  # before any model loads
        parser.error(f"--resume: no progress record {progress_path(args.out)}: the run into {args.out} finished, or "
                     "never wrote a chunk; rerun without --resume")
    try:
        from dpo_rlhf_checks import audit as A

        audit_config = A.AuditConfig(betas=tuple(args.beta)) if args.beta else A.AuditConfig()
    except ValueError as err:
        parser.error(str(err))
    # Every output is checked before any model loads: a bad path must not cost a scoring pass.
    inputs = {"--data": args.data, "--model": args.model}
    inputs.update({k: v for k, v in (("--ref-model", args.ref_model), ("--reward-model", args.reward_model)) if v})
    outputs = [("--out", args.out)] + ([("--pairs-out", args.pairs_out)] if args.pairs_out is not None else [])
    for opt, name in outputs:
        problem = output_file_problem(name)
        if problem is not None:
            parser.error(f"{opt} {name}: {problem}")
        problem = output_overwrites_input(Path(name), inputs)
        if problem is not None:
            parser.error(f"{opt}: {problem}")
    if args.pairs_out is not None and (Path(args.pairs_out).resolve() == Path(args.out).resolve() or (
            Path(args.out).exists() and Path(args.pairs_out).exists()
            and os.path.samefile(args.out, args.pairs_out))):
        parser.error("--pairs-out and --out name the same file")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ScoreInputError("'score' needs transformers: pip install 'dpo-rlhf-checks[hf]'") from None
    try:
        parallel, state = _parallel_state(args.device)
        device = state.device if state is not None else config.torch_device()
    except ValueError as err:
        parser.error(str(err))
    if args.device == "cuda" and device.type != "cuda":
        parser.error("--device cuda, but the processes run on " + str(device))
    if args.device_map is not None and parallel.world_size > 1:
        parser.error("--device-map auto spreads one model over the devices: run it in one process, not under "
                     f"accelerate launch with {parallel.world_size} processes")
    main_process = parallel.rank == 0
    quiet = args.no_progress or not main_process
    torch.manual_seed(args.seed)
    with _QuietLibraries() if quiet else contextlib.nullcontext():
        try:
            rows, where = load_rows(args.data, split=args.split)
        except ScoreInputError as err:
            raise ScoreInputError(f"{args.data}: {err}") from None
        except OSError as err:
            raise ScoreInputError(f"{args.data}: {err.strerror or err}") from None
        model, tokenizer = load_causal_lm(args.model, config, device, what="--model", device_map=args.device_map)
        ref_model = reward_model = reward_tok = None
        if args.ref_model is not None:
            ref_model, ref_tok = load_causal_lm(args.ref_model, config, device, what="--ref-model",
                                                device_map=args.device_map)
            if ref_tok.get_vocab() != tokenizer.get_vocab():
                raise ScoreInputError(f"--ref-model {args.ref_model} has a different vocabulary from --model "
                                      f"{args.model}: their log-probabilities are not comparable")
        if args.reward_model is not None:
            reward_model, reward_tok = load_reward_model(args.reward_model, config, device,
                                                         device_map=args.device_map)

        def log(message: str) -> None:
            prefix = f"process {parallel.rank}: " if parallel.world_size > 1 else ""
            print(f"score: {prefix}{message}", file=sys.stderr)

        try:
            prepared = prepare_pairs(tokenizer, rows, config, where)
            lengths = [len(ids) for ids in prepared.seqs.ids]
            problem = context_problem(model, lengths, prepared.where, f"--model {args.model}")
            if problem is None and ref_model is not None:
                problem = context_problem(ref_model, lengths, prepared.where, f"--ref-model {args.ref_model}")
            if problem is None and reward_model is not None:
                lengths = [len(ids) for ids in reward_sequences(reward_tok, prepared.rows, config.max_length)]
                problem = context_problem(reward_model, lengths, prepared.where,
                                          f"--reward-model {args.reward_model}")
            if problem is not None:
                raise ScoreInputError(problem)
        except ScoreInputError as err:
            raise ScoreInputError(f"{args.data}: {err}") from None
        # Said once the data and the models are known good: a refused run prints its one error line only.
        n_params = sum(p.numel() for p in model.parameters())
        placed = sorted({str(d) for d in (getattr(model, "hf_device_map", None) or {"": device}).values()})
        where_run = f"device map auto ({', '.join(placed)})" if args.device_map else f"device {device}"
        if main_process:
            print(f"score: {len(rows)} pairs from {args.data}; model {args.model} ({n_params:,} parameters)"
                  + (f", reference {args.ref_model}" if ref_model is not None else " as the reference")
                  + (f", reward model {args.reward_model}" if reward_model is not None else "")
                  + f"; {where_run}, dtype {config.dtype}, batch {config.batch_size} pairs, max_length "
                  f"{config.max_length} ({config.truncation_mode})"
                  + (f"; {parallel.world_size} processes" if parallel.world_size > 1 else ""), file=sys.stderr)
        # The progress record: what must be the same for a resumed run to continue this one exactly.
        import hashlib

        same = {"model": args.model, "ref_model": args.ref_model, "reward_model": args.reward_model,
                "batch_size": config.batch_size, "max_length": config.max_length, "dtype": config.dtype,
                "truncation_mode": config.truncation_mode, "strict": config.strict, "chunk_pairs": args.chunk_pairs}
        # (not the number of processes: shard_of gives every process count the same batches, so a run may resume
        # on another number of GPUs)
        fingerprint = hashlib.sha256((prepared.fingerprint() + json.dumps(same, sort_keys=True)).encode()).hexdigest()
        record = {"format": PROGRESS_FORMAT, "version": 1, "fingerprint": fingerprint, "settings": same,
                  "pairs": prepared.seqs.n_pairs, "chunks": len(chunk_ranges(prepared.seqs.n_pairs, args.chunk_pairs)),
                  "chunks_done": 0, "pairs_done": 0, "bytes": 0}
        start_chunk, previous, resume_bytes = 0, None, None
        if args.resume:
            old = read_progress(args.out)
            if old is None or old.get("fingerprint") != fingerprint:
                differs = [k for k in same if (old or {}).get("settings", {}).get(k) != same[k]]
                raise ScoreInputError(f"--resume: {progress_path(args.out)} is from a different run ("
                                      + (f"settings differ: {', '.join(differs)}" if differs else
                                         "the data or its tokenization differ") + "); rerun without --resume")
            start_chunk, resume_bytes = int(old["chunks_done"]), int(old["bytes"])
            record.update(chunks_done=start_chunk, pairs_done=int(old["pairs_done"]), bytes=resume_bytes)
            names = ["ref_chosen_logps", "ref_rejected_logps"] + (["chosen_logps", "rejected_logps"] if ref_model
                                                                  is not None else []) + (
                ["chosen_reward", "rejected_reward"] if reward_model is not None else [])
            previous = read_back(args.out, resume_bytes, names)
            if main_process:
                print(f"score: resuming at pair {record['pairs_done'] + 1} of {record['pairs']} (chunk "
                      f"{start_chunk + 1} of {record['chunks']})", file=sys.stderr)
        writer = ChunkWriter(args.out, record, prepared.keep + 1, resume_bytes=resume_bytes) if main_process else None
        finished = False

        def on_signal(signum, frame):  # SIGTERM ends the run as SIGINT does: between two whole chunks on disk
            raise KeyboardInterrupt(signum)

        import signal

        old_term = signal.signal(signal.SIGTERM, on_signal) if _in_main_thread() else None
        try:
            result = score_pairs(model, tokenizer, rows, config=config, ref_model=ref_model, reward_model=reward_model,
                                 reward_tokenizer=reward_tok, where=where, device=device, progress=not quiet,
                                 parallel=parallel, log=log, prepared=prepared, chunk_pairs=args.chunk_pairs,
                                 start_chunk=start_chunk, previous=previous, on_chunk=writer)
            finished = True
        except KeyboardInterrupt as err:
            sig = err.args[0] if err.args and isinstance(err.args[0], int) else signal.SIGINT
            written = writer.pairs_written() if writer is not None else 0
            name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
            raise Interrupted(f"interrupted ({name}): {written} of {prepared.seqs.n_pairs} pairs are in {args.out} "
                              f"(whole lines); rerun the same command with --resume to score the rest",
                              128 + int(sig)) from None
        except ScoreMemoryError:
            raise
        except ScoreInputError as err:
            raise ScoreInputError(f"{args.data}: {err}") from None
        finally:
            if writer is not None:
                writer.close(finished)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
    if state is not None and hasattr(state, "destroy_process_group"):
        state.destroy_process_group()  # the collectives are done; the main process writes alone
    if not main_process:
        return 0
    t = result.timing
    summary = [f"wrote {args.out}: {t['pairs']} pairs, {t['tokens']} tokens per model; {t['pairs_per_s']:.1f} pairs/s, "
               f"{t['tokens_per_s']:.0f} tokens/s ({t['forward_passes']} model(s)"
               + (f", {parallel.world_size} processes)" if parallel.world_size > 1 else ")")]
    st = result.settings
    if st["batch_sequences_used"] != st["batch_sequences"]:
        summary.append(f"out of memory: the batch was halved to {st['batch_sequences_used']} sequences (asked: "
                       f"{st['batch_sequences']}, {config.batch_size} pairs) and the run went on; the numbers do not "
                       "depend on the batch (float rounding aside)")
    summary += [f"integrity: {f['check']}: {f['message']}" for f in result.flags] or ["integrity: no flags"]
    out: dict[str, Any] = {"out": str(args.out), "settings": result.settings, "timing": t, "integrity": result.flags}
    if args.audit:
        data = A.read_pairs(args.out)
        audit_result = A.audit(data, audit_config)
        out["audit"] = audit_result
        if args.pairs_out is not None:
            from dpo_rlhf_checks.audit_diagnostics import write_pair_flags

            try:
                write_pair_flags(args.pairs_out, data)
            except (ValueError, OSError) as err:
                raise ScoreInputError(f"--pairs-out {args.pairs_out}: {err}") from None
            summary.append(f"per-pair flags: {args.pairs_out}")
    if args.json:
        from dpo_rlhf_checks.result import to_jsonable

        print(json.dumps(to_jsonable(out), indent=2))
    else:
        print("\n".join(summary))
        if args.audit:
            print()
            print(A.format_summary(out["audit"]))
    return 0


if __name__ == "__main__":  # accelerate launch -m dpo_rlhf_checks.score ...
    sys.exit(main())
