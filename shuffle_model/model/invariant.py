"""Row-invariant passes: every token of a pass gets the hidden state a one-token pass gives it.

Why: in half precision, verified decoding runs the backbone over a block of drafts, ordinary
decoding over one token at a time. For the two to choose the same tokens, the hidden state
of a token must not depend on how many tokens shared its pass. Per-token operations (norms,
rotary, activations) never depend on it. Two things do:

- Matrix products: kernels may be chosen by the number of rows, and then a product over 1
  row rounds differently from one over 5 or 16. Where they are (`product_rows`, probed per
  weight shape), a product over exactly ROWS rows still gives each row the same bits whatever
  the other rows hold, so in a row-invariant pass such products run over blocks of exactly
  ROWS rows (a lone row too; the padding's outputs are dropped). Where any count up to
  MAX_ROWS gives a row the same bits (a 2-core Xeon with AMX in bfloat16: only 64 rows and
  more round differently), products run as they are; where only the lone row's kernel
  rounds differently (a 2-core AMD EPYC in bfloat16, the 1536-wide down projection: 1 row
  in 16 differs in some output), a lone row is padded to 2 rows and the rest run as they are.
- Attention: the same holds for `F.scaled_dot_product_attention` once its shapes are fixed:
  query rows padded (to the fewest of QUERY_ROWS the probe finds invariant), keys padded
  (masked) to a multiple of KEY_BLOCK, and a row's keys padded as its own one-token pass
  pads them (a pass across a multiple of KEY_BLOCK: one call per key length). Each row then
  attends over keys laid out as a one-token pass lays them out, the sequence in order: a
  chain's rows share the cache's own layout; a tree row whose ancestors are not the block's
  first nodes gets a layout of its own (its cache, then its ancestors in order), and the
  layouts of a pass are batched into one call. The query heads of a key head are folded
  into its query rows (fewer, larger products), each call widened so that no block of the
  kernel's query rows holds fewer rows than a one-token call (`call_width`).

`wanted()` probes both on the machine (per weight shape, and attention in the model's shape)
before a model relies on them; a model whose probe fails runs in float32 by default
(faster_decode_mixer.py). While a pass runs inside `row_invariant(True)` both apply; passes
over more than MAX_ROWS tokens (prompts) run as one batch, as ordinary and verified decoding
both run them. Off in float32 (whose rounding never moved a choice in our measurements) and
on GPUs (unmeasured). Outside our passes (the benchmark's Hugging Face baselines on the same
backbone) the backbone computes exactly as before.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from . import packed

NAME = "shufflelm_row_invariant_sdpa"  # the attention implementation a backbone is given
ROWS = 16  # every product of a row-invariant pass covers this many rows, where it has to
LEAST_ROWS = (1, 2)  # or at least this many rows, the fewest probed to give a row its bits
QUERY_ROWS = (2, 4, ROWS)  # query rows an attention call may be padded to, fewest first:
# the fewest whose rows get a one-token pass's bits (probed per shape) is used (a 2-core AMD
# EPYC in bfloat16 without folding: 4, its kernels for 2 and 3 query rows sum over hundreds of
# keys otherwise)
KERNEL_QUERY_BLOCK = 32  # PyTorch's CPU flash attention splits a call of fewer than
# FOLDED_ROWS query rows into blocks of this many: a block of 1-3 rows may sum otherwise
# (`call_width`)
FOLDED_ROWS = 192  # heads are folded only where every call stays under this many rows
KEY_BLOCK = 64  # keys are padded (masked) to a multiple of this many
MAX_ROWS = 32  # longer passes (prompts) run as one batch: ordinary and verified alike
PROBE_SAMPLE = 128  # random rows probed per weight shape
PROBE_PASSES = 24  # random chain and tree passes probed against one-token passes
PROBE_WIDTHS = 4  # and passes probed of every row count from 2 to ROWS
PROBE_KEYS = 12 * KEY_BLOCK  # probed caches hold up to this many keys (kernels may sum
# values in other orders from a few hundred keys on)
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
    """Make the backbone's linear layers whose kernels round a row by the row count compute
    in blocks of ROWS rows inside a row-invariant pass (`blocked_linear`), as before outside
    one; layers whose products give a row the same bits at any count (`product_rows`) stay
    as they are. Done once, when a model first runs row-invariant (float32 models never
    carry it)."""
    if getattr(backbone, "_shufflelm_padded", False):
        return
    for layer in backbone.modules():
        if isinstance(layer, nn.Linear):
            rows = product_rows(layer.weight)
            if rows != 1:
                layer.forward = _BlockedForward(layer, rows or ROWS)
    backbone._shufflelm_padded = True


class _BlockedForward:
    """A linear layer's forward in a row-invariant pass: `blocked_linear` (rows == ROWS) or
    `padded_linear` (at least `rows` rows); else the product of the running pass (packed.py:
    F.linear outside ShuffleLM's passes)."""

    def __init__(self, layer: nn.Linear, rows: int = ROWS):
        self.layer, self.rows = layer, rows

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.layer.weight, self.layer.bias
        if not active() or (x.dim() > 2 and x.shape[0] != 1) or _rows(x) > MAX_ROWS:
            return _product(x, weight, bias)
        if self.rows == ROWS:
            return blocked_linear(x, weight, bias)
        return padded_linear(x, weight, bias, least=self.rows)


def padded_linear(x: torch.Tensor, weight: torch.Tensor, bias=None, *, least: int):
    """x (..., n, in) @ weight.T over at least `least` rows (fewer padded, the padding's
    outputs dropped): for kernels that give a row the same bits at any count from `least`
    on. -> (..., n, out)"""
    n = _rows(x)
    if n >= least:
        return _product(x, weight, bias)
    block = _block(x)  # (ROWS, in): rows past n stale
    block[:n].copy_(x.reshape(n, x.shape[-1]))
    out = _product(block[:least], weight, bias)[:n]  # (n, out)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def blocked_linear(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """x (..., n, in) @ weight.T as products over exactly ROWS rows each (the last one padded,
    its padding's outputs dropped): each row gets the same bits whatever else shares its
    pass. -> (..., n, out)"""
    lead, n = x.shape[:-2], _rows(x)
    if n <= ROWS and not torch.is_grad_enabled():
        block = _block(x)  # (ROWS, in): this thread's block for the width, rows past n stale
        block[:n].copy_(x.reshape(n, x.shape[-1]))
        out = _product(block, weight, bias)[:n]  # (n, out)
    else:
        flat = F.pad(x.reshape(n, x.shape[-1]), (0, 0, 0, -n % ROWS))  # (ROWS k, in)
        out = torch.cat(
            [_product(flat[i : i + ROWS], weight, bias) for i in range(0, len(flat), ROWS)]
        )[:n]
    return out.reshape(*lead, n, weight.shape[0]) if x.dim() > 1 else out[0]


def _product(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """The product of the running pass: on a packed weight in ShuffleLM's passes (packed.py,
    the same bits), F.linear elsewhere."""
    return packed.linear(x, weight, bias) if packed.active() else F.linear(x, weight, bias)


def _block(x: torch.Tensor) -> torch.Tensor:
    """This thread's (ROWS, width) input block for x's width, dtype and device. Its rows
    beyond a product's own keep an earlier product's values: a row's bits never depend on
    the other rows (`blocks_agree`), and reusing the block saves a copy per product."""
    return _thread_buffer("block", (ROWS, x.shape[-1]), x)


def _scratch(like: torch.Tensor, calls: int, slots: int, role: int) -> torch.Tensor:
    """This thread's (calls, KVH, slots, D) buffer for laying out keys (role 0) or values (1).
    It only ever holds keys and values, so the masked padding a call leaves stale is finite
    (a masked NaN would still poison its row)."""
    return _thread_buffer(("layout", role), (calls, like.shape[1], slots, like.shape[-1]), like)


def _thread_buffer(name, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """This thread's zeroed buffer `name` of this shape, in like's dtype and on its device,
    made once and reused: a plain tensor, written inside and outside inference mode alike."""
    buffers = getattr(_state, "buffers", None)
    if buffers is None:
        buffers = _state.buffers = {}
    key = (name, shape, like.dtype, like.device)
    if key not in buffers:
        with torch.inference_mode(False):
            buffers[key] = torch.zeros(shape, dtype=like.dtype, device=like.device)
    return buffers[key]


def wanted(dtype: torch.dtype, device: torch.device, layers=(), attention_shape=None) -> bool:
    """The default: on in half precision on a CPU whose matrix products (`layers`, probed) and
    attention (in `attention_shape`, probed) give a row the same bits in a block of ROWS
    rows as alone."""
    if dtype not in HALF or torch.device(device).type != "cpu":
        return False
    if not all(product_rows(layer.weight) for layer in layers):
        return False
    return attention_shape is None or attention_agrees(*attention_shape, dtype=dtype)


def probe_layers(model: nn.Module) -> list[nn.Module]:
    """The linear layers of the trunk's first decoder layer, one per weight shape."""
    first = next((m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")), None)
    shapes = {}
    for module in first.modules() if first is not None else ():
        if isinstance(module, nn.Linear):
            shapes.setdefault(tuple(module.weight.shape), module)
    return list(shapes.values())


def attention_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """(query heads, key heads, head size) of a Hugging Face backbone's attention."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    if heads is None:
        return None
    key_heads = getattr(config, "num_key_value_heads", None) or heads
    size = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, key_heads, size


# --- matrix products --------------------------------------------------------------------------

_probed: dict = {}  # (kind, shape, dtype, device, threads) -> whether the rows agree


def product_rows(weight: torch.Tensor) -> int | None:
    """How a row-invariant pass runs x @ weight.T here: over at least 1 (as it is: any count of
    rows gives a row the same bits, as on a Xeon with AMX in bfloat16 up to 32 rows) or 2
    rows (only a lone row rounds differently: padded to 2), the fewest of LEAST_ROWS that
    `counts_agree`; ROWS, in blocks of ROWS rows (`blocked_linear`); None where none gives a
    row the same bits."""
    for least in LEAST_ROWS:
        if counts_agree(weight, least=least):
            return least
    return ROWS if blocks_agree(weight) else None


def _probe_key(kind: str, weight: torch.Tensor) -> tuple:
    """Kernels are chosen by shape, dtype, device and thread count: probed once per each."""
    return kind, tuple(weight.shape), weight.dtype, weight.device, torch.get_num_threads()


@torch.no_grad()
def counts_agree(weight: torch.Tensor, *, least: int = 1) -> bool:
    """Whether x @ weight.T gives every row the bits of its own product (over `least` rows,
    the others random) in a product over any count of rows from `least` to MAX_ROWS,
    wherever it sits and whatever the other rows are. Every row of every count is compared:
    a kernel that rounds differently may change one output of one row in 16."""
    key = _probe_key(f"counts from {least}", weight)
    if key not in _probed:
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(2 * MAX_ROWS, weight.shape[1], generator=generator)
        x = x.to(device=weight.device, dtype=weight.dtype)
        company = [
            [i, *(MAX_ROWS + (i + 7 * j) % MAX_ROWS for j in range(1, least))]
            for i in range(MAX_ROWS)
        ]  # row i, then least - 1 rows of the second half
        own = torch.cat([F.linear(x[rows], weight)[:1] for rows in company])  # (MAX_ROWS, out)
        agree = True
        for count in range(least, MAX_ROWS + 1):
            start = int(torch.randint(0, MAX_ROWS - count + 1, (), generator=generator))
            rows = x[start : start + count]
            others = torch.cat([rows, x[MAX_ROWS : 2 * MAX_ROWS - count]])  # other company
            agree &= torch.equal(F.linear(rows, weight), own[start : start + count])
            agree &= torch.equal(F.linear(others, weight)[:count], own[start : start + count])
            if not agree:
                break
        _probed[key] = agree
    return _probed[key]


@torch.no_grad()
def blocks_agree(weight: torch.Tensor) -> bool:
    """Whether x @ weight.T in blocks of ROWS rows gives every row the same bits wherever it
    sits in its block and whatever the other rows are (zero padding included)."""
    key = _probe_key("blocks", weight)
    if key not in _probed:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(PROBE_SAMPLE, weight.shape[1], generator=generator)
        x = x.to(device=weight.device, dtype=weight.dtype)
        reference = blocked_linear(x, weight)  # (rows, out)
        order = torch.randperm(PROBE_SAMPLE, generator=generator)
        shuffled = torch.equal(blocked_linear(x[order], weight), reference[order])
        alone = all(
            torch.equal(blocked_linear(x[i : i + 1], weight), reference[i : i + 1])
            for i in range(0, PROBE_SAMPLE, 7)
        )
        _probed[key] = shuffled and alone
    return _probed[key]


def _rows(x: torch.Tensor) -> int:
    return x.shape[-2] if x.dim() > 1 else 1


# --- attention ---------------------------------------------------------------------------------


def attention(module, query, key, value, attention_mask, **kwargs):
    """An AttentionInterface function: query (B, H, q, D), key/value (B, KVH, kv, D), mask
    None (causal) or (B, 1, q, kv) bool / additive. Returns ((B, q, H, D), None)."""
    rows = query.shape[2]
    plain = rows > MAX_ROWS or query.shape[0] != 1 or kwargs.get("dropout")
    if not active() or plain or kwargs.get("sliding_window"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    found = _layouts_for_pass(attention_mask, rows=rows, keys=key.shape[2])
    if found is None:  # a mask we cannot read as allowed / not allowed: plain SDPA
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
    least, groups = _query_rows.get(_attention_key(query, key), (ROWS, 1))
    return found.attend(query, key, value, scale=scale, least=least, groups=groups), None


_query_rows: dict = {}  # (heads, key heads, size, dtype) -> (fewest query rows of a call,
# query heads folded into the rows of their key head: 1 where not folded)


def _attention_key(query: torch.Tensor, key: torch.Tensor) -> tuple:
    return query.shape[1], key.shape[1], query.shape[-1], query.dtype


@dataclass
class Layouts:
    """How the rows of one pass attend, worked out once per pass (every layer gets the same
    mask): the key orders (`orders`, None for the cache's own), and per call of ROWS rows
    (`calls`) which layout, which pass rows and how many keys each row sees."""

    orders: list  # per layout: None (keys as cached) or (kv',) key indices in sequence order
    calls: list  # per call: (layout, [pass rows], [keys seen per row])
    keys: int  # keys cached for this pass (kv)
    key_slots: int  # keys padded to this (a multiple of KEY_BLOCK)
    in_order: bool = False  # a chain of at most ROWS rows: one call, the keys as cached
    width: int = ROWS  # query rows per call (W): the pass's largest call, at least `least`
    groups: int = 1  # query heads folded into their key head's rows (G; 1: not folded)
    _indices: tuple | None = None  # (query, key, output) gather indices, built on first use
    _mask: torch.Tensor | None = None  # (C, 1, G W, L), built on first use

    def __post_init__(self) -> None:
        first = self.calls[0] if len(self.calls) == 1 else None
        self.in_order = (
            first is not None
            and self.orders[first[0]] is None
            and first[1] == list(range(len(first[1])))
        )

    def attend(
        self, query, key, value, *, scale: float, least: int = ROWS, groups: int = 1
    ) -> torch.Tensor:
        """One SDPA call over every (layout, rows) pair, batched, each call's query rows
        padded to W: the largest call's, at least `least` (`call_width`). With `groups` G > 1
        the G query heads of a key head are folded into its query rows (G W rows of one head
        attending over its keys, as `enable_gqa` would repeat them: fewer, larger products
        for the kernel). -> (1, q, H, D)"""
        widest = max(len(rows) for _, rows, _ in self.calls)
        self.use_width(call_width(widest, least=least, groups=groups), groups)
        queries = self.gathered(query)  # (C, H, W, D)
        out = F.scaled_dot_product_attention(
            folded(queries, groups),  # (C, H / G, G W, D)
            self.laid_out(key, role=0),  # (C, KVH, L, D)
            self.laid_out(value, role=1),
            attn_mask=self.mask(query),
            scale=scale,
            enable_gqa=groups == 1,
        ).reshape(queries.shape)  # (C, H, W, D)
        if self.in_order:
            return out[:, :, : len(self.calls[0][1])].transpose(1, 2)  # (1, q', H, D)
        flat = out.transpose(1, 2).reshape(-1, *out.shape[1::2])  # (C W, H, D)
        return flat.index_select(0, self.indices(query.device)[2])[None]  # (1, q', H, D)

    @property
    def rows(self) -> list[int]:
        """The pass rows these calls compute (q' of them), in order: their outputs' order."""
        return sorted(row for _, rows, _ in self.calls for row in rows)

    def use_width(self, width: int, groups: int = 1) -> None:
        """Pad each call's query rows to `width`, G heads folded (the same for every layer of a
        pass)."""
        if (width, groups) != (self.width, self.groups):
            self.width, self.groups, self._indices, self._mask = width, groups, None, None

    def gathered(self, query: torch.Tensor) -> torch.Tensor:
        """(1, H, q, D) -> (C, H, W, D): per call, its rows, then padding rows."""
        if self.in_order:
            missing = self.width - query.shape[2]
            return F.pad(query, (0, 0, 0, missing)) if missing else query
        rows = query[0].index_select(1, self.indices(query.device)[0])  # (H, C W, D)
        return rows.view(rows.shape[0], -1, self.width, rows.shape[-1]).transpose(0, 1)

    def laid_out(self, key: torch.Tensor, *, role: int = 0) -> torch.Tensor:
        """(1, KVH, kv, D) as cached -> (C, KVH, L, D): per call, its layout's keys in order,
        then padding (masked). `role` 0 for keys, 1 for values: each has a buffer of its own."""
        if self.in_order:
            buffer = _buffer_of(key)
            if buffer is not None and buffer.shape[2] >= self.key_slots:
                return buffer[:, :, : self.key_slots]  # the padding: stale or zero, masked
            return F.pad(key, (0, 0, 0, self.key_slots - key.shape[2]))
        shared, calls, slots, sources = self.indices(key.device)[1]
        laid = _scratch(key, len(self.calls), self.key_slots, role)  # (C, KVH, L, D)
        laid[:, :, :shared] = key[:, :, :shared]  # the cache as every layout lays it (1 -> C)
        laid[calls, :, slots] = key[0, :, sources].transpose(0, 1)  # (T, KVH, D): the rest
        return laid

    def shared_keys(self) -> int:
        """How many keys every call lays out as cached (a tree pass: the whole cache before
        it): copied to every call at once, only the keys after them gathered per call."""
        shared = self.key_slots
        for layout, _, _ in self.calls:
            order = self.orders[layout]
            if order is None:
                shared = min(shared, self.keys)
                continue
            order = order[:shared]
            matches = order == torch.arange(len(order), device=order.device)
            shared = len(order) if bool(matches.all()) else int((~matches).nonzero()[0, 0])
        return shared

    def indices(self, device) -> tuple[torch.Tensor, tuple, torch.Tensor]:
        """Gather indices: query rows per call (C W,); how many keys every call lays out as
        cached (`shared_keys`) and the keys each call lays out after them, as (call, slot,
        cached key) triples (T,) each; and, per pass row of these calls, its place in the
        calls' output (q'). Query padding points at row 0: padding rows never reach a real
        row's result."""
        if self._indices is None:
            shared = self.shared_keys()
            queries, calls, slots, sources, places = [], [], [], [], {}
            for c, (layout, rows, _) in enumerate(self.calls):
                queries += rows + [0] * (self.width - len(rows))
                order = self.orders[layout]
                laid = list(range(self.keys)) if order is None else order.tolist()
                laid = laid[shared : self.key_slots]  # its rows see no key beyond (by_key_slots)
                calls += [c] * len(laid)
                slots += range(shared, shared + len(laid))
                sources += laid
                places.update({row: c * self.width + j for j, row in enumerate(rows)})
            output = [places[row] for row in sorted(places)]
            tensor = partial(torch.tensor, dtype=torch.long, device=device)
            laid_keys = (shared, *map(tensor, (calls, slots, sources)))
            self._indices = (tensor(queries), laid_keys, tensor(output))
        return self._indices

    def mask(self, query: torch.Tensor) -> torch.Tensor:
        """(C, 1, G W, L) additive, in the query's dtype (as SDPA turns a bool mask into,
        once per pass instead of per layer): row j of call c sees its first seen[j] keys, in
        each of the G folded heads; padding rows see the first key only (a row that sees
        nothing would be NaN)."""
        if self._mask is None:
            device = query.device
            seen = [counts + [1] * (self.width - len(counts)) for _, _, counts in self.calls]
            seen = torch.tensor(seen, device=device)  # (C, W)
            slots = torch.arange(self.key_slots, device=device)  # (L,)
            allowed = (slots[None, None, :] < seen[:, :, None])[:, None]  # (C, 1, W, L)
            allowed = allowed.repeat(1, 1, self.groups, 1)  # (C, 1, G W, L): as folded
            hidden = torch.zeros(allowed.shape, dtype=query.dtype, device=device)
            self._mask = hidden.masked_fill_(~allowed, float("-inf"))
        return self._mask


@dataclass
class PassLayouts:
    """A pass's attention: its Layouts per key length (`by_key_slots`), one SDPA call each,
    and where each pass row's output lies among theirs (built once per pass)."""

    groups: list[Layouts]
    _places: torch.Tensor | None = None  # (q,): pass row -> its place in the joined outputs

    def attend(self, query, key, value, *, scale: float, least: int, groups: int) -> torch.Tensor:
        """(1, q, H, D): every pass row's attention output, in pass order."""
        outs = [
            group.attend(query, key, value, scale=scale, least=least, groups=groups)
            for group in self.groups
        ]
        if len(outs) == 1:
            return outs[0]
        return torch.cat(outs, 1).index_select(1, self.places(query.device))

    def places(self, device) -> torch.Tensor:
        if self._places is None:
            order = [row for group in self.groups for row in group.rows]  # as joined
            places = torch.empty(len(order), dtype=torch.long)
            places[torch.tensor(order)] = torch.arange(len(order))
            self._places = places.to(device)
        return self._places


def call_width(rows: int, *, least: int, groups: int) -> int:
    """Query rows per call for a pass whose largest call has `rows` (at least `least`): with
    G heads folded, widened until no block of KERNEL_QUERY_BLOCK folded rows the kernel
    splits the call into holds fewer rows than a one-token call (G least): a 2-core AMD EPYC
    in bfloat16 gives a lone row in the last block (G W = 33) other bits."""
    width = max(rows, least)
    while 0 < groups * width % KERNEL_QUERY_BLOCK < groups * least:
        width += 1
    return width


def folded(queries: torch.Tensor, groups: int) -> torch.Tensor:
    """(C, H, W, D) -> (C, H / G, G W, D): the G query heads of each key head (heads
    k G .. k G + G - 1, as `enable_gqa` pairs them) as one head of G W rows."""
    calls, heads, width, size = queries.shape
    return queries.reshape(calls, heads // groups, groups * width, size)


def _layouts_for_pass(mask, *, rows: int, keys: int) -> PassLayouts | None:
    """The pass's layouts, read once per pass: every layer of a pass gets the same mask
    tensor."""
    memo = getattr(_state, "memo", None)  # (mask, rows, keys, layouts), reset by row_invariant
    if memo is None or memo[0] is not mask or memo[1:3] != (rows, keys):
        allowed = allowed_keys(mask, rows=rows, keys=keys)
        found = None if allowed is None else PassLayouts(by_key_slots(layouts(allowed, keys=keys)))
        memo = _state.memo = (mask, rows, keys, found)
    return memo[3]


def by_key_slots(found: Layouts) -> list[Layouts]:
    """The calls of a pass split by the key slots each row's own one-token pass has (its keys
    seen, padded to KEY_BLOCK): one SDPA call per key length. Kernels may sum a row's
    values in an order set by the key length (a 2-core AMD EPYC in bfloat16, hundreds of
    keys), so a row among keys padded further than its own pass pads them can get other
    bits. A tree pass caches every node's keys, so its rows may all see fewer key slots
    than the whole pass holds; a pass straddles a KEY_BLOCK boundary at most once
    (ROWS < KEY_BLOCK)."""
    groups: dict[int, list] = {}
    for layout, rows, seen in found.calls:
        for row, count in zip(rows, seen, strict=True):
            calls = groups.setdefault(_padded_keys(count), [])
            if not calls or calls[-1][0] != layout or len(calls[-1][1]) == ROWS:
                calls.append((layout, [], []))
            calls[-1][1].append(row)
            calls[-1][2].append(count)
    if list(groups) == [found.key_slots]:  # every row pads its keys as the whole pass does
        return [found]
    return [Layouts(found.orders, calls, found.keys, slots) for slots, calls in groups.items()]


def layouts(allowed: list, *, keys: int) -> Layouts:
    """Group the rows of a pass by the order their keys must be laid out in: rows that see a
    prefix of the keys as cached share the cache's own layout; a tree row that sees other
    keys (its ancestors) needs them in sequence order, and shares that order with the rows
    whose keys are a prefix of it (its ancestors)."""
    orders: list = [None]
    members: list[list[tuple[int, int]]] = [[]]  # per layout: (row, keys seen)
    lists = [(i, a) for i, a in enumerate(allowed) if not isinstance(a, int)]
    for i, a in enumerate(allowed):
        if isinstance(a, int):
            members[0].append((i, a))
    for i, order in sorted(lists, key=lambda item: -item[1].numel()):
        home = next(
            (
                k
                for k, other in enumerate(orders)
                if other is not None
                and other.numel() >= order.numel()
                and torch.equal(other[: order.numel()], order)
            ),
            None,
        )
        if home is None:
            orders.append(order)
            members.append([])
            home = len(orders) - 1
        members[home].append((i, order.numel()))
    calls = []
    for layout, rows in enumerate(members):
        rows.sort()
        for start in range(0, len(rows), ROWS):
            chunk = rows[start : start + ROWS]
            calls.append((layout, [r for r, _ in chunk], [n for _, n in chunk]))
    return Layouts(orders, calls, keys, _padded_keys(keys))


# --- the cache -----------------------------------------------------------------------------


class KeyBlockLayer(DynamicLayer):
    """A Hugging Face cache layer whose keys and values live in a buffer of a multiple of
    KEY_BLOCK slots: a pass writes only its own keys (no concatenation of the whole cache),
    and a row-invariant pass's keys padded to KEY_BLOCK are a view of the buffer, not a copy.
    Crops and in-place writes (tree.keep_nodes) work as on a DynamicLayer."""

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys = _appended(self.keys, key_states)
        self.values = _appended(self.values, value_states)
        return self.keys, self.values


def keep_keys_in_blocks(cache) -> None:
    """Give a DynamicCache KeyBlockLayers in place of its plain layers."""
    cache.layers = [
        KeyBlockLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]


_buffers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # data_ptr -> buffer


def _appended(cached: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """cached (B, H, n, D) (a view of a buffer, or empty), new (B, H, m, D) -> (B, H, n + m, D),
    a view of a buffer with room for at least the padding of n + m keys to KEY_BLOCK."""
    length = cached.shape[-2] if cached.numel() else 0
    end = length + new.shape[-2]
    buffer = _buffer_of(cached) if length else None
    if buffer is None or buffer.shape[2] < _padded_keys(end):
        capacity = _padded_keys(end + end // 2)  # room for later passes: grows by half
        buffer = new.new_zeros(*new.shape[:2], capacity, new.shape[-1])  # (B, H, slots, D)
        if length:
            buffer[:, :, :length] = cached
        _buffers[buffer.data_ptr()] = buffer
    buffer[:, :, length:end] = new
    return buffer[:, :, :end]


def _buffer_of(keys: torch.Tensor) -> torch.Tensor | None:
    """The KeyBlockLayer buffer `keys` (B, H, n, D) is the first n slots of, if any."""
    buffer = _buffers.get(keys.data_ptr()) if keys.numel() else None
    if buffer is None or keys.stride() != buffer.stride():
        return None
    same = keys.shape[:2] == buffer.shape[:2] and keys.shape[-1] == buffer.shape[-1]
    return buffer if same and keys.dtype == buffer.dtype else None


def _padded_keys(keys: int) -> int:
    return -(-keys // KEY_BLOCK) * KEY_BLOCK


@torch.no_grad()
def attention_agrees(heads: int, key_heads: int, size: int, *, dtype: torch.dtype) -> bool:
    """Whether, in this shape and dtype, each row of chain and tree passes attends with the
    bits of a one-token pass over the same keys in sequence order, with calls padded to one
    of QUERY_ROWS query rows, query heads folded into their key head's rows or not. The
    first that agrees is kept for the shape, folded before not, the fewest rows first (a
    one-token pass then pays for that many query rows, not ROWS)."""
    shape = (heads, key_heads, size, dtype)
    for groups in folds(heads, key_heads):
        for least in QUERY_ROWS:
            if groups * least > KERNEL_QUERY_BLOCK:  # a one-token call in one block only
                continue
            _query_rows[shape] = (least, groups)
            if _rows_agree(heads, key_heads, size, dtype=dtype):
                return True
    del _query_rows[shape]
    return False


def folds(heads: int, key_heads: int) -> tuple[int, ...]:
    """How many query heads a call may fold into each key head's rows, to be probed in this
    order: G, then 1 (not folded); G only where every call (at most ROWS rows, widened by
    `call_width` by less than a block) stays under FOLDED_ROWS rows, which the kernel splits
    into blocks of KERNEL_QUERY_BLOCK."""
    groups = heads // key_heads
    if groups > 1 and groups * ROWS + KERNEL_QUERY_BLOCK <= FOLDED_ROWS:
        return groups, 1
    return (1,)


def probe_passes(generator: torch.Generator) -> list[tuple[int, int, bool]]:
    """The probed passes as (rows, cached keys, tree or chain): PROBE_PASSES random ones
    (caches of up to PROBE_KEYS keys, every third across a KEY_BLOCK), then PROBE_WIDTHS of
    every row count from 2 to ROWS, one in four across a KEY_BLOCK (a kernel may give other
    bits for one call width alone, and to some rows only: a lone row in its last block)."""

    def draw(low, high):
        return int(torch.randint(low, high, (), generator=generator))

    counts = [draw(2, ROWS + 1) for _ in range(PROBE_PASSES)]
    counts += [n for n in range(2, ROWS + 1) for _ in range(PROBE_WIDTHS)]
    passes = []
    for trial, n in enumerate(counts):
        past = draw(3, PROBE_KEYS)
        across = trial % 3 == 2 if trial < PROBE_PASSES else trial % 4 == 3  # a KEY_BLOCK
        if across:
            past = max(3, _padded_keys(past) - draw(1, n))
        passes.append((n, past, trial % 2 == 1))
    return passes


def _rows_agree(heads: int, key_heads: int, size: int, *, dtype: torch.dtype) -> bool:
    generator = torch.Generator().manual_seed(0)
    module = type("Probe", (), {"num_key_value_groups": heads // key_heads})()

    def attend(query, key, value, mask=None):
        with row_invariant(True):
            return attention(module, query, key, value, mask, scaling=size**-0.5)[0]

    for n, past, tree in probe_passes(generator):
        query = torch.randn(1, heads, n, size, generator=generator).to(dtype)
        key, value = (
            torch.randn(1, key_heads, past + n, size, generator=generator).to(dtype)
            for _ in range(2)
        )
        parents = [-1] + [
            int(torch.randint(0, i, (), generator=generator)) if tree else i - 1
            for i in range(1, n)
        ]
        allowed = tree_mask(parents, past)
        block = attend(query, key, value, allowed[None, None])
        for i in range(n):
            seen = allowed[i].nonzero()[:, 0]
            alone = attend(query[:, :, i : i + 1], key[:, :, seen], value[:, :, seen])
            if not torch.equal(block[:, i : i + 1], alone):
                return False
    return True


def tree_mask(parents: list[int], past: int) -> torch.Tensor:
    """(n, past + n) bool: each node of a tree block (parents: -1 for the root, else an
    earlier node) sees the cache, its ancestors and itself."""
    n = len(parents)
    allowed = torch.zeros(n, past + n, dtype=torch.bool)
    allowed[:, :past] = True
    for node in range(n):
        ancestor = node
        while ancestor >= 0:
            allowed[node, past + ancestor] = True
            ancestor = parents[ancestor]
    return allowed


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
