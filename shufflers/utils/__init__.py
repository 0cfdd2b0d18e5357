"""The original release's `shufflers.utils`, on ShuffleLM's library and pictures."""

from .config import ShuffleGenerationConfig
from .generation import generate_with_shuffle
from .tokenizer import ShuffleTokenizer
from .visualization import (
    ShuffleStep,
    ShuffleVisualization,
    compare_shuffle_strategies,
    visualize_shuffle,
)

__all__ = [
    "ShuffleGenerationConfig",
    "ShuffleStep",
    "ShuffleTokenizer",
    "ShuffleVisualization",
    "compare_shuffle_strategies",
    "generate_with_shuffle",
    "visualize_shuffle",
]
