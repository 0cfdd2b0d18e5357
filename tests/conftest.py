"""Shared fixtures: tiny random Llama backbones and a character tokenizer, all offline."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# dtype="auto" is bfloat16 on CPUs with native bfloat16 and float32 elsewhere: the suite pins
# float32, so that its expectations do not depend on the CPU it runs on (tests of bfloat16 ask
# for it by name, and test_precision tests the choice itself)
os.environ.setdefault("SHUFFLELM_DTYPE", "float32")

import shutil

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


# --- the browser tests' Chromium ----------------------------------------------------------------

CHROMIUM_ADVICE = (
    "install it with 'sudo apt-get install chromium' ('make test' does so as root or with "
    "password-less sudo), or set SHUFFLELM_CHROMIUM to a Chromium binary"
)


def chromium_path() -> str | None:
    """SHUFFLELM_CHROMIUM when set (None if that is no executable), else chromium on the PATH."""
    explicit = os.environ.get("SHUFFLELM_CHROMIUM")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_chromium_reason() -> str | None:
    """None when Chromium is there, else one line saying what is missing and how to get it."""
    if chromium_path():
        return None
    explicit = os.environ.get("SHUFFLELM_CHROMIUM")
    where = f"SHUFFLELM_CHROMIUM={explicit} is no executable" if explicit else "not on the PATH"
    return f"browser tests need Chromium ({where}): {CHROMIUM_ADVICE}"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium's path for the browser tests. Missing: they skip (test_browser.py skips as a
    whole, in one line); under CI=true they fail instead (a CI run must never lose them)."""
    reason = missing_chromium_reason()
    if reason is None:
        return chromium_path()
    if on_ci():
        pytest.fail(f"CI=true and Chromium is missing: {reason}", pytrace=False)
    pytest.skip(reason)
