"""Keeping evaluation text out of training prompts: 8-token runs shared with held-out questions.

A prompt is rejected when any run of N consecutive token ids (the backbone tokenizer's, N = 8)
also occurs in a held-out question (every turn of every Spec-Bench question). The questions
are read from a file the caller names; nothing here ships or copies them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..model.chat import encode_text
from ..resources import SPEC_BENCH  # noqa: F401 (the CLIs import it from here)

RUN = 8  # tokens in a run that a prompt may not share with a held-out question


def ngrams(ids: list[int], n: int = RUN) -> set[tuple[int, ...]]:
    """The runs of `n` consecutive ids in `ids`."""
    return {tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)}


def question_texts(path: Path) -> list[str]:
    """Every turn of every question of a Spec-Bench style jsonl file."""
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            texts += [turn for turn in json.loads(line)["turns"] if turn.strip()]
    return texts


def banned_ngrams(tokenizer, texts: Iterable[str], n: int = RUN) -> set[tuple[int, ...]]:
    """All n-token runs of `texts`, tokenized as user text."""
    banned: set[tuple[int, ...]] = set()
    for text in texts:
        banned |= ngrams(encode_text(tokenizer, text), n)
    return banned


def shares_run(ids: list[int], banned: set[tuple[int, ...]], n: int = RUN) -> bool:
    """True when some n-token run of `ids` is in `banned`."""
    return any(tuple(ids[i : i + n]) in banned for i in range(len(ids) - n + 1))
