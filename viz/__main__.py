"""python -m viz TRACE.json --gif out.gif   |   python -m viz --prompt "..." --gif out.gif"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from shuffle_model import BackboneNotFound, FasterDecodeMixer, GenerationTrace, TraceError
from shuffle_model.model.chat import encode_prompt

from .figures import overview
from .gif import render_gif


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m viz", description=__doc__)
    parser.add_argument("trace", nargs="?", type=Path, help="a saved GenerationTrace JSON")
    parser.add_argument("--prompt", help="generate with the default model instead")
    parser.add_argument("--gif", type=Path, default=Path("shuffle_animation.gif"))
    parser.add_argument("--html", type=Path, help="also write the overview figure as HTML")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--strategy", default="rotary")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--max-frames", type=int, default=360)
    args = parser.parse_args(argv)
    if (args.trace is None) == (args.prompt is None):
        parser.error("give either a TRACE.json or --prompt")
    try:
        if args.trace is not None:
            trace = GenerationTrace.load(args.trace)
        else:
            model = FasterDecodeMixer.from_pretrained(status=lambda m: print(m, file=sys.stderr))
            ids = encode_prompt(model.tokenizer, args.prompt)
            _, trace = model.generate(
                [ids],
                max_new_tokens=args.max_new_tokens,
                shuffle_strategy=args.strategy,
                verify=not args.no_verify,
                return_trace=True,
            )
        with tqdm(total=100, desc="GIF", unit="%") as bar:

            def advance(fraction: float) -> None:
                bar.update(round(fraction * 100) - bar.n)

            render_gif(
                trace,
                args.gif,
                fps=args.fps,
                width=args.width,
                max_frames=args.max_frames,
                progress=advance,
            )
    except (BackboneNotFound, OSError, TraceError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.gif} ({args.gif.stat().st_size / 1e6:.2f} MB)")
    if args.html:
        overview(trace).write_html(args.html, include_plotlyjs=True)
        print(f"wrote {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
