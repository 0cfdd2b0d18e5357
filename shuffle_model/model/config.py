"""ShuffleConfig: every knob of the trunk, the shuffle head and its training loss."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import InitVar, dataclass, field
from pathlib import Path

ASSIGNMENTS = ("hungarian", "fixed")

# Fields saved under other names by earlier versions (shipped heads' shuffle_config.json files).
# max_parallel_tokens is also the original release's constructor argument and attribute for K
# (ShuffleConfig(max_parallel_tokens=50) == ShuffleConfig(num_slots=50)); generate()'s
# max_parallel_tokens is per run: the most drafts a step checks.
RENAMED = {"max_parallel_tokens": "num_slots", "keep_threshold": "default_keep_threshold"}


@dataclass
class ShuffleConfig:
    # --- trunk (ShuffleLM builds it; FasterDecodeMixer copies these from its backbone) ---
    vocab_size: int = 32000  # tokens in the vocabulary
    hidden_size: int = 512  # width of the trunk's hidden state h_t
    num_layers: int = 6  # transformer blocks in the trunk
    num_heads: int = 8  # attention heads per block
    num_kv_heads: int | None = None  # key/value heads (grouped-query attention); None: num_heads
    intermediate_size: int | None = None  # trunk MLP width; None: 8/3 * hidden_size rounded to 64
    max_position_embeddings: int = 2048  # longest sequence the trunk's rotary positions cover
    rope_theta: float = 10000.0  # base of the trunk's rotary position embedding
    tie_word_embeddings: bool = True  # share the input embedding with the LM head
    bos_token_id: int | None = 1  # begin-of-sequence token id
    eos_token_id: int | list[int] | None = 2  # generation stops after emitting (one of) these
    pad_token_id: int | None = None  # padding id (ignored by the loss through the attention mask)

    # --- shuffle head ---
    num_slots: int = 4  # K: draft slots per step = offsets 1..K after the anchor
    rotary_dim: int = 2  # size of the rotary keys r_k and offset queries q_p (even)
    rotary_base: float = 10.0  # frequency ratio between the lowest and highest rotary pair
    shuffle_temperature: float = 1.0  # divides the shuffle scores (lower: sharper positions)
    head_hidden_size: int | None = None  # width of the slot vectors; None: hidden_size
    mixer_depth: int = 2  # MLP-Mixer blocks in the head
    mixer_token_hidden: int = 64  # hidden width of the token-mixing MLP (across the K slots)
    mixer_channel_hidden: int | None = None  # hidden width of the channel MLP; None: 2 * head width
    default_keep_threshold: float = 0.5  # the head's own filter threshold: a run's keep_threshold
    # when it sets none under the fixed rule (GenerationSettings)
    draft_vocab_size: int | None = None  # drafts pick among N frequent tokens; None: all tokens
    early_layer: int | None = None  # the head also reads trunk block L's output (1..layers-1,
    # RMS-normalised) beside h_t; None: h_t only
    sequence_width: int | None = None  # width of the head's attention layer over the sequence's
    # features (sequence.py); None: the head reads the anchor's position only
    sequence_heads: int = 4  # attention heads of that layer

    # --- training loss (set prediction) ---
    assignment: str = "hungarian"  # slot-to-offset matching: "hungarian" (the shuffle) or "fixed"
    lambda_pos: float = 1.0  # weight of the position (shuffle score) cross-entropy
    lambda_keep: float = 0.5  # weight of the keep-logit binary cross-entropy
    lambda_prior: float = 0.0  # matching cost per offset of distance between slot k and offset p
    lm_loss_weight: float = 1.0  # ShuffleLM only: weight of the trunk's next-token loss

    # --- provenance ---
    backbone: str | None = None  # FasterDecodeMixer: name or path of the frozen backbone
    extra: dict = field(default_factory=dict)  # free-form notes (training data, steps, ...)

    # --- the original release's spelling ---
    max_parallel_tokens: InitVar[int | None] = None  # K, as the original names it: num_slots

    def __post_init__(self, max_parallel_tokens: int | None) -> None:
        if max_parallel_tokens is not None:
            if self.num_slots not in (max_parallel_tokens, NUM_SLOTS_DEFAULT):
                raise ValueError(
                    f"max_parallel_tokens ({max_parallel_tokens}) and num_slots "
                    f"({self.num_slots}) both name K; give one"
                )
            self.num_slots = max_parallel_tokens
        if isinstance(self.num_slots, bool) or not isinstance(self.num_slots, int):
            raise ValueError(f"num_slots must be an integer >= 1; got {self.num_slots!r}")
        if self.num_slots < 1:
            raise ValueError(f"num_slots must be >= 1; got {self.num_slots}")
        if self.rotary_dim < 2 or self.rotary_dim % 2:
            raise ValueError(f"rotary_dim must be an even number >= 2; got {self.rotary_dim}")
        if self.shuffle_temperature <= 0:
            raise ValueError(f"shuffle_temperature must be > 0; got {self.shuffle_temperature}")
        if self.assignment not in ASSIGNMENTS:
            raise ValueError(
                f"assignment must be one of {list(ASSIGNMENTS)}; got {self.assignment!r}"
            )
        if self.early_layer is not None and not 1 <= self.early_layer < self.num_layers:
            raise ValueError(
                f"early_layer must be in 1..{self.num_layers - 1} (the trunk's blocks before the "
                f"last); got {self.early_layer}"
            )
        if not 0.0 <= self.default_keep_threshold <= 1.0:
            raise ValueError(
                f"default_keep_threshold must be in [0, 1]; got {self.default_keep_threshold}"
            )

    @property
    def head_width(self) -> int:
        return self.head_hidden_size or self.hidden_size

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ShuffleConfig:
        """A config from its saved fields; configs saved under the old names still load."""
        data = {RENAMED.get(key, key): value for key, value in data.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ShuffleConfig fields: {unknown}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ShuffleConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


NUM_SLOTS_DEFAULT = ShuffleConfig.__dataclass_fields__["num_slots"].default


def _get_max_parallel_tokens(config: ShuffleConfig) -> int:
    return config.num_slots


def _set_max_parallel_tokens(config: ShuffleConfig, value: int) -> None:
    config.num_slots = value


# After the dataclass is made (its __init__ keeps the InitVar's default of None), reading or
# setting config.max_parallel_tokens reads or sets num_slots, as in the original release.
ShuffleConfig.max_parallel_tokens = property(
    _get_max_parallel_tokens, _set_max_parallel_tokens, doc="K, the original's name: num_slots"
)
