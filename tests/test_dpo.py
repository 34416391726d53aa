"""Fine-tuning objectives against hand-computed values: the masked SFT loss, DPO's sigmoid loss and
implicit rewards, the reward model's Bradley-Terry loss; and attention isolation of packed rows."""

from __future__ import annotations

import math

import pytest
import torch

from tests.finetune_support import SFT_TRAIN, records, sft_rows
from tests.tiny_lm import spread_weights, tiny_config, train_tokenizer
from training.finetune.losses import (bradley_terry_loss, dpo_loss, last_masked_index, masked_lm_loss,
                                      sequence_logprob)
from training.model import Transformer

torch.set_num_threads(1)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_masked_loss_counts_exactly_the_masked_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1]])
    # by hand: targets at positions 2, 3 (row 0) and 5 (row 1), predicted from positions 1, 2 and 4
    picks = [(0, 1, ids[0, 2]), (0, 2, ids[0, 3]), (1, 4, ids[1, 5])]
    expected = sum(-torch.log_softmax(logits[r, p], -1)[t] for r, p, t in picks) / 3
    assert torch.allclose(masked_lm_loss(logits, ids, mask), expected, atol=1e-6)
    assert torch.allclose(masked_lm_loss(logits, ids, mask, reduction="sum"), expected * 3, atol=1e-5)
    # logits at positions that predict unmasked tokens do not matter
    changed = logits.clone()
    changed[0, 0] += 5.0
    changed[1, :4] -= 3.0
    assert torch.allclose(masked_lm_loss(changed, ids, mask), expected, atol=1e-6)
    # ... and the gradient reaches only the masked positions
    leaf = logits.clone().requires_grad_(True)
    masked_lm_loss(leaf, ids, mask).backward()
    touched = leaf.grad.abs().sum(-1) > 0
    assert touched.tolist() == [[False, True, True, False, False], [False, False, False, False, True]]


def test_sequence_logprob_sums_the_response_tokens():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]]))
    ids = torch.tensor([[0, 1, 1, 0]])
    mask = torch.tensor([[0, 0, 1, 1]])
    assert sequence_logprob(logits, ids, mask).item() == pytest.approx(math.log(0.75) + math.log(0.9), abs=1e-6)


def test_dpo_loss_and_rewards_by_hand():
    beta = 0.1
    pc, pr, rc, rr = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0]), torch.tensor([-11.0, -4.0]), \
        torch.tensor([-11.0, -4.0])
    out = dpo_loss(pc, pr, rc, rr, beta)
    # pair 0: rewards 0.1·(1) and 0.1·(-1) → margin 0.2; pair 1: 0 and 0.1 → margin -0.1
    assert out["chosen_reward"].tolist() == pytest.approx([0.1, 0.0])
    assert out["rejected_reward"].tolist() == pytest.approx([-0.1, 0.1])
    assert out["margin"].tolist() == pytest.approx([0.2, -0.1])
    assert out["accuracy"].tolist() == [1.0, 0.0]
    assert out["loss"].tolist() == pytest.approx([-_log_sigmoid(0.2), -_log_sigmoid(-0.1)], abs=1e-6)
    # policy == reference: margin 0, loss log 2 (DPO starts there)
    start = dpo_loss(rc, rr, rc, rr, beta)
    assert start["loss"].tolist() == pytest.approx([math.log(2)] * 2)
    # conservative DPO with ε: -(1-ε)·logσ(h) - ε·logσ(-h)
    smoothed = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=0.1)
    assert smoothed["loss"][0].item() == pytest.approx(-0.9 * _log_sigmoid(0.2) - 0.1 * _log_sigmoid(-0.2), abs=1e-6)


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-5.0], requires_grad=True)
    dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.5)["loss"].sum().backward()
    # d/dpc of -logσ(β(pc - pr)) at 0 = -β/2
    assert pc.grad.item() == pytest.approx(-0.25) and pr.grad.item() == pytest.approx(0.25)


def test_bradley_terry_by_hand_and_score_position():
    out = bradley_terry_loss(torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0]))
    assert out["loss"].tolist() == pytest.approx([-_log_sigmoid(1.5), -_log_sigmoid(-2.0)], abs=1e-6)
    assert out["accuracy"].tolist() == [1.0, 0.0] and out["margin"].tolist() == pytest.approx([1.5, -2.0])
    mask = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [1, 0, 0, 0, 0]])
    assert last_masked_index(mask).tolist() == [2, 4, 0]


def test_packed_conversations_do_not_see_each_other():
    """A token's logits do not change when another conversation packed in the same row changes,
    and equal what the conversation gets alone."""
    tok = train_tokenizer()
    rows = sft_rows(tok, records(SFT_TRAIN, 12), width=129)
    seg = rows["segment_ids"]
    row = next(i for i in range(len(seg)) if len(set(seg[i].tolist())) >= 3)  # ≥ 2 conversations + padding
    ids, segments = rows["input_ids"][row:row + 1, :-1], seg[row:row + 1, :-1]
    model = spread_weights(Transformer(tiny_config("llama", max_seq_len=128))).eval()
    first = segments[0, 0].item()
    n_first = int((segments[0] == first).sum())
    with torch.no_grad():
        base = model(ids, segments)
        other = ids.clone()
        other[0, n_first:] = torch.randint(10, 300, (ids.size(1) - n_first,))
        changed = model(other, segments)
        alone = model(ids[:, :n_first])
        unblocked = model(other)  # plain causal attention would let the change in
    assert torch.allclose(base[0, :n_first], changed[0, :n_first], atol=1e-5)
    assert torch.allclose(base[0, :n_first], alone[0], atol=1e-5)
    assert not torch.allclose(base[0, n_first:], changed[0, n_first:], atol=1e-3)
    # and the second conversation sees only itself too: same logits as at the start of a row
    second = segments[0, n_first].item()
    n_second = int((segments[0] == second).sum())
    with torch.no_grad():
        moved = model(ids[:, n_first:n_first + n_second], position_ids=torch.arange(n_first, n_first + n_second)[None])
    assert torch.allclose(base[0, n_first:n_first + n_second], moved[0], atol=1e-5)
    # without segment ids the same change does reach the second conversation's first token's view
    assert not torch.allclose(unblocked[0, n_first:], changed[0, n_first:], atol=1e-3)
