"""Set-prediction loss: slots are matched to future offsets, then scored (DETR-style).

For a position t the targets are y_p = token[t+1+p], p = 1..K. Slot k is matched to an offset
by Hungarian matching on

    C[k, p] = -log P_k(y_p) - lambda_pos * log softmax_p(scores[k])[p] + lambda_prior * |k - p|

(offsets past the end of the sequence are left out), and the loss is the token cross-entropy of
the matched pairs + lambda_pos * the score rows' cross-entropy against their matched offsets +
lambda_keep * BCE(keep logit, [slot's top token == its matched target]). `assignment="fixed"`
matches slot k to offset k (the Medusa-style ablation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

IGNORE = -100  # label value of positions that are not trained on
UNDRAFTABLE = -1  # a real target that the draft vocabulary cannot express
UNDRAFTABLE_LOGPROB = -30.0  # its log-probability under every slot (for the matching cost)


@dataclass
class SetLoss:
    loss: torch.Tensor  # scalar: token + lambda_pos * position + lambda_keep * keep
    token_loss: torch.Tensor  # scalar: mean cross-entropy of matched (slot, target) pairs
    position_loss: torch.Tensor  # scalar: mean cross-entropy of score rows vs matched offsets
    keep_loss: torch.Tensor  # scalar: mean BCE of keep logits vs "top token is right"
    matched_offsets: torch.Tensor  # (N, K) long: 0-based offset matched to slot k, -1 if none
    slot_correct: torch.Tensor  # (N, K) bool: slot's top token equals its matched target


def offset_targets(labels: torch.Tensor, num_offsets: int) -> torch.Tensor:
    """(B, T) labels -> (B, T, K) targets: y[b, t, p-1] = labels[b, t+1+p], IGNORE past the end.

    Position t is also ignored when its anchor labels[b, t+1] is IGNORE (e.g. a prompt token).
    """
    batch, length = labels.shape
    padded = F.pad(labels, (0, num_offsets + 1), value=IGNORE)  # (B, T+K+1)
    targets = torch.stack(
        [padded[:, 1 + p : 1 + p + length] for p in range(1, num_offsets + 1)], dim=-1
    )  # (B, T, K)
    anchor_missing = padded[:, 1 : 1 + length] == IGNORE  # (B, T)
    return targets.masked_fill(anchor_missing[..., None], IGNORE)


def matching_cost(
    token_logprobs: torch.Tensor,
    position_logprobs: torch.Tensor,
    *,
    lambda_pos: float,
    lambda_prior: float,
) -> torch.Tensor:
    """(N, K, K) cost of giving slot k the target at offset p."""
    k = token_logprobs.shape[-1]
    index = torch.arange(k, device=token_logprobs.device)
    prior = (index[:, None] - index[None, :]).abs().to(token_logprobs.dtype)  # (K, K)
    return -token_logprobs - lambda_pos * position_logprobs + lambda_prior * prior


def match_slots(cost: torch.Tensor, valid: torch.Tensor, *, assignment: str) -> torch.Tensor:
    """Offset index matched to each slot: (N, K) long, -1 where a slot has no target."""
    n, k, _ = cost.shape
    matched = np.full((n, k), -1, dtype=np.int64)
    valid_np = valid.cpu().numpy()
    if assignment == "fixed":
        columns = np.broadcast_to(np.arange(k), (n, k))
        return torch.from_numpy(np.where(valid_np, columns, -1)).to(cost.device)
    cost_np = cost.detach().float().cpu().numpy()
    for i in range(n):
        offsets = np.flatnonzero(valid_np[i])
        if offsets.size == 0:
            continue
        rows, cols = linear_sum_assignment(cost_np[i][:, offsets])
        matched[i, rows] = offsets[cols]
    return torch.from_numpy(matched).to(cost.device)


def set_prediction_loss(
    draft_logits: torch.Tensor,
    shuffle_scores: torch.Tensor,
    keep_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    assignment: str = "hungarian",
    lambda_pos: float = 1.0,
    lambda_keep: float = 0.5,
    lambda_prior: float = 0.0,
) -> SetLoss:
    """draft_logits (N, K, V), shuffle_scores (N, K, K), keep_logits (N, K), targets (N, K):
    column indices of the draft vocabulary, IGNORE past the end, UNDRAFTABLE for real tokens
    the draft vocabulary lacks (matched like any target, never counted as right)."""
    valid = targets != IGNORE  # (N, K) over offsets
    draftable = targets >= 0
    safe_targets = targets.clamp(min=0)
    n, k, _ = draft_logits.shape
    log_norm = torch.logsumexp(draft_logits.float(), dim=-1)  # (N, K)
    target_logits = draft_logits.float().gather(
        -1, safe_targets[:, None, :].expand(n, k, k)
    )  # (N, K slots, K offsets)
    token_logprobs = (target_logits - log_norm[..., None]).masked_fill(
        ~draftable[:, None, :], UNDRAFTABLE_LOGPROB
    )
    position_logprobs = F.log_softmax(shuffle_scores.float(), dim=-1)  # (N, K, K)

    cost = matching_cost(
        token_logprobs, position_logprobs, lambda_pos=lambda_pos, lambda_prior=lambda_prior
    )
    matched = match_slots(cost, valid, assignment=assignment)  # (N, K)
    has_match = matched >= 0
    offset_index = matched.clamp(min=0)
    learnable = has_match & draftable.gather(-1, offset_index)  # matched to a draftable token

    matched_token_logprob = token_logprobs.gather(-1, offset_index[..., None]).squeeze(-1)
    matched_position_logprob = position_logprobs.gather(-1, offset_index[..., None]).squeeze(-1)
    token_loss = -(matched_token_logprob * learnable).sum() / learnable.sum().clamp(min=1)
    position_loss = -(matched_position_logprob * has_match).sum() / has_match.sum().clamp(min=1)

    matched_target = safe_targets.gather(-1, offset_index)  # (N, K) target of each slot
    slot_correct = learnable & (draft_logits.argmax(-1) == matched_target)
    keep_loss = F.binary_cross_entropy_with_logits(keep_logits.float(), slot_correct.float())

    loss = token_loss + lambda_pos * position_loss + lambda_keep * keep_loss
    return SetLoss(
        loss=loss,
        token_loss=token_loss.detach(),
        position_loss=position_loss.detach(),
        keep_loss=keep_loss.detach(),
        matched_offsets=matched,
        slot_correct=slot_correct,
    )


def per_offset_accuracy(
    result: SetLoss, targets: torch.Tensor, draft_logits: torch.Tensor | None = None, top: int = 1
) -> list[float]:
    """Top-1 accuracy of the slot matched to each offset p = 1..K (NaN if p never occurs); with
    the draft logits (N, K, V) and `top` > 1, whether the target is among that slot's `top`
    likeliest tokens."""
    k = targets.shape[-1]
    right = result.slot_correct  # (N, K slots)
    if top > 1:
        matched = result.matched_offsets
        wanted = targets.gather(-1, matched.clamp(min=0))  # (N, K): each slot's target column
        best = draft_logits.topk(top, dim=-1).indices  # (N, K, top)
        right = (matched >= 0) & (wanted >= 0) & (best == wanted[..., None]).any(-1)
    accuracies = []
    for p in range(k):
        present = (targets[:, p] != IGNORE).sum().item()  # undraftable targets count as misses
        hits = (right & (result.matched_offsets == p)).sum().item()
        accuracies.append(hits / present if present else float("nan"))
    return accuracies
