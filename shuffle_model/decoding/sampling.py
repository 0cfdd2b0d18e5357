"""Turning logits into tokens: greedy, or temperature / top-p sampling as Hugging Face does."""

from __future__ import annotations

import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper


class TokenSampler:
    """One object per generation: owns the warpers and the seeded random generator."""

    def __init__(self, *, temperature: float, top_p: float, seed: int | None, device):
        self.greedy = temperature == 0
        self.warpers = []
        if not self.greedy:
            self.warpers.append(TemperatureLogitsWarper(temperature))
            if top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p))
        self.generator = torch.Generator(device=device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., V) logits -> (..., V) float32 probabilities of the distribution tokens come from
        (greedy: the plain softmax, shown in traces; the argmax is taken on logits)."""
        flat = logits.reshape(-1, logits.shape[-1]).float()  # (N, V)
        for warp in self.warpers:
            flat = warp(None, flat)
        return flat.softmax(-1).reshape(logits.shape)

    def choose(self, logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Pick one token per row: (..., V) -> (...) long."""
        if self.greedy:
            return logits.argmax(-1)
        return self.sample(probs)

    def sample(self, probs: torch.Tensor) -> torch.Tensor:
        flat = probs.reshape(-1, probs.shape[-1])  # (N, V)
        picked = torch.multinomial(flat, 1, generator=self.generator)  # (N, 1)
        return picked.reshape(probs.shape[:-1])

    def uniform(self) -> float:
        return torch.rand((), generator=self.generator, device=self.generator.device).item()
