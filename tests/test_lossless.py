"""Verified greedy decoding must reproduce ordinary greedy decoding token for token."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shuffle_model import STRATEGIES
from tests.tiny import TINY_VOCAB, tiny_backbone, tiny_mixer, tiny_shuffle_lm

prompts = st.lists(st.integers(3, TINY_VOCAB - 1), min_size=1, max_size=12)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("keep_threshold", [0.0, 0.5])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=prompts, backbone_seed=st.integers(0, 3), head_seed=st.integers(0, 10**6))
def test_verified_greedy_equals_backbone_generate(
    strategy, keep_threshold, prompt, backbone_seed, head_seed
):
    backbone = tiny_backbone(seed=backbone_seed)
    model = tiny_mixer(backbone, seed=head_seed)
    ids = torch.tensor([prompt])
    expected = backbone.generate(ids, max_new_tokens=24, do_sample=False)
    got = model.generate(
        ids, max_new_tokens=24, shuffle_strategy=strategy, keep_threshold=keep_threshold
    )
    assert got.tolist() == expected.tolist()


def step_by_step_greedy(model, ids: torch.Tensor, max_new_tokens: int) -> list[int]:
    """ShuffleLM's own greedy decoding, recomputing the full prefix every token (no cache)."""
    sequence = ids[0].tolist()
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([sequence])).logits[0, -1]
        sequence.append(int(logits.argmax()))
        if sequence[-1] in model.config.eos_token_ids:
            break
    return sequence


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=5, deadline=None)
@given(prompt=prompts, seed=st.integers(0, 10**6))
def test_shuffle_lm_verified_greedy_equals_its_own_greedy(strategy, prompt, seed):
    model = tiny_shuffle_lm(seed=seed)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        expected = step_by_step_greedy(model, ids, 20)
    got = model.generate(ids, max_new_tokens=20, shuffle_strategy=strategy, keep_threshold=0.0)
    assert got[0].tolist() == expected


def test_eos_stops_generation_like_the_backbone():
    """Make a token the greedy continuation reaches mid-way the EOS token; both must stop there."""
    backbone = tiny_backbone(seed=0, eos=None)
    ids = torch.tensor([[5, 7, 9]])
    free_run = backbone.generate(ids, max_new_tokens=30, do_sample=False)[0, 3:].tolist()
    position = next(i for i in range(3, 30) if free_run[i] not in free_run[:i])
    eos = free_run[position]
    backbone.generation_config.eos_token_id = eos
    backbone.config.eos_token_id = eos
    model = tiny_mixer(backbone, seed=5)
    assert model.config.eos_token_ids == (eos,)
    expected = backbone.generate(ids, max_new_tokens=30, do_sample=False)
    assert expected.shape[1] == 3 + position + 1
    for strategy in STRATEGIES:
        got = model.generate(ids, max_new_tokens=30, keep_threshold=0.0, shuffle_strategy=strategy)
        assert got.tolist() == expected.tolist()
        pure = model.generate(ids, max_new_tokens=30, keep_threshold=0.0, verify=False)
        assert eos not in pure[0, 3:-1].tolist()  # nothing is emitted after an EOS
