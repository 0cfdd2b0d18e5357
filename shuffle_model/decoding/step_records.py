"""Per-step records (StepTrace) and whole-run traces (GenerationTrace), built from what the
loop did, only for those who asked for them (hooks, stream, return_trace)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .planning import Plan
from .proposers import (
    CONTEXT,
    HEAD,
    Chain,
)
from .settings import GenerationSettings
from .trace import (
    ACCEPTED,
    COST_CUT,
    EMITTED,
    FROM_ANCHOR,
    REJECTED,
    ContextTrace,
    GenerationTrace,
    PlanTrace,
    SlotTrace,
    StepTrace,
    TokenInfo,
    Totals,
)
from .tree import Block

if TYPE_CHECKING:
    from .loop import StepResult


TRACE_TOP_K = 5  # candidates recorded per slot


def token_text(tokenizer, token_id: int) -> str | None:
    if tokenizer is None:
        return None
    return tokenizer.decode([token_id])


def token_info(tokenizer, token_id: int, prob: float) -> TokenInfo:
    """A token for a trace: id, text, probability, and whether it is a special token (the end
    of the answer, say), which pictures show as a marker rather than as text."""
    special = tokenizer is not None and token_id in _special_ids(tokenizer)
    return TokenInfo(token_id, token_text(tokenizer, token_id), prob, special)


def _special_ids(tokenizer) -> frozenset[int]:
    cached = getattr(tokenizer, "_shufflelm_special_ids", None)
    if cached is None:
        cached = frozenset(tokenizer.all_special_ids)
        tokenizer._shufflelm_special_ids = cached
    return cached


def build_step_trace(tok, step: StepResult, *, verified: bool) -> StepTrace:
    """The record of a step, for those who asked for one (hooks, stream, return_trace); `tok`
    (a tokenizer or None) gives the tokens' texts."""
    block, plan, draft = step.block, step.plan, step.head_draft
    path = step.verdict.path if step.verdict is not None else []
    head = step.chains.get(HEAD)
    slots = head_slots(tok, draft, head, plan, block, path, verified) if head is not None else []
    context = context_trace(tok, step.chains.get(CONTEXT), plan, block, path)
    emitted = [token_info(tok, *step.anchor)]
    sources = [FROM_ANCHOR]
    for node in path:
        emitted.append(drafted_token_info(block, node, slots, head, context))
        sources.append(block.sources[node])
    return StepTrace(
        index=step.index,
        anchor=emitted[0],
        slots=slots,
        shuffle_probs=draft.scores.softmax(-1).tolist() if draft is not None else [],
        sinkhorn=None if draft is None or draft.sinkhorn is None else draft.sinkhorn.tolist(),
        block_order=list(draft.block[: plan.head]) if draft is not None else [],
        emitted=emitted,
        forwarded_ids=list(block.tokens) if block is not None else [],
        timings_ms=step.timings,
        context=context,
        plan=plan_trace(plan, head_rested=step.head_rested)
        if step.chains or step.head_rested
        else None,
        forwarded_parents=list(block.parents) if block is not None else [],
        emitted_sources=sources,
    )


def head_slots(tok, draft, chain: Chain, plan: Plan, block, path, verified) -> list[SlotTrace]:
    """Every slot of the step: its token and candidates, offset, and what became of it."""
    top_probs, top_ids = draft.probs.float().topk(TRACE_TOP_K, dim=-1)  # (K, top)
    top_probs, top_ids = top_probs.cpu().tolist(), top_ids.cpu().tolist()
    drafted = draft.probs.gather(-1, draft.tokens[:, None].to(draft.probs.device))[:, 0].tolist()
    in_chain = {slot: k for k, slot in enumerate(draft.block)}
    on_path = set(path)
    slots = []
    for k, token in enumerate(draft.tokens.tolist()):
        status, accept_prob = draft.statuses[k], None
        if k in in_chain:
            position = in_chain[k]
            accept_prob = chain.accept_probs[position]
            if position >= plan.head:
                status = COST_CUT
            elif not verified:
                status = EMITTED
            else:
                status = ACCEPTED if block.head_nodes[position] in on_path else REJECTED
        slots.append(
            SlotTrace(
                index=k,
                token=token_info(tok, token, float(drafted[k])),
                candidates=[
                    token_info(tok, i, p) for i, p in zip(top_ids[k], top_probs[k], strict=True)
                ],
                keep_prob=float(draft.keep_probs[k]),
                offset=draft.offsets[k],
                status=status,
                accept_prob=accept_prob,
            )
        )
    return slots


def context_trace(tok, chain: Chain | None, plan: Plan, block, path) -> ContextTrace | None:
    if chain is None:
        return None
    on_path = set(path)
    statuses = []
    for k in range(len(chain.tokens)):
        if k >= plan.context:
            statuses.append(COST_CUT)
        else:
            statuses.append(ACCEPTED if block.context_nodes[k] in on_path else REJECTED)
    return ContextTrace(
        tokens=[
            token_info(tok, t, p) for t, p in zip(chain.tokens, chain.accept_probs, strict=True)
        ],
        accept_probs=list(chain.accept_probs),
        statuses=statuses,
        match_length=chain.match_length,
        match_end=chain.match_end,
    )


def drafted_token_info(block: Block, node: int, slots, head: Chain | None, context) -> TokenInfo:
    """The emitted draft at `node`, as its source drafted it."""
    if node in block.head_nodes and head is not None:
        slot = head.slots[block.head_nodes.index(node)]
        return slots[slot].token
    return context.tokens[block.context_nodes.index(node)]


def plan_trace(plan: Plan, *, head_rested: bool) -> PlanTrace:
    return PlanTrace(
        rule=plan.rule,
        head_drafts=plan.head,
        context_drafts=plan.context,
        shared=plan.shared,
        expected_tokens=plan.expected_tokens,
        cost=plan.cost,
        ordinary_rate=plan.ordinary_rate,
        next_rate=plan.next_rate,
        head_rested=head_rested,
        padding=plan.padding,
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
