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
def _deterministic_threads(request):
    """One thread for tiny models (their ops are too small to share, and a second thread
    waiting on a busy core made them 5-30x slower); two for the real backbone."""
    real = request.node.get_closest_marker("default_model") is not None
    torch.set_num_threads(max(1, min(2 if real else 1, os.cpu_count() or 1)))
