"""python -m shuffle_model.cli.lossless --dtype bfloat16: measure the near-tie bound and how often
verified decoding is identical to ordinary decoding, on held-out prompts."""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from tqdm import tqdm

from ..bench.evaluate import HELDOUT_SEED
from ..decoding.lossless import compare, gap_shifts, model_bound
from ..model.chat import encode_prompt
from ..model.faster_decode_mixer import FasterDecodeMixer
from ..training.prompts import HANDWRITTEN_PROMPTS, generate_prompts
from . import one_line_errors


@one_line_errors
def main(argv=None) -> int:
    """python -m shuffle_model.cli.lossless --dtype bfloat16: measure the near-tie bound and how
    often verified decoding is identical to ordinary decoding, on held-out prompts."""
    parser = argparse.ArgumentParser(
        prog="python -m shuffle_model.cli.lossless", description=__doc__
    )
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompts", type=int, default=8, help="template prompts (held out)")
    parser.add_argument("--handwritten", action="store_true", help="add the hand-written ones")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--blocks", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--json", default=None, help="write the measurements here")
    parser.add_argument(
        "--plain-passes", action="store_true", help="without row-invariant passes (invariant.py)"
    )
    args = parser.parse_args(argv)
    model = FasterDecodeMixer.from_pretrained(
        device=args.device, dtype=args.dtype, status=lambda m: print(m, file=sys.stderr)
    )
    if args.plain_passes:
        model.row_invariant_passes = False
    texts = [p["text"] for p in generate_prompts(args.prompts, seed=HELDOUT_SEED + 2)]
    if args.handwritten:
        texts += [p["text"] for p in HANDWRITTEN_PROMPTS]
    shifts, results = [], []
    for text in tqdm(texts, desc=f"near ties ({args.dtype})", unit="prompt"):
        ids = encode_prompt(model.tokenizer, text)
        plain = model.generate([ids], max_new_tokens=args.max_new_tokens, max_parallel_tokens=0)
        plain = plain[0, len(ids) :].tolist()
        fast = model.generate([ids], max_new_tokens=args.max_new_tokens)[0, len(ids) :].tolist()
        result = compare(model, ids, fast, plain)
        results.append(result)
        for block in args.blocks:
            shifts += gap_shifts(model, ids, plain, block=block)
    diverged = [r for r in results if not r.identical]
    report = {
        "dtype": args.dtype,
        "prompts": len(results),
        "identical": sum(r.identical for r in results),
        "divergence_gaps": [round(r.gap, 4) for r in diverged],
        "largest_gap_shift": round(max(shifts), 4),
        "gap_shift_p999": round(sorted(shifts)[int(0.999 * (len(shifts) - 1))], 4),
        "gap_shift_median": round(statistics.median(shifts), 5),
        "positions": len(shifts),
        "row_invariant": model.uses_row_invariance(),
        "bound_in_use": model_bound(model),
    }
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
