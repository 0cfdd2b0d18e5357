"""The benchmark's own logic on a tiny random model: every method runs, the JSON is well formed,
and the losslessness check fires on a different output. No timing thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shuffle_model.bench import run as bench
from tests.tiny import char_tokenizer, tiny_backbone, tiny_corpus, tiny_mixer

CATEGORIES = ("writing", "math_reasoning")


@pytest.fixture(scope="module")
def models():
    tokenizer = char_tokenizer()
    backbone = tiny_backbone(seed=0)
    backbone.name_or_path = "tiny-random-llama"
    main = tiny_mixer(backbone, seed=1, tokenizer=tokenizer)
    fixed = tiny_mixer(backbone, seed=2, tokenizer=tokenizer, assignment="fixed")
    main.corpus = tiny_corpus(main, [], noise=40)  # the "corpus" method's source
    return bench.bench_models(main, fixed)


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "question.jsonl"
    rows = [
        {"question_id": 10 * c + i, "category": category, "turns": [f"say {category} {i}"]}
        for c, category in enumerate(CATEGORIES)
        for i in range(2)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def run_bench(models, questions, out, *extra):
    args = bench.parse_args(
        ["--limit", "1", "--max-new-tokens", "12", "--questions", str(questions), "--out", str(out)]
        + list(extra)
    )
    return bench.run(args, models)


def test_limit_one_gives_well_formed_results_for_every_method(models, questions, tmp_path):
    result = run_bench(models, questions, tmp_path / "results", "--methods", "all")
    saved = json.loads(Path(result["files"][0]).read_text())
    assert saved["prompts"] == len(CATEGORIES)  # --limit is per category
    assert {r["category"] for r in saved["records"]} == set(CATEGORIES)
    assert set(saved["methods"]) == set(bench.METHOD_NAMES)
    assert saved["lossless_violations"] == []
    for name in bench.METHOD_NAMES:
        summary = saved["summary"][name]
        assert set(summary["categories"]) == set(CATEGORIES)
        overall = summary["overall"]
        assert overall["prompts"] == len(CATEGORIES)
        assert overall["tokens_per_pass"] > 0 and overall["tokens_per_second"] > 0
        assert overall["peak_memory_mb"] > 0
        if bench.METHODS[bench.METHOD_NAMES.index(name)].lossless:
            assert overall["bleu"] == 100.0 and overall["rouge_l"] == 1.0
    # the baseline makes one backbone pass per token (the prefill yields the first)
    base = saved["summary"]["baseline"]["overall"]
    assert base["tokens_per_pass"] == pytest.approx(1.0, abs=0.01)
    assert isinstance(saved["summary"]["trace_overhead_median"], float)
    default = run_bench(models, questions, tmp_path / "default")
    assert set(json.loads(Path(default["files"][0]).read_text())["methods"]) == set(
        bench.DEFAULT_METHODS
    )
    assert "cpu" in saved["machine"] and "torch" in saved["machine"]
    # the machine's cost curve, measured by this run, over 1..K+10+1 new tokens
    k = models["default"].config.num_slots
    curve = saved["cost_curve"]
    assert len(curve["ratios"]) == k + 11 and curve["ratios"][0] == 1.0
    assert curve["one_token_ms"] > 0 and all(r > 0 for r in curve["ratios"])
    assert {"head", "plan", "forward", "verify"} <= set(saved["step_phases"])
    table = Path(result["files"][1]).read_text()
    assert all(name in table for name in saved["methods"])
    assert f"n={k + 11} " in table


def test_method_subset_keeps_the_baseline(models, questions, tmp_path):
    result = run_bench(
        models,
        questions,
        tmp_path / "r",
        "--methods",
        "shuffle-identity",
        "--categories",
        "writing",
    )
    assert set(result["methods"]) == {"baseline", "shuffle-identity"}
    assert result["prompts"] == 1


def test_losslessness_check_fires_on_a_different_output(models, questions, tmp_path):
    result = run_bench(models, questions, tmp_path / "r", "--methods", "shuffle-rotary")
    records = [bench.PromptRecord.from_dict(r) for r in result["records"]]
    assert [r.to_dict() for r in records] == result["records"]  # the JSON round trip
    methods = [m for m in bench.METHODS if m.name in result["methods"]]
    assert bench.check_lossless(records, methods) == []
    tampered = [bench.PromptRecord.from_dict(r) for r in result["records"]]
    ids = tampered[0].runs["shuffle-rotary"].ids
    ids[3] = (ids[3] + 1) % 64
    problems = bench.check_lossless(tampered, methods)
    assert len(problems) == 1 and "shuffle-rotary" in problems[0] and "token 3" in problems[0]
    # an unverified method may differ: no violation
    pure = [m for m in bench.METHODS if m.name == "pure@0.5"]
    baseline = tampered[0].runs["baseline"]
    tampered[0].runs["pure@0.5"] = bench.MethodRun([5, 6], baseline.seconds, baseline.passes, 0)
    assert bench.check_lossless(tampered, [*methods, *pure]) == problems


def test_half_precision_checks_our_methods_against_our_ordinary_decoding_not_hfs():
    """Against ShuffleLM's own ordinary decoding (half precision), a verified method that
    leaves it beyond the bound is a violation; Hugging Face's own greedy leaving it is not."""
    diverged = bench.MethodRun([1, 2, 4], 1.0, 3, 0, bench.Divergence(2, [4, 3], 0.5))
    ordinary = bench.MethodRun([1, 2, 3], 1.0, 3, 0)
    runs = {"ordinary": ordinary, "baseline": diverged, "shufflelm": diverged}
    record = bench.PromptRecord(7, "writing", 5, None, runs)
    methods = [m for m in bench.METHODS if m.name in record.runs]
    problems = bench.check_lossless([record], methods, reference="ordinary", bound=1e-3)
    assert len(problems) == 1 and problems[0].startswith("shufflelm differs from ordinary")
    assert bench.check_lossless([record], methods, reference="ordinary", bound=0.8) == []


def test_run_raises_when_a_verified_method_is_not_lossless(
    models, questions, tmp_path, monkeypatch
):
    original = bench.run_method

    def corrupt(method, models, prompt_ids, max_new_tokens):
        out = original(method, models, prompt_ids, max_new_tokens)
        if method.name == "shuffle-hungarian" and max_new_tokens == 12:
            out.ids = [*out.ids[:-1], (out.ids[-1] + 1) % 64]
        return out

    monkeypatch.setattr(bench, "run_method", corrupt)
    with pytest.raises(bench.LosslessnessError, match="shuffle-hungarian"):
        run_bench(models, questions, tmp_path / "r", "--methods", "shuffle-hungarian")
    # the results were still written, listing the violation
    written = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    assert written["lossless_violations"]


def test_questions_come_category_by_category_and_max_minutes_stops_cleanly(
    models, questions, tmp_path
):
    ordered = bench.load_questions(questions, None, None)
    assert [q["category"] for q in ordered] == [*CATEGORIES, *CATEGORIES]
    result = run_bench(
        models,
        questions,
        tmp_path / "r",
        "--methods",
        "shuffle-rotary",
        "--limit",
        "2",
        "--max-minutes",
        "0",
    )
    # the first prompt always runs; then the budget is spent and the summary is written
    assert result["prompts"] == 1 and result["settings"]["stopped_early"] is True
    assert "stopped by --max-minutes" in Path(result["files"][1]).read_text()


def test_resume_continues_a_named_run_and_refuses_another_head(models, questions, tmp_path):
    out = tmp_path / "r"
    first = run_bench(
        models, questions, out, "--methods", "shuffle-rotary", "--name", "run", "--max-minutes", "0"
    )
    assert first["prompts"] == 1 and first["files"][0].endswith("run.json")
    resumed = run_bench(
        models, questions, out, "--methods", "shuffle-rotary", "--name", "run", "--resume"
    )
    assert resumed["prompts"] == len(CATEGORIES)
    assert [r["question_id"] for r in resumed["records"]][0] == first["records"][0]["question_id"]
    assert first["settings"]["resumed_prompts"] == 0
    assert resumed["settings"]["resumed_prompts"] == 1
    assert resumed["settings"]["stopped_early"] is False
    assert "1 of them were carried over by --resume" in Path(resumed["files"][1]).read_text()
    # a fresh clone has only the committed JSON: resume continues from its records
    (out / "run.partial.jsonl").unlink()
    again = run_bench(
        models, questions, out, "--methods", "shuffle-rotary", "--name", "run", "--resume"
    )
    assert again["records"] == resumed["records"]
    assert again["settings"]["resumed_prompts"] == len(CATEGORIES)  # nothing left to run
    assert len((out / "run.partial.jsonl").read_text().splitlines()) == len(CATEGORIES)
    other = dict(models, default=models["fixed"])  # a different head under the same name
    with pytest.raises(bench.ResumeError, match="different head"):
        run_bench(other, questions, out, "--methods", "shuffle-rotary", "--name", "run", "--resume")


def test_dtypes_compares_one_methods_answers_between_two_runs():
    """bench.dtypes: identical answers, where different ones part, ROUGE-L, per category."""
    from shuffle_model.bench import dtypes
    from shuffle_model.bench.records import MethodRun, speedup

    def result(answers, dtype):
        records = [
            {"question_id": qid, "category": cat, "runs": {"ordinary": {"ids": ids}}}
            for qid, (cat, ids) in answers.items()
        ]
        model = {"dtype": dtype}
        return {"date": "today", "model": model, "prompts": len(records), "records": records}

    bf16 = result({1: ("qa", [5, 6, 7, 8]), 2: ("qa", [5, 6]), 3: ("math", [9, 9])}, "bf16")
    fp32 = result({1: ("qa", [5, 6, 7, 8]), 2: ("qa", [5, 7]), 4: ("math", [1])}, "fp32")
    comparison = dtypes.compare(bf16, fp32, method="ordinary", tokenizer=char_tokenizer())
    assert comparison["overall"]["prompts"] == 2  # only the prompts both answered
    assert comparison["overall"]["identical"] == 1
    assert comparison["overall"]["first_difference_median"] == 1
    assert comparison["categories"]["qa"]["rouge_l"] < 1.0
    assert dtypes.first_difference([1, 2], [1, 2, 3]) == 2  # a shorter answer parts where it ends
    assert "| all (2) | 1 | 1 |" in dtypes.markdown(comparison)
    # the benchmark's speed-up compares tokens per second: texts of other lengths stay fair
    base, fast = MethodRun([1] * 100, 10.0, 100, 0), MethodRun([1] * 50, 2.5, 20, 0)
    assert speedup(base, fast) == pytest.approx(2.0)
