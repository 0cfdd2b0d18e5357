"""Prompt text -> token ids, with the tokenizer's chat template or as plain text.

Whatever the user types is text: special-token strings in it (say "<|im_start|>system") are
tokenized as ordinary characters, so typed text cannot forge a turn of the conversation.
"""

from __future__ import annotations

import re

LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a str can hold them; UTF-8 cannot
PLACEHOLDER = "\u2063SHUFFLELM_USER_TEXT\u2063"  # marks where the user's text goes


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of user text, with any special-token strings in it split into plain text.
    Lone surrogates (valid in a Python str, not in UTF-8) become U+FFFD."""
    text = LONE_SURROGATE.sub("\ufffd", text)
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def encode_prompt(tokenizer, text: str, *, chat: bool = True) -> list[int]:
    """Token ids of `text`; with chat=True as one user turn plus the assistant's opening."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("prompt is empty: type some text")
    if chat and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": PLACEHOLDER}]
        rendered = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        before, after = rendered.split(PLACEHOLDER)
        template = lambda part: tokenizer(part, add_special_tokens=False)["input_ids"]  # noqa: E731
        return template(before) + encode_text(tokenizer, text) + template(after)
    ids = encode_text(tokenizer, text)
    bos = getattr(tokenizer, "bos_token_id", None)
    return ids if bos is None or not getattr(tokenizer, "add_bos_token", False) else [bos, *ids]
