"""Train a shuffle head on self-distilled data, on cached backbone features.

    python -m shuffle_model.train --data data/distill --out runs/head --steps 6000

Runs as is on the CPU, and unchanged under `accelerate launch -m shuffle_model.train ...` on
one or more GPUs (Accelerator places the model, shards the batches and syncs gradients).
Logs per-offset top-1 accuracy and tokens per backbone pass on a held-out split, writes a
checkpoint (head, optimizer, step) at every evaluation and resumes from it with --resume.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from .backbone import DEFAULT_BACKBONE, load_backbone
from .distill import shard_paths
from .faster_decode_mixer import FasterDecodeMixer
from .features import MAX_OFFSETS, Features, load_features
from .filtering import known_step
from .head import warm_start_state
from .loss import IGNORE, per_offset_accuracy, set_prediction_loss
from .shuffle import assign_offsets, map_variety, predicted_maps


class HeadObjective(nn.Module):
    """The set loss of a batch of cached positions; a module so that DDP can wrap it."""

    def __init__(self, model: FasterDecodeMixer):
        super().__init__()
        self.model = model

    def forward(self, hidden, anchors, targets):
        cfg = self.model.config
        draft = self.model.draft(hidden, anchors)
        result = set_prediction_loss(
            draft.logits,
            draft.shuffle_scores,
            draft.keep_logits,
            self.model.draft_targets(targets[:, : cfg.num_slots]),
            assignment=cfg.assignment,
            lambda_pos=cfg.lambda_pos,
            lambda_keep=cfg.lambda_keep,
            lambda_prior=cfg.lambda_prior,
        )
        return result.loss, result


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


@torch.no_grad()
def evaluate(model: FasterDecodeMixer, heldout: Features, *, strategies, thresholds, limit=3000):
    """Held-out per-offset accuracy (matched slots) and one-step tokens per pass: at greedy
    positions the targets are the backbone's own continuation, so the accepted prefix of the
    filtered block is what verification would keep there."""
    model.eval()
    k = model.config.num_slots
    subset = heldout.subset(torch.arange(min(limit, len(heldout))))
    hidden = subset.hidden.to(model.device, model.dtype)
    anchors, targets = subset.anchors.to(model.device), subset.targets[:, :k].to(model.device)
    draft = model.draft(hidden, anchors)
    mapped = model.draft_targets(targets)
    result = set_prediction_loss(
        draft.logits,
        draft.shuffle_scores,
        draft.keep_logits,
        mapped,
        assignment=model.config.assignment,
    )
    metrics = {
        "heldout_loss": result.loss.item(),
        "offset_accuracy": [round(a, 4) for a in per_offset_accuracy(result, mapped)],
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[Path("data/distill")],
        help="one or more directories of distillation shards (data/distill: the committed ones)",
    )
    p.add_argument("--init-from", type=Path, default=None, help="start from a saved head")
    p.add_argument("--out", type=Path, default=Path("runs/head"))
    p.add_argument("--backbone", default=DEFAULT_BACKBONE)
    p.add_argument("--name", default=None, help="model name recorded in the config")
    p.add_argument("--assignment", choices=["hungarian", "fixed"], default="hungarian")
    p.add_argument("--slots", type=int, default=6, help="K, draft slots per step")
    p.add_argument("--draft-vocab", type=int, default=8192, help="0: the whole vocabulary")
    p.add_argument("--head-width", type=int, default=None)
    p.add_argument("--mixer-depth", type=int, default=2)
    p.add_argument(
        "--early-layer",
        type=int,
        default=None,
        help="the head also reads this backbone block's output (e.g. 15 of 30); --init-from a "
        "head without it starts its columns at zero",
    )
    p.add_argument("--rotary-dim", type=int, default=2)
    p.add_argument("--lambda-pos", type=float, default=1.0)
    p.add_argument("--lambda-keep", type=float, default=0.5)
    p.add_argument(
        "--lambda-prior",
        type=float,
        default=0.0,
        help="pull of slot k towards offset k in the matching; > 0 collapses the shuffle",
    )
    p.add_argument("--keep-threshold", type=float, default=0.5, help="the head's default")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--max-minutes", type=float, default=None, help="stop early after this long")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--heldout-every", type=int, default=20, help="every n-th example is held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--features-only", action="store_true", help="cache backbone features, stop")
    p.add_argument(
        "--features-dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="the backbone's dtype for the cached features (cached apart): bfloat16 runs 2.5-3.5x "
        "faster on CPUs with bfloat16 matrix units; the head still trains in float32",
    )
    return p.parse_args(argv)


def feature_extractor(model: FasterDecodeMixer, args) -> tuple[FasterDecodeMixer, str]:
    """The model whose backbone passes make the cached features, and the cache's backbone name:
    the training model itself, or the backbone loaded again in --features-dtype."""
    if args.features_dtype == "float32":
        return model, args.backbone
    backbone, _ = load_backbone(args.backbone, device=model.device, dtype=args.features_dtype)
    extractor = FasterDecodeMixer(backbone, model.config)  # only its trunk is used
    extractor.row_invariant_passes = False  # features need no bit-identity with short passes
    return extractor, f"{args.backbone}|{args.features_dtype}"


def describe_device(accelerator) -> str:
    """Where training ran, for the model card: processes x device name."""
    device = accelerator.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return f"{accelerator.num_processes} x {name}"


def _jsonable(value):
    """Command-line values as JSON: paths (alone or in lists) become strings."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def main(argv=None) -> None:
    args = parse_args(argv)
    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    backbone, tokenizer = load_backbone(args.backbone, device=accelerator.device, dtype="float32")
    head_config = dict(
        max_parallel_tokens=args.slots,
        assignment=args.assignment,
        draft_vocab_size=args.draft_vocab or None,
        head_hidden_size=args.head_width,
        mixer_depth=args.mixer_depth,
        early_layer=args.early_layer,
        rotary_dim=args.rotary_dim,
        lambda_pos=args.lambda_pos,
        lambda_keep=args.lambda_keep,
        lambda_prior=args.lambda_prior,
        keep_threshold=args.keep_threshold,
    )
    model = FasterDecodeMixer.from_backbone(backbone, tokenizer=tokenizer, **head_config)
    model.config.backbone = args.backbone
    if args.slots > MAX_OFFSETS:
        raise SystemExit(f"--slots must be <= {MAX_OFFSETS}")

    if args.init_from:
        saved = load_file(str(args.init_from / "head.safetensors"))
        model.head.load_state_dict(warm_start_state(model.head, saved))
        accelerator.print(f"initialised the head from {args.init_from}")
    extractor, features_name = feature_extractor(model, args)
    examples, features = load_features(extractor, shard_paths(args.data), features_name)
    del extractor
    if args.features_only:
        accelerator.print(f"{len(examples)} examples, {len(features)} positions cached")
        return
    train, heldout = split(features, args.heldout_every)
    if args.draft_vocab:  # a warm start's vocabulary is replaced: the head maps to LM-head rows
        vocab, coverage = frequent_tokens(train, args.draft_vocab, model.config.vocab_size)
        if args.init_from:
            old = set(model.head.draft_vocab.tolist())
            accelerator.print(f"{len(old & set(vocab.tolist()))} of them were the old vocabulary")
        model.set_draft_vocab(vocab.to(model.device))
        accelerator.print(
            f"draft vocabulary: {args.draft_vocab} tokens cover {coverage:.1%} of targets"
        )
    model.config.extra = {
        "name": args.name or f"shuffle head ({args.assignment}, K={args.slots})",
        "data": {
            "examples": len(examples),
            "train_positions": len(train),
            "heldout_positions": len(heldout),
        },
        "training": {k: _jsonable(v) for k, v in vars(args).items()},
    }
    accelerator.print(
        f"{len(examples)} examples: {len(train)} training and {len(heldout)} held-out positions"
    )

    objective = HeadObjective(model)
    params = [p for p in model.head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    checkpoint = args.out / "checkpoint"
    step, history = 0, []
    if args.resume and (checkpoint / "trainer_state.json").exists():
        step, history = load_checkpoint(checkpoint, model, optimizer)
        accelerator.print(f"resumed at step {step}")
    earlier_minutes = history[-1]["minutes"] if history else 0.0  # training time before a resume

    generator = torch.Generator().manual_seed(args.seed + step)
    started = time.perf_counter()

    def training_minutes() -> float:  # the clock carries over a --resume
        return earlier_minutes + (time.perf_counter() - started) / 60

    bar = tqdm(
        total=args.steps, initial=step, desc="train head", disable=not accelerator.is_main_process
    )
    per_process = args.batch_size // accelerator.num_processes
    model.train()
    while step < args.steps:
        rows = torch.randint(len(train), (args.batch_size,), generator=generator)
        rows = rows[
            accelerator.process_index * per_process : (accelerator.process_index + 1) * per_process
        ]
        batch = train.subset(rows)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, peak=args.lr, warmup=args.warmup, total=args.steps)
        loss, result = objective(
            batch.hidden.to(accelerator.device, model.dtype),
            batch.anchors.to(accelerator.device),
            batch.targets.to(accelerator.device),
        )
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", tok=f"{result.token_loss.item():.3f}")
        out_of_time = args.max_minutes and time.perf_counter() - started > 60 * args.max_minutes
        if step % args.eval_every == 0 or step == args.steps or out_of_time:
            metrics = evaluate(
                model, heldout, strategies=("rotary", "identity"), thresholds=(0.3, 0.5)
            )
            metrics.update(
                step=step,
                train_loss=round(loss.item(), 4),
                minutes=round(training_minutes(), 2),
            )
            history.append(metrics)
            accelerator.print(json.dumps(metrics))
            if accelerator.is_main_process:
                save_checkpoint(checkpoint, model, optimizer, step, history)
        if out_of_time:
            accelerator.print(f"stopping after {args.max_minutes} minutes at step {step}")
            break
    bar.close()
    if accelerator.is_main_process:
        model.config.extra["history"] = history
        model.config.extra["train_minutes"] = round(training_minutes(), 1)
        model.config.extra["train_device"] = describe_device(accelerator)
        model.save_pretrained(args.out / "final")
        (args.out / "history.json").write_text(json.dumps(history, indent=1))
        accelerator.print(f"saved {args.out / 'final'}")


if __name__ == "__main__":
    main()
