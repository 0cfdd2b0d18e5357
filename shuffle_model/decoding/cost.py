"""The machine's cost curve c(n): one backbone pass over n new tokens, relative to n = 1.

Whether verifying m drafts pays depends on what the machine charges for the longer pass, and
machines differ a lot (docs/architecture.md, "The machine's cost curve", quotes some). So the
curve is measured where the code runs (interleaved repetitions, with a real key/value cache;
the fast end of the repetitions, since other work only slows passes down), cached per
(machine, device, dtype, backbone) under ~/.cache/shufflelm/cost/, and measured again on
request:

    python -m shuffle_model cost [--remeasure]

`ensure_cost_curve(model, ...)` gives a model its curve: the one it holds, the cached one, or
a fresh measurement of several seconds (then cached).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import psutil
import torch
from tqdm import tqdm

from ..model.backbone import cache_root
from ..model.devices import cpu_name
from ..model.precision import timing_context
from .proposers import DraftInput, SequenceReader
from .tree import Block, tree_inputs

CONTEXT_TOKENS = 256  # cache length the passes are measured on (a typical prompt + answer)
REPEATS = 5  # interleaved repetitions per size; the fastest 40 % are averaged
TIME_BUDGET_S = 8.0  # stop repeating once this is spent (at least 3 repetitions are kept)

Status = Callable[[str], None]


PAD_GAIN = 0.05  # a longer, padded pass is used only where it is at least 5 % cheaper


class CheapestPass(NamedTuple):
    cost: float  # c(length), in one-token passes
    length: int  # tokens it forwards: those to cover, then filler or further drafts


@dataclass
class CostCurve:
    """c(n) for n = 1..len(ratios), plus the per-step cost of drafting, in one-token passes."""

    ratios: list[float]  # ratios[n - 1] = c(n): a pass over n tokens / a pass over 1 token
    one_token_ms: float = 0.0  # wall time of a one-token pass (0: not measured)
    draft_cost: float = 0.0  # the head's draft (forward + shuffle + filter), in one-token passes
    branch_cost: float = 0.0  # what each path of a tree beyond the first adds to a pass, in
    # one-token passes (row-invariant passes attend once per path: invariant.py)
    draft_dtype: str = ""  # dtype of the drafts' vocabulary projection ("": the model's own)
    key: dict = field(default_factory=dict)  # machine, device, dtype, backbone it was measured on
    measured: str = "given"  # ISO time of the measurement, or "given" for a hand-made curve
    repeats: int = 0  # repetitions behind each estimate

    def __post_init__(self) -> None:
        if not self.ratios or any(not math.isfinite(r) or r <= 0 for r in self.ratios):
            raise ValueError(f"a cost curve needs positive ratios; got {self.ratios}")

    def __call__(self, tokens: int) -> float:
        """c(tokens); beyond the measured range, extended along its last slope (never down)."""
        if tokens < 1:
            raise ValueError(f"a pass covers at least one token; got {tokens}")
        if tokens <= len(self.ratios):
            return self.ratios[tokens - 1]
        last = self.ratios[-1]
        slope = max(last - self.ratios[-2], 0.0) if len(self.ratios) > 1 else 0.0
        return last + slope * (tokens - len(self.ratios))

    @property
    def max_tokens(self) -> int:
        return len(self.ratios)

    def cheapest(self, tokens: int) -> CheapestPass:
        """The cheapest pass that covers `tokens`: a longer pass where the
        machine runs it at least PAD_GAIN faster (small matrix products are often slower at
        n = 2-3 than at 4-5), filled up with tokens whose results are thrown away."""
        best_cost, best_length = self(tokens), tokens
        for length in range(tokens + 1, self.max_tokens + 1):
            if self(length) < best_cost * (1.0 - PAD_GAIN):
                best_cost, best_length = self(length), length
        return CheapestPass(best_cost, best_length)

    @classmethod
    def from_ratios(cls, ratios: list[float], *, draft_cost: float = 0.0) -> CostCurve:
        """A hand-made curve (tests, what-if questions): ratios for n = 1, 2, ..."""
        return cls(ratios=[float(r) for r in ratios], draft_cost=float(draft_cost))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CostCurve:
        return cls(
            ratios=[float(r) for r in data["ratios"]],
            one_token_ms=float(data.get("one_token_ms", 0.0)),
            draft_cost=float(data.get("draft_cost", 0.0)),
            branch_cost=float(data.get("branch_cost", 0.0)),
            draft_dtype=str(data.get("draft_dtype", "")),
            key=dict(data.get("key", {})),
            measured=str(data.get("measured", "given")),
            repeats=int(data.get("repeats", 0)),
        )

    def describe(self) -> str:
        points = ", ".join(f"c({n})={r:.2f}" for n, r in enumerate(self.ratios, 1) if n > 1)
        where = f" ({self.one_token_ms:.0f} ms for one token)" if self.one_token_ms else ""
        branches = (
            f", each further path of a tree {self.branch_cost:.2f}" if self.branch_cost else ""
        )
        return (
            f"{points}{where}; drafting costs {self.draft_cost:.2f} of a one-token pass{branches}"
        )


# --- where a curve belongs ---------------------------------------------------------------------


def curve_key(model) -> dict:
    """What a measurement depends on: the machine, the device, the dtype, the backbone and
    whether passes are row-invariant."""
    device = model.device
    cfg = model.config
    key = {
        "curve": 8,  # what `measure` times (bumped when that changes): passes on a context the
        # backbone predicts (precision.timing_context), drafting, a tree's extra paths,
        # half-precision products on packed weights (packed.py), and row-invariant passes as
        # the stronger probes set them up (a lone row's product padded to 2, attention calls
        # per key length, a tree's layouts sharing one copy of the cache, query heads folded
        # into their key head's rows: invariant.py; a close top settled on its contenders
        # instead of the whole float32 LM head: precision.py)
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device.type,
        "dtype": str(model.dtype).replace("torch.", ""),
        "backbone": cfg.backbone or model.model_info().get("backbone"),
        "shape": [cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_slots],
        "sequence": cfg.sequence_width,  # a head that reads the sequence drafts at its own cost
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        key["gpu"] = torch.cuda.get_device_name(device)
    if model.uses_row_invariance():  # passes cost more row by row (invariant.py)
        key["row_invariant"] = True
    if model.dtype in (torch.bfloat16, torch.float16):  # greedy passes: a certified argmax
        key["logits"] = "certified argmax"
    return key


def curve_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "cost" / f"{digest}.json"


def load_cached(key: dict) -> CostCurve | None:
    """The cached curve for `key`; None when there is none, or when the file is not one (cut
    short, corrupt, another program's, another key's): the caller measures again and the new
    curve replaces it."""
    path = curve_path(key)
    try:
        curve = CostCurve.from_dict(json.loads(path.read_text()))
    except Exception:  # whatever is wrong with a cache file, it only means: measure again
        return None
    return curve if curve.key == key else None


def save_cached(curve: CostCurve) -> Path | None:
    path = curve_path(curve.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(curve.to_dict(), indent=1))
        partial.replace(path)
    except OSError:  # a read-only home is no reason to fail: the curve stays in memory
        return None
    return path


def ensure_cost_curve(
    model, *, max_tokens: int, remeasure: bool = False, status: Status | None = None
) -> CostCurve:
    """Give `model` this machine's cost curve covering at least `max_tokens`, and return it.

    The curve the model holds is returned as it is where it was set by hand (no key) or covers
    `max_tokens`, unless `remeasure`. Otherwise the cached curve of this setup, or, where none
    covers `max_tokens` or on `remeasure`, a fresh measurement (several seconds of backbone
    passes) written to the cache; either becomes the model's (`adopt_curve`: model.cost_curve
    and model.draft_projection_dtype)."""
    curve = model.cost_curve
    if curve is not None and not remeasure and (curve.max_tokens >= max_tokens or not curve.key):
        return curve
    curve = cached_or_measured(model, max_tokens=max_tokens, remeasure=remeasure, status=status)
    adopt_curve(model, curve)
    return curve


def cached_or_measured(
    model, *, max_tokens: int, remeasure: bool, status: Status | None
) -> CostCurve:
    """The cached curve of this setup if it covers `max_tokens` (and not `remeasure`), else a
    new measurement covering at least what the cached one did, cached unless other programs
    were busy meanwhile."""
    key = curve_key(model)
    cached = load_cached(key)
    if cached is None and curve_path(key).exists() and status:
        status(f"{curve_path(key)} holds no cost curve of this setup: measuring it again")
    if cached is not None and cached.max_tokens >= max_tokens and not remeasure:
        return cached
    if cached is not None:  # a new measurement covers at least what the cached one did
        max_tokens = max(max_tokens, cached.max_tokens)
    busy = machine_is_busy()
    curve = measure(model, max_tokens=max_tokens, key=key, status=status)
    if busy or machine_is_busy():
        if status:
            status("Other programs were busy: this curve is used now but not cached")
    else:
        save_cached(curve)
    return curve


def adopt_curve(model, curve: CostCurve) -> None:
    """Plan the model's steps with `curve`, and project its drafts in the dtype measured with it."""
    model.cost_curve = curve
    model.draft_projection_dtype = getattr(torch, curve.draft_dtype) if curve.draft_dtype else None


# --- measuring ---------------------------------------------------------------------------------


BUSY_SHARE = 0.25  # other programs using more than this share of all cores: "busy"


def machine_is_busy(window_s: float = 0.25) -> bool:
    """Whether other programs keep the CPUs busy, sampled while this one sleeps: a curve
    measured then would carry their noise into every later start, so it is not cached."""
    return psutil.cpu_percent(interval=window_s) > 100 * BUSY_SHARE


def sizes_to_measure(max_tokens: int) -> list[int]:
    """Every n up to 8, then every other one: the curve between them is interpolated."""
    sizes = list(range(1, min(max_tokens, 8) + 1))
    sizes += list(range(10, max_tokens, 2))
    if max_tokens not in sizes:
        sizes.append(max_tokens)
    return sizes


def head_draft(model, ids: torch.Tensor) -> Callable[[], object]:
    """One step's drafting by the head, to be timed: for a head that reads the sequence, with
    two new positions read into a history as long as `ids` (1, L + 1) (proposers.SequenceReader)."""
    hidden = torch.zeros(model.head.feature_size, device=ids.device, dtype=model.dtype)  # h_t
    anchor = torch.tensor(ids[0, -1].item(), device=ids.device)
    if model.head.sequence is None:
        return partial(model.draft, hidden, anchor)
    tokens, reader = ids[0].tolist(), SequenceReader(model)
    before = DraftInput(tokens[:-2], hidden, tokens[-3], [hidden.expand(len(tokens) - 3, -1)])
    reader.context(before)  # the history so far, read once
    step_state = DraftInput(tokens, hidden, tokens[-1], [*before.history, hidden.expand(2, -1)])

    def step():
        model.draft(hidden, anchor, reader.context(step_state))  # two new positions read
        reader.rewind(before)

    return step


@dataclass
class Timings:
    """Seconds per repetition of what `measure` times (the warm-up round dropped)."""

    passes: dict[int, list[float]]  # n -> a chain pass over n new tokens, n in sizes_to_measure
    drafts: list[float] = field(default_factory=list)  # one step's drafting by the head
    trees: list[float] = field(default_factory=list)  # a pass over TREE_PARENTS as a tree
    chains: list[float] = field(default_factory=list)  # a pass over as many tokens as a chain
    started: float = 0.0  # time.perf_counter() when the rounds began


@torch.no_grad()
def measure(
    model,
    *,
    max_tokens: int,
    key: dict | None = None,
    repeats: int = REPEATS,
    time_budget_s: float = TIME_BUDGET_S,
    status: Status | None = None,
) -> CostCurve:
    """Time one pass over n new tokens on a cache of CONTEXT_TOKENS, for the sizes of
    `sizes_to_measure`, in interleaved rounds so that drift hits every size alike; each size's
    cost is the fast end of its repetitions (`undisturbed`). The drafts are timed in the dtype
    `faster_draft_dtype` picks, which it sets as model.draft_projection_dtype."""
    say = status or (lambda message: None)
    say(f"Measuring this machine's cost of a backbone pass over 1..{max_tokens} tokens ...")
    draft_dtype = faster_draft_dtype(model)
    model.draft_projection_dtype = getattr(torch, draft_dtype) if draft_dtype else None
    timings = time_rounds(
        model, max_tokens=max_tokens, repeats=repeats, time_budget_s=time_budget_s
    )
    typical = {n: undisturbed(t) for n, t in timings.passes.items()}
    one = typical[1]
    sizes = list(timings.passes)
    ratios = [_interpolate(typical, sizes, n) / one for n in range(1, max_tokens + 1)]
    # a pass over n tokens costs at least one over 1 and at most n of them: beyond is noise
    ratios = [1.0] + [min(max(r, 1.0), float(n)) for n, r in enumerate(ratios[1:], start=2)]
    trees, chains = undisturbed(timings.trees), undisturbed(timings.chains)
    curve = CostCurve(
        ratios=[round(r, 4) for r in ratios],
        one_token_ms=round(one * 1000, 3),
        draft_cost=round(undisturbed(timings.drafts) / one, 4),
        branch_cost=round(branch_cost(trees, chains, one), 4),
        draft_dtype=draft_dtype,
        key=key or curve_key(model),
        measured=dt.datetime.now().isoformat(timespec="seconds"),
        repeats=len(timings.drafts),
    )
    say(f"Cost curve: {curve.describe()} ({time.perf_counter() - timings.started:.1f} s)")
    return curve


def time_rounds(model, *, max_tokens: int, repeats: int, time_budget_s: float) -> Timings:
    """Every size's pass, the head's draft, and the tree and chain passes, round after round
    (round 0 warms up and is dropped) for `repeats` rounds, or fewer (at least 3) once
    `time_budget_s` is spent. Each pass goes on from the same cache, and is cropped off it."""
    device = model.device
    context = min(CONTEXT_TOKENS, model.context_length - max_tokens - 1)
    vocab = model.config.vocab_size
    ids = timing_context(context + max(max_tokens, len(TREE_PARENTS)), vocab, device)
    prompt, following = ids[:, :context], ids[:, context:]  # the cache; what passes forward
    cache = model.new_cache()
    model.trunk_forward(prompt, cache=cache, logits=False)
    timings = Timings(passes={n: [] for n in sizes_to_measure(max_tokens)})
    # the passes of greedy decoding, the common case (in half precision their logits are a
    # certified argmax, precision.py; sampled passes pay the whole float32 LM head)
    forward = partial(model.trunk_forward, cache=cache, argmax_only=True)
    eight = following[:, : len(TREE_PARENTS)]  # (1, 8)
    tree_pass = partial(forward, eight, **tree_arguments(context, model))
    chain_pass = partial(forward, eight)
    draft = head_draft(model, ids[:, : context + 1])
    timings.started = time.perf_counter()
    bar = tqdm(total=repeats + 1, desc="cost curve", unit="round", leave=False, disable=None)
    for round_ in range(repeats + 1):  # round 0 warms up and is dropped
        for n, times in timings.passes.items():
            block = following[:, :n]  # (1, n): the sequence goes on
            seconds = _timed(lambda block=block: forward(block), device)
            cache.crop(-n)
            if round_:
                times.append(seconds)
        seconds = _timed(draft, device)
        if round_:
            timings.drafts.append(seconds)
        for timed, run in ((timings.trees, tree_pass), (timings.chains, chain_pass)):
            seconds = _timed(run, device)  # as many tokens, as a tree and as a chain
            cache.crop(-len(TREE_PARENTS))
            if round_:
                timed.append(seconds)
        bar.update(1)
        if round_ >= 3 and time.perf_counter() - timings.started > time_budget_s:
            break
    bar.close()
    return timings


TREE_PARENTS = [-1, 0, 1, 0, 3, 0, 5, 0]  # 8 tokens in 4 paths: 0-1-2, 0-3-4, 0-5-6, 0-7


def tree_arguments(past: int, model) -> dict:
    """The 4D mask and positions of a pass over TREE_PARENTS after `past` cached tokens."""
    block = Block([0] * len(TREE_PARENTS), TREE_PARENTS, ["tree"] * len(TREE_PARENTS))
    mask, positions = tree_inputs(block, past=past, dtype=model.dtype, device=model.device)
    return {"attention_mask": mask, "position_ids": positions}


def branch_cost(tree_s: float, chain_s: float, one_s: float) -> float:
    """What each path beyond the first added to the tree pass against a chain of as many
    tokens, in one-token passes (never below zero: noise)."""
    paths = sum(1 for node in range(len(TREE_PARENTS)) if node not in TREE_PARENTS)
    return max(0.0, tree_s - chain_s) / (paths - 1) / one_s


def undisturbed(times: list[float]) -> float:
    """The mean of the fastest 40 % of the repetitions: other work on the machine only ever
    slows a pass down, so the fast end is the pass's own cost (the median drifts with load)."""
    fastest = sorted(times)[: max(1, round(0.4 * len(times)))]
    return statistics.fmean(fastest)


def faster_draft_dtype(model, *, repeats: int = 15) -> str:
    """ "bfloat16" where the drafts' vocabulary projection (K slots x the draft vocabulary) runs
    in it at least 1.5x faster than in float32 (CPUs with native bfloat16 arithmetic), else "".
    Drafts only choose what gets checked; anchors and verification stay in float32."""
    vocab = getattr(model.head, "draft_vocab", None)
    if model.dtype != torch.float32 or model.device.type != "cpu" or vocab is None:
        return ""
    weight = model.vocab_projection().weight.detach()[vocab]  # (N, H)
    x = torch.randn(model.config.num_slots, weight.shape[1])  # (K, H)
    fast = weight.bfloat16()
    plain = [
        _timed(lambda: torch.nn.functional.linear(x, weight), model.device) for _ in range(repeats)
    ]
    half = [
        _timed(lambda: torch.nn.functional.linear(x.bfloat16(), fast), model.device)
        for _ in range(repeats)
    ]
    return "bfloat16" if undisturbed(half) * 1.5 < undisturbed(plain) else ""


def _timed(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _interpolate(times: dict[int, float], sizes: list[int], n: int) -> float:
    if n in times:
        return times[n]
    below = max(s for s in sizes if s < n)
    above = min(s for s in sizes if s > n)
    weight = (n - below) / (above - below)
    return times[below] * (1 - weight) + times[above] * weight
