"""Compare trained heads on real generation: tokens per backbone pass and how often the shuffle
is not the identity, on our own prompts (never the Spec-Bench evaluation set).

    python -m shuffle_model.cli.evaluate runs/head-a runs/head-b --prompts 8 --handwritten

Prompts: `--prompts N` held-out ones from the template generator (a seed the training data did
not use) and, with `--handwritten`, the hand-written everyday requests of
`prompts.HANDWRITTEN_PROMPTS`, which show how far the template data carries. For each head and
strategy: verified greedy generation through the shared loop, then tokens per pass (new tokens
/ backbone forwards, the prefill counted) per prompt category, the share of drafting steps whose
assignment is not slot k -> offset k, and the share whose predicted map (each score row's best
offset) differs from the most common map (0 for any constant permutation).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..decoding.filtering import known_step
from ..decoding.shuffle import map_variety, predicted_maps
from ..model.calibration import expected_calibration_error
from ..model.chat import encode_prompt
from ..training.calibration_fit import replay_steps
from .records import PromptRecord

HELDOUT_SEED = 424242  # the distillation data used seeds 0 and 7
KEEP_SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # keep thresholds the teacher-forced replay tries


def non_identity(step) -> bool:
    """Whether this step's assignment moved any drafted slot away from offset k+1."""
    return any(s.offset is not None and s.offset != s.index + 1 for s in step.slots)


def evaluate(model, prompts: list[dict], *, strategy: str, max_new_tokens: int) -> dict:
    tokens, forwards, steps, moved, maps = defaultdict(int), defaultdict(int), 0, 0, []
    for prompt in prompts:
        ids = encode_prompt(model.tokenizer, prompt["text"])
        _, trace = model.generate(
            [ids], max_new_tokens=max_new_tokens, shuffle_strategy=strategy, return_trace=True
        )
        for key in (prompt["category"], prompt.get("group", "generator"), "all"):
            tokens[key] += trace.totals.new_tokens
            forwards[key] += trace.totals.backbone_forwards
        drafting = [s for s in trace.steps if s.slots]
        steps += len(drafting)
        moved += sum(non_identity(s) for s in drafting)
        maps += predicted_maps([s.shuffle_probs for s in drafting])
    return {
        "tokens_per_pass": {k: round(tokens[k] / forwards[k], 3) for k in tokens},
        "non_identity_steps": round(moved / max(steps, 1), 3),
        "map_variety": round(map_variety(maps), 3),
    }


def recorded_answers(bench_json: Path, tokenizer, questions_path: Path) -> list[dict]:
    """The backbone's greedy answers of a benchmark run, with their chat-templated prompts."""
    questions = {
        q["question_id"]: q
        for q in map(json.loads, questions_path.read_text().splitlines())
        if q.get("turns")
    }
    answers = []
    for data in json.loads(bench_json.read_text())["records"]:
        record = PromptRecord.from_dict(data)
        question = questions[record.question_id]
        answers.append(
            {
                "category": f"spec/{record.category}",
                "prompt_ids": encode_prompt(tokenizer, question["turns"][0]),
                "answer_ids": record.runs["baseline"].ids,
            }
        )
    return answers


def offset_hits(steps, row: int, offsets, k: int):
    """Per offset p: whether the draft placed at p is the answer's token (`right`), whether one
    of that slot's top 3 tokens is (`in_top`); None where the answer has no token that far.
    Also each placed draft's (keep score, hit) pair, in slot order."""
    right = [None if steps.targets[row, p] < 0 else False for p in range(k)]
    in_top = list(right)
    kept = []  # (keep score, whether the draft was right) per placed slot
    for slot, offset in enumerate(offsets):
        if offset is None or right[offset - 1] is None:
            continue
        target = steps.targets[row, offset - 1]
        hit = bool(steps.tokens[row, slot] == target)
        right[offset - 1] = hit
        in_top[offset - 1] = bool((steps.top_tokens[row, slot] == target).any())
        kept.append((float(steps.keep[row, slot]), hit))
    return right, in_top, kept


def keep_sweep(steps, row: int, offsets, thresholds: list[float], k: int) -> list:
    """Per keep threshold: (drafts verified, drafts accepted) at this position."""
    return [
        known_step(
            offsets,
            steps.keep[row],
            steps.tokens[row],
            steps.targets[row],
            keep_threshold=t,
            max_offset=k,
        )
        for t in thresholds
    ]


def as_floats(hits: list) -> list[float]:
    """None -> NaN, bool -> 0.0 / 1.0."""
    return [np.nan if h is None else float(h) for h in hits]


def column_means(hits: np.ndarray) -> list:
    """Mean of each column, ignoring NaN; None for a column with no value at all."""
    return [round(float(np.nanmean(col)), 4) if (~np.isnan(col)).any() else None for col in hits.T]


def summarize(r: dict, thresholds: list[float], threshold: float) -> dict:
    """One category's figures from its collected rows."""
    at = thresholds.index(threshold)
    right = np.array(r["right"])  # (positions, K); NaN where the answer had ended
    swept = np.array(r["swept"])  # (positions, thresholds, 2): drafts verified, accepted
    in_top = np.array(r["in_top"])  # (positions, K)
    return {
        "positions": len(r["swept"]),
        "top1_per_offset": column_means(right),  # None: no position had a token that far ahead
        "top3_per_offset": column_means(in_top),
        f"tokens_per_pass@{threshold}": round(1 + float(swept[:, at, 1].mean()), 4),
        "tokens_per_pass_unfiltered": round(1 + float(np.mean(r["unfiltered"])), 4),
        "keep_sweep": {  # what a lower or higher keep threshold would verify and gain
            str(t): {
                "drafts_verified": round(float(swept[:, i, 0].mean()), 4),
                "tokens_per_pass": round(1 + float(swept[:, i, 1].mean()), 4),
            }
            for i, t in enumerate(thresholds)
        },
        "keep_ece": round(expected_calibration_error(r["keep"], r["kept_right"]), 4),
        "map_variety": round(map_variety(r["maps"]), 4),
    }


def teacher_forced(model, answers: list[dict], *, strategy: str) -> dict:
    """Replay every position of recorded greedy answers as one decoding step (see the module
    doc); figures overall ("all") and per category."""
    k, threshold = model.config.num_slots, model.config.default_keep_threshold
    thresholds = sorted({threshold, *KEEP_SWEEP})
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for answer in tqdm(answers, desc=f"teacher forced ({strategy})", unit="answer", leave=False):
        steps = replay_steps(model, answer["prompt_ids"], answer["answer_ids"], strategy=strategy)
        maps = predicted_maps(steps.scores)
        keys = (answer["category"], "all")
        for row, offsets in enumerate(steps.offsets):
            right, in_top, kept = offset_hits(steps, row, offsets, k)
            swept = keep_sweep(steps, row, offsets, thresholds, k)
            unfiltered = next((p for p, hit in enumerate(right) if not hit), k)
            for key in keys:
                for keep, hit in kept:
                    rows[key]["keep"].append(keep)
                    rows[key]["kept_right"].append(hit)
                rows[key]["right"].append(as_floats(right))
                rows[key]["in_top"].append(as_floats(in_top))
                rows[key]["swept"].append(swept)
                rows[key]["unfiltered"].append(unfiltered)
                rows[key]["maps"].append(maps[row])
    return {key: summarize(r, thresholds, threshold) for key, r in sorted(rows.items())}
