"""Drafts retrieved from a corpus of the backbone's own answers (REST, He et al. 2024).

The backbone answers many prompts alike ("Here is a Python function that", "In summary,",
"1. **"). The corpus is its answers to the distillation prompts (data/distill, never the
benchmark's questions) as one array of token ids, shipped in assets/corpus/. Each step looks
the sequence's last tokens up in it (the longest suffix of MIN_MATCH..MAX_MATCH tokens that
occurs), reads what followed the occurrences, and proposes the most frequent continuations as a
tree (best first by how often the whole path followed). A node's chance is its frequency among
its parent's continuations, mapped through a calibration fitted on held-out answers (per match
length, first node or later), and corrected by what this generation's corpus drafts accepted.

The index is the next PACK tokens at every position packed into one uint64 (16 bits a token),
sorted: a run of n <= PACK tokens occurs exactly where the packed keys fall in one range, two
binary searches; a longer match is checked on the tokens before those positions.
"""

from __future__ import annotations

import heapq
import itertools
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..model.calibration import IsotonicMap
from ..resources import ASSETS
from .proposers import MAX_ACCEPT_PROB, DraftInput, DraftSource, DraftTree, OnlineCorrection

CORPUS = "corpus"
DEFAULT_CORPUS_DIR = ASSETS / "corpus"  # the shipped corpus: tokens.npz, corpus.json
PACK = 4  # tokens packed into one sorted key
MIN_MATCH = 2  # a lone token says too little about what follows
MAX_MATCH = 8  # longest suffix matched: the last PACK through the index, the rest by checking
MAX_OCCURRENCES = 512  # occurrences read per step (evenly spaced where there are more)
MAX_DEPTH = 8  # longest continuation drafted
MIN_COUNT = 2  # a continuation seen once is proposed only after a match of LONG_MATCH tokens
LONG_MATCH = 6
SEPARATOR = 0xFFFF  # after each answer (token ids must be below it)


class CorpusIndex:
    """Where each run of tokens occurs in a corpus, and what followed it."""

    def __init__(self, tokens: np.ndarray):
        tokens = np.asarray(tokens)
        if tokens.size and (int(tokens.max()) > SEPARATOR or int(tokens.min()) < 0):
            raise ValueError("corpus token ids must fit in 16 bits")
        n = len(tokens)
        self.tokens = np.concatenate(  # (n + PACK,) the corpus, then separators
            [tokens.astype(np.uint16), np.full(PACK, SEPARATOR, dtype=np.uint16)]
        )
        keys = np.zeros(n, dtype=np.uint64)
        for i in range(PACK):  # keys[p] = tokens[p] << 48 | tokens[p+1] << 32 | ...
            keys = (keys << np.uint64(16)) | self.tokens[i : i + n].astype(np.uint64)
        self.order = np.argsort(keys, kind="stable")  # (n,) positions, by key
        self.keys = keys[self.order]  # (n,) sorted

    @classmethod
    def from_answers(cls, answers) -> CorpusIndex:
        """One corpus from lists of token ids, a SEPARATOR after each."""
        parts = [np.append(np.asarray(a, dtype=np.int64), SEPARATOR) for a in answers]
        return cls(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.order)

    def occurrences(self, tokens: list[int]) -> tuple[int, np.ndarray]:
        """(n, positions): the longest n in MIN_MATCH..MAX_MATCH such that the last n of
        `tokens` occur in the corpus, and where the token after each occurrence lies.
        (0, empty) when not even MIN_MATCH tokens occur."""
        suffix = [int(t) for t in tokens[-MAX_MATCH:]]
        for n in range(min(PACK, len(suffix)), MIN_MATCH - 1, -1):
            starts = self._starts(suffix[-n:])
            if starts.size:
                return self._extend(suffix, n, starts)
        return 0, np.zeros(0, dtype=np.int64)

    def _starts(self, run: list[int]) -> np.ndarray:
        """Positions where `run` (1..PACK tokens) starts."""
        key = 0
        for token in run:
            key = (key << 16) | token
        spare = 16 * (PACK - len(run))
        low, high = key << spare, (key << spare) | ((1 << spare) - 1)
        a = int(np.searchsorted(self.keys, np.uint64(low), side="left"))
        b = int(np.searchsorted(self.keys, np.uint64(high), side="right"))
        return self.order[a:b]

    def _extend(self, suffix: list[int], n: int, starts: np.ndarray) -> tuple[int, np.ndarray]:
        """The occurrences of the longest match that extends the n-token one backwards."""
        length = n
        for longer in range(n + 1, len(suffix) + 1):
            before = starts - (longer - n)  # where suffix[-longer] would be
            ok = before >= 0
            ok[ok] = self.tokens[before[ok]] == suffix[-longer]
            if not ok.any():
                break
            starts, length = starts[ok], longer
        return length, starts + n

    def continuations(self, positions: np.ndarray, depth: int) -> np.ndarray:
        """(m, depth) the tokens from each position on, SEPARATOR past an answer's end; at
        most MAX_OCCURRENCES rows, evenly spaced over the occurrences."""
        if len(positions) > MAX_OCCURRENCES:
            pick = np.linspace(0, len(positions) - 1, MAX_OCCURRENCES).round().astype(np.int64)
            positions = positions[pick]
        index = np.minimum(positions[:, None] + np.arange(depth), len(self.tokens) - 1)
        rows = self.tokens[index].astype(np.int64)  # (m, depth)
        ended = np.maximum.accumulate(rows == SEPARATOR, axis=1)
        rows[ended] = SEPARATOR
        return rows


def best_continuations(rows: np.ndarray, *, budget: int, branching: bool, min_count: int):
    """The `budget` prefixes of the rows (m, depth) that most rows start with, best first, as a
    tree. A node is (token, parent, rank among its siblings, frequency), frequency the share of
    its parent's rows that continue with it. Without `branching` each node has one child at
    most (a chain). A prefix fewer than `min_count` rows share is left out."""
    nodes: list[tuple[int, int, int, float]] = []
    heap: list = []  # (-path frequency, tiebreak, parent, rank, frequency, token, depth, rows)
    tiebreak = itertools.count()  # equal paths: the one offered first

    def offer_children(parent: int, members: np.ndarray, depth: int, path: float) -> None:
        if depth >= rows.shape[1]:
            return
        column = rows[members, depth]
        values, counts = np.unique(column[column != SEPARATOR], return_counts=True)
        order = np.argsort(-counts, kind="stable")[: None if branching else 1]
        for rank, k in enumerate(order):
            if counts[k] < min_count:
                break
            freq = float(counts[k]) / len(members)
            child = members[column == values[k]]
            item = (-path * freq, next(tiebreak), parent, rank, freq, int(values[k]), depth)
            heapq.heappush(heap, (*item, child))

    offer_children(-1, np.arange(len(rows)), 0, 1.0)
    while heap and len(nodes) < budget:
        neg_path, _, parent, rank, freq, token, depth, members = heapq.heappop(heap)
        nodes.append((token, parent, rank, freq))
        offer_children(len(nodes) - 1, members, depth + 1, -neg_path)
    return nodes


# --- calibration -------------------------------------------------------------------------------


@dataclass
class CorpusCalibration:
    """What a continuation's frequency means: P(accepted | parent accepted), by match length
    (MIN_MATCH..MAX_MATCH) and whether the node is the first after the anchor."""

    maps: dict[str, IsotonicMap] = field(default_factory=dict)  # "length:first" -> map
    report: dict = field(default_factory=dict)  # the data and counts it was fitted on

    @staticmethod
    def key(length: int, first: bool) -> str:
        return f"{min(length, MAX_MATCH)}:{int(first)}"

    def chance(self, frequency: float, *, length: int, first: bool) -> float:
        mapped = self.maps.get(self.key(length, first))
        chance = frequency if mapped is None else float(mapped(frequency))
        return min(chance, MAX_ACCEPT_PROB)

    @classmethod
    def fit(cls, outcomes, *, report=None) -> CorpusCalibration:
        """An isotonic map per (match length, first) from calibration_outcomes' rows."""
        table = np.asarray(outcomes, dtype=float).reshape(-1, 4)
        maps = {}
        for length in range(MIN_MATCH, MAX_MATCH + 1):
            for first in (True, False):
                rows = table[(table[:, 0] == length) & (table[:, 1] == first)]
                if len(rows) >= 20:
                    maps[cls.key(length, first)] = IsotonicMap.fit(rows[:, 2], rows[:, 3])
        return cls(maps=maps, report=dict(report or {}))

    def to_dict(self) -> dict:
        return {
            "maps": {k: {"x": m.x, "y": m.y} for k, m in self.maps.items()},
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, data: dict) -> CorpusCalibration:
        maps = {k: IsotonicMap(x=list(v["x"]), y=list(v["y"])) for k, v in data["maps"].items()}
        return cls(maps=maps, report=dict(data.get("report", {})))


def calibration_outcomes(index: CorpusIndex, examples, *, budget: int = 12, every: int = 1):
    """Rows (match length, first, frequency, accepted) for the nodes of the trees the corpus
    would propose along answers it does not hold (teacher forced: the answer is what verified
    greedy decoding emits), each node whose parent is on the answer's own path: the fair
    trials of its chance. `examples`: (prompt ids, answer ids) pairs; `every`: a position in
    `every`."""
    rows = []
    for prompt, answer in examples:
        prompt, answer = list(prompt), list(answer)
        for i in range(0, len(answer) - 1, every):
            length, nodes = continuation_tree(
                index, prompt + answer[: i + 1], budget=budget, branching=True
            )
            truth = answer[i + 1 : i + 1 + MAX_DEPTH]
            depths, on_path = [], []
            for token, parent, _, freq in nodes:
                depth = 0 if parent < 0 else depths[parent] + 1
                fair = parent < 0 or on_path[parent]
                right = fair and depth < len(truth) and truth[depth] == token
                depths.append(depth)
                on_path.append(right)
                if fair:
                    rows.append((length, parent < 0, freq, right))
    return rows


def continuation_tree(index: CorpusIndex, tokens, *, budget: int, branching: bool):
    """(match length, best_continuations' nodes) after the sequence `tokens`: the tree the
    corpus proposes; (0, []) where no suffix of MIN_MATCH tokens occurs."""
    length, positions = index.occurrences(tokens)
    if not length:
        return 0, []
    rows = index.continuations(positions, min(budget, MAX_DEPTH))
    min_count = 1 if length >= LONG_MATCH else MIN_COUNT
    nodes = best_continuations(rows, budget=budget, branching=branching, min_count=min_count)
    return length, nodes


# --- the shipped corpus ------------------------------------------------------------------------


@dataclass
class Corpus:
    """An index and its calibration, for one backbone's tokenizer."""

    index: CorpusIndex
    calibration: CorpusCalibration
    backbone: str  # the backbone whose answers (and tokenizer) it holds
    vocab_size: int  # that tokenizer's vocabulary size

    def fits(self, model) -> bool:
        """Whether `model` speaks the corpus's tokens (same backbone name and vocabulary)."""
        config = model.config
        return config.backbone == self.backbone and config.vocab_size == self.vocab_size

    def save(self, directory: str | Path, *, meta: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tokens = self.index.tokens[: len(self.index)]
        np.savez_compressed(directory / "tokens.npz", tokens=tokens)
        info = {
            "backbone": self.backbone,
            "vocab_size": self.vocab_size,
            "tokens": int(len(tokens)),
            "calibration": self.calibration.to_dict(),
            **(meta or {}),
        }
        (directory / "corpus.json").write_text(json.dumps(info, indent=1) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Corpus:
        directory = Path(directory)
        info = json.loads((directory / "corpus.json").read_text())
        with np.load(directory / "tokens.npz") as data:
            tokens = data["tokens"]
        return cls(
            index=CorpusIndex(tokens),
            calibration=CorpusCalibration.from_dict(info["calibration"]),
            backbone=info["backbone"],
            vocab_size=int(info["vocab_size"]),
        )


@lru_cache(maxsize=2)
def load_corpus(directory: str | Path = DEFAULT_CORPUS_DIR) -> Corpus:
    """A corpus from disk, once per process (sorting its index takes about a second)."""
    return Corpus.load(directory)


def corpus_for(model) -> Corpus:
    """The corpus a model drafts from: one set on it (`model.corpus`), else the shipped one
    where it holds this backbone's tokens. Raises ValueError where there is none."""
    corpus = getattr(model, "corpus", None)
    if corpus is None:
        if not (DEFAULT_CORPUS_DIR / "corpus.json").is_file():
            raise ValueError(f"draft_source 'corpus' needs a corpus; none in {DEFAULT_CORPUS_DIR}")
        corpus = load_corpus(DEFAULT_CORPUS_DIR)
    if not corpus.fits(model):
        raise ValueError(
            f"draft_source 'corpus': the corpus holds {corpus.backbone}'s tokens, not "
            f"{model.config.backbone}'s (set model.corpus to a Corpus of this backbone's answers)"
        )
    return corpus


# --- the source --------------------------------------------------------------------------------


class CorpusProposer(DraftSource):
    """The corpus's most frequent continuations of the sequence's last tokens, as a tree."""

    name = CORPUS

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self.correction = OnlineCorrection()  # this generation's outcomes
        self._estimates: list[float] = []  # uncorrected chance per node of the latest tree

    @classmethod
    def from_settings(cls, model, settings, sampler, *, record: bool):
        return cls(corpus_for(model))

    @classmethod
    def check(cls, model) -> None:
        corpus_for(model)  # loads the shipped corpus the first time

    def propose(self, inputs: DraftInput, *, budget: int, branching: bool = False):
        self._estimates = []
        if budget < 1:
            return None
        length, nodes = continuation_tree(
            self.corpus.index, inputs.tokens, budget=budget, branching=branching
        )
        if not nodes:
            return None
        tokens, parents, ranks, freqs = (list(column) for column in zip(*nodes, strict=True))
        self._estimates = [
            self.corpus.calibration.chance(f, length=length, first=p < 0)
            for f, p in zip(freqs, parents, strict=True)
        ]
        return DraftTree(
            source=CORPUS,
            tokens=tokens,
            accept_probs=self.correction.apply(self._estimates),
            parents=parents,
            ranks=ranks,
        )

    def observe(self, tree: DraftTree, outcome) -> None:
        accepted = set(outcome.accepted)
        trials = outcome.trials(tree)
        hits = sum(1 for node in trials if node in accepted)
        self.correction.update([self._estimates[node] for node in trials], hits)
