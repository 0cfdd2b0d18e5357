"""Calibration of the head's alternatives (the next-best tokens a tree checks beside its chain):
fitted on replayed outcomes, saved with the head, and used by the proposer in place of the
estimate from the chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shuffle_model.decoding.proposers import (
    DraftTree,
    HeadDraft,
    OnlineCorrection,
    add_alternatives,
)
from shuffle_model.model.calibration import Calibration, IsotonicMap
from shuffle_model.training.calibration_fit import MIN_PER_OFFSET, Outcomes, fit_alternatives


def outcomes_where_half_come_true(seed: int = 0, n: int = 4000) -> Outcomes:
    """Second-best tokens at offset 1 accepted half as often as their probability says; a
    handful of third-best ones at offset 2 (too few to fit)."""
    rng = np.random.default_rng(seed)
    outcomes = Outcomes()
    for i in range(n):
        prob = float(rng.uniform(0.0, 0.5))
        accepted = bool(rng.random() < prob / 2)
        outcomes.alternatives.append((i % 50, 1, 2, prob, prob / 0.5, 0.9, accepted))
    for i in range(MIN_PER_OFFSET // 4):
        outcomes.alternatives.append((i % 50, 2, 3, 0.1, 0.2, 0.5, False))
    return outcomes


def test_alternatives_are_fitted_per_offset_and_place_where_there_is_data():
    calibration = Calibration(head=[IsotonicMap(x=[0.0, 1.0], y=[0.0, 1.0])] * 2)
    fit_alternatives(outcomes_where_half_come_true(), calibration)
    assert set(calibration.alternatives) == {"1/2"}  # offset 2's third-best: too few outcomes
    for prob in (0.1, 0.2, 0.4):  # the map learnt that these come true half as often
        assert calibration.alternative_prob(1, 2, prob) == pytest.approx(prob / 2, abs=0.05)
    assert calibration.alternative_prob(2, 3, 0.1) is None
    report = calibration.report["alternatives"]["1/2"]
    # the estimate from the chain (keep 0.9 x the ratio) is far off; the map is not
    assert report["ece_calibrated"] < 0.05 < report["ece_estimate_from_chain"]


def test_alternative_maps_survive_a_round_trip_and_old_files_load(tmp_path):
    calibration = Calibration()
    calibration.alternatives["1/2"] = IsotonicMap(x=[0.0, 1.0], y=[0.0, 0.3])
    loaded = Calibration.load(calibration.save(tmp_path / "calibration.json"))
    assert loaded.alternative_prob(1, 2, 0.5) == pytest.approx(0.15)
    old = calibration.to_dict()
    del old["alternatives"]  # a calibration.json written before alternatives were fitted
    assert Calibration.from_dict(old).alternatives == {}


def head_draft() -> HeadDraft:
    """Two slots in a chain (tokens 5, 6), each with two runners-up."""
    return HeadDraft(
        tokens=torch.tensor([5, 6]),
        probs=None,
        keep_probs=[0.9, 0.8],
        scores=torch.zeros(2, 2),
        offsets=[1, 2],
        sinkhorn=None,
        statuses=[None, None],
        block=[0, 1],
        top_tokens=torch.tensor([[5, 7, 8], [6, 9, 10]]),
        top_probs=torch.tensor([[0.5, 0.4, 0.1], [0.6, 0.2, 0.1]]),
    )


def alternative_chances(calibration: Calibration) -> dict[int, float]:
    """The chance the proposer gives each alternative token, by token."""
    chain = [0.6, 0.5]
    tree = DraftTree(source="head", tokens=[5, 6], accept_probs=list(chain))
    add_alternatives(tree, head_draft(), chain, OnlineCorrection(), calibration)
    return {
        t: p for t, p, r in zip(tree.tokens, tree.accept_probs, tree.ranks, strict=True) if r > 0
    }


def test_the_proposer_takes_an_alternatives_chance_from_the_calibration():
    estimated = alternative_chances(Calibration())  # no map: chain chance x p / p(top)
    assert estimated[7] == pytest.approx(0.6 * 0.4 / 0.5)
    assert estimated[9] == pytest.approx(0.5 * 0.2 / 0.6)
    calibration = Calibration()
    calibration.alternatives["1/2"] = IsotonicMap(x=[0.0, 1.0], y=[0.0, 0.5])
    mapped = alternative_chances(calibration)
    assert mapped[7] == pytest.approx(0.4 * 0.5)  # the map of the slot's probability, 0.4
    assert mapped[8] == estimated[8] and mapped[9] == estimated[9]  # no map for those: as before
