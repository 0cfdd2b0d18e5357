"""Matrix products on weights packed once: the same bits as `F.linear`, without its repacking.

Why: on a CPU, `F.linear` in bfloat16 hands the weight to oneDNN, which reorders it into its
blocked layout on every call. For the few rows of a decoding pass that reordering costs more
than the product: on a 2-core Xeon with AMX, SmolLM2's 576 x 1536 product of one row takes
69-109 us through `F.linear` and 31-68 us on a weight reordered once, and its LM head 2.1 ms
against 1.2 ms. The reordered weight is what torch's own compiler (inductor, with frozen
weights) hands to the same kernel: `torch.ops.mkldnn._reorder_linear_weight` once, then
`torch.ops.mkldnn._linear_pointwise` per call.

A weight shape is packed only where a probe on the machine shows both: the packed product gives
every row the bits `F.linear` gives it at every row count up to MAX_ROWS (so nothing else
changes: not a token, not the row-invariance probes, not the certified argmax's bound), and it
is faster for a lone row. Elsewhere (float32, where this build's kernels round differently;
GPUs; a torch without the operators) `linear` is `F.linear`. Gradients never take the packed
path (training).

The backbone's own linear layers take it only inside ShuffleLM's passes (`our_passes`), so the
benchmark's Hugging Face baselines, which run the same backbone, compute exactly as before.
"""

from __future__ import annotations

import threading
import time
import weakref
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

MAX_ROWS = 32  # products over more rows (prompts) take F.linear
HALF = (torch.bfloat16, torch.float16)
TIMING_REPEATS = 9  # runs of each product when a shape is timed

_state = threading.local()  # per thread: whether one of ShuffleLM's passes is running
_probed: dict = {}  # (shape, dtype, bias, threads) -> whether packed products pay here
_packs: dict = {}  # id(weight) -> (weakref to it, its version, its packed copy)


@contextmanager
def our_passes():
    """Inside, the backbone's linear layers (`install`) take packed products where they pay."""
    previous = active()
    _state.on = True
    try:
        yield
    finally:
        _state.on = previous


def active() -> bool:
    return getattr(_state, "on", False)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """F.linear(x, weight, bias), bit for bit, on a packed weight where that pays (`pays`).
    x (..., n, in) -> (..., n, out)."""
    rows = x.numel() // x.shape[-1]
    if rows > MAX_ROWS or torch.is_grad_enabled() or not pays(weight, bias):
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1]).contiguous()  # (n, in)
    out = _packed_product(flat, _packed(weight), bias)  # (n, out)
    return out.view(*x.shape[:-1], weight.shape[0])


def install(backbone: nn.Module) -> None:
    """Give the backbone's linear layers a forward that takes `linear` inside our passes and
    F.linear outside them (where the layers are as Hugging Face built them). Layers that
    already have a forward of their own (invariant.pad_linear_layers: blocks of rows, each
    a product like this one's) keep it."""
    if getattr(backbone, "_shufflelm_packed", False):
        return
    for layer in backbone.modules():
        if isinstance(layer, nn.Linear) and "forward" not in layer.__dict__:
            layer.forward = _PassForward(layer)
    backbone._shufflelm_packed = True


class _PassForward:
    """A linear layer's forward: `linear` in one of our passes, F.linear outside."""

    def __init__(self, layer: nn.Linear):
        self.layer = layer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        product = linear if active() else F.linear
        return product(x, self.layer.weight, self.layer.bias)


# --- the probe ----------------------------------------------------------------------------------


def pays(weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether products on this weight's shape take the packed weight here: a half-precision
    CPU weight whose packed product gives every row F.linear's bits at every row count up to
    MAX_ROWS and is faster for a lone row (probed once per shape, dtype, bias and threads)."""
    if weight.dtype not in HALF or weight.device.type != "cpu" or weight.dim() != 2:
        return False
    key = (tuple(weight.shape), weight.dtype, bias is not None, torch.get_num_threads())
    if key not in _probed:
        _probed[key] = _probe(weight, bias)
    return _probed[key]


@torch.no_grad()
def _probe(weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    try:
        packed = _packed(weight)  # kept for the products to come if the probe passes
        generator = torch.Generator().manual_seed(2)
        x = torch.randn(MAX_ROWS, weight.shape[1], generator=generator).to(weight.dtype)
        for count in range(1, MAX_ROWS + 1):
            rows = x[:count]
            if not torch.equal(_packed_product(rows, packed, bias), F.linear(rows, weight, bias)):
                return _refused(weight)
    except (RuntimeError, AttributeError, NotImplementedError):  # no such operator in this build
        return _refused(weight)
    row = x[:1]
    plain = fastest(lambda: F.linear(row, weight, bias), TIMING_REPEATS)
    faster = fastest(lambda: _packed_product(row, packed, bias), TIMING_REPEATS) < plain
    return faster or _refused(weight)


def _refused(weight: torch.Tensor) -> bool:
    """False, the packed copy the probe made dropped (its shape takes F.linear)."""
    _packs.pop(id(weight), None)
    return False


def fastest(run, repeats: int) -> float:
    """The fastest of `repeats` timed calls of `run` (s), after a warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


# --- packing --------------------------------------------------------------------------------------


def _pack(weight: torch.Tensor) -> torch.Tensor:
    """The weight in oneDNN's blocked layout (a tensor of its own, kept beside the weight)."""
    with torch.inference_mode(False), torch.no_grad():  # a plain tensor, reused across passes
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)


def _packed(weight: torch.Tensor) -> torch.Tensor:
    """This weight's packed copy, packed again when the weight changes (loading, training) and
    dropped with it."""
    version = (weight.data_ptr(), _version(weight))
    cached = _packs.get(id(weight))
    if cached is None or cached[0]() is not weight or cached[1] != version:
        if cached is None or cached[0]() is not weight:
            weakref.finalize(weight, _packs.pop, id(weight), None)
        cached = _packs[id(weight)] = (weakref.ref(weight), version, _pack(weight))
    return cached[2]


def _version(weight: torch.Tensor) -> int | None:
    try:
        return weight._version
    except RuntimeError:  # an inference tensor: it cannot change in place
        return None


def _packed_product(x: torch.Tensor, packed: torch.Tensor, bias) -> torch.Tensor:
    """x (n, in) @ weight.T + bias on the packed weight -> (n, out)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [None], "")
