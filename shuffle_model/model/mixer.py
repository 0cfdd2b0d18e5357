"""MLP-Mixer block (Tolstikhin et al. 2021) over the K draft slots."""

from __future__ import annotations

import torch
from torch import nn


class MixerBlock(nn.Module):
    """Token mixing across slots, then channel mixing across features; pre-norm, residual."""

    def __init__(self, *, num_slots: int, width: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.token_norm = nn.LayerNorm(width)
        self.token_mlp = nn.Sequential(
            nn.Linear(num_slots, token_hidden), nn.GELU(), nn.Linear(token_hidden, num_slots)
        )
        self.channel_norm = nn.LayerNorm(width)
        self.channel_mlp = nn.Sequential(
            nn.Linear(width, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, width)
        )

    def forward(self, slots: torch.Tensor) -> torch.Tensor:  # (N, K, D) -> (N, K, D)
        across_slots = self.token_norm(slots).transpose(-1, -2)  # (N, D, K)
        slots = slots + self.token_mlp(across_slots).transpose(-1, -2)  # (N, K, D)
        return slots + self.channel_mlp(self.channel_norm(slots))
