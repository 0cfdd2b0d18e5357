"""FasterDecodeMixer: any pretrained Hugging Face causal LM as a frozen backbone, plus the
shuffle head. Only the head is trained and saved (safetensors + a config naming the backbone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Cache, DynamicCache

# ASSETS and the fixed head are re-exported: the benchmark and the tests import them from here
from ..resources import ASSETS, DEFAULT_FIXED_HEAD_DIR, DEFAULT_HEAD_DIR  # noqa: F401
from . import invariant
from .backbone import BackboneNotFound, load_backbone
from .calibration import CALIBRATION_FILE, Calibration
from .config import ShuffleConfig
from .devices import choose_dtype, resolve_device
from .dtype_choice import cached_choice, choice_key, faster_of, float32_reason, timing
from .head import ShuffleHead
from .precision import Float32Logits
from .shuffle_model_base import ShuffleModelBase

CONFIG_FILE = "shuffle_config.json"
HEAD_FILE = "head.safetensors"


def config_from_backbone(backbone, name: str | None, **head_config) -> ShuffleConfig:
    """A ShuffleConfig whose trunk fields describe `backbone`, plus the given head fields."""
    cfg = backbone.config
    generation = getattr(backbone, "generation_config", None)
    eos = getattr(generation, "eos_token_id", None)
    fields = dict(
        vocab_size=backbone.get_output_embeddings().out_features,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_hidden_layers,
        num_heads=cfg.num_attention_heads,
        num_kv_heads=getattr(cfg, "num_key_value_heads", None),
        max_position_embeddings=getattr(cfg, "max_position_embeddings", 2048),
        tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        bos_token_id=getattr(cfg, "bos_token_id", None),
        eos_token_id=eos if eos is not None else getattr(cfg, "eos_token_id", None),
        pad_token_id=getattr(cfg, "pad_token_id", None),
        backbone=name,
    )
    fields.update(head_config)
    return ShuffleConfig(**fields)


class HeadFolderError(BackboneNotFound, ValueError):
    """A head folder (or name) that holds no loadable head: one line naming the file and what is
    wrong with it. A BackboneNotFound, so that whatever reports a model that cannot be loaded (the
    app, the commands) reports this too, and a ValueError (a bad argument)."""


class FasterDecodeMixer(ShuffleModelBase):
    def __init__(self, backbone: nn.Module, config: ShuffleConfig, *, tokenizer=None):
        super().__init__()
        self.config = config
        self.backbone = backbone.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        embed_size = backbone.get_input_embeddings().embedding_dim
        self.head = ShuffleHead(config, hidden_size=config.hidden_size, embed_size=embed_size)
        weight = backbone.get_output_embeddings().weight
        self.head.to(device=weight.device, dtype=weight.dtype)
        self.head_source: str | None = None  # where the head weights came from
        self.dtype_reason = "as given"  # why the model runs in its dtype (choose_dtype)
        self.corpus = None  # the `corpus` draft source's decoding.corpus.Corpus; None: the
        # shipped one (assets/corpus), where it holds this backbone's tokens
        norm = getattr(self.backbone.base_model, "norm", None)
        self.float32_logits = Float32Logits(norm, self.backbone.get_output_embeddings())
        invariant.install(self.backbone)  # plain SDPA outside our own half-precision passes

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        model_or_name: nn.Module | str,
        *,
        tokenizer=None,
        device="auto",
        dtype="auto",
        trust_remote_code: bool = False,
        **head_config,
    ) -> FasterDecodeMixer:
        """A fresh (untrained) head on a backbone given as a model or a name/path.
        trust_remote_code=True lets a hub backbone run its own Python code: opt in only."""
        reason = "as given"
        if isinstance(model_or_name, str):
            chosen, reason = choose_dtype(dtype, resolve_device(device))
            backbone, loaded_tokenizer = load_backbone(
                model_or_name, device=device, dtype=chosen, trust_remote_code=trust_remote_code
            )
            tokenizer = tokenizer or loaded_tokenizer
            name = model_or_name
        else:
            backbone, name = model_or_name, getattr(model_or_name, "name_or_path", None) or None
        model = cls(
            backbone, config_from_backbone(backbone, name, **head_config), tokenizer=tokenizer
        )
        return model._because(reason)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the head weights (safetensors) and its config; the backbone is named, not saved."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_FILE)
        state = {k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
        save_file(state, str(directory / HEAD_FILE), metadata={"format": "pt"})
        return directory

    @classmethod
    def from_pretrained(
        cls,
        dir_or_name: str | Path | None = None,
        *,
        backbone: nn.Module | str | None = None,
        tokenizer=None,
        device="auto",
        dtype="auto",
        status=None,
        trust_remote_code: bool = False,
    ) -> FasterDecodeMixer:
        """Load a saved head and the backbone it names (or the one given). No argument: the
        default model shipped in assets/, offline."""
        directory = _head_directory(dir_or_name)
        config = load_head_config(directory)  # the folder is checked before the backbone loads
        calibration = _load_calibration(directory)
        _check_weights_file(directory / HEAD_FILE)
        device = resolve_device(device)
        chosen, reason = choose_dtype(dtype, device)
        # a backbone loaded by name in the dtype "auto" chose by the CPU's instructions: the one
        # case where float32 may replace it (measured once per machine, then cached)
        by_name = backbone is None or isinstance(backbone, str)
        cpu_choice = by_name and reason.startswith("this CPU")

        def in_float32(tokenizer) -> FasterDecodeMixer:  # the same head and backbone (as given)
            # in float32; after a load, with the tokenizer loaded with the backbone
            return cls.from_pretrained(
                dir_or_name,
                backbone=backbone,
                tokenizer=tokenizer,
                device=device,
                dtype="float32",
                status=status,
                trust_remote_code=trust_remote_code,
            )

        known = cached_choice(choice_key(config)) if cpu_choice else None
        if known is not None and known["dtype"] == "float32":  # measured here before
            return in_float32(tokenizer)._because(float32_reason(known["ms"]))
        loaded = _backbone_for(
            config,
            directory,
            backbone,
            tokenizer=tokenizer,
            device=device,
            dtype=chosen,
            reason=reason,
            status=status,
            trust_remote_code=trust_remote_code,
        )
        model = cls._with_saved_head(loaded, config, directory, calibration, device=device)
        if not cpu_choice:
            return model.eval()
        return _exact_and_faster(
            model, lambda: in_float32(loaded.tokenizer), loaded=loaded, status=status
        )

    @classmethod
    def _with_saved_head(
        cls,
        loaded: LoadedBackbone,
        config: ShuffleConfig,
        directory: Path,
        calibration: Calibration,
        *,
        device,
    ) -> FasterDecodeMixer:
        """The model on `loaded`'s backbone, with the head weights and calibration saved in
        `directory`."""
        _check_backbone_fits(config, loaded.module, directory)
        model = cls(loaded.module, config, tokenizer=loaded.tokenizer)
        weights = load_file(str(directory / HEAD_FILE), device=str(device))
        _check_weights_fit(model.head, weights, directory)
        model.head.load_state_dict(weights)
        model.calibration = calibration
        model.head_source = str(directory)
        model.dtype_reason = loaded.reason
        return model

    def exact_in_its_dtype(self) -> bool:
        """Whether verified decoding is token for token ordinary decoding in this dtype: in
        float32, or in half precision with row-invariant passes (invariant.py)."""
        return self.dtype.is_floating_point and (
            self.dtype.itemsize >= 4 or self.uses_row_invariance()
        )

    def _because(self, reason: str) -> FasterDecodeMixer:
        self.dtype_reason = reason
        return self

    # --- the trunk is the frozen backbone -------------------------------------------------
    def train(self, mode: bool = True) -> FasterDecodeMixer:
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout, ever
        return self

    frozen_trunk = True  # the backbone is frozen

    def decoder_stack(self) -> nn.Module:
        return self.backbone.base_model

    def new_cache(self) -> Cache:
        cache = DynamicCache(config=self.backbone.config)
        if self.uses_row_invariance():
            invariant.keep_keys_in_blocks(cache)  # padded keys without copies
        return cache

    def trunk_module(self) -> nn.Module:
        return self.backbone

    def token_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def vocab_projection(self) -> nn.Module:
        return self.backbone.get_output_embeddings()

    def model_info(self) -> dict:
        return {
            "class": "FasterDecodeMixer",
            "backbone": self.config.backbone,
            "head": self.config.extra.get("name") or self.head_source or "untrained head",
            "assignment": self.config.assignment,
        }


# The original release's checkpoint: named in its README, never published on the hub.
ORIGINAL_RELEASE_IDS = ("thisisthepy/FasterDecodeMixer-Q3-8B",)


def shipped_heads() -> str:
    """One sentence: the heads that ship with ShuffleLM and how to load them."""
    return (
        f"The heads shipped with ShuffleLM: the default head in {DEFAULT_HEAD_DIR} "
        "(FasterDecodeMixer.from_pretrained()) and the fixed-assignment head in "
        f"{DEFAULT_FIXED_HEAD_DIR} (FasterDecodeMixer.from_pretrained('{DEFAULT_FIXED_HEAD_DIR}'))"
    )


def _head_directory(dir_or_name: str | Path | None) -> Path:
    if dir_or_name is None:
        if not (DEFAULT_HEAD_DIR / HEAD_FILE).is_file():
            raise HeadFolderError(
                f"The default head is missing from {DEFAULT_HEAD_DIR}; reinstall the project"
            )
        return DEFAULT_HEAD_DIR
    path = Path(dir_or_name)
    if path.is_dir():
        return path
    if path.exists() or str(dir_or_name).startswith((".", "/")):
        raise HeadFolderError(
            f"No saved head in {dir_or_name}: expected a directory. {shipped_heads()}."
        )
    if str(dir_or_name) in ORIGINAL_RELEASE_IDS:
        raise HeadFolderError(
            f"{str(dir_or_name)!r} is the original release's checkpoint id; no such checkpoint "
            f"exists, here or on the hub. {shipped_heads()}."
        )
    try:
        files = [CONFIG_FILE, HEAD_FILE, CALIBRATION_FILE]
        return Path(snapshot_download(str(dir_or_name), allow_patterns=files))
    except Exception as error:  # offline, unknown repo, no access: one clear message
        raise HeadFolderError(
            f"No local head directory {str(dir_or_name)!r}, and the hub could not provide it "
            f"({type(error).__name__}). {shipped_heads()}."
        ) from None


def load_head_config(directory: Path) -> ShuffleConfig:
    """The ShuffleConfig saved in a head folder; HeadFolderError, naming the file, when it is
    missing or is not one."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise HeadFolderError(
            f"{path} is missing: a head folder holds {CONFIG_FILE} and {HEAD_FILE} "
            "(FasterDecodeMixer.save_pretrained writes both)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        raise HeadFolderError(f"{path} could not be read as JSON: {_one_line(error)}") from None
    if not isinstance(data, dict):
        raise HeadFolderError(f"{path} holds {type(data).__name__}, not a ShuffleConfig object")
    try:
        return ShuffleConfig.from_dict(data)
    except (TypeError, ValueError) as error:  # unknown fields, bad values
        raise HeadFolderError(f"{path} is not a valid ShuffleConfig: {_one_line(error)}") from None


def _load_calibration(directory: Path) -> Calibration:
    path = Path(directory) / CALIBRATION_FILE
    try:
        return Calibration.beside(directory)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise HeadFolderError(
            f"{path} could not be read ({_one_line(error) or type(error).__name__}): fix or "
            "delete it (a head without one uses its keep probabilities as they are)"
        ) from None


def _check_weights_file(path: Path) -> None:
    """The head's weights file exists and is a safetensors file (its header, not the weights)."""
    if not path.is_file():
        raise HeadFolderError(
            f"{path} is missing: a head folder holds {CONFIG_FILE} and {HEAD_FILE} "
            "(FasterDecodeMixer.save_pretrained writes both)"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (OSError, SafetensorError, ValueError) as error:
        raise HeadFolderError(
            f"{path} is not a readable safetensors file: {_one_line(error)}"
        ) from None


class LoadedBackbone(NamedTuple):
    """The backbone from_pretrained puts the head on, and the dtype it runs in."""

    module: nn.Module  # the backbone, on its device and in its dtype
    tokenizer: object  # the one given, else the one loaded with the backbone (or None)
    dtype: torch.dtype  # the dtype it runs in
    reason: str  # why that dtype (FasterDecodeMixer.dtype_reason)


def _backbone_for(
    config: ShuffleConfig,
    directory: Path,
    backbone: nn.Module | str | None,
    *,
    tokenizer,
    device,
    dtype: torch.dtype,
    reason: str,
    status,
    trust_remote_code: bool,
) -> LoadedBackbone:
    """The backbone the head goes on: loaded by name (the one given, else the one the head's
    config names) in `dtype`, or the module given, moved to `device`."""
    if backbone is None or isinstance(backbone, str):
        name = backbone or config.backbone
        if not name:
            raise BackboneNotFound(f"{directory / CONFIG_FILE} names no backbone; pass backbone=")
        module, loaded_tokenizer = load_backbone(
            name,
            device=device,
            dtype=dtype,
            status=status,
            trust_remote_code=trust_remote_code,
        )
        return LoadedBackbone(module, tokenizer or loaded_tokenizer, dtype, reason)
    if reason != "asked for":  # a module: "auto" keeps its own dtype
        dtype, reason = backbone.dtype, "the given backbone's own"
    return LoadedBackbone(backbone.to(device=device, dtype=dtype), tokenizer, dtype, reason)


def _exact_and_faster(
    model: FasterDecodeMixer, in_float32, *, loaded: LoadedBackbone, status
) -> FasterDecodeMixer:
    """For a dtype "auto" chose by the CPU: `model` if its passes are exact (row-invariant) and
    faster here than float32's, else the float32 model `in_float32()` loads."""
    reason = loaded.reason
    if not model.exact_in_its_dtype():
        if status is not None:
            dtype_name = str(loaded.dtype).replace("torch.", "")
            status(f"{dtype_name} passes cannot be made row-invariant here: loading in float32")
        return in_float32()._because(f"{reason}, but its passes cannot be made row-invariant here")
    faster, ms = faster_of(model.eval(), in_float32, status=status)
    if faster is model:
        return model._because(f"{reason}; faster here ({timing(ms)})")
    return faster._because(float32_reason(ms))


def _check_backbone_fits(config: ShuffleConfig, backbone: nn.Module, directory: Path) -> None:
    """The backbone is one of the shape the head was saved for (else its passes would fail
    later, deep inside a generation)."""
    found = config_from_backbone(backbone, None)
    fields = ("hidden_size", "num_layers", "vocab_size")
    differ = [f for f in fields if getattr(found, f) != getattr(config, f)]
    if differ:
        saved = ", ".join(f"{f} {getattr(config, f)}" for f in differ)
        given = ", ".join(f"{f} {getattr(found, f)}" for f in differ)
        name = getattr(backbone, "name_or_path", "") or "the backbone given"
        raise HeadFolderError(
            f"{directory / CONFIG_FILE} was saved for a backbone with {saved}; {name} has "
            f"{given}: load the head with the backbone it names ({config.backbone})"
        )


def _check_weights_fit(head: nn.Module, weights: dict, directory: Path) -> None:
    """The saved tensors are exactly the head's, shape for shape, else one line saying where
    they differ (instead of torch's many-line size-mismatch report)."""
    expected = {name: tuple(t.shape) for name, t in head.state_dict().items()}
    saved = {name: tuple(t.shape) for name, t in weights.items()}
    problems = [f"{name} is missing" for name in expected if name not in saved]
    problems += [f"{name} is not part of this head" for name in saved if name not in expected]
    problems += [
        f"{name} has shape {list(saved[name])}, the config makes {list(shape)}"
        for name, shape in expected.items()
        if name in saved and saved[name] != shape
    ]
    if problems:
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise HeadFolderError(
            f"{directory / HEAD_FILE} does not fit {directory / CONFIG_FILE} and its backbone: "
            f"{'; '.join(problems[:2])}{more}"
        )


def _one_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
