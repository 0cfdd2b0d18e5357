"""Logits in float32 from a trunk in half precision.

In bfloat16, logits near 20 are spaced 0.125 apart, so rounding alone makes ties that a
one-token pass and a multi-token pass break differently, and verified decoding drifts away
from ordinary decoding. The tokens are therefore always chosen (and verified) on float32
logits: the trunk's last layer output goes through the final RMSNorm and the LM head in
float32, in ordinary and verified decoding alike. What is left are differences of the hidden
state itself between passes of different lengths; see the guarantee in docs/architecture.md.

The float32 LM head is the largest single product of a half-precision pass (49,152 x 576 for
SmolLM2: 9 ms a row in float32 on a 2-core CPU against 3 ms in bfloat16). Greedy decoding
needs only the argmax of the float32 logits, so it takes a certified argmax instead: the
half-precision product ranks the tokens, the CANDIDATES best are recomputed in float32, and a
bound on the half-precision product's error proves that no other token can reach the best of
them. Where the top is close (the best candidate not ahead of the second, or of the bound on
the rest, by more than float32 rounding could move them), every token the bound cannot rule
out is recomputed in float32 too: a handful, where the whole float32 product of a lone row
costs 9 ms. The argmax is exactly that of the float32 logits, each token's products summed
in float32 (`candidate_logits`: the same bits whatever else shares the pass); where the top
is clear it is also the float32 product's, bit for bit in the choice. The other logits are
the half-precision ones. Sampling and training always get the whole float32 product.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from . import packed

CANDIDATES = 8  # tokens per row whose float32 logits a certified argmax computes exactly
HALF_ROUNDING = 2.0**-7  # a half-precision product's rounding of its output, relative: twice
# bfloat16's half-ulp (float16's is far smaller)
SETTLE_CHUNK = 4096  # contenders of a close top recomputed at a time (a flat top has many)
PROBE_ROWS = 64  # random rows on which the error bound is checked before it is trusted


class Float32Logits:
    """Watches a trunk's final norm and recomputes norm + LM head in float32 on its input."""

    def __init__(self, final_norm: nn.Module | None, lm_head: nn.Module):
        self.norm = final_norm if _is_rms_norm(final_norm) else None
        self.lm_head = lm_head
        self._seen = threading.local()  # the norm's input of this thread's latest pass
        self._weights: tuple | None = None  # (key, float32 norm weight, LM head weight, bias)
        if self.norm is not None:
            self.norm.register_forward_pre_hook(self._remember)

    def _remember(self, module, args) -> None:
        self._seen.input = args[0]

    def __call__(
        self, hidden: torch.Tensor, *, argmax_only: bool = False, keep: int = 0
    ) -> torch.Tensor:
        """Logits for `hidden` (B, T, H), the trunk's normalised output of the pass just run:
        (B, T, V), or with `keep` = n > 0 those of the last n positions (B, n, V).
        `argmax_only` (greedy decoding): a certified argmax where the trunk is in half
        precision; the other logits may be the half-precision ones."""
        rows = slice(-keep, None) if keep else slice(None)
        exact = hidden.dtype in (torch.float32, torch.float64) or self.norm is None
        if exact or torch.is_grad_enabled():  # training: the LM head's own, differentiable
            return self.lm_head(hidden[:, rows]).float()
        x = self._float_input(hidden, rows)
        if argmax_only and self.certifies(rows=x[..., 0].numel()):
            return self.certified(x)
        _, _, weight, bias = self._float_weights()
        return F.linear(x, weight, bias)

    def _float_input(self, hidden: torch.Tensor, rows: slice) -> torch.Tensor:
        """The LM head's input in float32 at those positions of `hidden` (B, T, H): the final
        norm recomputed on its float32 input."""
        pre_norm = getattr(self._seen, "input", None)
        self._seen.input = None
        if pre_norm is None or pre_norm.shape != hidden.shape:
            return hidden[:, rows].float()  # norm not seen
        norm_weight = self._float_weights()[1]
        x = pre_norm[:, rows].float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.norm.variance_epsilon)
        return norm_weight * x

    # --- the certified argmax -------------------------------------------------------------
    def certifies(self, rows: int = 1) -> bool:
        """Whether a greedy pass over `rows` tokens takes the certified argmax: no bias, the
        bound held on the probe (a kernel that accumulates in half precision would break it),
        and it is faster here than the float32 product for that many rows (on a Xeon with AMX
        the float32 product of a lone row is as fast as the half one, of 8 rows 3x slower).
        On a CPU; decided once per weight, thread count and size class of the pass."""
        weights = self._float_weights()
        if weights[3] is not None or weights[2].device.type != "cpu":
            return False
        key = (weights[0], torch.get_num_threads())
        if getattr(self, "_certifies", (None,))[0] != key:
            self._certifies = (key, {"bound": self._bound_holds()})
        decided = self._certifies[1]
        size = _size_class(rows)
        if size not in decided:
            decided[size] = decided["bound"] and self._pays(size)
        return decided[size]

    def certified(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., H) float32 -> (..., V) float32 logits whose argmax is that of the float32
        logits: the CANDIDATES best of the half-precision product exact, the rest as that
        product has them; where the top is close, every contender exact too (`settle`)."""
        _, _, weight, _ = self._float_weights()
        flat = x.reshape(-1, x.shape[-1])  # (N, H)
        half = flat.to(self.lm_head.weight.dtype)  # (N, H) the rounded input
        approx = self._half_product(half)  # (N, V)
        leading = approx.topk(CANDIDATES + 1, dim=-1)  # the candidates and the best of the rest
        candidates = leading.indices[:, :CANDIDATES]  # (N, k)
        exact = candidate_logits(flat, weight, candidates)  # (N, k)
        first, second = exact.topk(2, dim=-1).values.unbind(-1)  # (N,) each
        rest = self._rest_bound(flat, half, leading.values[:, CANDIDATES])  # (N,)
        slack = _accumulation(flat.shape[-1]) * self._largest_row_norm() * flat.norm(dim=-1)
        # the whole float32 product's logits lie within 2 slack of the real ones, and so do
        # the candidates' sums: its argmax is the best candidate when these gaps hold
        certain = (first - 3 * slack > rest) & (first - second > 4 * slack)  # (N,)
        logits = approx.scatter(-1, candidates, exact)
        for row in (~certain).nonzero()[:, 0].tolist():  # a close top (few rows)
            floor = first[row] - 3 * slack[row]
            self.settle(logits[row], flat[row], half[row], approx[row], floor, weight)
        return logits.reshape(*x.shape[:-1], -1)

    def settle(self, logits, flat, half, approx, floor, weight) -> None:
        """One row (V,) whose top the bound left close: every token whose exact logit may
        reach `floor` (the best candidate's float32 logit less 3 slack), recomputed in
        float32 in place. Any other token's float32 logit lies below floor + slack and so
        below the best contender's; its half-precision logit below floor too."""
        bounds = self._upper_bounds(flat[None], half[None], approx[None])[0]  # (V,)
        contenders = (bounds >= floor).nonzero()[:, 0]  # (n,) the best candidate among them
        for chunk in contenders.split(SETTLE_CHUNK):
            logits[chunk] = candidate_logits(flat[None], weight, chunk[None])[0]

    def _half_product(self, half: torch.Tensor) -> torch.Tensor:
        """The half-precision LM head on the rounded input, as float32: (N, H) -> (N, V)."""
        return packed.linear(half, self.lm_head.weight).float()

    def _rest_bound(self, flat, half: torch.Tensor, best_rest: torch.Tensor) -> torch.Tensor:
        """(N,): no exact logit outside the candidates exceeds it. `_upper_bounds` grows with
        a token's half-precision logit and with |w_v|, so the best non-candidate's logit
        (`best_rest`) and the largest |w_v| bound them all, without a pass over V."""
        top = best_rest + HALF_ROUNDING * best_rest.abs()
        return top + _reach(flat, half) * self._largest_row_norm()

    def _upper_bounds(self, flat, half: torch.Tensor, approx: torch.Tensor) -> torch.Tensor:
        """(N, V): no exact logit exceeds its bound. The half-precision product differs from
        the exact one by its output rounding, by the input's rounding (|w_v| |x - half(x)|,
        Cauchy-Schwarz) and by its float32 accumulation (gamma_H |w_v| |half(x)|)."""
        reach = _reach(flat, half)  # (N,)
        return approx + HALF_ROUNDING * approx.abs() + reach[:, None] * self._row_norms()

    def _largest_row_norm(self) -> float:
        """max |w_v| over the LM head's rows, once per weight."""
        weights = self._float_weights()
        if getattr(self, "_largest", (None,))[0] != weights[0]:
            self._largest = (weights[0], float(self._row_norms().max()))
        return self._largest[1]

    def _row_norms(self) -> torch.Tensor:
        """|w_v| of every row of the float32 LM head, (V,), once per weight."""
        weights = self._float_weights()
        if getattr(self, "_norms", (None,))[0] != weights[0]:
            self._norms = (weights[0], weights[2].norm(dim=-1))
        return self._norms[1]

    @torch.no_grad()
    def _bound_holds(self) -> bool:
        """Whether every exact logit stays under its bound on random inputs as large as
        normalised hidden states (sqrt(H) per row), and above its mirror image."""
        weight = self._float_weights()[2]
        generator = torch.Generator().manual_seed(0)
        flat = torch.randn(PROBE_ROWS, weight.shape[1], generator=generator).to(weight.device)
        half = flat.to(self.lm_head.weight.dtype)
        approx = self._half_product(half)
        exact = F.linear(flat, weight)
        reach = self._upper_bounds(flat, half, approx) - approx  # (N, V) the bound's width
        return bool(((exact - approx).abs() <= reach).all())

    @torch.no_grad()
    def _pays(self, rows: int, repeats: int = 7) -> bool:
        """Whether the certified argmax of `rows` rows takes less time than their float32
        product (the fastest of a few runs of each, after a warm-up)."""
        weight = self._float_weights()[2]
        block = torch.randn(rows, weight.shape[1], generator=torch.Generator().manual_seed(1))
        block = block.to(weight.device)
        return packed.fastest(lambda: self.certified(block), repeats) < packed.fastest(
            lambda: F.linear(block, weight), repeats
        )

    def _float_weights(self):
        weight, bias = self.lm_head.weight, getattr(self.lm_head, "bias", None)
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._weights is None or self._weights[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # plain tensors, kept for reuse
                self._weights = self._float_copies(key, weight, bias)
        return self._weights

    def _float_copies(self, key, weight, bias):
        norm = self.norm.weight.detach().float() if self.norm is not None else None
        bias = None if bias is None else bias.detach().float()
        return key, norm, weight.detach().float(), bias


TIMING_PERIOD = 16  # token ids that a timing context repeats


def timing_context(length: int, vocab_size: int, device=None) -> torch.Tensor:
    """(1, length) ids to time passes on: TIMING_PERIOD arbitrary ids, repeated. A backbone
    soon predicts the repeats with confidence, as it predicts most text, so a greedy pass's
    argmax is certified about as often as in generation (on SmolLM2, 15 of 16 rows against
    97 % of rows in generation), where ids that never repeat leave most rows uncertain and
    charge each the whole float32 LM head (11 of 16 rows)."""
    period = torch.arange(TIMING_PERIOD, device=device) * 7919 % max(vocab_size - 3, 1) + 3
    return period.repeat(-(-length // TIMING_PERIOD))[:length][None]


def candidate_logits(flat: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """flat (N, H) float32, ids (N, k) -> (N, k) float32 logits of those tokens: products and
    one reduction per logit, the same bits for a row whatever else shares the pass."""
    return (weight[ids] * flat[:, None, :]).sum(-1)  # (N, k, H) -> (N, k)


SIZE_CLASSES = (1, 2, 4, 8, 16, 32)  # pass sizes timed for the certificate (larger: as 32)


def _size_class(rows: int) -> int:
    """The smallest timed size that holds `rows`."""
    return next((size for size in SIZE_CLASSES if rows <= size), SIZE_CLASSES[-1])


def _reach(flat: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """(N,): per row, what the input's rounding (|x - half(x)|) and the float32 accumulation
    (gamma_H |half(x)|) can move a logit, per unit of |w_v|."""
    half = half.float()
    return (flat - half).norm(dim=-1) + _accumulation(flat.shape[-1]) * half.norm(dim=-1)


def _accumulation(terms: int) -> float:
    """Twice gamma_n, the relative error bound of a float32 sum of n products."""
    unit = 2.0**-24
    return 2 * terms * unit / (1 - terms * unit)


def _is_rms_norm(module: nn.Module | None) -> bool:
    """An RMSNorm as Llama-style trunks have it: a weight and a variance epsilon."""
    return (
        module is not None
        and hasattr(module, "weight")
        and hasattr(module, "variance_epsilon")
        and not hasattr(module, "bias")
    )
