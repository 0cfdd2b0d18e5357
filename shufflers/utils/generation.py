"""generate_with_shuffle: the original's one-call text generation, on the library's loop."""

from __future__ import annotations

import dataclasses

from shuffle_model.decoding.text import trace_text
from viz.numbers import run_numbers

from .config import ShuffleGenerationConfig


def generate_with_shuffle(
    model, tokenizer, prompt: str, config: ShuffleGenerationConfig | None = None, **kwargs
) -> dict:
    """Generate from the text `prompt` (encoded as plain text, as the original did). Keywords
    naming a ShuffleGenerationConfig field override it; the others are generate()'s settings
    (max_new_tokens, seed, verify, ...). Returns {"generated_text" (prompt and continuation, as
    the original decoded them), "completion" (the new text alone), "prompt", "config"}, plus
    "shuffle_info" (the run's numbers and its GenerationTrace) with return_shuffle_info."""
    fields = {f.name for f in dataclasses.fields(ShuffleGenerationConfig)}
    overrides = {k: v for k, v in kwargs.items() if k in fields}
    settings = {k: v for k, v in kwargs.items() if k not in fields}
    config = dataclasses.replace(config or ShuffleGenerationConfig(), **overrides)
    trace = trace_text(
        model, prompt, tokenizer=tokenizer, chat=False, **config.generate_kwargs(), **settings
    )
    tokenizer = tokenizer or model.tokenizer
    result = {
        "generated_text": tokenizer.decode(
            trace.prompt_ids + trace.output_ids, skip_special_tokens=True
        ),
        "completion": trace.output_text,
        "prompt": prompt,
        "config": config,
    }
    if config.return_shuffle_info:
        result["shuffle_info"] = {
            "original_length": len(trace.prompt_ids),
            "generated_length": trace.totals.new_tokens,
            "shuffle_strategy": trace.settings["shuffle_strategy"],
            **run_numbers(trace),
            "trace": trace,
        }
    return result
