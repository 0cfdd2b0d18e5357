"""The model behind a long-running service (the web app): loaded once, lazily, thread-safely.

SHUFFLELM_MODEL picks it: unset or "default" is the shipped default model; "tiny" is a tiny
random model (tests); anything else is a head directory for FasterDecodeMixer.from_pretrained.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

Status = Callable[[str], None]


def load_model(spec: str | None = None, *, status: Status | None = None):
    spec = spec if spec is not None else os.environ.get("SHUFFLELM_MODEL", "default")
    if spec == "tiny":
        from .tiny import tiny_model

        return tiny_model()
    from .faster_decode_mixer import FasterDecodeMixer

    return FasterDecodeMixer.from_pretrained(None if spec == "default" else spec, status=status)


class LazyModel:
    """Loads on first use; concurrent first users wait for the same load."""

    def __init__(self, loader: Callable[[Status | None], object] | None = None):
        self._loader = loader or (lambda status: load_model(status=status))
        self._model = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self, status: Status | None = None):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._loader(status)
        return self._model
