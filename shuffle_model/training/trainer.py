"""The training loop of the shuffle head on cached backbone features: the objective, the
learning-rate schedule, held-out evaluation and checkpoints (the command: cli/train.py)."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ..decoding.filtering import known_step
from ..decoding.shuffle import assign_offsets, map_variety, predicted_maps
from ..model.faster_decode_mixer import FasterDecodeMixer
from ..model.loss import IGNORE, per_offset_accuracy
from .features import Features, Sequences, example_rows


class HeadObjective(nn.Module):
    """The set loss of a batch of cached positions; a module so that DDP can wrap it. With
    `distill_weight`, plus the cross-entropy of each matched slot against the backbone's own
    distribution at its offset (soft targets, as Medusa-2 and Hydra distil their heads)."""

    def __init__(self, model: FasterDecodeMixer, *, distill_weight: float = 0.0):
        super().__init__()
        self.model = model
        self.distill_weight = distill_weight

    def forward(self, hidden, anchors, targets, context=None, future=None):
        """`future`: (h_{t+p}, known) of future_hidden, for soft targets."""
        draft = self.model.draft(hidden, anchors, context)
        k = self.model.config.num_slots
        result = self.model.set_loss(
            draft.logits, draft.shuffle_scores, draft.keep_logits, targets[:, :k]
        )
        if not self.distill_weight:
            return result.loss, result
        soft = soft_targets(self.model, *future)  # (N, K offsets, V')
        matched = result.matched_offsets  # (N, K slots)
        teacher = soft.gather(1, matched.clamp(min=0)[..., None].expand(-1, -1, soft.shape[-1]))
        student = F.log_softmax(draft.logits.float(), dim=-1)  # (N, K slots, V')
        has = (matched >= 0).float()
        distill = -((teacher * student).sum(-1) * has).sum() / has.sum().clamp(min=1)
        return result.loss + self.distill_weight * distill, result


@torch.no_grad()
def soft_targets(model: FasterDecodeMixer, future: torch.Tensor, known: torch.Tensor):
    """The backbone's distribution over the draft vocabulary at offsets 1..K: future (N, K, H)
    holds h_{t+p}, whose LM-head row predicts the token at offset p; zero where not `known`
    (N, K)."""
    return F.softmax(model.draft_logits(future).float(), dim=-1) * known[..., None]


def future_hidden(rows: Features, sequences: Sequences, k: int):
    """h_{t+p}, p = 1..k, of these rows (N, k, H), and whether t + p is inside their example
    (N, k); past the end the rows are zeros."""
    start = sequences.starts[rows.example]  # (N,)
    end = sequences.starts[rows.example + 1]
    index = start[:, None] + rows.position[:, None] + torch.arange(1, k + 1)  # (N, k)
    inside = index < end[:, None]
    future = sequences.hidden[index.clamp(max=len(sequences.hidden) - 1)]  # (N, k, H)
    return future.float() * inside[..., None], inside


def frequent_tokens(features: Features, count: int, vocab_size: int) -> tuple[torch.Tensor, float]:
    """The `count` most frequent answer tokens, and the share of targets they cover."""
    targets = features.targets[:, 0]
    tokens = Counter(targets[targets != IGNORE].tolist())
    top = [token for token, _ in tokens.most_common(count)]
    covered = sum(tokens[t] for t in top) / max(sum(tokens.values()), 1)
    unseen = (t for t in range(vocab_size) if t not in tokens)
    top += [next(unseen) for _ in range(count - len(top))]  # tiny data: fill up with unseen ids
    return torch.tensor(sorted(top)), covered


def split(features: Features, heldout_every: int) -> tuple[Features, Features]:
    heldout = features.example % heldout_every == 0
    return features.subset(~heldout), features.subset(heldout)


def learning_rate(step: int, *, peak: float, warmup: int, total: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def row_contexts(model: FasterDecodeMixer, rows: Features, sequences: Sequences | None):
    """The sequence layer's z_t for these rows (None for a head without one): each row's
    example runs through the layer once, up to its last row's position."""
    if model.head.sequence is None:
        return None
    examples, which = torch.unique(rows.example, return_inverse=True)  # which: (N,) batch row
    ends = torch.zeros(len(examples), dtype=torch.long).scatter_reduce_(
        0, which, rows.position + 1, "amax"
    )
    longest = int(ends.max())
    hidden = torch.zeros(len(examples), longest, model.config.hidden_size)  # (B, L, H)
    ids = torch.zeros(len(examples), longest + 1, dtype=torch.long)  # (B, L + 1)
    for b, (example, end) in enumerate(zip(examples.tolist(), ends.tolist(), strict=True)):
        h, x = sequences.example(example)
        hidden[b, :end], ids[b, : end + 1] = h[:end], x[: end + 1]
    device = model.device
    z = model.sequence_context(hidden.to(device, model.dtype), ids.to(device))  # (B, L, W)
    return z[which.to(device), rows.position.to(device)]  # (N, W)


def sequence_batch_rows(
    spans: tuple[torch.Tensor, torch.Tensor], *, examples: int, batch_size: int, generator
):
    """A batch of a sequence head: `batch_size` positions from `examples` random examples, so
    that the sequence layer runs over a few sequences rather than one per position. `spans`:
    each example's first row and row count in the training rows (features.example_rows)."""
    first, count = spans
    present = (count > 0).nonzero().flatten()
    chosen = present[torch.randint(len(present), (examples,), generator=generator)]
    rows = torch.cat([first[e] + torch.arange(count[e]) for e in chosen.tolist()])
    return rows[torch.randperm(len(rows), generator=generator)[:batch_size]]


@torch.no_grad()
def heldout_metrics(
    model: FasterDecodeMixer,
    heldout: Features,
    *,
    strategies,
    thresholds,
    limit=3000,
    sequences: Sequences | None = None,
):
    """Held-out per-offset accuracy (matched slots) and one-step tokens per pass: at greedy
    positions the targets are the backbone's own continuation, so the accepted prefix of the
    filtered block is what verification would keep there."""
    model.eval()
    k = model.config.num_slots
    subset = heldout.subset(torch.arange(min(limit, len(heldout))))
    hidden = subset.hidden.to(model.device, model.dtype)
    anchors, targets = subset.anchors.to(model.device), subset.targets[:, :k].to(model.device)
    draft = model.draft(hidden, anchors, row_contexts(model, subset, sequences))
    mapped = model.draft_targets(targets)
    result = model.set_loss(draft.logits, draft.shuffle_scores, draft.keep_logits, targets)
    metrics = {
        "heldout_loss": result.loss.item(),
        "offset_accuracy": [round(a, 4) for a in per_offset_accuracy(result, mapped)],
        "offset_top3": [
            round(a, 4) for a in per_offset_accuracy(result, mapped, draft.logits, top=3)
        ],
    }
    tokens = draft.logits.argmax(-1)
    if draft.vocab is not None:
        tokens = draft.vocab[tokens]
    tokens, targets = tokens.cpu(), targets.cpu()
    keep = draft.keep_logits.float().sigmoid().cpu().numpy()
    scores = draft.shuffle_scores.float().cpu().numpy()
    greedy = subset.greedy.nonzero().flatten().tolist()
    metrics["shuffle_varies"] = round(map_variety(predicted_maps(scores[greedy])), 4)
    for strategy in strategies:
        for threshold in thresholds:
            accepted = 0
            for i in greedy:
                offsets = assign_offsets(strategy, scores[i], keep[i]).offsets
                accepted += known_step(
                    offsets, keep[i], tokens[i], targets[i], keep_threshold=threshold, max_offset=k
                )[1]
            metrics[f"tokens_per_pass/{strategy}@{threshold}"] = round(
                1 + accepted / max(len(greedy), 1), 4
            )
    model.train()
    return metrics


def save_checkpoint(directory: Path, model, optimizer, step: int, history: list) -> None:
    model.save_pretrained(directory)
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.contiguous().cpu()
        for index, slots in state["state"].items()
        for name, value in slots.items()
        if torch.is_tensor(value)
    }
    save_file(tensors, str(directory / "optimizer.safetensors"))
    (directory / "trainer_state.json").write_text(
        json.dumps(
            {"step": step, "param_groups": state["param_groups"], "history": history}, indent=1
        )
    )


def load_checkpoint(directory: Path, model, optimizer) -> tuple[int, list]:
    info = json.loads((directory / "trainer_state.json").read_text())
    model.head.load_state_dict(
        load_file(str(directory / "head.safetensors"), device=str(model.device))
    )
    tensors = load_file(str(directory / "optimizer.safetensors"), device=str(model.device))
    state: dict = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    return info["step"], info["history"]


def batch_rows(train: Features, *, batch_size: int, generator, accelerator) -> torch.Tensor:
    """This process's share of a random batch of training positions."""
    rows = torch.randint(len(train), (batch_size,), generator=generator)
    per_process = batch_size // accelerator.num_processes
    first = accelerator.process_index * per_process
    return rows[first : first + per_process]


class TrainingClock:
    """Training minutes, counting those of the run a resume continues."""

    def __init__(self, earlier_minutes: float):
        self.earlier_minutes = earlier_minutes  # training time before a resume
        self.started = time.perf_counter()  # when this invocation started training

    def minutes(self) -> float:
        return self.earlier_minutes + (time.perf_counter() - self.started) / 60

    def out_of_time(self, max_minutes: float | None) -> bool:
        """Whether this invocation has trained for `max_minutes` (None: no limit)."""
        return bool(max_minutes and time.perf_counter() - self.started > 60 * max_minutes)


def start_or_resume(checkpoint: Path, model, optimizer, *, resume: bool, say):
    """Step 0 and an empty history, or with `resume` those of the checkpoint (restored into
    `model` and `optimizer`)."""
    if resume and (checkpoint / "trainer_state.json").exists():
        step, history = load_checkpoint(checkpoint, model, optimizer)
        say(f"resumed at step {step}")
        return step, history
    return 0, []


def sample_batch(train: Features, spans, generator, accelerator, *, size: int, examples: int):
    """A random batch of training positions; for a head that reads the sequence (`spans`: the
    rows of each example), positions from `examples` examples."""
    if spans is None:
        rows = batch_rows(train, batch_size=size, generator=generator, accelerator=accelerator)
    else:
        rows = sequence_batch_rows(spans, examples=examples, batch_size=size, generator=generator)
    return train.subset(rows)


@dataclass
class Trainee:
    """What a training step works on."""

    model: FasterDecodeMixer  # the model whose head trains
    objective: nn.Module  # its HeadObjective, as the accelerator prepared it
    optimizer: torch.optim.Optimizer  # AdamW over `params`, as the accelerator prepared it
    params: list[nn.Parameter]  # the head's trainable parameters
    accelerator: object  # the accelerate.Accelerator: devices, processes, backward
    sequences: Sequences | None  # every position of the examples, for a head that reads them


def prepare(
    model: FasterDecodeMixer,
    accelerator,
    sequences: Sequences | None,
    *,
    lr: float,
    weight_decay: float,
    distill_weight: float,
) -> Trainee:
    """The objective and an AdamW optimizer over the head's trainable parameters, prepared."""
    objective = HeadObjective(model, distill_weight=distill_weight)
    params = [p for p in model.head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    return Trainee(model, objective, optimizer, params, accelerator, sequences)


def optimizer_step(t: Trainee, batch: Features, *, rate: float, distill: bool):
    """One AdamW step at learning rate `rate` on the batch's loss (given the backbone's future
    hidden states for soft targets when `distill`), gradients clipped to norm 1. Returns the
    loss and its parts."""
    device, model = t.accelerator.device, t.model
    for group in t.optimizer.param_groups:
        group["lr"] = rate
    loss, result = t.objective(
        batch.hidden.to(device, model.dtype),
        batch.anchors.to(device),
        batch.targets.to(device),
        row_contexts(model, batch, t.sequences),
        [x.to(device) for x in future_hidden(batch, t.sequences, model.config.num_slots)]
        if distill
        else None,
    )
    t.optimizer.zero_grad(set_to_none=True)
    t.accelerator.backward(loss)
    t.accelerator.clip_grad_norm_(t.params, 1.0)
    t.optimizer.step()
    return loss, result


def evaluate_and_save(
    t: Trainee, heldout: Features, history: list[dict], checkpoint: Path, *, step: int, loss, clock
) -> None:
    """Held-out metrics appended to `history` and printed; the main process saves a checkpoint."""
    metrics = heldout_metrics(
        t.model,
        heldout,
        strategies=("rotary", "identity"),
        thresholds=(0.3, 0.5),
        sequences=t.sequences,
    )
    metrics.update(step=step, train_loss=round(loss.item(), 4), minutes=round(clock.minutes(), 2))
    history.append(metrics)
    t.accelerator.print(json.dumps(metrics))
    if t.accelerator.is_main_process:
        save_checkpoint(checkpoint, t.model, t.optimizer, step, history)


def train_head(
    model: FasterDecodeMixer,
    train: Features,
    heldout: Features,
    *,
    accelerator,
    checkpoint: Path,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    eval_every: int,
    max_minutes: float | None,
    seed: int,
    resume: bool,
    sequences: Sequences | None = None,
    examples_per_batch: int = 16,
    distill_weight: float = 0.0,
) -> tuple[list[dict], float]:
    """AdamW on the set loss of random batches of cached positions, with held-out metrics and a
    checkpoint every `eval_every` steps. A head that reads the sequence (`sequences`: every
    position of the examples) trains on batches of positions from `examples_per_batch`
    examples. Returns the metrics history and the training minutes (the clock carries over a
    resume)."""
    spans = example_rows(train) if model.head.sequence is not None else None  # once, not per step
    t = prepare(
        model,
        accelerator,
        sequences,
        lr=lr,
        weight_decay=weight_decay,
        distill_weight=distill_weight,
    )
    step, history = start_or_resume(
        checkpoint, model, t.optimizer, resume=resume, say=t.accelerator.print
    )
    generator = torch.Generator().manual_seed(seed + step)
    clock = TrainingClock(history[-1]["minutes"] if history else 0.0)
    bar = tqdm(
        total=steps, initial=step, desc="train head", disable=not accelerator.is_main_process
    )
    model.train()
    while step < steps:
        batch = sample_batch(
            train, spans, generator, accelerator, size=batch_size, examples=examples_per_batch
        )
        rate = learning_rate(step, peak=lr, warmup=warmup, total=steps)
        loss, result = optimizer_step(t, batch, rate=rate, distill=bool(distill_weight))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", tok=f"{result.token_loss.item():.3f}")
        out_of_time = clock.out_of_time(max_minutes)
        if step % eval_every == 0 or step == steps or out_of_time:
            evaluate_and_save(t, heldout, history, checkpoint, step=step, loss=loss, clock=clock)
        if out_of_time:
            accelerator.print(f"stopping after {max_minutes} minutes at step {step}")
            break
    bar.close()
    return history, clock.minutes()
