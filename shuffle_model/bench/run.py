"""Benchmark: ShuffleLM side by side with autoregressive decoding and prompt lookup decoding.

    python -m shuffle_model.bench --limit 10          # every category, 10 questions each

All methods run in one process on the same Spec-Bench prompts (first turn, chat template),
interleaved prompt by prompt (method order rotating) after a warm-up, so that machine drift
hits them alike. Per method, overall and per category: tokens/s, speed-up over the baseline
(median and mean of per-prompt ratios of tokens per second: of times where the texts are the
same length), tokens per backbone pass, BLEU and ROUGE-L against
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
from pathlib import Path

import psutil
import torch
import transformers
from tqdm import tqdm

from ..cli import one_line_errors
from ..decoding.cost import ensure_cost_curve
from ..decoding.lossless import compare, model_bound
from ..decoding.settings import max_drafts
from ..model import faster_decode_mixer  # its DEFAULT_FIXED_HEAD_DIR is read at each call
from ..model.chat import encode_prompt
from ..model.devices import cpu_name
from ..model.faster_decode_mixer import FasterDecodeMixer
from ..resources import REPOSITORY
from ..training.overlap import SPEC_BENCH
from .methods import DEFAULT_METHODS, METHOD_NAMES, METHODS, Method
from .records import (
    Divergence,
    LosslessnessError,
    MethodRun,
    PromptRecord,
    check_lossless,
    lossless_reference,
    lossless_summary,
    summarise,
)
from .report import markdown

# in the repository its bench/results; installed, bench/results under the working directory
RESULTS = (REPOSITORY or Path()) / "bench" / "results"


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


def machine_description(device: torch.device) -> dict:
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m shuffle_model.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--limit", type=int, default=10, help="questions per category")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--dtype",
        default="auto",
        help="auto: bfloat16 on CUDA and on CPUs with native bfloat16 (AMX, AVX-512 BF16), "
        "float32 elsewhere",
    )
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
    status = lambda message: print(message, file=sys.stderr)  # noqa: E731
    main = FasterDecodeMixer.from_pretrained(
        args.head, device=args.device, dtype=args.dtype, status=status
    )
    fixed = FasterDecodeMixer.from_pretrained(
        args.fixed_head or faster_decode_mixer.DEFAULT_FIXED_HEAD_DIR,
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


def chosen_methods(args) -> list[Method]:
    """The methods asked for, always with the baseline every speed-up is measured against."""
    names = METHOD_NAMES if "all" in (args.methods or []) else args.methods or DEFAULT_METHODS
    return [m for m in METHODS if m.name in names or m.name == "baseline"]


def result_name(args, device: torch.device, stamp: str) -> str:
    """The result files' name: --name, or the date, the device and --tag."""
    if args.name:
        return args.name
    device_name = (
        device.type
        if device.type == "cpu"
        else f"cuda-{torch.cuda.get_device_name(device).split()[-1].lower()}"
    )
    return f"{stamp}-{device_name}" + (f"-{args.tag}" if args.tag else "")


def resumed_records(args, partial: Path, summary: Path, setup: dict) -> list[PromptRecord]:
    """With --resume, the earlier invocation's records (of the same setup); else none, and a
    fresh partial file."""
    if not args.resume:
        partial.unlink(missing_ok=True)
        return []
    records = earlier_records(partial, summary)
    check_same_setup(records, setup, partial)
    return records


def bench_prompts(args, models, methods, questions, records, *, setup, reference, partial) -> bool:
    """Run every method on each question not yet in `records`, appending each prompt's record
    to `records` and to the partial file as it lands. Returns whether --max-minutes stopped it."""
    model = models["default"]
    done = {r.question_id for r in records}
    remaining = [(i, q) for i, q in enumerate(questions) if q["question_id"] not in done]
    started = time.monotonic()
    with tqdm(
        remaining,
        desc="bench",
        unit="prompt",
        initial=len(questions) - len(remaining),  # a resumed run counts what it keeps
        total=len(questions),
        dynamic_ncols=True,
    ) as bar:
        for position, (index, question) in enumerate(bar):
            ids = encode_prompt(model.tokenizer, question["turns"][0])
            order = methods[index % len(methods) :] + methods[: index % len(methods)]  # rotate
            runs = {m.name: run_method(m, models, ids, args.max_new_tokens) for m in order}
            mark_divergences(model, ids, runs, methods, reference)
            record = PromptRecord(
                question["question_id"], question["category"], len(ids), setup, runs
            )
            records.append(record)
            with partial.open("a") as handle:
                handle.write(json.dumps(record.to_dict()) + "\n")
            shufflelm = runs.get("shufflelm", runs["baseline"])
            bar.set_postfix(speedup=f"{runs['baseline'].seconds / shufflelm.seconds:.2f}x")
            out_of_time = args.max_minutes is not None and (
                time.monotonic() - started > 60 * args.max_minutes
            )
            if out_of_time and position + 1 < len(remaining):
                tqdm.write(f"--max-minutes {args.max_minutes} reached after {len(records)} prompts")
                return True
    return False


def warm_up(models: dict, methods: list[Method]) -> None:
    """Run every method once on a short prompt: caches, allocator, kernels."""
    model = models["default"]
    warm = encode_prompt(model.tokenizer, "Say hello in one short sentence.")
    for method in methods:
        run_method(method, models, warm, 16)


def run_settings(args, model, *, stopped_early: bool, planned: int, resumed: int) -> dict:
    """The result's "settings": the options this run was invoked with and how far it got."""
    return {
        "max_new_tokens": args.max_new_tokens,
        "limit": args.limit,
        "categories": args.categories,
        "methods": args.methods,
        "max_minutes": args.max_minutes,
        "stopped_early": stopped_early,
        "questions_planned": planned,
        "resumed_prompts": resumed,  # records carried over by --resume
        "dtype": str(model.backbone.dtype),
    }


def model_settings(model) -> dict:
    """The result's "model": which backbone and head ran, with how many slots, in which dtype."""
    info = model.model_info()
    return {
        "backbone": info["backbone"],
        "head": info["head"],
        "num_slots": model.config.num_slots,
        "dtype": str(model.backbone.dtype),
    }


def write_result(result: dict, out: Path, base_name: str) -> None:
    """Write the result as JSON and markdown, and list the two files in result["files"]."""
    (out / f"{base_name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{base_name}.md").write_text(markdown(result))
    result["files"] = [str(out / f"{base_name}.json"), str(out / f"{base_name}.md")]


def run(args, models: dict) -> dict:
    """The benchmark: set up, warm up, measure the machine, run the prompts, write the result
    (JSON and markdown) and check that every lossless method was."""
    methods = chosen_methods(args)
    questions = load_questions(args.questions, args.categories, args.limit)
    model = models["default"]
    stamp = dt.date.today().isoformat()
    base_name = result_name(args, model.device, stamp)
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"{base_name}.partial.jsonl"
    setup = run_setup(args, models, methods)
    reference = lossless_reference(methods, model.dtype)
    bound = model_bound(model)
    records = resumed_records(args, partial, args.out / f"{base_name}.json", setup)
    resumed = len(records)

    warm_up(models, methods)
    curve = ensure_cost_curve(
        model, max_tokens=max_drafts(model.config.num_slots) + 1, remeasure=True
    )
    steps = bookkeeping_cost(
        model, encode_prompt(model.tokenizer, questions[0]["turns"][0]), max_new_tokens=64
    )
    stopped_early = bench_prompts(
        args, models, methods, questions, records, setup=setup, reference=reference, partial=partial
    )

    result = {
        "date": stamp,
        "machine": machine_description(model.device),
        "settings": run_settings(
            args, model, stopped_early=stopped_early, planned=len(questions), resumed=resumed
        ),
        "model": model_settings(model),
        "prompts": len(records),
        "cost_curve": curve.to_dict(),
        "step_phases": steps,
        "methods": {m.name: m.description for m in methods},
        "summary": summarise(records, methods, model.tokenizer),
        "lossless": lossless_summary(records, methods, reference=reference, bound=bound),
        "lossless_violations": check_lossless(records, methods, reference=reference, bound=bound),
        "records": [record.to_dict() for record in records],
    }
    write_result(result, args.out, base_name)
    if result["lossless_violations"]:
        raise LosslessnessError("; ".join(result["lossless_violations"]))
    return result


@one_line_errors
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
