"""ShuffleTokenizer: the original's tokenizer wrapper, over a transformers tokenizer."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer


class ShuffleTokenizer:
    """A transformers tokenizer (or a name or folder to load one from, e.g. a head folder that
    carries its backbone's tokenizer) with the original's `tokenize_for_shuffle`. Everything
    else is the wrapped tokenizer's. ShuffleLM needs no marker tokens: `add_shuffle_tokens` is
    accepted and adds none (new ids would lie outside the backbone's vocabulary), so
    `shuffle_tokens` stays empty."""

    def __init__(self, tokenizer, add_shuffle_tokens: bool = True):
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.tokenizer = tokenizer
        self.shuffle_tokens: dict[str, str] = {}

    def tokenize_for_shuffle(self, text, max_length: int | None = None) -> dict:
        """Token ids, attention mask, position ids and an all-true shuffle mask, as tensors."""
        encoding = self.tokenizer(
            text,
            max_length=max_length,
            truncation=max_length is not None,
            padding=True,
            return_tensors="pt",
        )
        batch, length = encoding["input_ids"].shape
        encoding["position_ids"] = torch.arange(length).repeat(batch, 1)  # (batch, length)
        encoding["shuffle_mask"] = torch.ones(batch, length, dtype=torch.bool)
        return encoding

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        if name == "tokenizer":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.tokenizer, name)
