"""The original's visualisation names: viz's, over traces the library makes."""

from __future__ import annotations

from shuffle_model.decoding.text import trace_text
from viz.api import ShuffleStep, ShuffleVisualization, visualize_shuffle

__all__ = [
    "ShuffleStep",
    "ShuffleVisualization",
    "compare_shuffle_strategies",
    "visualize_shuffle",
]


def compare_shuffle_strategies(
    model,
    tokenizer,
    prompt: str,
    strategies: list[str] | tuple[str, ...] = ("rotary", "fixed"),
    max_parallel_tokens: int | None = 30,
    **generation_kwargs,
) -> dict[str, ShuffleVisualization]:
    """One run per shuffle strategy on the same prompt and settings, keyed by the strategy's
    name as given. Verified greedy runs write the same text: compare their statistics
    (`get_statistics()`: tokens per backbone pass, drafts accepted)."""
    return {
        strategy: ShuffleVisualization.from_trace(
            trace_text(
                model,
                prompt,
                tokenizer=tokenizer,
                max_parallel_tokens=max_parallel_tokens,
                shuffle_strategy=strategy,
                **generation_kwargs,
            )
        )
        for strategy in strategies
    }
