"""The generation API: streams, hooks, traces, settings, save/load."""

from __future__ import annotations

import re

import pytest
import torch

from shuffle_model import FasterDecodeMixer, GenerationTrace, ShuffleLM, StepTrace
from shuffle_model.decoding import loop
from shuffle_model.decoding.trace import SLOT_STATUSES
from tests.tiny import tiny_backbone, tiny_shuffle_lm


def test_generate_accepts_tokenizer_output(mixer, tokenizer):
    inputs = tokenizer("hello world", return_tensors="pt")
    out = mixer.generate(
        **inputs, max_parallel_tokens=3, shuffle_strategy="rotary", temperature=0.0
    )
    assert out.shape[0] == 1
    assert out[0, : inputs["input_ids"].shape[1]].tolist() == inputs["input_ids"][0].tolist()
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_attention_mask_padding_is_dropped(mixer):
    padded = torch.tensor([[0, 0, 5, 6, 7]])
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    with_mask = mixer.generate(padded, attention_mask=mask, max_new_tokens=10)
    plain = mixer.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=10)
    assert with_mask.tolist() == plain.tolist()


def test_pure_mode_emits_several_tokens_per_pass(mixer):
    _, trace = mixer.generate(
        torch.tensor([[5, 6, 7]]),
        max_new_tokens=40,
        verify=False,
        keep_threshold=0.0,
        shuffle_strategy="identity",
        return_trace=True,
    )
    assert trace.totals.new_tokens / trace.totals.backbone_forwards > 1.0
    statuses = {s.status for step in trace.steps for s in step.slots}
    assert "emitted" in statuses and "accepted" not in statuses


def test_stream_yields_step_traces_consistent_with_the_output(mixer, tokenizer):
    ids = tokenizer("abc", return_tensors="pt")["input_ids"]
    run = mixer.stream(  # the head's slots alone, every kept draft checked: the original step
        ids,
        max_new_tokens=25,
        keep_threshold=0.0,
        temperature=0.7,
        seed=1,
        draft_source="head",
        block_length="fixed",
    )
    steps = list(run)
    assert steps and all(isinstance(s, StepTrace) for s in steps)
    assert [s.index for s in steps] == list(range(len(steps)))
    emitted = [t.id for s in steps for t in s.emitted]
    assert emitted == run.trace.output_ids
    assert len(emitted) == run.trace.totals.new_tokens <= 25
    assert run.trace.totals.backbone_forwards <= len(steps) + 1
    for step in steps:
        assert step.emitted[0].id == step.anchor.id
        assert all(s.status in SLOT_STATUSES for s in step.slots)
        for k, slot in enumerate(step.slots):
            assert slot.index == k
            assert len(slot.candidates) == 5
            assert slot.candidates[0].prob >= slot.candidates[-1].prob
        if step.slots:
            assert len(step.shuffle_probs) == 4
            assert all(abs(sum(row) - 1) < 1e-4 for row in step.shuffle_probs)
        block_tokens = [step.slots[k].token.id for k in step.block_order]
        assert [t.id for t in step.emitted[1:]] == block_tokens[: step.num_accepted]
        if step.forwarded_ids:
            assert step.forwarded_ids == [step.anchor.id, *block_tokens]
        assert step.anchor.text is not None  # texts filled: the tokenizer is known
    assert run.trace.output_text == tokenizer.decode(run.trace.output_ids, skip_special_tokens=True)


def test_sinkhorn_steps_record_a_doubly_stochastic_matrix(mixer):
    _, trace = mixer.generate(
        torch.tensor([[5, 6]]), max_new_tokens=8, shuffle_strategy="sinkhorn", return_trace=True
    )
    matrix = torch.tensor(trace.steps[0].sinkhorn)
    assert torch.allclose(matrix.sum(0), torch.ones(4), atol=1e-3)
    assert torch.allclose(matrix.sum(1), torch.ones(4), atol=1e-3)


def test_trace_json_round_trip(mixer):
    _, trace = mixer.generate(
        torch.tensor([[5, 6, 7]]),
        max_new_tokens=12,
        shuffle_strategy="sinkhorn",
        keep_threshold=0.0,
        return_trace=True,
    )
    again = GenerationTrace.from_json(trace.to_json())
    assert again.to_json() == trace.to_json()
    assert again.output_ids == trace.output_ids
    assert again.settings["shuffle_strategy"] == "sinkhorn"
    assert again.model["num_slots"] == 4
    assert len(again.steps) == len(trace.steps)


def test_no_hook_builds_no_step_records(mixer, monkeypatch):
    built = []
    original = loop.build_step_trace
    monkeypatch.setattr(
        loop, "build_step_trace", lambda *a, **k: built.append(1) or original(*a, **k)
    )
    mixer.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=12)
    assert built == []
    seen = []
    mixer.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=12, hooks=[seen.append])
    assert len(built) == len(seen) > 0
    assert all(isinstance(s, StepTrace) for s in seen)


def test_save_and_load_give_identical_generation(tmp_path, tokenizer):
    backbone = tiny_backbone(seed=2)
    backbone.save_pretrained(tmp_path / "backbone")
    tokenizer.save_pretrained(tmp_path / "backbone")
    model = FasterDecodeMixer.from_backbone(str(tmp_path / "backbone"), num_slots=3)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "head")
    loaded = FasterDecodeMixer.from_pretrained(tmp_path / "head", device="cpu", dtype="float64")
    settings = dict(max_new_tokens=16, keep_threshold=0.0, verify=False, temperature=0.8, seed=7)
    ids = torch.tensor([[5, 6, 7]])
    assert loaded.config.backbone == str(tmp_path / "backbone")
    assert loaded.generate(ids, **settings).tolist() == model.generate(ids, **settings).tolist()
    assert loaded.tokenizer is not None
    for name, tensor in model.head.state_dict().items():
        assert torch.equal(tensor, loaded.head.state_dict()[name]), name


def test_shuffle_lm_save_and_load(tmp_path):
    model = tiny_shuffle_lm(seed=3)
    model.save_pretrained(tmp_path)
    loaded = ShuffleLM.from_pretrained(tmp_path, device="cpu").double()
    ids = torch.tensor([[5, 6, 7]])
    settings = dict(max_new_tokens=12, keep_threshold=0.0, verify=False)
    assert loaded.generate(ids, **settings).tolist() == model.generate(ids, **settings).tolist()


def test_forward_outputs_have_the_documented_shapes(tokenizer):
    model = tiny_shuffle_lm(seed=0)
    ids = torch.randint(3, 64, (2, 9))
    out = model(ids, attention_mask=torch.ones_like(ids), labels=ids)
    assert out.logits.shape == (2, 9, 64)
    assert out.shuffle_scores.shape == (2, 9, 4, 4)
    assert out.draft_logits.shape == (2, 9, 4, 64)
    assert out.keep_logits.shape == (2, 9, 4)
    assert out.loss.ndim == 0 and out.loss.requires_grad
    assert torch.isclose(out.loss, out.set_loss + out.lm_loss)
    assert model(ids).loss is None


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"shuffle_strategy": "random"}, ["shuffle_strategy", "rotary", "identity"]),
        ({"temperature": -0.1}, ["temperature", ">= 0"]),
        ({"temperature": float("nan")}, ["temperature"]),
        ({"max_new_tokens": -5}, ["max_new_tokens", ">= 1"]),
        ({"max_new_tokens": 0}, ["max_new_tokens"]),
        ({"max_new_tokens": 2.5}, ["max_new_tokens"]),
        ({"keep_threshold": 1.5}, ["keep_threshold", "[0, 1]"]),
        ({"keep_threshold": -0.1}, ["keep_threshold", "[0, 1]"]),
        ({"top_p": 0.0}, ["top_p", "(0, 1]"]),
        ({"top_p": 1.2}, ["top_p", "(0, 1]"]),
        ({"max_parallel_tokens": -1}, ["max_parallel_tokens", ">= 0"]),
        ({"max_parallel_tokens": 2.5}, ["max_parallel_tokens", "integer"]),
        ({"do_sample": "yes"}, ["do_sample"]),
        ({"block_length": "short"}, ["block_length", "cost", "fixed"]),
        ({"draft_source": "oracle"}, ["draft_source", "head+context", "context"]),
        ({"verify": False, "draft_source": "context"}, ["draft_source", "pure parallel"]),
        ({"seed": -1}, ["seed"]),
        ({"verify": "yes"}, ["verify"]),
        ({"beams": 3}, ["unknown generation settings", "beams"]),
    ],
)
def test_bad_settings_raise_value_errors_naming_them(mixer, settings, names):
    with pytest.raises(ValueError) as error:
        mixer.generate(torch.tensor([[5, 6]]), **settings)
    for name in names:
        assert name in str(error.value)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (torch.zeros((1, 0), dtype=torch.long), "empty"),
        (torch.zeros((2, 2, 2), dtype=torch.long), "must have shape (1, T)"),
        ([[5, 6], [7]], "equal-length lists"),
        (torch.tensor([[5, 640]]), "token ids in [0, 64)"),
        (None, "input_ids must be given"),
    ],
)
def test_bad_inputs_raise_value_errors(mixer, ids, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        mixer.generate(ids, max_new_tokens=4)


def test_prompt_longer_than_the_context_is_refused(mixer):
    with pytest.raises(ValueError, match="exceeds the model's context of 256 tokens"):
        mixer.generate(torch.full((1, 250), 5), max_new_tokens=10)


def test_max_parallel_tokens_zero_is_ordinary_decoding(mixer, backbone):
    ids = torch.tensor([[9, 8, 7]])
    out, trace = mixer.generate(ids, max_new_tokens=10, max_parallel_tokens=0, return_trace=True)
    assert out.tolist() == backbone.generate(ids, max_new_tokens=10, do_sample=False).tolist()
    assert all(step.slots == [] for step in trace.steps)
    assert trace.totals.backbone_forwards == trace.totals.new_tokens


def test_draft_vocabulary_restricts_drafts_and_stays_lossless(backbone):
    torch.manual_seed(0)
    model = FasterDecodeMixer.from_backbone(backbone, num_slots=3, draft_vocab_size=10)
    allowed = torch.arange(20, 30)
    model.set_draft_vocab(allowed)
    ids = torch.tensor([[25, 21, 27]])
    out, trace = model.generate(
        ids,
        max_new_tokens=20,
        keep_threshold=0.0,
        shuffle_strategy="identity",
        draft_source="head",
        block_length="fixed",  # the head drafts at every step
        return_trace=True,
    )
    assert out.tolist() == backbone.generate(ids, max_new_tokens=20, do_sample=False).tolist()
    drafted = {s.token.id for step in trace.steps for s in step.slots}
    assert drafted and drafted <= set(allowed.tolist())
    labels = torch.tensor([[25, 21, 27, 5, 22, 23, 24]])  # 5 is not draftable
    loss = model(labels, labels=labels).loss
    assert torch.isfinite(loss)
    sampled = model.generate(ids, max_new_tokens=10, temperature=1.0, keep_threshold=0.0, seed=3)
    assert sampled.shape[1] > 3
