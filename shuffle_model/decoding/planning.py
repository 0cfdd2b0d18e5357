"""Which drafts a step verifies: the nodes that maximise expected tokens per unit of time.

Every source proposes a small tree of drafts (proposers.py). Where trees are allowed they are
merged into one: a token two sources propose under the same parent is one node, as likely as
the more confident source says, and siblings, being mutually exclusive, are scaled down where
their chances add up to more than one. A node's value is its *path chance*, the product of
the conditional chances from the anchor down to it: the chance that greedy verification
accepts it. A set of nodes closed under parents is expected to emit

    E = 1 + sum of the nodes' path chances

tokens (the anchor always), and verifying n of them costs one backbone pass over n + 1
tokens, c(n + 1) one-token passes on this machine (cost.py), plus the step's drafting. The
"cost" rule takes the n nodes of highest path chance (best first from the anchor, so always
a set closed under parents, as EAGLE-2's dynamic tree and Sequoia pick theirs) for the n that
maximises E / (c(n + 1) + drafting); n = 0, an ordinary step, is always a candidate, so a step
is never expected to give less than it costs.

Where this machine runs a longer pass faster than a shorter one (CPU matrix kernels are often
slower at 2-3 rows than at 4-5), the pass for n nodes is the cheapest that covers them,
c*(n + 1) = min over m >= n + 1 of c(m) (cost.py's `cheapest`, at least 5 % cheaper), and its
extra rows take the next-best nodes; only when no node is left are they filled with filler
tokens, whose results and cache entries are thrown away (`Plan.padding`).

Where trees are not allowed (sampling, pure mode, caches that cannot drop a branch) each
source's own chain is a candidate on its own, and the best one is verified. The "fixed" rule
verifies every draft of every source's own chain (the filter's block and the context's
match; no alternatives), whatever the machine charges for the longer pass.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import NamedTuple

from .cost import CostCurve
from .proposers import DraftTree

COST = "cost"
FIXED = "fixed"
BLOCK_RULES = (COST, FIXED)


@dataclass
class DraftNode:
    """A draft on offer this step, merged across the sources that proposed it."""

    token: int
    parent: int  # index of its parent among the step's DraftNodes; -1: the anchor
    chance: float  # P(accepted | parent accepted), estimated
    depth: int  # 1: right after the anchor
    origins: list[tuple[str, int]] = field(default_factory=list)  # (source, node in its tree)
    ranks: list[int] = field(default_factory=list)  # its rank among siblings, per origin
    first_choice: bool = False  # on some source's own chain (rank 0 from the anchor down)
    path_chance: float = 0.0  # product of chances from the anchor: the node's value

    @property
    def source(self) -> str:
        """Its sources' names joined by '+', in the order the sources proposed."""
        return "+".join(source for source, _ in self.origins)


@dataclass
class Plan:
    """What one step verifies, and why."""

    rule: str  # COST or FIXED
    offered: list[DraftNode]  # the drafts on offer (merged where trees are allowed)
    nodes: list[int]  # the offered nodes forwarded, parents before children, best first
    expected_tokens: float  # E: tokens the step is expected to emit, the anchor included
    cost: float  # c(drafts + 1 + padding) + drafting, in one-token passes
    ordinary_rate: float  # what an ordinary step gives per unit of time: 1 / (1 + drafting)
    next_rate: float | None  # the best rate with one draft more (None: no draft left)
    padding: int = 0  # filler tokens forwarded after the drafts: that longer pass is cheaper

    @property
    def drafts(self) -> int:
        return len(self.nodes)

    @property
    def rate(self) -> float:
        return self.expected_tokens / self.cost

    @property
    def chosen(self) -> list[DraftNode]:
        return [self.offered[i] for i in self.nodes]

    @property
    def shared(self) -> int:
        """Forwarded drafts that more than one source proposed."""
        return sum(1 for node in self.chosen if len(node.origins) > 1)

    def drafts_from(self, source: str) -> int:
        """Forwarded drafts that `source` proposed (alone or with others)."""
        return sum(1 for node in self.chosen if any(s == source for s, _ in node.origins))

    def drafts_by_source(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.chosen:
            for source, _ in node.origins:
                counts[source] = counts.get(source, 0) + 1
        return counts


# --- the drafts on offer ---------------------------------------------------------------------


def merge_proposals(proposals: list[DraftTree], *, first_choice_only=False) -> list[DraftNode]:
    """The proposals' nodes as one tree: a token proposed under the same parent by several
    sources is one node with the higher chance. Parents come before children."""
    offered: list[DraftNode] = []
    where: dict[tuple[int, int], int] = {}  # (parent, token) -> node
    for tree in proposals:
        first = tree.on_first_choice()
        placed: dict[int, int] = {}  # the tree's node -> offered node
        for k, token in enumerate(tree.tokens):
            if first_choice_only and not first[k]:
                continue
            parent = placed[tree.parents[k]] if tree.parents[k] >= 0 else -1
            key = (parent, token)
            if key not in where:
                depth = offered[parent].depth + 1 if parent >= 0 else 1
                where[key] = len(offered)
                offered.append(DraftNode(token, parent, 0.0, depth))
            node = offered[where[key]]
            node.chance = max(node.chance, float(tree.accept_probs[k]))
            node.origins.append((tree.source, k))
            node.ranks.append(tree.ranks[k])
            node.first_choice = node.first_choice or first[k]
            placed[k] = where[key]
    return with_path_chances(offered)


def with_path_chances(offered: list[DraftNode]) -> list[DraftNode]:
    """Siblings are mutually exclusive: where their chances add up to more than one they are
    scaled to one. Then each node's path chance, the product from the anchor down."""
    siblings: dict[int, float] = {}
    for node in offered:
        siblings[node.parent] = siblings.get(node.parent, 0.0) + node.chance
    for node in offered:
        node.chance /= max(1.0, siblings[node.parent])
        above = offered[node.parent].path_chance if node.parent >= 0 else 1.0
        node.path_chance = above * node.chance
    return offered


class FrontierEntry(NamedTuple):
    """A node that may be taken next. The heap pops the smallest entry: the most likely node,
    then the shallowest, then the first offered."""

    minus_path_chance: float  # -path chance, so that the most likely sorts first
    depth: int  # 1: right after the anchor
    node: int  # its index among the offered nodes


def best_first(offered: list[DraftNode], limit: int) -> list[int]:
    """Up to `limit` nodes, most likely first, each after its parent: a node is taken only
    from the frontier of those taken, so every prefix is closed under parents."""
    children: dict[int, list[int]] = {}
    for i, node in enumerate(offered):
        children.setdefault(node.parent, []).append(i)

    def entry(i: int) -> FrontierEntry:
        return FrontierEntry(-offered[i].path_chance, offered[i].depth, i)

    frontier = [entry(i) for i in children.get(-1, [])]
    heapq.heapify(frontier)
    order: list[int] = []
    while frontier and len(order) < limit:
        i = heapq.heappop(frontier).node
        order.append(i)
        for child in children.get(i, []):
            heapq.heappush(frontier, entry(child))
    return order


# --- the rules -------------------------------------------------------------------------------


def plan_step(
    proposals: list[DraftTree],
    curve: CostCurve | None,
    *,
    rule: str,
    budget: int,
    tree: bool,
    drafting_cost: float = 0.0,
) -> Plan:
    """Choose the drafts to verify this step (at most `budget` of them). `tree=False`
    (sampling, pure mode, caches that cannot drop a branch) verifies one source's chain."""
    curve = curve or CostCurve.from_ratios([1.0])
    proposals = [p for p in proposals if len(p)]
    if tree:
        offers = [merge_proposals(proposals)]
    else:
        offers = [merge_proposals([p], first_choice_only=True) for p in proposals] or [[]]
    if rule == FIXED:
        offered = next((o for o in offers if o), offers[0])
        first = [i for i, node in enumerate(offered) if node.first_choice][:budget]
        return fixed_plan(offered, first, curve, drafting_cost)
    plans = [cost_plan(o, curve, budget=budget, drafting_cost=drafting_cost) for o in offers]
    return max(plans, key=lambda plan: plan.rate)  # ties: the first source's


class BlockSize(NamedTuple):
    """What verifying the best-first n nodes would give, on the cheapest pass covering them."""

    rate: float  # expected tokens per unit of time: expected / cost
    forwarded: int  # nodes forwarded, m >= n: the pass's extra rows take the next-best nodes
    length: int  # tokens in the pass: the anchor, the m nodes, then filler if none is left
    cost: float  # the pass, the drafting and the tree's extra paths, in one-token passes
    expected: float  # E = 1 + the m nodes' path chances: tokens the step is expected to emit


def block_sizes(order, offered, curve: CostCurve, drafting_cost: float) -> list[BlockSize]:
    """sizes[n] for n = 0..len(order): the best-first n nodes on the cheapest pass that covers
    n + 1 tokens, its extra rows taken by the next-best nodes (filler only where none is left)."""
    gains = [0.0]  # gains[m]: expected accepted drafts of the best-first m nodes
    for i in order:
        gains.append(gains[-1] + offered[i].path_chance)
    paths = paths_of(order, offered)
    sizes = []
    for n in range(len(order) + 1):
        cost, length = curve.cheapest(n + 1)
        m = min(length - 1, len(order))
        cost += drafting_cost + curve.branch_cost * (paths[m] - 1)
        expected = 1.0 + gains[m]
        sizes.append(BlockSize(expected / cost, m, length, cost, expected))
    return sizes


def paths_of(order: list[int], offered: list[DraftNode]) -> list[int]:
    """paths[m]: the root-to-leaf paths of the tree of the anchor and the first m nodes of
    `order` (closed under parents). A node under a leaf extends its path; a node under a
    parent that already has a child starts a new one."""
    paths, has_child = [1], set()
    for i in order:
        parent = offered[i].parent  # -1: the anchor
        paths.append(paths[-1] + (parent in has_child))
        has_child.add(parent)
    return paths


def cost_plan(offered, curve: CostCurve, *, budget: int, drafting_cost: float) -> Plan:
    """The node count that maximises expected tokens per unit of time (the fewest on ties)."""
    order = best_first(offered, budget)
    sizes = block_sizes(order, offered, curve, drafting_cost)
    best = max(sizes, key=lambda size: size.rate)  # ties: the fewest nodes
    m = best.forwarded
    return Plan(
        rule=COST,
        offered=offered,
        nodes=order[:m],
        expected_tokens=best.expected,
        cost=best.cost,
        ordinary_rate=1.0 / (curve(1) + drafting_cost),
        next_rate=sizes[m + 1].rate if m + 1 < len(sizes) else None,
        padding=best.length - 1 - m,
    )


def fixed_plan(offered, nodes: list[int], curve: CostCurve, drafting_cost: float) -> Plan:
    """Every node given, whatever it costs, never padded."""
    cost = curve(len(nodes) + 1) + drafting_cost
    return Plan(
        rule=FIXED,
        offered=offered,
        nodes=nodes,
        expected_tokens=1.0 + sum(offered[i].path_chance for i in nodes),
        cost=cost,
        ordinary_rate=1.0 / (curve(1) + drafting_cost),
        next_rate=None,
        padding=0,
    )
