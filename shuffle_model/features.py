"""Cached backbone features for head training: h_t, the anchor and the K targets of every
answer position of the self-distilled data. With the backbone frozen, one forward pass over
the data replaces one per epoch, which is what makes CPU training feasible."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .distill import Example
from .loss import IGNORE

MAX_OFFSETS = 8  # targets stored per position; heads with K <= this can share the cache


@dataclass
class Features:
    hidden: torch.Tensor  # (N, H) float16: h_t, the backbone's final normalised hidden state
    anchors: torch.Tensor  # (N,) long: token[t+1], the anchor of position t
    targets: torch.Tensor  # (N, MAX_OFFSETS) long: token[t+1+p], IGNORE past the answer's end
    example: torch.Tensor  # (N,) long: which example the position comes from
    greedy: torch.Tensor  # (N,) bool: the example's answer was decoded greedily

    def __len__(self) -> int:
        return self.anchors.shape[0]

    def subset(self, index: torch.Tensor) -> Features:
        return Features(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


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


def cache_key(examples: list[Example], backbone_name: str) -> str:
    digest = hashlib.sha256(backbone_name.encode())
    for e in examples:
        digest.update(json.dumps([e.prompt_ids, e.answer_ids]).encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def extract_features(model, examples: list[Example], *, batch_tokens: int = 4096) -> Features:
    """Run the frozen backbone over every example (batched by length) and keep answer rows."""
    order = sorted(
        range(len(examples)),
        key=lambda i: len(examples[i].prompt_ids) + len(examples[i].answer_ids),
    )
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in Features.__dataclass_fields__}
    bar = tqdm(total=len(examples), desc="backbone features", unit="example", dynamic_ncols=True)
    start = 0
    while start < len(order):
        longest = len(examples[order[start]].prompt_ids) + len(examples[order[start]].answer_ids)
        end = start + 1
        while end < len(order):
            size = len(examples[order[end]].prompt_ids) + len(examples[order[end]].answer_ids)
            if size * (end - start + 1) > batch_tokens:
                break
            longest, end = size, end + 1
        batch = order[start:end]
        ids = torch.zeros((len(batch), longest), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch):  # right padding: positions keep their indices
            sequence = examples[i].prompt_ids + examples[i].answer_ids
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        hidden = model.trunk_forward(
            ids.to(model.device), attention_mask=mask.to(model.device)
        ).hidden
        for row, i in enumerate(batch):
            positions, anchors, targets = answer_positions(examples[i])
            parts["hidden"].append(hidden[row, positions].to(torch.float16).cpu())
            parts["anchors"].append(torch.tensor(anchors))
            parts["targets"].append(
                torch.tensor(targets, dtype=torch.long).reshape(-1, MAX_OFFSETS)
            )
            parts["example"].append(torch.full((len(positions),), i))
            parts["greedy"].append(torch.full((len(positions),), not examples[i].sampled))
        bar.update(len(batch))
        start = end
    bar.close()
    return Features(**{k: torch.cat(v) for k, v in parts.items()})


def load_or_extract(
    model, examples: list[Example], directory: Path, backbone_name: str
) -> Features:
    path = directory / f"features-{cache_key(examples, backbone_name)}.safetensors"
    if path.exists():
        tensors = load_file(str(path))
        return Features(**{k: tensors[k] for k in Features.__dataclass_fields__})
    features = extract_features(model, examples)
    save_file(
        {k: getattr(features, k).contiguous() for k in Features.__dataclass_fields__}, str(path)
    )
    return features
