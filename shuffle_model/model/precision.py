"""Logits in float32 from a trunk in half precision.

In bfloat16, logits near 20 are spaced 0.125 apart, so rounding alone makes ties that a
one-token pass and a multi-token pass break differently, and verified decoding drifts away
from ordinary decoding. The tokens are therefore always chosen (and verified) on float32
logits: the trunk's last layer output goes through the final RMSNorm and the LM head in
float32, in ordinary and verified decoding alike. What is left are differences of the hidden
state itself between passes of different lengths; see the guarantee in docs/architecture.md.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn


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

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits for `hidden` (the trunk's normalised output of the pass just run)."""
        exact = hidden.dtype in (torch.float32, torch.float64) or self.norm is None
        if exact or torch.is_grad_enabled():  # training: the LM head's own, differentiable
            return self.lm_head(hidden).float()
        pre_norm = getattr(self._seen, "input", None)
        self._seen.input = None
        if pre_norm is None or pre_norm.shape != hidden.shape:
            return F.linear(hidden.float(), *self._float_weights()[2:])  # norm not seen
        _, norm_weight, weight, bias = self._float_weights()
        x = pre_norm.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.norm.variance_epsilon)
        return F.linear(norm_weight * x, weight, bias)

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


def _is_rms_norm(module: nn.Module | None) -> bool:
    """An RMSNorm as Llama-style trunks have it: a weight and a variance epsilon."""
    return (
        module is not None
        and hasattr(module, "weight")
        and hasattr(module, "variance_epsilon")
        and not hasattr(module, "bias")
    )
