"""ShuffleLM: parallel drafting, shuffling, filtering and verification of tokens."""

from .backbone import DEFAULT_BACKBONE, BackboneNotFound, load_backbone
from .config import ShuffleConfig
from .faster_decode_mixer import FasterDecodeMixer
from .generation import GenerationStream
from .loss import set_prediction_loss
from .outputs import ShuffleOutput
from .settings import STRATEGIES, GenerationSettings
from .shuffle_lm import ShuffleLM
from .trace import GenerationTrace, SlotTrace, StepTrace, TokenInfo, TraceError
from .training import train_step

__all__ = [
    "DEFAULT_BACKBONE",
    "STRATEGIES",
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
    "train_step",
]
