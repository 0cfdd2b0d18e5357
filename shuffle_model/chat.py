"""Prompt text -> token ids, with the tokenizer's chat template or as plain text."""

from __future__ import annotations


def encode_prompt(tokenizer, text: str, *, chat: bool = True) -> list[int]:
    """Token ids of `text`; with chat=True as one user turn plus the assistant's opening."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("prompt is empty: type some text")
    if chat and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": text}]
        rendered = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return tokenizer(text)["input_ids"]
