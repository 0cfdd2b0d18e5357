"""How viz counts a run: tokens per backbone pass are the new tokens over the passes after the
prompt's prefill. The app's counters, the GIF's header, the overview figure and
ShuffleVisualization's statistics all read them from here."""

from __future__ import annotations

from shuffle_model.decoding.trace import GenerationTrace


def tokens_per_pass(tokens: int, passes: int) -> float | None:
    """`tokens` new tokens over `passes` backbone passes after the prompt's prefill; None
    before the first of those passes."""
    return tokens / passes if passes > 0 else None


def per_pass_text(tokens: int, passes: int) -> str:
    """tokens_per_pass with two decimals, or "–" before the first pass after the prefill."""
    rate = tokens_per_pass(tokens, passes)
    return "–" if rate is None else f"{rate:.2f}"


def run_numbers(trace: GenerationTrace) -> dict:
    """New tokens, steps, backbone passes after the prompt's prefill and tokens per pass."""
    totals = trace.totals
    passes = totals.backbone_forwards - 1  # the trace's count includes the prefill
    return {
        "new_tokens": totals.new_tokens,
        "steps": totals.steps,
        "backbone_passes": passes,
        "tokens_per_pass": tokens_per_pass(totals.new_tokens, passes),
    }
