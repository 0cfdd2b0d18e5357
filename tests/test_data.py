"""The distillation data: the continuous decoding pool, the committed shard format and its
loader, the prompt sources (Magpie filter, package documentation), the held-out overlap check,
the distill command end to end on a tiny model, and the shipped shards themselves."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from shuffle_model.training.continuous import Job, generate_stream, prefill_groups
from shuffle_model.training.distill import Example, load_examples, save_shard, shard_paths
from shuffle_model.training.magpie import TurnFilter, repeated_share
from shuffle_model.training.overlap import (
    RUN,
    SPEC_BENCH,
    banned_ngrams,
    question_texts,
    shares_run,
)
from shuffle_model.training.shards import next_shard, read_npz_shard, summary, write_npz_shard
from shuffle_model.training.sources import file_items, is_permissive
from tests.tiny import tiny_backbone

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "distill"
SPEC_BENCH_FILE = (REPO / SPEC_BENCH).resolve()


def queue_source(jobs: list[Job]):
    """A job source over a list: hands out up to n jobs per call."""
    queue = list(jobs)

    def next_jobs(n: int) -> list[Job]:
        taken = queue[:n]
        del queue[:n]
        return taken

    return next_jobs


def reference_answer(model, prompt: list[int], budget: int) -> list[int]:
    """`generate` alone on one prompt (greedy), cut after the first EOS."""
    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=budget,
        do_sample=False,
        pad_token_id=0,
    )[0, len(prompt) :].tolist()
    return out[: out.index(2) + 1] if 2 in out else out


@pytest.mark.parametrize("waste", [0.0, 0.6])
def test_pool_gives_the_greedy_answers_of_generate(waste):
    """Rows of different prompt lengths and budgets, refilled one by one into a small buffer
    (so that columns are dropped and shifted), give exactly what `generate` gives per prompt."""
    model = tiny_backbone(seed=3)
    rng = random.Random(1)
    jobs = [
        Job(
            str(i),
            [rng.randrange(3, 60) for _ in range(rng.randint(1, 40))],
            False,
            rng.randint(1, 40),
        )
        for i in range(14)
    ]
    got = {
        f.job.key: f.answer_ids
        for f in generate_stream(
            model, queue_source(jobs), rows=3, refill_at=1, capacity=96, prefill_waste=waste
        )
    }
    assert sorted(got, key=int) == [job.key for job in jobs]
    stopped_early = 0
    for job in jobs:
        expected = reference_answer(model, job.prompt_ids, job.max_new_tokens)
        assert got[job.key] == expected, job.key
        stopped_early += len(expected) < job.max_new_tokens
    assert stopped_early, "no answer ended at EOS: the test would not check stopping"


def test_pool_sampled_rows_keep_budgets_and_repeat_with_the_seed():
    model = tiny_backbone(seed=4)
    jobs = [
        Job(str(i), [5 + i, 9, 11 + i], True, 5 + 3 * i, temperature=1.0, top_p=0.95)
        for i in range(8)
    ]

    def run(seed):
        stream = generate_stream(model, queue_source(jobs), rows=4, refill_at=2, seed=seed)
        return {f.job.key: f.answer_ids for f in stream}

    first, again, other = run(0), run(0), run(1)
    assert first == again
    assert first != other
    for job in jobs:
        answer = first[job.key]
        assert 1 <= len(answer) <= job.max_new_tokens
        assert len(answer) == job.max_new_tokens or answer[-1] == 2
        assert 2 not in answer[:-1]


def test_pool_takes_jobs_that_arrive_while_it_decodes():
    """A source with nothing ready for a while (Magpie turns in flight) is asked again; the
    pool shrinks while idle and grows back when jobs come."""
    model = tiny_backbone(seed=5)
    later = [Job(f"late{i}", [7, 8, 9 + i], False, 6) for i in range(5)]
    state = {"calls": 0, "handed": []}

    def next_jobs(n):
        state["calls"] += 1
        jobs = []
        if state["calls"] == 1:
            jobs = [Job("first", [3, 4, 5], False, 30), Job("second", [6], False, 2)]
        elif state["calls"] == 4:
            jobs = later[:n]
        state["handed"] += [job.key for job in jobs]
        return jobs

    keys = [f.job.key for f in generate_stream(model, next_jobs, rows=4, refill_at=1)]
    assert sorted(keys) == sorted(state["handed"])
    assert len(state["handed"]) > 3 and state["calls"] > 4


def test_prefill_groups_bound_the_padding():
    jobs = [Job(str(n), [1] * n, False, 1) for n in (10, 100, 11, 95, 12, 300)]
    for waste in (0.0, 0.1, 0.5):
        groups = prefill_groups(jobs, waste=waste)
        assert sorted(j.key for g in groups for j in g) == sorted(j.key for j in jobs)
        for group in groups:
            padded = len(group) * max(len(j.prompt_ids) for j in group)
            assert padded - sum(len(j.prompt_ids) for j in group) <= waste * padded
    assert len(prefill_groups(jobs, waste=0.0)) == 6
    assert len(prefill_groups(jobs, waste=0.1)) == 3


def test_npz_shards_round_trip_append_only_and_load_beside_old_ones(tmp_path):
    records = [
        {
            "prompt_ids": [1, 2, 3],
            "answer_ids": [40000, 5, 2],
            "key": "a",
            "source": "docs",
            "category": "qa",
            "sampled": False,
            "package": "numpy",
            "licence": "BSD-3-Clause",
        },
        {
            "prompt_ids": [7] * 9,
            "answer_ids": [],
            "key": "b",
            "source": "magpie",
            "category": "general",
            "sampled": True,
        },
    ]
    path = next_shard(tmp_path, "s3")
    assert path.name == "s3-00000.npz"
    write_npz_shard(path, records, backbone="tiny", settings={"seed": 3})
    assert next_shard(tmp_path, "s3").name == "s3-00001.npz"
    assert next_shard(tmp_path, "s30").name == "s30-00000.npz"
    with pytest.raises(FileExistsError):
        write_npz_shard(path, records, backbone="tiny", settings={})
    meta, back = read_npz_shard(path)
    assert meta["backbone"] == "tiny" and meta["settings"] == {"seed": 3}
    assert back == records
    import numpy as np

    with np.load(path) as data:
        assert data["tokens"].dtype == np.uint16
    save_shard(tmp_path / "s1-00000.safetensors", [Example("old", [9, 9], [8, 2], True)])
    assert [p.name for p in shard_paths(tmp_path)] == ["s1-00000.safetensors", "s3-00000.npz"]
    examples = load_examples(tmp_path)
    assert [(e.category, e.source, e.key) for e in examples] == [
        ("old", "templates", ""),
        ("qa", "docs", "a"),
        ("general", "magpie", "b"),
    ]
    assert examples[1].answer_ids == [40000, 5, 2] and examples[1].info["licence"]
    stats = summary(tmp_path)
    assert stats["examples"] == 2 and stats["sources"] == {"docs": 1, "magpie": 1}


def test_shared_runs_are_found_at_eight_tokens_not_seven():
    banned = {tuple(range(10, 10 + RUN))}
    assert shares_run([1, 2, *range(10, 10 + RUN), 3], banned)
    assert not shares_run([1, 2, *range(10, 10 + RUN - 1), 3], banned)
    assert not shares_run(list(range(10, 10 + RUN - 1)), banned)


def test_magpie_filter_keeps_requests_and_drops_the_rest():
    turns = TurnFilter()
    assert turns.keep("How do I keep basil alive on a windowsill in winter?", True)
    assert not turns.keep("How do I keep basil alive on a windowsill in the winter?", True)
    assert not turns.keep("What are good books for a long flight to Japan", False)  # unfinished
    assert not turns.keep("Hello!", True)
    assert not turns.keep("The the sun sets. The the sun sets. The the sun sets. Ok.", True)
    assert not turns.keep("The weather was lovely today and the birds sang in the park.", True)
    assert not turns.keep("Can you help me?\nUser: yes\nAssistant: fine", True)
    assert not turns.keep("Можете ли вы объяснить, как работает фотосинтез растений?", True)
    assert turns.keep("Write a short poem about autumn leaves for my daughter's class.", True)
    assert turns.rejected == {
        "near-duplicate": 1,
        "unfinished": 1,
        "too short": 1,
        "repetitive": 1,
        "no question or request": 1,
        "writes another turn": 1,
        "not plain text": 1,
    }
    assert repeated_share(["a", "b", "c", "a", "b", "c"]) == 0.25


def test_package_files_give_documentation_and_code_without_docstrings(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    doc = "Add two numbers and return their sum, as the name says. " * 5
    (root / "maths.py").write_text(
        f'"""{doc}"""\n\n\ndef add(a, b):\n    """{doc}"""\n    total = a + b\n'
        "    if total > 10:\n        total -= 1\n    # keep the result\n    print(total)\n"
        "    return total\n\n\ndef _hidden(x):\n    return x\n"
    )
    items = file_items("pkg", "MIT", root, root / "maths.py")
    assert [(i.name, i.kind) for i in items] == [
        ("pkg.maths", "module"),
        ("pkg.maths.add", "function"),
    ]
    code = items[1].code
    assert code.startswith("def add(a, b):") and "Add two numbers" not in code
    assert "return total" in code and items[1].text.startswith("Add two numbers")
    assert is_permissive("BSD-3-Clause") and is_permissive("Apache 2.0 License")
    assert (
        not is_permissive("MPL-2.0 AND MIT") and not is_permissive("") and not is_permissive("GPL")
    )


CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def saved_tiny_backbone(directory: Path):
    """A tiny Llama and a character tokenizer with a chat template, saved for distill.main."""
    from transformers import LlamaForCausalLM

    from shuffle_model.model.tiny import char_tokenizer, tiny_llama_config

    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(directory)
    tokenizer = char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return directory, tokenizer


def test_distill_command_writes_resumable_shards_with_the_mix(tmp_path, monkeypatch):
    """`python -m shuffle_model.cli.distill` on a tiny backbone: shards land with every source,
    no prompt shares a run with the held-out questions, and a rerun adds new answers only."""
    from shuffle_model.cli import distill
    from shuffle_model.training import sources

    backbone, tokenizer = saved_tiny_backbone(tmp_path / "backbone")
    items = [
        sources.DocItem("pkg", "MIT", f"pkg.f{i}", "function", "Returns the input. " * 4, "")
        for i in range(3)
    ]
    monkeypatch.setattr(sources, "collect_items", lambda seed: items)
    from shuffle_model.training.prompts import generate_prompts

    first_template = generate_prompts(1, seed=5)[0]["text"]
    held_out = tmp_path / "questions.jsonl"
    held_out.write_text(json.dumps({"turns": [first_template]}) + "\n")
    out = tmp_path / "data"
    common = ["--out", str(out), "--backbone", str(backbone), "--seed", "5", "--rows", "6"]
    common += ["--max-new-tokens", "70", "--shard-size", "5", "--exclude", str(held_out)]
    common += ["--mix", "templates=0.4,passages=0.1,magpie=0.3,docs=0.2", "--magpie-tokens", "20"]
    distill.main([*common, "--answers", "12"])
    examples = load_examples(out)
    assert len(examples) == 12
    assert [p.name for p in shard_paths(out)] == ["s5-00000.npz", "s5-00001.npz", "s5-00002.npz"]
    banned = banned_ngrams(tokenizer, [first_template])
    assert not any(shares_run(e.prompt_ids, banned) for e in examples)
    assert {e.source for e in examples} >= {"templates", "docs"}
    for e in examples:
        assert e.key and e.category and 1 <= len(e.answer_ids) <= 70
        assert tokenizer.decode(e.prompt_ids).startswith("<s>user\n")
    distill.main([*common, "--answers", "16"])
    again = load_examples(out)
    assert len(again) == 16
    assert len({e.key for e in again}) == 16  # the rerun answered new prompts only
    assert again[:12] == examples


def test_distill_recounts_a_folder_that_another_process_fills(tmp_path, monkeypatch):
    """When a shard lands, the process counts the folder again: answers another process wrote
    meanwhile count towards --answers, so the folder overshoots by at most the jobs in flight
    (before the recount: --answers plus everything the other process wrote)."""
    from shuffle_model.cli import distill
    from shuffle_model.training.shards import write_npz_shard

    backbone, tokenizer = saved_tiny_backbone(tmp_path / "backbone")
    out, rows, foreign = tmp_path / "data", 3, 10
    flush = distill.ShardWriter.flush

    def flush_beside_another_process(writer):
        if not writer.written:  # the other process's shard lands just before our first one
            records = [
                {
                    "key": f"tpl:99:{i}",
                    "source": "templates",
                    "category": "other",
                    "sampled": False,
                    "prompt_ids": [5, 6],
                    "answer_ids": [7, 2],
                }
                for i in range(foreign)
            ]
            write_npz_shard(out / "s9-00000.npz", records, backbone="tiny", settings={})
        flush(writer)

    monkeypatch.setattr(distill.ShardWriter, "flush", flush_beside_another_process)
    distill.main(
        ["--out", str(out), "--backbone", str(backbone), "--seed", "5", "--rows", str(rows)]
        + ["--max-new-tokens", "20", "--shard-size", "5", "--mix", "templates=1"]
        + ["--no-exclude", "--answers", "20"]
    )
    total = len(load_examples(out))
    assert 20 <= total < 20 + rows, total  # without the recount: 20 of ours + 10 = 30


def shipped_shards() -> list[Path]:
    return sorted(DATA.glob("*.npz"))


@pytest.mark.skipif(not shipped_shards(), reason="no shards in data/distill yet")
def test_shipped_shards_are_small_tagged_and_permissive():
    stats = summary(DATA)
    assert stats["bytes"] <= 25e6
    keys = set()
    for path in shipped_shards():
        meta, records = read_npz_shard(path)
        assert meta["settings"]["max_new_tokens"] <= 256
        for r in records:
            assert r["source"] in {"templates", "passages", "magpie", "docs", "code"}
            assert r["category"] and r["key"] not in keys
            keys.add(r["key"])
            assert 0 < len(r["answer_ids"]) <= meta["settings"]["max_new_tokens"]
            if r["source"] in ("docs", "code"):
                assert r["package"] and is_permissive(r["licence"]), r["key"]
    assert stats["examples"] == len(keys)


@pytest.mark.skipif(not shipped_shards(), reason="no shards in data/distill yet")
def test_no_shipped_prompt_shares_eight_tokens_with_a_spec_bench_question():
    from transformers import AutoTokenizer

    from shuffle_model.model.backbone import gguf_cache_dir, packaged_gguf

    gguf = packaged_gguf()
    if gguf is None or not (gguf_cache_dir(gguf) / "tokenizer.json").is_file():
        pytest.skip("the default backbone's tokenizer is not cached here")
    tokenizer = AutoTokenizer.from_pretrained(gguf_cache_dir(gguf))
    questions = question_texts(SPEC_BENCH_FILE)
    assert len(questions) > 480  # every turn of the 480 questions
    banned = banned_ngrams(tokenizer, questions)
    examples = load_examples(DATA)
    assert examples
    hits = [e.key for e in examples if shares_run(e.prompt_ids, banned)]
    assert not hits, f"{len(hits)} prompts share an 8-token run with Spec-Bench: {hits[:5]}"


def test_features_are_cached_from_npz_shards_as_from_old_ones(tmp_path):
    """The training features of a committed .npz shard equal those of the same examples in an
    old safetensors shard, and land in the git-ignored features/ cache beside it."""
    from shuffle_model.training.features import FIELDS, load_features
    from tests.tiny import tiny_mixer

    mixer = tiny_mixer(tiny_backbone(seed=0))
    rng = random.Random(2)
    examples = [
        Example(
            "c",
            [rng.randrange(3, 60) for _ in range(6)],
            [rng.randrange(3, 60) for _ in range(9)],
            i % 2 == 0,
        )
        for i in range(5)
    ]
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    save_shard(old / "s1-00000.safetensors", examples)
    records = [
        {
            "prompt_ids": e.prompt_ids,
            "answer_ids": e.answer_ids,
            "key": str(i),
            "source": "templates",
            "category": e.category,
            "sampled": e.sampled,
        }
        for i, e in enumerate(examples)
    ]
    write_npz_shard(new / "s1-00000.npz", records, backbone="tiny", settings={})
    _, expected, _ = load_features(mixer, shard_paths(old), "tiny")
    got_examples, got, _ = load_features(mixer, shard_paths(new), "tiny")
    assert [e.answer_ids for e in got_examples] == [e.answer_ids for e in examples]
    for name in FIELDS:
        assert torch.equal(getattr(got, name), getattr(expected, name)), name
    assert list((new / "features").glob("s1-00000-*.safetensors"))


def test_rate_meter_does_not_count_a_stopped_process(monkeypatch):
    from shuffle_model.training import distill

    clock = iter([0.0, 10.0, 20.0, 3620.0, 3630.0])
    monkeypatch.setattr(distill.time, "perf_counter", lambda: next(clock))
    meter = distill.RateMeter(pause=120)
    for tokens in (100, 50, 100, 100):  # 10 s, 10 s, an hour stopped, 10 s
        meter.tick(tokens, answer=tokens == 100)
    assert meter.active == 10 + 10 + 120 + 10
    assert meter.answers == 3 and meter.tokens == 350
    assert meter.describe() == f"{3 * 3600 / 150:,.0f} answers/h, {350 / 150:.0f} tok/s"


def test_shard_writer_drops_answers_another_process_wrote_meanwhile(tmp_path):
    """Two distill processes on one folder (one thread each) may answer the same docs prompt:
    a shard never repeats a key that is already in the folder when it is written."""
    from shuffle_model.training.distill import ShardWriter, existing
    from shuffle_model.training.shards import read_npz_shard, write_npz_shard

    def record(key):
        return {
            "key": key,
            "source": "docs",
            "category": "docs/qa",
            "sampled": False,
            "prompt_ids": [5, 6],
            "answer_ids": [7, 2],
            "package": "numpy",
            "licence": "BSD",
        }

    writer = ShardWriter(tmp_path, "s2", 10, backbone="tiny", settings={"max_new_tokens": 8})
    writer.add(record("docs:a"))
    writer.add(record("docs:b"))
    write_npz_shard(tmp_path / "s1-00000.npz", [record("docs:a")], backbone="tiny", settings={})
    writer.flush()
    assert [r["key"] for r in read_npz_shard(writer.written[0])[1]] == ["docs:b"]
    assert existing(tmp_path)[0] == {"docs:a", "docs:b"}
