"""Verification: keep the longest run of drafts the backbone itself would have produced.

Greedy: a walk down the block (a chain or a small tree) from the anchor, taking at each node
the child whose token is the backbone's argmax there. Sampling: speculative sampling
(Leviathan et al. 2023) along a chain: accept d_i with probability min(1, p_i(d_i) / q_i(d_i))
and, at the first rejection, resample from the residual max(0, p_i - q_i); the output then
follows the backbone's own sampling distribution exactly (a context draft is chosen, not
sampled: its q is all on itself). Pure parallel mode (verify=False) keeps the whole chain.
Generation ends at EOS, so no token after an emitted EOS is ever kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .sampling import TokenSampler
from .tree import Block


@dataclass
class Verdict:
    path: list[int]  # block nodes kept after the anchor, root to leaf
    next_anchor: int  # the backbone's token after the last kept node: the next step's anchor
    next_anchor_prob: float  # its probability under the backbone's distribution

    @property
    def accepted(self) -> int:
        return len(self.path)


class SpeculativePrefix(NamedTuple):
    """What speculative sampling made of a chain's drafts."""

    accepted: int  # drafts accepted before the first rejection (all of them: none rejected)
    resampled: int | None  # the token drawn from the residual at the rejection; None: none


def verify_greedy(
    *, target_logits: torch.Tensor, block: Block, eos_ids: tuple[int, ...]
) -> Verdict:
    """target_logits (n, V): the backbone's logits at every node of the block."""
    choices = target_logits.argmax(-1).tolist()  # (n,) the backbone's token after each node
    children = {
        (parent, token): node
        for node, (parent, token) in enumerate(zip(block.parents, block.tokens, strict=True))
        if parent >= 0
    }
    path, node = [], 0
    while (node, choices[node]) in children:
        node = children[(node, choices[node])]
        path.append(node)
        if block.tokens[node] in eos_ids:
            break
    row = target_logits[node].float()
    prob = float(row.softmax(-1)[choices[node]])
    return Verdict(path, choices[node], prob)


def verify_chain(
    *,
    target_logits: torch.Tensor,
    block_tokens: torch.Tensor,
    draft_probs: torch.Tensor | None,
    sampler: TokenSampler,
    verify: bool,
    eos_ids: tuple[int, ...],
) -> Verdict:
    """Sampling or pure mode along a chain (verified greedy decoding is `verify_greedy`'s).
    target_logits (m+1, V): the backbone's logits after the anchor and each draft; block_tokens
    (m,); draft_probs (m, V): what they were drawn from (not read in pure mode)."""
    if verify and sampler.greedy:
        raise ValueError("verified greedy decoding walks the block: verify_greedy")
    target_probs = sampler.probs(target_logits)  # (m+1, V)
    m = block_tokens.shape[0]
    if not verify:
        prefix = SpeculativePrefix(accepted=m, resampled=None)
    else:
        prefix = _speculative_prefix(target_probs, block_tokens, draft_probs, sampler)
    accepted = _stop_at_eos(block_tokens, prefix.accepted, eos_ids)
    if prefix.resampled is not None and accepted == prefix.accepted:  # not cut short by EOS
        next_anchor = prefix.resampled
    else:
        row = target_logits[accepted]
        next_anchor = int(sampler.choose(row, target_probs[accepted]))
    path = list(range(1, accepted + 1))
    return Verdict(path, next_anchor, float(target_probs[accepted, next_anchor]))


def _speculative_prefix(
    target_probs: torch.Tensor,
    block_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    sampler: TokenSampler,
) -> SpeculativePrefix:
    """Accept draft i with probability min(1, p_i / q_i); at the first rejection, draw the
    token there from the residual max(0, p_i - q_i)."""
    for i, token in enumerate(block_tokens.tolist()):
        p, q = target_probs[i, token].item(), draft_probs[i, token].item()
        if sampler.uniform() * q < p:
            continue
        residual = (target_probs[i] - draft_probs[i]).clamp(min=0)
        if residual.sum() <= 0:  # p == q up to rounding: the residual is p itself
            residual = target_probs[i]
        return SpeculativePrefix(i, int(sampler.sample(residual / residual.sum())))
    return SpeculativePrefix(len(block_tokens), None)


def _stop_at_eos(block_tokens: torch.Tensor, accepted: int, eos_ids: tuple[int, ...]) -> int:
    for i, token in enumerate(block_tokens[:accepted].tolist()):
        if token in eos_ids:
            return i + 1
    return accepted
