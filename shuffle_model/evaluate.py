"""Compare trained heads on real generation: tokens per backbone pass and how often the shuffle
is not the identity, on our own prompts (never the Spec-Bench evaluation set).

    python -m shuffle_model.evaluate runs/head-a runs/head-b --prompts 8 --handwritten

Prompts: `--prompts N` held-out ones from the template generator (a seed the training data did
not use) and, with `--handwritten`, the hand-written everyday requests of
`prompts.HANDWRITTEN_PROMPTS`, which show how far the template data carries. For each head and
strategy: verified greedy generation through the shared loop, then tokens per pass (new tokens
/ backbone forwards, the prefill counted) per prompt category, the share of drafting steps whose
assignment is not slot k -> offset k, and the share whose predicted map (each score row's best
offset) differs from the most common map (0 for any constant permutation).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from .shuffle import map_variety, predicted_maps

HELDOUT_SEED = 424242  # the distillation data used seeds 0 and 7


def non_identity(step) -> bool:
    """Whether this step's assignment moved any drafted slot away from offset k+1."""
    return any(s.offset is not None and s.offset != s.index + 1 for s in step.slots)


def evaluate(model, prompts: list[dict], *, strategy: str, max_new_tokens: int) -> dict:
    from .chat import encode_prompt

    tokens, forwards, steps, moved, maps = defaultdict(int), defaultdict(int), 0, 0, []
    for prompt in prompts:
        ids = encode_prompt(model.tokenizer, prompt["text"])
        _, trace = model.generate(
            [ids], max_new_tokens=max_new_tokens, shuffle_strategy=strategy, return_trace=True
        )
        for key in (prompt["category"], prompt.get("group", "generator"), "all"):
            tokens[key] += trace.totals.new_tokens
            forwards[key] += trace.totals.backbone_forwards
        drafting = [s for s in trace.steps if s.slots]
        steps += len(drafting)
        moved += sum(non_identity(s) for s in drafting)
        maps += predicted_maps([s.shuffle_probs for s in drafting])
    return {
        "tokens_per_pass": {k: round(tokens[k] / forwards[k], 3) for k in tokens},
        "non_identity_steps": round(moved / max(steps, 1), 3),
        "map_variety": round(map_variety(maps), 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shuffle_model.evaluate", description=__doc__)
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
    parser.add_argument("--max-new-tokens", type=int, default=96, help="128 for Spec-Bench figures")
    parser.add_argument("--strategies", nargs="+", default=["rotary", "identity"])
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)

    from .faster_decode_mixer import FasterDecodeMixer
    from .prompts import HANDWRITTEN_PROMPTS, generate_prompts

    prompts = generate_prompts(args.prompts, seed=HELDOUT_SEED)
    if args.handwritten:
        prompts += [
            {**p, "category": f"hand/{p['category']}", "group": "handwritten"}
            for p in HANDWRITTEN_PROMPTS
        ]
    if args.spec_bench:
        from .bench import load_questions
        from .overlap import SPEC_BENCH

        questions = load_questions(SPEC_BENCH, None, args.spec_bench)
        prompts += [
            {"category": f"spec/{q['category']}", "group": "spec_bench", "text": q["turns"][0]}
            for q in questions
        ]
    first = FasterDecodeMixer.from_pretrained(
        args.heads[0], status=lambda m: print(m, file=sys.stderr)
    )
    results = {}
    jobs = [(h, s) for h in args.heads for s in args.strategies]
    for head, strategy in tqdm(jobs, desc="evaluate", unit="run"):
        model = (
            first
            if head == args.heads[0]
            else FasterDecodeMixer.from_pretrained(
                head, backbone=first.backbone, tokenizer=first.tokenizer, device=first.device
            )
        )
        result = evaluate(model, prompts, strategy=strategy, max_new_tokens=args.max_new_tokens)
        results[f"{head}:{strategy}"] = result
        tqdm.write(f"{head} {strategy}: {json.dumps(result)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
