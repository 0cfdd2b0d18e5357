"""The committed distillation data: append-only shards of token ids, compressed with numpy.

One shard, `<tag>-<number>.npz` (np.savez_compressed, no pickles), holds
  tokens          uint16 (or uint32 for vocabularies past 65,536): prompts and answers, back
                  to back
  offsets         uint32 (n + 1,): example i is tokens[offsets[i]:offsets[i + 1]]
  prompt_lengths  uint32 (n,): the first prompt_lengths[i] tokens of example i are its prompt
  meta            uint8: UTF-8 JSON {"format", "backbone", "settings", "examples": [...]}, one
                  record per example (key, source, category, sampled, and for documentation
                  items package and licence)
A shard is written once (to a .partial file, then renamed) and never changed; new data goes to
new shards, whose tag names the run (seed, machine), so that runs on several machines add to
the same folder without clashing.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

FORMAT = 1
SHARD = re.compile(r"^(?P<tag>[A-Za-z0-9_.]+)-(?P<number>\d{5})\.npz$")


def write_npz_shard(path: Path, records: list[dict], *, backbone: str, settings: dict) -> None:
    """Write examples {prompt_ids, answer_ids, key, source, category, sampled, ...} to `path`."""
    if path.exists():
        raise FileExistsError(f"{path} exists: shards are append-only")
    sequences = [r["prompt_ids"] + r["answer_ids"] for r in records]
    tokens = np.array([t for s in sequences for t in s], dtype=np.int64)
    dtype = np.uint16 if tokens.size == 0 or tokens.max() < 2**16 else np.uint32
    offsets = np.cumsum([0] + [len(s) for s in sequences]).astype(np.uint32)
    lengths = np.array([len(r["prompt_ids"]) for r in records], dtype=np.uint32)
    info = [{k: v for k, v in r.items() if k not in ("prompt_ids", "answer_ids")} for r in records]
    meta = {"format": FORMAT, "backbone": backbone, "settings": settings, "examples": info}
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        tokens=tokens.astype(dtype),
        offsets=offsets,
        prompt_lengths=lengths,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    )
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(buffer.getvalue())
    partial.replace(path)


def read_npz_shard(path: Path) -> tuple[dict, list[dict]]:
    """(shard metadata, records with prompt_ids and answer_ids) of one shard."""
    with np.load(path, allow_pickle=False) as data:
        tokens = data["tokens"].astype(np.int64).tolist()
        offsets = data["offsets"].tolist()
        lengths = data["prompt_lengths"].tolist()
        meta = json.loads(data["meta"].tobytes().decode())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown shard format {meta.get('format')}")
    records = []
    for i, info in enumerate(meta["examples"]):
        sequence = tokens[offsets[i] : offsets[i + 1]]
        cut = lengths[i]
        records.append({**info, "prompt_ids": sequence[:cut], "answer_ids": sequence[cut:]})
    return meta, records


def shard_keys(path: Path) -> list[str]:
    """The prompt keys of one shard, from its metadata only."""
    with np.load(path, allow_pickle=False) as data:
        return [info["key"] for info in json.loads(data["meta"].tobytes().decode())["examples"]]


def npz_shards(directory: Path) -> list[Path]:
    """The shards of a folder, in a stable order (by name)."""
    return sorted(p for p in directory.glob("*.npz") if SHARD.match(p.name))


def next_shard(directory: Path, tag: str) -> Path:
    """The first unused shard name of `tag` in `directory`."""
    numbers = [
        int(m["number"])
        for p in directory.glob(f"{tag}-*.npz")
        if (m := SHARD.match(p.name)) and m["tag"] == tag
    ]
    return directory / f"{tag}-{max(numbers, default=-1) + 1:05d}.npz"


def summary(directory: Path) -> dict:
    """Counts of the folder's shards: examples and answer tokens per source and category."""
    sources: Counter = Counter()
    categories: Counter = Counter()
    tokens: Counter = Counter()
    sampled = examples = answer_tokens = prompt_tokens = 0
    licences: dict[str, str] = {}
    for path in npz_shards(directory):
        for r in read_npz_shard(path)[1]:
            examples += 1
            sources[r["source"]] += 1
            categories[f"{r['source']}/{r['category']}"] += 1
            tokens[r["source"]] += len(r["answer_ids"])
            answer_tokens += len(r["answer_ids"])
            prompt_tokens += len(r["prompt_ids"])
            sampled += bool(r["sampled"])
            if r.get("package"):
                licences[r["package"]] = r.get("licence", "?")
    return {
        "shards": len(npz_shards(directory)),
        "examples": examples,
        "answer_tokens": answer_tokens,
        "prompt_tokens": prompt_tokens,
        "sampled": sampled,
        "sources": dict(sources.most_common()),
        "source_tokens": dict(tokens.most_common()),
        "categories": dict(sorted(categories.items())),
        "packages": dict(sorted(licences.items())),
        "bytes": sum(p.stat().st_size for p in npz_shards(directory)),
    }


COUNTS_BEGIN, COUNTS_END = "<!-- counts:begin -->", "<!-- counts:end -->"


def counts_markdown(stats: dict) -> str:
    """The data card's counts section (between the markers, rewritten as shards land)."""
    lines = [
        f"{stats['examples']:,} answers ({stats['sampled']:,} sampled) in {stats['shards']} shards,"
        f" {stats['answer_tokens']:,} answer tokens, {stats['prompt_tokens']:,} prompt tokens,"
        f" {stats['bytes'] / 1e6:.1f} MB.",
        "",
        "| source | answers | answer tokens |",
        "|---|---:|---:|",
    ]
    for source, count in stats["sources"].items():
        lines.append(f"| {source} | {count:,} | {stats['source_tokens'][source]:,} |")
    lines += ["", "Categories: " + ", ".join(f"{k} {v}" for k, v in stats["categories"].items())]
    if stats["packages"]:
        packages = ", ".join(f"{k} ({v})" for k, v in stats["packages"].items())
        lines += ["", f"Documentation and code from: {packages}."]
    return "\n".join(lines)


def update_card(directory: Path) -> None:
    """Rewrite the counts section of `directory/README.md` from the shards."""
    card = directory / "README.md"
    text = card.read_text(encoding="utf-8")
    if COUNTS_BEGIN not in text or COUNTS_END not in text:
        raise ValueError(f"{card} has no counts markers")
    before, rest = text.split(COUNTS_BEGIN, 1)
    after = rest.split(COUNTS_END, 1)[1]
    body = counts_markdown(summary(directory))
    partial = card.with_name(card.name + ".partial")  # a committer never sees half a card
    partial.write_text(f"{before}{COUNTS_BEGIN}\n{body}\n{COUNTS_END}{after}", encoding="utf-8")
    partial.replace(card)
