"""Fitting the calibration maps: replay answers step by step, record each draft's estimate and
whether it was accepted, fit isotonic maps per offset (the command: cli/calibrate.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..decoding.proposers import (
    ALTERNATIVE_OFFSETS,
    HEAD_TOP_K,
    ContextProposer,
    DraftInput,
    top_probabilities,
)
from ..decoding.shuffle import assign_offsets
from ..model.calibration import MAX_MATCH, Calibration, IsotonicMap, alternative_key
from ..model.calibration import expected_calibration_error as ece
from .distill import load_examples

MIN_PER_OFFSET = 200  # offsets with fewer outcomes share the map of the offset before


@dataclass
class Outcomes:
    """Replayed decoding steps: what was predicted and whether it was accepted."""

    head: list[tuple[int, int, float, bool]] = field(default_factory=list)
    # (example, offset, keep prob, accepted given the drafts before it were)
    context: list[tuple[int, int, int, bool]] = field(default_factory=list)
    # (example, match length, depth, accepted given the drafts before it were)
    alternatives: list[tuple[int, int, int, float, float, float, bool]] = field(
        default_factory=list
    )
    # (example, offset, place, the slot's probability of its token of that place, that over the
    #  slot's top probability, the keep prob of the chain's slot there, accepted given the chain
    #  before it was): the next-best tokens a tree checks beside the chain


TOP_K = HEAD_TOP_K  # the replay's best tokens per slot: the ones trees check (fitted, reported)


@dataclass
class ReplayedSteps:
    """Every answer position t of one greedy answer, replayed as a decoding step (teacher
    forced): what the head drafts at h_t with the true anchor, and where the shuffle puts it."""

    tokens: np.ndarray  # (N, K) each slot's draft token
    keep: np.ndarray  # (N, K) each slot's keep probability
    scores: np.ndarray  # (N, K slots, K offsets) shuffle scores
    offsets: list[list[int | None]]  # per position, each slot's offset (1..K) by the strategy
    targets: np.ndarray  # (N, K) the answer's token at offset p = 1..K after the anchor; -1 past it
    top_tokens: np.ndarray  # (N, K, TOP_K) each slot's TOP_K most likely tokens, best first
    top_probs: np.ndarray  # (N, K, TOP_K) the slot's softmax probability of each


@torch.no_grad()
def replay_steps(model, prompt_ids, answer_ids, *, strategy: str) -> ReplayedSteps:
    """One trunk pass over prompt + answer, then the head at every answer position."""
    sequence = list(prompt_ids) + list(answer_ids)
    ids = torch.tensor([sequence], device=model.device)
    trunk = model.trunk_forward(ids)
    start = len(prompt_ids) - 1  # h_t at the last prompt token chooses the first answer token
    positions = torch.arange(start, len(sequence) - 1, device=model.device)
    anchors = ids[0, positions + 1]  # (N,)
    context = model.sequence_context(trunk.hidden[:, :-1], ids)  # (1, L - 1, W) or None
    if context is not None:  # a head that reads the sequence: z_t at the answer's positions
        context = context[0, positions]  # (N, W)
    draft = model.draft(trunk.hidden[0, positions], anchors, context)  # logits (N, K, V'), ...
    top_probs, top = top_probabilities(draft.logits, TOP_K)  # (N, K, TOP_K) each
    if draft.vocab is not None:
        top = draft.vocab[top]
    tokens = top[..., 0]  # (N, K)
    keep = draft.keep_logits.float().sigmoid().cpu().numpy()  # (N, K)
    scores = draft.shuffle_scores.float().cpu().numpy()  # (N, K, K)
    k = keep.shape[1]
    padded = np.array(sequence + [-1] * (k + 1))
    targets = np.stack([padded[t + 2 : t + 2 + k] for t in positions.tolist()])  # (N, K)
    return ReplayedSteps(
        tokens=tokens.cpu().numpy(),
        keep=keep,
        scores=scores,
        offsets=[assign_offsets(strategy, scores[r], keep[r]).offsets for r in range(len(keep))],
        targets=targets.reshape(-1, k),
        top_tokens=top.cpu().numpy(),
        top_probs=top_probs.cpu().numpy(),
    )


def replay_example(model, prompt_ids, answer_ids, *, example: int, strategy: str, into: Outcomes):
    """Every answer position of one greedy answer, replayed as a decoding step: the head's
    drafts at offsets 1, 2, ... until the first that the backbone would reject."""
    steps = replay_steps(model, prompt_ids, answer_ids, strategy=strategy)
    for row, offsets in enumerate(steps.offsets):
        slot_at = {offset: slot for slot, offset in enumerate(offsets) if offset is not None}
        for offset in range(1, len(offsets) + 1):
            target = int(steps.targets[row, offset - 1])
            if offset not in slot_at or target < 0:
                break
            slot = slot_at[offset]
            accepted = int(steps.tokens[row, slot]) == target
            into.head.append((example, offset, float(steps.keep[row, slot]), accepted))
            if offset <= ALTERNATIVE_OFFSETS:  # a tree's alternatives beside this draft
                record_alternatives(steps, row, slot, offset, target, example=example, into=into)
            if not accepted:
                break
    replay_context(
        list(prompt_ids) + list(answer_ids), len(prompt_ids) - 1, example=example, into=into
    )


def record_alternatives(
    steps: ReplayedSteps, row: int, slot: int, offset: int, target: int, *, example, into
) -> None:
    """The slot's next-best tokens at `offset` (reached: the chain before it was accepted)."""
    probs, keep = steps.top_probs[row, slot], float(steps.keep[row, slot])
    for place in range(2, TOP_K + 1):
        prob = float(probs[place - 1])
        accepted = int(steps.top_tokens[row, slot, place - 1]) == target
        into.alternatives.append(
            (example, offset, place, prob, prob / float(probs[0]), keep, accepted)
        )


def replay_context(sequence: list[int], start: int, *, example: int, into: Outcomes) -> None:
    proposer = ContextProposer(Calibration())
    for t in range(start, len(sequence) - 1):
        state = DraftInput(tokens=sequence[: t + 2], hidden=torch.zeros(1), anchor=sequence[t + 1])
        chain = proposer.propose(state, budget=len(sequence) - t - 2)
        if chain is None:
            continue
        for depth, token in enumerate(chain.tokens, start=1):
            accepted = token == sequence[t + 1 + depth]
            match = chain.details.match_length
            into.context.append((example, min(match, MAX_MATCH), depth, accepted))
            if not accepted:
                break


def fit(outcomes: Outcomes, *, num_slots: int) -> Calibration:
    """Isotonic maps per offset and context rates on even examples; errors on odd ones."""
    head = np.array(outcomes.head, dtype=float).reshape(-1, 4)
    fit_rows, test_rows = head[head[:, 0] % 2 == 0], head[head[:, 0] % 2 == 1]
    maps, report = [], {"offsets": {}}
    for offset in range(1, num_slots + 1):
        rows = fit_rows[fit_rows[:, 1] == offset]
        if len(rows) >= MIN_PER_OFFSET or not maps:
            maps.append(IsotonicMap.fit(rows[:, 2], rows[:, 3]) if len(rows) else None)
        else:
            maps.append(maps[-1])
    if any(m is None for m in maps):
        raise ValueError("too few replayed drafts to calibrate: add more data")
    calibration = Calibration(head=maps)
    raw = test_rows[:, 2]
    calibrated = np.array(
        calibration.head_probs(test_rows[:, 2], test_rows[:, 1].astype(int))
    ).reshape(-1)
    outcome = test_rows[:, 3]
    for offset in range(1, num_slots + 1):
        chosen = test_rows[:, 1] == offset
        report["offsets"][str(offset)] = {
            "fit": int((fit_rows[:, 1] == offset).sum()),
            "test": int(chosen.sum()),
            "accepted": round(float(outcome[chosen].mean()), 4) if chosen.any() else None,
            "ece_raw": round(ece(raw[chosen], outcome[chosen]), 4),
            "ece_calibrated": round(ece(calibrated[chosen], outcome[chosen]), 4),
        }
    report["head"] = {
        "fit": len(fit_rows),
        "test": len(test_rows),
        "ece_raw": round(ece(raw, outcome), 4),
        "ece_calibrated": round(ece(calibrated, outcome), 4),
        "mean_raw": round(float(raw.mean()), 4),
        "mean_calibrated": round(float(calibrated.mean()), 4),
        "mean_accepted": round(float(outcome.mean()), 4),
    }
    context = np.array(outcomes.context, dtype=float).reshape(-1, 4)
    fit_ctx, test_ctx = context[context[:, 0] % 2 == 0], context[context[:, 0] % 2 == 1]
    rates, counts = {}, {}
    for match in range(1, MAX_MATCH + 1):
        pair = []
        for first in (True, False):
            rows = fit_ctx[(fit_ctx[:, 1] == match) & ((fit_ctx[:, 2] == 1) == first)]
            default = calibration.context_prior(match, 1 if first else 2)
            pair.append(round(float(rows[:, 3].mean()), 4) if len(rows) >= 20 else default)
            counts[f"{match}/{'first' if first else 'later'}"] = len(rows)
        rates[str(match)] = tuple(pair)
    calibration.context = rates
    prior = np.array([calibration.context_prior(int(m), int(d)) for _, m, d, _ in test_ctx])
    default = np.array([Calibration().context_prior(int(m), int(d)) for _, m, d, _ in test_ctx])
    report["context"] = {
        "fit": counts,
        "test": len(test_ctx),
        "ece_default": round(ece(default, test_ctx[:, 3]), 4) if len(test_ctx) else None,
        "ece_calibrated": round(ece(prior, test_ctx[:, 3]), 4) if len(test_ctx) else None,
    }
    calibration.report = report
    fit_alternatives(outcomes, calibration)
    return calibration


def fit_alternatives(outcomes: Outcomes, calibration: Calibration) -> None:
    """Isotonic maps of the alternatives' acceptance on the slot's probability of their token,
    per offset and place, on even examples; on odd ones the error of the maps and of the
    estimate without them (the chain's calibrated chance x p(token) / p(top))."""
    rows = np.array(outcomes.alternatives, dtype=float).reshape(-1, 7)
    fit_rows, test_rows = rows[rows[:, 0] % 2 == 0], rows[rows[:, 0] % 2 == 1]
    report = {}
    for offset, place in sorted({(int(r[1]), int(r[2])) for r in rows}):
        key = alternative_key(offset, place)
        chosen = fit_rows[(fit_rows[:, 1] == offset) & (fit_rows[:, 2] == place)]
        if len(chosen) < MIN_PER_OFFSET:
            continue
        calibration.alternatives[key] = IsotonicMap.fit(chosen[:, 3], chosen[:, 6])
        test = test_rows[(test_rows[:, 1] == offset) & (test_rows[:, 2] == place)]
        if not len(test):
            continue
        chain = np.array(calibration.head_probs(test[:, 5], [offset] * len(test)))
        estimate = chain * test[:, 4]
        mapped = calibration.alternatives[key](test[:, 3])
        report[key] = {
            "fit": len(chosen),
            "test": len(test),
            "accepted": round(float(test[:, 6].mean()), 4),
            "mean_estimate_from_chain": round(float(estimate.mean()), 4),
            "mean_calibrated": round(float(mapped.mean()), 4),
            "ece_estimate_from_chain": round(ece(np.minimum(estimate, 1.0), test[:, 6]), 4),
            "ece_calibrated": round(ece(mapped, test[:, 6]), 4),
        }
    calibration.report["alternatives"] = report


def heldout_examples(directories: list[Path], every: int) -> list[tuple[list[int], list[int]]]:
    """Greedy answers of the held-out split (every n-th example, as training holds them out)."""
    examples = load_examples(directories)
    return [
        (e.prompt_ids, e.answer_ids)
        for i, e in enumerate(examples)
        if (every <= 1 or i % every == 0) and not e.sampled and len(e.answer_ids) > 8
    ]
