"""Fit what acceptance estimates mean, on held-out greedy answers of the backbone.

    python -m shuffle_model.cli.calibrate --head assets/default_head --data data/distill
    python -m shuffle_model.cli.calibrate --head assets/default_head --prompts 120 # answers itself

A greedy answer of the backbone is exactly what verified greedy decoding emits, so every
position t of it replays one decoding step: the head drafts at h_t, the shuffle orders the
slots, and the draft at offset i would be accepted iff it equals token t+1+i, given that the
drafts before it were. Those outcomes, against the keep probability that predicted them, give
an isotonic map per offset (fitted on even examples, scored on odd ones: expected calibration
error before and after); the same replay of the context lookup gives the acceptance of context
drafts by match length and depth. Written to calibration.json beside the head.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from tqdm import tqdm

from ..bench.evaluate import HELDOUT_SEED
from ..model import faster_decode_mixer  # its DEFAULT_HEAD_DIR is read at each call
from ..model.calibration import CALIBRATION_FILE
from ..model.chat import encode_prompt
from ..model.faster_decode_mixer import FasterDecodeMixer
from ..training.calibration_fit import Outcomes, fit, heldout_examples, replay_example
from ..training.distill import answer_batch
from ..training.prompts import generate_prompts
from . import one_line_errors


def answered_prompts(model, count: int, *, max_new_tokens: int) -> list[tuple[list, list]]:
    """Greedy answers to `count` template prompts of a seed no training data used."""
    prompts = [
        encode_prompt(model.tokenizer, p["text"])
        for p in generate_prompts(count, seed=HELDOUT_SEED + 1)
    ]
    prompts.sort(key=len)
    pairs = []
    for start in tqdm(range(0, len(prompts), 8), desc="answering", unit="batch"):
        batch = prompts[start : start + 8]
        answers = answer_batch(
            model.backbone,
            model.tokenizer,
            batch,
            max_new_tokens=max_new_tokens,
            sampled=False,
            seed=0,
        )
        pairs += list(zip(batch, answers, strict=True))
    return pairs


@one_line_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shuffle_model.cli.calibrate", description=__doc__
    )
    parser.add_argument("--head", default=None, help="head directory (default: the shipped head)")
    parser.add_argument("--data", type=Path, nargs="*", default=[], help="distill shard folders")
    parser.add_argument("--heldout-every", type=int, default=20, help="1: use every example")
    parser.add_argument("--prompts", type=int, default=0, help="answer this many new prompts")
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--limit", type=int, default=None, help="at most this many answers")
    parser.add_argument("--strategy", default="rotary")
    parser.add_argument("--out", type=Path, default=None, help="default: beside the head")
    args = parser.parse_args(argv)

    model = FasterDecodeMixer.from_pretrained(
        args.head, dtype="float32", status=lambda m: print(m, file=sys.stderr)
    )
    pairs = heldout_examples(args.data, args.heldout_every) if args.data else []
    if args.prompts:
        pairs += answered_prompts(model, args.prompts, max_new_tokens=args.max_new_tokens)
    pairs = pairs[: args.limit]
    if not pairs:
        parser.error("no data: give --data folders and/or --prompts N")
    outcomes = Outcomes()
    for example, (prompt_ids, answer_ids) in enumerate(
        tqdm(pairs, desc="replaying", unit="answer")
    ):
        replay_example(
            model, prompt_ids, answer_ids, example=example, strategy=args.strategy, into=outcomes
        )
    calibration = fit(outcomes, num_slots=model.config.num_slots)
    calibration.report["data"] = {
        "answers": len(pairs),
        "sources": [str(d) for d in args.data]
        + ([f"{args.prompts} template prompts"] if args.prompts else []),
        "heldout_every": args.heldout_every,
        "strategy": args.strategy,
        "date": dt.date.today().isoformat(),
    }
    out = args.out or Path(args.head or faster_decode_mixer.DEFAULT_HEAD_DIR) / CALIBRATION_FILE
    calibration.save(out)
    head = calibration.report["head"]
    print(
        f"head drafts: ECE {head['ece_raw']:.3f} raw -> {head['ece_calibrated']:.3f} calibrated "
        f"on {head['test']} held-out outcomes; context: {calibration.report['context']}"
    )
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
