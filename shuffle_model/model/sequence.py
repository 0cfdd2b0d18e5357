"""The head's view of the sequence: one small causal attention layer over the backbone's features
of the prompt and the answer so far (EAGLE's draft layer reads the sequence the same way; here it
runs once per position, and the K slots still draft in one call from its output).

Position i of the sequence reads r_i = W_in [h_i ; e(x_i) ; e(x_{i+1})]: the backbone's final
hidden state there, the token it read and the token that followed it (the anchor, at the last
position). With the token before and after in one row, a single layer can copy: a query whose
anchor matches an earlier x_i finds what followed it. Its output z_t at the anchor's position
joins the head's input (head.py). At generation the keys and values of every position are
computed once, when its token is accepted (`SequenceCache`), and only the last row queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

ROTARY_BASE = 10000.0  # of the layer's rotary positions, as the backbone's


def rotate(x: torch.Tensor, positions: torch.Tensor, *, base: float) -> torch.Tensor:
    """Rotary position embedding (RoFormer) of x (..., L, d) at integer positions (L,)."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)  # (d/2,)
    angles = positions.to(torch.float32)[:, None] * freqs  # (L, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class SequenceLayer(nn.Module):
    """A pre-norm decoder layer (attention, then an MLP) over rows r_i, causal."""

    def __init__(self, *, hidden_size: int, embed_size: int, width: int, heads: int):
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"sequence_width {width} must split into {heads} even-sized heads")
        self.hidden_size, self.width, self.heads = hidden_size, width, heads
        self.rows_in = nn.Linear(hidden_size + 2 * embed_size, width)
        self.attn_norm = nn.RMSNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.attn_out = nn.Linear(width, width, bias=False)
        self.mlp_norm = nn.RMSNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.norm = nn.RMSNorm(width)
        self.base = ROTARY_BASE

    def rows(self, hidden: torch.Tensor, this_embeds: torch.Tensor, next_embeds: torch.Tensor):
        """(..., L, H) h_i, (..., L, E) e(x_i) and e(x_{i+1}) -> (..., L, W) rows r_i."""
        return self.rows_in(
            torch.cat([hidden[..., : self.hidden_size], this_embeds, next_embeds], -1)
        )

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, W) -> (B, heads, L, W/heads)
        b, length, _ = x.shape
        return x.view(b, length, self.heads, -1).transpose(1, 2)

    def keys_values(self, rows: torch.Tensor, positions: torch.Tensor):
        """(B, L, W) rows at positions (L,) -> their queries, keys and values, (B, heads, L, d)."""
        q, k, v = self.qkv(self.attn_norm(rows)).chunk(3, dim=-1)
        q, k, v = (self.split_heads(x) for x in (q, k, v))
        return rotate(q, positions, base=self.base), rotate(k, positions, base=self.base), v

    def finish(self, rows: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The residual stream after attention (B, heads, L, d) and the MLP -> (B, L, W)."""
        b, _, length, _ = attended.shape
        x = rows + self.attn_out(attended.transpose(1, 2).reshape(b, length, self.width))
        return self.norm(x + self.mlp(self.mlp_norm(x)))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Training: (B, L, W) rows of whole sequences (right-padded) -> (B, L, W) outputs z_i,
        each from rows 0..i."""
        positions = torch.arange(rows.shape[1], device=rows.device)
        q, k, v = self.keys_values(rows, positions)
        return self.finish(rows, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@dataclass
class SequenceCache:
    """One generation's keys and values of the layer: a row per position read so far, each
    computed once (a tensor per `extend`, joined when queried)."""

    keys: list[torch.Tensor] = field(default_factory=list)  # (1, heads, n, d) per extension
    values: list[torch.Tensor] = field(default_factory=list)
    length: int = 0  # positions whose keys and values are cached

    def extend(self, layer: SequenceLayer, rows: torch.Tensor) -> torch.Tensor:
        """Cache the keys and values of new rows (1, n, W) at the next positions; returns their
        queries (1, heads, n, d)."""
        positions = torch.arange(self.length, self.length + rows.shape[1], device=rows.device)
        q, k, v = layer.keys_values(rows, positions)
        self.keys.append(k)
        self.values.append(v)
        self.length += rows.shape[1]
        return q

    def crop(self, length: int) -> None:
        """Forget the positions from `length` on."""
        self.keys = [torch.cat(self.keys, 2)[:, :, :length]] if self.keys else []
        self.values = [torch.cat(self.values, 2)[:, :, :length]] if self.values else []
        self.length = min(self.length, length)

    def query(self, layer: SequenceLayer, row: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """z for the last cached position: its row (1, 1, W), the last one extended, and its
        query (1, heads, 1, d), as `extend` returned it."""
        if len(self.keys) > 1:  # one tensor from now on: the next query reads it as is
            self.keys, self.values = [torch.cat(self.keys, 2)], [torch.cat(self.values, 2)]
        attended = F.scaled_dot_product_attention(q, self.keys[0], self.values[0])
        return layer.finish(row, attended)[0, -1]  # (W,)
