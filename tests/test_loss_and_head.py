"""The set-prediction loss, the matching and the rotary scorer."""

from __future__ import annotations

import math

import pytest
import torch

from shuffle_model.model.loss import (
    IGNORE,
    offset_targets,
    per_offset_accuracy,
    set_prediction_loss,
)
from shuffle_model.model.rotary import RotaryOffsetScorer, offset_angles


def confident_drafts(targets: torch.Tensor, permutation: list[int], vocab: int = 10):
    """Slot k strongly predicts the target of offset permutation[k]."""
    n, k = targets.shape
    logits = torch.full((n, k, vocab), -5.0)
    for slot, offset in enumerate(permutation):
        logits[torch.arange(n), slot, targets[:, offset].clamp(min=0)] = 5.0
    return logits


def test_hungarian_matching_finds_the_permutation_and_fixed_does_not():
    targets = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    permutation = [2, 0, 3, 1]
    logits = confident_drafts(targets, permutation)
    scores, keep = torch.zeros(2, 4, 4), torch.zeros(2, 4)
    matched = set_prediction_loss(logits, scores, keep, targets, assignment="hungarian")
    assert matched.matched_offsets.tolist() == [permutation, permutation]
    assert matched.slot_correct.all()
    fixed = set_prediction_loss(logits, scores, keep, targets, assignment="fixed")
    assert fixed.matched_offsets.tolist() == [[0, 1, 2, 3]] * 2
    assert fixed.token_loss > matched.token_loss + 5


def test_offsets_past_the_end_are_not_matched():
    targets = torch.tensor([[1, 2, IGNORE, IGNORE]])
    logits = confident_drafts(targets, [1, 0, 2, 3])
    result = set_prediction_loss(logits, torch.zeros(1, 4, 4), torch.zeros(1, 4), targets)
    assert sorted(result.matched_offsets[0].tolist()) == [-1, -1, 0, 1]
    assert result.matched_offsets[0, :2].tolist() == [1, 0]
    accuracy = per_offset_accuracy(result, targets)
    assert accuracy[:2] == [1.0, 1.0] and all(math.isnan(a) for a in accuracy[2:])


def test_top3_accuracy_counts_a_target_among_a_slots_three_likeliest_tokens():
    targets = torch.tensor([[1, 2]])
    logits = torch.zeros(1, 2, 10)
    logits[0, 0, [7, 8, 1]] = torch.tensor([3.0, 2.5, 2.0])  # slot 0: target 1 third
    logits[0, 1, [7, 8, 9, 2]] = torch.tensor([3.0, 2.5, 2.4, 2.0])  # slot 1: target 2 fourth
    result = set_prediction_loss(logits, torch.zeros(1, 2, 2), torch.zeros(1, 2), targets)
    assert per_offset_accuracy(result, targets) == [0.0, 0.0]
    top3 = per_offset_accuracy(result, targets, logits, top=3)
    by_slot = dict(zip(result.matched_offsets[0].tolist(), [1.0, 0.0], strict=True))
    assert top3 == [by_slot[0], by_slot[1]]


def test_prior_breaks_ties_towards_slot_order():
    targets = torch.tensor([[1, 2, 3]])
    logits = torch.zeros(1, 3, 10)  # no slot prefers anything
    result = set_prediction_loss(
        logits, torch.zeros(1, 3, 3), torch.zeros(1, 3), targets, lambda_prior=1.0
    )
    assert result.matched_offsets.tolist() == [[0, 1, 2]]


def test_loss_has_gradients_for_tokens_positions_and_keep():
    targets = torch.tensor([[1, 2, 3]])
    logits = torch.randn(1, 3, 10, requires_grad=True)
    scores = torch.randn(1, 3, 3, requires_grad=True)
    keep = torch.randn(1, 3, requires_grad=True)
    set_prediction_loss(logits, scores, keep, targets).loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (logits, scores, keep))


def test_offset_targets_shift_and_mask():
    labels = torch.tensor([[10, 11, 12, 13, 14]])
    targets = offset_targets(labels, 2)
    # position t: anchor labels[t+1], targets labels[t+2], labels[t+3]
    assert targets[0, 0].tolist() == [12, 13]
    assert targets[0, 2].tolist() == [14, IGNORE]
    assert targets[0, 4].tolist() == [IGNORE, IGNORE]
    prompt_masked = offset_targets(torch.tensor([[10, IGNORE, 12, 13]]), 1)
    assert prompt_masked[0, 0].tolist() == [IGNORE]  # its anchor is not trained on


def test_rotary_scorer_prefers_the_offset_whose_angle_the_key_points_at():
    scorer = RotaryOffsetScorer(num_offsets=6, rotary_dim=2, base=10.0, temperature=1.0)
    angles = offset_angles(6, 2, 10.0)[:, 0]  # (6,)
    keys = (
        torch.stack([angles.cos(), angles.sin()], dim=-1).float() * 5
    )  # key k at offset k's angle
    scores = scorer(keys)  # (6, 6)
    assert scores.argmax(-1).tolist() == list(range(6))
    wide = RotaryOffsetScorer(num_offsets=6, rotary_dim=8, base=10.0, temperature=0.5)
    assert wide(torch.randn(3, 6, 8)).shape == (3, 6, 6)


def test_undraftable_targets_are_matched_but_never_right():
    targets = torch.tensor([[1, -1, 3]])  # offset 2's token is outside the draft vocabulary
    logits = confident_drafts(targets.clamp(min=0), [0, 1, 2])
    result = set_prediction_loss(logits, torch.zeros(1, 3, 3), torch.zeros(1, 3), targets)
    assert sorted(result.matched_offsets[0].tolist()) == [0, 1, 2]
    assert result.slot_correct[0].tolist() == [True, False, True]


def test_config_names_mean_one_thing_and_old_saved_configs_still_load():
    """K is num_slots and the head's filter default is default_keep_threshold; generate()'s
    max_parallel_tokens and keep_threshold are per run. Configs saved under the old names load."""
    from shuffle_model import ShuffleConfig

    old = ShuffleConfig.from_dict({"max_parallel_tokens": 3, "keep_threshold": 0.3})
    assert old.num_slots == 3 and old.default_keep_threshold == 0.3
    saved = old.to_dict()
    assert "max_parallel_tokens" not in saved and "keep_threshold" not in saved
    assert ShuffleConfig.from_dict(saved) == old
    with pytest.raises(ValueError, match="unknown ShuffleConfig fields"):
        ShuffleConfig.from_dict({"num_slot": 3})
