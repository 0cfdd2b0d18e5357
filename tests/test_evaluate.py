"""The teacher-forced replay of recorded greedy answers (evaluate.teacher_forced)."""

from __future__ import annotations

import json

import numpy as np
import torch

from shuffle_model.bench.evaluate import recorded_answers, teacher_forced
from shuffle_model.bench.records import MethodRun, PromptRecord
from shuffle_model.cli.evaluate import main
from shuffle_model.decoding.shuffle import assign_offsets
from tests.tiny import char_tokenizer, tiny_backbone, tiny_mixer


def mixer():
    model = tiny_mixer(tiny_backbone(), tokenizer=char_tokenizer())
    model.row_invariant_passes = False
    return model


@torch.no_grad()
def drafts_at(model, sequence: list[int], t: int, strategy: str) -> dict[int, int]:
    """offset -> drafted token at position t, computed directly (not through the replay)."""
    hidden = model.trunk_forward(torch.tensor([sequence[: t + 1]])).hidden[0, t]
    draft = model.draft(hidden[None], torch.tensor([sequence[t + 1]]))
    tokens = draft.logits.argmax(-1)[0]
    if draft.vocab is not None:
        tokens = draft.vocab[tokens]
    offsets = assign_offsets(
        strategy,
        draft.shuffle_scores[0].float().numpy(),
        draft.keep_logits[0].float().sigmoid().numpy(),
    ).offsets
    return {o: int(tokens[s]) for s, o in enumerate(offsets) if o is not None}


def offset_one_answer(model, length: int = 16) -> dict:
    """An answer whose every next token is what the head drafts at offset 1 (hungarian)."""
    prompt = [5, 9, 11, 7]
    sequence = prompt + [13]
    while len(sequence) < len(prompt) + length:
        sequence.append(drafts_at(model, sequence, len(sequence) - 2, "hungarian")[1])
    return {"category": "x", "prompt_ids": prompt, "answer_ids": sequence[len(prompt) :]}


def test_an_answer_made_of_the_offset_one_drafts_scores_full_marks_there():
    """Build an answer whose every next token is what the head drafts at offset 1: the replay
    must count offset 1 right at every position that has one, and the unfiltered block at
    least 2 tokens there (the last position's anchor ends the answer: nothing to draft)."""
    model = mixer()
    result = teacher_forced(model, [offset_one_answer(model)], strategy="hungarian")
    assert set(result) == {"x", "all"}
    figures = result["all"]
    assert figures["positions"] == 16
    assert figures["top1_per_offset"][0] == 1.0
    assert figures["tokens_per_pass_unfiltered"] >= 1 + 15 / 16
    assert figures["tokens_per_pass_unfiltered"] >= figures["tokens_per_pass@0.5"] >= 1.0


def test_keep_sweep_is_consistent_with_the_filter():
    """A higher keep threshold verifies a prefix of a lower one's block: drafts verified and
    tokens per pass never grow with it, a pass never gains more than it verified, and the
    head's own threshold reads the same as the headline figure."""
    model = mixer()
    figures = teacher_forced(model, [offset_one_answer(model)], strategy="hungarian")["all"]
    sweep = figures["keep_sweep"]
    thresholds = sorted(sweep, key=float)
    assert "0.5" in sweep and len(thresholds) >= 3
    verified = [sweep[t]["drafts_verified"] for t in thresholds]
    gained = [sweep[t]["tokens_per_pass"] for t in thresholds]
    assert gained[0] > 1.0  # the answer is made of offset-1 drafts: a low threshold gains
    assert verified == sorted(verified, reverse=True)
    assert gained == sorted(gained, reverse=True)
    assert all(1.0 <= g <= 1 + v + 1e-9 for g, v in zip(gained, verified, strict=True))
    assert all(g <= figures["tokens_per_pass_unfiltered"] + 1e-9 for g in gained)
    assert sweep["0.5"]["tokens_per_pass"] == figures["tokens_per_pass@0.5"]


def test_per_offset_top1_matches_a_direct_count():
    model = mixer()
    torch.manual_seed(3)
    prompt = torch.randint(3, 60, (6,)).tolist()
    answer_ids = torch.randint(3, 60, (12,)).tolist()
    sequence = prompt + answer_ids
    k = model.config.num_slots
    hits, present = np.zeros(k), np.zeros(k)
    for t in range(len(prompt) - 1, len(sequence) - 1):
        drafted = drafts_at(model, sequence, t, "rotary")
        for p in range(1, k + 1):
            if t + 1 + p < len(sequence):
                present[p - 1] += 1
                hits[p - 1] += drafted.get(p) == sequence[t + 1 + p]
    result = teacher_forced(
        model,
        [{"category": "c", "prompt_ids": prompt, "answer_ids": answer_ids}],
        strategy="rotary",
    )
    np.testing.assert_allclose(result["c"]["top1_per_offset"], np.round(hits / present, 4))
    assert 0.0 <= result["c"]["keep_ece"] <= 1.0


def test_command_replays_a_benchmark_json(tmp_path, monkeypatch, capsys):
    """--teacher-forced reads the answers recorded by a benchmark run and their questions."""
    model = mixer()
    model.save_pretrained(tmp_path / "head")
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps({"question_id": i, "category": c, "turns": [t]})
            for i, c, t in [(1, "qa", "what is a cat?"), (2, "math", "add 2 and 3")]
        )
    )
    bench = tmp_path / "bench.json"
    records = [  # as the benchmark writes them
        PromptRecord(q, c, 5, None, {"baseline": MethodRun(ids, 1.0, len(ids), 0)}).to_dict()
        for q, c, ids in [(2, "math", [20, 21, 22, 2]), (1, "qa", [30, 31, 32, 33, 2])]
    ]
    bench.write_text(json.dumps({"records": records}))
    answers = recorded_answers(bench, model.tokenizer, questions)
    assert [a["category"] for a in answers] == ["spec/math", "spec/qa"]
    assert answers[1]["answer_ids"] == [30, 31, 32, 33, 2]

    import shuffle_model.training.overlap as overlap
    from shuffle_model.model import faster_decode_mixer

    monkeypatch.setattr(overlap, "SPEC_BENCH", questions)
    monkeypatch.setattr(
        faster_decode_mixer.FasterDecodeMixer,
        "from_pretrained",
        staticmethod(lambda *a, **k: model),
    )
    out = tmp_path / "result.json"
    assert main([str(tmp_path / "head"), "--prompts", "0", "--strategies", "rotary",
                 "--teacher-forced", str(bench), "--json", str(out)]) == 0  # fmt: skip
    replayed = json.loads(out.read_text())[f"{tmp_path / 'head'}:rotary"]["teacher_forced"]
    assert replayed["all"]["positions"] == 4 + 5
    assert set(replayed) == {"all", "spec/math", "spec/qa"}
