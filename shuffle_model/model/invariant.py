"""Row-invariant passes: every token of a pass gets the hidden state a one-token pass gives it.

Why: in half precision, verified decoding runs the backbone over a block of drafts, ordinary
decoding over one token at a time. For the two to choose the same tokens, the hidden state
of a token must not depend on how many tokens shared its pass. Per-token operations (norms,
rotary, activations) never depend on it. Two things do, measured on a 2-core AMD EPYC:

- Attention: transformers' SDPA path packs the query heads of one token against each key
  head (pack_gqa) but repeats the key heads for a block, and the two kernels round
  differently. Here each query row of a pass attends in a computation of its own (float32),
  over exactly the keys it may see (its cache, its ancestors in the block, itself) in cache
  order: the same computation, on the same numbers, that a one-token pass over that token
  makes once it is accepted.
- Matrix products: one row goes through a matrix-vector kernel, several rows through a
  matrix-matrix kernel, and the two round a few elements differently (bfloat16 down
  projection: 2-6 rows in 64). Every number of rows from `min_rows` up (probed on this
  machine per weight shape) agrees with every other, so a pass over fewer rows is padded
  with zero rows, whose outputs are dropped: next to free for a weight-bound product.

The float32 LM head (precision.py) is left unpadded: padding its one-token product costs
80 % more than the product itself, and its rows differ at float32 rounding (about 1e-5 in a
logit), which can only reorder two tokens that tie to that precision (lossless.py).

While a pass runs inside `row_invariant(True)` both apply; passes over more than MAX_ROWS
tokens (prompts) run as one batch, as ordinary and verified decoding both run them. The
default is on in half precision on a CPU whose products pass the probe (`wanted`), off in
float32 (whose rounding never moved a choice in our measurements) and on GPUs (unmeasured).
Outside our passes (the benchmark's Hugging Face baselines on the same backbone) the
backbone computes exactly as before.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "shufflelm_row_invariant_sdpa"  # the attention implementation a backbone is given
MAX_ROWS = 32  # longer passes (prompts) run as one batch: ordinary and verified alike
PROBE_ROWS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17, 20, 24, 32)  # row counts probed
PROBE_SAMPLE = 256  # random rows probed: a kernel may round as few as 1 row in 50 otherwise
MAX_PADDING = 8  # a product that needs more rows than this to agree is not used row-invariant
HALF = (torch.bfloat16, torch.float16)

_state = threading.local()  # per thread: whether the running pass is row-invariant


@contextmanager
def row_invariant(enabled: bool):
    """Run the passes inside row-invariant (when enabled) in this thread."""
    previous = active()
    _state.on, _state.memo = enabled, None
    try:
        yield
    finally:
        _state.on, _state.memo = previous, None


def active() -> bool:
    return getattr(_state, "on", False)


def install(backbone: nn.Module) -> bool:
    """Give a Hugging Face backbone that uses SDPA our attention function, which computes as
    plain SDPA unless a row-invariant pass is running. False where the backbone uses another
    attention (its passes then stay as they are)."""
    config = getattr(backbone, "config", None)
    implementation = getattr(config, "_attn_implementation", None)
    if implementation == NAME:
        return True
    if implementation != "sdpa" or not hasattr(backbone, "set_attn_implementation"):
        return False
    AttentionInterface.register(NAME, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # masks exactly as SDPA's
    backbone.set_attn_implementation(NAME)
    return backbone.config._attn_implementation == NAME


def installed(backbone: nn.Module) -> bool:
    """Whether the backbone attends through our function (else no pass is row-invariant)."""
    return getattr(getattr(backbone, "config", None), "_attn_implementation", None) == NAME


def pad_linear_layers(backbone: nn.Module) -> None:
    """Hook the backbone's linear layers that need it (min_rows > 1) so that, in a
    row-invariant pass, their input is padded to min_rows. Done once, when a model first
    runs row-invariant (float32 models never carry the hooks)."""
    if getattr(backbone, "_shufflelm_padded", False):
        return
    for layer in backbone.modules():
        if isinstance(layer, nn.Linear) and (min_rows(layer.weight) or 1) > 1:
            layer.register_forward_pre_hook(_pad_input)
            layer.register_forward_hook(_drop_padding)
    backbone._shufflelm_padded = True


def wanted(dtype: torch.dtype, device: torch.device, layers=()) -> bool:
    """The default: on in half precision on a CPU whose matrix products (`layers`, probed)
    agree across row counts once padded to a few rows."""
    if dtype not in HALF or torch.device(device).type != "cpu":
        return False
    return all(min_rows(layer.weight) is not None for layer in layers)


def probe_layers(model: nn.Module) -> list[nn.Module]:
    """The linear layers of the trunk's first decoder layer, one per weight shape."""
    first = next((m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")), None)
    shapes = {}
    for module in first.modules() if first is not None else ():
        if isinstance(module, nn.Linear):
            shapes.setdefault(tuple(module.weight.shape), module)
    return list(shapes.values())


# --- matrix products --------------------------------------------------------------------------

_probed: dict = {}  # (shape, dtype, device, threads) -> min_rows


@torch.no_grad()
def min_rows(weight: torch.Tensor) -> int | None:
    """The fewest rows from which x @ weight.T gives every row the same bits whatever the
    number of rows (all probed counts up to MAX_ROWS); None if no count up to MAX_PADDING
    does. Probed once per shape, dtype, device and thread count (kernels are chosen by them)."""
    key = (tuple(weight.shape), weight.dtype, weight.device, torch.get_num_threads())
    if key not in _probed:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(PROBE_SAMPLE, weight.shape[1], generator=generator)
        x = x.to(device=weight.device, dtype=weight.dtype)
        reference = F.linear(x, weight)  # (rows, out)
        agree = [_agrees(x, weight, reference, n) for n in PROBE_ROWS]
        first = next((i for i in range(len(agree)) if all(agree[i:])), None)
        rows = None if first is None else PROBE_ROWS[first]
        _probed[key] = rows if rows is not None and rows <= MAX_PADDING else None
    return _probed[key]


def _agrees(x, weight, reference, n: int) -> bool:
    """Whether products over n rows at a time reproduce the reference rows, on every row of
    the sample (lone rows, the commonest pass) or on windows over its first quarter."""
    cover = len(x) if n == 1 else len(x) // 4
    starts = range(0, cover - n + 1, n)
    return all(torch.equal(F.linear(x[j : j + n], weight), reference[j : j + n]) for j in starts)


def _rows(x: torch.Tensor) -> int:
    return x.shape[-2] if x.dim() > 1 else 1


def _padding(x: torch.Tensor, weight: torch.Tensor) -> int:
    """Zero rows to add to x (B, T, in) before the product; 0 outside a row-invariant pass."""
    if not active() or (x.dim() > 2 and x.shape[0] != 1):
        return 0
    needed = min_rows(weight) or 1
    return max(0, needed - _rows(x))


def _padded(x: torch.Tensor, padding: int) -> torch.Tensor:
    x = x if x.dim() > 1 else x[None]
    zeros = x.new_zeros(*x.shape[:-2], padding, x.shape[-1])
    return torch.cat([x, zeros], dim=-2)  # (..., rows + padding, in)


def _pad_input(layer: nn.Linear, args):
    padding = _padding(args[0], layer.weight)
    if padding:
        pads = getattr(_state, "pads", None) or {}
        pads[id(layer)] = _rows(args[0])
        _state.pads = pads
        return (_padded(args[0], padding), *args[1:])
    return None


def _drop_padding(layer: nn.Linear, args, output):
    pads = getattr(_state, "pads", None)
    if pads and id(layer) in pads:
        return output[..., : pads.pop(id(layer)), :]
    return None


# --- attention ---------------------------------------------------------------------------------


def attention(module, query, key, value, attention_mask, **kwargs):
    """An AttentionInterface function: query (B, H, q, D), key/value (B, KVH, kv, D), mask
    None (causal) or (B, 1, q, kv) bool / additive. Returns ((B, q, H, D), None)."""
    rows = query.shape[2]
    if not active() or rows > MAX_ROWS or query.shape[0] != 1 or kwargs.get("dropout"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    allowed = _allowed_for_pass(attention_mask, rows=rows, keys=key.shape[2])
    if allowed is None:  # a mask we cannot read as allowed / not allowed: plain SDPA
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
    keys, values = key[0].float(), value[0].float()  # (KVH, kv, D), once per layer
    groups = keys.shape[0]
    queries = query[0].float() * scale  # (H, q, D)
    outputs = [
        one_row(queries[:, i].reshape(groups, -1, queries.shape[-1]), keys, values, allowed[i])
        for i in range(rows)
    ]  # each (KVH, H / KVH, D)
    out = torch.stack(outputs).reshape(1, rows, query.shape[1], query.shape[-1])
    return out.to(query.dtype), None  # (B, q, H, D)


def one_row(query, keys, values, allowed: torch.Tensor | int) -> torch.Tensor:
    """Attention of one token's query heads, grouped by key head (KVH, H / KVH, D), over the
    keys it may see, in float32: those keys only, in cache order, no mask; a one-token pass
    makes the same call once the token is accepted. -> (KVH, H / KVH, D)."""
    if isinstance(allowed, int):  # the first `allowed` keys
        keys, values = keys[:, :allowed], values[:, :allowed]
    else:  # (n,) key indices: a tree row sees its cache and its ancestors only
        keys, values = keys.index_select(1, allowed), values.index_select(1, allowed)
    weights = torch.softmax(torch.bmm(query, keys.transpose(1, 2)), dim=-1)  # (KVH, r, n)
    return torch.bmm(weights, values)


def _allowed_for_pass(mask, *, rows: int, keys: int):
    """allowed_keys, read once per pass: every layer of a pass gets the same mask tensor."""
    memo = getattr(_state, "memo", None)  # (mask, rows, keys, allowed), reset by row_invariant
    if memo is None or memo[0] is not mask or memo[1:3] != (rows, keys):
        memo = _state.memo = (mask, rows, keys, allowed_keys(mask, rows=rows, keys=keys))
    return memo[3]


def allowed_keys(mask: torch.Tensor | None, *, rows: int, keys: int) -> list | None:
    """Per query row, the keys it attends to: an int n (the first n keys) or a tensor of key
    indices. None for a mask with values other than "attend" and "don't" (e.g. a bias)."""
    if mask is None:  # causal over the last `rows` keys
        return [keys - rows + i + 1 for i in range(rows)]
    mask = mask[0, 0]  # (q, kv): one batch row, shared by all heads
    if mask.dtype != torch.bool:
        blocked = mask <= torch.finfo(mask.dtype).min / 2
        if not bool(((mask == 0) | blocked).all()):
            return None
        mask = ~blocked
    allowed = []
    for row in mask:
        indices = row.nonzero()[:, 0]
        n = indices.numel()
        prefix = n > 0 and int(indices[-1]) == n - 1  # exactly the first n keys
        allowed.append(n if prefix else indices)
    return allowed
