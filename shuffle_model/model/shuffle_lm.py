"""ShuffleLM: a causal transformer trunk (transformers' Llama modules, rotary positions), its
next-token LM head and the shuffle head, trainable from scratch."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import Cache, DynamicCache, LlamaConfig, LlamaModel

from . import invariant
from .config import ShuffleConfig
from .devices import resolve_device
from .head import ShuffleHead
from .loss import IGNORE
from .precision import Float32Logits
from .shuffle_model_base import ShuffleModelBase

CONFIG_FILE = "shuffle_config.json"
WEIGHTS_FILE = "model.safetensors"


def llama_config(config: ShuffleConfig) -> LlamaConfig:
    intermediate = config.intermediate_size or 64 * round(config.hidden_size * 8 / 3 / 64)
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=max(intermediate, 64),
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads or config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        rope_theta=config.rope_theta,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )


class ShuffleLM(ShuffleModelBase):
    def __init__(self, config: ShuffleConfig):
        super().__init__()
        self.config = config
        self.trunk_config = llama_config(config)
        self.trunk = LlamaModel(self.trunk_config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        nn.init.normal_(self.lm_head.weight, std=self.trunk_config.initializer_range)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.trunk.embed_tokens.weight
        self.head = ShuffleHead(
            config, hidden_size=config.hidden_size, embed_size=config.hidden_size
        )
        self.float32_logits = Float32Logits(self.trunk.norm, self.lm_head)
        invariant.install(self.trunk)  # plain SDPA outside half-precision passes

    def decoder_stack(self) -> nn.Module:
        return self.trunk

    def new_cache(self) -> Cache:
        return DynamicCache(config=self.trunk_config)

    def trunk_module(self) -> nn.Module:
        return self.trunk

    def token_embeddings(self) -> nn.Module:
        return self.trunk.embed_tokens

    def vocab_projection(self) -> nn.Module:
        return self.lm_head

    def model_info(self) -> dict:
        size = f"{self.config.num_layers} layers, {self.config.hidden_size} wide"
        return {
            "class": "ShuffleLM",
            "backbone": f"ShuffleLM trunk ({size})",
            "head": self.config.extra.get("name", "ShuffleLM head"),
        }

    def lm_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
            labels[:, 1:].reshape(-1),
            ignore_index=IGNORE,
        )

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_FILE)
        save_model(self, str(directory / WEIGHTS_FILE))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device="auto") -> ShuffleLM:
        directory = Path(directory)
        model = cls(ShuffleConfig.load(directory / CONFIG_FILE))
        load_model(model, str(directory / WEIGHTS_FILE))
        return model.to(resolve_device(device)).eval()
