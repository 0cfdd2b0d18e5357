"""Generation settings, validated once at the boundary with messages that name the setting."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

from .corpus import CORPUS
from .planning import BLOCK_RULES, COST, FIXED
from .proposers import CONTEXT, HEAD, MAX_CONTEXT_DRAFTS

STRATEGIES = ("rotary", "hungarian", "sinkhorn", "identity")
# The original release's strategy names: "fixed" keeps slot k at offset k (our identity);
# "learned" places the slots by their learned shuffle scores, matched one to one (hungarian)
STRATEGY_ALIASES = {"fixed": "identity", "learned": "hungarian"}
SAMPLING_TEMPERATURE = 1.0  # do_sample=True without a temperature samples at 1, as transformers
DRAFT_SOURCES = (f"{HEAD}+{CONTEXT}", HEAD, CONTEXT, f"{HEAD}+{CONTEXT}+{CORPUS}")


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64  # tokens to generate at most (EOS may stop earlier)
    max_parallel_tokens: int | None = None  # drafts checked per step at most (a maximum: more
    # than the model can draft uses all it can, K + 10); None: all it can
    shuffle_strategy: str = "rotary"  # how slots are ordered: one of STRATEGIES, or the
    # original's names in STRATEGY_ALIASES
    temperature: float = 0.0  # 0: greedy; > 0: sampling (speculative sampling when verified)
    do_sample: bool | None = None  # transformers' meaning: False is greedy whatever the
    # temperature, True samples (at temperature 1 when none is set); None: the temperature decides
    top_p: float = 1.0  # nucleus sampling mass, in (0, 1]
    keep_threshold: float | None = None  # drop slots whose keep prob is below; None: the
    # head's default under the fixed rule, 0 under the cost rule (which weighs every draft)
    verify: bool = True  # True: output equals the backbone's own decoding; False: pure mode
    seed: int | None = None  # seeds sampling; None: nondeterministic
    block_length: str = COST  # "cost": the drafts that maximise expected tokens per unit of
    # time on this machine; "fixed": every draft the filter keeps, whatever the pass costs
    draft_source: str = DRAFT_SOURCES[0]  # "head+context", "head", "context" or
    # "head+context+corpus" (also the backbone's earlier answers: decoding/corpus.py)

    def resolved(self, *, num_slots: int, default_keep_threshold: float) -> GenerationSettings:
        """Check every setting; return a copy with defaults filled in. Raises ValueError."""
        _check_int("max_new_tokens", self.max_new_tokens, low=1)
        most = max_drafts(num_slots)
        parallel = most if self.max_parallel_tokens is None else self.max_parallel_tokens
        _check_int("max_parallel_tokens", parallel, low=0)
        strategy = STRATEGY_ALIASES.get(self.shuffle_strategy, self.shuffle_strategy)
        _check_choice("shuffle_strategy", strategy, STRATEGIES + tuple(STRATEGY_ALIASES))
        _check_choice("block_length", self.block_length, BLOCK_RULES)
        _check_choice("draft_source", self.draft_source, DRAFT_SOURCES)
        _check_number("temperature", self.temperature, "a number >= 0 (0 is greedy)", low=0.0)
        if self.do_sample is not None and not isinstance(self.do_sample, bool):
            raise ValueError(f"do_sample must be True, False or None; got {self.do_sample!r}")
        _check_number("top_p", self.top_p, "a number in (0, 1]", low=0.0, high=1.0, open_low=True)
        if not isinstance(self.verify, bool):
            raise ValueError(f"verify must be True or False; got {self.verify!r}")
        if not self.verify and self.draft_source == CONTEXT:
            raise ValueError(
                "pure parallel mode (verify=False) emits the head's drafts unchecked: "
                "draft_source must include the head"
            )
        uses_cost = self.block_length == COST and self.verify
        default_keep = 0.0 if uses_cost else default_keep_threshold
        keep = default_keep if self.keep_threshold is None else self.keep_threshold
        _check_number("keep_threshold", keep, "a number in [0, 1]", low=0.0, high=1.0)
        if self.seed is not None:
            _check_int("seed", self.seed, low=0, high=2**63 - 1)
        return dataclasses.replace(
            self,
            max_parallel_tokens=min(int(parallel), most),
            shuffle_strategy=strategy,
            keep_threshold=float(keep),
            temperature=self.sampling_temperature(),
            do_sample=None,  # folded into the temperature
            top_p=float(self.top_p),
            # pure mode emits the head's filtered block: no costs to weigh, no context
            block_length=self.block_length if self.verify else FIXED,
            draft_source=self.draft_source if self.verify else HEAD,
        )

    def sampling_temperature(self) -> float:
        """The temperature in effect once do_sample is applied (0 is greedy)."""
        if self.do_sample is False:
            return 0.0
        if self.do_sample and self.temperature == 0:
            return SAMPLING_TEMPERATURE
        return float(self.temperature)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.draft_source.split("+"))

    def to_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        if fields["do_sample"] is None:  # resolved settings: folded into the temperature
            del fields["do_sample"]
        return fields


def max_drafts(num_slots: int) -> int:
    """The most drafts a step can check: a full head chain beside a full context chain."""
    return num_slots + MAX_CONTEXT_DRAFTS


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")


def _check_int(name: str, value, *, low: int, high: int | None = None) -> None:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}; got {value}")


def _check_number(
    name: str, value, allowed: str, *, low: float, high: float | None = None, open_low=False
) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
    too_low = value <= low if open_low else value < low
    if too_low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}; got {value}")
