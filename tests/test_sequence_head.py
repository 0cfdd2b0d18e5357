"""A head that reads the sequence (model/sequence.py): the layer over the features of every
position, its generation-time cache, its training data and its place in the loop."""

from __future__ import annotations

import json

import pytest
import torch

from shuffle_model import FasterDecodeMixer
from shuffle_model.decoding import proposers
from shuffle_model.model.sequence import SequenceCache, SequenceLayer
from tests.tiny import (
    char_tokenizer,
    tiny_backbone,
    tiny_mixer,
    tiny_training_folder,
    warm_started,
)

PROMPT = [5, 9, 11, 7, 20, 21, 5, 9]


def sequence_mixer(**head):
    backbone = tiny_backbone(layers=3, eos=None)
    model = tiny_mixer(
        backbone, tokenizer=char_tokenizer(), sequence_width=16, sequence_heads=2, **head
    )
    with torch.no_grad():
        model.head.context_proj.weight.normal_(0, 0.5)  # a trained layer's output matters
    return model


def test_the_cache_gives_each_position_what_the_whole_sequence_gives_it():
    torch.manual_seed(0)
    layer = SequenceLayer(hidden_size=8, embed_size=8, width=16, heads=2).double().eval()
    rows = torch.randn(1, 11, 16, dtype=torch.float64)
    with torch.no_grad():
        whole = layer(rows)  # (1, 11, 16), causal
        cache = SequenceCache()
        for start, end in ((0, 4), (4, 5), (5, 9)):
            q = cache.extend(layer, rows[:, start:end])
            torch.testing.assert_close(
                cache.query(layer, rows[:, end - 1 : end], q[:, :, -1:]), whole[0, end - 1]
            )
        cache.crop(7)  # forget positions 7 and 8, read them again with two more
        q = cache.extend(layer, rows[:, 7:11])
        torch.testing.assert_close(cache.query(layer, rows[:, 10:11], q[:, :, -1:]), whole[0, 10])
    assert not torch.allclose(whole[0, 4], layer(rows[:, 2:5])[0, -1])  # it reads the past


def test_generation_reads_the_sequence_as_training_does_and_stays_lossless(monkeypatch):
    """At every step the head's context z_t, built a few positions per step from the loop's
    history, equals the layer run over the whole sequence so far (as training and the replay
    compute it); verified decoding, chains and trees, equals ordinary decoding."""
    model = sequence_mixer()
    settings_tried = (
        dict(draft_source="head", block_length="fixed"),
        dict(draft_source="head+context"),
    )
    for settings in settings_tried:  # the cost curve, measured on first use where none is
        model.generate([PROMPT], max_new_tokens=2, **settings)  # cached, drafts on a timing
    seen = []  # context of its own: the spy below watches generations only
    read = proposers.SequenceReader.context

    def spy(self, state):
        z = read(self, state)
        seen.append((list(state.tokens), z))
        return z

    monkeypatch.setattr(proposers.SequenceReader, "context", spy)
    ordinary = model.generate([PROMPT], max_new_tokens=40, max_parallel_tokens=0)
    for settings in settings_tried:
        seen.clear()
        verified = model.generate([PROMPT], max_new_tokens=40, **settings)
        assert verified.tolist() == ordinary.tolist()
        assert len(seen) >= (3 if settings["draft_source"] == "head" else 1)
        for tokens, z in seen:
            ids = torch.tensor([tokens])
            whole = model.sequence_context(model.trunk_forward(ids[:, :-1]).hidden, ids)
            torch.testing.assert_close(z, whole[0, -1])
    sampled = model.generate([PROMPT], max_new_tokens=30, temperature=0.8, seed=3)
    again = model.generate([PROMPT], max_new_tokens=30, temperature=0.8, seed=3)
    assert sampled.tolist() == again.tolist()


def test_the_context_changes_the_drafts():
    model = sequence_mixer()
    ids = torch.tensor([PROMPT])
    hidden = model.trunk_forward(ids).hidden  # (1, T, H)
    anchors = torch.tensor([[*PROMPT[1:], 3]])
    drafts = model.draft_everywhere(hidden, ids, anchors)
    context = model.sequence_context(hidden, torch.cat([ids[:, :1], anchors], 1))
    blind = model.draft(hidden, anchors, torch.zeros_like(context))
    assert not torch.allclose(drafts.keep_logits, blind.keep_logits)
    with pytest.raises(ValueError, match="pass its context"):
        model.draft(hidden, anchors)


def test_a_head_without_the_layer_warm_starts_one_with_it_unchanged():
    plain, reading = warm_started(tiny_backbone(layers=3), sequence_width=16)
    ids = torch.tensor([PROMPT])
    hidden, anchors = plain.trunk_forward(ids).hidden, torch.tensor([[*PROMPT[1:], 3]])
    a = plain.draft(hidden, anchors)
    b = reading.draft_everywhere(hidden, ids, anchors)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.keep_logits, b.keep_logits)
    assert any(p.abs().sum() > 0 for p in reading.head.sequence.parameters())


def test_train_a_sequence_head_on_every_position_of_the_cached_examples(tmp_path):
    """--sequence-width caches h_i of every position (a third file per shard, aligned with the
    shard's tokens), trains on batches from a few examples, and saves a head that loads and
    generates as ordinary decoding does."""
    from shuffle_model.cli import train
    from shuffle_model.training.distill import shard_paths
    from shuffle_model.training.features import load_features

    backbone_dir, data = tiny_training_folder(tmp_path, layers=3)
    args = ["--data", str(data), "--backbone", str(backbone_dir), "--slots", "4"]
    args += ["--draft-vocab", "0", "--batch-size", "16", "--heldout-every", "4", "--warmup", "1"]
    args += ["--sequence-width", "16", "--sequence-heads", "2", "--examples-per-batch", "3"]
    train.main([*args, "--out", str(tmp_path / "seq"), "--steps", "2", "--eval-every", "2"])
    assert list((data / "features").glob("*-sequence.safetensors"))
    head = FasterDecodeMixer.from_pretrained(tmp_path / "seq" / "final", device="cpu")
    assert head.config.sequence_width == 16
    assert json.loads((tmp_path / "seq" / "history.json").read_text())[-1]["step"] == 2

    examples, features, sequences = load_features(head, shard_paths([data]), str(backbone_dir))
    assert sequences is None  # only a head that reads the sequence asks for every position
    examples, features, sequences = load_features(
        head, shard_paths([data]), str(backbone_dir), sequence=True
    )
    for i in (0, len(examples) - 1):
        hidden, ids = sequences.example(i)
        example = examples[i]
        assert ids.tolist() == example.prompt_ids + example.answer_ids
        whole = head.trunk_forward(ids[None]).hidden[0]
        torch.testing.assert_close(hidden.float(), whole.float(), atol=2e-3, rtol=1e-2)
        rows = (features.example == i).nonzero().flatten()
        assert features.position[rows].tolist() == list(
            range(len(example.prompt_ids) - 1, len(ids) - 1)
        )
        assert features.anchors[rows].tolist() == ids[features.position[rows] + 1].tolist()
    ids = head.tokenizer("ab", return_tensors="pt").input_ids
    ordinary = head.generate(ids, max_new_tokens=12, max_parallel_tokens=0)
    assert head.generate(ids, max_new_tokens=12, verify=True).tolist() == ordinary.tolist()


def test_soft_targets_read_the_hidden_state_that_predicts_each_offset(tmp_path):
    """--distill-weight: offset p of position t is predicted by h_{t+p}; past the answer's end
    there is nothing to learn from."""
    from shuffle_model.cli import train
    from shuffle_model.training.distill import shard_paths
    from shuffle_model.training.features import load_features
    from shuffle_model.training.trainer import future_hidden, soft_targets

    backbone_dir, data = tiny_training_folder(tmp_path, layers=3)
    args = ["--data", str(data), "--backbone", str(backbone_dir), "--slots", "4"]
    args += ["--draft-vocab", "0", "--batch-size", "16", "--heldout-every", "4", "--warmup", "1"]
    train.main([*args, "--out", str(tmp_path / "kd"), "--steps", "2", "--eval-every", "2",
                "--distill-weight", "1.0"])  # fmt: skip
    head = FasterDecodeMixer.from_pretrained(tmp_path / "kd" / "final", device="cpu")
    examples, features, sequences = load_features(
        head, shard_paths([data]), str(backbone_dir), sequence=True
    )
    rows = features.subset((features.example == 0).nonzero().flatten())
    future, known = future_hidden(rows, sequences, 4)  # (N, 4, H), (N, 4)
    ids = torch.tensor([examples[0].prompt_ids + examples[0].answer_ids])
    whole = head.trunk_forward(ids).hidden[0].float()  # (L, H)
    for j, t in enumerate(rows.position.tolist()):
        for p in range(1, 5):
            if t + p < ids.shape[1]:
                torch.testing.assert_close(future[j, p - 1], whole[t + p], atol=2e-3, rtol=1e-2)
                assert known[j, p - 1]
            else:
                assert not known[j, p - 1] and not future[j, p - 1].any()
    soft = soft_targets(head, future, known)
    last = rows.position.argmax()
    # the last position's h_{t+1} is the answer's last one; nothing beyond it
    assert soft[last].sum(-1).tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    greedy = head.trunk_forward(ids).logits[0].argmax(-1)  # the backbone's token after t + p
    assert soft[0, 0].argmax() == greedy[int(rows.position[0]) + 1]
