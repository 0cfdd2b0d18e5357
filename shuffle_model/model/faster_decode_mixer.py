"""FasterDecodeMixer: any pretrained Hugging Face causal LM as a frozen backbone, plus the
shuffle head. Only the head is trained and saved (safetensors + a config naming the backbone)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Cache, DynamicCache

# ASSETS and the fixed head are re-exported: the benchmark and the tests import them from here
from ..resources import ASSETS, DEFAULT_FIXED_HEAD_DIR, DEFAULT_HEAD_DIR  # noqa: F401
from . import invariant
from .backbone import BackboneNotFound, load_backbone
from .calibration import Calibration
from .config import ShuffleConfig
from .devices import resolve_device, resolve_dtype
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
        if isinstance(model_or_name, str):
            backbone, loaded_tokenizer = load_backbone(
                model_or_name, device=device, dtype=dtype, trust_remote_code=trust_remote_code
            )
            tokenizer = tokenizer or loaded_tokenizer
            name = model_or_name
        else:
            backbone, name = model_or_name, getattr(model_or_name, "name_or_path", None) or None
        return cls(
            backbone, config_from_backbone(backbone, name, **head_config), tokenizer=tokenizer
        )

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
        config = ShuffleConfig.load(directory / CONFIG_FILE)
        device = resolve_device(device)
        if backbone is None or isinstance(backbone, str):
            name = backbone or config.backbone
            if not name:
                raise BackboneNotFound(
                    f"{directory / CONFIG_FILE} names no backbone; pass backbone="
                )
            backbone, loaded_tokenizer = load_backbone(
                name,
                device=device,
                dtype=dtype,
                status=status,
                trust_remote_code=trust_remote_code,
            )
            tokenizer = tokenizer or loaded_tokenizer
        else:
            backbone = backbone.to(device=device, dtype=resolve_dtype(dtype, device))
        model = cls(backbone, config, tokenizer=tokenizer)
        model.head.load_state_dict(load_file(str(directory / HEAD_FILE), device=str(device)))
        model.calibration = Calibration.beside(directory)
        model.head_source = str(directory)
        return model.eval()

    # --- the trunk is the frozen backbone -------------------------------------------------
    def train(self, mode: bool = True) -> FasterDecodeMixer:
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout, ever
        return self

    frozen_trunk = True  # the backbone is frozen

    def decoder_stack(self) -> nn.Module:
        return self.backbone.base_model

    def new_cache(self) -> Cache:
        return DynamicCache(config=self.backbone.config)

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


def _head_directory(dir_or_name: str | Path | None) -> Path:
    if dir_or_name is None:
        if not (DEFAULT_HEAD_DIR / HEAD_FILE).is_file():
            raise BackboneNotFound(
                f"The default head is missing from {DEFAULT_HEAD_DIR}; reinstall the project"
            )
        return DEFAULT_HEAD_DIR
    path = Path(dir_or_name)
    if path.is_dir():
        return path
    if path.exists() or str(dir_or_name).startswith((".", "/")):
        raise BackboneNotFound(f"No saved head in {dir_or_name}: expected a directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(dir_or_name), allow_patterns=[CONFIG_FILE, HEAD_FILE]))
    except Exception as error:  # offline, unknown repo, no access: one clear message
        raise BackboneNotFound(
            f"No local head directory {dir_or_name!r}, and the hub could not provide it "
            f"({type(error).__name__})"
        ) from None
