"""Products on packed weights (packed.py): F.linear's bits, taken only in ShuffleLM's passes.

The bit-for-bit tests hold on any machine (where packing does not pay, `linear` is F.linear).
The routing tests force `pays` so that they check which product each path takes whatever the
machine's probe says; a packed product is still a real oneDNN call there, where the CPU packs
bfloat16 at all."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shuffle_model.model import packed
from tests.tiny import tiny_backbone, tiny_mixer

PROMPT = [3, 17, 9, 24, 4, 30, 12, 7]


def half_model(dtype=torch.bfloat16):
    return tiny_mixer(tiny_backbone(seed=0, dtype=dtype, init_std=0.2, hidden=48), seed=5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_gives_f_linear_bits_at_every_row_count(dtype, bias):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 40, generator=generator).to(dtype)
    b = torch.randn(96, generator=generator).to(dtype) if bias else None
    x = torch.randn(2, 40, 40, generator=generator).to(dtype)
    with torch.no_grad():
        for rows in (1, 2, 3, 5, 8, 16, 17, 32, 33, 40):
            assert torch.equal(
                packed.linear(x[0, :rows], weight, b), F.linear(x[0, :rows], weight, b)
            )
            out = packed.linear(x[:, :rows], weight, b)  # (2, rows, 96): leading dimensions kept
            assert out.shape == (2, rows, 96)
            assert torch.equal(out, F.linear(x[:, :rows], weight, b))


def test_the_probe_packs_half_precision_cpu_weights_only_where_bits_agree(monkeypatch):
    weight = torch.randn(64, 32).to(torch.bfloat16)
    assert not packed.pays(weight.float())  # float32 always takes F.linear (packed.py)
    monkeypatch.setattr(packed, "_probed", {})
    monkeypatch.setattr(packed, "_packed_product", lambda x, w, b: F.linear(x.float(), w.float()))
    assert not packed.pays(weight)  # a packed product that rounds differently is refused


def packing_exists(dtype) -> bool:
    """Whether this CPU's oneDNN packs weights of this dtype at all."""
    try:
        packed._pack(torch.zeros(8, 8, dtype=dtype))
    except RuntimeError:
        return False
    return True


def forced(monkeypatch) -> list:
    """Packing forced on; returns the list each packed product appends its row count to. Where
    this CPU's oneDNN cannot pack bfloat16 at all (no AVX-512BW or AVX-NE-CONVERT: some AMD EPYCs),
    the packed copy is a plain copy of the weight and its product F.linear: the routing and the
    re-packing are what these tests check."""
    calls = []
    real = packed._packed_product
    if not packing_exists(torch.bfloat16):
        monkeypatch.setattr(packed, "_pack", lambda weight: weight.detach().clone())
        real = F.linear

    def counted(x, weight, bias):
        calls.append(x.shape[0])
        return real(x, weight, bias)

    monkeypatch.setattr(packed, "pays", lambda weight, bias=None: True)
    monkeypatch.setattr(packed, "_packed_product", counted)
    return calls


def test_the_backbone_takes_packed_products_in_our_passes_only(monkeypatch):
    model = half_model()
    calls = forced(monkeypatch)
    model.trunk_forward(torch.tensor([PROMPT]), cache=model.new_cache())
    # every layer of our pass, over the prompt's rows (or a block of invariant.ROWS covering
    # them, where this machine's probe blocks a layer's products)
    assert calls and min(calls) >= len(PROMPT)
    calls.clear()
    with torch.no_grad():
        model.backbone(torch.tensor([PROMPT]))  # Hugging Face's own forward (the baselines)
    assert calls == []
    weight = torch.randn(16, 48, dtype=torch.bfloat16, requires_grad=True)
    packed.linear(torch.randn(2, 48, dtype=torch.bfloat16), weight).sum().backward()
    assert calls == [] and weight.grad is not None  # with gradients: F.linear (training)


def test_a_weight_changed_in_place_is_packed_again(monkeypatch):
    forced(monkeypatch)
    weight = torch.randn(64, 32).to(torch.bfloat16)
    x = torch.randn(3, 32).to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(packed.linear(x, weight), F.linear(x, weight))
        weight.mul_(2)
        assert torch.equal(packed.linear(x, weight), F.linear(x, weight))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_generation_with_packed_products_is_generation_without_them(monkeypatch, dtype):
    if not packing_exists(dtype):  # float16 on a CPU without AVX-512 FP16 (a 2-core AMD EPYC)
        weight = torch.randn(64, 32).to(dtype)
        with torch.no_grad():
            assert not packed.pays(weight)  # the probe refuses: products take F.linear there
            x = torch.randn(3, 32).to(dtype)
            assert torch.equal(packed.linear(x, weight), F.linear(x, weight))
        return
    plain = half_model(dtype)
    monkeypatch.setattr(packed, "pays", lambda weight, bias=None: False)
    settings = (
        {"draft_source": "head+context"},
        {"draft_source": "head"},
        {"max_parallel_tokens": 0},
    )
    expected = [plain.generate([PROMPT], max_new_tokens=24, **s).tolist() for s in settings]
    model = half_model(dtype)
    calls = forced(monkeypatch)
    for s, tokens in zip(settings, expected, strict=True):
        assert model.generate([PROMPT], max_new_tokens=24, **s).tolist() == tokens, s
    assert calls  # the packed products ran
