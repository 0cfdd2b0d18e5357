"""Draft sources behind one small interface, as transformers' candidate generators are.

A proposer looks at the decoding state and proposes a chain of drafts for the offsets after
the anchor, each with p_i, its estimated chance of being accepted given that the drafts
before it were; after verification it hears how many of the drafts it proposed were checked
and how many were accepted, and corrects its estimates for the rest of the generation.

- HeadProposer: the shuffle head's K slots, shuffled into offsets and filtered; p_i is the
  slot's keep probability, calibrated per offset (calibration.py) and corrected online.
- ContextProposer: the last tokens looked up in the prompt and the output so far (an n-gram
  match, as prompt lookup decoding does); the draft is what followed the match, and p_i comes
  from the match length and what context drafts had accepted so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from ..model.calibration import MAX_MATCH, Calibration
from .filtering import filter_slots
from .sampling import TokenSampler
from .shuffle import assign_offsets

HEAD = "head"
CONTEXT = "context"
SOURCES = (HEAD, CONTEXT)
MAX_NGRAM = 4  # longest suffix looked up in the context
MAX_CONTEXT_DRAFTS = 10  # longest context chain (Hugging Face's prompt lookup default)
PRIOR_WEIGHT = 4.0  # pseudo-observations behind a prior acceptance estimate
MAX_ACCEPT_PROB = 0.98  # no estimate is ever certain


@dataclass
class DecodeState:
    """What proposers see at the start of a step."""

    tokens: list[int]  # the prompt, the output so far and the anchor
    hidden: torch.Tensor  # (H,) the backbone's hidden state where the anchor was chosen
    anchor: int  # the backbone's own next token, emitted whatever the drafts


@dataclass
class Chain:
    """One source's drafts for offsets 1..m after the anchor."""

    source: str  # HEAD or CONTEXT
    tokens: list[int]  # d_1..d_m
    accept_probs: list[float]  # p_i = P(d_i accepted | d_1..d_(i-1) accepted), estimated
    draft_probs: torch.Tensor | None = None  # (m, V) what each draft was drawn from; None: chosen
    slots: list[int] = field(default_factory=list)  # HEAD: the slot behind each draft
    match_length: int = 0  # CONTEXT: tokens of the suffix that matched
    match_end: int = -1  # CONTEXT: where the matched tokens end in the sequence (exclusive)

    def __len__(self) -> int:
        return len(self.tokens)

    def one_hot_probs(self, vocab_size: int, device) -> torch.Tensor:
        """(m, V) draft distributions; a chosen (not sampled) draft has all its mass on itself."""
        if self.draft_probs is not None:
            return self.draft_probs
        probs = torch.zeros(len(self.tokens), vocab_size, device=device)
        probs[torch.arange(len(self.tokens)), torch.tensor(self.tokens)] = 1.0
        return probs


class Proposer(Protocol):
    name: str  # HEAD or CONTEXT

    def propose(self, state: DecodeState, *, budget: int) -> Chain | None:
        """Drafts for offsets 1..budget at most (None or empty: nothing to propose)."""

    def observe(self, chain: Chain, *, checked: int, accepted: int) -> None:
        """The backbone checked the first `checked` drafts of `chain` and accepted `accepted`."""


# --- online correction -------------------------------------------------------------------------


class OnlineCorrection:
    """Scales predicted acceptance by what verification has accepted so far in this generation:
    (accepted + w) / (predicted + w), w pseudo-drafts of agreement with the prediction."""

    def __init__(self, weight: float = PRIOR_WEIGHT):
        self.weight = weight
        self.predicted = 0.0  # sum of the (uncorrected) p_i of every checked draft
        self.accepted = 0.0  # how many of them were accepted

    @property
    def factor(self) -> float:
        return (self.accepted + self.weight) / (self.predicted + self.weight)

    def apply(self, probs: list[float]) -> list[float]:
        factor = self.factor
        return [min(p * factor, MAX_ACCEPT_PROB) for p in probs]

    def update(self, predicted: list[float], accepted: int) -> None:
        self.predicted += sum(predicted)
        self.accepted += accepted


def checked_trials(checked: int, accepted: int) -> int:
    """Drafts that were a fair trial of p_i: those whose predecessors were all accepted."""
    return min(accepted + 1, checked)


# --- the shuffle head --------------------------------------------------------------------------


class HeadGate:
    """The head drafts only while it pays for itself. After each step it drafted, `weigh` hears
    what its chain added to the step's expected rate (the plan against the best plan without
    it, the head's own cost included); while that running gain is below zero the head rests,
    for 2, 4, 8 ... 32 steps, then drafts once to look again."""

    def __init__(self, *, longest_rest: int = 32):
        self.gain: float | None = None  # running expected gain, tokens per one-token pass
        self.resting = 0  # steps left to rest
        self.rest = 2  # the next rest's length
        self.longest_rest = longest_rest

    def open(self) -> bool:
        if self.resting > 0:
            self.resting -= 1
            return False
        return True

    def weigh(self, gain: float) -> None:
        self.gain = gain if self.gain is None else 0.5 * self.gain + 0.5 * gain
        if self.gain < 0:
            self.resting = self.rest
            self.rest = min(2 * self.rest, self.longest_rest)
        else:
            self.rest = 2


@dataclass
class HeadDraft:
    """One step's K slots and what the shuffle and the filter made of them (for traces)."""

    tokens: torch.Tensor  # (K,) drafted token per slot, on the CPU
    probs: torch.Tensor | None  # (K, V) distribution each token was drawn from (when needed)
    keep_probs: list[float]  # (K,) sigmoid of the keep logits
    scores: torch.Tensor  # (K, K) shuffle score logits, on the CPU
    offsets: list[int | None]  # offset of each slot (None: lost a collision)
    sinkhorn: object  # (K, K) doubly-stochastic matrix (sinkhorn strategy) or None
    statuses: list[str | None]  # the filter's verdict per slot (None: in the block)
    block: list[int]  # slots forming the contiguous block, in offset order 1..m


class HeadProposer:
    name = HEAD

    def __init__(
        self,
        model,
        *,
        sampler: TokenSampler,
        strategy: str,
        keep_threshold: float,
        calibration: Calibration,
        full_probs: bool,
        gate: HeadGate | None = None,
    ):
        self.model = model
        self.gate = gate  # None: draft at every step
        self.rested = False  # whether the gate kept the head from drafting this step
        self.sampler = sampler
        self.strategy = strategy
        self.keep_threshold = keep_threshold
        self.calibration = calibration
        self.full_probs = full_probs  # build (K, V) draft distributions (sampling, traces)
        self.correction = OnlineCorrection()
        self.last: HeadDraft | None = None  # the latest step's slots, for its trace
        self._calibrated: list[float] = []

    def propose(self, state: DecodeState, *, budget: int) -> Chain | None:
        self.last = None
        self.rested = self.gate is not None and not self.gate.open()
        if self.rested:
            return None  # the head has not paid for itself lately
        draft = draft_slots(self.model, state.hidden, state.anchor, self.sampler, self.full_probs)
        assignment = assign_offsets(
            self.strategy, draft.scores.numpy(), np.asarray(draft.keep_probs)
        )
        kept = filter_slots(
            assignment.offsets,
            draft.keep_probs,
            keep_threshold=self.keep_threshold,
            max_offset=budget,
        )
        draft.offsets, draft.sinkhorn = assignment.offsets, assignment.sinkhorn
        draft.statuses, draft.block = kept.statuses, kept.block
        self.last = draft
        block = kept.block
        raw = [draft.keep_probs[slot] for slot in block]
        self._calibrated = self.calibration.head_probs(raw, range(1, len(block) + 1))
        return Chain(
            source=HEAD,
            tokens=draft.tokens[block].tolist(),
            accept_probs=self.correction.apply(self._calibrated),
            draft_probs=None if draft.probs is None else draft.probs[block],
            slots=list(block),
        )

    def observe(self, chain: Chain, *, checked: int, accepted: int) -> None:
        trials = checked_trials(checked, accepted)
        self.correction.update(self._calibrated[:trials], accepted)


def draft_slots(
    model, hidden: torch.Tensor, anchor: int, sampler: TokenSampler, full_probs: bool
) -> HeadDraft:
    """The head's K slots at h_t: a token per slot (greedy or sampled), keep probs, scores."""
    anchor_ids = torch.tensor(anchor, device=hidden.device)
    out = model.draft(hidden, anchor_ids)  # logits (K, N), scores (K, K), keep (K,)
    if sampler.greedy and not full_probs:
        probs, tokens = None, out.logits.argmax(-1)  # (K,) columns of the draft vocabulary
    else:
        probs = sampler.probs(out.logits)  # (K, N)
        tokens = sampler.choose(out.logits, probs)
    if out.vocab is not None:  # back to token ids, and distributions over the whole vocabulary
        tokens = out.vocab[tokens]
        if probs is not None:
            full = probs.new_zeros(probs.shape[0], model.config.vocab_size)
            probs = full.scatter_(1, out.vocab.expand(probs.shape[0], -1), probs)
    return HeadDraft(
        tokens=tokens.cpu(),
        probs=probs,
        keep_probs=out.keep_logits.float().sigmoid().cpu().tolist(),
        scores=out.shuffle_scores.float().cpu(),
        offsets=[],
        sinkhorn=None,
        statuses=[],
        block=[],
    )


# --- the context -------------------------------------------------------------------------------


class ContextProposer:
    """n-gram lookup in the prompt and the output so far, with an index kept up to date."""

    name = CONTEXT

    def __init__(
        self,
        calibration: Calibration,
        *,
        max_ngram: int = MAX_NGRAM,
        max_drafts: int = MAX_CONTEXT_DRAFTS,
    ):
        self.calibration = calibration
        self.max_ngram = max_ngram
        self.max_drafts = max_drafts
        self.latest: list[dict[tuple[int, ...], int]] = [{} for _ in range(max_ngram + 1)]
        self.indexed = 0  # n-grams ending (exclusive) at 1..indexed are in `latest`
        self.counts: dict[tuple[int, bool], list[float]] = {}  # (match, first) -> [accepted, n]

    def propose(self, state: DecodeState, *, budget: int) -> Chain | None:
        tokens = state.tokens
        self._index(tokens, until=len(tokens) - 1)  # every earlier n-gram with a continuation
        match = self._longest_match(tokens)
        if match is None:
            return None
        length, end = match
        drafts = tokens[end : end + min(budget, self.max_drafts)]
        if not drafts:
            return None
        return Chain(
            source=CONTEXT,
            tokens=drafts,
            accept_probs=[self.estimate(length, depth) for depth in range(1, len(drafts) + 1)],
            match_length=length,
            match_end=end,
        )

    def estimate(self, match_length: int, depth: int) -> float:
        """Prior acceptance for this match length and depth, updated by this generation's."""
        key = (min(match_length, MAX_MATCH), depth == 1)
        accepted, trials = self.counts.get(key, (0.0, 0.0))
        prior = self.calibration.context_prior(match_length, depth)
        estimate = (accepted + PRIOR_WEIGHT * prior) / (trials + PRIOR_WEIGHT)
        return min(estimate, MAX_ACCEPT_PROB)

    def observe(self, chain: Chain, *, checked: int, accepted: int) -> None:
        for depth in range(1, checked_trials(checked, accepted) + 1):
            key = (min(chain.match_length, MAX_MATCH), depth == 1)
            counts = self.counts.setdefault(key, [0.0, 0.0])
            counts[0] += depth <= accepted
            counts[1] += 1

    def _index(self, tokens: list[int], *, until: int) -> None:
        for end in range(self.indexed + 1, until + 1):
            for n in range(1, min(self.max_ngram, end) + 1):
                self.latest[n][tuple(tokens[end - n : end])] = end
        self.indexed = max(self.indexed, until)

    def _longest_match(self, tokens: list[int]) -> tuple[int, int] | None:
        """(n, end): the longest suffix of n tokens seen before, ending (exclusive) at end."""
        for n in range(min(self.max_ngram, len(tokens) - 1), 0, -1):
            end = self.latest[n].get(tuple(tokens[-n:]))
            if end is not None:
                return n, end
        return None
