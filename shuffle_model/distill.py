"""Self-distillation data: the backbone answers our own prompts (chat template; greedy and
sampled), and the token ids are stored in resumable shards.

    python -m shuffle_model.distill --out cache/distill --prompts 1600 --passages 400

Stage 1 answers `generate_prompts`; stage 2 turns stage-1 answers into summarisation and
reading prompts. Each shard is a safetensors file of token ids; existing shards are skipped,
so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .backbone import DEFAULT_BACKBONE, load_backbone
from .chat import encode_prompt
from .prompts import generate_prompts, passage_prompts


@dataclass
class Example:
    category: str
    prompt_ids: list[int]  # the chat-templated prompt
    answer_ids: list[int]  # the backbone's answer, EOS included when it stopped
    sampled: bool  # True: temperature sampling; False: greedy


def save_shard(path: Path, examples: list[Example]) -> None:
    tokens, offsets, prompt_lengths = [], [0], []
    for example in examples:
        sequence = example.prompt_ids + example.answer_ids
        tokens += sequence
        offsets.append(len(tokens))
        prompt_lengths.append(len(example.prompt_ids))
    meta = [{"category": e.category, "sampled": e.sampled} for e in examples]
    partial = path.with_suffix(".partial")
    save_file(
        {
            "tokens": torch.tensor(tokens, dtype=torch.int32),
            "offsets": torch.tensor(offsets, dtype=torch.int64),
            "prompt_lengths": torch.tensor(prompt_lengths, dtype=torch.int32),
        },
        str(partial),
        metadata={"examples": json.dumps(meta)},
    )
    partial.replace(path)


def load_shard(path: Path) -> list[Example]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["examples"])
    tensors = load_file(str(path))
    tokens, offsets = tensors["tokens"].tolist(), tensors["offsets"].tolist()
    examples = []
    for i, info in enumerate(meta):
        sequence = tokens[offsets[i] : offsets[i + 1]]
        cut = int(tensors["prompt_lengths"][i])
        examples.append(Example(info["category"], sequence[:cut], sequence[cut:], info["sampled"]))
    return examples


def shard_paths(directories: Path | list[Path]) -> list[Path]:
    """The data shards of one or more directories, in a stable order."""
    if isinstance(directories, Path):
        directories = [directories]
    return [shard for d in directories for shard in sorted(d.glob("s?-?????.safetensors"))]


def load_examples(directories: Path | list[Path]) -> list[Example]:
    return [e for shard in shard_paths(directories) for e in load_shard(shard)]


@torch.no_grad()
def answer_batch(model, tokenizer, prompts: list[list[int]], *, max_new_tokens, sampled, seed):
    """Answers of the backbone to a batch of prompt id lists (left-padded batch generation)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        max_new_tokens=max_new_tokens,
        do_sample=sampled,
        temperature=0.7 if sampled else None,
        top_p=0.9 if sampled else None,
        top_k=None,
        pad_token_id=pad,
    )
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or [])
    answers = []
    for row in out[:, width:].tolist():
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        answers.append(row if stop is None else row[: stop + 1])
    return answers


def run_stage(model, tokenizer, prompts, out_dir: Path, stage: str, args) -> None:
    """Answer `prompts` in shards of two batches; a quarter of the shards (by default) sample."""
    rng = random.Random(f"{args.seed}-{stage}")
    shard_size = args.batch_size * 2
    bar = tqdm(total=len(prompts), desc=f"distill {stage}", unit="prompt", dynamic_ncols=True)
    for number, start in enumerate(range(0, len(prompts), shard_size)):
        sampled = rng.random() < args.sampled_fraction
        path = out_dir / f"{stage}-{number:05d}.safetensors"
        chunk = list(range(start, min(start + shard_size, len(prompts))))
        if path.exists():
            bar.update(len(chunk))
            continue
        encoded = {i: encode_prompt(tokenizer, prompts[i]["text"]) for i in chunk}
        by_length = sorted(chunk, key=lambda i: len(encoded[i]))
        examples: dict[int, Example] = {}
        for b in range(0, len(by_length), args.batch_size):
            batch = by_length[b : b + args.batch_size]
            answers = answer_batch(
                model,
                tokenizer,
                [encoded[i] for i in batch],
                max_new_tokens=args.max_new_tokens,
                sampled=sampled,
                seed=args.seed + start + b,
            )
            for i, answer in zip(batch, answers, strict=True):
                examples[i] = Example(prompts[i]["category"], encoded[i], answer, sampled)
            bar.update(len(batch))
            bar.set_postfix(answer_tokens=sum(len(a) for a in answers), sampled=sampled)
        save_shard(path, [examples[i] for i in chunk])
    bar.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("cache/distill"))
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--prompts", type=int, default=1600, help="stage-1 prompts (0: skip)")
    parser.add_argument("--passages", type=int, default=400, help="stage-2 prompts over answers")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sampled-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", help="float32 matches CPU inference")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_backbone(
        args.backbone, device=args.device, dtype=args.dtype, status=print
    )
    settings = args.out / f"settings-{'s1' if args.prompts else 's2'}.json"
    settings.write_text(json.dumps(vars(args), default=str, indent=2))
    if args.prompts:  # 0: keep the stage-1 shards already in --out and go on to stage 2
        prompts = generate_prompts(args.prompts, seed=args.seed)
        run_stage(model, tokenizer, prompts, args.out, "s1", args)
    if args.passages:
        answers = [
            tokenizer.decode(e.answer_ids, skip_special_tokens=True)
            for e in load_examples(args.out)
            if len(e.answer_ids) >= 60 and not e.sampled
        ]
        rng = random.Random(args.seed + 1)
        rng.shuffle(answers)
        prompts = list(passage_prompts(answers[: args.passages], seed=args.seed))
        run_stage(model, tokenizer, prompts, args.out, "s2", args)
    examples = load_examples(args.out)
    answer_tokens = sum(len(e.answer_ids) for e in examples)
    print(f"{len(examples)} examples, {answer_tokens} answer tokens in {args.out}")


if __name__ == "__main__":
    main()
