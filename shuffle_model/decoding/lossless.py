"""What "identical to ordinary decoding" means, and the check of it.

- float32 and float64: verified greedy output is token-for-token ordinary greedy decoding.
- Half precision (bfloat16, float16): token-for-token except at a near-tie. Tokens are chosen
  on float32 logits (precision.py), but the hidden state itself is rounded to half precision
  in every layer, and a pass over one token and a pass over several round differently. Where
  ordinary decoding's two best tokens are closer than NEAR_TIE[dtype] in logit, the two passes
  may rank them differently; beyond that bound they never did in our measurements
  (`python -m shuffle_model.cli.lossless`, README).

`compare` finds the first difference between two outputs of the same prompt and measures the
gap there; the app's comparison, the benchmark's check and the tests all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Largest |logit(a) - logit(b)| at which ordinary and verified decoding may still choose
# differently, per dtype (float32 logits of a full pass at the first difference).
# bfloat16, measured on a 2-core AMD EPYC (bench/results/2026-11-28-cpu-near-ties-bf16.json:
# 28 held-out prompts, 9,748 positions, blocks of 2/4/8/16): a block pass moved the top-2 gap
# by at most 0.785 (99.9 % under 0.47), and every divergence was at a gap of at most 0.143.
# float16 is not measured here (slow on CPUs); its value is bfloat16's scaled by the ratio of
# their precisions (2^-10 / 2^-7), to be measured on a GPU.
NEAR_TIE = {torch.bfloat16: 0.8, torch.float16: 0.1}


# Half precision with row-invariant passes (invariant.py): a block pass gives each token the
# hidden state of a one-token pass, bit for bit; only the float32 LM head rounds its rows
# differently (about 1e-5 in a logit), so only a tie to that precision can be broken otherwise.
ROW_INVARIANT_TIE = 1e-3


def near_tie_bound(dtype: torch.dtype, *, row_invariant: bool = False) -> float:
    """The bound for passes in `dtype` (0 in float32: token for token)."""
    if dtype not in NEAR_TIE:
        return 0.0
    return ROW_INVARIANT_TIE if row_invariant else NEAR_TIE[dtype]


def model_bound(model) -> float:
    """The near-tie bound that holds for this model as it runs."""
    return near_tie_bound(model.dtype, row_invariant=model.uses_row_invariance())


@dataclass
class Comparison:
    identical: bool
    position: int | None = None  # index of the first differing new token
    tokens: tuple[int, int] | None = None  # (this output's token, the reference's token)
    gap: float | None = None  # |logit difference| of the two tokens there (float32 logits)
    bound: float = 0.0  # the near-tie bound of the model's dtype (0: exact)

    @property
    def within_guarantee(self) -> bool:
        """Identical, or differing only where ordinary decoding stood at a near-tie."""
        return self.identical or (self.gap is not None and self.gap <= self.bound)

    def describe(self, tokenizer=None) -> str:
        if self.identical:
            return "identical"
        if self.tokens is None:
            return f"differs in length: one output ends after {self.position} tokens"
        a, b = self.tokens
        if tokenizer is not None:
            a, b = repr(tokenizer.decode([a])), repr(tokenizer.decode([b]))
        kind = "a near-tie" if self.within_guarantee else "a real difference"
        return (
            f"differs at {kind} at token {self.position}: {a} instead of {b} "
            f"(logit gap {self.gap:.3f}; near-tie bound {self.bound:g})"
        )


@torch.inference_mode()
def compare(model, prompt_ids: list[int], output_ids: list[int], reference_ids: list[int]):
    """Where `output_ids` first leaves `reference_ids` (both new tokens after the prompt), and
    the backbone's own logit gap between the two tokens there."""
    bound = model_bound(model)
    position = next(
        (i for i, (a, b) in enumerate(zip(output_ids, reference_ids, strict=False)) if a != b),
        None,
    )
    if position is None:
        if len(output_ids) == len(reference_ids):
            return Comparison(True, bound=bound)
        shorter = min(len(output_ids), len(reference_ids))  # one output stops earlier
        return Comparison(False, shorter, None, float("inf"), bound)
    prefix = list(prompt_ids) + list(output_ids[:position])
    logits = model.trunk_forward(torch.tensor([prefix], device=model.device)).logits[0, -1]
    a, b = output_ids[position], reference_ids[position]
    gap = float((logits[a] - logits[b]).abs())
    return Comparison(False, position, (a, b), gap, bound)


# --- measuring the bound ---------------------------------------------------------------------


@torch.inference_mode()
def gap_shifts(model, prompt_ids: list[int], answer_ids: list[int], *, block: int) -> list[float]:
    """How far a pass over `block` tokens moves the gap between ordinary decoding's two best
    tokens, at every answer position: |gap(one-token pass) - gap(block pass)|."""
    device = model.device

    def logits_in_blocks(size: int) -> torch.Tensor:
        cache = model.new_cache()
        first = model.trunk_forward(
            torch.tensor([prompt_ids], device=device), cache=cache, logits_to_keep=1
        )
        rows = [first.logits[0, -1:]]
        for start in range(0, len(answer_ids) - 1, size):
            chunk = answer_ids[start : min(start + size, len(answer_ids) - 1)]
            out = model.trunk_forward(torch.tensor([chunk], device=device), cache=cache)
            rows.append(out.logits[0])
        return torch.cat(rows)  # (answer length, V): the logits that chose each answer token

    one, many = logits_in_blocks(1), logits_in_blocks(block)
    top = one.topk(2, dim=-1).indices  # (N, 2) ordinary decoding's two best tokens
    gap_one = one.gather(1, top[:, :1]) - one.gather(1, top[:, 1:])
    gap_many = many.gather(1, top[:, :1]) - many.gather(1, top[:, 1:])
    return (gap_one - gap_many).abs()[:, 0].tolist()
