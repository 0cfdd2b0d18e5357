"""Train a shuffle head on self-distilled data, on cached backbone features.

    python -m shuffle_model.cli.train --data data/distill --out runs/head --steps 6000

Runs as is on the CPU, and unchanged under `accelerate launch -m shuffle_model.cli.train ...` on
one or more GPUs (Accelerator places the model, shards the batches and syncs gradients).
Logs per-offset top-1 accuracy and tokens per backbone pass on a held-out split, writes a
checkpoint (head, optimizer, step) at every evaluation and resumes from it with --resume.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from ..model.backbone import DEFAULT_BACKBONE, load_backbone
from ..model.faster_decode_mixer import FasterDecodeMixer
from ..model.head import warm_start_state
from ..training.distill import shard_paths
from ..training.features import MAX_OFFSETS, Features, load_features
from ..training.trainer import frequent_tokens, split, train_head
from . import one_line_errors


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
    p.add_argument(
        "--sequence-width",
        type=int,
        default=None,
        help="the head attends over the sequence's features with a layer of this width "
        "(model/sequence.py); --init-from a head without it starts the layer's output at zero",
    )
    p.add_argument("--sequence-heads", type=int, default=4)
    p.add_argument(
        "--examples-per-batch",
        type=int,
        default=16,
        help="a sequence head's batch: --batch-size positions from this many examples",
    )
    p.add_argument(
        "--distill-weight",
        type=float,
        default=0.0,
        help="weight of soft targets: each matched slot's cross-entropy against the backbone's "
        "distribution at its offset (needs every position's features, cached like a sequence "
        "head's)",
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


def new_model(args, accelerator: Accelerator) -> FasterDecodeMixer:
    """The backbone with a fresh head of the asked shape (warm-started with --init-from)."""
    backbone, tokenizer = load_backbone(args.backbone, device=accelerator.device, dtype="float32")
    model = FasterDecodeMixer.from_backbone(
        backbone,
        tokenizer=tokenizer,
        num_slots=args.slots,
        assignment=args.assignment,
        draft_vocab_size=args.draft_vocab or None,
        head_hidden_size=args.head_width,
        mixer_depth=args.mixer_depth,
        early_layer=args.early_layer,
        sequence_width=args.sequence_width,
        sequence_heads=args.sequence_heads,
        rotary_dim=args.rotary_dim,
        lambda_pos=args.lambda_pos,
        lambda_keep=args.lambda_keep,
        lambda_prior=args.lambda_prior,
        default_keep_threshold=args.keep_threshold,
    )
    model.config.backbone = args.backbone
    if args.init_from:
        saved = load_file(str(args.init_from / "head.safetensors"))
        model.head.load_state_dict(warm_start_state(model.head, saved))
        accelerator.print(f"initialised the head from {args.init_from}")
    return model


def choose_draft_vocab(model, train: Features, args, accelerator: Accelerator) -> None:
    """With --draft-vocab: the most frequent target tokens (a warm start's vocabulary is
    replaced; the head maps to LM-head rows)."""
    vocab, coverage = frequent_tokens(train, args.draft_vocab, model.config.vocab_size)
    if args.init_from:
        old = set(model.head.draft_vocab.tolist())
        accelerator.print(f"{len(old & set(vocab.tolist()))} of them were the old vocabulary")
    model.set_draft_vocab(vocab.to(model.device))
    accelerator.print(
        f"draft vocabulary: {args.draft_vocab} tokens cover {coverage:.1%} of targets"
    )


@one_line_errors
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.slots > MAX_OFFSETS:
        raise SystemExit(f"--slots must be <= {MAX_OFFSETS}")
    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    model = new_model(args, accelerator)
    extractor, features_name = feature_extractor(model, args)
    sequence = model.head.sequence is not None or args.distill_weight > 0
    examples, features, sequences = load_features(
        extractor, shard_paths(args.data), features_name, sequence=sequence
    )
    del extractor
    if args.features_only:
        accelerator.print(f"{len(examples)} examples, {len(features)} positions cached")
        return
    train, heldout = split(features, args.heldout_every)
    if args.draft_vocab:
        choose_draft_vocab(model, train, args, accelerator)
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

    history, minutes = train_head(
        model,
        train,
        heldout,
        accelerator=accelerator,
        checkpoint=args.out / "checkpoint",
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        eval_every=args.eval_every,
        max_minutes=args.max_minutes,
        seed=args.seed,
        resume=args.resume,
        sequences=sequences,
        examples_per_batch=args.examples_per_batch,
        distill_weight=args.distill_weight,
    )
    if accelerator.is_main_process:
        model.config.extra["history"] = history
        model.config.extra["train_minutes"] = round(minutes, 1)
        model.config.extra["train_device"] = describe_device(accelerator)
        model.save_pretrained(args.out / "final")
        (args.out / "history.json").write_text(json.dumps(history, indent=1))
        accelerator.print(f"saved {args.out / 'final'}")


if __name__ == "__main__":
    raise SystemExit(main())
