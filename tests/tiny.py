"""Tiny random models and a character tokenizer for fast, offline tests."""

from __future__ import annotations

import string

import torch
from transformers import LlamaForCausalLM

from shuffle_model import FasterDecodeMixer, ShuffleConfig, ShuffleLM
from shuffle_model.model.tiny import char_tokenizer as shared_char_tokenizer
from shuffle_model.model.tiny import tiny_llama_config as shared_tiny_llama_config

CHARS = list(string.ascii_lowercase + string.digits + " .,!?<>/=\"'") + ["\n"]
TINY_VOCAB = 64


def char_tokenizer():
    return shared_char_tokenizer(TINY_VOCAB, CHARS)


def tiny_llama_config(
    vocab_size: int = TINY_VOCAB, *, eos: int | None = 2, layers=2, hidden=32, init_std=0.02
):
    # tied tiny random models only ever repeat the last token: the shared config is untied
    return shared_tiny_llama_config(
        vocab_size, eos=eos, layers=layers, hidden=hidden, context=256, init_std=init_std
    )


def tiny_backbone(seed: int = 0, *, dtype=torch.float64, **config) -> LlamaForCausalLM:
    """A random Llama. float64 by default, so argmax ties from rounding are out of the picture."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**config)).to(dtype).eval()
    model.generation_config.pad_token_id = 0
    return model


def tiny_mixer(backbone, *, seed: int = 1, tokenizer=None, **head) -> FasterDecodeMixer:
    torch.manual_seed(seed)
    head = {"num_slots": 4, "mixer_token_hidden": 16, **head}
    return FasterDecodeMixer.from_backbone(backbone, tokenizer=tokenizer, **head)


def warm_started(backbone, **grown_head) -> tuple[FasterDecodeMixer, FasterDecodeMixer]:
    """A tiny head with random weights, and a head of another shape (`grown_head`) started from
    its weights by warm_start_state."""
    from shuffle_model.model.head import warm_start_state

    saved = tiny_mixer(backbone, tokenizer=char_tokenizer())
    with torch.no_grad():
        for p in saved.head.parameters():
            p.normal_(0, 0.2)
    grown = tiny_mixer(backbone, tokenizer=char_tokenizer(), seed=5, **grown_head)
    grown.head.load_state_dict(warm_start_state(grown.head, saved.head.state_dict()))
    return saved, grown


def tiny_shuffle_lm(seed: int = 0, *, vocab_size: int = TINY_VOCAB, **overrides) -> ShuffleLM:
    torch.manual_seed(seed)
    config = ShuffleConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        max_position_embeddings=256,
        num_slots=4,
        mixer_token_hidden=16,
        eos_token_id=2,
        tie_word_embeddings=False,
        **overrides,
    )
    return ShuffleLM(config).double().eval()


def tiny_training_folder(
    tmp_path, *, layers: int = 2, seed: int = 0, examples: int = 12, answer_tokens: int = 20
):
    """A saved float32 tiny backbone with its tokenizer, and a data folder holding one old-format
    shard of random greedy examples: what `python -m shuffle_model.cli.train` reads."""
    import random

    from shuffle_model.training.distill import Example, save_shard

    backbone_dir, data = tmp_path / "backbone", tmp_path / "data"
    tiny_backbone(dtype=torch.float32, layers=layers).save_pretrained(backbone_dir)
    char_tokenizer().save_pretrained(backbone_dir)
    rng = random.Random(seed)
    shard = [
        Example(
            "c",
            [rng.randrange(3, 40) for _ in range(5)],
            [rng.randrange(3, 40) for _ in range(answer_tokens)],
            False,
        )
        for _ in range(examples)
    ]
    data.mkdir()
    save_shard(data / "s1-00000.safetensors", shard)
    return backbone_dir, data


def tiny_corpus(model, answers, *, seed: int = 0, noise: int = 0):
    """A corpus for the `corpus` draft source of a tiny model: the given token-id answers, plus
    `noise` random sequences of 16 tokens (drafts that the backbone will mostly reject)."""
    from shuffle_model.decoding.corpus import Corpus, CorpusCalibration, CorpusIndex

    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    random = [torch.randint(3, vocab, (16,), generator=generator).tolist() for _ in range(noise)]
    return Corpus(
        index=CorpusIndex.from_answers([list(a) for a in answers] + random),
        calibration=CorpusCalibration(),
        backbone=model.config.backbone,
        vocab_size=vocab,
    )


def greedy_answers(model, prompts, *, max_new_tokens: int = 24) -> list[list[int]]:
    """The backbone's greedy answers (prompt included) to token-id prompts."""
    generate = model.backbone.generate
    return [
        generate(torch.tensor([p]), max_new_tokens=max_new_tokens, do_sample=False)[0].tolist()
        for p in prompts
    ]
