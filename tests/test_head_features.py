"""What the head reads: an earlier backbone block beside h_t, and how its features are cached."""

from __future__ import annotations

import json

import pytest
import torch

from shuffle_model import FasterDecodeMixer, ShuffleConfig
from shuffle_model.model.head import warm_start_state
from tests.tiny import (
    char_tokenizer,
    tiny_backbone,
    tiny_mixer,
    tiny_training_folder,
    warm_started,
)

PROMPT = [5, 9, 11, 7, 20, 21]


def test_trunk_hidden_is_h_t_beside_the_early_block_output():
    backbone = tiny_backbone(layers=3)
    model = tiny_mixer(backbone, tokenizer=char_tokenizer(), early_layer=1)
    ids = torch.tensor([PROMPT])
    hidden = model.trunk_forward(ids).hidden
    reference = backbone.base_model(input_ids=ids, output_hidden_states=True)
    assert hidden.shape == (1, len(PROMPT), 2 * backbone.config.hidden_size)
    h = backbone.config.hidden_size
    torch.testing.assert_close(hidden[..., :h], reference.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(hidden[..., h:], reference.hidden_states[1], rtol=0, atol=0)
    draft = model.draft(hidden[0, -1:], torch.tensor([3]))
    assert draft.keep_logits.shape == (1, model.config.num_slots)


def test_early_block_changes_the_drafts_and_generation_stays_lossless():
    backbone = tiny_backbone(layers=3)
    model = tiny_mixer(backbone, tokenizer=char_tokenizer(), early_layer=2)
    with torch.no_grad():
        model.head.in_proj.weight.normal_(0, 0.5)  # make g_t matter
    ids = torch.tensor([PROMPT])
    hidden = model.trunk_forward(ids).hidden[0, -1:]
    h = backbone.config.hidden_size
    shifted = hidden.clone()
    shifted[:, h:] += 1.0
    a, b = model.draft(hidden, torch.tensor([3])), model.draft(shifted, torch.tensor([3]))
    assert not torch.allclose(a.keep_logits, b.keep_logits)
    ordinary = model.generate([PROMPT], max_new_tokens=24, max_parallel_tokens=0)
    verified = model.generate([PROMPT], max_new_tokens=24, verify=True)
    assert verified.tolist() == ordinary.tolist()


def test_a_head_without_the_early_block_warm_starts_one_with_it_unchanged(tmp_path):
    backbone = tiny_backbone(layers=3)
    plain, widened = warm_started(backbone, early_layer=1)
    ids = torch.tensor([PROMPT])
    a = plain.draft(plain.trunk_forward(ids).hidden, ids)
    b = widened.draft(widened.trunk_forward(ids).hidden, ids)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.shuffle_scores, b.shuffle_scores)
    torch.testing.assert_close(a.keep_logits, b.keep_logits)
    other = tiny_mixer(backbone, tokenizer=char_tokenizer(), early_layer=1, head_hidden_size=16)
    with pytest.raises(ValueError, match="cannot warm-start"):
        warm_start_state(other.head, plain.head.state_dict())


def test_early_layer_must_be_a_block_before_the_last():
    with pytest.raises(ValueError, match="early_layer"):
        ShuffleConfig(num_layers=3, early_layer=3)
    with pytest.raises(ValueError, match="early_layer"):
        ShuffleConfig(num_layers=3, early_layer=0)


def test_train_with_an_early_block_shares_the_cached_pass_and_saves_a_loadable_head(
    tmp_path, monkeypatch
):
    """--early-layer from a plain head: one backbone pass caches h_t and g_t in two files; a plain
    head then trains from the first without another pass; the saved head loads and generates."""
    from shuffle_model.cli import train
    from shuffle_model.training import features

    backbone_dir, data = tiny_training_folder(tmp_path, layers=3)
    common = ["--data", str(data), "--backbone", str(backbone_dir), "--slots", "4"]
    common += ["--draft-vocab", "0", "--batch-size", "16", "--heldout-every", "4", "--warmup", "1"]
    train.main([*common, "--out", str(tmp_path / "plain"), "--steps", "2", "--eval-every", "2"])
    cached = sorted(p.name for p in (data / "features").iterdir())
    plain_head = str(tmp_path / "plain" / "final")
    train.main([*common, "--out", str(tmp_path / "early"), "--steps", "2", "--eval-every", "2",
                "--early-layer", "2", "--init-from", plain_head])  # fmt: skip
    layer_files = sorted(set(p.name for p in (data / "features").iterdir()) - set(cached))
    assert len(layer_files) == 1 and layer_files[0].endswith("-layer2.safetensors")

    def no_pass(*args, **kwargs):
        raise AssertionError("the backbone features were cached already")

    monkeypatch.setattr(features, "extract_features", no_pass)
    train.main([*common, "--out", str(tmp_path / "again"), "--steps", "2", "--eval-every", "2",
                "--early-layer", "2"])  # fmt: skip
    head = FasterDecodeMixer.from_pretrained(tmp_path / "early" / "final", device="cpu")
    assert head.config.early_layer == 2
    assert json.loads((tmp_path / "early" / "history.json").read_text())[-1]["step"] == 2
    ids = head.tokenizer("ab", return_tensors="pt").input_ids
    ordinary = head.generate(ids, max_new_tokens=12, max_parallel_tokens=0)
    assert head.generate(ids, max_new_tokens=12, verify=True).tolist() == ordinary.tolist()


def test_bfloat16_features_are_cached_apart_and_close_to_float32(tmp_path):
    """--features-dtype bfloat16: a second cache (another key) made by a bfloat16 copy of the
    backbone, whose h_t stays close to the float32 one; the head itself trains in float32."""
    from safetensors.torch import load_file

    from shuffle_model.cli import train

    backbone_dir, data = tiny_training_folder(
        tmp_path, layers=3, seed=1, examples=4, answer_tokens=16
    )
    common = ["--data", str(data), "--backbone", str(backbone_dir), "--slots", "4"]
    common += ["--draft-vocab", "0", "--features-only"]
    train.main([*common, "--out", str(tmp_path / "a")])
    first = set((data / "features").iterdir())
    train.main([*common, "--out", str(tmp_path / "b"), "--features-dtype", "bfloat16"])
    (second,) = set((data / "features").iterdir()) - first
    (first,) = first
    f32, bf16 = load_file(str(first)), load_file(str(second))
    assert torch.equal(f32["targets"], bf16["targets"])
    assert not torch.equal(f32["hidden"], bf16["hidden"])
    torch.testing.assert_close(bf16["hidden"].float(), f32["hidden"].float(), rtol=0.05, atol=0.05)


def test_features_only_passes_skip_the_logits():
    model = tiny_mixer(tiny_backbone(), tokenizer=char_tokenizer())
    ids = torch.tensor([PROMPT])
    full, features = model.trunk_forward(ids), model.trunk_forward(ids, logits=False)
    assert features.logits is None
    assert torch.equal(full.hidden, features.hidden)


def test_train_with_a_draft_vocabulary_keeps_the_most_frequent_targets(tmp_path):
    """--draft-vocab N: the saved head drafts over N answer tokens, the most frequent; a warm
    start replaces the vocabulary with its own data's."""
    from shuffle_model.cli import train

    backbone_dir, data = tiny_training_folder(tmp_path)  # answers: 240 tokens in 3..39
    common = ["--data", str(data), "--backbone", str(backbone_dir), "--slots", "4"]
    common += ["--draft-vocab", "16", "--batch-size", "16", "--heldout-every", "4", "--warmup", "1"]
    common += ["--steps", "2", "--eval-every", "2"]
    train.main([*common, "--out", str(tmp_path / "a")])
    head = FasterDecodeMixer.from_pretrained(tmp_path / "a" / "final", device="cpu")
    vocab = head.head.draft_vocab.tolist()
    assert len(vocab) == 16 and vocab == sorted(set(vocab))
    assert all(3 <= token < 40 for token in vocab)  # answer tokens, no filler ids
    train.main(
        [*common, "--out", str(tmp_path / "b"), "--init-from", str(tmp_path / "a" / "final")]
    )
    again = FasterDecodeMixer.from_pretrained(tmp_path / "b" / "final", device="cpu")
    assert again.head.draft_vocab.tolist() == vocab  # same data: the same most frequent tokens
    assert again.config.draft_vocab_size == 16


def test_a_shallower_head_warm_starts_a_deeper_one_unchanged():
    """Mixer blocks beyond the saved ones start as the identity (their MLPs' last layers zero)."""
    shallow, deep = warm_started(tiny_backbone(layers=3), mixer_depth=4)
    ids = torch.tensor([PROMPT])
    hidden = shallow.trunk_forward(ids).hidden
    a, b = shallow.draft(hidden, ids), deep.draft(hidden, ids)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.shuffle_scores, b.shuffle_scores)
    assert deep.head.blocks[3].token_mlp[0].weight.abs().sum() > 0  # learnable from the start
