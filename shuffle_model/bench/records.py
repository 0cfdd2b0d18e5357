"""Benchmark records (one per question: every method's run) and what is computed from them:
the lossless checks and the summaries, overall and per category."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch
from sacrebleu.metrics import BLEU

from ..model.invariant import HALF
from .methods import Method


@dataclass
class Divergence:
    """Where a run left the reference's tokens."""

    position: int | None  # the first new token that differs (None: one is a prefix)
    tokens: list[int] | None  # (this run's token, the reference's) there
    gap: float | None  # the backbone's top-2 logit gap there; None where it has none


@dataclass
class MethodRun:
    """One method's generation for one prompt."""

    ids: list[int]  # the new tokens
    seconds: float  # wall time of the generation
    passes: int  # backbone forward passes
    peak_bytes: int  # peak memory during the run
    divergence: Divergence | None = None  # set when it left the reference's tokens

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.divergence is None:
            del data["divergence"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> MethodRun:
        divergence = data.get("divergence")
        return cls(
            ids=list(data["ids"]),
            seconds=data["seconds"],
            passes=data["passes"],
            peak_bytes=data["peak_bytes"],
            divergence=Divergence(**divergence) if divergence else None,
        )


@dataclass
class PromptRecord:
    """Every method's run on one benchmark question (a line of the run's .partial.jsonl)."""

    question_id: int
    category: str
    prompt_tokens: int
    setup: dict | None  # what the run was made with (run_setup); --resume checks it
    runs: dict[str, MethodRun]  # by method name

    def to_dict(self) -> dict:
        return {**asdict(self), "runs": {name: run.to_dict() for name, run in self.runs.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> PromptRecord:
        runs = {name: MethodRun.from_dict(run) for name, run in data["runs"].items()}
        return cls(
            data["question_id"], data["category"], data["prompt_tokens"], data.get("setup"), runs
        )


class LosslessnessError(AssertionError):
    """A verified greedy method produced different tokens from the baseline."""


def lossless_reference(methods: list[Method], dtype: torch.dtype) -> str:
    """What verified methods must reproduce: the baseline's tokens in float32; in half
    precision ShuffleLM's own ordinary decoding (when it runs), exactly where passes are
    row-invariant, else up to near-ties (lossless.py)."""
    names = {m.name for m in methods}
    if dtype in HALF and "ordinary" in names:
        return "ordinary"
    return "baseline"


def check_lossless(
    records: list[PromptRecord],
    methods: list[Method],
    *,
    reference: str = "baseline",
    bound: float = 0.0,
) -> list[str]:
    """Every place where a lossless method's tokens differ from the reference's beyond the
    guarantee: any difference in float32 (bound 0); in half precision (reference: our own
    ordinary decoding) one whose logit gap exceeds the model's bound (lossless.model_bound)."""
    problems = []
    for record in records:
        expected = record.runs[reference].ids
        for method in methods:
            run = record.runs.get(method.name)
            if not method.lossless or method.name == reference or not run:
                continue
            if method.name == "baseline":  # Hugging Face's own half-precision passes: compared
                continue  # with ours in the summary, but not ours to guarantee
            if run.ids == expected:
                continue
            gap = run.divergence.gap if run.divergence else None
            if bound > 0 and gap is not None and gap <= bound:
                continue  # a near-tie: within the half-precision guarantee
            first = next(
                (i for i, (a, b) in enumerate(zip(run.ids, expected, strict=False)) if a != b),
                min(len(run.ids), len(expected)),
            )
            where = f" (logit gap {gap:.3f} > {bound:g})" if bound > 0 and gap is not None else ""
            problems.append(
                f"{method.name} differs from {reference} on question "
                f"{record.question_id} at new token {first}{where}"
            )
    return problems


def lossless_summary(records, methods, *, reference: str, bound: float) -> dict:
    """Per method: prompts identical to the reference, near-tie divergences, largest gap."""
    summary = {"reference": reference, "near_tie_bound": bound, "methods": {}}
    for method in methods:
        if method.name == reference or not (method.lossless or method.name == "baseline"):
            continue
        runs = [r.runs[method.name] for r in records if method.name in r.runs]
        expected = [r.runs[reference].ids for r in records if method.name in r.runs]
        gaps = [
            run.divergence.gap
            for run, ids in zip(runs, expected, strict=True)
            if run.ids != ids and run.divergence is not None and run.divergence.gap is not None
        ]
        summary["methods"][method.name] = {
            "prompts": len(runs),
            "identical": sum(run.ids == ids for run, ids in zip(runs, expected, strict=True)),
            "largest_gap": max(gaps) if gaps else None,
        }
    return summary


def speedup(baseline: MethodRun, run: MethodRun) -> float:
    """A method's speed-up on one prompt: its tokens per second over the baseline's. Where
    both write the same text (float32) this is the ratio of their times; in half precision
    the baseline's text may differ in length, so time alone would mislead."""
    return (len(run.ids) / run.seconds) / (len(baseline.ids) / baseline.seconds)


def summarise(records: list[PromptRecord], methods: list[Method], tokenizer) -> dict:
    """Per method, overall and per category."""
    from rouge_score import rouge_scorer  # here: it loads nltk (a second), for scoring only

    bleu = BLEU(effective_order=True)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    texts = {}
    for record in records:
        for name, run in record.runs.items():
            texts[(record.question_id, name)] = tokenizer.decode(run.ids, skip_special_tokens=True)

    def stats(subset: list[PromptRecord], method: Method) -> dict:
        runs = [(r, r.runs[method.name]) for r in subset if method.name in r.runs]
        if not runs:
            return {}
        seconds = sum(run.seconds for _, run in runs)
        tokens = sum(len(run.ids) for _, run in runs)
        passes = sum(run.passes for _, run in runs)
        ratios = [speedup(r.runs["baseline"], run) for r, run in runs]
        hyps = [texts[(r.question_id, method.name)] for r, _ in runs]
        refs = [texts[(r.question_id, "baseline")] for r, _ in runs]
        rouge = [
            scorer.score(ref, hyp)["rougeL"].fmeasure if ref or hyp else 1.0
            for ref, hyp in zip(refs, hyps, strict=True)
        ]
        return {
            "prompts": len(runs),
            "new_tokens": tokens,
            "seconds": round(seconds, 3),
            "tokens_per_second": round(tokens / seconds, 2),
            "speedup_median": round(statistics.median(ratios), 3),
            "speedup_mean": round(statistics.fmean(ratios), 3),
            "tokens_per_pass": round(tokens / max(passes, 1), 3),
            "bleu": round(bleu.corpus_score(hyps, [refs]).score, 2),
            "rouge_l": round(statistics.fmean(rouge), 4),
            "peak_memory_mb": round(max(run.peak_bytes for _, run in runs) / 2**20, 1),
        }

    categories = sorted({r.category for r in records})
    summary = {}
    for method in methods:
        summary[method.name] = {
            "description": method.description,
            "overall": stats(records, method),
            "categories": {
                c: stats([r for r in records if r.category == c], method) for c in categories
            },
        }
    if "shufflelm" in summary and "shufflelm+trace" in summary:
        pairs = [
            r.runs["shufflelm+trace"].seconds / r.runs["shufflelm"].seconds
            for r in records
            if {"shufflelm", "shufflelm+trace"} <= set(r.runs)
        ]
        summary["trace_overhead_median"] = round(statistics.median(pairs) - 1, 4) if pairs else None
    return summary
