"""The cost-aware block length: expected tokens per unit of time, on hand-made cost curves."""

from __future__ import annotations

import pytest

from shuffle_model.decoding.cost import CostCurve
from shuffle_model.decoding.planning import COST, FIXED, DraftNode, paths_of, plan_step
from shuffle_model.decoding.proposers import CONTEXT, HEAD, DraftTree


def chain(source, tokens, probs):
    return DraftTree(source=source, tokens=list(tokens), accept_probs=list(probs))


def is_tree(plan) -> bool:
    """Two forwarded nodes share a parent."""
    parents = [node.parent for node in plan.chosen]
    return len(set(parents)) < len(parents)


def expected(probs):
    total, path = 1.0, 1.0
    for p in probs:
        path *= p
        total += path
    return total


def test_the_rule_maximises_expected_tokens_per_unit_of_time():
    head = chain(HEAD, [5, 6, 7], [0.9, 0.5, 0.1])
    curve = CostCurve.from_ratios([1.0, 1.2, 1.4, 2.0])
    rates = [expected(head.accept_probs[:m]) / curve(m + 1) for m in range(4)]
    plan = plan_step([head], curve, rule=COST, budget=6, tree=True)
    assert plan.drafts == max(range(4), key=rates.__getitem__) == 2
    assert plan.expected_tokens == pytest.approx(1 + 0.9 + 0.45)
    assert plan.rate == pytest.approx(rates[2])
    assert plan.next_rate == pytest.approx(rates[3])
    assert plan.ordinary_rate == pytest.approx(1.0)


def test_expensive_passes_give_ordinary_steps():
    """Where a pass over n tokens costs n one-token passes, no draft can pay for itself."""
    curve = CostCurve.from_ratios([float(n) for n in range(1, 20)])
    head = chain(HEAD, [5, 6, 7, 8], [0.97, 0.97, 0.97, 0.97])
    context = chain(CONTEXT, [9, 9, 9], [0.9, 0.9, 0.9])
    plan = plan_step([head, context], curve, rule=COST, budget=8, tree=True)
    assert plan.drafts == 0 and plan.expected_tokens == 1.0


def test_free_passes_check_every_draft_and_drafting_cost_counts():
    curve = CostCurve.from_ratios([1.0] * 10)
    head = chain(HEAD, [5, 6, 7], [0.5, 0.2, 0.05])
    assert plan_step([head], curve, rule=COST, budget=6, tree=True).drafts == 3
    # a pass over 4 tokens at 1.3: the third draft (+0.005 expected) is not worth it
    curve = CostCurve.from_ratios([1.0, 1.05, 1.1, 1.3])
    plan = plan_step([head], curve, rule=COST, budget=6, tree=True, drafting_cost=0.1)
    assert plan.drafts == 2
    assert plan.cost == pytest.approx(1.1 + 0.1)
    assert plan.ordinary_rate == pytest.approx(1 / 1.1)


def test_budget_caps_the_drafts():
    curve = CostCurve.from_ratios([1.0] * 20)
    head = chain(HEAD, [5, 6, 7, 8], [0.9] * 4)
    context = chain(CONTEXT, [1, 2, 3], [0.9] * 3)
    plan = plan_step([head, context], curve, rule=COST, budget=3, tree=True)
    assert plan.drafts <= 3
    assert plan_step([head, context], curve, rule=FIXED, budget=3, tree=True).drafts == 3


def test_two_chains_that_part_form_a_tree_and_share_their_prefix():
    curve = CostCurve.from_ratios([1.0] * 10)
    head = chain(HEAD, [5, 6, 7], [0.9, 0.5, 0.5])
    context = chain(CONTEXT, [5, 8, 9], [0.6, 0.4, 0.9])
    plan = plan_step([head, context], curve, rule=COST, budget=8, tree=True)
    assert (plan.drafts_from(HEAD), plan.drafts_from(CONTEXT), plan.shared) == (3, 3, 1)
    assert plan.drafts == 5 and is_tree(plan)
    # shared draft: as likely as the more confident source; the parting siblings exclusive
    shared = 0.9
    scale = 1 / max(1.0, 0.5 + 0.4)
    branches = shared * scale * ((0.5 + 0.5 * 0.5) + (0.4 + 0.4 * 0.9))
    assert plan.expected_tokens == pytest.approx(1 + shared + branches)


def test_without_trees_one_chain_is_chosen():
    """Sampling verifies one chain: the plan never mixes the two."""
    curve = CostCurve.from_ratios([1.0] * 10)
    head = chain(HEAD, [5, 6], [0.5, 0.5])
    context = chain(CONTEXT, [5, 8, 9], [0.8, 0.8, 0.8])
    plan = plan_step([head, context], curve, rule=COST, budget=8, tree=False)
    assert (plan.drafts_from(HEAD), plan.drafts_from(CONTEXT), plan.shared) == (0, 3, 0)
    fixed = plan_step([head, context], curve, rule=FIXED, budget=8, tree=False)
    assert (fixed.drafts_from(HEAD), fixed.drafts_from(CONTEXT)) == (2, 0)


def test_the_fixed_rule_checks_every_draft_whatever_it_costs():
    curve = CostCurve.from_ratios([float(n) for n in range(1, 20)])
    head = chain(HEAD, [5, 6, 7], [0.1, 0.1, 0.1])
    plan = plan_step([head], curve, rule=FIXED, budget=6, tree=True)
    assert plan.drafts == 3 and plan.rate < plan.ordinary_rate


def test_cost_curve_extends_beyond_its_measurements():
    curve = CostCurve.from_ratios([1.0, 1.5, 1.7])
    assert curve(3) == 1.7 and curve(5) == pytest.approx(1.7 + 2 * 0.2)
    flat = CostCurve.from_ratios([1.0, 1.2, 1.1])
    assert flat(6) == 1.1  # never cheaper than the last measurement
    with pytest.raises(ValueError):
        CostCurve.from_ratios([1.0, -1.0])


def test_a_cost_curve_is_measured_once_cached_and_measured_again_on_request(
    mixer, tmp_path, monkeypatch
):
    from shuffle_model.decoding import cost

    monkeypatch.setenv("SHUFFLELM_CACHE", str(tmp_path))
    monkeypatch.setattr(cost, "machine_is_busy", lambda: False)
    calls = []
    original = cost.measure
    monkeypatch.setattr(cost, "measure", lambda *a, **k: calls.append(1) or original(*a, **k))
    curve = cost.ensure_cost_curve(mixer, max_tokens=6)
    assert len(calls) == 1 and curve.max_tokens == 6 and curve.ratios[0] == 1.0
    assert all(0 < r <= n for n, r in enumerate(curve.ratios, start=1))
    assert curve.one_token_ms > 0 and curve.draft_cost > 0 and curve.key["device"] == "cpu"
    assert cost.curve_path(curve.key).is_file()
    mixer.cost_curve = None  # a new process: the curve comes from the cache
    assert cost.ensure_cost_curve(mixer, max_tokens=6).ratios == curve.ratios and len(calls) == 1
    assert cost.ensure_cost_curve(mixer, max_tokens=9).max_tokens == 9 and len(calls) == 2  # longer
    cost.ensure_cost_curve(mixer, max_tokens=6, remeasure=True)
    assert len(calls) == 3
    mixer.cost_curve = None
    other = dict(curve.key, dtype="bfloat16")  # another dtype has a curve of its own
    assert cost.curve_path(other) != cost.curve_path(curve.key)
    # measured while other programs were busy: used, but not cached for later starts
    monkeypatch.setattr(cost, "machine_is_busy", lambda: True)
    said = []
    busy = cost.ensure_cost_curve(mixer, max_tokens=12, status=said.append)
    assert busy.max_tokens == 12 and mixer.cost_curve is busy
    assert cost.load_cached(curve.key).max_tokens == 9 and "not cached" in said[-1]


def test_undisturbed_ignores_the_slow_repetitions():
    from shuffle_model.decoding.cost import undisturbed

    assert undisturbed([0.10, 0.11, 0.50, 0.90, 0.12]) == pytest.approx(0.105)


def test_the_head_rests_while_it_does_not_pay_and_looks_again():
    from shuffle_model.decoding.proposers import HeadGate

    gate = HeadGate(longest_rest=8)
    assert not gate.take_rest()
    gate.weigh(-0.1)  # drafting cost more than its chain added
    assert [gate.take_rest() for _ in range(3)] == [True, True, False]  # rests 2, then looks
    gate.weigh(-0.1)
    assert [gate.take_rest() for _ in range(5)] == [True] * 4 + [False]  # rests longer
    gate.weigh(0.5)  # it pays again: the running gain turns positive, no rest
    assert not gate.take_rest() and gate.gain > 0
    for _ in range(6):
        gate.weigh(-1.0)
        while gate.take_rest():
            pass
    assert gate.rest == 8  # the longest rest caps the back-off


def test_the_cheapest_pass_may_be_a_longer_one():
    jagged = CostCurve.from_ratios([1.0, 1.9, 2.0, 1.3, 1.25, 1.6])
    assert jagged.cheapest(1) == (1.0, 1)
    assert jagged.cheapest(2) == (1.3, 4)  # 2 filler tokens make the pass cheaper; a 3rd
    assert jagged.cheapest(3) == (1.3, 4)  # would save under 5 % more
    assert jagged.cheapest(5) == (1.25, 5)
    assert jagged.cheapest(6) == (1.6, 6)
    almost = CostCurve.from_ratios([1.0, 1.3, 1.26])  # under 5 % cheaper: not worth filler
    assert almost.cheapest(2) == (1.3, 2)


def test_a_step_with_few_drafts_pads_to_the_cheaper_pass_and_prefers_real_drafts():
    jagged = CostCurve.from_ratios([1.0, 1.9, 2.0, 1.3, 1.25, 1.6])
    one = DraftTree(source=HEAD, tokens=[5], accept_probs=[0.9])
    plan = plan_step([one], jagged, rule="cost", budget=8, tree=True)
    assert (plan.drafts, plan.padding, plan.cost) == (1, 2, 1.3)
    four = DraftTree(source=HEAD, tokens=[5, 6, 7, 8], accept_probs=[0.9, 0.8, 0.7, 0.6])
    plan = plan_step([four], jagged, rule="cost", budget=8, tree=True)
    assert (plan.drafts, plan.padding) == (4, 0)  # the same pass, filled with real drafts
    fixed = plan_step([one], jagged, rule="fixed", budget=8, tree=True)
    assert (fixed.drafts, fixed.padding, fixed.cost) == (1, 0, 1.9)  # the old rule never pads


# --- trees of drafts from every source: the planner picks nodes by path chance ------------------


def head_tree(chain_probs, alternatives):
    """The head's chain 5, 6, 7, ... with `alternatives`: (token, parent, chance, rank)."""
    tree = DraftTree(HEAD, [5 + k for k in range(len(chain_probs))], list(chain_probs))
    for token, parent, chance, rank in alternatives:
        tree.add(token, parent, chance, rank)
    return tree


def test_the_planner_takes_the_nodes_of_highest_path_chance():
    """An alternative at offset 1 (path chance 0.35) is worth more than the chain's second
    draft (0.6 x 0.5 = 0.3)'s successor (0.15), and more than its own continuation."""
    tree = head_tree([0.6, 0.5, 0.5], [(20, -1, 0.35, 1), (6, 3, 0.5, 0)])  # 20, then 6
    three_free = CostCurve.from_ratios([1.0, 1.0, 1.0, 1.0, 1.6, 3.0, 4.0])
    plan = plan_step([tree], three_free, rule=COST, budget=8, tree=True)
    assert [plan.offered[i].token for i in plan.nodes] == [5, 20, 6]
    assert plan.expected_tokens == pytest.approx(1 + 0.6 + 0.35 + 0.3)
    assert is_tree(plan) and plan.padding == 0
    # the next node would be the chain's third draft or 20's continuation (0.175): not worth 1.6
    assert plan.next_rate == pytest.approx((1 + 0.6 + 0.35 + 0.3 + 0.175) / 1.6)


def test_chosen_nodes_are_closed_under_parents_and_the_best_such_set():
    """On random trees, every node count's choice contains each node's parent and has the
    largest sum of path chances among all sets of that size that are closed under parents."""
    import itertools
    import random

    from shuffle_model.decoding.planning import best_first, merge_proposals

    rng = random.Random(0)
    for _ in range(30):
        tree = DraftTree(HEAD, [], [])
        for k in range(7):
            tree.add(100 + k, rng.randrange(-1, k), rng.uniform(0.05, 0.95), rng.randrange(3))
        offered = merge_proposals([tree])
        closed = [
            set(c)
            for n in range(8)
            for c in itertools.combinations(range(7), n)
            if all(offered[i].parent in (-1, *c) for i in c)
        ]
        for n in range(8):
            chosen = best_first(offered, n)
            assert all(offered[i].parent in (-1, *chosen[:k]) for k, i in enumerate(chosen))
            best = max(sum(offered[i].path_chance for i in c) for c in closed if len(c) == n)
            assert sum(offered[i].path_chance for i in chosen) == pytest.approx(best)


def test_a_longer_cheaper_pass_takes_the_next_best_nodes_before_filler():
    """On the EPYC's jagged curve a pass over 4 tokens is cheaper than one over 2: the extra
    rows take the head's alternatives, however unlikely; filler only once none is left."""
    jagged = CostCurve.from_ratios([1.0, 1.9, 2.0, 1.3, 1.25, 1.6])
    tree = head_tree([0.9], [(20, -1, 0.04, 1), (21, -1, 0.01, 2)])
    plan = plan_step([tree], jagged, rule=COST, budget=8, tree=True)
    assert [plan.offered[i].token for i in plan.nodes] == [5, 20, 21] and plan.padding == 0
    assert plan.cost == 1.3 and plan.expected_tokens == pytest.approx(1.95)
    fewer = head_tree([0.9], [(20, -1, 0.04, 1)])
    plan = plan_step([fewer], jagged, rule=COST, budget=8, tree=True)
    assert plan.drafts == 2 and plan.padding == 1  # no node left for the third row
    # a zero chance is still a real draft, and never worse than filler
    zero = head_tree([0.9], [(20, -1, 0.0, 1), (21, -1, 0.0, 2)])
    assert plan_step([zero], jagged, rule=COST, budget=8, tree=True).padding == 0


def test_an_ordinary_step_when_no_node_pays():
    steep = CostCurve.from_ratios([float(n) for n in range(1, 20)])
    tree = head_tree([0.9, 0.9], [(20, -1, 0.05, 1), (6, 2, 0.9, 0)])
    plan = plan_step([tree], steep, rule=COST, budget=8, tree=True)
    assert plan.drafts == 0 and plan.padding == 0 and plan.expected_tokens == 1.0
    assert plan.next_rate == pytest.approx(1.9 / 2)  # the best single node would give this
    # with nothing likely, free passes change nothing either: the fewest nodes win ties
    flat = CostCurve.from_ratios([1.0] * 10)
    nothing = head_tree([0.0, 0.0], [(20, -1, 0.0, 1)])
    assert plan_step([nothing], flat, rule=COST, budget=8, tree=True).drafts == 0


def test_sources_merge_shared_nodes_and_the_fixed_rule_and_chains_ignore_alternatives():
    flat = CostCurve.from_ratios([1.0] * 12)
    tree = head_tree([0.5, 0.5], [(20, -1, 0.3, 1)])
    context = DraftTree(CONTEXT, [20, 8], [0.6, 0.7])  # its first draft is the head's 20
    plan = plan_step([tree, context], flat, rule=COST, budget=8, tree=True)
    merged = [node for node in plan.offered if node.token == 20]
    assert len(merged) == 1 and merged[0].source == "head+context"
    # the higher chance (0.6), then scaled with its sibling 5 (0.5 + 0.6 > 1)
    assert merged[0].ranks == [1, 0] and merged[0].chance == pytest.approx(0.6 / 1.1)
    assert plan.drafts == 4 and plan.shared == 1
    assert plan.drafts_by_source() == {HEAD: 3, CONTEXT: 2}
    fixed = plan_step([tree, context], flat, rule=FIXED, budget=8, tree=True)
    assert fixed.drafts_by_source() == {HEAD: 3, CONTEXT: 2}  # 20 is the context's own draft
    alone = plan_step([tree], flat, rule=FIXED, budget=8, tree=True)
    assert [alone.offered[i].token for i in alone.nodes] == [5, 6]  # the filter's chain only
    chain = plan_step([tree], flat, rule=COST, budget=8, tree=False)
    assert [chain.offered[i].token for i in chain.nodes] == [5, 6] and not is_tree(chain)


def test_each_further_path_of_a_tree_costs_what_the_curve_says():
    """Row-invariant passes attend once per path of a tree (invariant.py): the planner pays
    the measured branch cost per path beyond the first, and leaves a branch out where that
    costs more than its chance brings."""
    main = chain(HEAD, [5, 6, 7], [0.9, 0.8, 0.7])
    branch = chain(CONTEXT, [9, 10], [0.3, 0.3])  # a sibling of 5 under the anchor
    flat = CostCurve.from_ratios([1.0] * 8)
    free = plan_step([main, branch], flat, rule=COST, budget=8, tree=True)
    assert free.drafts == 5 and is_tree(free)
    dear = CostCurve(ratios=[1.0] * 8, branch_cost=0.2)
    plan = plan_step([main, branch], dear, rule=COST, budget=8, tree=True)
    assert plan.drafts == 3 and not is_tree(plan)
    assert plan.cost == pytest.approx(1.0)
    assert free.cost == pytest.approx(1.0)  # no branch cost measured: paths are free


def test_paths_of_counts_the_leaves_of_each_prefix():
    parents = [-1, 0, -1, 2, 2]  # a, a's child, b (sibling of a), two children of b
    offered = [DraftNode(token=t, parent=p, chance=0.5, depth=1) for t, p in enumerate(parents)]
    assert paths_of([0, 1, 2, 3, 4], offered) == [1, 1, 1, 2, 2, 3]
