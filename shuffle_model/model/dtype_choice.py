"""Which dtype "auto" runs in on a CPU with native bfloat16: the faster one, measured.

Native bfloat16 instructions do not make every CPU's passes faster in bfloat16. Measured with
ShuffleLM's own greedy passes: on a 2-core AMD EPYC with AVX-512 BF16 a one-token pass took
47-49 ms in bfloat16 against 84 ms in float32; on a 2-core Xeon with AMX 55 ms in bfloat16
against 38 ms in float32. So where the model could run in either (bfloat16 passes that are
row-invariant, so that both are exact in their dtype), both are timed once on this machine:
greedy passes over 1 and over 4 tokens (a step's typical check), the fast end of a few
repetitions each, in ROUNDS that alternate between the dtypes (a shared machine's speed drifts
by tens of percent within a minute: timed one after the other, whichever dtype met the slow
minute lost), the fastest round of each kept. The faster dtype is kept, and the choice is
cached per machine and backbone under ~/.cache/shufflelm/dtype/, so later starts load once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable

import torch

from .backbone import cache_root
from .devices import cpu_name
from .precision import timing_context

REPEATS = 7  # timed passes per size (the fastest 3 are averaged)
SIZES = (1, 4)  # tokens per timed pass
ROUNDS = 3  # alternating rounds of timing per dtype (the fastest round of each counts)
CONTEXT = 64  # cached tokens the passes attend to


def choice_key(config) -> dict:
    """What the choice depends on: the machine, the torch build and the backbone (a
    ShuffleConfig: known before the backbone loads)."""
    return {
        "timing": 4,  # how passes are timed: 2 on precision.timing_context, 3 with half-precision
        # products on packed weights (packed.py), 4 in alternating rounds
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "backbone": config.backbone,
        "shape": [config.vocab_size, config.hidden_size, config.num_layers],
    }


def choice_path(key: dict):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "dtype" / f"{digest}.json"


def cached_choice(key: dict) -> dict | None:
    """{"dtype": ..., "ms": {...}} measured earlier for this key; None if none (or unreadable)."""
    try:
        data = json.loads(choice_path(key).read_text())
    except Exception:  # a missing or broken cache file only means: measure again
        return None
    return data if data.get("key") == key and data.get("dtype") in ("bfloat16", "float32") else None


def save_choice(key: dict, dtype: str, ms: dict) -> None:
    path = choice_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key, "dtype": dtype, "ms": ms}, indent=1))
    except OSError:  # a read-only home: measured again at the next start
        pass


@torch.no_grad()
def pass_ms(model) -> float:
    """Mean wall time of greedy passes over 1 and 4 tokens (ms), fast end of REPEATS each."""
    ids = timing_context(CONTEXT + max(SIZES), model.config.vocab_size, model.device)
    cache = model.new_cache()
    model.trunk_forward(ids[:, :CONTEXT], cache=cache, logits=False)
    means = []
    for n in SIZES:
        times = []
        for _ in range(REPEATS + 1):  # the first warms up
            start = time.perf_counter()
            model.trunk_forward(ids[:, CONTEXT : CONTEXT + n], cache=cache, argmax_only=True)
            times.append(time.perf_counter() - start)
            cache.crop(-n)
        means.append(sum(sorted(times[1:])[:3]) / 3)
    return 1000 * sum(means) / len(means)


def faster_of(half_model, load_float32: Callable[[], object], *, status=None):
    """`half_model` (bfloat16, exact in its dtype) or the float32 model `load_float32()` loads,
    whichever runs greedy passes faster here, and the timings (ms per dtype); measured once
    per machine, then cached (a loader that finds float32 cached loads it directly)."""
    say = status or (lambda message: None)
    key = choice_key(half_model.config)
    known = cached_choice(key)
    if known is not None and known["dtype"] == "bfloat16":
        return half_model, known["ms"]
    say("Timing bfloat16 against float32 passes on this machine (once) ...")
    full = load_float32()
    half_ms, full_ms = float("inf"), float("inf")
    for _ in range(ROUNDS):
        half_ms = min(half_ms, pass_ms(half_model))
        full_ms = min(full_ms, pass_ms(full))
    dtype = "bfloat16" if half_ms <= full_ms else "float32"
    ms = {"bfloat16": round(half_ms, 2), "float32": round(full_ms, 2)}
    save_choice(key, dtype, ms)
    return (half_model if dtype == "bfloat16" else full), ms


def timing(ms: dict) -> str:
    """The measurement in words, for `dtype_reason`."""
    return f"greedy passes {ms['bfloat16']:.0f} ms in bfloat16, {ms['float32']:.0f} ms in float32"


def float32_reason(ms: dict) -> str:
    return f"float32 is faster here than bfloat16 ({timing(ms)})"
