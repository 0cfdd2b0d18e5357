"""The cost-aware block length: expected tokens per unit of time, on hand-made cost curves."""

from __future__ import annotations

import pytest

from shuffle_model.decoding.cost import CostCurve
from shuffle_model.decoding.planning import COST, FIXED, plan_step
from shuffle_model.decoding.proposers import CONTEXT, HEAD, Chain


def chain(source, tokens, probs):
    return Chain(source=source, tokens=list(tokens), accept_probs=list(probs))


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
    plan = plan_step(head, None, curve, rule=COST, budget=6, tree=True)
    assert plan.head == max(range(4), key=rates.__getitem__) == 2
    assert plan.expected_tokens == pytest.approx(1 + 0.9 + 0.45)
    assert plan.rate == pytest.approx(rates[2])
    assert plan.next_rate == pytest.approx(rates[3])
    assert plan.ordinary_rate == pytest.approx(1.0)


def test_expensive_passes_give_ordinary_steps():
    """Where a pass over n tokens costs n one-token passes, no draft can pay for itself."""
    curve = CostCurve.from_ratios([float(n) for n in range(1, 20)])
    head = chain(HEAD, [5, 6, 7, 8], [0.97, 0.97, 0.97, 0.97])
    context = chain(CONTEXT, [9, 9, 9], [0.9, 0.9, 0.9])
    plan = plan_step(head, context, curve, rule=COST, budget=8, tree=True)
    assert plan.drafts == 0 and plan.expected_tokens == 1.0


def test_free_passes_check_every_draft_and_drafting_cost_counts():
    curve = CostCurve.from_ratios([1.0] * 10)
    head = chain(HEAD, [5, 6, 7], [0.5, 0.2, 0.05])
    assert plan_step(head, None, curve, rule=COST, budget=6, tree=True).head == 3
    # a pass over 4 tokens at 1.3: the third draft (+0.005 expected) is not worth it
    curve = CostCurve.from_ratios([1.0, 1.05, 1.1, 1.3])
    plan = plan_step(head, None, curve, rule=COST, budget=6, tree=True, drafting_cost=0.1)
    assert plan.head == 2
    assert plan.cost == pytest.approx(1.1 + 0.1)
    assert plan.ordinary_rate == pytest.approx(1 / 1.1)


def test_budget_caps_the_drafts():
    curve = CostCurve.from_ratios([1.0] * 20)
    head = chain(HEAD, [5, 6, 7, 8], [0.9] * 4)
    context = chain(CONTEXT, [1, 2, 3], [0.9] * 3)
    plan = plan_step(head, context, curve, rule=COST, budget=3, tree=True)
    assert plan.drafts <= 3
    assert plan_step(head, context, curve, rule=FIXED, budget=3, tree=True).drafts == 3


def test_two_chains_that_part_form_a_tree_and_share_their_prefix():
    curve = CostCurve.from_ratios([1.0] * 10)
    head = chain(HEAD, [5, 6, 7], [0.9, 0.5, 0.5])
    context = chain(CONTEXT, [5, 8, 9], [0.6, 0.4, 0.9])
    plan = plan_step(head, context, curve, rule=COST, budget=8, tree=True)
    assert (plan.head, plan.context, plan.shared) == (3, 3, 1)
    assert plan.drafts == 5 and plan.is_tree
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
    plan = plan_step(head, context, curve, rule=COST, budget=8, tree=False)
    assert (plan.head, plan.context, plan.shared) == (0, 3, 0)
    fixed = plan_step(head, context, curve, rule=FIXED, budget=8, tree=False)
    assert (fixed.head, fixed.context) == (2, 0)


def test_the_fixed_rule_checks_every_draft_whatever_it_costs():
    curve = CostCurve.from_ratios([float(n) for n in range(1, 20)])
    head = chain(HEAD, [5, 6, 7], [0.1, 0.1, 0.1])
    plan = plan_step(head, None, curve, rule=FIXED, budget=6, tree=True)
    assert plan.head == 3 and plan.rate < plan.ordinary_rate


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
    curve = cost.cost_curve(mixer, max_tokens=6)
    assert len(calls) == 1 and curve.max_tokens == 6 and curve.ratios[0] == 1.0
    assert all(0 < r <= n for n, r in enumerate(curve.ratios, start=1))
    assert curve.one_token_ms > 0 and curve.draft_cost > 0 and curve.key["device"] == "cpu"
    assert cost.curve_path(curve.key).is_file()
    mixer.cost_curve = None  # a new process: the curve comes from the cache
    assert cost.cost_curve(mixer, max_tokens=6).ratios == curve.ratios and len(calls) == 1
    assert cost.cost_curve(mixer, max_tokens=9).max_tokens == 9 and len(calls) == 2  # longer
    cost.cost_curve(mixer, max_tokens=6, remeasure=True)
    assert len(calls) == 3
    mixer.cost_curve = None
    other = dict(curve.key, dtype="bfloat16")  # another dtype has a curve of its own
    assert cost.curve_path(other) != cost.curve_path(curve.key)
    # measured while other programs were busy: used, but not cached for later starts
    monkeypatch.setattr(cost, "machine_is_busy", lambda: True)
    said = []
    busy = cost.cost_curve(mixer, max_tokens=12, status=said.append)
    assert busy.max_tokens == 12 and mixer.cost_curve is busy
    assert cost.load_cached(curve.key).max_tokens == 9 and "not cached" in said[-1]


def test_undisturbed_ignores_the_slow_repetitions():
    from shuffle_model.decoding.cost import undisturbed

    assert undisturbed([0.10, 0.11, 0.50, 0.90, 0.12]) == pytest.approx(0.105)


def test_the_head_rests_while_it_does_not_pay_and_looks_again():
    from shuffle_model.decoding.proposers import HeadGate

    gate = HeadGate(longest_rest=8)
    assert gate.open()
    gate.weigh(-0.1)  # drafting cost more than its chain added
    assert [gate.open() for _ in range(3)] == [False, False, True]  # rests 2, then looks
    gate.weigh(-0.1)
    assert [gate.open() for _ in range(5)] == [False] * 4 + [True]  # rests longer
    gate.weigh(0.5)  # it pays again: the running gain turns positive, no rest
    assert gate.open() and gate.gain > 0
    for _ in range(6):
        gate.weigh(-1.0)
        while not gate.open():
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
    one = Chain(source=HEAD, tokens=[5], accept_probs=[0.9])
    plan = plan_step(one, None, jagged, rule="cost", budget=8, tree=True)
    assert (plan.drafts, plan.padding, plan.cost) == (1, 2, 1.3)
    four = Chain(source=HEAD, tokens=[5, 6, 7, 8], accept_probs=[0.9, 0.8, 0.7, 0.6])
    plan = plan_step(four, None, jagged, rule="cost", budget=8, tree=True)
    assert (plan.drafts, plan.padding) == (4, 0)  # the same pass, filled with real drafts
    fixed = plan_step(one, None, jagged, rule="fixed", budget=8, tree=True)
    assert (fixed.drafts, fixed.padding, fixed.cost) == (1, 0, 1.9)  # the old rule never pads
