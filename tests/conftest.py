"""Shared fixtures: tiny random Llama backbones and a character tokenizer, all offline."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch

from tests.tiny import char_tokenizer, tiny_backbone, tiny_mixer


@pytest.fixture(scope="session")
def tokenizer():
    return char_tokenizer()


@pytest.fixture
def backbone():
    return tiny_backbone(seed=0)


@pytest.fixture
def mixer(backbone, tokenizer):
    return tiny_mixer(backbone, seed=1, tokenizer=tokenizer)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
