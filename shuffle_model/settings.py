"""Generation settings, validated once at the boundary with messages that name the setting."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

STRATEGIES = ("rotary", "hungarian", "sinkhorn", "identity")


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64  # tokens to generate at most (EOS may stop earlier)
    max_parallel_tokens: int | None = None  # drafts per step at most (offsets 1..N); None: K
    shuffle_strategy: str = "rotary"  # how slots are ordered: one of STRATEGIES
    temperature: float = 0.0  # 0: greedy; > 0: sampling (speculative sampling when verified)
    top_p: float = 1.0  # nucleus sampling mass, in (0, 1]
    keep_threshold: float | None = None  # drop slots whose keep prob is below; None: config's
    verify: bool = True  # True: output equals the backbone's own decoding; False: pure mode
    seed: int | None = None  # seeds sampling; None: nondeterministic

    def resolved(self, *, num_slots: int, default_keep_threshold: float) -> GenerationSettings:
        """Check every setting; return a copy with defaults filled in. Raises ValueError."""
        _check_int("max_new_tokens", self.max_new_tokens, low=1)
        parallel = num_slots if self.max_parallel_tokens is None else self.max_parallel_tokens
        _check_int("max_parallel_tokens", parallel, low=0, high=num_slots)
        if self.shuffle_strategy not in STRATEGIES:
            raise ValueError(
                f"shuffle_strategy must be one of {list(STRATEGIES)}; got {self.shuffle_strategy!r}"
            )
        _check_number("temperature", self.temperature, "a number >= 0 (0 is greedy)", low=0.0)
        _check_number("top_p", self.top_p, "a number in (0, 1]", low=0.0, high=1.0, open_low=True)
        keep = default_keep_threshold if self.keep_threshold is None else self.keep_threshold
        _check_number("keep_threshold", keep, "a number in [0, 1]", low=0.0, high=1.0)
        if not isinstance(self.verify, bool):
            raise ValueError(f"verify must be True or False; got {self.verify!r}")
        if self.seed is not None:
            _check_int("seed", self.seed, low=0, high=2**63 - 1)
        return dataclasses.replace(
            self,
            max_parallel_tokens=int(parallel),
            keep_threshold=float(keep),
            temperature=float(self.temperature),
            top_p=float(self.top_p),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
