"""Verified sampling must follow the backbone's own sampling distribution exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from shuffle_model import STRATEGIES
from shuffle_model.decoding.cost import CostCurve
from shuffle_model.decoding.planning import BLOCK_RULES
from shuffle_model.decoding.sampling import TokenSampler
from shuffle_model.decoding.settings import DRAFT_SOURCES
from tests.tiny import tiny_backbone, tiny_corpus, tiny_mixer

VOCAB = 6
PROMPT = [3, 4, 5]
RUNS = 800  # per combination; the negative control shows this is enough to catch a bias
TEMPERATURE, TOP_P = 0.9, 0.95


def exact_two_token_distribution(backbone) -> np.ndarray:
    """P(x1, x2) of the backbone sampling with the same temperature and top-p."""
    warp = TokenSampler(temperature=TEMPERATURE, top_p=TOP_P, seed=0, device="cpu").probs
    with torch.no_grad():
        first = warp(backbone(torch.tensor([PROMPT])).logits[0, -1])
        table = np.zeros((VOCAB, VOCAB))
        for x1 in range(VOCAB):
            second = warp(backbone(torch.tensor([PROMPT + [x1]])).logits[0, -1])
            table[x1] = (first[x1] * second).numpy()
    return table.ravel()


def sampled_counts(model, *, verify: bool, **settings) -> tuple[np.ndarray, float]:
    counts = np.zeros(VOCAB * VOCAB)
    accepted = 0
    settings = {"shuffle_strategy": "identity", **settings}
    for seed in range(RUNS):
        out, trace = model.generate(
            torch.tensor([PROMPT]),
            max_new_tokens=2,
            temperature=TEMPERATURE,
            top_p=TOP_P,
            keep_threshold=0.0,
            verify=verify,
            seed=seed,
            return_trace=True,
            **settings,
        )
        x1, x2 = out[0, -2:].tolist()
        counts[x1 * VOCAB + x2] += 1
        accepted += trace.steps[0].num_accepted
    return counts, accepted / RUNS


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    big = expected >= 5  # merge the rare cells into one bin, as the test requires
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    keep = expected > 0
    return chisquare(
        observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()
    ).pvalue


@pytest.fixture(scope="module")
def models():
    backbone = tiny_backbone(seed=3, vocab_size=VOCAB, eos=None, init_std=0.1)
    model = tiny_mixer(backbone, seed=7, num_slots=2)  # its slots fill offset 1
    model.cost_curve = CostCurve.from_ratios([1.0] * 16)  # passes cost alike: drafts get checked
    model.corpus = tiny_corpus(model, [], seed=5, noise=30)  # random text: any draft is fair
    return backbone, model


@pytest.fixture(scope="module")
def exact(models):
    return exact_two_token_distribution(models[0])


@pytest.mark.parametrize(
    ("strategy", "source", "rule"),
    [
        (strategy, source, rule)
        for strategy in STRATEGIES
        for source in DRAFT_SOURCES
        for rule in BLOCK_RULES
    ],
)
def test_speculative_sampling_matches_backbone_distribution(models, exact, strategy, source, rule):
    _, model = models
    counts, acceptance = sampled_counts(
        model, verify=True, shuffle_strategy=strategy, draft_source=source, block_length=rule
    )
    assert 0.05 < acceptance < 0.95, f"drafts should be both accepted and rejected ({acceptance})"
    assert chi_square_pvalue(counts, exact) > 1e-3


def test_the_chi_square_test_catches_unverified_drafts(models, exact):
    """Negative control: pure mode emits the head's own (wrong) distribution, and the same
    test must notice."""
    _, model = models
    counts, _ = sampled_counts(model, verify=False)
    assert chi_square_pvalue(counts, exact) < 1e-5


def test_seeded_sampling_is_reproducible(mixer):
    ids = torch.tensor([[5, 6, 7]])
    settings = dict(max_new_tokens=20, temperature=1.0, top_p=0.9, keep_threshold=0.0)
    first = mixer.generate(ids, seed=123, **settings)
    again = mixer.generate(ids, seed=123, **settings)
    other = [mixer.generate(ids, seed=s, **settings).tolist() for s in range(124, 129)]
    assert first.tolist() == again.tolist()
    assert any(o != first.tolist() for o in other)
