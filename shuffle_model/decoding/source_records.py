"""What a draft source records of its own proposal, for the step's StepTrace.

The records of a step (step_records.py) are built without knowing which sources ran: each
proposal may carry details (`DraftTree.details`) whose `trace_fields` say what belongs in
the StepTrace. The shuffle head records its K slots (`SlotTrace`, the shuffle matrix, the
block order); the context records its chain and the match it came from (`ContextTrace`).
A source without details records nothing of its own; its forwarded nodes are still in the
step's `forwarded_*` lists.
"""

from __future__ import annotations

from .trace import ACCEPTED, COST_CUT, EMITTED, REJECTED, ContextTrace, SlotTrace, TokenInfo

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


def node_status(forwarded: bool, accepted: bool, *, verified: bool) -> str:
    """What became of one proposed node: cost_cut (not worth checking), emitted (pure mode),
    accepted or rejected."""
    if not forwarded:
        return COST_CUT
    if not verified:
        return EMITTED
    return ACCEPTED if accepted else REJECTED


def slot_records(tok, draft, chain_probs: list[float], statuses: list[str]) -> list[SlotTrace]:
    """Every slot of the head's step: its token and candidates, offset, and what became of
    it. `chain_probs[i]` and `statuses[i]` belong to the slot at offset i + 1 (draft.block[i]);
    the filter's verdict stands for slots outside the chain."""
    top_probs, top_ids = draft.probs.float().topk(TRACE_TOP_K, dim=-1)  # (K, top)
    top_probs, top_ids = top_probs.cpu().tolist(), top_ids.cpu().tolist()
    drafted = draft.probs.gather(-1, draft.tokens[:, None].to(draft.probs.device))[:, 0].tolist()
    in_chain = {slot: k for k, slot in enumerate(draft.block)}
    slots = []
    for k, token in enumerate(draft.tokens.tolist()):
        status, accept_prob = draft.statuses[k], None
        if k in in_chain:
            status, accept_prob = statuses[in_chain[k]], chain_probs[in_chain[k]]
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


def context_record(tok, tree, match, statuses: list[str]) -> ContextTrace:
    """The context's chain (its nodes in depth order) and the match it followed. Branches
    beside the chain are in the step's tree (its forwarded nodes), not here."""
    m = match.chain
    probs = tree.accept_probs[:m]
    return ContextTrace(
        tokens=[token_info(tok, t, p) for t, p in zip(tree.tokens[:m], probs, strict=True)],
        accept_probs=list(probs),
        statuses=list(statuses[:m]),
        match_length=match.match_length,
        match_end=match.match_end,
    )
