"""Compare trained heads: python -m shuffle_model.cli.evaluate HEAD... (see
shuffle_model.bench.evaluate for what is measured)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..bench.evaluate import HELDOUT_SEED, evaluate, recorded_answers, teacher_forced
from ..bench.run import load_questions
from ..model.faster_decode_mixer import FasterDecodeMixer
from ..training import overlap  # its SPEC_BENCH is read at each call (tests point it elsewhere)
from ..training.prompts import HANDWRITTEN_PROMPTS, generate_prompts
from . import one_line_errors


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m shuffle_model.cli.evaluate", description=__doc__
    )
    parser.add_argument("heads", nargs="+", help="head directories")
    parser.add_argument("--prompts", type=int, default=8, help="template-generator prompts")
    parser.add_argument("--handwritten", action="store_true", help="add HANDWRITTEN_PROMPTS")
    parser.add_argument(
        "--spec-bench",
        type=int,
        default=0,
        metavar="N",
        help="add the first N Spec-Bench questions per category (first turn; evaluation only)",
    )
    parser.add_argument(
        "--teacher-forced",
        type=Path,
        metavar="BENCH_JSON",
        help="replay the greedy answers recorded in this benchmark JSON (see above)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=96, help="128 for Spec-Bench figures")
    parser.add_argument("--strategies", nargs="+", default=["rotary", "identity"])
    parser.add_argument("--json", type=Path, help="write the results here too")
    return parser.parse_args(argv)


def evaluation_prompts(args) -> list[dict]:
    """Held-out template prompts, plus the hand-written ones and Spec-Bench questions if asked."""
    prompts = generate_prompts(args.prompts, seed=HELDOUT_SEED)
    if args.handwritten:
        prompts += [
            {**p, "category": f"hand/{p['category']}", "group": "handwritten"}
            for p in HANDWRITTEN_PROMPTS
        ]
    if args.spec_bench:
        questions = load_questions(overlap.SPEC_BENCH, None, args.spec_bench)
        prompts += [
            {"category": f"spec/{q['category']}", "group": "spec_bench", "text": q["turns"][0]}
            for q in questions
        ]
    return prompts


def head_model(head: str, first: FasterDecodeMixer, first_head: str) -> FasterDecodeMixer:
    """The model for `head`: the first one loaded, or a new head on the first one's backbone."""
    if head == first_head:
        return first
    return FasterDecodeMixer.from_pretrained(
        head, backbone=first.backbone, tokenizer=first.tokenizer, device=first.device
    )


@one_line_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    prompts = evaluation_prompts(args)
    first = FasterDecodeMixer.from_pretrained(
        args.heads[0], status=lambda m: print(m, file=sys.stderr)
    )
    results, answers = {}, None
    jobs = [(h, s) for h in args.heads for s in args.strategies]
    for head, strategy in tqdm(jobs, desc="evaluate", unit="run"):
        model = head_model(head, first, args.heads[0])
        result = (
            evaluate(model, prompts, strategy=strategy, max_new_tokens=args.max_new_tokens)
            if prompts
            else {}
        )
        if args.teacher_forced:
            if answers is None:
                answers = recorded_answers(args.teacher_forced, model.tokenizer, overlap.SPEC_BENCH)
            result["teacher_forced"] = teacher_forced(model, answers, strategy=strategy)
        results[f"{head}:{strategy}"] = result
        tqdm.write(f"{head} {strategy}: {json.dumps(result)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
