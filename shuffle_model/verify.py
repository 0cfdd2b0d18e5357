"""Verification: keep the longest prefix of the block the backbone itself would have produced.

Greedy: argmax equality. Sampling: speculative sampling (Leviathan et al. 2023), accept d_i
with probability min(1, p_i(d_i) / q_i(d_i)) and, at the first rejection, resample the next
token from the residual max(0, p_i - q_i); the output then follows the backbone's own
sampling distribution exactly. Pure parallel mode (verify=False) keeps the whole block.
Generation ends at EOS, so no token after an emitted EOS is ever kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import TokenSampler


@dataclass
class Verdict:
    accepted: int  # n: drafts d_1..d_n are kept
    next_anchor: int  # the backbone's token after d_n: the next step's anchor
    next_anchor_prob: float  # its probability under the backbone's distribution


def verify_block(
    *,
    target_logits: torch.Tensor,
    block_tokens: torch.Tensor,
    draft_probs: torch.Tensor | None,
    sampler: TokenSampler,
    verify: bool,
    eos_ids: tuple[int, ...],
) -> Verdict:
    """target_logits (m+1, V): the backbone's logits after the anchor and each draft;
    block_tokens (m,): the drafts; draft_probs (m, V): the distributions they were drawn from."""
    target_probs = sampler.probs(target_logits)  # (m+1, V)
    m = block_tokens.shape[0]
    if not verify:
        accepted, residual = m, None
    elif sampler.greedy:
        accepted, residual = _greedy_prefix(target_logits, block_tokens), None
    else:
        accepted, residual = _speculative_prefix(target_probs, block_tokens, draft_probs, sampler)
    accepted = _stop_at_eos(block_tokens, accepted, eos_ids)
    if residual is not None and accepted == residual[0]:
        next_anchor = residual[1]
    else:
        row = target_logits[accepted]
        next_anchor = int(sampler.choose(row, target_probs[accepted]))
    return Verdict(accepted, next_anchor, float(target_probs[accepted, next_anchor]))


def _greedy_prefix(target_logits: torch.Tensor, block_tokens: torch.Tensor) -> int:
    agree = target_logits[:-1].argmax(-1) == block_tokens  # (m,)
    return int(agree.long().cumprod(0).sum())


def _speculative_prefix(
    target_probs: torch.Tensor,
    block_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    sampler: TokenSampler,
) -> tuple[int, tuple[int, int] | None]:
    """Accepted count, and (position, resampled token) where a draft was rejected."""
    for i, token in enumerate(block_tokens.tolist()):
        p, q = target_probs[i, token].item(), draft_probs[i, token].item()
        if sampler.uniform() * q < p:
            continue
        residual = (target_probs[i] - draft_probs[i]).clamp(min=0)
        if residual.sum() <= 0:  # p == q up to rounding: the residual is p itself
            residual = target_probs[i]
        return i, (i, int(sampler.sample(residual / residual.sum())))
    return len(block_tokens), None


def _stop_at_eos(block_tokens: torch.Tensor, accepted: int, eos_ids: tuple[int, ...]) -> int:
    for i, token in enumerate(block_tokens[:accepted].tolist()):
        if token in eos_ids:
            return i + 1
    return accepted
