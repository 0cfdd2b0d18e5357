"""Cached backbone features for head training: h_t, the anchor and the K targets of every
answer position of the self-distilled data. With the backbone frozen, one forward pass over
the data replaces one per epoch, which is what makes CPU training feasible. Features are
cached per data shard (beside it, in features/), so adding shards only computes the new ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..model.loss import IGNORE
from .distill import Example, load_shard

MAX_OFFSETS = 8  # targets stored per position; heads with K <= this can share the cache
FIELDS = ("hidden", "anchors", "targets", "example", "greedy")


@dataclass
class Features:
    hidden: torch.Tensor  # (N, H) float16: h_t, the backbone's final normalised hidden state;
    # (N, 2H) [h_t ; g_t] for a head with an early_layer (TrunkOutput.hidden)
    anchors: torch.Tensor  # (N,) long: token[t+1], the anchor of position t
    targets: torch.Tensor  # (N, MAX_OFFSETS) long: token[t+1+p], IGNORE past the answer's end
    example: torch.Tensor  # (N,) long: which example the position comes from
    greedy: torch.Tensor  # (N,) bool: the example's answer was decoded greedily
    position: torch.Tensor | None = None  # (N,) long: t, the row's position in its example
    # (load_features sets it; not cached)

    def __len__(self) -> int:
        return self.anchors.shape[0]

    def subset(self, index: torch.Tensor) -> Features:
        position = None if self.position is None else self.position[index]
        return Features(*(getattr(self, f)[index] for f in FIELDS), position=position)


@dataclass
class Sequences:
    """Every position of every example, for a head that reads the sequence (sequence.py)."""

    hidden: torch.Tensor  # (T, H) float16: h_i at every position of the examples, back to back
    ids: torch.Tensor  # (T,) long: their tokens
    starts: torch.Tensor  # (n + 1,) long: example i is rows starts[i]:starts[i + 1]

    def example(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """h_i of example i's positions 0..L-1 and its tokens x_0..x_{L-1}."""
        rows = slice(int(self.starts[i]), int(self.starts[i + 1]))
        return self.hidden[rows], self.ids[rows]


def answer_positions(example: Example) -> tuple[list[int], list[int], list[list[int]]]:
    """Positions t whose anchor token[t+1] belongs to the answer, their anchors and targets."""
    sequence = example.prompt_ids + example.answer_ids
    positions, anchors, targets = [], [], []
    for t in range(len(example.prompt_ids) - 1, len(sequence) - 1):
        positions.append(t)
        anchors.append(sequence[t + 1])
        future = sequence[t + 2 : t + 2 + MAX_OFFSETS]
        targets.append(future + [IGNORE] * (MAX_OFFSETS - len(future)))
    return positions, anchors, targets


@torch.no_grad()
def extract_features(
    model, examples: list[Example], *, batch_tokens: int = 4096, sequence: bool = False
) -> tuple[Features, torch.Tensor | None]:
    """Run the frozen backbone over every example (batched by length) and keep answer rows;
    `example` holds indices into `examples`. With `sequence`, also h_i at every position of
    every example, (T, H) in the examples' order (the shard's token order)."""
    size = [len(e.prompt_ids) + len(e.answer_ids) for e in examples]
    order = sorted(range(len(examples)), key=size.__getitem__)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in FIELDS}
    every_position: list[torch.Tensor | None] = [None] * len(examples)
    bar = tqdm(total=len(examples), desc="backbone features", unit="example", dynamic_ncols=True)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and size[order[end]] * (end - start + 1) <= batch_tokens:
            end += 1
        batch = order[start:end]
        longest = size[batch[-1]]
        ids = torch.zeros((len(batch), longest), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch):  # right padding: positions keep their indices
            sequence = examples[i].prompt_ids + examples[i].answer_ids
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        hidden = model.trunk_forward(
            ids.to(model.device), attention_mask=mask.to(model.device), logits=False
        )
        for row, i in enumerate(batch):
            positions, anchors, targets = answer_positions(examples[i])
            parts["hidden"].append(hidden.hidden[row, positions].to(torch.float16).cpu())
            parts["anchors"].append(torch.tensor(anchors))
            parts["targets"].append(torch.tensor(targets, dtype=torch.long).view(-1, MAX_OFFSETS))
            parts["example"].append(torch.full((len(positions),), i))
            parts["greedy"].append(torch.full((len(positions),), not examples[i].sampled))
            if sequence:
                h = hidden.hidden[row, : size[i], : model.config.hidden_size]  # (L, H)
                every_position[i] = h.to(torch.float16).cpu()
        bar.update(len(batch))
        start = end
    bar.close()
    features = Features(**{k: torch.cat(v) for k, v in parts.items()})
    return features, torch.cat(every_position) if sequence else None


def shard_features(
    model, shard: Path, backbone_name: str, *, sequence: bool = False
) -> tuple[list[Example], Features, torch.Tensor | None]:
    """Examples and features of one data shard, computed once and cached beside it: h_t and
    the targets in one file, an early layer's g_t (if the head reads one) in another, h_i at
    every position (`sequence`, a head that reads the sequence) in a third, so that heads with
    and without them share one backbone pass."""
    examples = load_shard(shard)
    stat = shard.stat()
    key = hashlib.sha256(f"{backbone_name}|{stat.st_size}|{MAX_OFFSETS}".encode()).hexdigest()[:12]
    cached = shard.parent / "features" / f"{shard.stem}-{key}.safetensors"
    layer = model.config.early_layer
    early = None if layer is None else cached.with_name(f"{cached.stem}-layer{layer}.safetensors")
    every = cached.with_name(f"{cached.stem}-sequence.safetensors") if sequence else None
    if all(path is None or path.exists() for path in (cached, early, every)):
        tensors = load_file(str(cached))
        if early is not None:
            tensors["hidden"] = torch.cat([tensors["hidden"], load_file(str(early))["hidden"]], 1)
        positions = None if every is None else load_file(str(every))["hidden"]
        return examples, Features(**{k: tensors[k] for k in FIELDS}), positions
    features, positions = extract_features(model, examples, sequence=sequence)
    cached.parent.mkdir(exist_ok=True)
    h = model.config.hidden_size
    tensors = {k: getattr(features, k).contiguous() for k in FIELDS}
    save_file({**tensors, "hidden": features.hidden[:, :h].contiguous()}, str(cached))
    if early is not None:
        save_file({"hidden": features.hidden[:, h:].contiguous()}, str(early))
    if every is not None:
        save_file({"hidden": positions.contiguous()}, str(every))
    return examples, features, positions


def load_features(
    model, shards: list[Path], backbone_name: str, *, sequence: bool = False
) -> tuple[list[Example], Features, Sequences | None]:
    """All shards' examples and features; `example` indexes the returned list, `position` says
    where in it a row is. Examples whose prompt appeared in an earlier shard are dropped (so
    held-out prompts are really unseen). With `sequence`, every position of every kept example
    (Sequences, indexed like the examples)."""
    examples: list[Example] = []
    parts: list[Features] = []
    every: list[torch.Tensor] = []
    seen: set[tuple[int, ...]] = set()
    for shard in tqdm(shards, desc="data shards", unit="shard", dynamic_ncols=True):
        shard_examples, features, positions = shard_features(
            model, shard, backbone_name, sequence=sequence
        )
        keep_example = []
        for example in shard_examples:
            key = tuple(example.prompt_ids)
            keep_example.append(key not in seen)
            seen.add(key)
        keep = torch.tensor(keep_example)[features.example]
        kept = features.subset(keep)
        renumber = torch.cumsum(torch.tensor(keep_example), 0) - 1 + len(examples)
        kept.example = renumber[kept.example]
        if positions is not None:
            lengths = [len(e.prompt_ids) + len(e.answer_ids) for e in shard_examples]
            pieces = positions.split(lengths)
            every += [p for p, k in zip(pieces, keep_example, strict=True) if k]
        examples += [e for e, k in zip(shard_examples, keep_example, strict=True) if k]
        parts.append(kept)
    features = Features(**{k: torch.cat([getattr(p, k) for p in parts]) for k in FIELDS})
    features.position = row_positions(features, examples)
    sequences = None
    if sequence:
        lengths = torch.tensor([len(e.prompt_ids) + len(e.answer_ids) for e in examples])
        sequences = Sequences(
            hidden=torch.cat(every),
            ids=torch.tensor([t for e in examples for t in e.prompt_ids + e.answer_ids]),
            starts=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
        )
    return examples, features, sequences


def example_rows(features: Features, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example index (n of them; default: up to the largest present) its first row and its
    number of rows: an example's rows are contiguous."""
    n = int(features.example.max()) + 1 if n is None else n
    rows = torch.arange(len(features))
    first = torch.full((n,), len(features), dtype=torch.long)
    first.scatter_reduce_(0, features.example, rows, "amin")
    return first, torch.bincount(features.example, minlength=n)


def row_positions(features: Features, examples: list[Example]) -> torch.Tensor:
    """t of every row: an example's rows are contiguous, at t = prompt length - 1, ... ."""
    first, _ = example_rows(features, len(examples))
    prompt = torch.tensor([len(e.prompt_ids) for e in examples])
    rows = torch.arange(len(features))
    return prompt[features.example] - 1 + rows - first[features.example]
