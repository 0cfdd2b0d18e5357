"""How many drafts a step verifies: the block that maximises expected tokens per unit of time.

Verifying drafts d_1..d_m costs one backbone pass over m + 1 tokens, c(m + 1) one-token passes
on this machine (cost.py), plus the step's drafting. It is expected to emit

    E(m) = 1 + sum_{j <= m} prod_{i <= j} p_i

tokens (the anchor always, d_j when d_1..d_j are all accepted). The "cost" rule verifies the m
that maximises E(m) / (c(m + 1) + drafting); m = 0, an ordinary step, is always a candidate,
so a step is never expected to give less than it costs. With two chains (head and context)
the candidates are every pair of prefixes: where they share leading tokens those are forwarded
once, and where they part the two branches form a small tree verified in the same pass
(greedy decoding only: see tree.py). The "fixed" rule verifies every draft it is given, as
ShuffleLM did before it knew its costs.

Where this machine runs a longer pass faster than a shorter one (CPU matrix kernels are often
slower at 2-3 rows than at 4-5), the cost rule pays for the cheapest pass that covers the block,
c*(n) = min over m >= n of c(m) (cost.py's `cheapest`, at least 5 % cheaper): the drafts are
forwarded with filler tokens after them, whose results and cache entries are thrown away
(`Plan.padding`). With equal costs the planner prefers real drafts over filler.

Why this rule: EAGLE-2 ranks tree nodes by confidence but sizes the tree by hand; SpecDec++
stops a chain when the chance of a rejection passes a threshold tuned per setting; Sequoia
searches the tree shape against the hardware's measured cost. With at most two chains of a
few drafts, the exact search over prefix pairs is a few dozen products, so it uses the
measured cost directly, as Sequoia does, with no threshold to tune per machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cost import CostCurve
from .proposers import Chain

COST = "cost"
FIXED = "fixed"
BLOCK_RULES = (COST, FIXED)


@dataclass
class Plan:
    """What one step verifies, and why."""

    rule: str  # COST or FIXED
    head: int  # drafts taken from the head chain (its first `head`)
    context: int  # drafts taken from the context chain (its first `context`)
    shared: int  # leading drafts the two share, forwarded once
    expected_tokens: float  # E: tokens the step is expected to emit, the anchor included
    cost: float  # c(drafts + 1) + drafting, in one-token passes
    ordinary_rate: float  # what an ordinary step gives per unit of time: 1 / (1 + drafting)
    next_rate: float | None  # the best rate with one draft more (None: no draft left)
    padding: int = 0  # filler tokens forwarded after the drafts: that longer pass is cheaper

    @property
    def drafts(self) -> int:
        return self.head + self.context - self.shared

    @property
    def rate(self) -> float:
        return self.expected_tokens / self.cost

    @property
    def is_tree(self) -> bool:
        return self.head > self.shared and self.context > self.shared


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


class _Trie:
    """Path probabilities of the two chains merged where they agree: a shared draft is as
    likely as the more confident source says; siblings that part are mutually exclusive."""

    def __init__(self, head: Chain | None, context: Chain | None, *, tree: bool):
        a = list(head.accept_probs) if head else []
        c = list(context.accept_probs) if context else []
        self.tree = tree  # False: one chain only, and no merging (see plan_step)
        self.shared = common_prefix(head.tokens, context.tokens) if tree and head and context else 0
        for k in range(self.shared):
            a[k] = c[k] = max(a[k], c[k])
        self.a, self.c = a, c
        self.cum_a = _path_sums(a)  # cum_a[i]: expected accepted drafts of head[:i]
        self.cum_c = _path_sums(c)

    def expected(self, i: int, j: int) -> tuple[float, int, int] | None:
        """(E, drafts forwarded, shared) for head[:i] with context[:j]; None where they would
        form a tree and trees are ruled out."""
        s = self.shared
        if j <= min(i, s):
            return 1 + self.cum_a[i], i, j
        if i <= min(j, s):
            return 1 + self.cum_c[j], j, i
        if self.tree:  # i > s and j > s: the branches part after s shared drafts
            scale = min(1.0, 1.0 / max(self.a[s] + self.c[s], 1e-12))
            branches = self.cum_a[i] - self.cum_a[s] + self.cum_c[j] - self.cum_c[s]
            return 1 + self.cum_a[s] + scale * branches, i + j - s, s
        return None


def _path_sums(probs: list[float]) -> list[float]:
    sums, path, total = [0.0], 1.0, 0.0
    for p in probs:
        path *= p
        total += path
        sums.append(total)
    return sums


def plan_step(
    head: Chain | None,
    context: Chain | None,
    curve: CostCurve | None,
    *,
    rule: str,
    budget: int,
    tree: bool,
    drafting_cost: float = 0.0,
) -> Plan:
    """Choose the prefixes of the two chains to verify this step (at most `budget` drafts).
    `tree=False` (sampling, pure mode, caches that cannot drop a branch) allows one chain."""
    curve = curve or CostCurve.from_ratios([1.0])
    trie = _Trie(head, context, tree=tree)
    n_head, n_context = len(head.tokens) if head else 0, len(context.tokens) if context else 0

    # forwarded length per draft count: the cost rule pads to a cheaper, longer pass
    lengths = [curve.cheapest(d + 1)[1] if rule == COST else d + 1 for d in range(budget + 1)]

    def cost(drafts: int) -> float:
        return curve(lengths[drafts]) + drafting_cost

    candidates = []  # (rate, -drafts, i, j, E, drafts, shared)
    for i in range(n_head + 1):
        for j in range(n_context + 1):
            value = trie.expected(i, j)
            if value is None or value[1] > budget:
                continue
            expected, drafts, shared = value
            candidates.append((expected / cost(drafts), -drafts, i, j, expected, drafts, shared))
    if rule == FIXED:
        chosen = _fixed_choice(candidates, n_head, n_context, tree)
    else:
        chosen = max(candidates)
    _, _, i, j, expected, drafts, shared = chosen
    longer = [c[0] for c in candidates if c[5] == drafts + 1]
    return Plan(
        rule=rule,
        head=i if drafts else 0,
        context=j if drafts else 0,
        shared=shared if drafts else 0,
        expected_tokens=expected,
        cost=cost(drafts),
        ordinary_rate=1.0 / cost(0),
        next_rate=max(longer) if longer else None,
        padding=lengths[drafts] - (drafts + 1),
    )


def _fixed_choice(candidates, n_head: int, n_context: int, tree: bool):
    """Every draft given (within the budget): both chains where a tree is allowed, else the
    head's chain, or the context's where the head has none."""

    def preference(c):
        _, minus_drafts, i, j, *_ = c
        if tree:
            return (-minus_drafts, i, j)
        return (i, j if i == 0 else -j, -minus_drafts)

    return max(candidates, key=preference)
