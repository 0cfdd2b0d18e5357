"""Traces: what each decoding step did, for hooks, the web app, plots and GIFs.

A GenerationTrace round-trips through versioned JSON, so figures and animations can be made
from a saved trace with no model loaded. `from_json` checks the schema and raises
`TraceError` (a ValueError) with the path of the first bad field.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

TRACE_FORMAT = "shufflelm-trace"
TRACE_VERSION = 3  # 2 adds draft sources, the step's plan and the cost curve; 3 adds each
# forwarded node's sources, rank and path chance and the accepted path; 1 and 2 still read
READABLE_VERSIONS = (1, 2, 3)

ACCEPTED = "accepted"  # drafted, verified by the backbone, emitted
EMITTED = "emitted"  # drafted and emitted unverified (pure parallel mode)
REJECTED = "rejected"  # in the block, but the backbone disagreed (or came after a rejection)
LOW_CONFIDENCE = "low_confidence"  # keep prob below the threshold
DUPLICATE = "duplicate"  # lost an offset collision to a more confident slot
OUT_OF_RANGE = "out_of_range"  # offset beyond max_parallel_tokens or the token budget
AFTER_GAP = "after_gap"  # survived the filter, but an earlier offset is missing
COST_CUT = "cost_cut"  # in the block, but checking it was expected to cost more than it gives
SLOT_STATUSES = (
    ACCEPTED,
    EMITTED,
    REJECTED,
    LOW_CONFIDENCE,
    DUPLICATE,
    OUT_OF_RANGE,
    AFTER_GAP,
    COST_CUT,
)
CONTEXT_STATUSES = (ACCEPTED, REJECTED, COST_CUT)
# Where an emitted token came from: the anchor, or the names of the sources that proposed it
# joined by '+' (the built-in ones below; a source passed in records its own name)
FROM_ANCHOR, FROM_HEAD, FROM_CONTEXT, FROM_BOTH = "anchor", "head", "context", "head+context"
TOKEN_SOURCES = (FROM_ANCHOR, FROM_HEAD, FROM_CONTEXT, FROM_BOTH)
FROM_FILLER = "filler"  # forwarded only because a longer pass was cheaper


class TraceError(ValueError):
    """A trace file or JSON text that does not follow the trace schema."""


@dataclass
class TokenInfo:
    id: int  # token id
    text: str | None  # decoded text of this single token (None without a tokenizer)
    prob: float  # its probability under the distribution it was chosen from
    special: bool = False  # a special token (end of answer, ...): shown as a marker, not text


@dataclass
class SlotTrace:
    index: int  # slot k, 0-based
    token: TokenInfo  # the token this slot drafted
    candidates: list[TokenInfo]  # the slot's top-k tokens, most likely first
    keep_prob: float  # sigmoid of the keep logit
    offset: int | None  # assigned offset p (1-based; None after losing a collision)
    status: str  # one of SLOT_STATUSES
    accept_prob: float | None = None  # calibrated P(accepted | earlier drafts were), in the chain


@dataclass
class ContextTrace:
    """The context draft of a step: what followed an earlier occurrence of the last tokens."""

    tokens: list[TokenInfo]  # the drafts, offsets 1..m after the anchor (prob: accept_probs[i])
    accept_probs: list[float]  # estimated P(accepted | earlier drafts were)
    statuses: list[str]  # one of CONTEXT_STATUSES per draft
    match_length: int  # how many of the last tokens matched
    match_end: int  # where the match ended in prompt + output (exclusive): drafts start there


@dataclass
class PlanTrace:
    """What the step chose to verify, and the numbers that chose it (planning.py)."""

    rule: str  # "cost" (expected tokens per unit of time) or "fixed" (every draft given)
    head_drafts: int  # drafts checked that the head proposed (its chain and alternatives)
    context_drafts: int  # drafts checked that the context proposed
    shared: int  # drafts checked that more than one source proposed (forwarded once)
    expected_tokens: float  # tokens the step was expected to emit, the anchor included
    cost: float  # the pass plus drafting, in one-token passes (the cost curve's units)
    ordinary_rate: float  # expected tokens per unit of time of an ordinary step
    next_rate: float | None  # the best rate with one draft more (None: no more drafts)
    head_rested: bool = False  # the head did not draft: it had not paid for itself lately
    padding: int = 0  # filler tokens forwarded after the drafts (a longer pass was cheaper)
    draft_nodes: int | None = None  # drafts checked, every source's (None: version 1-2)
    source_drafts: dict[str, int] = field(default_factory=dict)  # drafts checked per source

    @property
    def rate(self) -> float:
        return self.expected_tokens / self.cost if self.cost else 0.0

    @property
    def drafts(self) -> int:
        if self.draft_nodes is not None:
            return self.draft_nodes
        return self.head_drafts + self.context_drafts - self.shared


@dataclass
class StepTrace:
    index: int  # step number, 0-based
    anchor: TokenInfo  # the backbone's own token that opens this step
    slots: list[SlotTrace]  # K drafted slots (empty when the step drafted nothing)
    shuffle_probs: list[list[float]]  # K x K: softmax over offsets of each slot's scores
    sinkhorn: list[list[float]] | None  # K x K doubly-stochastic matrix (sinkhorn strategy)
    block_order: list[int]  # slots forming the block, in offset order 1..m
    emitted: list[TokenInfo]  # tokens this step appended: the anchor, then drafts
    forwarded_ids: list[int]  # what the backbone ran over: [anchor, d_1..d_m] (or nothing)
    timings_ms: dict[str, float] = field(default_factory=dict)  # draft/forward/verify/total
    context: ContextTrace | None = None  # the context draft, when there was one
    plan: PlanTrace | None = None  # the step's decision (None: nothing was drafted)
    forwarded_parents: list[int] = field(default_factory=list)  # parent node of each forwarded
    # token (-1: the anchor); a tree where drafts share a parent, else each node's predecessor
    emitted_sources: list[str] = field(default_factory=list)  # per emitted token: FROM_ANCHOR or
    # the names of the sources that proposed it, joined by '+' (TOKEN_SOURCES for built-in ones)
    forwarded_sources: list[str] = field(default_factory=list)  # per forwarded token, as above
    forwarded_ranks: list[int] = field(default_factory=list)  # per forwarded token: its rank
    # among its siblings from its source (0: the source's first choice; the best of several)
    forwarded_chances: list[float] = field(default_factory=list)  # per forwarded token: its
    # path chance, the estimated chance that it is accepted (the anchor: 1)
    accepted_path: list[int] = field(default_factory=list)  # forwarded nodes accepted, root to
    # leaf (the anchor, node 0, not included)

    @property
    def num_emitted(self) -> int:
        return len(self.emitted)

    @property
    def num_accepted(self) -> int:
        return len(self.emitted) - 1

    @property
    def passes(self) -> int:
        """Backbone passes the step ran: one over its block, none for a last anchor alone."""
        return 1 if self.forwarded_ids else 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Totals:
    new_tokens: int  # tokens generated
    steps: int  # decoding steps
    backbone_forwards: int  # backbone passes, the prompt's prefill included
    compression_ratio: float  # new tokens / backbone forwards
    wall_seconds: float  # prefill to last token
    tokens_per_second: float  # new tokens / wall seconds


def cumulative_passes(steps: list[StepTrace]) -> list[int]:
    """Backbone passes after the prompt's prefill and after each step: [1, 1 + p_0, ...]."""
    passes = [1]
    for step in steps:
        passes.append(passes[-1] + step.passes)
    return passes


@dataclass
class GenerationTrace:
    prompt: str | None  # the prompt text as the model saw it (chat template applied)
    prompt_ids: list[int]
    settings: dict  # every generation setting, resolved
    model: dict  # backbone, head, K, device, dtype
    steps: list[StepTrace]
    output_ids: list[int]  # the new tokens
    output_text: str | None
    totals: Totals
    version: int = TRACE_VERSION
    cost_curve: dict | None = None  # the machine's cost curve the steps were planned with

    def to_dict(self) -> dict:
        data = asdict(self)
        data["format"] = TRACE_FORMAT
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(_rounded(self.to_dict()), indent=indent, ensure_ascii=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, text: str | bytes) -> GenerationTrace:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise TraceError(f"not a JSON trace: {error}") from None
        except RecursionError:
            raise TraceError("not a trace: the JSON is nested too deeply") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> GenerationTrace:
        return cls.from_json(Path(path).read_bytes())

    @classmethod
    def from_dict(cls, data: object) -> GenerationTrace:
        data = _expect(data, dict, "trace")
        if data.get("format", TRACE_FORMAT) != TRACE_FORMAT:
            raise TraceError(f"trace.format must be {TRACE_FORMAT!r}; got {data.get('format')!r}")
        version = _field(data, "version", int, "trace")
        if version not in READABLE_VERSIONS:
            raise TraceError(
                f"trace.version {version} is not supported (this reads {list(READABLE_VERSIONS)})"
            )
        steps = _field(data, "steps", list, "trace")
        totals = _field(data, "totals", dict, "trace")
        return cls(
            prompt=_field(data, "prompt", (str, type(None)), "trace"),
            prompt_ids=_ints(_field(data, "prompt_ids", list, "trace"), "trace.prompt_ids"),
            settings=_field(data, "settings", dict, "trace"),
            model=_field(data, "model", dict, "trace"),
            steps=[_step_from_dict(s, f"trace.steps[{i}]") for i, s in enumerate(steps)],
            output_ids=_ints(_field(data, "output_ids", list, "trace"), "trace.output_ids"),
            output_text=_field(data, "output_text", (str, type(None)), "trace"),
            totals=Totals(
                new_tokens=_field(totals, "new_tokens", int, "trace.totals"),
                steps=_field(totals, "steps", int, "trace.totals"),
                backbone_forwards=_field(totals, "backbone_forwards", int, "trace.totals"),
                compression_ratio=_number(totals, "compression_ratio", "trace.totals"),
                wall_seconds=_number(totals, "wall_seconds", "trace.totals"),
                tokens_per_second=_number(totals, "tokens_per_second", "trace.totals"),
            ),
            version=TRACE_VERSION,
            cost_curve=_optional(data, "cost_curve", dict, "trace"),
        )


# --- JSON helpers -----------------------------------------------------------------------------


def _rounded(value):
    """Round floats to 6 significant digits so traces stay small."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _expect(value, kind, where: str):
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise TraceError(f"{where} must be a number; got a boolean")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise TraceError(f"{where} must be {names}; got {type(value).__name__}")
    return value


def _count(value, where: str) -> int:
    if _expect(value, int, where) < 0:
        raise TraceError(f"{where} must not be negative; got {value}")
    return value


def _field(data: dict, key: str, kind, where: str):
    if key not in data:
        raise TraceError(f"{where}.{key} is missing")
    return _expect(data[key], kind, f"{where}.{key}")


def _number(data: dict, key: str, where: str) -> float:
    value = data.get(key)
    if value is None and key in data:
        return float("nan")
    return float(_field(data, key, (int, float), where))


def _optional(data: dict, key: str, kind, where: str):
    return None if data.get(key) is None else _field(data, key, kind, where)


def _optional_number(data: dict, key: str, where: str) -> float | None:
    return None if data.get(key) is None else _number(data, key, where)


def _ints(values: list, where: str) -> list[int]:
    return [_expect(v, int, f"{where}[{i}]") for i, v in enumerate(values)]


def _matrix(value, where: str) -> list[list[float]]:
    rows = []
    for i, row in enumerate(_expect(value, list, where)):
        row = _expect(row, list, f"{where}[{i}]")
        rows.append(
            [float(_expect(x, (int, float), f"{where}[{i}][{j}]")) for j, x in enumerate(row)]
        )
    return rows


def _token_from_dict(data, where: str) -> TokenInfo:
    data = _expect(data, dict, where)
    prob = data.get("prob")
    return TokenInfo(
        special=bool(_expect(data.get("special", False), bool, f"{where}.special")),
        id=_field(data, "id", int, where),
        text=_field(data, "text", (str, type(None)), where),
        prob=float("nan") if prob is None else float(_expect(prob, (int, float), f"{where}.prob")),
    )


def _slot_from_dict(data, where: str) -> SlotTrace:
    data = _expect(data, dict, where)
    status = _field(data, "status", str, where)
    if status not in SLOT_STATUSES:
        raise TraceError(f"{where}.status must be one of {list(SLOT_STATUSES)}; got {status!r}")
    candidates = _field(data, "candidates", list, where)
    return SlotTrace(
        index=_field(data, "index", int, where),
        token=_token_from_dict(data.get("token"), f"{where}.token"),
        candidates=[
            _token_from_dict(c, f"{where}.candidates[{i}]") for i, c in enumerate(candidates)
        ],
        keep_prob=_number(data, "keep_prob", where),
        offset=_field(data, "offset", (int, type(None)), where),
        status=status,
        accept_prob=_optional_number(data, "accept_prob", where),
    )


def _context_from_dict(data, where: str) -> ContextTrace:
    data = _expect(data, dict, where)
    statuses = [
        _expect(s, str, f"{where}.statuses[{i}]")
        for i, s in enumerate(_field(data, "statuses", list, where))
    ]
    for i, status in enumerate(statuses):
        if status not in CONTEXT_STATUSES:
            raise TraceError(
                f"{where}.statuses[{i}] must be one of {list(CONTEXT_STATUSES)}; got {status!r}"
            )
    tokens = _field(data, "tokens", list, where)
    probs = _field(data, "accept_probs", list, where)
    if not len(tokens) == len(probs) == len(statuses):
        raise TraceError(f"{where}: tokens, accept_probs and statuses differ in length")
    return ContextTrace(
        tokens=[_token_from_dict(t, f"{where}.tokens[{i}]") for i, t in enumerate(tokens)],
        accept_probs=[
            float(_expect(p, (int, float), f"{where}.accept_probs[{i}]"))
            for i, p in enumerate(probs)
        ],
        statuses=statuses,
        match_length=_field(data, "match_length", int, where),
        match_end=_field(data, "match_end", int, where),
    )


def _plan_from_dict(data, where: str) -> PlanTrace:
    data = _expect(data, dict, where)
    rule = _field(data, "rule", str, where)
    return PlanTrace(
        rule=rule,
        head_drafts=_field(data, "head_drafts", int, where),
        context_drafts=_field(data, "context_drafts", int, where),
        shared=_field(data, "shared", int, where),
        expected_tokens=_number(data, "expected_tokens", where),
        cost=_number(data, "cost", where),
        ordinary_rate=_number(data, "ordinary_rate", where),
        next_rate=_optional_number(data, "next_rate", where),
        head_rested=bool(_expect(data.get("head_rested", False), bool, f"{where}.head_rested")),
        padding=_count(data.get("padding", 0), f"{where}.padding"),
        draft_nodes=None
        if data.get("draft_nodes") is None
        else _count(data["draft_nodes"], f"{where}.draft_nodes"),
        source_drafts=_counts(data.get("source_drafts", {}), f"{where}.source_drafts"),
    )


def _counts(value, where: str) -> dict[str, int]:
    return {str(k): _count(v, f"{where}.{k}") for k, v in _expect(value, dict, where).items()}


def _step_from_dict(data, where: str) -> StepTrace:
    data = _expect(data, dict, where)
    slots = _field(data, "slots", list, where)
    sinkhorn = data.get("sinkhorn")
    timings = _field(data, "timings_ms", dict, where) if "timings_ms" in data else {}
    return StepTrace(
        index=_field(data, "index", int, where),
        anchor=_token_from_dict(data.get("anchor"), f"{where}.anchor"),
        slots=[_slot_from_dict(s, f"{where}.slots[{i}]") for i, s in enumerate(slots)],
        shuffle_probs=_matrix(data.get("shuffle_probs"), f"{where}.shuffle_probs"),
        sinkhorn=None if sinkhorn is None else _matrix(sinkhorn, f"{where}.sinkhorn"),
        block_order=_ints(_field(data, "block_order", list, where), f"{where}.block_order"),
        emitted=[
            _token_from_dict(t, f"{where}.emitted[{i}]")
            for i, t in enumerate(_field(data, "emitted", list, where))
        ],
        forwarded_ids=_ints(_field(data, "forwarded_ids", list, where), f"{where}.forwarded_ids"),
        timings_ms={
            str(k): float(_expect(v, (int, float), f"{where}.timings_ms.{k}"))
            for k, v in timings.items()
        },
        context=None
        if data.get("context") is None
        else _context_from_dict(data["context"], f"{where}.context"),
        plan=None if data.get("plan") is None else _plan_from_dict(data["plan"], f"{where}.plan"),
        forwarded_parents=_ints(
            _expect(data.get("forwarded_parents", []), list, f"{where}.forwarded_parents"),
            f"{where}.forwarded_parents",
        ),
        emitted_sources=_sources(data.get("emitted_sources", []), f"{where}.emitted_sources"),
        forwarded_sources=_sources(data.get("forwarded_sources", []), f"{where}.forwarded_sources"),
        forwarded_ranks=_ints(
            _expect(data.get("forwarded_ranks", []), list, f"{where}.forwarded_ranks"),
            f"{where}.forwarded_ranks",
        ),
        forwarded_chances=_numbers(data.get("forwarded_chances", []), f"{where}.forwarded_chances"),
        accepted_path=_ints(
            _expect(data.get("accepted_path", []), list, f"{where}.accepted_path"),
            f"{where}.accepted_path",
        ),
    )


def _sources(values, where: str) -> list[str]:
    """Source names: the anchor, filler, or draft sources' names joined by '+'."""
    values = _expect(values, list, where)
    for i, value in enumerate(values):
        _expect(value, str, f"{where}[{i}]")
        if not all(part and not part.isspace() for part in value.split("+")):
            raise TraceError(
                f"{where}[{i}] must name sources joined by '+' (as {list(TOKEN_SOURCES)}); "
                f"got {value!r}"
            )
    return list(values)


def _numbers(values, where: str) -> list[float]:
    values = _expect(values, list, where)
    return [float(_expect(v, (int, float), f"{where}[{i}]")) for i, v in enumerate(values)]
