"""Self-distillation data: the backbone answers a mix of prompts (chat template; greedy and
sampled), and the token ids go to append-only compressed shards kept in the repository.

    OMP_WAIT_POLICY=PASSIVE python -m shuffle_model.cli.distill --answers 8000 --seed 1

Sources (shares of the answers, --mix): `templates` (training/prompts.py), `passages`
(summarisation / reading prompts over earlier greedy answers), `magpie` (user turns the
backbone writes itself, filtered; training/magpie.py) and `docs` (documentation and source
code of installed packages; training/sources.py; tagged `docs` or `code`). No prompt may
share an 8-token run with a held-out question (--exclude, Spec-Bench by default).

Answers come from a continuously refilled decoding pool (training/continuous.py): a row that
ends is refilled at once, so no batch waits for its longest answer. Every `--shard-size`
answers a shard `<tag>-<number>.npz` lands in --out (training/shards.py); a rerun with the
same seed skips the prompts its folder already answered, so an interrupted run continues.
The old safetensors shards (`cache/distill/s?-?????.safetensors`) still load.
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..model.backbone import DEFAULT_BACKBONE, load_backbone
from ..training.continuous import generate_stream
from ..training.distill import DEFAULT_MIX, DEFAULT_OUT, Planner, RateMeter, ShardWriter, existing
from ..training.overlap import SPEC_BENCH, banned_ngrams, question_texts
from . import one_line_errors


def load_banned(tokenizer, args) -> set:
    """The 8-token runs of the held-out questions (empty only with --no-exclude)."""
    if args.no_exclude:
        print("warning: --no-exclude: prompts are not checked against held-out questions")
        return set()
    if not args.exclude.is_file():
        raise SystemExit(
            f"{args.exclude} not found: point --exclude at the held-out questions "
            "(Spec-Bench question.jsonl), or pass --no-exclude for data that is never shipped"
        )
    return banned_ngrams(tokenizer, question_texts(args.exclude))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--answers", type=int, default=8000, help="answers the folder should hold")
    p.add_argument("--mix", default=DEFAULT_MIX, help="shares of the sources")
    p.add_argument("--seed", type=int, default=1, help="a new seed per machine: new prompts")
    p.add_argument("--tag", default=None, help="shard name prefix (default: s<seed>)")
    p.add_argument("--shard-size", type=int, default=250, help="answers per shard")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--max-prompt-tokens", type=int, default=512, help="longer prompts are dropped")
    p.add_argument("--sampled-fraction", type=float, default=0.25)
    p.add_argument("--temperature", type=float, default=0.7, help="of sampled answers")
    p.add_argument("--top-p", type=float, default=0.9, help="of sampled answers")
    p.add_argument("--magpie-temperature", type=float, default=1.0)
    p.add_argument("--magpie-top-p", type=float, default=0.95)
    p.add_argument("--magpie-tokens", type=int, default=96, help="budget of a sampled user turn")
    p.add_argument("--rows", type=int, default=48, help="rows decoding together")
    p.add_argument("--refill-at", type=int, default=4, help="refill once this many rows are free")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--exclude", type=Path, default=SPEC_BENCH, help="held-out questions (jsonl)")
    p.add_argument("--no-exclude", action="store_true", help="skip the held-out check")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", help="float32 matches CPU inference")
    return p.parse_args(argv)


def settings_record(args) -> dict:
    keep = (
        "seed",
        "tag",
        "mix",
        "max_new_tokens",
        "max_prompt_tokens",
        "sampled_fraction",
        "temperature",
        "top_p",
        "magpie_temperature",
        "magpie_top_p",
        "magpie_tokens",
        "dtype",
    )
    return {k: getattr(args, k) for k in keep}


def _interrupt(*_) -> None:
    """SIGTERM ends a run like Ctrl-C: the answers so far are written."""
    raise KeyboardInterrupt


def user_text(tokenizer, prompt_ids: list[int]) -> str:
    """The user's text inside a chat-templated prompt."""
    text = tokenizer.decode(prompt_ids)
    return text.split("<|im_start|>user\n", 1)[-1].split("<|im_end|>", 1)[0]


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.tag = args.tag or f"s{args.seed}"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_backbone(
        args.backbone, device=args.device, dtype=args.dtype, status=print
    )
    banned = load_banned(tokenizer, args)
    done, counts, magpie = existing(args.out)
    planner = Planner(tokenizer, args, done=done, counts=counts, banned=banned)
    for prompt_ids in magpie:  # earlier turns count for the near-duplicate check
        planner.turns.keep(user_text(tokenizer, prompt_ids), True)
    writer = ShardWriter(
        args.out, args.tag, args.shard_size, backbone=args.backbone, settings=settings_record(args)
    )
    signal.signal(signal.SIGTERM, _interrupt)
    have = sum(counts.values())
    bar = tqdm(total=args.answers, initial=have, desc="distill", unit="answer", dynamic_ncols=True)
    meter = RateMeter()
    stream = generate_stream(
        model,
        planner.next_jobs,
        rows=args.rows,
        refill_at=args.refill_at,
        capacity=args.max_prompt_tokens + args.max_new_tokens + 64,
        seed=args.seed,
    )
    try:
        for finished in stream:
            record = planner.finished(finished)
            meter.tick(len(finished.answer_ids), answer=record is not None)
            if record is None:
                continue
            shards = len(writer.written)
            writer.add(record)
            bar.update(1)
            bar.set_postfix_str(f"{meter.describe()}, {dict(planner.counts)}")
            if len(writer.written) > shards:
                planner.aim_at(folder_answers=writer.folder_answers, buffered=len(writer.records))
                tqdm.write(
                    f"{time.strftime('%H:%M:%S')} {meter.answers} answers this run, "
                    f"{meter.active / 60:.0f} min running: {meter.describe()}"
                )
    except KeyboardInterrupt:
        tqdm.write("interrupted: writing the answers so far")
    finally:
        writer.flush()
        bar.close()
    print(
        f"{meter.answers} answers in {meter.active / 60:.1f} min running ({meter.describe()}); "
        f"dropped {dict(planner.dropped)}; Magpie turns rejected {planner.turns.rejected}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
