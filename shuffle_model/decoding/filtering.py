"""The filter: which assigned slots form this step's block of drafts.

Slots are dropped as duplicate (lost a collision), out_of_range (offset past the step's
budget), or low_confidence (keep prob below the threshold). The block is the contiguous run
of offsets 1..m among the survivors; survivors after the first hole are after_gap. This is
ShuffleLM's dynamic length: m changes every step.
"""

from __future__ import annotations

from dataclasses import dataclass

from .trace import AFTER_GAP, DUPLICATE, LOW_CONFIDENCE, OUT_OF_RANGE


@dataclass
class FilterResult:
    statuses: list[str | None]  # per slot; None for the block's slots (verification decides)
    block: list[int]  # slot indices of the block, in offset order 1..m


def filter_slots(
    offsets: list[int | None], keep_probs, *, keep_threshold: float, max_offset: int
) -> FilterResult:
    statuses: list[str | None] = [None] * len(offsets)
    survivors: dict[int, int] = {}  # offset -> slot
    for slot, offset in enumerate(offsets):
        if offset is None:
            statuses[slot] = DUPLICATE
        elif offset > max_offset:
            statuses[slot] = OUT_OF_RANGE
        elif keep_probs[slot] < keep_threshold:
            statuses[slot] = LOW_CONFIDENCE
        else:
            survivors[offset] = slot
    block = []
    while len(block) + 1 in survivors:
        block.append(survivors.pop(len(block) + 1))
    for slot in survivors.values():
        statuses[slot] = AFTER_GAP
    return FilterResult(statuses, block)


def accepted_prefix(block: list[int], tokens, targets) -> int:
    """How many of the block's drafts greedy verification keeps when the true continuation is
    known: slot block[i]'s token `tokens[block[i]]` against `targets[i]`, up to the first miss."""
    for position, slot in enumerate(block):
        if tokens[slot] != targets[position]:
            return position
    return len(block)


def known_step(
    offsets, keep_probs, tokens, targets, *, keep_threshold: float, max_offset: int
) -> tuple[int, int]:
    """One drafting step against a known continuation: the drafts the filter sends to
    verification, and how many of them greedy verification accepts."""
    block = filter_slots(offsets, keep_probs, keep_threshold=keep_threshold, max_offset=max_offset)
    return len(block.block), accepted_prefix(block.block, tokens, targets)
