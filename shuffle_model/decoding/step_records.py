"""What the loop did, and the records built from it for those who ask.

The loop yields a `StepResult` per step and returns a `DecodeResult` at its end; only those
who asked for records (hooks, stream, return_trace) get a StepTrace built from each step and a
GenerationTrace from the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .planning import Plan
from .proposers import DraftTree
from .settings import GenerationSettings
from .source_records import node_status, token_info
from .trace import (
    FROM_ANCHOR,
    FROM_CONTEXT,
    FROM_HEAD,
    GenerationTrace,
    PlanTrace,
    StepTrace,
    TokenInfo,
    Totals,
)
from .tree import Block
from .verify import Verdict


@dataclass
class StepResult:
    """One step as the loop saw it. Per-step records (StepTrace) are built from it only by those
    who asked for them (GenerationStream with record=True)."""

    index: int  # the step's number, from 0
    anchor: tuple[int, float]  # the anchor and its probability
    proposals: dict[str, DraftTree]  # what each source proposed, by source name
    plan: Plan  # which drafts were checked
    block: Block | None  # what the backbone ran over (None: a last step, the anchor alone)
    verdict: Verdict | None  # what verification kept
    emitted: list[int]  # the anchor and the accepted drafts
    timings: dict[str, float]  # per-phase wall times (recorded runs only)
    rested: tuple[str, ...] = ()  # gated sources that sat this step out


@dataclass
class DecodeResult:
    """The whole run as the loop saw it: what it returns at its end."""

    output_ids: list[int]  # the new tokens
    steps: int  # steps taken
    backbone_forwards: int  # backbone passes, the prompt's prefill included
    wall_seconds: float  # generation time, excluding the time the consumer held each step
    cost_curve: dict | None = None  # the cost curve the steps were planned with


def build_step_trace(tok, step: StepResult, *, verified: bool) -> StepTrace:
    """The record of a step, for those who asked for one (hooks, stream, return_trace); `tok`
    (a tokenizer or None) gives the tokens' texts. Every forwarded node's parent, sources,
    rank and path chance, and the accepted path, are recorded whatever the sources; each
    source adds what it records of its own proposal (the head its slots, the context its
    chain: `trace_fields` of the proposal's details)."""
    block, path = step.block, step.verdict.path if step.verdict is not None else []
    fields = dict(slots=[], shuffle_probs=[], sinkhorn=None, block_order=[], context=None)
    for tree in step.proposals.values():
        if tree.details is not None:
            statuses = proposal_statuses(tree, block, path, verified=verified)
            fields.update(tree.details.trace_fields(tok, tree, statuses))
    emitted = [token_info(tok, *step.anchor)]
    emitted += [drafted_token_info(tok, block, node, step.proposals) for node in path]
    return StepTrace(
        index=step.index,
        anchor=emitted[0],
        emitted=emitted,
        forwarded_ids=list(block.tokens) if block is not None else [],
        timings_ms=step.timings,
        plan=plan_trace(step.plan, rested=step.rested) if step.proposals or step.rested else None,
        forwarded_parents=list(block.parents) if block is not None else [],
        emitted_sources=[FROM_ANCHOR] + [block.sources[node] for node in path],
        forwarded_sources=list(block.sources) if block is not None else [],
        forwarded_ranks=list(block.ranks) if block is not None else [],
        forwarded_chances=list(block.chances) if block is not None else [],
        accepted_path=list(path),
        **fields,
    )


def proposal_statuses(tree, block: Block | None, path, *, verified: bool) -> list[str]:
    """Per node of one source's proposal: cost_cut, emitted, accepted or rejected."""
    forwarded = block.nodes_from(tree.source) if block is not None else {}
    on_path = set(path)
    return [
        node_status(k in forwarded, forwarded.get(k) in on_path, verified=verified)
        for k in range(len(tree))
    ]


def drafted_token_info(tok, block: Block, node: int, proposals) -> TokenInfo:
    """The emitted draft at `node`, as its first source drafted it: with the source's own
    probability of it where it has one, else its estimated chance."""
    source, k = block.origins[node][0]
    tree = proposals[source]
    probs = tree.token_probs if tree.token_probs is not None else tree.accept_probs
    return token_info(tok, tree.tokens[k], float(probs[k]))


def plan_trace(plan: Plan, *, rested: tuple[str, ...]) -> PlanTrace:
    """The plan as the trace keeps it. head_drafts, context_drafts and head_rested are the
    trace format's names (version 2) for the two built-in sources; source_drafts counts every
    source's."""
    by_source = plan.drafts_by_source()
    return PlanTrace(
        rule=plan.rule,
        head_drafts=by_source.get(FROM_HEAD, 0),
        context_drafts=by_source.get(FROM_CONTEXT, 0),
        shared=plan.shared,
        expected_tokens=plan.expected_tokens,
        cost=plan.cost,
        ordinary_rate=plan.ordinary_rate,
        next_rate=plan.next_rate,
        head_rested=FROM_HEAD in rested,
        padding=plan.padding,
        draft_nodes=plan.drafts,
        source_drafts=by_source,
    )


def model_description(model) -> dict:
    info = dict(model.model_info())
    info.update(
        num_slots=model.config.num_slots,
        eos_token_ids=list(model.config.eos_token_ids),
        device=str(model.device),
        dtype=str(model.dtype).replace("torch.", ""),
    )
    if getattr(model, "dtype_reason", None):
        info["dtype_reason"] = model.dtype_reason
    return info


def make_trace(
    model,
    prompt: torch.Tensor,
    settings: GenerationSettings,
    steps: list[StepTrace],
    *,
    output_ids: list[int],
    backbone_forwards: int,
    wall_seconds: float,
    cost_curve: dict | None = None,
    tokenizer=None,
) -> GenerationTrace:
    """The run's record; texts from `tokenizer`, else the model's own (None: ids only)."""
    tok = tokenizer or model.tokenizer
    new = len(output_ids)
    return GenerationTrace(
        prompt=None if tok is None else tok.decode(prompt[0].tolist()),
        prompt_ids=prompt[0].tolist(),
        settings=settings.to_dict(),
        model=model_description(model),
        steps=steps,
        output_ids=list(output_ids),
        output_text=None if tok is None else tok.decode(output_ids, skip_special_tokens=True),
        cost_curve=cost_curve,
        totals=Totals(
            new_tokens=new,
            steps=len(steps),
            backbone_forwards=backbone_forwards,
            compression_ratio=new / max(backbone_forwards, 1),
            wall_seconds=wall_seconds,
            tokens_per_second=new / wall_seconds if wall_seconds > 0 else 0.0,
        ),
    )


def trace_of_result(
    model, prompt, settings, steps, result: DecodeResult, tokenizer=None
) -> GenerationTrace:
    """The run's record from what the loop returned and the steps' records."""
    return make_trace(
        model,
        prompt,
        settings,
        steps,
        output_ids=result.output_ids,
        backbone_forwards=result.backbone_forwards,
        wall_seconds=result.wall_seconds,
        cost_curve=result.cost_curve,
        tokenizer=tokenizer,
    )
