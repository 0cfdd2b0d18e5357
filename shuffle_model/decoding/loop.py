"""The one generation loop, shared by generate(), stream(), the app, the CLI and the benchmark.

One decoding step (propose -> plan -> forward -> verify -> advance):
 1. anchor  - the backbone's own next token at h_t (chosen at the end of the previous step)
 2. propose - each draft source proposes a small tree of drafts after the anchor, with
              their estimated chances (proposers.py): the shuffle head (draft K slots,
              shuffle them into offsets, filter; alternatives beside its chain), the context
              (an n-gram match in prompt + output), and any source passed in
 3. plan    - which drafts to check: the most likely nodes, as many as maximise expected
              tokens per unit of time on this machine's cost curve (planning.py, cost.py)
 4. forward - the backbone runs once over the anchor and the chosen drafts, a chain or a
              small tree (tree.py), with its key/value cache
 5. verify  - keep the longest run the backbone agrees with (verify.py); tell the sources
              what was accepted
 6. advance - the one place the state moves on (advance): the output, the cache (only the
              accepted branch kept), h_t, the pass count, the next anchor
 7. record  - the loop yields what it did (StepResult, step_records.py); only the
              GenerationStream of someone who asked for steps (hooks, stream, return_trace)
              builds a StepTrace from it

One test ends the answer (ends_answer): asked of the anchor alone before a step (then the step
emits it and forwards nothing) and of what the step emitted after it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import torch

from .cost import ensure_cost_curve
from .planning import Plan, plan_step
from .proposers import DraftInput, DraftSource, DraftTree, Outcome
from .sampling import TokenSampler
from .settings import GenerationSettings
from .sources import check_sources, make_sources
from .step_records import (
    DecodeResult,
    StepResult,
    build_step_trace,
    make_trace,
    trace_of_result,
)
from .trace import GenerationTrace, StepTrace, cumulative_passes
from .tree import Block, build_block, can_drop_branches, keep_nodes, padded, tree_inputs
from .verify import Verdict, verify_chain, verify_greedy

Hook = Callable[[StepTrace], None]


def prompt_tensor(model, input_ids, attention_mask=None) -> torch.Tensor:
    """Validate the prompt and return it as a (1, T) long tensor on the model's device."""
    if input_ids is None:
        raise ValueError("input_ids must be given: a (1, T) tensor or a list of token ids")
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2:
        raise ValueError(f"input_ids must have shape (1, T); got {tuple(ids.shape)}")
    if ids.shape[0] != 1:
        raise ValueError(
            f"stream() decodes one prompt at a time (generate() takes a batch); got {ids.shape[0]}"
        )
    if attention_mask is not None:
        mask = torch.as_tensor(attention_mask).reshape(ids.shape).bool().cpu()
        ids = ids.cpu()[mask][None]  # drop padding
    if ids.shape[1] == 0:
        raise ValueError("input_ids is empty: the prompt needs at least one token")
    vocab = model.config.vocab_size
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ValueError(f"input_ids must be token ids in [0, {vocab}); got {ids.tolist()[0][:20]}")
    return ids.to(model.device)


def check_length(model, prompt_length: int, max_new_tokens: int) -> None:
    limit = model.context_length
    if prompt_length + max_new_tokens > limit:
        raise ValueError(
            f"prompt ({prompt_length} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context of {limit} tokens; shorten the prompt or lower max_new_tokens"
        )


def planning_curve(model, settings: GenerationSettings):
    """The machine's cost curve (measured once per machine and cached), for verified decoding."""
    if not settings.verify or settings.max_parallel_tokens == 0:
        return None
    return ensure_cost_curve(model, max_tokens=settings.max_parallel_tokens + 1)


@dataclass
class LoopState:
    """What the loop carries from one step to the next; it moves on in one place (`advance`).
    The draft sources read part of it, as a DraftInput (`draft_input`)."""

    cache: object  # the backbone's key/value cache (transformers' Cache)
    hidden: torch.Tensor  # (H,) h_t at the anchor's position: what the head drafts from
    anchor: int  # the backbone's own next token, chosen at the end of the previous step
    anchor_prob: float  # its probability under the backbone's distribution
    tokens: list[int]  # prompt + output so far + the anchor: what the context proposer searches
    output: list[int] = field(default_factory=list)  # the new tokens emitted so far
    forwards: int = 1  # backbone passes so far (the prompt's prefill)
    history: list[torch.Tensor] = field(default_factory=list)  # (n, H) chunks: the hidden
    # state at every position before the anchor's, a chunk per pass (DraftInput.history)

    def draft_input(self) -> DraftInput:
        """What the draft sources see at the start of a step."""
        return DraftInput(self.tokens, self.hidden, self.anchor, self.history)


@dataclass
class Checked:
    """A step's backbone pass over the anchor and its planned drafts, and what verification
    kept of it: what the state needs to move on (`advance`)."""

    block: Block  # what the backbone ran over: the anchor, then the planned drafts
    verdict: Verdict  # the accepted path and the next anchor
    hidden: torch.Tensor  # (n, H) the pass's hidden state at each node of the block
    past: int  # the cache's length before the pass
    forwarded: int  # entries the pass added to the cache: the block and its filler

    @property
    def accepted(self) -> list[int]:
        """The accepted drafts' tokens, root to leaf."""
        return [self.block.tokens[node] for node in self.verdict.path]


@torch.inference_mode()
def decode(
    model, prompt: torch.Tensor, settings: GenerationSettings, *, record: bool, extra_sources=()
) -> Iterator[StepResult]:
    """The loop: propose -> plan -> forward -> verify -> advance, one step at a time, as
    speculative decoding loops go (gpt-fast's generate.py). Yields a StepResult per step;
    returns a DecodeResult. `extra_sources`: draft sources (classes or factories) beside those
    `settings.draft_source` names."""
    sampler = TokenSampler(
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
        device=model.device,
    )
    curve = planning_curve(model, settings)
    start = time.perf_counter()  # a first measurement of the cost curve is not generation time
    state = prefill(model, prompt, sampler)
    sources = make_sources(model, settings, sampler, record=record, extra=extra_sources)
    tree = sampler.greedy and settings.verify and can_drop_branches(state.cache)
    paused = 0.0
    for index in itertools.count():
        clock = _Clock(model.device, enabled=record)
        anchor = (state.anchor, state.anchor_prob)
        last = ends_answer(model, settings, state, [state.anchor])  # emit it, forward nothing
        budget = 0 if last else min(settings.max_parallel_tokens, remaining(settings, state) - 1)
        proposals = propose(sources, state.draft_input(), budget=budget, tree=tree, clock=clock)
        plan = plan_drafts(sources, proposals, curve, settings, budget=budget, tree=tree)
        clock.lap("plan")
        checked = None
        if not last:
            checked = forward_and_verify(model, state, proposals, plan, sampler, settings, clock)
            tell_sources(sources, proposals, checked.block, checked.verdict)
        emitted = [state.anchor, *(checked.accepted if checked is not None else [])]
        ended = ends_answer(model, settings, state, emitted)
        advance(state, emitted, checked)
        if checked is not None:
            clock.lap("verify")
        suspended = time.perf_counter()
        yield StepResult(
            index=index,
            anchor=anchor,
            proposals=proposals,
            plan=plan,
            block=checked.block if checked is not None else None,
            verdict=checked.verdict if checked is not None else None,
            emitted=emitted,
            timings=clock.laps,
            rested=tuple(source.name for source in sources if source.rested),
        )
        paused += time.perf_counter() - suspended  # the consumer's time is not generation time
        if ended:
            break
    return DecodeResult(
        output_ids=state.output,
        steps=index + 1,
        backbone_forwards=state.forwards,
        wall_seconds=time.perf_counter() - start - paused,
        cost_curve=curve.to_dict() if curve else None,
    )


def prefill(model, prompt: torch.Tensor, sampler: TokenSampler) -> LoopState:
    """One backbone pass over the prompt: the cache, h_t of its last token and the first anchor."""
    cache = model.new_cache()
    trunk = model.trunk_forward(prompt, cache=cache, logits_to_keep=1, argmax_only=sampler.greedy)
    anchor, anchor_prob = choose_token(sampler, trunk.logits[0, -1])
    hidden = trunk.hidden[0, -1]  # (H,) h_t of the last prompt token
    tokens = [*prompt[0].tolist(), anchor]
    return LoopState(cache, hidden, anchor, anchor_prob, tokens, history=[trunk.hidden[0]])


def remaining(settings: GenerationSettings, state: LoopState) -> int:
    return settings.max_new_tokens - len(state.output)


def ends_answer(model, settings: GenerationSettings, state: LoopState, tokens: list[int]) -> bool:
    """Whether emitting `tokens` after the output so far ends the answer: one of them ends the
    sequence, or they reach max_new_tokens. Asked of the anchor alone before a step (then the
    step emits it and forwards nothing) and of what the step emitted after it."""
    eos_ids = model.config.eos_token_ids
    return any(t in eos_ids for t in tokens) or len(tokens) >= remaining(settings, state)


def plan_drafts(sources, proposals, curve, settings, *, budget: int, tree: bool) -> Plan:
    """Which of the proposed drafts to check (planning.py); gated sources hear what their
    proposal added."""
    plan = plan_over(
        sources, proposals, curve, rule=settings.block_length, budget=budget, tree=tree
    )
    weigh_gated_sources(sources, proposals, plan, curve, budget=budget, tree=tree)
    return plan


def plan_over(sources, proposals, curve, *, rule: str, budget: int, tree: bool) -> Plan:
    """The plan over these proposals, their sources' drafting paid for."""
    return plan_step(
        list(proposals.values()),
        curve,
        rule=rule,
        budget=budget,
        tree=tree,
        drafting_cost=drafting_cost(sources, proposals, curve),
    )


def drafting_cost(sources, proposals, curve) -> float:
    """What this step's proposing cost, in one-token passes: the sources that proposed."""
    if curve is None:
        return 0.0
    return sum(source.drafting_cost(curve) for source in sources if source.name in proposals)


def forward_and_verify(
    model, state: LoopState, proposals, plan: Plan, sampler, settings, clock
) -> Checked:
    """One backbone pass over the anchor and the planned drafts, and verification of its
    outputs. The state is left as it was: `advance` moves it on."""
    block = build_block(state.anchor, plan)
    past = state.cache.get_seq_length()
    trunk = forward_block(
        model,
        block,
        cache=state.cache,
        past=past,
        padding=plan.padding,
        argmax_only=sampler.greedy,
    )
    clock.lap("forward")
    verdict = verify_step(model, trunk.logits[0], block, proposals, sampler, settings)
    forwarded = len(block.tokens) + plan.padding
    return Checked(block, verdict, hidden=trunk.hidden[0], past=past, forwarded=forwarded)


def advance(state: LoopState, emitted: list[int], checked: Checked | None) -> None:
    """The one place the loop's state moves on, after a step emitted `emitted` (the anchor and
    the accepted drafts): the output; after a pass (`checked`), the cache keeps only the
    accepted branch, h_t and the history move to the last accepted token, the pass is counted,
    and the next anchor joins the tokens."""
    state.output += emitted
    if checked is None:  # a last step: the anchor alone, nothing forwarded
        return
    path, verdict = checked.verdict.path, checked.verdict
    keep_nodes(state.cache, past=checked.past, forwarded=checked.forwarded, keep=[0, *path])
    state.hidden = checked.hidden[path[-1] if path else 0]
    state.history.append(checked.hidden[[0, *path]])  # the anchor and the accepted drafts
    state.forwards += 1
    state.anchor, state.anchor_prob = verdict.next_anchor, verdict.next_anchor_prob
    state.tokens += [*emitted[1:], state.anchor]  # the old anchor is already there


def choose_token(sampler: TokenSampler, logits: torch.Tensor) -> tuple[int, float]:
    """The backbone's own token from one row of logits, and its probability."""
    probs = sampler.probs(logits)
    token = int(sampler.choose(logits, probs))
    return token, float(probs[token])


def propose(
    sources: list[DraftSource], inputs: DraftInput, *, budget: int, tree: bool, clock=None
) -> dict[str, DraftTree]:
    """Each source's proposal, by name (sources with nothing to propose are left out)."""
    proposals = {}
    for source in sources if budget > 0 else ():
        proposal = source.propose(inputs, budget=budget, branching=tree)
        if proposal is not None:
            proposals[source.name] = proposal
        if clock is not None:
            clock.lap(source.name)
    return proposals


def weigh_gated_sources(sources, proposals, plan: Plan, curve, *, budget: int, tree: bool):
    """Tell each gated source that proposed what its proposal added to this step's expected
    rate: the plan against the best plan without it."""
    for source in sources:
        if source.gate is None or source.name not in proposals:
            continue
        others = {name: p for name, p in proposals.items() if name != source.name}
        alone = plan_over(sources, others, curve, rule=plan.rule, budget=budget, tree=tree)
        source.gate.weigh(plan.rate - alone.rate)


def forward_block(
    model, block: Block, *, cache, past: int, padding: int = 0, argmax_only: bool = False
):
    """One backbone pass over the block: a chain as usual, a tree with its own mask. `padding`
    filler tokens follow it (a longer pass this machine runs faster); only the block's own
    outputs are returned, and the caller drops the filler's cache entries with the rejected.
    `argmax_only` (greedy): logits whose argmax is certified (precision.py)."""
    device = model.device
    forwarded = padded(block, padding)
    ids = torch.tensor([forwarded.tokens], device=device)  # (1, n + padding)
    if forwarded.is_chain:
        trunk = model.trunk_forward(ids, cache=cache, argmax_only=argmax_only)
    else:
        mask, positions = tree_inputs(forwarded, past=past, dtype=model.dtype, device=device)
        trunk = model.trunk_forward(
            ids,
            cache=cache,
            attention_mask=mask,
            position_ids=positions,
            argmax_only=argmax_only,
        )
    if padding:
        n = len(block.tokens)
        trunk = replace(trunk, hidden=trunk.hidden[:, :n], logits=trunk.logits[:, :n])
    return trunk


def verify_step(model, logits, block: Block, proposals, sampler, settings) -> Verdict:
    eos_ids = model.config.eos_token_ids
    if sampler.greedy and settings.verify:
        return verify_greedy(target_logits=logits, block=block, eos_ids=eos_ids)
    probs = None
    if not sampler.greedy:
        probs = draft_distributions(block, proposals, model.config.vocab_size, logits.device)
    return verify_chain(
        target_logits=logits,
        block_tokens=torch.tensor(block.tokens[1:], dtype=torch.long, device=logits.device),
        draft_probs=probs,
        sampler=sampler,
        verify=settings.verify,
        eos_ids=eos_ids,
    )


def draft_distributions(block: Block, proposals, vocab_size: int, device) -> torch.Tensor:
    """(m, V) what each draft of a chain block was drawn from: its source's distribution, or
    all of the mass on the token where the source chose it."""
    rows = torch.zeros(len(block.tokens) - 1, vocab_size, device=device)
    for node in range(1, len(block.tokens)):
        source, k = block.origins[node][0]
        drawn = proposals[source].draft_probs
        if drawn is None:
            rows[node - 1, block.tokens[node]] = 1.0
        else:
            rows[node - 1] = drawn[k]
    return rows


def tell_sources(sources, proposals, block: Block, verdict: Verdict) -> None:
    """Each source hears which of its nodes were checked and which were accepted."""
    on_path = set(verdict.path)
    for source in sources:
        tree = proposals.get(source.name)
        checked = block.nodes_from(source.name)  # its node -> block node
        if tree is None or not checked:
            continue
        nodes = sorted(checked)
        accepted = [k for k in nodes if checked[k] in on_path]
        source.observe(tree, Outcome(checked=nodes, accepted=accepted))


class _Clock:
    """Per-phase wall times of a step (head, context, plan, forward, verify, total);
    synchronises CUDA only while recording."""

    def __init__(self, device: torch.device, *, enabled: bool):
        self.enabled = enabled
        self.sync = enabled and device.type == "cuda"
        self.laps: dict[str, float] = {}
        self.last = self.first = time.perf_counter() if enabled else 0.0

    def lap(self, name: str) -> None:
        if not self.enabled:
            return
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.laps[f"{name}_ms"] = (now - self.last) * 1000
        self.laps["total_ms"] = (now - self.first) * 1000
        self.last = now


# --- public entry points ----------------------------------------------------------------------


def _start(model, input_ids, attention_mask, settings: dict):
    known = GenerationSettings.__dataclass_fields__
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(f"unknown generation settings {unknown}; allowed: {sorted(known)}")
    resolved = GenerationSettings(**settings).resolved(
        num_slots=model.config.num_slots, default_keep_threshold=model.config.default_keep_threshold
    )
    prompt = prompt_tensor(model, input_ids, attention_mask)
    check_length(model, prompt.shape[1], resolved.max_new_tokens)
    check_sources(model, resolved)
    return prompt, resolved


def _check_hooks(hooks: Iterable[Hook]) -> list[Hook]:
    hooks = list(hooks)
    for hook in hooks:
        if not callable(hook):
            raise ValueError(f"hooks must be callables taking a StepTrace; got {hook!r}")
    return hooks


def generate(
    model,
    input_ids=None,
    attention_mask=None,
    *,
    hooks: Iterable[Hook] = (),
    return_trace: bool = False,
    pad_token_id: int | None = None,
    tokenizer=None,
    extra_sources: Iterable[Callable] = (),
    **settings,
):
    """Decode one prompt. Returns the (1, prompt+new) sequence, or (sequence, GenerationTrace).
    Runs the same GenerationStream as stream(), to its end; hooks see each step as it is made;
    `tokenizer` gives the records' texts (default: the model's); `extra_sources`: draft
    sources beside those `draft_source` names (each a DraftSource class, or a factory called
    with no arguments, made fresh per prompt).
    A batch (B, T) with its attention mask decodes row after row (generate_batch)."""
    if is_batch(input_ids):
        return generate_batch(
            model,
            input_ids,
            attention_mask,
            hooks=hooks,
            return_trace=return_trace,
            pad_token_id=pad_token_id,
            tokenizer=tokenizer,
            extra_sources=extra_sources,
            **settings,
        )
    hooks = _check_hooks(hooks)
    prompt, resolved = _start(model, input_ids, attention_mask, settings)
    run = GenerationStream(
        model,
        prompt,
        resolved,
        hooks,
        record=bool(hooks) or return_trace,
        tokenizer=tokenizer,
        extra_sources=extra_sources,
    )
    for _ in run:
        pass
    new = torch.tensor([run.result.output_ids], dtype=torch.long, device=prompt.device)
    sequence = torch.cat([prompt, new], dim=1)
    return (sequence, run.trace) if return_trace else sequence


def is_batch(input_ids) -> bool:
    """More than one prompt: a (B > 1, T) tensor or a list of B > 1 token lists."""
    if isinstance(input_ids, torch.Tensor):
        return input_ids.ndim == 2 and input_ids.shape[0] > 1
    return (
        isinstance(input_ids, (list, tuple))
        and len(input_ids) > 1
        and all(isinstance(row, (list, tuple, torch.Tensor)) for row in input_ids)
    )


def generate_batch(
    model,
    input_ids,
    attention_mask=None,
    *,
    hooks: Iterable[Hook] = (),
    return_trace: bool = False,
    pad_token_id: int | None = None,
    tokenizer=None,
    extra_sources: Iterable[Callable] = (),
    **settings,
):
    """A batch as transformers returns it: (B, T + new) where each row is its input (padding
    included; left padding, as decoder-only models expect) followed by its new tokens, rows that
    end earlier padded with pad_token_id. The rows decode one after another, each exactly as
    alone. With return_trace, (sequences, [GenerationTrace per row])."""
    ids = _as_token_matrix(input_ids, "input_ids")
    mask = (
        torch.ones_like(ids)
        if attention_mask is None
        else _as_token_matrix(attention_mask, "attention_mask")
    )
    if mask.shape != ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(ids.shape)}; "
            f"got {tuple(mask.shape)}"
        )
    pad = batch_pad_id(model, pad_token_id)
    news, traces = [], []
    for row, row_mask in zip(ids, mask, strict=True):
        sequence, trace = generate(
            model,
            row[None],
            row_mask[None],
            hooks=hooks,
            return_trace=True,
            tokenizer=tokenizer,
            extra_sources=extra_sources,
            **settings,
        )
        news.append(sequence[0, int(row_mask.bool().sum()) :].cpu())
        traces.append(trace)
    width = max(len(new) for new in news)
    tail = torch.full((len(news), width), pad, dtype=torch.long)
    for i, new in enumerate(news):
        tail[i, : len(new)] = new
    sequences = torch.cat([ids, tail], dim=1).to(model.device)  # (B, T + longest new)
    return (sequences, traces) if return_trace else sequences


def _as_token_matrix(value, name: str) -> torch.Tensor:
    try:
        matrix = torch.as_tensor(value, dtype=torch.long).cpu()
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{name} of a batch must be a (batch, seq) tensor or equal-length lists; pad the "
            f"prompts and pass the attention_mask ({error})"
        ) from None
    if matrix.ndim != 2:
        raise ValueError(
            f"{name} of a batch must have shape (batch, seq); got {tuple(matrix.shape)}"
        )
    return matrix


def batch_pad_id(model, pad_token_id: int | None) -> int:
    """The id that pads a batch's shorter rows: the one given, the model's or its tokenizer's
    pad token, else its first end-of-sequence token (as transformers falls back)."""
    tokenizer = getattr(model, "tokenizer", None)
    for candidate in (
        pad_token_id,
        model.config.pad_token_id,
        getattr(tokenizer, "pad_token_id", None),
        *model.config.eos_token_ids,
    ):
        if candidate is not None:
            return int(candidate)
    return 0


class GenerationStream:
    """Iterate to get one StepTrace per step; afterwards `.trace` is the GenerationTrace.
    `snapshot()` gives the trace of the steps so far at any time (e.g. after a Stop); its wall
    time is the sum of the steps' own times (the prefill not included). The one driver of the
    loop: generate() runs one to its end, with `record=False` when nobody asked for steps (then
    it yields nothing and keeps no trace)."""

    def __init__(
        self,
        model,
        prompt: torch.Tensor,
        settings: GenerationSettings,
        hooks,
        *,
        record=True,
        tokenizer=None,
        extra_sources: Iterable[Callable] = (),
    ):
        self.model, self.prompt, self.settings, self.hooks = model, prompt, settings, hooks
        self.record = record
        self.extra_sources = list(extra_sources)
        self.tokenizer = tokenizer or model.tokenizer  # gives the records' token texts
        self.trace: GenerationTrace | None = None
        self.result: DecodeResult | None = None
        self.steps: list[StepTrace] = []
        self._started: float | None = None

    def __iter__(self) -> Iterator[StepTrace]:
        if self._started is not None:
            raise RuntimeError("a GenerationStream can be iterated once")
        self._started = time.perf_counter()
        loop = decode(
            self.model,
            self.prompt,
            self.settings,
            record=self.record,
            extra_sources=self.extra_sources,
        )
        while True:
            try:
                step = next(loop)
            except StopIteration as stop:
                self.result = stop.value
                break
            if not self.record:
                continue
            record = build_step_trace(self.tokenizer, step, verified=self.settings.verify)
            for hook in self.hooks:
                hook(record)
            self.steps.append(record)
            yield record
        if self.record:
            self.trace = trace_of_result(
                self.model, self.prompt, self.settings, self.steps, self.result, self.tokenizer
            )

    def snapshot(self) -> GenerationTrace:
        if self.trace is not None:
            return self.trace
        elapsed = sum(step.timings_ms.get("total_ms", 0.0) for step in self.steps) / 1000
        return make_trace(
            self.model,
            self.prompt,
            self.settings,
            list(self.steps),
            output_ids=[t.id for s in self.steps for t in s.emitted],
            backbone_forwards=cumulative_passes(self.steps)[-1],
            wall_seconds=elapsed,
            cost_curve=self._curve(),
            tokenizer=self.tokenizer,
        )

    def _curve(self) -> dict | None:
        """The curve the running loop plans with (measured before its first step)."""
        curve = self.model.cost_curve
        planned = self.settings.verify and self.settings.max_parallel_tokens > 0
        return curve.to_dict() if planned and curve is not None and self.steps else None


def stream(
    model,
    input_ids=None,
    attention_mask=None,
    *,
    hooks: Iterable[Hook] = (),
    tokenizer=None,
    extra_sources: Iterable[Callable] = (),
    **settings,
):
    hooks = _check_hooks(hooks)
    prompt, resolved = _start(model, input_ids, attention_mask, settings)
    return GenerationStream(
        model, prompt, resolved, hooks, tokenizer=tokenizer, extra_sources=extra_sources
    )
