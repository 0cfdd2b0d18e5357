"""The model behind a long-running service (the web app): loaded once, lazily, thread-safely.

A model spec names it: "default" is the shipped default model; "tiny" is a tiny random model
(tests); anything else is a head directory for FasterDecodeMixer.from_pretrained. Its config
(K, the keep threshold) is known before the weights load, so a page can be laid out for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .config import ShuffleConfig
from .faster_decode_mixer import FasterDecodeMixer, _head_directory, load_head_config
from .tiny import tiny_model

Status = Callable[[str], None]


def load_model(spec: str | None = "default", *, status: Status | None = None, **options):
    """The model `spec` names (None: the default); `options` go to
    FasterDecodeMixer.from_pretrained (backbone, device, dtype, trust_remote_code) and do not
    apply to the tiny model."""
    if spec == "tiny":
        return tiny_model()
    return FasterDecodeMixer.from_pretrained(
        None if spec in (None, "default") else spec, status=status, **options
    )


def model_config(spec: str = "default") -> ShuffleConfig:
    """The config of the model `spec` names, read without loading its weights."""
    if spec == "tiny":
        return tiny_model().config
    return load_head_config(_head_directory(None if spec == "default" else spec))


class LazyModel:
    """Loads on first use; concurrent first users wait for the same load."""

    def __init__(
        self,
        loader: Callable[[Status | None], object] | None = None,
        *,
        config: Callable[[], ShuffleConfig] | None = None,
    ):
        self._loader = loader or (lambda status: load_model(status=status))
        if config is None and loader is None:  # the default model: its config is on disk
            config = model_config
        self._config_loader = config
        self._config: ShuffleConfig | None = None
        self._model = None
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: str = "default") -> LazyModel:
        return cls(
            lambda status: load_model(spec, status=status), config=lambda: model_config(spec)
        )

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def config(self) -> ShuffleConfig:
        """The model's config: from its files while the weights are not loaded yet (a loader
        given without a config loader loads the model to know it)."""
        if self._model is not None:
            return self._model.config
        if self._config is None:
            self._config = self._config_loader() if self._config_loader else self.get().config
        return self._config

    def get(self, status: Status | None = None):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._loader(status)
        return self._model
