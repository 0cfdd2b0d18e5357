"""The methods the benchmark puts side by side: ordinary decoding, prompt lookup and
ShuffleLM's variants."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "autoregressive", "prompt_lookup" or "shuffle"
    lossless: bool  # must reproduce the baseline's tokens exactly
    settings: dict = field(default_factory=dict)  # generate() settings for shuffle methods
    head: str = "default"  # "default" or "fixed"
    trace: bool = False  # record a full GenerationTrace (to measure its overhead)
    description: str = ""


METHODS = [
    Method("baseline", "autoregressive", True, description="backbone.generate(do_sample=False)"),
    Method(
        "prompt_lookup",
        "prompt_lookup",
        False,
        description="Hugging Face prompt lookup decoding, prompt_lookup_num_tokens=10",
    ),
    Method(
        "shufflelm",
        "shuffle",
        True,
        {},
        description="ShuffleLM's default: head + context drafts, cost-aware block length",
    ),
    Method(
        "head-cost",
        "shuffle",
        True,
        {"draft_source": "head"},
        description="ShuffleLM, head drafts only, cost-aware block length",
    ),
    Method(
        "context-cost",
        "shuffle",
        True,
        {"draft_source": "context"},
        description="ShuffleLM, context drafts only (our n-gram lookup), cost-aware block length",
    ),
    Method(
        "corpus",
        "shuffle",
        True,
        {"draft_source": "head+context+corpus"},
        description="ShuffleLM's default plus drafts from the corpus of the backbone's answers",
    ),
    Method(
        "shuffle-rotary",
        "shuffle",
        True,
        {"shuffle_strategy": "rotary", "draft_source": "head", "block_length": "fixed"},
        description="the original ShuffleLM: head drafts only, fixed rule (every kept draft)",
    ),
    Method(
        "ordinary",
        "shuffle",
        True,
        {"max_parallel_tokens": 0},
        description="ShuffleLM's loop with no drafts (its own ordinary decoding)",
    ),
    *[
        Method(
            f"shuffle-{s}",
            "shuffle",
            True,
            {"shuffle_strategy": s, "draft_source": "head", "block_length": "fixed"},
            description=f"original rule, head only, {s} strategy",
        )
        for s in ("hungarian", "sinkhorn", "identity")
    ],
    *[
        Method(
            f"pure@{t}",
            "shuffle",
            False,
            {"verify": False, "keep_threshold": t},
            description=f"ShuffleLM pure parallel (unverified), keep threshold {t}",
        )
        for t in (0.3, 0.5, 0.7)
    ],
    Method(
        "fixed-head",
        "shuffle",
        True,
        {"shuffle_strategy": "identity", "draft_source": "head", "block_length": "fixed"},
        head="fixed",
        description="fixed-assignment (Medusa-style) head, verified, original rule",
    ),
    Method(
        "shufflelm+trace",
        "shuffle",
        True,
        {},
        trace=True,
        description="the default recording a full trace (hook overhead)",
    ),
]


DEFAULT_METHODS = [
    "baseline",
    "prompt_lookup",
    "shufflelm",
    "head-cost",
    "context-cost",
    "shuffle-rotary",
    "ordinary",
]


METHOD_NAMES = [m.name for m in METHODS]
