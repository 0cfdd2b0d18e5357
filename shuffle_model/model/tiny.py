"""A tiny random model with a character tokenizer: a stand-in for the default model where
speed matters more than sense (app tests, load tests: SHUFFLELM_MODEL=tiny)."""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .faster_decode_mixer import FasterDecodeMixer

SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2: 2 is EOS
CHARACTERS = list(string.ascii_letters + string.digits + string.punctuation + " \n")
TINY_VOCAB = 128


def char_tokenizer(
    vocab_size: int = TINY_VOCAB, characters: list[str] = CHARACTERS
) -> PreTrainedTokenizerFast:
    """One token per character (ids 3..), then unused ids up to vocab_size."""
    vocab = {token: i for i, token in enumerate(SPECIALS + list(characters))}
    for i in range(len(vocab), vocab_size):
        vocab[f"<extra_{i}>"] = i
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()  # characters join without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
    )


def tiny_llama_config(
    vocab_size: int = TINY_VOCAB,
    *,
    eos: int | None = 2,
    layers: int = 2,
    hidden: int = 48,
    context: int = 512,
    init_std: float = 0.02,
) -> LlamaConfig:
    """A small Llama config: 4 heads (2 KV), MLP 2x wide, untied so random text varies."""
    return LlamaConfig(
        initializer_range=init_std,
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=1,
        eos_token_id=eos,
        pad_token_id=0,
        tie_word_embeddings=False,
    )


def tiny_model(*, seed: int = 0, num_slots: int = 4, context: int = 512) -> FasterDecodeMixer:
    """A random 2-layer Llama backbone (untied, so its text varies) with a random head."""
    torch.manual_seed(seed)
    config = tiny_llama_config(context=context)
    backbone = LlamaForCausalLM(config).eval()
    backbone.name_or_path = "tiny-random-llama"
    model = FasterDecodeMixer.from_backbone(
        backbone, tokenizer=char_tokenizer(), num_slots=num_slots, mixer_token_hidden=16
    )
    model.config.backbone = "tiny-random-llama"
    model.config.extra = {"name": "tiny random head"}
    return model.eval()
