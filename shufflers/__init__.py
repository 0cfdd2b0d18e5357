"""The original release's import name, on ShuffleLM: code written for the original
(`from shufflers import FasterDecodeMixer, ShuffleLM, ShuffleConfig`, `from shufflers.utils
import visualize_shuffle`) runs unchanged. Everything public in `shuffle_model` is here too."""

from shuffle_model import *  # noqa: F403 (the public API, re-exported as a whole)
from shuffle_model import __all__ as _library_api
from shuffle_model import __version__

from .utils import ShuffleTokenizer, visualize_shuffle

__all__ = [*_library_api, "ShuffleTokenizer", "__version__", "visualize_shuffle"]
