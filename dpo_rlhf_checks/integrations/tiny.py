"""A tiny GPT-2-style causal LM, reward model and word-level tokenizer, built locally (no hub download).

For tests, benchmarks and a dry run of ``paper_checks.py score``: random weights from a seed, a
word-level vocabulary over :data:`WORDS` with a chat template, saved as a ``PreTrainedTokenizerFast``.
Needs ``transformers`` and ``tokenizers`` (the ``hf`` extra).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

EOS = "<|endoftext|>"
UNK = "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
WORDS = tuple("the a cat dog sat ran on under mat rug red blue big small happy sad and or not yes no is was "
              "it he she they we you i to of in at with why how what good bad answer question please thanks "
              "one two three four five six seven eight nine ten".split())
# Renders every message as "<|role|> content <|end|>"; the generation prompt opens the assistant turn.
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def build_tokenizer(folder=None, *, pad_token: str | None = None):
    """A word-level PreTrainedTokenizerFast (whitespace split; EOS and the role markers are special tokens).

    pad_token: None leaves it unset (as GPT-2's; TRL then pads with EOS), or a new special token.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [UNK, EOS, *ROLE_TOKENS] + ([pad_token] if pad_token else [])
    vocab = {t: i for i, t in enumerate(specials + list(WORDS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token=UNK, eos_token=EOS, pad_token=pad_token,
                                  additional_special_tokens=list(ROLE_TOKENS))
    tok.chat_template = CHAT_TEMPLATE
    if folder is not None:
        tok.save_pretrained(folder)
    return tok


def gpt2_config(vocab_size: int, *, n_layer: int = 2, n_embd: int = 32, n_head: int = 2, n_positions: int = 256,
                **kwargs):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions,
                      bos_token_id=1, eos_token_id=1, **kwargs)


def build_causal_lm(folder=None, *, seed: int = 0, tokenizer=None, **config_kwargs):
    """A GPT2LMHeadModel with random weights (seeded) sized to the tiny tokenizer; saved with it when folder given."""
    from transformers import GPT2LMHeadModel

    tok = tokenizer if tokenizer is not None else build_tokenizer()
    torch.manual_seed(seed)
    vocab_size = config_kwargs.pop("vocab_size", len(tok))  # larger than the tokenizer's: unused rows, real cost
    model = GPT2LMHeadModel(gpt2_config(vocab_size, **config_kwargs)).eval()
    if folder is not None:
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return model, tok


def build_reward_model(folder=None, *, seed: int = 0, tokenizer=None, **config_kwargs):
    """A GPT2ForSequenceClassification with one output (a reward model), random weights (seeded)."""
    from transformers import GPT2ForSequenceClassification

    tok = tokenizer if tokenizer is not None else build_tokenizer()
    torch.manual_seed(seed)
    config = gpt2_config(len(tok), num_labels=1, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None
                         else tok.eos_token_id, **config_kwargs)
    model = GPT2ForSequenceClassification(config).eval()
    if folder is not None:
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return model, tok


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def preference_rows(n: int, *, seed: int = 0, conversational: bool = False, prompt_words=(2, 8),
                    completion_words=(1, 12)) -> list[dict]:
    """n rows of TRL's explicit-prompt preference format over the tiny vocabulary (random words, seeded).

    String completions start with a space, so the tokenized prompt is a prefix of prompt + completion.
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = _sentence(rng, *prompt_words)
        chosen, rejected = _sentence(rng, *completion_words), _sentence(rng, *completion_words)
        if conversational:
            rows.append({"prompt": [{"role": "user", "content": prompt}],
                         "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})
        else:
            rows.append({"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected})
    return rows


def write_jsonl(path, rows) -> Path:
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def build_scoring_folder(root, n_pairs: int | None = None, *, reward_model: bool = True) -> Path:
    """The folder the score tests share: ``ref`` (seed 0) and ``pol`` (seed 1) causal LMs, a reward model ``rm``
    (seed 2) unless ``reward_model`` is False, and ``data.jsonl`` with ``n_pairs`` string rows (seed 3) when given."""
    root = Path(root)
    build_causal_lm(root / "ref", seed=0)
    build_causal_lm(root / "pol", seed=1)
    if reward_model:
        build_reward_model(root / "rm", seed=2)
    if n_pairs is not None:
        write_jsonl(root / "data.jsonl", preference_rows(n_pairs, seed=3))
    return root
