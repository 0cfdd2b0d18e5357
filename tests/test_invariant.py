"""Row-invariant attention (invariant.py): in half precision on a CPU, a pass over a block
gives every token the very bits a one-token pass gives it, chain or tree, so verified and
ordinary decoding choose from the same numbers.

The attention tests hold on any machine. The whole-model tests need the machine's matrix
products and attention kernel to give a row the same bits in a fixed-size block as alone,
which the model probes before it relies on it (the 2-core Xeon with AMX passes); where the
probe fails, the model falls back to plain attention and the near-tie guarantee
(test_precision.py), and those tests check that fallback instead."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from shuffle_model.decoding.lossless import compare
from shuffle_model.decoding.tree import Block, keep_nodes, tree_inputs
from shuffle_model.model import invariant
from tests.tiny import tiny_backbone, tiny_mixer

PROMPT = [7, 8, 9, 10, 7, 8, 9, 3, 4, 5]


def half_model(dtype, *, invariant_rows=None, hidden=64):
    model = tiny_mixer(tiny_backbone(seed=0, dtype=dtype, init_std=0.2, hidden=hidden), seed=5)
    model.row_invariant_passes = invariant_rows
    return model


def relies_on_rows(model) -> bool:
    """Whether the model uses row-invariant attention here; if not, only because this
    machine's matrix products failed the probe."""
    if model.uses_row_invariance():
        return True
    trunk = model.trunk_module()
    layers, shape = invariant.probe_layers(trunk), invariant.attention_shape(trunk)
    products = all(invariant.blocks_agree(layer.weight) for layer in layers)
    assert not (products and invariant.attention_agrees(*shape, dtype=model.dtype))
    return False


def prefilled(model):
    cache = model.new_cache()
    model.trunk_forward(torch.tensor([PROMPT]), cache=cache)
    return cache


def one_at_a_time(model, tokens, cache=None):
    cache = cache if cache is not None else prefilled(model)
    return [model.trunk_forward(torch.tensor([[t]]), cache=cache).hidden[0, 0] for t in tokens]


class Attention(torch.nn.Module):
    num_key_value_groups = 2  # 4 query heads over 2 key heads, as the tiny models have


def attend(query, key, value, mask=None):
    with invariant.row_invariant(True):
        return invariant.attention(Attention(), query, key, value, mask, scaling=0.25)[0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "parents",
    [
        [-1, 0, 1, 0, 3, 3],  # a tree: row i sees the cache and its ancestors
        [-1, *range(19)],  # a chain longer than one block of ROWS rows
        [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 5, 6, 7, 8, 9, 10, 11],  # 21 nodes
    ],
)
@pytest.mark.parametrize("past", [37, 500])  # 500: hundreds of keys, rows across 512 keys
def test_each_row_of_a_block_attends_as_a_one_token_pass(dtype, parents, past):
    torch.manual_seed(0)
    n = len(parents)
    query = torch.randn(1, 4, n, 16, dtype=dtype)  # (B, H, q, D)
    key, value = (torch.randn(1, 2, past + n, 16, dtype=dtype) for _ in range(2))
    chain = attend(query, key, value)  # causal: row i sees past + i + 1 keys
    allowed = invariant.tree_mask(parents, past)
    tree = attend(query, key, value, allowed[None, None])
    for i in range(n):
        seen = slice(0, past + i + 1)  # what the cache holds when this token runs alone
        alone = attend(query[:, :, i : i + 1], key[:, :, seen].clone(), value[:, :, seen].clone())
        assert torch.equal(chain[:, i : i + 1], alone), f"chain row {i}"
        keys = allowed[i].nonzero()[:, 0]
        alone = attend(query[:, :, i : i + 1], key[:, :, keys], value[:, :, keys])
        assert torch.equal(tree[:, i : i + 1], alone), f"tree row {i}"


@pytest.mark.parametrize("least", [2, 4])
def test_folded_heads_attend_as_grouped_sdpa_and_each_row_as_a_one_token_pass(monkeypatch, least):
    """With each key head's query heads folded into its query rows (SmolLM2's shape: 9 query
    heads over 3 key heads), a pass computes what SDPA over grouped heads computes, and every
    row of a chain or tree of each width from 1 to ROWS the bits of its one-token pass. A
    width whose folded rows would leave the kernel's last block of KERNEL_QUERY_BLOCK rows
    fewer rows than a one-token call (3 x least) is widened (11 rows: 33 folded, a lone row in
    the last block, which a 2-core AMD EPYC sums otherwise: 13 rows, 15 for least 4)."""
    heads, key_heads, size = 9, 3, 64
    monkeypatch.setitem(invariant._query_rows, (heads, key_heads, size, torch.bfloat16), (least, 3))
    assert invariant.call_width(11, least=least, groups=3) == {2: 13, 4: 15}[least]
    assert invariant.call_width(1, least=least, groups=3) == least
    assert invariant.call_width(16, least=least, groups=3) == 16  # 48 rows: blocks of 32, 16
    assert invariant.call_width(11, least=4, groups=1) == 11  # not folded: one block
    assert invariant.folds(9, 3) == (3, 1) and invariant.folds(4, 4) == (1,)
    assert invariant.folds(32, 2) == (1,)  # 16 heads of 16 rows: a call the kernel splits in 64s
    module = SimpleNamespace(num_key_value_groups=3)

    def attend_folded(query, key, value, mask=None):
        with invariant.row_invariant(True):
            return invariant.attention(module, query, key, value, mask, scaling=size**-0.5)[0]

    torch.manual_seed(0)
    past = 600  # hundreds of keys: the kernel sums them in blocks of 512
    for n in range(1, invariant.ROWS + 1):
        query = torch.randn(1, heads, n, size, dtype=torch.bfloat16)
        key, value = (torch.randn(1, key_heads, past + n, size, dtype=torch.bfloat16) for _ in "kv")
        chain = attend_folded(query, key, value)  # (1, n, H, D)
        grouped = torch.nn.functional.scaled_dot_product_attention(
            query.float(),
            key.float(),
            value.float(),
            enable_gqa=True,
            attn_mask=invariant.tree_mask(list(range(-1, n - 1)), past)[None, None],
        )  # (1, H, n, D): the same attention, unfolded, in float32
        torch.testing.assert_close(chain.float(), grouped.transpose(1, 2), atol=2e-2, rtol=2e-2)
        parents = [-1] + [int(torch.randint(0, i, ())) for i in range(1, n)]
        allowed = invariant.tree_mask(parents, past)
        tree = attend_folded(query, key, value, allowed[None, None])
        for i in range(n):
            alone = attend_folded(
                query[:, :, i : i + 1], key[:, :, : past + i + 1], value[:, :, : past + i + 1]
            )
            assert torch.equal(chain[:, i : i + 1], alone), f"chain of {n}, row {i}"
            seen = allowed[i].nonzero()[:, 0]
            alone = attend_folded(query[:, :, i : i + 1], key[:, :, seen], value[:, :, seen])
            assert torch.equal(tree[:, i : i + 1], alone), f"tree of {n}, row {i}"


def test_a_pass_across_a_key_block_boundary_attends_in_one_call_per_key_length():
    """Each row attends over the key slots its own one-token pass has: a chain whose rows
    see 62..66 keys runs as two calls, over 64 and over 128 slots; a tree's rows likewise,
    and a tree whose rows all see at most 64 keys attends over 64 slots, although the pass
    caches more keys (every node's)."""
    past = invariant.KEY_BLOCK - 3
    chain = invariant.allowed_keys(None, rows=5, keys=past + 5)  # rows see 62, 63, ..., 66
    groups = invariant.by_key_slots(invariant.layouts(chain, keys=past + 5))
    assert [(g.key_slots, g.rows) for g in groups] == [(64, [0, 1, 2]), (128, [3, 4])]
    assert groups[0].in_order and not groups[1].in_order
    tree = invariant.tree_mask([-1, 0, 1, 0, 3, 4], past)  # depths 0 1 2 1 2 3
    allowed = invariant.allowed_keys(tree[None, None], rows=6, keys=past + 6)
    groups = invariant.by_key_slots(invariant.layouts(allowed, keys=past + 6))
    assert sorted((g.key_slots, tuple(g.rows)) for g in groups) == [
        (64, (0, 1, 2, 3, 4)),
        (128, (5,)),
    ]
    bush = invariant.tree_mask([-1, 0, 0, 0, 0, 0], past)  # rows see 62, 63: the pass holds 67
    allowed = invariant.allowed_keys(bush[None, None], rows=6, keys=past + 6)
    groups = invariant.by_key_slots(invariant.layouts(allowed, keys=past + 6))
    assert [(g.key_slots, sorted(g.rows)) for g in groups] == [(64, [0, 1, 2, 3, 4, 5])]
    torch.manual_seed(0)
    query = torch.randn(1, 4, 6, 16, dtype=torch.bfloat16)
    key, value = (torch.randn(1, 2, past + 6, 16, dtype=torch.bfloat16) for _ in range(2))
    for mask in (tree, bush):
        block = attend(query, key, value, mask[None, None])
        for i in range(6):
            seen = mask[i].nonzero()[:, 0]
            alone = attend(query[:, :, i : i + 1], key[:, :, seen], value[:, :, seen])
            assert torch.equal(block[:, i : i + 1], alone), f"row {i}"


def test_rows_share_a_key_layout_with_their_ancestors_only():
    """A chain attends over the keys as cached; each further path of a tree needs a layout of
    its own (its ancestors in sequence order), shared by the nodes on it."""
    past = 5
    chain = invariant.layouts(invariant.allowed_keys(None, rows=4, keys=past + 4), keys=past + 4)
    assert chain.orders == [None] and chain.in_order and chain.key_slots == invariant.KEY_BLOCK
    parents = [-1, 0, 1, 0, 3, 0]  # paths 0-1-2, 0-3-4 and 0-5
    allowed = invariant.allowed_keys(
        invariant.tree_mask(parents, past)[None, None], rows=6, keys=past + 6
    )
    found = invariant.layouts(allowed, keys=past + 6)
    assert len(found.orders) == 3 and not found.in_order
    home = {row: layout for layout, rows, _ in found.calls for row in rows}
    assert home[0] == home[1] == home[2] == 0  # the first path: the keys as cached
    assert home[3] == home[4] != home[5] != 0
    assert found.orders[home[4]].tolist() == [*range(past), past, past + 3, past + 4]


def test_products_give_each_row_the_bits_of_any_other_row_count():
    """In a row-invariant pass a linear layer computes as `product_rows` decides for this
    machine (as it is, a lone row padded to 2, or blocks of ROWS rows): a row alone then gets
    the bits it gets among others (beyond one block too); outside such a pass the layer
    computes as before. (On a 2-core AMD EPYC in bfloat16 the 1536-wide product gives a lone
    row other bits in 1 row of 16: a probe that compared one random lone row missed it.)"""
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        for shape in ((576, 1536), (1536, 576)):
            layer = torch.nn.Linear(shape[1], shape[0], bias=False).to(dtype)
            holder = torch.nn.Sequential(layer)
            invariant.pad_linear_layers(holder)
            x = torch.randn(1, 21, shape[1], dtype=dtype)
            with torch.no_grad():
                plain = torch.nn.functional.linear(x[:, :1], layer.weight)
                assert torch.equal(layer(x[:, :1]), plain)  # outside a row-invariant pass
                if invariant.product_rows(layer.weight) is None:  # nothing helps here
                    continue
                with invariant.row_invariant(True):
                    block = layer(x)
                    alone = [layer(x[:, i : i + 1]) for i in range(21)]
            for i in range(21):
                assert alone[i].shape == (1, 1, shape[0])
                assert torch.equal(block[:, i : i + 1], alone[i]), (dtype, shape, i)


def test_the_probe_finds_the_layers_and_refuses_kernels_that_mix_rows(monkeypatch):
    model = half_model(torch.bfloat16, hidden=48)
    layers = invariant.probe_layers(model.trunk_module())
    assert len(layers) >= 3 and all(isinstance(m, torch.nn.Linear) for m in layers)
    shape = invariant.attention_shape(model.trunk_module())
    assert len(shape) == 3 and shape[0] % shape[1] == 0
    assert not invariant.wanted(torch.float32, torch.device("cpu"), layers, shape)
    plain = torch.nn.functional

    def mixes_rows(x, weight, bias=None):  # a product whose rows depend on the others
        return plain.linear(x, weight, bias) + 1e-2 * x.mean()

    def mixes_queries(query, *args, **kwargs):  # an attention whose rows depend on the others
        return plain.scaled_dot_product_attention(query, *args, **kwargs) + 1e-2 * query.mean()

    monkeypatch.setattr(invariant, "F", SimpleNamespace(linear=mixes_rows, pad=plain.pad))
    monkeypatch.setattr(invariant, "_probed", {})
    assert not invariant.blocks_agree(layers[0].weight)
    assert not invariant.wanted(torch.bfloat16, torch.device("cpu"), layers, shape)
    kernels = SimpleNamespace(
        linear=plain.linear, pad=plain.pad, scaled_dot_product_attention=mixes_queries
    )
    monkeypatch.setattr(invariant, "F", kernels)
    monkeypatch.setattr(invariant, "_probed", {})
    assert not invariant.attention_agrees(*shape, dtype=torch.bfloat16)
    assert not invariant.wanted(torch.bfloat16, torch.device("cpu"), layers, shape)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_chain_pass_gives_each_token_the_bits_of_a_one_token_pass(dtype):
    model = half_model(dtype)  # automatic: on in half precision on a row-invariant CPU
    if not relies_on_rows(model):
        return
    chain = [11, 12, 13, 14, 15, 16, 17]
    many = model.trunk_forward(torch.tensor([chain]), cache=prefilled(model)).hidden[0]
    for k, one in enumerate(one_at_a_time(model, chain)):
        assert torch.equal(one, many[k]), f"row {k} differs"


def test_a_tree_pass_gives_each_branch_the_bits_of_one_token_passes_and_keeps_its_cache():
    model = half_model(torch.bfloat16)
    if not relies_on_rows(model):
        return
    # anchor 11, then branch a (12, 13) and branch b (14, 15, 16), both children of the anchor
    block = Block(
        tokens=[11, 12, 13, 14, 15, 16],
        parents=[-1, 0, 1, 0, 3, 4],
        sources=["anchor", "head", "head", "context", "context", "context"],
    )
    past = len(PROMPT)
    cache = prefilled(model)
    mask, positions = tree_inputs(block, past=past, dtype=model.dtype, device="cpu")
    ids = torch.tensor([block.tokens])
    tree = model.trunk_forward(ids, cache=cache, attention_mask=mask, position_ids=positions)
    for nodes in ([0, 1, 2], [0, 3, 4, 5]):
        ones = one_at_a_time(model, [block.tokens[n] for n in nodes])
        for node, one in zip(nodes, ones, strict=True):
            assert torch.equal(one, tree.hidden[0, node]), f"node {node} differs"
    keep_nodes(cache, past=past, forwarded=len(block.tokens), keep=[0, 3, 4])  # branch b kept
    after_tree = one_at_a_time(model, [21, 22], cache)
    plain = prefilled(model)
    one_at_a_time(model, [11, 14, 15], plain)
    assert all(map(torch.equal, after_tree, one_at_a_time(model, [21, 22], plain)))


def test_bfloat16_verified_decoding_is_identical_to_ordinary_decoding():
    model = half_model(torch.bfloat16, hidden=48)
    strict = relies_on_rows(model)
    for prompt in (PROMPT, [5, 6, 5, 6, 5, 6, 5], [40, 41]):
        plain = model.generate([prompt], max_new_tokens=32, max_parallel_tokens=0)
        for source in ("head+context", "head", "context"):
            fast = model.generate([prompt], max_new_tokens=32, draft_source=source)
            if strict:
                assert fast.tolist() == plain.tolist(), source
            else:  # the near-tie guarantee
                new = slice(len(prompt), None)
                result = compare(model, prompt, fast[0, new].tolist(), plain[0, new].tolist())
                assert result.within_guarantee, result.describe()


def test_outside_our_passes_and_in_float32_the_backbone_attends_as_plain_sdpa():
    ours = half_model(torch.bfloat16).backbone
    plain = tiny_backbone(seed=0, dtype=torch.bfloat16, init_std=0.2, hidden=64)
    assert ours.config._attn_implementation == invariant.NAME
    assert plain.config._attn_implementation == "sdpa"
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, plain(ids).logits)
    assert invariant.wanted(torch.bfloat16, torch.device("cpu"))
    assert not invariant.wanted(torch.float32, torch.device("cpu"))
    assert not invariant.wanted(torch.bfloat16, torch.device("cuda"))


def test_a_backbone_with_other_attention_never_claims_row_invariance():
    backbone = tiny_backbone(seed=0, dtype=torch.bfloat16, init_std=0.2, hidden=64)
    backbone.set_attn_implementation("eager")
    model = tiny_mixer(backbone, seed=5)
    model.row_invariant_passes = True  # asked for, but the attention is not ours
    assert not invariant.installed(backbone) and not model.uses_row_invariance()


def test_allowed_keys_reads_causal_tree_and_bias_masks():
    assert invariant.allowed_keys(None, rows=3, keys=10) == [8, 9, 10]
    tree = torch.tensor([[True, True, False, False], [True, False, False, True]])[None, None]
    first, second = invariant.allowed_keys(tree, rows=2, keys=4)
    assert first == 2 and second.tolist() == [0, 3]
    additive = torch.where(tree, 0.0, torch.finfo(torch.float32).min)
    assert invariant.allowed_keys(additive, rows=2, keys=4)[0] == 2
    assert invariant.allowed_keys(additive + 0.5, rows=2, keys=4) is None  # a bias: not ours


def test_products_that_round_a_row_alike_at_any_count_run_as_they_are(monkeypatch):
    """product_rows: a kernel whose rows never depend on the row count runs as it is (the
    layer keeps its own forward); one whose lone row alone rounds differently pads a lone
    row to 2; one that rounds by the count but not by the other rows runs in blocks of
    ROWS; one that mixes rows is refused."""
    plain = torch.nn.functional
    layer = torch.nn.Linear(24, 40, bias=False).to(torch.bfloat16)

    def by_count(x, weight, bias=None):  # rounds by how many rows share the product
        return plain.linear(x, weight, bias) + 1e-2 * x.shape[-2]

    def lone_row_differs(x, weight, bias=None):  # one row of 32, only when alone
        out = plain.linear(x, weight, bias)
        return out + 1e-2 * (x.shape[-2] == 1) * (x[..., :1] > 1.0)

    def mixing(x, weight, bias=None):  # a row depends on the others
        return plain.linear(x, weight, bias) + 1e-2 * x.mean()

    kernels = ((plain.linear, 1), (lone_row_differs, 2), (by_count, invariant.ROWS))
    for kernel, rows in (*kernels, (mixing, None)):
        monkeypatch.setattr(invariant, "F", SimpleNamespace(linear=kernel, pad=plain.pad))
        monkeypatch.setattr(invariant, "_probed", {})
        assert invariant.product_rows(layer.weight) == rows, kernel
        holder = torch.nn.Sequential(torch.nn.Linear(24, 40, bias=False).to(torch.bfloat16))
        invariant.pad_linear_layers(holder)
        wrapped = isinstance(holder[0].forward, invariant._BlockedForward)
        assert wrapped == (rows != 1)
        if rows is not None:  # a row alone gets the bits it gets among others
            x = torch.randn(1, 9, 24, dtype=torch.bfloat16)
            with torch.no_grad(), invariant.row_invariant(True):
                block = holder(x)
                assert all(
                    torch.equal(holder(x[:, i : i + 1]), block[:, i : i + 1]) for i in range(9)
                )


def test_key_block_layers_hold_what_dynamic_layers_hold_and_pad_without_copies():
    """KeyBlockLayer: updates, crops and tree.keep_nodes leave the keys a DynamicLayer would
    have; the keys padded to KEY_BLOCK for attention are a view of its buffer."""
    from transformers import DynamicCache

    torch.manual_seed(0)
    caches = [DynamicCache(), DynamicCache()]
    for cache in caches:
        cache.layers = [invariant.DynamicLayer()]
    invariant.keep_keys_in_blocks(caches[1])
    assert type(caches[1].layers[0]) is invariant.KeyBlockLayer
    steps = [(70, 0, None), (5, 2, None), (6, 6, [0, 2, 5]), (60, 0, None), (3, 1, None)]
    for new, crop, keep in steps:
        states = [torch.randn(1, 2, new, 8, dtype=torch.bfloat16) for _ in range(2)]
        past = caches[0].get_seq_length()
        for cache in caches:
            cache.update(*states, 0)
            if keep is not None:
                keep_nodes(cache, past=past, forwarded=new, keep=keep)
            elif crop:
                cache.crop(-crop)
        plain, blocked = (cache.layers[0] for cache in caches)
        assert torch.equal(plain.keys, blocked.keys) and torch.equal(plain.values, blocked.values)
    keys = caches[1].layers[0].keys  # (1, 2, kv, 8)
    found = invariant.layouts(
        invariant.allowed_keys(None, rows=1, keys=keys.shape[2]), keys=keys.shape[2]
    )
    padded = found.laid_out(keys)  # (1, 2, slots, 8)
    assert padded.shape[2] % invariant.KEY_BLOCK == 0 and padded.shape[2] >= keys.shape[2]
    assert padded.data_ptr() == keys.data_ptr()  # a view, not a copy
    assert torch.equal(padded[:, :, : keys.shape[2]], keys)
