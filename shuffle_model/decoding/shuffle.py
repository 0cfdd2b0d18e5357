"""The shuffle: give each drafted slot an offset after the anchor.

- rotary:    each slot takes its best-scoring offset; on a collision the slot with the higher
             keep prob wins and the others are duplicates.
- hungarian: one linear assignment over log softmax(scores) + log keep prob.
- sinkhorn:  Sinkhorn-normalise exp(scores) into a doubly-stochastic matrix, then assign.
- identity:  slot k takes offset k (no reordering; the ablation).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

SINKHORN_ITERATIONS = 30


@dataclass
class Assignment:
    offsets: list[int | None]  # 1-based offset of each slot; None: lost a collision
    sinkhorn: np.ndarray | None = None  # (K, K) doubly-stochastic matrix, sinkhorn only


def assign_offsets(strategy: str, scores: np.ndarray, keep_probs: np.ndarray) -> Assignment:
    """scores (K slots, K offsets) logits, keep_probs (K,) -> an offset per slot."""
    return STRATEGY_FUNCTIONS[strategy](scores, keep_probs)


def rotary_assignment(scores: np.ndarray, keep_probs: np.ndarray) -> Assignment:
    best = scores.argmax(axis=1)
    offsets: list[int | None] = [None] * len(best)
    for slot in np.argsort(-keep_probs, kind="stable"):  # most confident slot claims first
        if best[slot] + 1 not in offsets:
            offsets[slot] = int(best[slot]) + 1
    return Assignment(offsets)


def hungarian_assignment(scores: np.ndarray, keep_probs: np.ndarray) -> Assignment:
    gain = _log_softmax(scores, axis=1) + np.log(np.clip(keep_probs, 1e-9, 1.0))[:, None]
    return Assignment(_linear_assignment(gain))


def sinkhorn_assignment(scores: np.ndarray, keep_probs: np.ndarray) -> Assignment:
    log_plan = sinkhorn_log(scores)
    return Assignment(_linear_assignment(log_plan), sinkhorn=np.exp(log_plan))


def identity_assignment(scores: np.ndarray, keep_probs: np.ndarray) -> Assignment:
    return Assignment(list(range(1, scores.shape[0] + 1)))


def predicted_maps(scores) -> list[list[int]]:
    """(..., K slots, K offsets) scores or score probabilities -> each slot's best offset index,
    one map per score matrix: where the head itself places its slots."""
    array = np.asarray(scores)
    return np.argmax(array, axis=-1).tolist() if array.size else []


def map_variety(maps: list[list[int]]) -> float:
    """Share of steps whose slot -> offset map (see `predicted_maps`) differs from the most
    common map: 0 when the shuffle is a constant map, the identity or any other."""
    if not maps:
        return 0.0
    counts = Counter(tuple(m) for m in maps)
    return 1 - counts.most_common(1)[0][1] / len(maps)


def sinkhorn_log(scores: np.ndarray, iterations: int = SINKHORN_ITERATIONS) -> np.ndarray:
    """Alternately normalise rows and columns of exp(scores), in log space."""
    log_plan = scores.astype(np.float64)
    for _ in range(iterations):
        log_plan = _log_softmax(log_plan, axis=1)
        log_plan = _log_softmax(log_plan, axis=0)
    return log_plan


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _linear_assignment(gain: np.ndarray) -> list[int | None]:
    slots, offsets = linear_sum_assignment(gain, maximize=True)
    assigned: list[int | None] = [None] * gain.shape[0]
    for slot, offset in zip(slots, offsets, strict=True):
        assigned[slot] = int(offset) + 1
    return assigned


STRATEGY_FUNCTIONS = {
    "rotary": rotary_assignment,
    "hungarian": hungarian_assignment,
    "sinkhorn": sinkhorn_assignment,
    "identity": identity_assignment,
}
