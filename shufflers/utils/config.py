"""ShuffleGenerationConfig: the original's generation settings, mapped onto generate()'s."""

from __future__ import annotations

from dataclasses import dataclass

from shuffle_model.decoding.settings import STRATEGIES, STRATEGY_ALIASES

# Settings of the original that ShuffleLM's loop has no counterpart for, with the value that
# means "off": any other value is refused rather than silently ignored.
UNSUPPORTED = {
    "top_k": None,
    "min_generation_length": 1,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "early_stopping": False,
    "return_attention_weights": False,
}


@dataclass
class ShuffleGenerationConfig:
    # --- generation (the original's defaults) ---
    max_parallel_tokens: int | None = None  # drafts checked per step at most; None: all
    temperature: float = 1.0  # sampling temperature (do_sample=False: greedy)
    top_p: float = 0.9  # nucleus sampling mass
    top_k: int | None = None  # not supported: None only
    do_sample: bool = True  # transformers' meaning: False is greedy

    # --- shuffle ---
    shuffle_strategy: str = "rotary"  # rotary, hungarian, sinkhorn, identity; fixed, learned
    termination_threshold: float | None = None  # the filter's keep threshold (keep_threshold)
    min_generation_length: int = 1  # not supported: 1 only
    max_generation_length: int | None = None  # new tokens at most (max_new_tokens); None: 64

    # --- the original's advanced knobs (not supported: their neutral values only) ---
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    early_stopping: bool = False

    # --- debugging ---
    return_shuffle_info: bool = False  # generate_with_shuffle adds the run's statistics and trace
    return_attention_weights: bool = False  # not supported: False only

    def validate(self) -> None:
        """Raise ValueError on a setting out of range or one ShuffleLM does not support."""
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0 (0 is greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        names = STRATEGIES + tuple(STRATEGY_ALIASES)
        if self.shuffle_strategy not in names:
            raise ValueError(
                f"Unknown shuffle strategy: {self.shuffle_strategy}; use one of {names}"
            )
        for name, neutral in UNSUPPORTED.items():
            if getattr(self, name) != neutral:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not supported by ShuffleLM "
                    f"(its verified loop keeps the backbone's own distribution); "
                    f"leave it {neutral!r}"
                )

    def generate_kwargs(self) -> dict:
        """The settings as ShuffleLM's generate() keywords."""
        self.validate()
        kwargs = dict(
            max_parallel_tokens=self.max_parallel_tokens,
            shuffle_strategy=self.shuffle_strategy,
            temperature=self.temperature,
            do_sample=self.do_sample,
            top_p=self.top_p,
        )
        if self.termination_threshold is not None:
            kwargs["keep_threshold"] = self.termination_threshold
        if self.max_generation_length is not None:
            kwargs["max_new_tokens"] = self.max_generation_length
        return kwargs
