"""Output dataclasses of the models' forward passes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Cache
from transformers.utils import ModelOutput


@dataclass
class TrunkOutput:
    hidden: torch.Tensor  # (B, T, H): final normalised hidden states h_t; (B, T, 2H) [h_t ; g_t]
    # when the config names an early_layer (the head's input, see head.py)
    logits: torch.Tensor | None  # (B, T, V): next-token logits of the trunk's LM head
    cache: Cache | None  # the key/value cache, extended by this call


@dataclass
class DraftOutput:
    logits: torch.Tensor  # (..., K, N): each slot's logits over the draft vocabulary
    shuffle_scores: torch.Tensor  # (..., K, K): slot k's logit for offset p
    keep_logits: torch.Tensor  # (..., K): the head's belief that slot k's token is right
    vocab: torch.Tensor | None = None  # (N,) token id of each logit column; None: N = V, ids


@dataclass
class ShuffleOutput(ModelOutput):
    loss: torch.Tensor | None = None  # total training loss (set loss, + LM loss for ShuffleLM)
    lm_loss: torch.Tensor | None = None  # the trunk's next-token loss (ShuffleLM only)
    set_loss: torch.Tensor | None = None  # the head's set-prediction loss
    logits: torch.Tensor | None = None  # (B, T, V) next-token logits
    shuffle_scores: torch.Tensor | None = None  # (B, T, K, K) slot-by-offset logits
    draft_logits: torch.Tensor | None = None  # (B, T, K, V) slot token logits
    keep_logits: torch.Tensor | None = None  # (B, T, K) keep logits
    hidden_states: torch.Tensor | None = None  # (B, T, H or 2H): TrunkOutput.hidden
