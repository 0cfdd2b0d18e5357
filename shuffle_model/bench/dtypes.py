"""What half precision does to the answers: two benchmark runs of the same prompts, compared.

    python -m shuffle_model.bench.dtypes bench/results/A-bf16.json bench/results/B-fp32.json

For one method (`ordinary` by default: ShuffleLM's own decoding without drafts), per prompt
both runs answered: whether the answers are identical, where the first different token comes
and the ROUGE-L of the two texts; overall and per category. Verified methods write what
`ordinary` writes in their dtype, so this is what the dtype changes for every method. The
summary is printed as markdown and, with --out, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from transformers import AutoTokenizer

from ..resources import DEFAULT_HEAD_DIR


def answers(result: dict, method: str) -> dict[int, tuple[str, list[int]]]:
    """question id -> (category, token ids) of `method` in a benchmark result."""
    return {
        record["question_id"]: (record["category"], record["runs"][method]["ids"])
        for record in result["records"]
        if method in record["runs"]
    }


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The index of the first token where the answers differ (a shorter answer ends there);
    None where they are identical."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(first: dict, second: dict, *, method: str, tokenizer) -> dict:
    """Per prompt both results hold, and summed up overall and per category."""
    from rouge_score import rouge_scorer  # here: it loads nltk (a second), for scoring only

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    a, b = answers(first, method), answers(second, method)
    prompts = []
    for qid in sorted(set(a) & set(b)):
        (category, ids_a), (_, ids_b) = a[qid], b[qid]
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in (ids_a, ids_b)]
        rouge = scorer.score(*texts)["rougeL"].fmeasure if any(texts) else 1.0
        prompts.append(
            {
                "question_id": qid,
                "category": category,
                "first_difference": first_difference(ids_a, ids_b),
                "rouge_l": round(rouge, 4),
            }
        )
    categories = sorted({p["category"] for p in prompts})
    return {
        "method": method,
        "runs": [describe(first), describe(second)],
        "overall": summary(prompts),
        "categories": {c: summary([p for p in prompts if p["category"] == c]) for c in categories},
        "prompts": prompts,
    }


def describe(result: dict) -> str:
    return f"{result['date']} {result['model']['dtype']} ({result['prompts']} prompts)"


def summary(prompts: list[dict]) -> dict:
    differences = [p["first_difference"] for p in prompts if p["first_difference"] is not None]
    return {
        "prompts": len(prompts),
        "identical": len(prompts) - len(differences),
        "first_difference_median": statistics.median(differences) if differences else None,
        "rouge_l": round(statistics.fmean(p["rouge_l"] for p in prompts), 4) if prompts else None,
    }


def markdown(comparison: dict) -> str:
    first, second = comparison["runs"]
    lines = [
        f"`{comparison['method']}` in {first} against {second}: identical answers, the median "
        "token at which different answers part, and ROUGE-L of the texts.",
        "",
        "| prompts | identical | first difference (median token) | ROUGE-L |",
        "|---|---:|---:|---:|",
    ]
    rows = [("all", comparison["overall"]), *comparison["categories"].items()]
    for name, s in rows:
        at = "-" if s["first_difference_median"] is None else f"{s['first_difference_median']:g}"
        lines.append(f"| {name} ({s['prompts']}) | {s['identical']} | {at} | {s['rouge_l']:.3f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m shuffle_model.bench.dtypes",
        description="Compare one method's answers between two benchmark results.",
    )
    parser.add_argument("first", type=Path, help="a benchmark result (.json), e.g. bfloat16")
    parser.add_argument("second", type=Path, help="another on the same prompts, e.g. float32")
    parser.add_argument("--method", default="ordinary", help="the method compared")
    parser.add_argument("--out", type=Path, help="write the comparison here as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    first, second = (json.loads(path.read_text()) for path in (args.first, args.second))
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_HEAD_DIR)
    comparison = compare(first, second, method=args.method, tokenizer=tokenizer)
    if not comparison["prompts"]:
        print(f"no prompt has a {args.method!r} answer in both results")
        return 1
    if args.out:
        args.out.write_text(json.dumps(comparison, indent=1))
    print(markdown(comparison), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
