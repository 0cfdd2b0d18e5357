"""The benchmark's markdown report, from a result."""

from __future__ import annotations


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
