"""The benchmark's markdown report, from a result: one function per section."""

from __future__ import annotations

MAIN_METHODS = ("baseline", "prompt_lookup", "shufflelm", "head-cost", "context-cost")


def markdown(result: dict) -> str:
    sections = [
        title(result),
        setup(result),
        method_table(result["summary"]),
        trace_overhead(result["summary"]),
        cost_curve(result.get("cost_curve")),
        step_phases(result.get("step_phases")),
        category_table(result["summary"]),
        lossless(result.get("lossless")),
        violations(result.get("lossless_violations")),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def title(result: dict) -> str:
    return f"# ShuffleLM benchmark — {result['date']} on {result['machine']['device']}"


def setup(result: dict) -> str:
    """The machine, the model and what was run."""
    machine, s, m = result["machine"], result["settings"], result["model"]
    stopped = (
        f"; stopped by --max-minutes {s['max_minutes']} after {result['prompts']} of "
        f"{s['questions_planned']} planned, taken category by category in turn)."
        if s.get("stopped_early")
        else ")."
    )
    resumed = (
        f" {s['resumed_prompts']} of them were carried over by --resume from an earlier "
        "invocation; the pass-cost line below is this invocation's."
        if s.get("resumed_prompts")
        else ""
    )
    return (
        f"Machine: {machine.get('gpu', machine['cpu'])}, "
        f"{machine['torch_threads']} torch threads, torch {machine['torch']}, "
        f"transformers {machine['transformers']}.\n"
        f"Model: {m['backbone']} + {m['head']} (K={m['num_slots']}), "
        f"{m['dtype']}. Spec-Bench first turns, chat template, greedy, "
        f"max {s['max_new_tokens']} new tokens, {result['prompts']} prompts "
        f"({s['limit']} per category" + stopped + resumed
    )


def method_table(summary: dict) -> str:
    """One row per method, over all prompts."""
    rows = [
        "| method | tokens/s | speed-up (median) | speed-up (mean) | tokens/pass | BLEU "
        "| ROUGE-L | peak memory |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in summary.items():
        if not isinstance(entry, dict) or not entry.get("overall"):
            continue  # not a method's summary
        o = entry["overall"]
        rows.append(
            f"| {name} | {o['tokens_per_second']:.1f} | {o['speedup_median']:.2f}x | "
            f"{o['speedup_mean']:.2f}x | {o['tokens_per_pass']:.2f} | {o['bleu']:.1f} | "
            f"{o['rouge_l']:.3f} | {o['peak_memory_mb']:.0f} MB |"
        )
    return "\n".join(rows)


def trace_overhead(summary: dict) -> str:
    overhead = summary.get("trace_overhead_median")
    if overhead is None:
        return ""
    return f"Recording a full trace costs {overhead:+.1%} wall time (median per prompt)."


def cost_curve(curve: dict | None) -> str:
    """What a pass over n tokens costs on this machine, as the cost-aware methods saw it."""
    if not curve:
        return ""
    ratios = ", ".join(f"n={n} {r:.2f}x" for n, r in enumerate(curve["ratios"], 1) if n > 1)
    return (
        "The machine's cost curve, measured at the start of this invocation (the fast end of "
        f"{curve['repeats']} interleaved repetitions): a backbone pass over n new tokens costs "
        f"{ratios} a one-token pass ({curve['one_token_ms']:.0f} ms); the head's draft costs "
        f"{curve['draft_cost']:.2f}x{branches(curve)}. The cost-aware methods choose their "
        "block against it."
    )


def branches(curve: dict) -> str:
    """What each further path of a tree adds to a pass, where it was measured."""
    cost = curve.get("branch_cost") or 0.0
    return f", each path of a tree beyond the first {cost:.2f}x" if "branch_cost" in curve else ""


def step_phases(phases: dict | None) -> str:
    """Where a step's time goes."""
    if not phases:
        return ""
    timings = ", ".join(
        f"{name} {p['ms']:.2f} ms"
        + (f" ({p['of_a_pass']:.1%} of a one-token pass)" if p["of_a_pass"] else "")
        for name, p in phases.items()
    )
    return f"Per step (median of a traced run of the default): {timings}."


def category_table(summary: dict) -> str:
    """Tokens per pass and speed-up per Spec-Bench category, for the main methods."""
    methods = [m for m in MAIN_METHODS if m in summary]
    rows = [
        "Per category: tokens per backbone pass / median speed-up over the baseline.",
        "",
        "| category | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for category in sorted(summary["baseline"]["categories"]):
        cells = []
        for m in methods:
            entry = summary[m]["categories"].get(category) or {}
            cells.append(
                f"{entry.get('tokens_per_pass', 0):.2f} / {entry.get('speedup_median', 0):.2f}x"
                if entry
                else "—"
            )
        rows.append(f"| {category} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def lossless(check: dict | None) -> str:
    """How many prompts each method decoded exactly as the reference did."""
    if not check:
        return ""
    counts = ", ".join(
        f"{name} {m['identical']}/{m['prompts']}"
        + (f" (largest gap {m['largest_gap']:.3f})" if m["largest_gap"] is not None else "")
        for name, m in check["methods"].items()
    )
    rule = (
        "token for token"
        if not check["near_tie_bound"]
        else f"up to near-ties (logit gap <= {check['near_tie_bound']:g})"
    )
    return f"Lossless check against {check['reference']}, {rule}; prompts identical: {counts}."


def violations(found: list[str] | None) -> str:
    if not found:
        return ""
    return "\n".join(["**LOSSLESSNESS VIOLATED:**", *[f"- {p}" for p in found]])
