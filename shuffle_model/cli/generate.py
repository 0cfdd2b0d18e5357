"""Command line: python -m shuffle_model generate "prompt" [options]  (= shufflelm generate)
python -m shuffle_model cost [--remeasure]   (this machine's cost curve; = shufflelm cost)"""

from __future__ import annotations

import argparse
import sys

from ..decoding.cost import curve_path, ensure_cost_curve
from ..decoding.planning import BLOCK_RULES
from ..decoding.settings import DRAFT_SOURCES, STRATEGIES, max_drafts
from ..model.backbone import BackboneNotFound
from ..model.chat import encode_prompt
from ..model.runtime import load_model

MODEL_HELP = (
    "the model: 'default' (the shipped head on its backbone), 'tiny' (a tiny random model: "
    "nothing to download, meaningless text), a head directory, or a head's hub repository "
    "(default: 'default')"
)
GENERATE_EPILOG = """The original release's spellings work too: `shufflelm generate PROMPT --model M
--max-tokens N`. There --max-tokens meant the maximum parallel tokens
(generate(max_parallel_tokens=N)), and so it does here: it is --max-parallel-tokens, the drafts
checked per step; the answer's length is --max-new-tokens. --model is --head: a spec as above
(the original release's model sizes are not models here)."""


def parse_args(argv=None, prog: str = "python -m shuffle_model") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser(
        "generate",
        help="generate text and print step statistics",
        epilog=GENERATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("prompt")
    gen.add_argument("--max-new-tokens", type=int, default=128, help="the answer's length")
    gen.add_argument(
        "--max-parallel-tokens",
        "--max-tokens",
        dest="max_parallel_tokens",
        type=int,
        default=None,
        help="drafts checked per step (0: ordinary decoding; default: K + 10); "
        "--max-tokens is the original release's spelling",
    )
    gen.add_argument("--strategy", choices=STRATEGIES, default="rotary")
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--keep-threshold", type=float, default=None)
    gen.add_argument("--no-verify", action="store_true", help="pure parallel mode")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--model", "--head", dest="model", default=None, help=MODEL_HELP)
    gen.add_argument("--backbone", default=None, help="backbone name or path (default: the head's)")
    gen.add_argument("--device", default="auto")
    gen.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a hub backbone run its own Python code (off by default)",
    )
    gen.add_argument("--trace", default=None, help="write the GenerationTrace JSON here")
    gen.add_argument("--block-length", choices=BLOCK_RULES, default="cost")
    gen.add_argument("--draft-source", choices=DRAFT_SOURCES, default=DRAFT_SOURCES[0])
    cost = commands.add_parser(
        "cost", help="show (or measure again) this machine's cost of a pass over n tokens"
    )
    cost.add_argument("--remeasure", action="store_true", help="measure even if cached")
    cost.add_argument("--model", "--head", dest="model", default=None, help=MODEL_HELP)
    cost.add_argument("--device", default="auto")
    cost.add_argument("--dtype", default="auto")
    return parser.parse_args(argv)


def generate_command(args: argparse.Namespace) -> int:
    try:
        model = load_model(
            args.model,
            backbone=args.backbone,
            device=args.device,
            status=lambda m: print(m, file=sys.stderr),
            trust_remote_code=args.trust_remote_code,
        )
        ids = encode_prompt(model.tokenizer, args.prompt, chat=args.chat)
        _, trace = model.generate(
            [ids],
            max_new_tokens=args.max_new_tokens,
            max_parallel_tokens=args.max_parallel_tokens,
            shuffle_strategy=args.strategy,
            temperature=args.temperature,
            top_p=args.top_p,
            keep_threshold=args.keep_threshold,
            verify=not args.no_verify,
            seed=args.seed,
            block_length=args.block_length,
            draft_source=args.draft_source,
            return_trace=True,
        )
    except (ValueError, BackboneNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(trace.output_text)
    t = trace.totals
    print(
        f"\n[{t.new_tokens} tokens in {t.steps} steps, {t.backbone_forwards} backbone passes: "
        f"{t.compression_ratio:.2f} tokens/pass, {t.tokens_per_second:.1f} tokens/s, "
        f"{t.wall_seconds:.2f} s; strategy {args.strategy}, "
        f"{'verified' if not args.no_verify else 'pure parallel'}]",
        file=sys.stderr,
    )
    if args.trace:
        trace.save(args.trace)
        print(f"trace written to {args.trace}", file=sys.stderr)
    return 0


def cost_command(args: argparse.Namespace) -> int:
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        model = load_model(args.model, device=args.device, dtype=args.dtype, status=say)
    except (ValueError, BackboneNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    most = max_drafts(model.config.num_slots) + 1
    curve = ensure_cost_curve(model, max_tokens=most, remeasure=args.remeasure, status=say)
    print(f"{curve.key.get('cpu')} · {curve.key.get('device')} · {curve.key.get('dtype')}")
    print(f"measured {curve.measured} ({curve.repeats} repetitions)")
    print(f"cached in {curve_path(curve.key)}")
    for n, ratio in enumerate(curve.ratios, start=1):
        print(f"  pass over {n:2d} tokens: {ratio:5.2f} x one token")
    print(f"  one token: {curve.one_token_ms:.1f} ms; the head's draft: {curve.draft_cost:.2f} x")
    return 0


def main(argv=None, prog: str = "python -m shuffle_model") -> int:
    args = parse_args(argv, prog)
    if args.command == "generate":
        return generate_command(args)
    if args.command == "cost":
        return cost_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
