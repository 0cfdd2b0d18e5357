"""The raw backbone's pass costs against ShuffleLM's own, side by side, in milliseconds.

    python -m shuffle_model.bench.curves --dtype bfloat16 [--rounds 12]

A pass over n new tokens on a cache of 256 tokens, for n = 1..16: the Hugging Face backbone as
it is (its LM head on the new tokens only, as its greedy search does) and ShuffleLM's greedy
pass (`trunk_forward(argmax_only=True)`: row-invariant where the model uses it, tokens chosen
on float32 logits), interleaved in rounds so that drift hits both alike; the fast end of the
rounds (cost.undisturbed). Printed as a markdown table: ms and c(n) for each, and ours / raw.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import DynamicCache

from ..decoding.cost import CONTEXT_TOKENS, undisturbed
from ..model.faster_decode_mixer import FasterDecodeMixer
from ..model.precision import timing_context

SIZES = (1, 2, 3, 4, 6, 8, 12, 16)


def passes(model, block: torch.Tensor, caches: dict) -> dict:
    """The two passes over the block (1, n), the tokens that follow the context, each on its
    own cache of it (Hugging Face's DynamicCache, ours from model.new_cache), left as found."""
    n = block.shape[1]

    @torch.no_grad()
    def raw():
        cache = caches["raw"]
        model.backbone(input_ids=block, past_key_values=cache, use_cache=True, logits_to_keep=n)
        cache.crop(-n)

    @torch.no_grad()
    def ours():
        model.trunk_forward(block, cache=caches["ours"], argmax_only=True)
        caches["ours"].crop(-n)

    return {"raw": raw, "ours": ours}


def measure(model, *, rounds: int) -> dict[str, dict[int, float]]:
    """{"raw" | "ours": {n: ms}}."""
    context = min(CONTEXT_TOKENS, model.context_length - max(SIZES) - 1)
    ids = timing_context(context + max(SIZES), model.config.vocab_size, model.device)
    caches = {"raw": DynamicCache(config=model.backbone.config), "ours": model.new_cache()}
    for cache in caches.values():
        model.trunk_forward(ids[:, :context], cache=cache, logits=False)  # the context both see
    runs = {n: passes(model, ids[:, context : context + n], caches) for n in SIZES}
    times: dict[tuple[str, int], list[float]] = {}
    for round_ in range(rounds + 1):  # round 0 warms up
        for n, kinds in runs.items():
            for kind, run in kinds.items():
                start = time.perf_counter()
                run()
                if round_:
                    times.setdefault((kind, n), []).append(time.perf_counter() - start)
    return {
        kind: {n: 1000 * undisturbed(times[(kind, n)]) for n in SIZES} for kind in ("raw", "ours")
    }


def markdown(ms: dict[str, dict[int, float]], model) -> str:
    raw, ours = ms["raw"], ms["ours"]
    lines = [
        f"Pass costs, {str(model.dtype).replace('torch.', '')}, row-invariant passes: "
        f"{'yes' if model.uses_row_invariance() else 'no'}; a cache of {CONTEXT_TOKENS} tokens.",
        "",
        "| n | raw ms | raw c(n) | ours ms | ours c(n) | ours / raw |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in SIZES:
        lines.append(
            f"| {n} | {raw[n]:.1f} | {raw[n] / raw[1]:.2f} | {ours[n]:.1f} | "
            f"{ours[n] / ours[1]:.2f} | {ours[n] / raw[n]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shuffle_model.bench.curves")
    parser.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16")
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds per size")
    args = parser.parse_args(argv)
    model = FasterDecodeMixer.from_pretrained(dtype=args.dtype)
    print(markdown(measure(model, rounds=args.rounds), model), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
