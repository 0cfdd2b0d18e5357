"""The block a step forwarded, read as a tree: each node's token, parent, depth, source, rank,
path chance and whether it was accepted. The tree figure, the decision sentence and the GIF
read it from here.

Version-3 traces record all of it. Older traces read as what they recorded: version 2 the
parents (a chain, or the head's and the context's chains side by side) and version 1 nothing
but the block, a chain; their sources are inferred from the head's chain and the context's,
their accepted path from the emitted tokens, their ranks are 0 and their chances unknown.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from shuffle_model.decoding.trace import FROM_FILLER, StepTrace, TokenInfo

from .style import ANCHOR, CONTEXT, HEAD


@dataclass
class Node:
    index: int  # position in the forwarded block (0: the anchor)
    token: TokenInfo  # its token (text from the step's own records; <id> where none says)
    parent: int  # parent node (-1: the anchor itself)
    depth: int  # tokens after the anchor (the anchor: 0)
    source: str  # "anchor", or the proposing sources joined by '+'
    rank: int  # among its siblings from its source: 0 the first choice, 1 the 2nd, ...
    chance: float | None  # its path chance (None: the trace does not record it)
    accepted: bool  # on the accepted path (the anchor: True)


@dataclass
class ForwardedTree:
    nodes: list[Node]  # the anchor, then the drafts (filler left out); [] when none forwarded
    filler: int = 0  # filler tokens forwarded after them (a longer pass was cheaper)

    @property
    def drafts(self) -> int:
        return max(len(self.nodes) - 1, 0)

    def children(self, index: int) -> list[Node]:
        """A node's children, first choices first."""
        kids = [n for n in self.nodes if n.parent == index]
        return sorted(kids, key=lambda n: (n.rank, n.index))

    @property
    def branches(self) -> int:
        """Root-to-leaf paths through the drafts (0 without drafts)."""
        parents = {n.parent for n in self.nodes}
        return sum(1 for n in self.nodes[1:] if n.index not in parents)

    def alternatives(self) -> Counter:
        """Drafts that were not their source's first choice (rank > 0), per source."""
        return Counter(n.source for n in self.nodes[1:] if n.rank > 0)

    @property
    def accepted_path(self) -> list[int]:
        return [n.index for n in self.nodes[1:] if n.accepted]


def forwarded_tree(step: StepTrace) -> ForwardedTree:
    """The step's forwarded block as a tree (no nodes when nothing was forwarded)."""
    ids = step.forwarded_ids
    if not ids:
        return ForwardedTree([])
    parents = _parents(step)
    sources = _sources(step, parents)
    depths = _depths(parents)
    path = set(_accepted_path(step, parents, sources))
    known = _known_tokens(step)
    ranks = step.forwarded_ranks if len(step.forwarded_ranks) == len(ids) else [0] * len(ids)
    chances = step.forwarded_chances
    nodes = [
        Node(
            index=i,
            token=step.anchor if i == 0 else known.get(ids[i]) or unknown(ids[i]),
            parent=parents[i],
            depth=depths[i],
            source=sources[i],
            rank=ranks[i],
            chance=chances[i] if len(chances) == len(ids) else None,
            accepted=i == 0 or i in path,
        )
        for i in range(len(ids))
        if sources[i] != FROM_FILLER
    ]
    return ForwardedTree(nodes, filler=len(ids) - len(nodes))


def unknown(token_id: int) -> TokenInfo:
    """A token the step records no text of (a source passed in drafted it): shown as <id>."""
    return TokenInfo(token_id, f"<{token_id}>", 0.0)


def _parents(step: StepTrace) -> list[int]:
    """Each node's parent: as recorded (version 2 on), else a chain (version 1)."""
    n = len(step.forwarded_ids)
    recorded = step.forwarded_parents
    if len(recorded) == n and all(-1 <= p < i for i, p in enumerate(recorded)):
        return list(recorded)
    return [i - 1 for i in range(n)]


def _depths(parents: list[int]) -> list[int]:
    depths: list[int] = []
    for parent in parents:  # every parent comes before its children
        depths.append(0 if parent < 0 else depths[parent] + 1)
    return depths


def _sources(step: StepTrace, parents: list[int]) -> list[str]:
    """Each node's sources: as recorded (version 3), else inferred from the head's chain and
    the context's (a node is a source's when its token is that source's at its depth, under a
    parent of the same source); a node neither claims is the head's (version 1); the plan's
    padding is filler."""
    n = len(step.forwarded_ids)
    if len(step.forwarded_sources) == n:
        return list(step.forwarded_sources)
    chains = {HEAD: _head_chain(step), CONTEXT: _context_chain(step)}
    depths = _depths(parents)
    found = [ANCHOR]
    for i in range(1, n):
        parent = found[parents[i]]
        names = [
            name
            for name, chain in chains.items()
            if (parent == ANCHOR or name in parent.split("+"))
            and depths[i] <= len(chain)
            and chain[depths[i] - 1] == step.forwarded_ids[i]
        ]
        found.append("+".join(names) or HEAD)
    padding = step.plan.padding if step.plan is not None else 0
    return found[: n - padding] + [FROM_FILLER] * padding if padding < n else found


def _head_chain(step: StepTrace) -> list[int]:
    """The head's chain: its slots' tokens in offset order."""
    by_index = {slot.index: slot for slot in step.slots}
    return [by_index[k].token.id for k in step.block_order if k in by_index]


def _context_chain(step: StepTrace) -> list[int]:
    return [token.id for token in step.context.tokens] if step.context else []


def _accepted_path(step: StepTrace, parents: list[int], sources: list[str]) -> list[int]:
    """The accepted nodes: as recorded (version 3), else the walk from the anchor down the
    children that equal the emitted tokens."""
    if len(step.forwarded_sources) == len(step.forwarded_ids):
        return list(step.accepted_path)
    path, node = [], 0
    for token in step.emitted[1:]:
        child = next(
            (
                i
                for i, p in enumerate(parents)
                if p == node and step.forwarded_ids[i] == token.id and sources[i] != FROM_FILLER
            ),
            None,
        )
        if child is None:
            break
        path.append(child)
        node = child
    return path


def _known_tokens(step: StepTrace) -> dict[int, TokenInfo]:
    """Token id -> the TokenInfo (with its text) the step records anywhere: the anchor, the
    emitted tokens, the slots' tokens and candidates, the context's drafts."""
    known: dict[int, TokenInfo] = {}
    tokens = [step.anchor, *step.emitted]
    for slot in step.slots:
        tokens += [slot.token, *slot.candidates]
    tokens += step.context.tokens if step.context else []
    for token in tokens:
        if token.text is not None:
            known.setdefault(token.id, token)
    return known
