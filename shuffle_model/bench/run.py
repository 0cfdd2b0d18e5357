"""Benchmark: ShuffleLM side by side with autoregressive decoding and prompt lookup decoding.

    python -m shuffle_model.bench.run --limit 10          # every category, 10 questions each

All methods run in one process on the same Spec-Bench prompts (first turn, chat template),
interleaved prompt by prompt (method order rotating) after a warm-up, so that machine drift
hits them alike. Per method, overall and per category: tokens/s, speed-up over the baseline
(median and mean of per-prompt time ratios), tokens per backbone pass, BLEU and ROUGE-L against
the baseline's text, peak memory, and the cost of recording a full trace. Verified greedy
methods must reproduce the baseline token for token; the run fails loudly if one does not.
Per-prompt records are appended to a JSONL file as they land, and --resume continues a run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import torch
from tqdm import tqdm

from ..decoding.cost import cost_curve, cpu_name
from ..decoding.lossless import compare, model_bound
from ..decoding.settings import max_drafts
from ..model.invariant import HALF
from ..training.overlap import SPEC_BENCH

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "autoregressive", "prompt_lookup" or "shuffle"
    lossless: bool  # must reproduce the baseline's tokens exactly
    settings: dict = field(default_factory=dict)  # generate() settings for shuffle methods
    head: str = "default"  # "default" or "fixed"
    trace: bool = False  # record a full GenerationTrace (to measure its overhead)
    description: str = ""


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


METHODS = [
    Method("baseline", "autoregressive", True, description="backbone.generate(do_sample=False)"),
    Method(
        "prompt_lookup",
        "prompt_lookup",
        False,
        description="Hugging Face prompt lookup decoding, prompt_lookup_num_tokens=10",
    ),
    Method(
        "shufflelm",
        "shuffle",
        True,
        {},
        description="ShuffleLM's default: head + context drafts, cost-aware block length",
    ),
    Method(
        "head-cost",
        "shuffle",
        True,
        {"draft_source": "head"},
        description="ShuffleLM, head drafts only, cost-aware block length",
    ),
    Method(
        "context-cost",
        "shuffle",
        True,
        {"draft_source": "context"},
        description="ShuffleLM, context drafts only (our n-gram lookup), cost-aware block length",
    ),
    Method(
        "shuffle-rotary",
        "shuffle",
        True,
        {"shuffle_strategy": "rotary", "draft_source": "head", "block_length": "fixed"},
        description="the original ShuffleLM: head drafts only, fixed rule (every kept draft)",
    ),
    Method(
        "ordinary",
        "shuffle",
        True,
        {"max_parallel_tokens": 0},
        description="ShuffleLM's loop with no drafts (its own ordinary decoding)",
    ),
    *[
        Method(
            f"shuffle-{s}",
            "shuffle",
            True,
            {"shuffle_strategy": s, "draft_source": "head", "block_length": "fixed"},
            description=f"original rule, head only, {s} strategy",
        )
        for s in ("hungarian", "sinkhorn", "identity")
    ],
    *[
        Method(
            f"pure@{t}",
            "shuffle",
            False,
            {"verify": False, "keep_threshold": t},
            description=f"ShuffleLM pure parallel (unverified), keep threshold {t}",
        )
        for t in (0.3, 0.5, 0.7)
    ],
    Method(
        "fixed-head",
        "shuffle",
        True,
        {"shuffle_strategy": "identity", "draft_source": "head", "block_length": "fixed"},
        head="fixed",
        description="fixed-assignment (Medusa-style) head, verified, original rule",
    ),
    Method(
        "shufflelm+trace",
        "shuffle",
        True,
        {},
        trace=True,
        description="the default recording a full trace (hook overhead)",
    ),
]
DEFAULT_METHODS = [
    "baseline",
    "prompt_lookup",
    "shufflelm",
    "head-cost",
    "context-cost",
    "shuffle-rotary",
    "ordinary",
]
METHOD_NAMES = [m.name for m in METHODS]


class LosslessnessError(AssertionError):
    """A verified greedy method produced different tokens from the baseline."""


# --- measuring one run -------------------------------------------------------------------------


class ForwardCounter:
    """Counts backbone passes (calls of the backbone's base model), whoever makes them."""

    def __init__(self, backbone):
        self.count = 0
        self.handle = backbone.base_model.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.count += 1


class PeakMemory:
    """Peak resident memory (CPU, sampled by a thread) or peak allocated memory (CUDA)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.process = psutil.Process(os.getpid())

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)


def run_method(
    method: Method, models: dict, prompt_ids: list[int], max_new_tokens: int
) -> MethodRun:
    """Generate once with `method`; returns the new token ids, seconds, passes, peak memory."""
    model = models[method.head]
    backbone = model.backbone
    device = model.device
    counter = models["counter"]
    before = counter.count
    ids = torch.tensor([prompt_ids], device=device)
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        if method.kind == "shuffle":
            out = model.generate(
                ids, max_new_tokens=max_new_tokens, return_trace=method.trace, **method.settings
            )
            out = out[0] if method.trace else out
        else:
            extra = {"prompt_lookup_num_tokens": 10} if method.kind == "prompt_lookup" else {}
            out = backbone.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=model.tokenizer.pad_token_id,
                **extra,
            )
        synchronize(device)
        seconds = time.perf_counter() - start
    new = out[0, len(prompt_ids) :].tolist()
    return MethodRun(new, seconds, counter.count - before, memory.peak)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that wall times cover it; nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def bookkeeping_cost(model, prompt_ids: list[int], *, max_new_tokens: int) -> dict:
    """Median per-step wall times of the default method's phases (a traced run), in ms and as
    a share of a one-token pass: the head's draft, the context lookup, the plan, the pass and
    verification (with the cache update and the proposers' bookkeeping)."""
    _, trace = model.generate([prompt_ids], max_new_tokens=max_new_tokens, return_trace=True)
    one = model.cost_curve.one_token_ms if model.cost_curve else 0.0
    phases = {}
    for phase in ("head", "context", "plan", "forward", "verify"):
        times = [s.timings_ms[f"{phase}_ms"] for s in trace.steps if f"{phase}_ms" in s.timings_ms]
        if times:
            ms = statistics.median(times)
            phases[phase] = {"ms": round(ms, 3), "of_a_pass": round(ms / one, 4) if one else None}
    return phases


# --- the run ---------------------------------------------------------------------------------


def load_questions(path: Path, categories: list[str] | None, limit: int | None) -> list[dict]:
    questions = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    chosen, per_category = [], {}
    for q in questions:
        if categories and q["category"] not in categories:
            continue
        if limit is not None and per_category.get(q["category"], 0) >= limit:
            continue
        per_category[q["category"]] = per_category.get(q["category"], 0) + 1
        chosen.append(q)
    if not chosen:
        raise ValueError(f"no questions match categories={categories} in {path}")
    return round_robin(chosen)


def round_robin(questions: list[dict]) -> list[dict]:
    """Order questions category by category in turn, so that a run stopped early by
    --max-minutes still covers every category about equally."""
    by_category: dict[str, list[dict]] = {}
    for q in questions:
        by_category.setdefault(q["category"], []).append(q)
    queues = list(by_category.values())
    ordered = []
    for round_ in range(max(len(q) for q in queues)):
        ordered += [queue[round_] for queue in queues if round_ < len(queue)]
    return ordered


def lossless_reference(methods: list[Method], dtype: torch.dtype) -> str:
    """What verified methods must reproduce: the baseline's tokens in float32; in half
    precision ShuffleLM's own ordinary decoding (when it runs), exactly where passes are
    row-invariant, else up to near-ties (lossless.py)."""
    names = {m.name for m in methods}
    if dtype in HALF and "ordinary" in names:
        return "ordinary"
    return "baseline"


def mark_divergences(model, prompt_ids, runs: dict, methods: list[Method], reference: str):
    """For every run that leaves the reference's tokens: where, the two tokens and the
    backbone's logit gap there (a half-precision near-tie, or a real difference)."""
    expected = runs[reference].ids
    for method in methods:
        run = runs.get(method.name)
        if run is None or method.name == reference or run.ids == expected:
            continue
        if not method.lossless and method.name != "baseline":
            continue
        found = compare(model, prompt_ids, run.ids, expected)
        run.divergence = Divergence(
            position=found.position,
            tokens=list(found.tokens) if found.tokens else None,
            gap=None if found.gap == float("inf") else round(found.gap, 4),
        )


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


def summarise(records: list[PromptRecord], methods: list[Method], tokenizer) -> dict:
    """Per method, overall and per category."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

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
        ratios = [r.runs["baseline"].seconds / run.seconds for r, run in runs]
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


def machine_description(device: torch.device) -> dict:
    import transformers

    info = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def markdown(result: dict) -> str:
    s, m = result["settings"], result["model"]
    lines = [
        f"# ShuffleLM benchmark — {result['date']} on {result['machine']['device']}",
        "",
        f"Machine: {result['machine'].get('gpu', result['machine']['cpu'])}, "
        f"{result['machine']['torch_threads']} torch threads, torch {result['machine']['torch']}, "
        f"transformers {result['machine']['transformers']}.",
        f"Model: {m['backbone']} + {m['head']} (K={m['num_slots']}), "
        f"{m['dtype']}. Spec-Bench first turns, chat template, greedy, "
        f"max {s['max_new_tokens']} new tokens, {result['prompts']} prompts "
        f"({s['limit']} per category"
        + (
            f"; stopped by --max-minutes {s['max_minutes']} after {result['prompts']} of "
            f"{s['questions_planned']} planned, taken category by category in turn)."
            if s.get("stopped_early")
            else ")."
        )
        + (
            f" {s['resumed_prompts']} of them were carried over by --resume from an earlier "
            "invocation; the pass-cost line below is this invocation's."
            if s.get("resumed_prompts")
            else ""
        ),
        "",
        "| method | tokens/s | speed-up (median) | speed-up (mean) | tokens/pass | BLEU "
        "| ROUGE-L | peak memory |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in result["summary"].items():
        if not isinstance(entry, dict) or not entry.get("overall"):
            continue
        o = entry["overall"]
        lines.append(
            f"| {name} | {o['tokens_per_second']:.1f} | {o['speedup_median']:.2f}x | "
            f"{o['speedup_mean']:.2f}x | {o['tokens_per_pass']:.2f} | {o['bleu']:.1f} | "
            f"{o['rouge_l']:.3f} | {o['peak_memory_mb']:.0f} MB |"
        )
    overhead = result["summary"].get("trace_overhead_median")
    if overhead is not None:
        lines += [
            "",
            f"Recording a full trace costs {overhead:+.1%} wall time (median per prompt).",
        ]
    curve = result.get("cost_curve")
    if curve:
        ratios = curve["ratios"]
        lines += [
            "",
            "The machine's cost curve, measured at the start of this invocation (the fast end of "
            f"{curve['repeats']} interleaved repetitions): a backbone pass over n new tokens costs "
            + ", ".join(f"n={n} {r:.2f}x" for n, r in enumerate(ratios, 1) if n > 1)
            + f" a one-token pass ({curve['one_token_ms']:.0f} ms); the head's draft costs "
            f"{curve['draft_cost']:.2f}x. The cost-aware methods choose their block against it.",
        ]
    phases = result.get("step_phases")
    if phases:
        lines += [
            "",
            "Per step (median of a traced run of the default): "
            + ", ".join(
                f"{name} {p['ms']:.2f} ms"
                + (f" ({p['of_a_pass']:.1%} of a one-token pass)" if p["of_a_pass"] else "")
                for name, p in phases.items()
            )
            + ".",
        ]
    main = [
        m
        for m in ("baseline", "prompt_lookup", "shufflelm", "head-cost", "context-cost")
        if m in result["summary"]
    ]
    categories = sorted(result["summary"]["baseline"]["categories"])
    lines += [
        "",
        "Per category: tokens per backbone pass / median speed-up over the baseline.",
        "",
        "| category | " + " | ".join(main) + " |",
        "|---|" + "---:|" * len(main),
    ]
    for c in categories:
        cells = []
        for m in main:
            entry = result["summary"][m]["categories"].get(c) or {}
            cells.append(
                f"{entry.get('tokens_per_pass', 0):.2f} / {entry.get('speedup_median', 0):.2f}x"
                if entry
                else "—"
            )
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lossless = result.get("lossless")
    if lossless:
        counts = ", ".join(
            f"{name} {m['identical']}/{m['prompts']}"
            + (f" (largest gap {m['largest_gap']:.3f})" if m["largest_gap"] is not None else "")
            for name, m in lossless["methods"].items()
        )
        rule = (
            "token for token"
            if not lossless["near_tie_bound"]
            else f"up to near-ties (logit gap <= {lossless['near_tie_bound']:g})"
        )
        lines += [
            "",
            f"Lossless check against {lossless['reference']}, {rule}; prompts identical: {counts}.",
        ]
    if result.get("lossless_violations"):
        lines += [
            "",
            "**LOSSLESSNESS VIOLATED:**",
            *[f"- {p}" for p in result["lossless_violations"]],
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m shuffle_model.bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--limit", type=int, default=10, help="questions per category")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto: float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--categories", nargs="*", default=None)
    p.add_argument(
        "--methods",
        nargs="*",
        default=None,
        choices=[*METHOD_NAMES, "all"],
        help=f"default: {' '.join(DEFAULT_METHODS)}; 'all' runs every method",
    )
    p.add_argument("--questions", type=Path, default=SPEC_BENCH)
    p.add_argument("--head", default=None, help="head directory (default: the shipped head)")
    p.add_argument("--fixed-head", default=None, help="fixed-assignment head directory")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default=None, help="added to the result file names")
    p.add_argument(
        "--name", default=None, help="result file base name (default: DATE-DEVICE[-TAG])"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in NAME.partial.jsonl (refused if the heads or settings differ)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop taking new prompts after this long and summarise what ran (recorded)",
    )
    return p.parse_args(argv)


def load_models(args) -> dict:
    from ..model.faster_decode_mixer import DEFAULT_FIXED_HEAD_DIR, FasterDecodeMixer

    status = lambda message: print(message, file=sys.stderr)  # noqa: E731
    main = FasterDecodeMixer.from_pretrained(
        args.head, device=args.device, dtype=args.dtype, status=status
    )
    fixed = FasterDecodeMixer.from_pretrained(
        args.fixed_head or DEFAULT_FIXED_HEAD_DIR,
        backbone=main.backbone,
        tokenizer=main.tokenizer,
        device=main.device,
        dtype=main.backbone.dtype,
    )
    return bench_models(main, fixed)


def bench_models(main, fixed) -> dict:
    """The models `run` uses: the default head, the fixed head on the same backbone, a counter."""
    if fixed.backbone is not main.backbone:
        raise ValueError("the fixed head must share the default model's backbone")
    return {"default": main, "fixed": fixed, "counter": ForwardCounter(main.backbone)}


def head_fingerprint(model) -> str:
    """A short hash of a head's weights: which head produced a record, whatever its name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.head.state_dict().items()):
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def run_setup(args, models: dict, methods: list[Method]) -> dict:
    """What must not change between the records of one run (checked on --resume)."""
    device = models["default"].device
    uses_fixed = any(m.head == "fixed" for m in methods)
    return {
        "head": head_fingerprint(models["default"]),
        **({"fixed_head": head_fingerprint(models["fixed"])} if uses_fixed else {}),
        "backbone": models["default"].config.backbone,
        "dtype": str(models["default"].backbone.dtype),
        "device": device.type,
        # timings from two machines are not one run
        "machine": cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "max_new_tokens": args.max_new_tokens,
        "methods": [m.name for m in methods],
        "threads": torch.get_num_threads(),
        # half precision: whether passes were row-invariant (invariant.py); absent in float32
        **({"row_invariant": True} if models["default"].uses_row_invariance() else {}),
    }


class ResumeError(ValueError):
    """--resume of a run whose records were made with another setup (head, machine, ...)."""


def check_same_setup(records: list[PromptRecord], setup: dict, partial: Path) -> None:
    for record in records:
        if record.setup != setup:
            changed = sorted(key for key in setup if (record.setup or {}).get(key) != setup[key])
            raise ResumeError(
                f"cannot resume {partial}: question {record.question_id} ran with a different "
                f"{', '.join(changed)}; start a new run (drop --resume or pick another --name)"
            )


def earlier_records(partial: Path, summary: Path) -> list[PromptRecord]:
    """The records of the run being resumed: its JSONL, else (a fresh clone, where only the
    committed results exist) the records in its JSON, copied to a new JSONL to append to."""
    if partial.exists():
        lines = [line for line in partial.read_text().splitlines() if line.strip()]
        return [PromptRecord.from_dict(json.loads(line)) for line in lines]
    if not summary.exists():
        return []
    records = json.loads(summary.read_text())["records"]
    partial.write_text("".join(json.dumps(r) + "\n" for r in records))
    return [PromptRecord.from_dict(r) for r in records]


def run(args, models: dict) -> dict:
    from ..model.chat import encode_prompt

    names = METHOD_NAMES if "all" in (args.methods or []) else args.methods or DEFAULT_METHODS
    methods = [m for m in METHODS if m.name in names or m.name == "baseline"]
    questions = load_questions(args.questions, args.categories, args.limit)
    model = models["default"]
    device = model.device
    stamp = dt.date.today().isoformat()
    device_name = (
        device.type
        if device.type == "cpu"
        else f"cuda-{torch.cuda.get_device_name(device).split()[-1].lower()}"
    )
    tag = f"-{args.tag}" if args.tag else ""
    base_name = args.name or f"{stamp}-{device_name}{tag}"
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"{base_name}.partial.jsonl"
    setup = run_setup(args, models, methods)
    reference = lossless_reference(methods, model.dtype)
    bound = model_bound(model)
    records = []
    if args.resume:
        records = earlier_records(partial, args.out / f"{base_name}.json")
        check_same_setup(records, setup, partial)
    elif partial.exists():
        partial.unlink()
    done = {r.question_id for r in records}

    warm = encode_prompt(model.tokenizer, "Say hello in one short sentence.")
    for method in methods:  # warm-up: caches, allocator, kernels
        run_method(method, models, warm, 16)

    curve = cost_curve(model, max_tokens=max_drafts(model.config.num_slots) + 1, remeasure=True)
    steps = bookkeeping_cost(
        model, encode_prompt(model.tokenizer, questions[0]["turns"][0]), max_new_tokens=64
    )

    started = time.monotonic()
    stopped_early = False
    remaining = [(i, q) for i, q in enumerate(questions) if q["question_id"] not in done]
    bar = tqdm(
        remaining,
        desc="bench",
        unit="prompt",
        initial=len(questions) - len(remaining),  # a resumed run counts what it keeps
        total=len(questions),
        dynamic_ncols=True,
    )
    for position, (index, question) in enumerate(bar):
        ids = encode_prompt(model.tokenizer, question["turns"][0])
        order = methods[index % len(methods) :] + methods[: index % len(methods)]  # rotate
        runs = {m.name: run_method(m, models, ids, args.max_new_tokens) for m in order}
        mark_divergences(model, ids, runs, methods, reference)
        record = PromptRecord(question["question_id"], question["category"], len(ids), setup, runs)
        records.append(record)
        with partial.open("a") as handle:
            handle.write(json.dumps(record.to_dict()) + "\n")
        base = runs["baseline"].seconds
        bar.set_postfix(speedup=f"{base / runs.get('shufflelm', runs['baseline']).seconds:.2f}x")
        out_of_time = args.max_minutes is not None and (
            time.monotonic() - started > 60 * args.max_minutes
        )
        if out_of_time and position + 1 < len(remaining):
            stopped_early = True
            tqdm.write(f"--max-minutes {args.max_minutes} reached after {len(records)} prompts")
            break
    bar.close()

    info = model.model_info()
    result = {
        "date": stamp,
        "machine": machine_description(device),
        "settings": {
            "max_new_tokens": args.max_new_tokens,
            "limit": args.limit,
            "categories": args.categories,
            "methods": args.methods,
            "max_minutes": args.max_minutes,
            "stopped_early": stopped_early,
            "questions_planned": len(questions),
            "resumed_prompts": len(done),  # records carried over by --resume
            "dtype": str(model.backbone.dtype),
        },
        "model": {
            "backbone": info["backbone"],
            "head": info["head"],
            "num_slots": model.config.num_slots,
            "dtype": str(model.backbone.dtype),
        },
        "prompts": len(records),
        "cost_curve": curve.to_dict(),
        "step_phases": steps,
        "methods": {m.name: m.description for m in methods},
        "summary": summarise(records, methods, model.tokenizer),
        "lossless": lossless_summary(records, methods, reference=reference, bound=bound),
        "lossless_violations": check_lossless(records, methods, reference=reference, bound=bound),
        "records": [record.to_dict() for record in records],
    }
    (args.out / f"{base_name}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{base_name}.md").write_text(markdown(result))
    result["files"] = [str(args.out / f"{base_name}.json"), str(args.out / f"{base_name}.md")]
    if result["lossless_violations"]:
        raise LosslessnessError("; ".join(result["lossless_violations"]))
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run(args, load_models(args))
    except ResumeError as error:
        print(error, file=sys.stderr)
        return 2
    except LosslessnessError as error:
        print(
            f"LOSSLESSNESS VIOLATED (results written with the violations listed): {error}",
            file=sys.stderr,
        )
        return 1
    print(markdown(result))
    print("wrote", *result["files"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
