"""One optimisation step of the set-prediction loss, for any ShuffleModelBase."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..model.loss import IGNORE


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def train_step(
    model,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    *,
    grad_clip: float | None = 1.0,
    backward: Callable[[torch.Tensor], None] | None = None,
) -> dict[str, float]:
    """Forward a batch {input_ids, attention_mask?, labels?}, step the optimizer, return losses.

    Labels default to the input ids (every position trained); mark positions to skip with -100.
    `backward` lets a caller (e.g. accelerate's Accelerator.backward) run the backward pass.
    """
    model.train()
    labels = batch.get("labels")
    if labels is None:
        labels = batch["input_ids"].clone()
    out = model(batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=labels)
    optimizer.zero_grad(set_to_none=True)
    (backward or torch.Tensor.backward)(out.loss)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(trainable_parameters(model), grad_clip)
    optimizer.step()
    metrics = {"loss": out.loss.item(), "set_loss": out.set_loss.item()}
    if out.lm_loss is not None:
        metrics["lm_loss"] = out.lm_loss.item()
    metrics["trained_positions"] = int((labels != IGNORE).sum())
    return metrics
