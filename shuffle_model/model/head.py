"""The shuffle head: K parallel draft slots, their positions and their keep logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ShuffleConfig
from .mixer import MixerBlock
from .rotary import RotaryOffsetScorer
from .sequence import SequenceLayer


@dataclass
class HeadOutput:
    draft_hidden: torch.Tensor  # (N, K, hidden): slot vectors in the LM head's input space
    shuffle_scores: torch.Tensor  # (N, K, K): slot k's logit for offset p (softmax over p)
    keep_logits: torch.Tensor  # (N, K): the head's belief that slot k's token is right


class ShuffleHead(nn.Module):
    """Input: h_t (the trunk's final normalised hidden state), with `early_layer` also an earlier
    block's output g_t (TrunkOutput.hidden is then [h_t ; g_t]), and e(anchor).

    1. slots  X = W_in [h_t ; rmsnorm(g_t) ; e(anchor)] (+ W_z z_t) + E_slot, z_t the output of
       the attention layer over the sequence where the config has one (sequence.py)
    2. MLP-Mixer blocks across slots and features
    3. per slot: draft vector h_t + W_out x_k (fed to the backbone's own LM head),
       rotary key r_k scored against the offset queries, keep logit c_k.
    """

    def __init__(self, config: ShuffleConfig, *, hidden_size: int, embed_size: int):
        super().__init__()
        k, width = config.num_slots, config.head_width
        self.hidden_size = hidden_size
        self.feature_size = hidden_size * (1 if config.early_layer is None else 2)
        self.in_proj = nn.Linear(self.feature_size + embed_size, width)
        self.slot_embed = nn.Parameter(torch.randn(k, width) * 0.02)  # E_slot: (K, D)
        self.sequence: SequenceLayer | None = None
        if config.sequence_width:
            self.sequence = SequenceLayer(
                hidden_size=hidden_size,
                embed_size=embed_size,
                width=config.sequence_width,
                heads=config.sequence_heads,
            )
            self.context_proj = nn.Linear(config.sequence_width, width)  # W_z, zero at the start:
            nn.init.zeros_(self.context_proj.weight)  # a head warm-started from one without the
            nn.init.zeros_(self.context_proj.bias)  # layer drafts as that head did
        self.blocks = nn.ModuleList(
            MixerBlock(
                num_slots=k,
                width=width,
                token_hidden=config.mixer_token_hidden,
                channel_hidden=config.mixer_channel_hidden or 2 * width,
            )
            for _ in range(config.mixer_depth)
        )
        self.norm = nn.LayerNorm(width)
        self.out_proj = nn.Linear(width, hidden_size)
        self.rotary_key = nn.Linear(width, config.rotary_dim)
        self.keep = nn.Linear(width, 1)
        self.scorer = RotaryOffsetScorer(
            num_offsets=k,
            rotary_dim=config.rotary_dim,
            base=config.rotary_base,
            temperature=config.shuffle_temperature,
        )
        nn.init.normal_(self.out_proj.weight, std=0.02)
        nn.init.zeros_(self.out_proj.bias)
        self.draft_vocab: torch.Tensor | None  # (N,) token ids drafts may take; None: all
        if config.draft_vocab_size:
            self.register_buffer("draft_vocab", torch.arange(config.draft_vocab_size))
        else:
            self.draft_vocab = None

    def forward(
        self, hidden: torch.Tensor, anchor_embeds: torch.Tensor, context: torch.Tensor | None = None
    ) -> HeadOutput:
        """hidden (..., feature_size): h_t [; g_t], anchor_embeds (..., E) and, for a head with a
        sequence layer, its output z_t (..., sequence_width) -> per-slot outputs."""
        lead = hidden.shape[:-1]
        flat = hidden.reshape(-1, self.feature_size)  # (N, H) or (N, 2H)
        flat_hidden = flat[:, : self.hidden_size]  # (N, H): h_t
        inputs = [flat_hidden]
        if self.feature_size > self.hidden_size:  # g_t: a residual stream, norms vary by layer
            inputs.append(F.rms_norm(flat[:, self.hidden_size :], (self.hidden_size,)))
        inputs.append(anchor_embeds.reshape(-1, anchor_embeds.shape[-1]))  # (N, E)
        joined = self.in_proj(torch.cat(inputs, dim=-1))  # (N, D)
        if self.sequence is not None:
            if context is None:
                raise ValueError("this head reads the sequence: pass its context z_t")
            joined = joined + self.context_proj(context.reshape(-1, context.shape[-1]))
        slots = joined[:, None, :] + self.slot_embed  # (N, K, D)
        for block in self.blocks:
            slots = block(slots)
        slots = self.norm(slots)
        draft_hidden = flat_hidden[:, None, :] + self.out_proj(slots)  # (N, K, H)
        scores = self.scorer(self.rotary_key(slots))  # (N, K, K)
        keep_logits = self.keep(slots).squeeze(-1)  # (N, K)
        k = slots.shape[1]
        return HeadOutput(
            draft_hidden=draft_hidden.reshape(*lead, k, -1),
            shuffle_scores=scores.reshape(*lead, k, k),
            keep_logits=keep_logits.reshape(*lead, k),
        )


def warm_start_state(head: ShuffleHead, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A saved head's weights for `head`, whose function stays the saved head's where `head` has
    more: an early layer's input columns start at zero, a sequence layer's output projection
    too, and mixer blocks beyond the saved ones start as the identity (their MLPs' last layers
    zero)."""
    fresh = head.state_dict()
    added = [key for key in fresh if key.startswith("blocks.") and key not in state]
    for key in added:  # blocks.<i>.{token,channel}_mlp.2.*: a residual branch's last layer
        last_layer = key.split(".")[2:4] in (["token_mlp", "2"], ["channel_mlp", "2"])
        state = {**state, key: torch.zeros_like(fresh[key]) if last_layer else fresh[key]}
    if head.sequence is not None and not any(key.startswith("sequence.") for key in state):
        state = {  # a new sequence layer: its own initialisation, W_z zero
            **state,
            **{k: v for k, v in fresh.items() if k.startswith(("sequence.", "context_proj."))},
        }
    weight = state["in_proj.weight"]  # (D, H + E) saved, (D, 2H + E) wanted
    wanted = head.in_proj.weight.shape
    if weight.shape == wanted:
        return state
    h = head.hidden_size
    if weight.shape[0] != wanted[0] or wanted[1] - weight.shape[1] != h:
        raise ValueError(f"cannot warm-start in_proj {tuple(wanted)} from {tuple(weight.shape)}")
    widened = torch.zeros(wanted, dtype=weight.dtype)
    widened[:, :h] = weight[:, :h]  # h_t
    widened[:, 2 * h :] = weight[:, h:]  # e(anchor); g_t's columns stay zero
    return {**state, "in_proj.weight": widened}
