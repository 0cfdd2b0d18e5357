"""The block a step forwards: the anchor and the chosen drafts, as a chain or a small tree.

Nodes that share a parent are forwarded in one pass as a tree: each node sits at position
(past + depth) and attends to the cache and to its own ancestors only (a 4D attention mask).
After verification only the accepted branch stays in the key/value cache, so the cache is
exactly what ordinary decoding would have built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..model.invariant import tree_mask

if TYPE_CHECKING:  # planning imports cost, which builds tree blocks to time them
    from .planning import Plan

ANCHOR = "anchor"
BOTH = "head+context"  # the source of a draft both the head and the context proposed
FILLER = "filler"  # padding forwarded only because a longer pass is cheaper (planning.py)


@dataclass
class Block:
    tokens: list[int]  # (n,) forwarded: the anchor, then the drafts
    parents: list[int]  # (n,) index of each node's parent in `tokens`; -1 for the anchor
    sources: list[str]  # (n,) ANCHOR, FILLER, or the proposing sources joined by '+'
    origins: list[list[tuple[str, int]]] = field(default_factory=list)  # (n,) per node: (source,
    # node in that source's DraftTree) for each source that proposed it; [] for the anchor
    ranks: list[int] = field(default_factory=list)  # (n,) best rank among its siblings
    chances: list[float] = field(default_factory=list)  # (n,) path chance (anchor: 1)

    @property
    def is_chain(self) -> bool:
        return all(parent == node - 1 for node, parent in enumerate(self.parents))

    def depths(self) -> list[int]:
        depths = []
        for parent in self.parents:
            depths.append(0 if parent < 0 else depths[parent] + 1)
        return depths

    def nodes_from(self, source: str) -> dict[int, int]:
        """The nodes `source` proposed that were forwarded: its tree's node -> block node."""
        return {
            k: node
            for node, origins in enumerate(self.origins)
            for name, k in origins
            if name == source
        }


def build_block(anchor: int, plan: Plan) -> Block:
    """The anchor, then the plan's nodes in its order (each after its parent)."""
    block = Block([anchor], [-1], [ANCHOR], [[]], [0], [1.0])
    placed = {-1: 0}  # offered node -> block node
    for i in plan.nodes:
        node = plan.offered[i]
        placed[i] = len(block.tokens)
        block.tokens.append(node.token)
        block.parents.append(placed[node.parent])
        block.sources.append(node.source)
        block.origins.append(list(node.origins))
        block.ranks.append(min(node.ranks))
        block.chances.append(node.path_chance)
    return block


def padded(block: Block, padding: int) -> Block:
    """The block with `padding` filler tokens chained after its last node (copies of the
    anchor: nothing before them attends to them, and nothing is verified against them)."""
    if not padding:
        return block
    last = len(block.tokens) - 1
    return Block(
        tokens=block.tokens + [block.tokens[0]] * padding,
        parents=block.parents + [last + k for k in range(padding)],  # each after the one before
        sources=block.sources + [FILLER] * padding,
        origins=block.origins + [[] for _ in range(padding)],
        ranks=block.ranks + [0] * padding,
        chances=block.chances + [0.0] * padding,
    )


def tree_inputs(
    block: Block, *, past: int, dtype: torch.dtype, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(4D additive attention mask (1, 1, n, past + n), position ids (1, n)) for a tree block."""
    n = len(block.tokens)
    allowed = tree_mask(block.parents, past)  # (n, past + n): the cache, ancestors, itself
    mask = torch.zeros(n, past + n, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    positions = torch.tensor([[past + d for d in block.depths()]], device=device)
    return mask[None, None].to(device), positions


def can_drop_branches(cache) -> bool:
    """Whether the cache keeps plain key/value tensors per layer that a branch can be cut from."""
    layers = getattr(cache, "layers", None)
    plain = ("DynamicLayer", "KeyBlockLayer")
    return bool(layers) and all(type(layer).__name__ in plain for layer in layers)


def keep_nodes(cache, *, past: int, forwarded: int, keep: list[int]) -> None:
    """Keep the cache's first `past` entries and, after them, the block nodes `keep` (in
    order); forget the other forwarded nodes."""
    if keep == list(range(len(keep))):  # a prefix: just crop the rest
        if forwarded > len(keep):
            cache.crop(-(forwarded - len(keep)))
        return
    index = torch.tensor([past + k for k in keep], device=cache.layers[0].keys.device)
    for layer in cache.layers:
        layer.keys[..., past : past + len(keep), :] = layer.keys[..., index, :]
        layer.values[..., past : past + len(keep), :] = layer.values[..., index, :]
    cache.crop(-(forwarded - len(keep)))
