"""Text in, trace out: a prompt as a person types it, decoded by the one generation loop."""

from __future__ import annotations

from ..model.chat import encode_prompt
from .trace import GenerationTrace


def trace_text(
    model, prompt: str, *, tokenizer=None, chat: bool | None = None, **settings
) -> GenerationTrace:
    """Generate from `prompt` and return the run's GenerationTrace. The prompt is encoded with
    `tokenizer` (default: the model's), through its chat template when it has one (`chat=None`)
    or as plain text (`chat=False`); the model is not changed."""
    tokenizer = tokenizer or model.tokenizer
    if tokenizer is None:
        raise ValueError("a tokenizer is needed to encode the prompt: pass tokenizer=")
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    ids = encode_prompt(tokenizer, prompt, chat=use_chat)
    _, trace = model.generate([ids], return_trace=True, tokenizer=tokenizer, **settings)
    return trace
