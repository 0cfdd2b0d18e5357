"""ShuffleLM: parallel drafting, shuffling, filtering and verification of tokens."""

__version__ = "0.1.0"  # the distribution's version (pyproject.toml reads it from here)

from .decoding.loop import GenerationStream
from .decoding.settings import STRATEGIES, STRATEGY_ALIASES, GenerationSettings
from .decoding.text import trace_text
from .decoding.trace import GenerationTrace, SlotTrace, StepTrace, TokenInfo, TraceError
from .model.backbone import DEFAULT_BACKBONE, BackboneNotFound, load_backbone
from .model.config import ShuffleConfig
from .model.faster_decode_mixer import FasterDecodeMixer
from .model.loss import set_prediction_loss
from .model.outputs import ShuffleOutput
from .model.shuffle_lm import ShuffleLM
from .training.step import train_step

__all__ = [
    "DEFAULT_BACKBONE",
    "STRATEGIES",
    "STRATEGY_ALIASES",
    "BackboneNotFound",
    "FasterDecodeMixer",
    "GenerationSettings",
    "GenerationStream",
    "GenerationTrace",
    "ShuffleConfig",
    "ShuffleLM",
    "ShuffleOutput",
    "SlotTrace",
    "StepTrace",
    "TokenInfo",
    "TraceError",
    "load_backbone",
    "set_prediction_loss",
    "trace_text",
    "train_step",
]
