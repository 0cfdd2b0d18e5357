"""Draft sources, trees and the cost-aware loop: lossless whatever is drafted and chosen."""

from __future__ import annotations

import collections
import itertools

import pytest
import torch

from shuffle_model import STRATEGIES, GenerationTrace
from shuffle_model.decoding.cost import CostCurve
from shuffle_model.decoding.planning import plan_step
from shuffle_model.decoding.proposers import (
    CONTEXT,
    HEAD,
    ContextProposer,
    DraftInput,
    DraftSource,
    DraftTree,
    Outcome,
)
from shuffle_model.decoding.settings import DRAFT_SOURCES
from shuffle_model.decoding.tree import build_block, keep_nodes, tree_inputs
from shuffle_model.model.calibration import Calibration
from tests.tiny import TINY_VOCAB, greedy_answers, tiny_backbone, tiny_corpus, tiny_mixer

FLAT = CostCurve.from_ratios([1.0] * 24)  # every pass costs the same: check every draft
STEEP = CostCurve.from_ratios([float(n) for n in range(1, 25)])  # a pass over n costs n
# as measured on a 2-core EPYC: passes over 2-3 tokens cost more than over 4-5 (filler pays)
JAGGED = CostCurve.from_ratios([1.0, 1.9, 2.0, 1.3, 1.25] + [1.25 + 0.1 * n for n in range(19)])
REPEATING = [[7, 8, 9, 10, 7, 8, 9, 10, 7, 8], [5, 6, 5, 6, 5, 6, 5], [11, 12, 13, 11, 12]]


def state(tokens):
    return DraftInput(tokens=list(tokens), hidden=torch.zeros(1), anchor=tokens[-1])


def test_context_drafts_are_found_in_a_prompt_that_repeats_itself():
    proposer = ContextProposer(Calibration())
    chain = proposer.propose(state([1, 2, 3, 4, 5, 6, 1, 2, 3]), budget=5)
    assert chain.tokens == [4, 5, 6, 1, 2]
    assert chain.details.match_length == 3 and chain.details.match_end == 3
    # one proposer per generation: it indexes the sequence as it grows
    assert ContextProposer(Calibration()).propose(state([1, 2, 3, 4]), budget=5) is None
    # the most recent occurrence wins, and the budget caps the chain
    chain = ContextProposer(Calibration()).propose(state([9, 1, 7, 1, 8, 1]), budget=1)
    assert chain.tokens == [8] and chain.details.match_length == 1


def test_context_estimates_follow_what_was_accepted():
    proposer = ContextProposer(Calibration())
    tokens = [1, 2, 3, 4, 5, 1, 2, 3]
    chain = proposer.propose(state(tokens), budget=4, branching=False)
    before = list(chain.accept_probs)
    for _ in range(5):
        proposer.observe(chain, Outcome(checked=[0, 1, 2, 3], accepted=[0, 1, 2, 3]))
    after = proposer.propose(state(tokens), budget=4, branching=False).accept_probs
    assert all(a > b for a, b in zip(after, before, strict=True))
    for _ in range(20):
        proposer.observe(chain, Outcome(checked=[0, 1, 2, 3], accepted=[]))
    assert proposer.propose(state(tokens), budget=4, branching=False).accept_probs[0] < before[0]


def test_the_context_branches_where_an_earlier_occurrence_went_on_otherwise():
    # "1 2 3" was followed by "4 5 6 1 2" most recently and by "7 8 5 1 2" before that
    tokens = [1, 2, 3, 7, 8, 5, 1, 2, 3, 4, 5, 6, 1, 2, 3]
    chain = ContextProposer(Calibration()).propose(state(tokens), budget=5, branching=False)
    assert chain.tokens == [4, 5, 6, 1, 2] and chain.parents == [-1, 0, 1, 2, 3]
    tree = ContextProposer(Calibration()).propose(state(tokens), budget=5, branching=True)
    assert tree.tokens == [4, 5, 6, 1, 2, 7, 8, 5, 1, 2]
    assert tree.parents == [-1, 0, 1, 2, 3, -1, 5, 6, 7, 8]  # beside the chain, from the anchor
    assert tree.ranks[5] == 1 and tree.details.chain == 5
    assert tree.accept_probs[:5] == chain.accept_probs  # the chain's chances are unchanged
    assert tree.accept_probs[5] == pytest.approx(chain.accept_probs[0] / 2)  # 1 of 2 rows
    # an occurrence that agrees with the chain for a while branches off where it leaves it
    tokens = [1, 2, 3, 4, 9, 9, 1, 2, 3, 4, 5, 6, 1, 2, 3]
    tree = ContextProposer(Calibration()).propose(state(tokens), budget=3, branching=True)
    assert tree.tokens == [4, 5, 6, 9, 9] and tree.parents == [-1, 0, 1, 0, 3]
    # and one that goes on as the chain does adds nothing
    tokens = [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 1, 2, 3]
    tree = ContextProposer(Calibration()).propose(state(tokens), budget=3, branching=True)
    assert tree.tokens == [4, 5, 6]


def test_the_context_branches_learn_apart_from_its_chain():
    tokens = [1, 2, 3, 7, 8, 5, 1, 2, 3, 4, 5, 6, 1, 2, 3]
    proposer = ContextProposer(Calibration())
    before = proposer.propose(state(tokens), budget=5, branching=True).accept_probs
    for _ in range(5):  # only the branch was checked, and it was right
        tree = proposer.propose(state(tokens), budget=5, branching=True)
        proposer.observe(tree, Outcome(checked=[5, 6], accepted=[5, 6]))
    after = proposer.propose(state(tokens), budget=5, branching=True).accept_probs
    assert after[:5] == before[:5]
    assert all(a > b for a, b in zip(after[5:], before[5:], strict=True))
    for _ in range(5):  # only the chain was checked, and it was wrong
        tree = proposer.propose(state(tokens), budget=5, branching=True)
        proposer.observe(tree, Outcome(checked=[0], accepted=[]))
    later = proposer.propose(state(tokens), budget=5, branching=True).accept_probs
    assert later[0] < after[0]
    assert later[5] / later[0] == pytest.approx(after[5] / after[0])  # same correction


def forward_path(backbone_mixer, prefix, path_tokens):
    cache = backbone_mixer.new_cache()
    backbone_mixer.trunk_forward(torch.tensor([prefix]), cache=cache)
    out = backbone_mixer.trunk_forward(torch.tensor([path_tokens]), cache=cache)
    return out, cache


@pytest.mark.parametrize("branch", [HEAD, CONTEXT])
def test_a_tree_step_keeps_the_cache_identical_to_plain_decodings(mixer, branch):
    prefix = [5, 6, 7, 8]
    head = DraftTree(HEAD, [20, 21, 22], [0.9, 0.5, 0.5])
    context = DraftTree(CONTEXT, [20, 30, 31, 32], [0.9, 0.4, 0.4, 0.4])
    plan = plan_step([head, context], FLAT, rule="cost", budget=10, tree=True)
    block = build_block(9, plan)
    assert not block.is_chain and block.sources[1] == "head+context"
    cache = mixer.new_cache()
    mixer.trunk_forward(torch.tensor([prefix]), cache=cache)
    past = cache.get_seq_length()
    mask, positions = tree_inputs(block, past=past, dtype=mixer.dtype, device=mixer.device)
    tree = mixer.trunk_forward(
        torch.tensor([block.tokens]), cache=cache, attention_mask=mask, position_ids=positions
    )
    at = block.nodes_from(branch)  # the branch's chain node -> block node
    nodes = [at[k] for k in sorted(at)]
    chosen = head if branch == HEAD else context
    keep_nodes(cache, past=past, forwarded=len(block.tokens), keep=[0, *nodes])
    plain, plain_cache = forward_path(mixer, prefix, [9, *chosen.tokens])
    assert cache.get_seq_length() == plain_cache.get_seq_length()
    for layer, plain_layer in zip(cache.layers, plain_cache.layers, strict=True):
        torch.testing.assert_close(layer.keys, plain_layer.keys)
        torch.testing.assert_close(layer.values, plain_layer.values)
    torch.testing.assert_close(tree.logits[0, [0, *nodes]], plain.logits[0])
    # and decoding goes on from that cache as it would have
    after = mixer.trunk_forward(torch.tensor([[40]]), cache=cache).logits
    again = mixer.trunk_forward(torch.tensor([[40]]), cache=plain_cache).logits
    torch.testing.assert_close(after, again)


def count_steps(trace):
    trees = sum(
        1
        for s in trace.steps
        if s.forwarded_parents and any(p != i - 1 for i, p in enumerate(s.forwarded_parents))
    )
    context = sum(1 for s in trace.steps if "context" in s.emitted_sources)
    return trees, context


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_verified_greedy_is_lossless_for_every_source_and_rule(strategy):
    """Identical to the backbone's greedy decoding for every strategy x source x rule, on
    prompts that repeat themselves (so that the context drafts) and with a flat cost curve
    (so that trees of both chains are checked), a steep one, and a jagged one (so that passes
    are padded with filler tokens)."""
    trees = context_steps = padded = corpus_steps = 0
    for seed, prompt in enumerate(REPEATING):
        backbone = tiny_backbone(seed=seed)
        model = tiny_mixer(backbone, seed=seed + 10)
        # the corpus: this backbone's answers to the other prompts, and random text
        others = [p for p in REPEATING if p != prompt]
        model.corpus = tiny_corpus(model, greedy_answers(model, others), seed=seed, noise=40)
        ids = torch.tensor([prompt])
        expected = backbone.generate(ids, max_new_tokens=24, do_sample=False).tolist()
        for source, rule, curve in itertools.product(
            DRAFT_SOURCES, ("cost", "fixed"), (FLAT, STEEP, JAGGED)
        ):
            model.cost_curve = curve
            out, trace = model.generate(
                ids,
                max_new_tokens=24,
                shuffle_strategy=strategy,
                draft_source=source,
                block_length=rule,
                return_trace=True,
            )
            assert out.tolist() == expected, (source, rule, curve.ratios[1])
            found = count_steps(trace)
            trees += found[0]
            context_steps += found[1]
            corpus_steps += sum(1 for s in trace.steps if "corpus" in s.forwarded_sources)
            if rule == "cost" and curve is STEEP:
                assert all(len(s.forwarded_ids) <= 1 for s in trace.steps)
            fillers = [s.plan.padding for s in trace.steps if s.plan is not None]
            if rule == "fixed" or curve is not JAGGED:
                assert not any(fillers)
            padded += sum(1 for f in fillers if f)
    assert trees > 0 and context_steps > 0 and padded > 0  # every path was really taken
    assert corpus_steps > 0


def test_context_branches_are_checked_and_decoding_stays_lossless():
    """Every token of the prompt occurs twice, followed by other tokens each time: whatever
    the sequence ends with, the context has an earlier occurrence that went on otherwise, so
    its trees branch; the output is still the backbone's greedy decoding."""
    order = torch.randperm(TINY_VOCAB - 3, generator=torch.Generator().manual_seed(0)) + 3
    prompt = list(range(3, TINY_VOCAB)) + order.tolist()
    backbone = tiny_backbone(seed=4)
    model = tiny_mixer(backbone, seed=5)
    model.cost_curve = FLAT
    ids = torch.tensor([prompt])
    expected = backbone.generate(ids, max_new_tokens=24, do_sample=False).tolist()
    out, trace = model.generate(ids, max_new_tokens=24, draft_source="context", return_trace=True)
    assert out.tolist() == expected
    branched = 0
    for step in trace.steps:
        siblings = collections.Counter(step.forwarded_parents[1:])  # node 0 is the anchor
        branched += any(count > 1 for count in siblings.values())
    assert branched > 0


def test_steep_costs_give_ordinary_decoding_and_flat_costs_draft():
    backbone = tiny_backbone(seed=1)
    model = tiny_mixer(backbone, seed=3)
    ids = torch.tensor([REPEATING[0]])
    model.cost_curve = STEEP
    _, steep = model.generate(ids, max_new_tokens=20, keep_threshold=0.0, return_trace=True)
    assert all(s.plan is None or s.plan.drafts == 0 for s in steep.steps)
    assert steep.totals.backbone_forwards == steep.totals.new_tokens  # prefill + one per token
    model.cost_curve = FLAT
    _, flat = model.generate(ids, max_new_tokens=20, keep_threshold=0.0, return_trace=True)
    assert any(s.plan is not None and s.plan.drafts > 0 for s in flat.steps)


def test_a_stream_snapshot_carries_the_cost_curve_it_plans_with(mixer):
    mixer.cost_curve = FLAT
    run = mixer.stream(torch.tensor([REPEATING[0]]), max_new_tokens=8)
    first = next(iter(run))
    assert first.plan is not None
    assert run.snapshot().cost_curve == FLAT.to_dict()
    plain = mixer.stream(torch.tensor([REPEATING[0]]), max_new_tokens=8, max_parallel_tokens=0)
    next(iter(plain))
    assert plain.snapshot().cost_curve is None  # nothing was planned


def test_drafts_projected_in_bfloat16_stay_lossless():
    """Where the machine multiplies bfloat16 faster, drafts may be projected in it; the anchors
    and the verification stay in the model's dtype, so the output does not change."""
    backbone = tiny_backbone(seed=4, dtype=torch.float32)
    model = tiny_mixer(backbone, seed=6, draft_vocab_size=40)
    model.set_draft_vocab(torch.arange(3, 43))
    model.cost_curve = FLAT
    model.corpus = tiny_corpus(model, greedy_answers(model, REPEATING[::2]), noise=20)
    ids = torch.tensor([REPEATING[1]])
    expected = backbone.generate(ids, max_new_tokens=20, do_sample=False).tolist()
    hidden = torch.randn(4, 32)
    plain = model.draft_logits(hidden)
    model.draft_projection_dtype = torch.bfloat16
    fast = model.draft_logits(hidden)
    assert fast.dtype == plain.dtype and not torch.equal(fast, plain)
    torch.testing.assert_close(fast, plain, atol=0.05, rtol=0.05)
    for source in DRAFT_SOURCES:
        assert model.generate(ids, max_new_tokens=20, draft_source=source).tolist() == expected


class FixedChainSource(DraftSource):
    """A third draft source, defined here and nowhere else: it always proposes 7, 8, 9 with
    a high chance, and counts what it hears back."""

    name = "fixed-chain"

    def __init__(self):
        self.checked = self.accepted = 0

    def propose(self, state, *, budget, branching):
        return DraftTree(self.name, [7, 8, 9][:budget], [0.9, 0.9, 0.9][:budget])

    def observe(self, tree, outcome):
        self.checked += len(outcome.checked)
        self.accepted += len(outcome.accepted)


def test_a_third_source_passed_in_keeps_greedy_decoding_identical():
    made = []

    def fixed_chain():
        made.append(FixedChainSource())
        return made[-1]

    for seed, prompt in enumerate(REPEATING):
        backbone = tiny_backbone(seed=seed)
        model = tiny_mixer(backbone, seed=seed + 10)
        model.cost_curve = FLAT
        model.corpus = tiny_corpus(model, [], noise=20)
        ids = torch.tensor([prompt])
        expected = backbone.generate(ids, max_new_tokens=24, do_sample=False).tolist()
        for source in DRAFT_SOURCES:
            out, trace = model.generate(
                ids,
                max_new_tokens=24,
                draft_source=source,
                extra_sources=[fixed_chain],
                return_trace=True,
            )
            assert out.tolist() == expected, source
            forwarded = {s for step in trace.steps for s in step.forwarded_sources}
            assert "fixed-chain" in forwarded and source.split("+")[0] in forwarded
            assert GenerationTrace.from_json(trace.to_json()).steps[1].forwarded_sources
        # sampling checks one chain (whichever source's is best): it runs with the third too
        model.generate(ids, max_new_tokens=8, do_sample=True, seed=1, extra_sources=[fixed_chain])
    assert all(source.checked > 0 for source in made)  # each generation got a fresh one
    assert sum(source.accepted for source in made) > 0  # 7, 8, 9 do occur in these answers
    with pytest.raises(ValueError, match="distinct"):
        model.generate(ids, max_new_tokens=4, extra_sources=[FixedChainSource, FixedChainSource])
    with pytest.raises(ValueError, match="verify=True"):  # pure mode emits the head's, unchecked
        model.generate(ids, max_new_tokens=4, verify=False, extra_sources=[FixedChainSource])


def test_records_name_each_forwarded_node_and_the_accepted_path():
    """Trees with the head's alternatives: each forwarded node's parent, sources, rank and
    path chance are recorded, and the accepted path gives the emitted drafts; the trace
    round-trips through JSON."""
    alternatives = accepted_alternatives = 0
    for seed, prompt in enumerate(REPEATING):
        model = tiny_mixer(tiny_backbone(seed=seed), seed=seed + 10)
        model.cost_curve = FLAT
        _, trace = model.generate(torch.tensor([prompt]), max_new_tokens=24, return_trace=True)
        trace = GenerationTrace.from_json(trace.to_json())
        for step in trace.steps:
            n = len(step.forwarded_ids)
            assert len(step.forwarded_sources) == len(step.forwarded_ranks) == n
            assert len(step.forwarded_chances) == n
            path = step.accepted_path
            assert [step.forwarded_ids[k] for k in path] == [t.id for t in step.emitted[1:]]
            assert [step.forwarded_sources[k] for k in path] == step.emitted_sources[1:]
            parents = [step.forwarded_parents[k] for k in path]
            assert parents == [0, *path][: len(path)]  # a path from the anchor down
            alternatives += sum(1 for rank in step.forwarded_ranks if rank > 0)
            accepted_alternatives += sum(1 for k in path if step.forwarded_ranks[k] > 0)
            if step.plan is not None and n > 1:
                assert (
                    step.plan.drafts
                    == n - 1
                    == sum(step.plan.source_drafts.values()) - (step.plan.shared)
                )
    assert alternatives > 0 and accepted_alternatives > 0
