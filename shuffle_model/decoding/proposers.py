"""Draft sources behind one small interface, as transformers' candidate generators are.

A draft source reads the decoding state (`DraftInput`) and proposes a small tree of drafts
after the anchor (`DraftTree`; a chain is a tree): each node has a token, a parent (the anchor
or an earlier node), its rank among its siblings from this source, and its estimated chance of
being accepted given that its parent was. After verification the source hears which of its
nodes were checked and which were accepted (`Outcome`), and corrects its estimates for the
rest of the generation. The loop, the planner, the tree builder and the records handle every
source alike: they never ask which one it is.

- HeadProposer: the shuffle head's K slots, shuffled into offsets and filtered (its chain,
  calibrated per offset); where trees are allowed, beside it the next-best tokens of the slots
  at offsets 1 and 2, each followed by the chain's next draft (Medusa's sparse trees).
- ContextProposer: the last tokens looked up in the prompt and the output so far (an n-gram
  match, as prompt lookup decoding does); the draft is what followed the match's most recent
  occurrence, and its chances come from the match length and what context drafts had
  accepted so far; where trees are allowed, earlier occurrences that went on otherwise add
  branches beside it.

A third, CorpusProposer (corpus.py), drafts what followed the same words in the backbone's own
earlier answers. A new source is one class: subclass `DraftSource`, give it a `name`, `propose`
and (optionally) `observe`, and pass it to generate() as `extra_sources=[TheClass]`; or give it
a name in `sources.SOURCE_CLASSES` and `settings.DRAFT_SOURCES` to make it a `draft_source`
setting.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model.calibration import MAX_MATCH, Calibration
from ..model.sequence import SequenceCache
from .filtering import filter_slots
from .sampling import TokenSampler
from .shuffle import assign_offsets
from .source_records import context_record, slot_records
from .trace import COST_CUT

HEAD = "head"
CONTEXT = "context"
SOURCES = (HEAD, CONTEXT)
MAX_NGRAM = 4  # longest suffix looked up in the context
MAX_CONTEXT_DRAFTS = 10  # longest context chain (Hugging Face's prompt lookup default)
MAX_CONTEXT_BRANCHES = 3  # earlier occurrences' other continuations beside the chain (trees)
MAX_CONTEXT_OCCURRENCES = 16  # earlier occurrences of the match read, the most recent first
PRIOR_WEIGHT = 4.0  # pseudo-observations behind a prior acceptance estimate
MAX_ACCEPT_PROB = 0.98  # no estimate is ever certain
HEAD_TOP_K = 3  # the head's alternatives: its slots' 2nd and 3rd tokens ...
ALTERNATIVE_OFFSETS = 2  # ... at offsets 1 and 2


@dataclass
class DraftInput:
    """What a draft source reads at the start of a step: the part of the loop's state
    (loop.LoopState, which also holds the cache and the output) that drafting needs."""

    tokens: list[int]  # the prompt, the output so far and the anchor
    hidden: torch.Tensor  # (H,) the backbone's hidden state where the anchor was chosen
    anchor: int  # the backbone's own next token, emitted whatever the drafts
    history: list[torch.Tensor] = field(default_factory=list)  # (n, H) chunks: the hidden
    # state at every position of tokens but the anchor, a chunk per pass, in order


@dataclass
class DraftTree:
    """One source's proposal for this step: n nodes after the anchor, parents before
    children. A chain (parents None) has node i at offset i + 1, each after the one before."""

    source: str  # the proposing source's name
    tokens: list[int]  # (n,) a token per node
    accept_probs: list[float]  # (n,) P(node accepted | its parent was), estimated
    parents: list[int] | None = None  # (n,) -1: the anchor, else an earlier node
    ranks: list[int] | None = None  # (n,) rank among its siblings from this source (0: first)
    draft_probs: torch.Tensor | None = None  # (n, V) what each node was sampled from; None:
    # chosen (speculative sampling then puts all of q on the token itself)
    token_probs: list[float] | None = None  # (n,) the source's own probability of each token
    details: object | None = None  # what the source records of its step (see source_records)

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if self.parents is None:
            self.parents = list(range(-1, n - 1))
        if self.ranks is None:
            self.ranks = [0] * n
        if not n == len(self.accept_probs) == len(self.parents) == len(self.ranks):
            raise ValueError("a DraftTree needs a token, a chance, a parent and a rank per node")
        if any(not -1 <= p < node for node, p in enumerate(self.parents)):
            raise ValueError(f"a node's parent must come before it; got parents {self.parents}")

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, token: int, parent: int, accept_prob: float, rank: int, token_prob=None) -> int:
        """Append a node; returns its index."""
        self.tokens.append(int(token))
        self.parents.append(parent)
        self.accept_probs.append(float(accept_prob))
        self.ranks.append(rank)
        if self.token_probs is not None:
            self.token_probs.append(float(token_prob))
        return len(self.tokens) - 1

    def on_first_choice(self) -> list[bool]:
        """Per node: on the source's own chain (rank 0 at every node from the anchor down)."""
        main: list[bool] = []
        for node, parent in enumerate(self.parents):
            main.append(self.ranks[node] == 0 and (parent < 0 or main[parent]))
        return main


Chain = DraftTree  # a chain is a tree: DraftTree(source, tokens, accept_probs)


@dataclass
class Outcome:
    """What verification made of one proposal: its nodes forwarded, and those accepted."""

    checked: list[int]  # proposal nodes the backbone checked, in order
    accepted: list[int]  # proposal nodes on the accepted path, root to leaf

    def trials(self, tree: DraftTree) -> list[int]:
        """The checked nodes that were a fair trial of their chance: parent accepted (or the
        anchor); a node whose parent was rejected tells nothing."""
        accepted = set(self.accepted)
        return [n for n in self.checked if tree.parents[n] < 0 or tree.parents[n] in accepted]


class DraftSource:
    """The interface of a draft source. Override `propose` (and `observe` to learn from the
    outcomes); the rest has defaults. A source is made fresh for each generation."""

    name: str = ""  # unique among a generation's sources; names its nodes in the records
    gate = None  # a HeadGate that lets the source rest while it does not pay, or None
    rested = False  # the gate kept the source from proposing this step

    def propose(self, inputs: DraftInput, *, budget: int, branching: bool) -> DraftTree | None:
        """Nodes at depth 1..budget at most (None or empty: nothing to propose); siblings only
        where `branching` (greedy decoding on a cache that can drop branches)."""
        raise NotImplementedError

    def observe(self, tree: DraftTree, outcome: Outcome) -> None:
        """The backbone checked `outcome.checked` of the tree's nodes and accepted some."""

    def drafting_cost(self, curve) -> float:
        """What proposing costs per step, in one-token passes (the cost curve's units)."""
        return 0.0

    @classmethod
    def check(cls, model) -> None:
        """Raise ValueError if this source cannot draft for `model` (checked before a
        generation by name starts, so that the message comes before any work)."""


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


# --- the shuffle head --------------------------------------------------------------------------


class HeadGate:
    """A source drafts only while it pays for itself. After each step it drafted, `weigh` hears
    what its proposal added to the step's expected rate (the plan against the best plan
    without it, its own cost included); while that running gain is below zero the source
    rests, for 2, 4, 8 ... 32 steps, then drafts once to look again. The head has one."""

    def __init__(self, *, longest_rest: int = 32):
        self.gain: float | None = None  # running expected gain, tokens per one-token pass
        self.resting = 0  # steps left to rest
        self.rest = 2  # the next rest's length
        self.longest_rest = longest_rest

    def take_rest(self) -> bool:
        """Called once per step: while the source is resting, uses up one step of its rest
        and returns True (the source sits this step out); else returns False (it drafts)."""
        if self.resting > 0:
            self.resting -= 1
            return True
        return False

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
    top_tokens: torch.Tensor | None = None  # (K, k) each slot's k best tokens (alternatives)
    top_probs: torch.Tensor | None = None  # (K, k) the slot's softmax probability of each, float32

    def trace_fields(self, tok, tree: DraftTree, statuses: list[str]) -> dict:
        """The StepTrace fields of the head: its slots, shuffle, block order. The tree's
        first len(block) nodes are the chain, slot block[i] at offset i + 1."""
        m = len(self.block)
        checked = [slot for slot, s in zip(self.block, statuses[:m], strict=True) if s != COST_CUT]
        return {
            "slots": slot_records(tok, self, tree.accept_probs[:m], statuses[:m]),
            "shuffle_probs": self.scores.softmax(-1).tolist(),
            "sinkhorn": None if self.sinkhorn is None else self.sinkhorn.tolist(),
            "block_order": checked,
        }


class HeadProposer(DraftSource):
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
        self.correction = OnlineCorrection()  # for the chain's calibrated chances
        self.alternatives = OnlineCorrection()  # for the estimated chances of the rest
        self.last: HeadDraft | None = None  # the latest step's slots, for its trace
        self._estimates: list[float] = []  # uncorrected chance per node of the latest tree
        self._chain = 0  # nodes of the latest tree that are its chain
        self.reader = SequenceReader(model) if model.head.sequence is not None else None

    @classmethod
    def from_settings(cls, model, settings, sampler: TokenSampler, *, record: bool):
        return cls(
            model,
            sampler=sampler,
            strategy=settings.shuffle_strategy,
            keep_threshold=settings.keep_threshold,
            calibration=model.calibration,
            full_probs=record or not sampler.greedy,
            gate=HeadGate() if settings.block_length == "cost" else None,  # planning.COST
        )

    def drafting_cost(self, curve) -> float:
        return curve.draft_cost if curve is not None else 0.0

    def propose(self, inputs: DraftInput, *, budget: int, branching: bool = False):
        self.last = None
        self.rested = self.gate is not None and self.gate.take_rest()
        if self.rested:
            return None  # the head has not paid for itself lately
        top_k = HEAD_TOP_K if branching else 0
        context = None if self.reader is None else self.reader.context(inputs)
        draft = draft_slots(
            self.model,
            inputs.hidden,
            inputs.anchor,
            self.sampler,
            self.full_probs,
            top_k=top_k,
            context=context,
        )
        self.last = self.place_slots(draft, budget)
        tree = self.chain_of(draft)
        if branching:
            self._estimates += add_alternatives(
                tree, draft, self._estimates, self.alternatives, self.calibration
            )
        return tree

    def place_slots(self, draft: HeadDraft, budget: int) -> HeadDraft:
        """The shuffle gives each slot an offset; the filter keeps the run 1..m (m <= budget)."""
        keep = np.asarray(draft.keep_probs)
        assignment = assign_offsets(self.strategy, draft.scores.numpy(), keep)
        kept = filter_slots(
            assignment.offsets,
            draft.keep_probs,
            keep_threshold=self.keep_threshold,
            max_offset=budget,
        )
        draft.offsets, draft.sinkhorn = assignment.offsets, assignment.sinkhorn
        draft.statuses, draft.block = kept.statuses, kept.block
        return draft

    def chain_of(self, draft: HeadDraft) -> DraftTree:
        """The filter's block as a chain: p_i the slot's keep probability, calibrated for
        offset i and corrected by this generation's outcomes."""
        block = draft.block
        raw = [draft.keep_probs[slot] for slot in block]
        self._estimates = self.calibration.head_probs(raw, range(1, len(block) + 1))
        self._chain = len(block)
        return DraftTree(
            source=HEAD,
            tokens=draft.tokens[block].tolist(),
            accept_probs=self.correction.apply(self._estimates),
            draft_probs=None if draft.probs is None or self.sampler.greedy else draft.probs[block],
            token_probs=None if draft.probs is None else slot_probs(draft, block),
            details=draft,
        )

    def observe(self, tree: DraftTree, outcome: Outcome) -> None:
        accepted = set(outcome.accepted)
        trials = outcome.trials(tree)
        for correction, nodes in (
            (self.correction, [n for n in trials if n < self._chain]),
            (self.alternatives, [n for n in trials if n >= self._chain]),
        ):
            hits = sum(1 for n in nodes if n in accepted)
            correction.update([self._estimates[n] for n in nodes], hits)


def slot_probs(draft: HeadDraft, slots: list[int], tokens=None) -> list[float]:
    """Each slot's probability of its token (default: the token it drafted)."""
    tokens = draft.tokens[slots] if tokens is None else torch.as_tensor(tokens)
    rows = draft.probs[slots]  # (n, V)
    return rows.gather(-1, tokens[:, None].to(rows.device))[:, 0].float().tolist()


def add_alternatives(
    tree: DraftTree, draft: HeadDraft, chain: list[float], correction, calibration: Calibration
) -> list:
    """Beside the chain, the next-best tokens of the slots at offsets 1..ALTERNATIVE_OFFSETS
    as siblings of the chain's node there, each followed by the chain's next token: the head
    drafts every slot at once from h_t, so its guess for offset i + 1 does not depend on which
    token wins at offset i (Medusa's sparse trees do the same). `chain`: the chain's
    calibrated chances. Returns the uncorrected chance of each node added."""
    estimates = []
    m = len(draft.block)
    for offset in range(1, min(m, ALTERNATIVE_OFFSETS) + 1):
        slot = draft.block[offset - 1]
        for rank, token, prob, ratio in runners_up(draft, slot, tree.tokens[offset - 1]):
            chance = alternative_chance(calibration, offset, rank, prob, chain[offset - 1] * ratio)
            token_prob = None if draft.probs is None else float(draft.probs[slot, token])
            node = tree.add(token, offset - 2, correction.apply([chance])[0], rank, token_prob)
            estimates.append(chance)
            if offset < m:  # the chain's next token after the alternative (same estimate)
                follow = None if tree.token_probs is None else tree.token_probs[offset]
                nxt = correction.apply([chain[offset]])[0]
                tree.add(tree.tokens[offset], node, nxt, 0, follow)
                estimates.append(chain[offset])
    return estimates


def alternative_chance(
    calibration: Calibration, offset: int, rank: int, prob: float, estimate: float
) -> float:
    """The chance that a slot's token of this rank (1: its second best) is accepted at this
    offset, given the chain before it was: the calibration's map of the slot's probability of
    it where the head has one; else `estimate` (the chain's chance there x p(token) / p(top))."""
    calibrated = calibration.alternative_prob(offset, rank + 1, prob)
    return estimate if calibrated is None else calibrated


def runners_up(draft: HeadDraft, slot: int, chosen: int) -> list[tuple[int, int, float, float]]:
    """(rank, token, p(token), p(token) / p(top token)) of the slot's next-best tokens."""
    probs = draft.top_probs[slot].tolist()  # (k,)
    return [
        (rank, int(token), probs[rank], probs[rank] / probs[0])
        for rank, token in enumerate(draft.top_tokens[slot].tolist())
        if rank > 0 and token != chosen
    ]


class SequenceReader:
    """A head's sequence layer over one generation (model/sequence.py): each position's keys and
    values once, when it is in the history; z_t at the anchor's position when the head drafts."""

    def __init__(self, model):
        self.model = model
        self.cache = SequenceCache()
        self.chunks = 0  # chunks of the history already cached

    def context(self, inputs: DraftInput) -> torch.Tensor:
        """(W,) z_t, t the anchor's position, from the positions 0..t."""
        hidden = torch.cat(inputs.history[self.chunks :])  # (n, H or 2H): positions not cached
        self.chunks = len(inputs.history)
        start = self.cache.length
        ids = inputs.tokens[start : start + len(hidden) + 1]  # x_i and the token after each
        if len(ids) != len(hidden) + 1 or start + len(ids) != len(inputs.tokens):
            raise RuntimeError("the history and the tokens of a generation disagree")
        ids = torch.tensor(ids, device=hidden.device)
        rows = self.model.sequence_rows(hidden[None], ids[None])  # (1, n, W)
        layer = self.model.head.sequence
        queries = self.cache.extend(layer, rows)  # (1, heads, n, d)
        return self.cache.query(layer, rows[:, -1:], queries[:, :, -1:])

    def rewind(self, inputs: DraftInput) -> None:
        """Back to where the reader stood after reading `inputs` (the cost curve's timing)."""
        self.cache.crop(len(inputs.tokens) - 1)
        self.chunks = len(inputs.history)


def top_probabilities(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k best columns and their softmax probabilities (temperature 1), float32:
    logits (..., N) -> probabilities (..., k), columns (..., k), best first."""
    logits = logits.float()
    top_logits, columns = logits.topk(k, dim=-1)
    return (top_logits - logits.logsumexp(-1, keepdim=True)).exp(), columns


def draft_slots(
    model,
    hidden: torch.Tensor,
    anchor: int,
    sampler: TokenSampler,
    full_probs: bool,
    top_k=0,
    context: torch.Tensor | None = None,
) -> HeadDraft:
    """The head's K slots at h_t: a token per slot (greedy or sampled), keep probs, scores;
    with `top_k`, each slot's top_k tokens and their probabilities (the alternatives).
    `context`: the sequence layer's z_t, for a head that has one."""
    anchor_ids = torch.tensor(anchor, device=hidden.device)
    out = model.draft(hidden, anchor_ids, context)  # logits (K, N), scores (K, K), keep (K,)
    if sampler.greedy and not full_probs:
        probs, tokens = None, out.logits.argmax(-1)  # (K,) columns of the draft vocabulary
    else:
        probs = sampler.probs(out.logits)  # (K, N)
        tokens = sampler.choose(out.logits, probs)
    top_probs, top_tokens = top_probabilities(out.logits, top_k) if top_k else (None, None)
    if out.vocab is not None:  # back to token ids, and distributions over the whole vocabulary
        tokens = out.vocab[tokens]
        top_tokens = None if top_tokens is None else out.vocab[top_tokens]
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
        top_tokens=None if top_tokens is None else top_tokens.cpu(),
        top_probs=None if top_probs is None else top_probs.cpu(),
    )


# --- the context -------------------------------------------------------------------------------


@dataclass
class ContextMatch:
    """Where the context's chain came from: what it records in the step's trace."""

    match_length: int  # tokens of the suffix that matched
    match_end: int  # where the matched tokens end in the sequence (exclusive)
    chain: int  # the tree's first `chain` nodes are the chain; the rest, branches beside it

    def trace_fields(self, tok, tree: DraftTree, statuses: list[str]) -> dict:
        return {"context": context_record(tok, tree, self, statuses)}


class ContextProposer(DraftSource):
    """n-gram lookup in the prompt and the output so far, with an index kept up to date.

    The chain is what followed the most recent occurrence of the longest match. Where trees
    are allowed, beside it come the continuations of earlier occurrences of the same match
    that go on otherwise (the most shared first, up to MAX_CONTEXT_BRANCHES), each from where
    it leaves the chain: a list that repeats with a different item, a sentence said twice
    with another ending."""

    name = CONTEXT

    def __init__(
        self,
        calibration: Calibration,
        *,
        max_ngram: int = MAX_NGRAM,
        max_drafts: int = MAX_CONTEXT_DRAFTS,
        max_branches: int = MAX_CONTEXT_BRANCHES,
    ):
        self.calibration = calibration
        self.max_ngram = max_ngram
        self.max_drafts = max_drafts
        self.max_branches = max_branches
        self.ends: list[dict[tuple[int, ...], list[int]]] = [{} for _ in range(max_ngram + 1)]
        # ends[n][gram]: where each occurrence of the n-gram ends (exclusive), oldest first
        self.indexed = 0  # n-grams ending (exclusive) at 1..indexed are in `ends`
        self.counts: dict[tuple[int, bool], list[float]] = {}  # (match, first) -> [accepted, n]
        self.branches = OnlineCorrection()  # for the estimated chances of the branches' nodes
        self._estimates: list[float] = []  # the last tree's uncorrected chances of branches

    @classmethod
    def from_settings(cls, model, settings, sampler: TokenSampler, *, record: bool):
        return cls(model.calibration)

    def propose(self, inputs: DraftInput, *, budget: int, branching: bool = False):
        tokens = inputs.tokens
        self._index(tokens, until=len(tokens) - 1)  # every earlier n-gram with a continuation
        match = self._longest_match(tokens)
        if match is None:
            return None
        length, ends = match  # oldest first
        depth = min(budget, self.max_drafts)
        drafts = tokens[ends[-1] : ends[-1] + depth]
        if not drafts:
            return None
        tree = DraftTree(
            source=CONTEXT,
            tokens=drafts,
            accept_probs=[self.estimate(length, d) for d in range(1, len(drafts) + 1)],
            details=ContextMatch(length, ends[-1], len(drafts)),
        )
        self._estimates = []
        if branching and self.max_branches:
            latest = ends[-MAX_CONTEXT_OCCURRENCES:][::-1]  # the most recent first
            rows = [tokens[end : end + depth] for end in latest]
            self._estimates = add_branches(
                tree,
                rows,
                chance=lambda d: self.estimate(length, d),
                correction=self.branches,
                max_branches=self.max_branches,
            )
        return tree

    def estimate(self, match_length: int, depth: int) -> float:
        """Prior acceptance for this match length and depth, updated by this generation's."""
        key = (min(match_length, MAX_MATCH), depth == 1)
        accepted, trials = self.counts.get(key, (0.0, 0.0))
        prior = self.calibration.context_prior(match_length, depth)
        estimate = (accepted + PRIOR_WEIGHT * prior) / (trials + PRIOR_WEIGHT)
        return min(estimate, MAX_ACCEPT_PROB)

    def observe(self, tree: DraftTree, outcome: Outcome) -> None:
        accepted = set(outcome.accepted)
        trials = outcome.trials(tree)
        chain = tree.details.chain
        for node in trials:
            if node < chain:  # the chain: node k is at depth k + 1
                key = (min(tree.details.match_length, MAX_MATCH), node == 0)
                counts = self.counts.setdefault(key, [0.0, 0.0])
                counts[0] += node in accepted
                counts[1] += 1
        branched = [n for n in trials if n >= chain]
        hits = sum(1 for n in branched if n in accepted)
        self.branches.update([self._estimates[n - chain] for n in branched], hits)

    def _index(self, tokens: list[int], *, until: int) -> None:
        for end in range(self.indexed + 1, until + 1):
            for n in range(1, min(self.max_ngram, end) + 1):
                self.ends[n].setdefault(tuple(tokens[end - n : end]), []).append(end)
        self.indexed = max(self.indexed, until)

    def _longest_match(self, tokens: list[int]) -> tuple[int, list[int]] | None:
        """(n, ends): the longest suffix of n tokens seen before, and where its occurrences
        end (exclusive), the oldest first."""
        for n in range(min(self.max_ngram, len(tokens) - 1), 0, -1):
            ends = self.ends[n].get(tuple(tokens[-n:]))
            if ends:
                return n, ends
        return None


def add_branches(tree: DraftTree, rows, *, chance, correction, max_branches: int) -> list[float]:
    """Beside the chain (rows[0], the most recent occurrence's continuation), the
    continuations of other occurrences (rows[1:], the more recent first) where they leave it:
    up to `max_branches` branches, the ones most rows share first, each drafted as the most
    recent row that takes it goes on. A node's chance is the chain's estimate at its depth
    (`chance(depth)`) times the share of the rows through its parent that go on with it.
    Returns the uncorrected chance of each node added."""
    # a prefix -> how many rows start with it
    shared = Counter(tuple(row[:d]) for row in rows for d in range(1, len(row) + 1))
    chain = tuple(rows[0])
    leaving: dict[tuple[int, ...], int] = {}  # a branch's first prefix -> the row drafting it
    for i, row in enumerate(rows[1:], start=1):
        pairs = enumerate(zip(row, chain, strict=False))
        d = next((d for d, (token, on_chain) in pairs if token != on_chain), None)
        if d is not None:  # leaves the chain at depth d + 1
            leaving.setdefault(tuple(row[: d + 1]), i)
    best = sorted(leaving, key=lambda p: (-shared[p], leaving[p]))[:max_branches]
    estimates = []
    siblings: dict[int, int] = {}  # a chain node (-1: the anchor) -> branches added under it
    for first in best:
        row, d = rows[leaving[first]], len(first) - 1
        parent = d - 1  # the chain's node before it (-1: the anchor)
        rank = siblings[parent] = siblings.get(parent, 0) + 1  # the chain's node is rank 0
        for depth in range(d + 1, len(row) + 1):
            prefix = tuple(row[:depth])
            estimate = chance(depth) * shared[prefix] / shared.get(prefix[:-1], len(rows))
            node = tree.add(row[depth - 1], parent, correction.apply([estimate])[0], rank)
            estimates.append(estimate)
            parent, rank = node, 0
    return estimates
