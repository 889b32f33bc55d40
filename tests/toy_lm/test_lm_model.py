"""The tiny transformer's sequence log-probabilities against a direct product of token probabilities."""

import math

import pytest
import torch

from toy_lm.model import BOS, EOS, PAD, SEP, TinyGPT, resolve_device, sequence_logps


def _model(seed=0):
    torch.manual_seed(seed)
    model = TinyGPT(vocab_size=12, block_size=12, n_layer=2, n_head=2, n_embd=16).double()
    # Larger weights than the init so the distributions are far from uniform.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def _batch():
    # Prompts of different lengths, responses of different lengths, right padding.
    seqs = [((5, 6), (7, 8, 9)), ((5, 6, 10, 11), (8,)), ((4,), (9, 7))]
    tokens = torch.full((3, 12), PAD, dtype=torch.int64)
    mask = torch.zeros((3, 12), dtype=torch.bool)
    for i, (prompt, resp) in enumerate(seqs):
        seq = (BOS, *prompt, SEP, *resp, EOS)
        tokens[i, : len(seq)] = torch.tensor(seq)
        mask[i, len(prompt) + 2 : len(seq)] = True
    return seqs, tokens, mask


def test_logps_equal_direct_product_of_token_probabilities():
    model = _model()
    seqs, tokens, mask = _batch()
    out = sequence_logps(model, tokens, mask)
    for i, (prompt, resp) in enumerate(seqs):
        prefix = [BOS, *prompt, SEP]
        prob = 1.0
        for tok in (*resp, EOS):
            # Unpadded forward of the prefix alone: p(tok | prefix) from the last position.
            logits = model(torch.tensor([prefix]))[0, -1]
            prob *= torch.softmax(logits, dim=-1)[tok].item()
            prefix.append(tok)
        assert out.sum[i].item() == pytest.approx(math.log(prob), abs=1e-10)
        assert out.length[i].item() == len(resp) + 1
        assert out.mean[i].item() == pytest.approx(math.log(prob) / (len(resp) + 1), abs=1e-10)


def test_padding_content_and_amount_do_not_change_logps():
    model = _model(1)
    _, tokens, mask = _batch()
    base = sequence_logps(model, tokens, mask).sum
    junk = tokens.clone()
    junk[~mask & (tokens == PAD)] = 7  # garbage where padding was: masked out and after the sequence
    wider = torch.cat([tokens[:, :10], torch.full((3, 1), PAD)], dim=1)  # trimmed padding (10 + 1 columns)
    wmask = torch.cat([mask[:, :10], torch.zeros((3, 1), dtype=torch.bool)], dim=1)
    torch.testing.assert_close(sequence_logps(model, junk, mask).sum, base, rtol=0, atol=1e-12)
    torch.testing.assert_close(sequence_logps(model, wider, wmask).sum, base, rtol=0, atol=1e-12)


def test_probabilities_of_all_continuations_sum_to_one():
    # With a 1-token response (plus EOS) over a 3-token vocabulary slice the model puts mass elsewhere too;
    # summing p(t, EOS | x) over every t and every second token gives exactly the mass of "t then anything".
    model = _model(2)
    prompt = (5, 6)
    first = torch.softmax(model(torch.tensor([[BOS, *prompt, SEP]]))[0, -1], dim=-1)
    total = 0.0
    for t in range(12):
        tokens = torch.tensor([[BOS, *prompt, SEP, t, EOS]])
        mask = torch.tensor([[False, False, False, False, True, False]])  # only the first response token
        total += math.exp(sequence_logps(model, tokens, mask).sum.item())
    assert total == pytest.approx(first.sum().item(), abs=1e-12)
    assert total == pytest.approx(1.0, abs=1e-12)


def test_bad_masks_and_devices_are_value_errors():
    model = _model()
    _, tokens, mask = _batch()
    with pytest.raises(ValueError, match="differ"):
        sequence_logps(model, tokens, mask[:, :5])
    bad = mask.clone()
    bad[0, 0] = True
    with pytest.raises(ValueError, match="position 0"):
        sequence_logps(model, tokens, bad)
    with pytest.raises(ValueError, match="at least one response token"):
        sequence_logps(model, tokens, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="divisible"):
        TinyGPT(vocab_size=5, block_size=4, n_layer=1, n_head=3, n_embd=16)


def test_a_sequence_of_block_size_tokens_is_accepted_one_more_is_refused():
    """block_size 12 means 12 positions: (2, 12) tokens give (2, 12, 12) logits; 13 is one clear error. 't >=
    block_size' (a survivor of mutation) refused a full block with 'exceeds' (the toolkit feeds block_size - 1)."""
    model = _model()
    tokens = torch.zeros((2, 12), dtype=torch.int64)
    assert model(tokens).shape == (2, 12, 12)
    with pytest.raises(ValueError, match="sequence length 13 exceeds block_size 12"):
        model(torch.zeros((2, 13), dtype=torch.int64))


def test_special_tokens_are_distinct_and_laid_out_as_documented():
    """The four special ids PAD, BOS, SEP, EOS are four different ids below N_SPECIAL (content tokens start there),
    and make_task lays every sequence out as [BOS] prompt [SEP] response [EOS] [PAD ...]: position 0 holds BOS, the
    token just before the first response token holds SEP, BOS appears nowhere else and the response's last masked
    token is EOS. BOS set to 2, the id of SEP (a survivor of mutation), wrote the separator's id at position 0 of all
    144 sequences of the default task and no test saw it."""
    from toy_lm.config import LMConfig
    from toy_lm.model import N_SPECIAL
    from toy_lm.task import make_task

    ids = (PAD, BOS, SEP, EOS)
    assert len(set(ids)) == 4 and all(0 <= i < N_SPECIAL for i in ids)
    task = make_task(LMConfig(), 0)
    tok, mask = task.tokens, task.response_mask
    assert torch.all(tok[..., 0] == BOS)
    first = mask.int().argmax(-1)  # the first response position
    assert torch.all(first >= 2)
    assert torch.all(torch.gather(tok, -1, (first - 1).unsqueeze(-1)) == SEP)
    last = mask.shape[-1] - 1 - mask.flip(-1).int().argmax(-1)
    assert torch.all(torch.gather(tok, -1, last.unsqueeze(-1)) == EOS)
    assert int((tok == BOS).sum()) == tok.shape[0] * tok.shape[1]  # once per sequence
