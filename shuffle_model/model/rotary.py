"""Rotary position scoring: how well does slot k fit offset p?

Offset p in 1..K has the query q_p = RoPE_p(u): a learned vector u whose coordinate pairs
are rotated by the angles p * theta_i (Su et al. 2021). A slot's rotary key r_k scores every
offset with a dot product, so regressing the key's angle regresses the slot's position.
With rotary_dim = 2 there is one angle per slot and the score is the cosine of the angle
difference, scaled by the key's length.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def offset_angles(num_offsets: int, rotary_dim: int, base: float) -> torch.Tensor:
    """Angles p * theta_i for offsets p = 1..K and rotary pairs i: shape (K, rotary_dim // 2).

    The fastest pair turns by 2*pi / (K + 1) per offset, so offsets 1..K never wrap around onto
    each other; slower pairs turn base^(2i/d) times slower.
    """
    pairs = torch.arange(rotary_dim // 2, dtype=torch.float64)
    theta = (2 * math.pi / (num_offsets + 1)) * base ** (-2 * pairs / rotary_dim)  # (d/2,)
    offsets = torch.arange(1, num_offsets + 1, dtype=torch.float64)  # (K,)
    return torch.outer(offsets, theta)  # (K, d/2)


def rotate_pairs(vector: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each coordinate pair (x_2i, x_2i+1) of `vector` (d,) by `angles` (..., d/2)."""
    x = vector.view(-1, 2)  # (d/2, 2)
    cos, sin = angles.cos(), angles.sin()  # (..., d/2)
    rotated_x = x[:, 0] * cos - x[:, 1] * sin
    rotated_y = x[:, 0] * sin + x[:, 1] * cos
    return torch.stack([rotated_x, rotated_y], dim=-1).flatten(-2)  # (..., d)


class RotaryOffsetScorer(nn.Module):
    """Scores slot keys (..., S, d) against the K offset queries: (..., S, K) logits."""

    def __init__(self, *, num_offsets: int, rotary_dim: int, base: float, temperature: float):
        super().__init__()
        self.rotary_dim = rotary_dim
        self.temperature = temperature
        self.query_seed = nn.Parameter(torch.zeros(rotary_dim))  # u, set in reset_parameters
        self.register_buffer(
            "angles", offset_angles(num_offsets, rotary_dim, base).float(), persistent=False
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.query_seed.zero_()
            self.query_seed[0::2] = 1.0  # u starts at angle 0 in every pair

    def queries(self) -> torch.Tensor:
        return rotate_pairs(self.query_seed, self.angles.to(self.query_seed.dtype))  # (K, d)

    def forward(self, keys: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(self.rotary_dim) * self.temperature
        return keys @ self.queries().T / scale  # (..., S, d) @ (d, K) -> (..., S, K)
