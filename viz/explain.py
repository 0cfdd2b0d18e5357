"""What a step did, in words a student understands, and where each emitted token came from.

`decision_sentence(step)` is the one place that turns a step's plan (PlanTrace: how many drafts
of each chain were checked, and the expected gain and cost that chose them) into a sentence;
the app's caption, the filter-and-plan chart and the GIF all show that sentence. Steps of
version-1 traces have no plan: their sentence says only what the trace records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import NamedTuple

from shuffle_model.decoding.planning import FIXED
from shuffle_model.decoding.trace import EMITTED, GenerationTrace, PlanTrace, StepTrace

from .style import (
    ANCHOR,
    BOTH,
    CONTEXT,
    CORPUS,
    END,
    END_LABEL,
    HEAD,
    ORIGIN_SYMBOLS,
    end_ids,
    is_end,
    is_special,
    token_label,
)
from .tree import ForwardedTree, forwarded_tree

SAME_RATE = 1e-9  # rates closer than this are a tie
RESTED = "The head rested this step (its drafts had not paid for themselves lately)."


# --- where tokens came from -------------------------------------------------------------------


def is_pure(step: StepTrace) -> bool:
    """Pure parallel mode: the head's drafts were emitted without the backbone's check."""
    return any(slot.status == EMITTED for slot in step.slots)


def token_origins(step: StepTrace) -> list[str]:
    """The origin of each emitted token: ANCHOR, HEAD, CONTEXT, BOTH, or EMITTED (a head draft
    emitted unchecked). Version-1 traces record no sources: their drafts all came from the
    head, so they read as HEAD (or EMITTED in pure mode)."""
    pure = is_pure(step)
    sources = step.emitted_sources
    if len(sources) != len(step.emitted):  # a version-1 step
        sources = ["anchor"] + ["head"] * (len(step.emitted) - 1)
    origins = [source_origin(source) for source in sources]
    return [EMITTED if pure and origin == HEAD else origin for origin in origins]


def source_origin(source: str) -> str:
    """A node's origin from its sources' names joined by '+': anchor, head, context, both (the
    head and the context), or corpus (the corpus alone); a draft the corpus proposed with the
    head or the context reads as theirs, and one from a source the pictures do not know as
    the head's (as version-1 traces)."""
    if source == ANCHOR:
        return ANCHOR
    names = set(source.split("+"))
    if {HEAD, CONTEXT} <= names:
        return BOTH
    for origin in (HEAD, CONTEXT, CORPUS):
        if origin in names:
            return origin
    return HEAD


def accepted_by_origin(step: StepTrace) -> Counter:
    """How many drafts of each origin the step emitted (the anchor not counted)."""
    return Counter(origin for origin in token_origins(step) if origin != ANCHOR)


class Piece(NamedTuple):
    """One emitted token of the answer, as the text and the GIF show it."""

    text: str  # its text; END_LABEL for the end of the answer, "◇ name" for another special token
    origin: str  # where it came from (token_origins), or END for the end of the answer
    step: int  # the index of the step that emitted it


def answer_pieces(trace: GenerationTrace) -> list[Piece]:
    """Every emitted token in order, with its origin and its step."""
    ends = end_ids(trace)
    pieces = []
    for step in trace.steps:
        for token, origin in zip(step.emitted, token_origins(step), strict=True):
            if is_end(token, ends):
                pieces.append(Piece(END_LABEL, END, step.index))
            elif is_special(token, ends):
                pieces.append(Piece(token_label(token, limit=40, eos_ids=ends), origin, step.index))
            else:
                text = token.text if token.text is not None else f"<{token.id}>"
                pieces.append(Piece(text, origin, step.index))
    return pieces


def emitted_with_symbols(step: StepTrace, *, limit: int = 24, eos_ids: Collection[int] = ()) -> str:
    """The step's emitted tokens, each after its origin's symbol (⚓ anchor, ✓ head, ↩ ...);
    the end of the answer as ■ end of answer."""
    return " ".join(
        f"{ORIGIN_SYMBOLS[origin]}{token_label(token, limit=limit, eos_ids=eos_ids)}"
        for origin, token in zip(token_origins(step), step.emitted, strict=True)
    )


# --- the decision, in a sentence ----------------------------------------------------------------


def decision_sentence(step: StepTrace, *, verified: bool | None = None) -> str:
    """Why the step checked what it checked, from its plan's numbers, in one sentence.
    `verified=False` (the trace's settings) says pure parallel mode even when a step emitted no
    draft; None infers it from the slots."""
    plan = step.plan
    pure = is_pure(step) if verified is None else not verified
    if plan is None:
        return _without_plan(step, pure)
    if pure:
        kept = len(step.block_order)
        if not kept:
            return "Pure parallel mode: the filter kept no draft, so only the anchor was written."
        return f"Pure parallel mode: emitted every draft the filter kept ({kept}), unchecked."
    if plan.drafts == 0:
        sentence = _ordinary_step(step, plan)
    elif plan.rule == FIXED:
        sentence = _fixed_choice(step, plan)
    else:
        sentence = _cost_choice(plan, forwarded_tree(step))
    return f"{RESTED} {sentence}" if plan.head_rested else sentence


def outcome_sentence(step: StepTrace) -> str:
    """What came of it: drafts checked and accepted, tokens written."""
    tokens = step.num_emitted
    written = f"{tokens} token{_plural(tokens)} this step"
    accepted = step.num_accepted
    if is_pure(step):
        return f"{accepted} draft{_plural(accepted)} emitted unchecked: {written}."
    checked = max(len(step.forwarded_ids) - 1, 0)
    if not checked:
        return f"Only the anchor: {written}."
    origins = accepted_by_origin(step)
    split = _origin_split(origins) if accepted else ""
    return (
        f"The backbone accepted {accepted} of {checked} checked draft{_plural(checked)}"
        f"{split}: {written}."
    )


def _without_plan(step: StepTrace, pure: bool) -> str:
    if not step.forwarded_ids:
        return "The last step: only the anchor was left to write (the end of the text or budget)."
    if len(step.emitted_sources) == len(step.emitted):  # a version-2 step with nothing proposed
        return (
            "No draft was on offer (drafting is off, or the context found no match): "
            "an ordinary step (1 token)."
        )
    drafts = len(step.forwarded_ids) - 1  # a version-1 trace: the filter's block, all checked
    if pure:
        return f"Emitted the {drafts} draft{_plural(drafts)} the filter kept, unchecked."
    if drafts:
        return f"Checked the {drafts} draft{_plural(drafts)} the filter kept."
    return "No draft passed the filter: an ordinary step (1 token)."


def _ordinary_step(step: StepTrace, plan: PlanTrace) -> str:
    if plan.rule == FIXED:
        return "Fixed rule: no draft passed the filter, so this was an ordinary step (1 token)."
    if plan.next_rate is None:
        if plan.head_rested:
            return "The context offered no draft either: an ordinary step (1 token)."
        offered = "no draft passed the filter" if step.slots else "no draft was proposed"
        return (
            f"Nothing to check ({offered}, and the context offered none): "
            "an ordinary step (1 token)."
        )
    draft, ordinary = _two_rates(plan.next_rate, plan.ordinary_rate)
    return (
        "No draft was worth checking: an ordinary step (1 token) is the best deal on this "
        f"machine (the likeliest draft would give {draft} tokens per pass' time, "
        f"an ordinary step {ordinary})."
    )


def _fixed_choice(step: StepTrace, plan: PlanTrace) -> str:
    n = plan.drafts
    if plan.context_drafts == 0:
        what = f"checked every draft the filter kept ({n})"
    elif plan.head_drafts == 0:
        what = f"checked every draft the context offered ({n})"
    else:
        what = f"checked every draft on offer: {n} {_plan_split(plan)}"
    left = len(step.context.tokens) - plan.context_drafts if step.context else 0
    tail = f"; {left} context draft{_plural(left)} left out" if left > 0 else ""
    return f"Fixed rule: {what}{tail}."


def _cost_choice(plan: PlanTrace, tree: ForwardedTree) -> str:
    n = plan.drafts
    branched = is_branched(tree)
    parts = [
        f"Checked {n} draft{_plural(n)} {_plan_split(plan)}"
        + (f" in {_branches_phrase(tree)}" if branched else ""),
        f"expected {plan.expected_tokens:.2f} tokens for {plan.cost:.2f} passes' time",
    ]
    if branched:
        parts.append(f"the {tree.branches} branches are checked side by side in one pass")
    elif plan.head_drafts > plan.shared and plan.context_drafts > plan.shared:
        if plan.shared:
            parts.append(
                f"the two chains part after {plan.shared} shared draft{_plural(plan.shared)} "
                "and are checked side by side in one pass"
            )
        else:
            parts.append("the two chains are checked side by side in one pass")
    if plan.padding:
        length = n + 1 + plan.padding
        parts.append(
            f"forwarded with {plan.padding} filler token{_plural(plan.padding)}, as a pass over "
            f"{length} tokens is cheaper on this machine than one over {n + 1}"
        )
    if plan.next_rate is None:
        parts.append("no other draft was on offer")
    elif plan.next_rate < plan.rate - SAME_RATE:
        parts.append(f"a {ordinal(n + 1)} would cost more than it is likely to give")
    else:
        parts.append(f"a {ordinal(n + 1)} would give no more per unit of time")
    return f"{parts[0]}: {'; '.join(parts[1:])}."


# --- trees of drafts --------------------------------------------------------------------------

SOURCE_NAMES = {HEAD: "the head", CONTEXT: "the context", BOTH: "both", CORPUS: "the corpus"}


def is_branched(tree: ForwardedTree) -> bool:
    """Whether a block is more than a chain or the head's and the context's chains side by
    side: it holds alternatives (a source's 2nd or 3rd choice), or more than two branches."""
    return bool(tree.alternatives()) or tree.branches > 2


def _branches_phrase(tree: ForwardedTree) -> str:
    """'5 branches (4 alternatives of the head)', '3 branches' (no alternatives)."""
    b = tree.branches
    words = f"{b} branch{'es' * (b != 1)}"
    alternatives = tree.alternatives()
    total = sum(alternatives.values())
    if not total:
        return words
    names = {SOURCE_NAMES.get(source, source): count for source, count in alternatives.items()}
    if len(names) == 1:
        return f"{words} ({total} alternative{_plural(total)} of {next(iter(names))})"
    split = ", ".join(f"{count} of {name}" for name, count in names.items())
    return f"{words} ({total} alternatives: {split})"


def tree_sentence(step: StepTrace, *, verified: bool | None = None) -> str:
    """The forwarded block in words: 'One pass over 9 tokens: the anchor and 8 drafts in 5
    branches (4 alternatives of the head). The backbone accepted 2 (the bold path); the other
    6 were rejected.' ('' when nothing was forwarded)."""
    tree = forwarded_tree(step)
    n = tree.drafts
    if not n:
        return ""
    size = len(tree.nodes) + tree.filler
    filler = f" and {tree.filler} filler token{_plural(tree.filler)}" if tree.filler else ""
    shape = f" in {_branches_phrase(tree)}" if tree.branches > 1 or tree.alternatives() else ""
    opening = f"One pass over {size} tokens: the anchor and {n} draft{_plural(n)}{shape}{filler}."
    accepted = len(tree.accepted_path)
    pure = is_pure(step) if verified is None else not verified
    if pure:
        return f"{opening} The bold path was emitted unchecked (pure parallel mode)."
    if not accepted:
        return f"{opening} The backbone accepted none of them: the anchor alone was written."
    rest = n - accepted
    other = f"; the other {rest} {'was' if rest == 1 else 'were'} rejected" if rest else ""
    return f"{opening} The backbone accepted {accepted} (the bold path){other}."


def ordinary_run_sentence(steps: list[StepTrace], *, verified: bool = True) -> str:
    """A run of ordinary steps, for the GIF: '5 ordinary steps: nothing worth checking, so 5
    tokens in 5 backbone passes.' (in pure parallel mode: the filter kept no draft)."""
    n = len(steps)
    why = "nothing worth checking" if verified else "the filter kept no draft"
    tokens = sum(step.num_emitted for step in steps)
    passes = sum(step.passes for step in steps)
    return (
        f"{n} ordinary step{_plural(n)}: {why}, so {tokens} "
        f"token{_plural(tokens)} in {passes} backbone pass{'es' * (passes != 1)}."
    )


def _plan_split(plan: PlanTrace) -> str:
    """Where the checked drafts came from: 'from the head', '(2 from the head, 1 from ...)'."""
    if set(plan.source_drafts) - {HEAD, CONTEXT}:  # a third source: count each one's drafts
        return _sources_split(plan)
    shared = plan.shared
    head, context = plan.head_drafts - shared, plan.context_drafts - shared
    if not shared and not context:
        return "from the head"
    if not shared and not head:
        return "from the context"
    parts = [f"{shared} proposed by both"] if shared else []
    if head:
        parts.append(f"{head} from the head")
    if context:
        parts.append(f"{context} from the context")
    return f"({', '.join(parts)})"


def _sources_split(plan: PlanTrace) -> str:
    """'(3 from the head, 2 from the corpus; 1 proposed by more than one)', or 'from the
    corpus' when one source proposed every draft checked."""
    counts = [(source, n) for source, n in plan.source_drafts.items() if n]
    if len(counts) == 1:
        return f"from {SOURCE_NAMES.get(counts[0][0], counts[0][0])}"
    parts = ", ".join(f"{n} from {SOURCE_NAMES.get(source, source)}" for source, n in counts)
    shared = f"; {plan.shared} proposed by more than one" if plan.shared else ""
    return f"({parts}{shared})"


def _origin_split(origins: Counter) -> str:
    present = [o for o in (HEAD, CONTEXT, BOTH, CORPUS) if origins[o]]
    if present in ([], [HEAD]):  # every draft from the head: nothing to split
        return ""
    return f" ({', '.join(f'{origins[o]} from {SOURCE_NAMES[o]}' for o in present)})"


def _two_rates(a: float, b: float) -> tuple[str, str]:
    """Two rates with enough decimals to tell them apart (up to 4)."""
    for decimals in (2, 3, 4):
        shown = f"{a:.{decimals}f}", f"{b:.{decimals}f}"
        if shown[0] != shown[1]:
            return shown
    return shown


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# --- the machine's cost curve ---------------------------------------------------------------


def typical_pass(trace) -> int:
    """The most common number of tokens in this run's multi-token passes (4 when none)."""
    sizes = Counter(len(s.forwarded_ids) for s in trace.steps if len(s.forwarded_ids) > 1)
    return sizes.most_common(1)[0][0] if sizes else 4


def cost_sentence(curve: dict | None, n: int = 4) -> str:
    """'a pass over 4 tokens costs 1.38 one-token passes (12 ms each); drafting costs 0.62
    of one' from a trace's cost_curve dict ('' without one)."""
    ratios = (curve or {}).get("ratios") or []
    if not ratios:
        return ""
    if len(ratios) < 2:
        return "only one-token passes were measured"
    n = max(2, min(n, len(ratios)))
    text = f"a pass over {n} tokens costs {float(ratios[n - 1]):.2f} one-token passes"
    one_ms = curve.get("one_token_ms") or 0
    if one_ms:
        text += f" ({float(one_ms):.1f} ms each)"
    draft = curve.get("draft_cost") or 0
    if draft:
        text += f"; drafting costs {float(draft):.2f} of one"
    return text
