"""The corpus draft source: its index, its trees, its calibration, and generation with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shuffle_model.decoding.corpus import (
    DEFAULT_CORPUS_DIR,
    MAX_MATCH,
    MIN_MATCH,
    SEPARATOR,
    Corpus,
    CorpusCalibration,
    CorpusIndex,
    best_continuations,
    calibration_outcomes,
    load_corpus,
)
from shuffle_model.decoding.cost import CostCurve
from shuffle_model.model.backbone import DEFAULT_BACKBONE
from tests.tiny import char_tokenizer, greedy_answers, tiny_backbone, tiny_corpus, tiny_mixer

FLAT = CostCurve.from_ratios([1.0] * 24)


def brute_force_longest(corpus: list[int], tokens: list[int]) -> tuple[int, set[int]]:
    """The longest suffix of `tokens` (MIN_MATCH..MAX_MATCH) found in the corpus, and the
    positions right after each of its occurrences, the slow way."""
    for n in range(min(MAX_MATCH, len(tokens)), MIN_MATCH - 1, -1):
        run = tokens[-n:]
        found = {p + n for p in range(len(corpus) - n + 1) if corpus[p : p + n] == run}
        if found:
            return n, found
    return 0, set()


def test_the_index_finds_every_occurrence_of_the_longest_match():
    rng = np.random.default_rng(0)
    answers = [rng.integers(0, 5, size=rng.integers(3, 60)).tolist() for _ in range(40)]
    index = CorpusIndex.from_answers(answers)
    corpus = [t for a in answers for t in [*a, SEPARATOR]]
    lengths = set()
    for trial in range(300):
        tokens = rng.integers(0, 6, size=rng.integers(1, 12)).tolist()  # 5: never in the corpus
        if trial % 3 == 0:  # a piece of an answer, after random tokens
            answer = answers[trial % len(answers)]
            start = int(rng.integers(0, len(answer)))
            tokens += answer[start : start + int(rng.integers(1, 12))]
        n, positions = index.occurrences(tokens)
        expected_n, expected = brute_force_longest(corpus, tokens)
        assert n == expected_n and set(positions.tolist()) == expected, tokens
        lengths.add(n)
    assert {0, MIN_MATCH, MAX_MATCH} <= lengths  # misses, short and longest matches all occurred


def test_continuations_stop_at_the_end_of_an_answer():
    index = CorpusIndex.from_answers([[1, 2, 3], [1, 2, 4, 5, 6]])
    n, positions = index.occurrences([9, 1, 2])
    assert n == 2
    rows = index.continuations(positions, 3).tolist()
    assert sorted(rows) == [[3, SEPARATOR, SEPARATOR], [4, 5, 6]]


def test_best_continuations_is_the_most_shared_prefixes_best_first():
    rows = np.array([[1, 2, 3]] * 5 + [[1, 2, 4]] * 3 + [[7, 8, 9]] * 2)  # (10, 3)
    nodes = best_continuations(rows, budget=5, branching=True, min_count=2)
    tokens, parents, ranks, freqs = (list(c) for c in zip(*nodes, strict=True))
    assert tokens == [1, 2, 3, 4, 7]  # path shares 0.8, 0.8, 0.5, 0.3, 0.2
    assert parents == [-1, 0, 1, 1, -1] and ranks == [0, 0, 0, 1, 1]
    assert freqs == pytest.approx([0.8, 1.0, 5 / 8, 3 / 8, 0.2])
    chain = best_continuations(rows, budget=5, branching=False, min_count=2)
    assert [node[0] for node in chain] == [1, 2, 3] and [node[1] for node in chain] == [-1, 0, 1]
    rare = best_continuations(rows, budget=5, branching=True, min_count=3)
    assert 7 not in [node[0] for node in rare]  # seen twice: below min_count


def test_calibration_maps_frequencies_to_what_was_accepted(tmp_path):
    # in answers the index does not hold, a continuation seen 3 times in 4 is right half the time
    rows = [(3, True, 0.75, i % 2 == 0) for i in range(40)] + [(3, True, 0.25, False)] * 40
    calibration = CorpusCalibration.fit(rows)
    assert calibration.chance(0.75, length=3, first=True) == pytest.approx(0.5)
    assert calibration.chance(0.25, length=3, first=True) == pytest.approx(0.0)
    assert calibration.chance(0.6, length=5, first=False) == 0.6  # no data there: as it is
    corpus = Corpus(CorpusIndex.from_answers([[4, 5, 6]]), calibration, "tiny", 64)
    loaded = Corpus.load(corpus.save(tmp_path))
    assert loaded.index.tokens.tolist() == corpus.index.tokens.tolist()
    assert loaded.calibration.chance(0.75, length=3, first=True) == pytest.approx(0.5)


def test_calibration_outcomes_are_fair_trials_along_the_answer():
    index = CorpusIndex.from_answers([[1, 2, 3, 4]] * 3 + [[1, 2, 9]] * 2)
    rows = calibration_outcomes(index, [([1], [2, 3, 4])])
    # at the anchor 2 (after 1): 3 (3 of 5, right) and 4 under it (right), 9 (2 of 5, wrong);
    # at the anchor 3 (after 1, 2): 4 (a 3-token match, right)
    assert sorted(rows) == sorted(
        [(2, True, 0.6, True), (2, True, 0.4, False), (2, False, 1.0, True), (3, True, 1.0, True)]
    )


def test_corpus_drafts_of_the_backbones_own_answer_are_accepted_and_lossless():
    backbone = tiny_backbone(seed=2)
    model = tiny_mixer(backbone, seed=5)
    model.cost_curve = FLAT
    prompt = [5, 9, 14, 3, 22]
    expected = greedy_answers(model, [prompt], max_new_tokens=24)
    ids = torch.tensor([prompt])
    _, plain = model.generate(ids, max_new_tokens=24, draft_source="head", return_trace=True)
    model.corpus = tiny_corpus(model, expected, noise=30)
    out, trace = model.generate(
        ids, max_new_tokens=24, draft_source="head+context+corpus", return_trace=True
    )
    assert out.tolist() == expected
    emitted = [s for step in trace.steps for s in step.emitted_sources]
    assert any("corpus" in source for source in emitted)
    assert trace.totals.backbone_forwards < plain.totals.backbone_forwards


def test_a_corpus_of_another_backbone_is_refused_with_a_message():
    model = tiny_mixer(tiny_backbone(seed=1), seed=2)
    model.corpus = Corpus(CorpusIndex.from_answers([[4, 5, 6]]), CorpusCalibration(), "other", 64)
    with pytest.raises(ValueError, match="corpus holds other's tokens"):
        model.generate(torch.tensor([[4, 5]]), max_new_tokens=4, draft_source="head+context+corpus")
    with pytest.raises(ValueError, match="corpus holds other's tokens"):  # before any work
        model.stream(torch.tensor([[4, 5]]), max_new_tokens=4, draft_source="head+context+corpus")


def test_the_shipped_corpus_is_the_distilled_answers_for_the_default_backbone():
    from shuffle_model.resources import REPOSITORY
    from shuffle_model.training.distill import load_examples

    corpus = load_corpus(DEFAULT_CORPUS_DIR)
    assert corpus.backbone == DEFAULT_BACKBONE and corpus.calibration.maps
    if REPOSITORY is None:
        return
    answers = [e.answer_ids for e in load_examples(REPOSITORY / "data" / "distill")]
    expected = CorpusIndex.from_answers(answers).tokens
    assert np.array_equal(corpus.index.tokens, expected)  # built from data/distill, nothing else


def test_pictures_name_the_corpus_as_a_source():
    from viz.explain import decision_sentence, source_origin, token_origins
    from viz.figures import accepted_summary, overview
    from viz.gif import legend_items, render_gif
    from viz.style import BOTH, CONTEXT, CORPUS, HEAD

    assert [source_origin(s) for s in ("corpus", "head+corpus", "context+corpus")] == [
        CORPUS,
        HEAD,
        CONTEXT,
    ]
    assert source_origin("head+context+corpus") == BOTH
    tokenizer = char_tokenizer()
    model = tiny_mixer(tiny_backbone(seed=2), seed=5, tokenizer=tokenizer)
    model.cost_curve = FLAT
    prompt = [5, 9, 14, 3, 22]
    model.corpus = tiny_corpus(model, greedy_answers(model, [prompt]), noise=30)
    _, trace = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=24,
        draft_source="head+context+corpus",
        return_trace=True,
    )
    assert CORPUS in [o for step in trace.steps for o in token_origins(step)]
    assert "from the corpus" in accepted_summary(trace)
    step = next(s for s in trace.steps if s.plan and s.plan.source_drafts.get("corpus"))
    assert "the corpus" in decision_sentence(step)
    assert ("§ corpus", "#666633") in legend_items(trace, verified=True)
    assert render_gif(trace, max_frames=4)[:6] == b"GIF89a"
    overview(trace)  # draws
