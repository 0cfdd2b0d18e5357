"""The shuffle strategies and the filter, on hand-made score matrices."""

from __future__ import annotations

import numpy as np
import pytest

from shuffle_model.decoding.filtering import filter_slots
from shuffle_model.decoding.shuffle import assign_offsets, map_variety, predicted_maps, sinkhorn_log
from shuffle_model.decoding.trace import AFTER_GAP, DUPLICATE, LOW_CONFIDENCE, OUT_OF_RANGE

# slot 0 wants offset 2, slot 1 wants offset 1, slots 2 and 3 both want offset 3
SCORES = np.log(
    np.array(
        [
            [0.1, 0.8, 0.05, 0.05],
            [0.7, 0.1, 0.1, 0.1],
            [0.05, 0.05, 0.6, 0.3],
            [0.05, 0.05, 0.5, 0.4],
        ]
    )
)
KEEP = np.array([0.9, 0.8, 0.3, 0.7])


def test_rotary_gives_collisions_to_the_more_confident_slot():
    assert assign_offsets("rotary", SCORES, KEEP).offsets == [2, 1, None, 3]


def test_hungarian_and_sinkhorn_give_a_permutation():
    for strategy in ("hungarian", "sinkhorn"):
        offsets = assign_offsets(strategy, SCORES, KEEP).offsets
        assert sorted(offsets) == [1, 2, 3, 4]
        assert offsets[:2] == [2, 1]


def test_identity_keeps_slot_order():
    assert assign_offsets("identity", SCORES, KEEP).offsets == [1, 2, 3, 4]


def test_map_variety_counts_steps_off_the_most_common_map():
    swapped = [1, 0, 2]
    assert map_variety([swapped] * 9) == 0.0  # a constant permutation is no shuffle
    assert map_variety([swapped] * 6 + [[0, 1, 2]] * 3 + [[2, 1, 0]]) == pytest.approx(0.4)
    assert map_variety([]) == 0.0
    assert predicted_maps(np.exp(SCORES)[None]) == [[1, 0, 2, 2]]  # each slot's best offset
    assert predicted_maps([]) == []


def test_sinkhorn_matrix_is_doubly_stochastic():
    plan = np.exp(sinkhorn_log(np.random.default_rng(0).normal(size=(5, 5)) * 3))
    assert np.allclose(plan.sum(0), 1, atol=1e-6)
    assert np.allclose(plan.sum(1), 1, atol=1e-6)
    assert assign_offsets("sinkhorn", SCORES, KEEP).sinkhorn.shape == (4, 4)


def test_filter_builds_the_contiguous_block_and_names_each_drop():
    result = filter_slots(
        [2, 1, None, 4, 3], [0.9, 0.8, 0.9, 0.9, 0.2], keep_threshold=0.5, max_offset=4
    )
    assert result.block == [1, 0]  # offsets 1, 2; offset 3's slot is low confidence
    assert result.statuses == [None, None, DUPLICATE, AFTER_GAP, LOW_CONFIDENCE]


def test_filter_drops_offsets_past_the_budget():
    result = filter_slots([1, 2, 3], [0.9, 0.9, 0.9], keep_threshold=0.5, max_offset=2)
    assert result.block == [0, 1]
    assert result.statuses[2] == OUT_OF_RANGE


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_filter_threshold_edges(threshold):
    result = filter_slots([1, 2], [0.5, 0.99], keep_threshold=threshold, max_offset=2)
    assert result.block == ([0, 1] if threshold == 0.0 else [])
