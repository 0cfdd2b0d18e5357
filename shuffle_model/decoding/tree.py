"""The block a step forwards: the anchor and its drafts, as a chain or a small tree.

Two chains that part after s shared drafts are forwarded in one pass as a tree: each node
sits at position (past + depth) and attends to the cache and to its own ancestors only (a 4D
attention mask). After verification only the accepted branch stays in the key/value cache,
so the cache is exactly what ordinary decoding would have built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .planning import Plan
from .proposers import CONTEXT, HEAD, Chain

ANCHOR = "anchor"
BOTH = "head+context"
FILLER = "filler"  # padding forwarded only because a longer pass is cheaper (planning.py)


@dataclass
class Block:
    tokens: list[int]  # forwarded: the anchor, then the drafts
    parents: list[int]  # index of each node's parent in `tokens`; -1 for the anchor
    sources: list[str]  # ANCHOR, HEAD, CONTEXT or BOTH (a draft both chains proposed)
    head_nodes: list[int]  # node of the head chain's k-th verified draft
    context_nodes: list[int]  # node of the context chain's k-th verified draft

    @property
    def is_chain(self) -> bool:
        return all(parent == node - 1 for node, parent in enumerate(self.parents))

    def depths(self) -> list[int]:
        depths = []
        for parent in self.parents:
            depths.append(0 if parent < 0 else depths[parent] + 1)
        return depths


def build_block(anchor: int, head: Chain | None, context: Chain | None, plan: Plan) -> Block:
    """Shared drafts first, then the rest of the head's prefix, then the rest of the context's."""
    tokens, parents, sources = [anchor], [-1], [ANCHOR]
    head_nodes: list[int] = []
    context_nodes: list[int] = []
    shared = plan.shared

    def extend(chain: Chain, start: int, stop: int, source: str, nodes: list[int]) -> None:
        parent = nodes[-1] if nodes else 0
        for k in range(start, stop):
            tokens.append(chain.tokens[k])
            parents.append(parent)
            sources.append(source)
            parent = len(tokens) - 1
            nodes.append(parent)

    if shared:  # leading drafts both chains proposed, forwarded once
        extend(head, 0, shared, BOTH, head_nodes)
        context_nodes += head_nodes
    if plan.head > shared:
        extend(head, shared, plan.head, HEAD, head_nodes)
    if plan.context > shared:
        extend(context, shared, plan.context, CONTEXT, context_nodes)
    return Block(tokens, parents, sources, head_nodes, context_nodes)


def padded(block: Block, padding: int) -> Block:
    """The block with `padding` filler tokens chained after its last node (copies of the
    anchor: nothing before them attends to them, and nothing is verified against them)."""
    if not padding:
        return block
    last = len(block.tokens) - 1
    parents = [last + k for k in range(padding)]  # each filler after the one before
    return Block(
        tokens=block.tokens + [block.tokens[0]] * padding,
        parents=block.parents + parents,
        sources=block.sources + [FILLER] * padding,
        head_nodes=block.head_nodes,
        context_nodes=block.context_nodes,
    )


def tree_inputs(
    block: Block, *, past: int, dtype: torch.dtype, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(4D additive attention mask (1, 1, n, past + n), position ids (1, n)) for a tree block."""
    n = len(block.tokens)
    allowed = torch.zeros(n, past + n, dtype=torch.bool)
    allowed[:, :past] = True
    for node in range(n):
        ancestor = node
        while ancestor >= 0:  # itself and its ancestors
            allowed[node, past + ancestor] = True
            ancestor = block.parents[ancestor]
    mask = torch.zeros(n, past + n, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    positions = torch.tensor([[past + d for d in block.depths()]], device=device)
    return mask[None, None].to(device), positions


def can_drop_branches(cache) -> bool:
    """Whether the cache keeps plain key/value tensors per layer that a branch can be cut from."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


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
