"""Self-distillation: planning which prompts to answer, the shard writer and the rate meter;
the examples and their shards (the command: cli/distill.py)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..model.chat import encode_prompt
from . import sources  # its collect_items is looked up at each call (tests stand in for it)
from .continuous import Finished, Job
from .magpie import SYSTEM_PROMPTS, TurnFilter, user_prefix
from .overlap import shares_run
from .prompts import generate_prompts, passage_prompts
from .shards import (
    next_shard,
    npz_shards,
    read_npz_shard,
    shard_keys,
    update_card,
    write_npz_shard,
)

DEFAULT_OUT = Path("data/distill")
DEFAULT_MIX = "templates=0.3,passages=0.1,magpie=0.3,docs=0.3"
MAGPIE_FIELDS = ["general"] * 3 + [
    "science",
    "coding",
    "humanities",
    "writing",
    "math",
    "advice",
    "text tasks",
    "roleplay",
]
assert len(MAGPIE_FIELDS) == len(SYSTEM_PROMPTS)


@dataclass
class Example:
    category: str  # the kind of request (qa, writing, summarization, code_explanation, ...)
    prompt_ids: list[int]  # the chat-templated prompt
    answer_ids: list[int]  # the backbone's answer, EOS included when it stopped
    sampled: bool  # True: temperature sampling; False: greedy
    source: str = "templates"  # where the prompt came from (templates, passages, magpie, ...)
    key: str = ""  # the prompt's unique name ("" in the old shards)
    info: dict = field(default_factory=dict)  # more about the prompt (package, licence)


def save_shard(path: Path, examples: list[Example]) -> None:
    """An old-format (safetensors) shard; kept for tests and old caches."""
    tokens, offsets, prompt_lengths = [], [0], []
    for example in examples:
        sequence = example.prompt_ids + example.answer_ids
        tokens += sequence
        offsets.append(len(tokens))
        prompt_lengths.append(len(example.prompt_ids))
    meta = [{"category": e.category, "sampled": e.sampled} for e in examples]
    partial = path.with_suffix(".partial")
    save_file(
        {
            "tokens": torch.tensor(tokens, dtype=torch.int32),
            "offsets": torch.tensor(offsets, dtype=torch.int64),
            "prompt_lengths": torch.tensor(prompt_lengths, dtype=torch.int32),
        },
        str(partial),
        metadata={"examples": json.dumps(meta)},
    )
    partial.replace(path)


def load_shard(path: Path) -> list[Example]:
    """The examples of one shard: the committed .npz format or the old safetensors one."""
    if path.suffix == ".npz":
        return [_example(record) for record in read_npz_shard(path)[1]]
    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["examples"])
    tensors = load_file(str(path))
    tokens, offsets = tensors["tokens"].tolist(), tensors["offsets"].tolist()
    examples = []
    for i, info in enumerate(meta):
        sequence = tokens[offsets[i] : offsets[i + 1]]
        cut = int(tensors["prompt_lengths"][i])
        examples.append(Example(info["category"], sequence[:cut], sequence[cut:], info["sampled"]))
    return examples


def _example(record: dict) -> Example:
    rest = ("prompt_ids", "answer_ids", "category", "sampled", "source", "key")
    return Example(
        record["category"],
        record["prompt_ids"],
        record["answer_ids"],
        bool(record["sampled"]),
        record.get("source", "templates"),
        record.get("key", ""),
        {k: v for k, v in record.items() if k not in rest},
    )


def shard_paths(directories: Path | list[Path]) -> list[Path]:
    """The data shards of one or more directories (old safetensors ones, then .npz), in a
    stable order."""
    if isinstance(directories, Path):
        directories = [directories]
    paths = []
    for directory in directories:
        paths += sorted(directory.glob("s?-?????.safetensors")) + npz_shards(directory)
    return paths


def load_examples(directories: Path | list[Path]) -> list[Example]:
    """Every example of the shards in `directories` (e.g. data/distill, cache/distill)."""
    return [e for shard in shard_paths(directories) for e in load_shard(shard)]


@torch.no_grad()
def answer_batch(model, tokenizer, prompts: list[list[int]], *, max_new_tokens, sampled, seed):
    """Answers of the backbone to a batch of prompt id lists (left-padded `generate`)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        max_new_tokens=max_new_tokens,
        do_sample=sampled,
        temperature=0.7 if sampled else None,
        top_p=0.9 if sampled else None,
        top_k=None,
        pad_token_id=pad,
    )
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or [])
    answers = []
    for row in out[:, width:].tolist():
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        answers.append(row if stop is None else row[: stop + 1])
    return answers


def parse_mix(text: str) -> dict[str, float]:
    """'templates=0.3,magpie=0.7' -> normalised shares."""
    shares = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        shares[name.strip()] = float(value)
    unknown = set(shares) - {"templates", "passages", "magpie", "docs"}
    if unknown or sum(shares.values()) <= 0:
        raise ValueError(f"bad --mix {text!r}: sources are templates, passages, magpie, docs")
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items() if v > 0}


def source_group(source: str) -> str:
    """The --mix share a prompt source counts towards (docs and code share one)."""
    return "docs" if source == "code" else source


class Planner:
    """The job source of the decoding pool: hands out answer jobs so that the answers follow
    the mix, keeps Magpie turn sampling ahead of demand, turns finished greedy answers into
    passage prompts, and drops prompts that are too long, already answered or share a run with
    a held-out question."""

    def __init__(self, tokenizer, args, *, done: set[str], counts: Counter, banned: set):
        self.tokenizer, self.args = tokenizer, args
        self.done, self.banned = done, banned
        self.shares = parse_mix(args.mix)
        self.counts = Counter({s: counts.get(s, 0) for s in self.shares})  # answers per share
        self.issued = 0  # answer jobs handed out this session
        self.answered = 0  # of those, finished (the rest are in flight)
        self.wanted = max(0, args.answers - sum(counts.values()))  # answer jobs to hand out
        self.queues: dict[str, deque] = {s: deque() for s in self.shares}
        self.dropped: Counter = Counter()  # reason -> prompts dropped
        self.turns = TurnFilter()
        self.turns_in_flight = 0
        self.turn_number = 0
        self.prefixes = [user_prefix(tokenizer, system) for system in SYSTEM_PROMPTS]
        self.rng = random.Random(f"{args.seed}-planner")
        budget = 2 * args.answers  # prompts offered per share: room for drops
        if "templates" in self.shares:
            count = math.ceil(budget * self.shares["templates"])
            for i, prompt in enumerate(generate_prompts(count, seed=args.seed)):
                self.offer({**prompt, "key": f"tpl:{args.seed}:{i}", "source": "templates"})
        if "docs" in self.shares:
            items = sources.collect_items(seed=args.seed)
            for prompt in sources.doc_prompts(
                items, math.ceil(budget * self.shares["docs"]), seed=args.seed
            ):
                self.offer(prompt)

    def aim_at(self, *, folder_answers: int, buffered: int) -> None:
        """Recount after a shard landed: other processes may fill the same folder, so hand
        out only what it still lacks once this process's buffered and in-flight answers land
        (the folder then overshoots --answers by at most the jobs in flight)."""
        in_flight = self.issued - self.answered
        lacking = self.args.answers - folder_answers - buffered - in_flight
        self.wanted = self.issued + max(0, lacking)

    def offer(self, prompt: dict) -> None:
        """Queue a prompt {key, source, category, text, ...} unless it was answered before."""
        if prompt["key"] in self.done:
            self.dropped["answered before"] += 1
        else:
            self.queues[source_group(prompt["source"])].append(prompt)

    def next_jobs(self, n: int) -> list[Job]:
        """Up to n jobs: each goes to the share furthest behind the mix; when that is Magpie
        and no kept turn waits, a user turn is sampled instead (a few at a time)."""
        jobs: list[Job] = []
        while len(jobs) < n and self.issued < self.wanted:
            ready = [s for s in self.shares if self.queues[s] or self.turn_wanted(s)]
            if not ready:
                break
            group = min(ready, key=lambda s: (self.counts[s] + 1) / self.shares[s])
            if not self.queues[group]:
                jobs.append(self.turn_job())
                continue
            job = self.answer_job(self.queues[group].popleft())
            if job is not None:
                self.counts[group] += 1
                self.issued += 1
                jobs.append(job)
        return jobs

    def turn_wanted(self, group: str) -> bool:
        """Whether a Magpie turn may be sampled now: a quarter of the rows at most, and not
        once 200 turns have given fewer than 5 % keepers (a backbone that cannot do it)."""
        sampled = self.turn_number - self.turns_in_flight
        hopeless = sampled >= 200 and len(self.turns.kept) < 0.05 * sampled
        return (
            group == "magpie"
            and not hopeless
            and self.turns_in_flight < max(1, self.args.rows // 4)
        )

    def answer_job(self, prompt: dict) -> Job | None:
        ids = encode_prompt(self.tokenizer, prompt["text"])
        if len(ids) > self.args.max_prompt_tokens:
            self.dropped["prompt too long"] += 1
            return None
        if shares_run(ids, self.banned):
            self.dropped["shares 8 tokens with a held-out question"] += 1
            return None
        sampled = random.Random(f"{self.args.seed}:{prompt['key']}").random()
        sampled = sampled < self.args.sampled_fraction
        payload = {k: v for k, v in prompt.items() if k != "text"}
        return Job(prompt["key"], ids, sampled, self.args.max_new_tokens, payload)

    def turn_job(self) -> Job:
        """Sample a user turn from the template's user prefix (one of the system messages)."""
        self.turn_number += 1
        self.turns_in_flight += 1
        field_index = self.rng.randrange(len(self.prefixes))
        return Job(
            f"turn:{self.turn_number}",
            self.prefixes[field_index],
            True,
            self.args.magpie_tokens,
            {"turn": field_index},
            temperature=self.args.magpie_temperature,
            top_p=self.args.magpie_top_p,
        )

    def finished(self, done: Finished) -> dict | None:
        """Take a finished job: a Magpie turn is filtered and queued; an answer becomes a
        record (and, when greedy and long enough, a passage prompt)."""
        job, answer = done.job, done.answer_ids
        if "turn" in job.payload:
            self.turns_in_flight -= 1
            ended = bool(answer) and answer[-1] == self.tokenizer.eos_token_id
            text = self.tokenizer.decode(answer, skip_special_tokens=True).strip()
            if self.turns.keep(text, ended):
                key = "magpie:" + hashlib.sha1(text.encode()).hexdigest()[:16]
                field_name = MAGPIE_FIELDS[job.payload["turn"]]
                self.offer({"key": key, "source": "magpie", "category": field_name, "text": text})
            return None
        self.answered += 1
        record = {**job.payload, "prompt_ids": job.prompt_ids, "answer_ids": answer}
        record["sampled"] = job.sampled
        if not job.sampled and len(answer) >= 60 and job.payload["source"] != "passages":
            self.add_passage(job.key, answer)
        return record

    def add_passage(self, key: str, answer: list[int]) -> None:
        if "passages" not in self.shares:
            return
        text = self.tokenizer.decode(answer, skip_special_tokens=True)
        seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        prompt = next(passage_prompts([text], seed=seed))
        self.offer({**prompt, "key": f"passage:{key}", "source": "passages"})


def existing(directory: Path) -> tuple[set[str], Counter, list[list[int]]]:
    """Keys answered in a folder's shards, answers per --mix share, and the Magpie prompts."""
    keys: set[str] = set()
    counts: Counter = Counter()
    magpie = []
    for path in npz_shards(directory):
        for record in read_npz_shard(path)[1]:
            keys.add(record["key"])
            counts[source_group(record["source"])] += 1
            if record["source"] == "magpie":
                magpie.append(record["prompt_ids"])
    return keys, counts, magpie


class ShardWriter:
    """Collects records and writes a shard every `size` of them (and the rest at the end)."""

    def __init__(self, directory: Path, tag: str, size: int, *, backbone: str, settings: dict):
        self.directory, self.tag, self.size = directory, tag, size
        self.backbone, self.settings = backbone, settings
        self.records: list[dict] = []
        self.written: list[Path] = []
        self.folder_answers = 0  # answers in the folder, all processes, after the last write

    def add(self, record: dict) -> None:
        self.records.append(record)
        if len(self.records) >= self.size:
            self.flush()

    def flush(self) -> None:
        taken = {k for path in npz_shards(self.directory) for k in shard_keys(path)}
        self.records = [r for r in self.records if r["key"] not in taken]  # by another process
        if not self.records:
            return
        path = next_shard(self.directory, self.tag)
        write_npz_shard(path, self.records, backbone=self.backbone, settings=self.settings)
        if (self.directory / "README.md").exists():
            update_card(self.directory)
        self.written.append(path)
        self.folder_answers = len(taken) + len(self.records)
        self.records = []
        tqdm.write(f"wrote {path}")


@dataclass
class RateMeter:
    """Answers per hour and generated tokens per second of running time: a gap of more than
    `pause` seconds between two finished jobs (the process was stopped, say by `kill -STOP`
    during someone's timed benchmark) counts as `pause` seconds."""

    pause: float = 120.0  # longest gap counted in full
    last: float = field(
        default_factory=lambda: time.perf_counter()
    )  # when the previous job finished
    active: float = 0.0  # seconds of running time so far
    answers: int = 0  # answers finished this session
    tokens: int = 0  # tokens generated this session (answers and Magpie turns)

    def tick(self, tokens: int, *, answer: bool) -> None:
        now = time.perf_counter()
        self.active += min(now - self.last, self.pause)
        self.last = now
        self.tokens += tokens
        self.answers += answer

    def describe(self) -> str:
        hours = max(self.active, 1e-9) / 3600
        return f"{self.answers / hours:,.0f} answers/h, {self.tokens / hours / 3600:.0f} tok/s"
