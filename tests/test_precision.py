"""Half precision: tokens are chosen on float32 logits, and verified decoding differs from
ordinary decoding only where ordinary decoding stood at a near-tie."""

from __future__ import annotations

import threading

import pytest
import torch

from shuffle_model.decoding.cost import CostCurve
from shuffle_model.decoding.lossless import (
    NEAR_TIE,
    ROW_INVARIANT_TIE,
    compare,
    model_bound,
    near_tie_bound,
)
from shuffle_model.model.precision import candidate_logits
from tests.tiny import tiny_backbone, tiny_mixer

FLAT = CostCurve.from_ratios([1.0] * 24)
PROMPTS = [[7, 8, 9, 10, 7, 8, 9], [5, 6, 5, 6, 5], [11, 12, 13, 14], [3, 20, 31, 3, 20], [40]]


def half_model(dtype=torch.bfloat16, seed=0):
    backbone = tiny_backbone(seed=seed, dtype=dtype, init_std=0.2)
    model = tiny_mixer(backbone, seed=seed + 5)
    model.cost_curve = FLAT
    return model


def test_logits_are_float32_and_computed_from_the_unrounded_norm_input():
    model = half_model()
    ids = torch.tensor([PROMPTS[0]])
    out = model.trunk_forward(ids)
    assert out.hidden.dtype == torch.bfloat16 and out.logits.dtype == torch.float32
    captured = {}
    norm = model.backbone.model.norm
    handle = norm.register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    model.trunk_forward(ids)
    handle.remove()
    x = captured["x"].float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    expected = (norm.weight.float() * x) @ model.backbone.lm_head.weight.float().T
    torch.testing.assert_close(out.logits, expected)
    rounded = model.backbone.lm_head(out.hidden).float()  # what bfloat16 logits would be
    assert not torch.equal(out.logits, rounded)


def test_float32_models_keep_their_own_logits(mixer):
    ids = torch.tensor([PROMPTS[1]])
    out = mixer.trunk_forward(ids)
    torch.testing.assert_close(out.logits, mixer.backbone.lm_head(out.hidden).float())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_verified_decoding_differs_only_at_near_ties(dtype):
    identical = total = 0
    for seed in range(3):
        model = half_model(dtype, seed=seed)
        for prompt in PROMPTS:
            plain = model.generate([prompt], max_new_tokens=24, max_parallel_tokens=0)
            for source in ("head+context", "head", "context"):
                fast = model.generate([prompt], max_new_tokens=24, draft_source=source)
                result = compare(
                    model, prompt, fast[0, len(prompt) :].tolist(), plain[0, len(prompt) :].tolist()
                )
                assert result.within_guarantee, result.describe()
                identical += result.identical
                total += 1
    # token for token where passes are row-invariant (the default here, when the CPU allows)
    assert identical == total if model.uses_row_invariance() else identical >= 0.9 * total


def test_compare_finds_the_first_difference_and_its_gap():
    model = half_model()
    prompt = PROMPTS[2]
    plain = model.generate([prompt], max_new_tokens=10, max_parallel_tokens=0)[0, 4:].tolist()
    assert compare(model, prompt, plain, plain).identical
    other = list(plain)
    other[5] = (plain[5] + 1) % 64
    result = compare(model, prompt, other, plain)
    assert not result.identical and result.position == 5 and result.tokens == (other[5], plain[5])
    logits = model.trunk_forward(torch.tensor([prompt + plain[:5]])).logits[0, -1]
    assert result.gap == pytest.approx(float((logits[other[5]] - logits[plain[5]]).abs()))
    assert result.bound == near_tie_bound(torch.bfloat16, row_invariant=True) > 0
    assert "token 5" in result.describe()
    shorter = compare(model, prompt, plain[:7], plain)
    assert not shorter.within_guarantee and "length" in shorter.describe()
    exact = compare(half_model(torch.float32), prompt, other, plain)
    assert exact.bound == 0.0 and not exact.within_guarantee


def test_the_bound_is_a_float32_tie_where_passes_are_row_invariant():
    model = half_model()
    model.row_invariant_passes = True
    assert model_bound(model) == ROW_INVARIANT_TIE < 0.01
    model.row_invariant_passes = False
    assert model_bound(model) == NEAR_TIE[torch.bfloat16]
    assert near_tie_bound(torch.float32, row_invariant=True) == 0.0


def test_concurrent_generations_keep_their_own_float32_logits():
    """The norm's input is remembered per thread: two generations at once (the app runs two)
    give what each gives alone."""
    model = half_model()
    alone = [model.generate([p], max_new_tokens=16).tolist() for p in PROMPTS[:2]]
    results = {}

    def run(i):
        for _ in range(3):
            results.setdefault(i, []).append(
                model.generate([PROMPTS[i]], max_new_tokens=16).tolist()
            )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == alone[i] for i in range(2) for r in results[i])


# --- the certified argmax of greedy decoding ----------------------------------------------------


def test_greedy_logits_certify_the_float32_argmax():
    model = half_model()
    heads = model.float32_logits
    assert heads._bound_holds()  # the bound held on this machine's kernels
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(512, 32, generator=generator) * 4  # (rows, H), as large as hidden states
    weight = model.backbone.lm_head.weight.float()
    full = x @ weight.T  # (rows, V)
    certified = heads.certified(x)
    assert torch.equal(certified.argmax(-1), full.argmax(-1))
    best = full.argmax(-1, keepdim=True)
    torch.testing.assert_close(certified.gather(-1, best), full.gather(-1, best))
    assert not torch.equal(certified, full)  # the other logits are the half-precision ones


def test_a_close_top_is_settled_by_the_float32_logits_of_every_contender():
    model = half_model()
    heads = model.float32_logits
    with torch.no_grad():
        model.backbone.lm_head.weight[4] = model.backbone.lm_head.weight[3]  # a tie of two
        model.backbone.lm_head.weight[5] = model.backbone.lm_head.weight[3] * 0.98  # and close
    weight = model.backbone.lm_head.weight.float()
    x = weight[3:4] * 8  # tokens 3 and 4 lead at the same logit, 5 close behind
    full = x @ weight.T
    logits = heads.certified(x)
    every = candidate_logits(x, weight, torch.arange(weight.shape[0])[None])  # (1, V) exact
    assert logits.argmax(-1).item() == every.argmax(-1).item() == full.argmax(-1).item() == 3
    for token in (3, 4):  # the contenders' logits are float32 sums, as the whole product's
        assert logits[0, token] == every[0, token]
    torch.testing.assert_close(logits[0, 3:5], full[0, 3:5])
    assert not torch.equal(logits, full)  # no whole product: the rest stay half-precision
    beaten = logits[0] < logits[0, 3]
    assert beaten.sum() == weight.shape[0] - 2  # every other token below the tie


def test_greedy_decoding_with_the_certified_argmax_writes_what_the_whole_product_does(
    monkeypatch,
):
    from shuffle_model.model.precision import Float32Logits

    model = half_model()
    calls = []
    certified = Float32Logits.certified
    monkeypatch.setattr(
        Float32Logits, "certified", lambda self, x: calls.append(x.shape) or certified(self, x)
    )
    runs = {}
    for certify in (True, False):
        monkeypatch.setattr(Float32Logits, "certifies", lambda self, rows=1, c=certify: c)
        runs[certify] = [
            model.generate([prompt], max_new_tokens=24, draft_source=source).tolist()
            for prompt in PROMPTS
            for source in ("head+context", "context")
        ]
        runs[certify].append(model.generate([PROMPTS[0]], max_new_tokens=24, max_parallel_tokens=0))
    assert calls  # greedy passes took the certified argmax
    assert runs[True][:-1] == runs[False][:-1] and runs[True][-1].equal(runs[False][-1])
    sampled = len(calls)
    model.generate([PROMPTS[0]], max_new_tokens=8, temperature=1.0, seed=0)
    assert len(calls) == sampled  # sampling needs every float32 logit: never certified


# --- which dtype "auto" means ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("capabilities", "expected", "words"),
    [
        ({"amx_bf16": True, "avx512_bf16": True}, torch.bfloat16, "natively (AMX)"),
        ({"avx512_bf16": True}, torch.bfloat16, "natively (AVX-512 BF16)"),
        ({"avx512_f": True, "avx2": True}, torch.float32, "no native bfloat16"),
    ],
)
def test_auto_is_bfloat16_where_the_cpu_computes_it(monkeypatch, capabilities, expected, words):
    from shuffle_model.model.devices import DTYPE_VARIABLE, choose_dtype

    monkeypatch.delenv(DTYPE_VARIABLE, raising=False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    dtype, reason = choose_dtype("auto", torch.device("cpu"))
    assert dtype == expected and words in reason
    assert choose_dtype("auto", torch.device("cuda"))[0] == torch.bfloat16
    assert choose_dtype("float16", torch.device("cpu")) == (torch.float16, "asked for")
    monkeypatch.setenv(DTYPE_VARIABLE, "float32")
    assert choose_dtype("auto", torch.device("cpu")) == (torch.float32, f"set by {DTYPE_VARIABLE}")
    monkeypatch.setenv(DTYPE_VARIABLE, "fp8")
    with pytest.raises(ValueError, match=DTYPE_VARIABLE):
        choose_dtype("auto", torch.device("cpu"))


@pytest.mark.parametrize(
    "row_invariant, faster", [(True, "bfloat16"), (True, "float32"), (False, None)]
)
def test_auto_takes_the_faster_exact_dtype_on_a_cpu_with_native_bfloat16(
    tmp_path, monkeypatch, row_invariant, faster
):
    """Native bfloat16 is a candidate, not a verdict: where its passes cannot be made
    row-invariant the model loads in float32; where they can, the faster of the two dtypes
    (timed once, then cached per machine) is kept."""
    from shuffle_model import FasterDecodeMixer
    from shuffle_model.model import dtype_choice
    from shuffle_model.model.devices import DTYPE_VARIABLE
    from tests.test_data import saved_tiny_backbone

    backbone_dir, _ = saved_tiny_backbone(tmp_path / "backbone")
    head = FasterDecodeMixer.from_backbone(str(backbone_dir), dtype="float32", num_slots=3)
    head.save_pretrained(tmp_path / "head")
    monkeypatch.setenv("SHUFFLELM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(DTYPE_VARIABLE, raising=False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    monkeypatch.setattr(FasterDecodeMixer, "uses_row_invariance", lambda self: row_invariant)
    timed = []

    def pass_ms(model):  # stands in for the timing: the dtype `faster` wins
        timed.append(model.dtype)
        return 10.0 if str(model.dtype) == f"torch.{faster}" else 20.0

    monkeypatch.setattr(dtype_choice, "pass_ms", pass_ms)
    said = []
    model = FasterDecodeMixer.from_pretrained(tmp_path / "head", status=said.append)
    if not row_invariant:
        assert model.dtype == torch.float32 and "cannot be made row-invariant" in model.dtype_reason
        assert any("loading in float32" in line for line in said) and not timed
    else:
        assert str(model.dtype) == f"torch.{faster}" and "10 ms in " + faster in model.dtype_reason
        rounds = dtype_choice.ROUNDS  # the two dtypes timed in alternating rounds
        assert timed == [torch.bfloat16, torch.float32] * rounds
        again = FasterDecodeMixer.from_pretrained(tmp_path / "head")  # the cached choice
        assert again.dtype == model.dtype and len(timed) == 2 * rounds
        if faster == "bfloat16":
            assert "natively (AMX)" in model.dtype_reason
    asked = FasterDecodeMixer.from_pretrained(tmp_path / "head", dtype="bfloat16")
    assert asked.dtype == torch.bfloat16 and asked.dtype_reason == "asked for"  # never overruled
