"""Regenerate the example traces in assets/examples/ with the default model.

    python -m viz.examples                      # all examples, default model
    python -m viz.examples --reference tests/data/first_frame.png

The app offers these traces as instant, model-free examples and the viz tests run on them, so
they cover a mix: strategies, verified and pure parallel mode, greedy and sampled, a prompt
whose answer copies from it (context drafts), and the original fixed, head-only rule.
The prompts are our own (never the Spec-Bench evaluation questions).
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from shuffle_model import FasterDecodeMixer, GenerationTrace
from shuffle_model.model.chat import encode_prompt
from shuffle_model.resources import ASSETS

from .gif import render_gif
from .numbers import per_pass_text, run_numbers

EXAMPLES_DIR = ASSETS / "examples"


@dataclass(frozen=True)
class Example:
    name: str  # file stem in assets/examples/
    prompt: str  # the user's text (one chat turn)
    settings: dict = field(default_factory=dict)  # generate() keyword arguments


EXAMPLES = (
    Example(
        "01-rotary-verified-greedy",
        "Explain in a few sentences why the sky is blue.",
        dict(shuffle_strategy="rotary", verify=True, temperature=0.0),
    ),
    Example(
        "02-hungarian-verified-greedy-code",
        "Write a Python function that returns the factorial of n.",
        dict(shuffle_strategy="hungarian", verify=True, temperature=0.0),
    ),
    Example(
        "03-sinkhorn-verified-sampled",
        "Give me three tips for keeping a small vegetable garden healthy.",
        dict(shuffle_strategy="sinkhorn", verify=True, temperature=0.7, top_p=0.9, seed=3),
    ),
    Example(
        "04-identity-verified-greedy",
        "List the planets of the solar system in order from the sun.",
        dict(shuffle_strategy="identity", verify=True, temperature=0.0),
    ),
    Example(
        "05-rotary-pure-greedy",
        "What is the capital of France, and what is it famous for?",
        dict(shuffle_strategy="rotary", verify=False, keep_threshold=0.5, temperature=0.0),
    ),
    Example(
        "06-hungarian-pure-sampled",
        "Write a short friendly note inviting a neighbour to dinner.",
        dict(
            shuffle_strategy="hungarian",
            verify=False,
            keep_threshold=0.4,
            temperature=0.8,
            seed=11,
        ),
    ),
    Example(
        "07-context-verified-greedy",
        "Copy this sentence exactly, then translate it into French: "
        "The little grey cat sleeps on the warm kitchen floor every afternoon.",
        dict(verify=True, temperature=0.0),
    ),
    Example(
        "08-fixed-head-only-verified-greedy",
        "Explain in a few sentences why the sky is blue.",
        dict(verify=True, temperature=0.0, block_length="fixed", draft_source="head"),
    ),
)


def make_trace(model, example: Example, *, max_new_tokens: int):
    """Generate one example with the shared generation loop and return its trace."""
    ids = encode_prompt(model.tokenizer, example.prompt, chat=True)
    _, trace = model.generate(
        [ids], max_new_tokens=max_new_tokens, return_trace=True, **example.settings
    )
    return trace


def write_reference(trace_path: Path, out: Path) -> None:
    """The first frame of the first example's GIF, as the viz tests' reference PNG."""
    gif = render_gif(GenerationTrace.load(trace_path), max_frames=10)
    with Image.open(io.BytesIO(gif)) as image:
        image.seek(0)
        out.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(out, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m viz.examples", description=__doc__)
    parser.add_argument("--model", default=None, help="head directory (default: assets' head)")
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--only", nargs="*", help="names of examples to regenerate")
    parser.add_argument("--reference", type=Path, help="also write the reference first frame")
    args = parser.parse_args(argv)
    model = FasterDecodeMixer.from_pretrained(
        args.model, status=lambda m: print(m, file=sys.stderr)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = [e for e in EXAMPLES if not args.only or e.name in args.only]
    for example in tqdm(chosen, desc="examples", unit="trace"):
        trace = make_trace(model, example, max_new_tokens=args.max_new_tokens)
        path = args.out / f"{example.name}.json"
        trace.save(path)
        run = run_numbers(trace)
        tokens, passes = run["new_tokens"], run["backbone_passes"]
        tqdm.write(
            f"{path.name}: {tokens} tokens in {passes} backbone passes after the prefill "
            f"({per_pass_text(tokens, passes)} tokens/pass)"
        )
    if args.reference:
        first = sorted(args.out.glob("*.json"))[0]
        write_reference(first, args.reference)
        print(f"reference frame: {args.reference}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
