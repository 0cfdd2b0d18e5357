"""The one generation loop, shared by generate(), stream(), the app, the CLI and the benchmark.

One decoding step (propose -> plan -> forward -> verify):
 1. anchor  - the backbone's own next token at h_t (chosen at the end of the previous step)
 2. propose - each draft source proposes a chain for the offsets after the anchor, with its
              estimated acceptance (proposers.py): the shuffle head (draft K slots, shuffle
              them into offsets, filter) and the context (an n-gram match in prompt + output)
 3. plan    - how many drafts of each chain to check: the choice that maximises expected
              tokens per unit of time on this machine's cost curve (planning.py, cost.py)
 4. forward - the backbone runs once over the anchor and the chosen drafts, a chain or a
              small tree (tree.py), with its key/value cache
 5. verify  - keep the longest run the backbone agrees with; keep only that branch in the
              cache (verify.py); tell the proposers what was accepted
 6. record  - only when someone asked for steps (hooks, stream, return_trace) is a StepTrace
              built: with no observer, no per-step record exists
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import torch

from .cost import cost_curve
from .planning import COST, Plan, plan_step
from .proposers import (
    CONTEXT,
    HEAD,
    Chain,
    ContextProposer,
    DecodeState,
    HeadGate,
    HeadProposer,
)
from .sampling import TokenSampler
from .settings import GenerationSettings
from .trace import (
    ACCEPTED,
    COST_CUT,
    EMITTED,
    FROM_ANCHOR,
    REJECTED,
    ContextTrace,
    GenerationTrace,
    PlanTrace,
    SlotTrace,
    StepTrace,
    TokenInfo,
    Totals,
    cumulative_passes,
)
from .tree import Block, build_block, can_drop_branches, keep_nodes, padded, tree_inputs
from .verify import Verdict, verify_chain, verify_greedy

TRACE_TOP_K = 5  # candidates recorded per slot
Hook = Callable[[StepTrace], None]


@dataclass
class DecodeResult:
    output_ids: list[int]  # the new tokens
    steps: int
    backbone_forwards: int
    wall_seconds: float  # generation time, excluding the time the consumer held each step
    cost_curve: dict | None = None  # the cost curve the steps were planned with


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
            f"batch size must be 1 (generation decodes one prompt at a time); got {ids.shape[0]}"
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


def make_proposers(model, settings: GenerationSettings, sampler: TokenSampler, *, record: bool):
    """The draft sources the settings ask for, fresh for one generation."""
    calibration = model.calibration
    proposers = []
    if HEAD in settings.sources:
        proposers.append(
            HeadProposer(
                model,
                sampler=sampler,
                strategy=settings.shuffle_strategy,
                keep_threshold=settings.keep_threshold,
                calibration=calibration,
                full_probs=record or not sampler.greedy,
                gate=HeadGate() if settings.block_length == COST else None,
            )
        )
    if CONTEXT in settings.sources:
        proposers.append(ContextProposer(calibration))
    return proposers


def planning_curve(model, settings: GenerationSettings):
    """The machine's cost curve (measured once per machine and cached), for verified decoding."""
    if not settings.verify or settings.max_parallel_tokens == 0:
        return None
    return cost_curve(model, max_tokens=settings.max_parallel_tokens + 1)


@torch.inference_mode()
def decode(
    model, prompt: torch.Tensor, settings: GenerationSettings, *, record: bool
) -> Iterator[StepTrace | None]:
    """The loop. Yields a StepTrace per step (None when not recording); returns DecodeResult."""
    device = model.device
    sampler = TokenSampler(
        temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed, device=device
    )
    eos_ids = model.config.eos_token_ids
    curve = planning_curve(model, settings)
    start = time.perf_counter()  # a first measurement of the cost curve is not generation time
    cache = model.new_cache()
    trunk = model.trunk_forward(prompt, cache=cache)
    forwards = 1
    hidden = trunk.hidden[0, -1]  # (H,) h_t of the last prompt token
    anchor, anchor_prob = choose_token(sampler, trunk.logits[0, -1])
    tokens = [*prompt[0].tolist(), anchor]  # what the context proposer searches
    proposers = make_proposers(model, settings, sampler, record=record)
    tree = sampler.greedy and settings.verify and can_drop_branches(cache)
    output: list[int] = []
    step, paused = 0, 0.0
    while True:
        clock = _Clock(device, enabled=record)
        remaining = settings.max_new_tokens - len(output)
        final = anchor in eos_ids or remaining == 1
        budget = 0 if final else min(settings.max_parallel_tokens, remaining - 1)
        chains = propose(proposers, DecodeState(tokens, hidden, anchor), budget=budget, clock=clock)
        head, context = chains.get(HEAD), chains.get(CONTEXT)
        plan = plan_step(
            head,
            context,
            curve,
            rule=settings.block_length,
            budget=budget,
            tree=tree,
            drafting_cost=curve.draft_cost if curve is not None and HEAD in chains else 0.0,
        )
        weigh_the_head(proposers, plan, context, curve, budget=budget, tree=tree)
        clock.lap("plan")

        emitted, block, verdict = [anchor], None, None
        if not final:
            block = build_block(anchor, head, context, plan)
            past = cache.get_seq_length()
            trunk = forward_block(model, block, cache=cache, past=past, padding=plan.padding)
            forwards += 1
            clock.lap("forward")
            verdict = verify_step(model, trunk.logits[0], block, plan, chains, sampler, settings)
            forwarded = len(block.tokens) + plan.padding
            keep_nodes(cache, past=past, forwarded=forwarded, keep=[0, *verdict.path])
            hidden = trunk.hidden[0, verdict.path[-1] if verdict.path else 0]
            emitted += [block.tokens[node] for node in verdict.path]
            tell_proposers(proposers, chains, plan, block, verdict)
            clock.lap("verify")
        output += emitted
        suspended = time.perf_counter()
        if record:
            yield build_step_trace(
                model,
                index=step,
                anchor=(anchor, anchor_prob),
                proposers=proposers,
                chains=chains,
                plan=plan,
                block=block,
                verdict=verdict,
                verified=settings.verify,
                timings=clock.laps,
            )
        else:
            yield None
        paused += time.perf_counter() - suspended  # the consumer's time is not generation time
        step += 1
        if final or any(t in eos_ids for t in emitted) or len(output) >= settings.max_new_tokens:
            break
        anchor, anchor_prob = verdict.next_anchor, verdict.next_anchor_prob
        tokens += [*emitted[1:], anchor]  # the old anchor is already there
    seconds = time.perf_counter() - start - paused
    return DecodeResult(output, step, forwards, seconds, curve.to_dict() if curve else None)


def choose_token(sampler: TokenSampler, logits: torch.Tensor) -> tuple[int, float]:
    """The backbone's own token from one row of logits, and its probability."""
    probs = sampler.probs(logits)
    token = int(sampler.choose(logits, probs))
    return token, float(probs[token])


def propose(proposers, state: DecodeState, *, budget: int, clock=None) -> dict[str, Chain]:
    """Each source's chain (sources with nothing to propose are left out)."""
    chains = {}
    for proposer in proposers if budget > 0 else ():
        chain = proposer.propose(state, budget=budget)
        if chain is not None:
            chains[proposer.name] = chain
        if clock is not None:
            clock.lap(proposer.name)
    return chains


def weigh_the_head(proposers, plan: Plan, context, curve, *, budget: int, tree: bool) -> None:
    """Tell a gated head what its chain added to this step's expected rate."""
    head = next((p for p in proposers if p.name == HEAD), None)
    if head is None or head.gate is None or head.last is None:
        return
    alone = plan_step(None, context, curve, rule=plan.rule, budget=budget, tree=tree)
    head.gate.weigh(plan.rate - alone.rate)


def forward_block(model, block: Block, *, cache, past: int, padding: int = 0):
    """One backbone pass over the block: a chain as usual, a tree with its own mask. `padding`
    filler tokens follow it (a longer pass this machine runs faster); only the block's own
    outputs are returned, and the caller drops the filler's cache entries with the rejected."""
    device = model.device
    forwarded = padded(block, padding)
    ids = torch.tensor([forwarded.tokens], device=device)  # (1, n + padding)
    if forwarded.is_chain:
        trunk = model.trunk_forward(ids, cache=cache)
    else:
        mask, positions = tree_inputs(forwarded, past=past, dtype=model.dtype, device=device)
        trunk = model.trunk_forward(ids, cache=cache, attention_mask=mask, position_ids=positions)
    if padding:
        n = len(block.tokens)
        trunk = replace(trunk, hidden=trunk.hidden[:, :n], logits=trunk.logits[:, :n])
    return trunk


def verify_step(model, logits, block: Block, plan: Plan, chains, sampler, settings) -> Verdict:
    eos_ids = model.config.eos_token_ids
    if sampler.greedy and settings.verify:
        return verify_greedy(target_logits=logits, block=block, eos_ids=eos_ids)
    chain = chains.get(HEAD) if plan.head else chains.get(CONTEXT) if plan.context else None
    drafts = len(block.tokens) - 1
    probs = None
    if chain is not None and not sampler.greedy:
        probs = chain.one_hot_probs(model.config.vocab_size, logits.device)[:drafts]
    return verify_chain(
        target_logits=logits,
        block_tokens=torch.tensor(block.tokens[1:], dtype=torch.long, device=logits.device),
        draft_probs=probs,
        sampler=sampler,
        verify=settings.verify,
        eos_ids=eos_ids,
    )


def accepted_along(nodes: list[int], path: list[int]) -> int:
    """How many of a chain's nodes (in order) lie on the accepted path."""
    kept = 0
    for node, on_path in zip(nodes, path, strict=False):
        if node != on_path:
            break
        kept += 1
    return kept


def tell_proposers(proposers, chains, plan: Plan, block: Block, verdict: Verdict) -> None:
    checked = {HEAD: (plan.head, block.head_nodes), CONTEXT: (plan.context, block.context_nodes)}
    for proposer in proposers:
        chain = chains.get(proposer.name)
        count, nodes = checked[proposer.name]
        if chain is not None and count:
            proposer.observe(chain, checked=count, accepted=accepted_along(nodes, verdict.path))


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


# --- traces ---------------------------------------------------------------------------------


def token_text(tokenizer, token_id: int) -> str | None:
    if tokenizer is None:
        return None
    return tokenizer.decode([token_id])


def token_info(tokenizer, token_id: int, prob: float) -> TokenInfo:
    """A token for a trace: id, text, probability, and whether it is a special token (the end
    of the answer, say), which pictures show as a marker rather than as text."""
    special = tokenizer is not None and token_id in _special_ids(tokenizer)
    return TokenInfo(token_id, token_text(tokenizer, token_id), prob, special)


def _special_ids(tokenizer) -> frozenset[int]:
    cached = getattr(tokenizer, "_shufflelm_special_ids", None)
    if cached is None:
        cached = frozenset(tokenizer.all_special_ids)
        tokenizer._shufflelm_special_ids = cached
    return cached


def build_step_trace(
    model,
    *,
    index: int,
    anchor: tuple[int, float],
    proposers,
    chains: dict[str, Chain],
    plan: Plan,
    block: Block | None,
    verdict: Verdict | None,
    verified: bool,
    timings: dict[str, float],
) -> StepTrace:
    tok = model.tokenizer
    path = verdict.path if verdict is not None else []
    head_proposer = next((p for p in proposers if p.name == HEAD), None)
    head = chains.get(HEAD)
    slots = []
    if head is not None:
        slots = head_slots(model, head_proposer.last, head, plan, block, path, verified)
    context = context_trace(model, chains.get(CONTEXT), plan, block, path)
    emitted = [token_info(tok, anchor[0], anchor[1])]
    sources = [FROM_ANCHOR]
    for node in path:
        emitted.append(drafted_token_info(block, node, slots, head, context))
        sources.append(block.sources[node])
    draft = head_proposer.last if head is not None else None
    return StepTrace(
        index=index,
        anchor=emitted[0],
        slots=slots,
        shuffle_probs=draft.scores.softmax(-1).tolist() if draft is not None else [],
        sinkhorn=None if draft is None or draft.sinkhorn is None else draft.sinkhorn.tolist(),
        block_order=list(draft.block[: plan.head]) if draft is not None else [],
        emitted=emitted,
        forwarded_ids=list(block.tokens) if block is not None else [],
        timings_ms=timings,
        context=context,
        plan=plan_trace(plan, head_rested=bool(head_proposer and head_proposer.rested))
        if chains or (head_proposer and head_proposer.rested)
        else None,
        forwarded_parents=list(block.parents) if block is not None else [],
        emitted_sources=sources,
    )


def head_slots(model, draft, chain: Chain, plan: Plan, block, path, verified) -> list[SlotTrace]:
    """Every slot of the step: its token and candidates, offset, and what became of it."""
    tok = model.tokenizer
    top_probs, top_ids = draft.probs.float().topk(TRACE_TOP_K, dim=-1)  # (K, top)
    top_probs, top_ids = top_probs.cpu().tolist(), top_ids.cpu().tolist()
    drafted = draft.probs.gather(-1, draft.tokens[:, None].to(draft.probs.device))[:, 0].tolist()
    in_chain = {slot: k for k, slot in enumerate(draft.block)}
    on_path = set(path)
    slots = []
    for k, token in enumerate(draft.tokens.tolist()):
        status, accept_prob = draft.statuses[k], None
        if k in in_chain:
            position = in_chain[k]
            accept_prob = chain.accept_probs[position]
            if position >= plan.head:
                status = COST_CUT
            elif not verified:
                status = EMITTED
            else:
                status = ACCEPTED if block.head_nodes[position] in on_path else REJECTED
        slots.append(
            SlotTrace(
                index=k,
                token=token_info(tok, token, float(drafted[k])),
                candidates=[
                    token_info(tok, i, p) for i, p in zip(top_ids[k], top_probs[k], strict=True)
                ],
                keep_prob=float(draft.keep_probs[k]),
                offset=draft.offsets[k],
                status=status,
                accept_prob=accept_prob,
            )
        )
    return slots


def context_trace(model, chain: Chain | None, plan: Plan, block, path) -> ContextTrace | None:
    if chain is None:
        return None
    on_path = set(path)
    statuses = []
    for k in range(len(chain.tokens)):
        if k >= plan.context:
            statuses.append(COST_CUT)
        else:
            statuses.append(ACCEPTED if block.context_nodes[k] in on_path else REJECTED)
    return ContextTrace(
        tokens=[
            token_info(model.tokenizer, t, p)
            for t, p in zip(chain.tokens, chain.accept_probs, strict=True)
        ],
        accept_probs=list(chain.accept_probs),
        statuses=statuses,
        match_length=chain.match_length,
        match_end=chain.match_end,
    )


def drafted_token_info(block: Block, node: int, slots, head: Chain | None, context) -> TokenInfo:
    """The emitted draft at `node`, as its source drafted it."""
    if node in block.head_nodes and head is not None:
        slot = head.slots[block.head_nodes.index(node)]
        return slots[slot].token
    return context.tokens[block.context_nodes.index(node)]


def plan_trace(plan: Plan, *, head_rested: bool) -> PlanTrace:
    return PlanTrace(
        rule=plan.rule,
        head_drafts=plan.head,
        context_drafts=plan.context,
        shared=plan.shared,
        expected_tokens=plan.expected_tokens,
        cost=plan.cost,
        ordinary_rate=plan.ordinary_rate,
        next_rate=plan.next_rate,
        head_rested=head_rested,
        padding=plan.padding,
    )


def model_description(model) -> dict:
    info = dict(model.model_info())
    info.update(
        num_slots=model.config.num_slots,
        eos_token_ids=list(model.config.eos_token_ids),
        device=str(model.device),
        dtype=str(model.dtype).replace("torch.", ""),
    )
    return info


def make_trace(
    model,
    prompt: torch.Tensor,
    settings: GenerationSettings,
    steps: list[StepTrace],
    *,
    output_ids: list[int],
    backbone_forwards: int,
    wall_seconds: float,
    cost_curve: dict | None = None,
) -> GenerationTrace:
    tok = model.tokenizer
    new = len(output_ids)
    return GenerationTrace(
        prompt=None if tok is None else tok.decode(prompt[0].tolist()),
        prompt_ids=prompt[0].tolist(),
        settings=settings.to_dict(),
        model=model_description(model),
        steps=steps,
        output_ids=list(output_ids),
        output_text=None if tok is None else tok.decode(output_ids, skip_special_tokens=True),
        cost_curve=cost_curve,
        totals=Totals(
            new_tokens=new,
            steps=len(steps),
            backbone_forwards=backbone_forwards,
            compression_ratio=new / max(backbone_forwards, 1),
            wall_seconds=wall_seconds,
            tokens_per_second=new / wall_seconds if wall_seconds > 0 else 0.0,
        ),
    )


def trace_of_result(model, prompt, settings, steps, result: DecodeResult) -> GenerationTrace:
    return make_trace(
        model,
        prompt,
        settings,
        steps,
        output_ids=result.output_ids,
        backbone_forwards=result.backbone_forwards,
        wall_seconds=result.wall_seconds,
        cost_curve=result.cost_curve,
    )


# --- public entry points ----------------------------------------------------------------------


def _start(model, input_ids, attention_mask, settings: dict):
    known = GenerationSettings.__dataclass_fields__
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(f"unknown generation settings {unknown}; allowed: {sorted(known)}")
    resolved = GenerationSettings(**settings).resolved(
        num_slots=model.config.num_slots, default_keep_threshold=model.config.keep_threshold
    )
    prompt = prompt_tensor(model, input_ids, attention_mask)
    check_length(model, prompt.shape[1], resolved.max_new_tokens)
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
    **settings,
):
    """Decode one prompt. Returns the (1, prompt+new) sequence, or (sequence, GenerationTrace).
    Runs the same GenerationStream as stream(), to its end; hooks see each step as it is made."""
    hooks = _check_hooks(hooks)
    prompt, resolved = _start(model, input_ids, attention_mask, settings)
    run = GenerationStream(model, prompt, resolved, hooks, record=bool(hooks) or return_trace)
    for _ in run:
        pass
    new = torch.tensor([run.result.output_ids], dtype=torch.long, device=prompt.device)
    sequence = torch.cat([prompt, new], dim=1)
    return (sequence, run.trace) if return_trace else sequence


class GenerationStream:
    """Iterate to get one StepTrace per step; afterwards `.trace` is the GenerationTrace.
    `snapshot()` gives the trace of the steps so far at any time (e.g. after a Stop); its wall
    time is the sum of the steps' own times (the prefill not included). The one driver of the
    loop: generate() runs one to its end, with `record=False` when nobody asked for steps (then
    it yields nothing and keeps no trace)."""

    def __init__(
        self, model, prompt: torch.Tensor, settings: GenerationSettings, hooks, *, record=True
    ):
        self.model, self.prompt, self.settings, self.hooks = model, prompt, settings, hooks
        self.record = record
        self.trace: GenerationTrace | None = None
        self.result: DecodeResult | None = None
        self.steps: list[StepTrace] = []
        self._started: float | None = None

    def __iter__(self) -> Iterator[StepTrace]:
        if self._started is not None:
            raise RuntimeError("a GenerationStream can be iterated once")
        self._started = time.perf_counter()
        loop = decode(self.model, self.prompt, self.settings, record=self.record)
        while True:
            try:
                step = next(loop)
            except StopIteration as stop:
                self.result = stop.value
                break
            if step is None:  # not recording
                continue
            for hook in self.hooks:
                hook(step)
            self.steps.append(step)
            yield step
        if self.record:
            self.trace = trace_of_result(
                self.model, self.prompt, self.settings, self.steps, self.result
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
        )

    def _curve(self) -> dict | None:
        """The curve the running loop plans with (measured before its first step)."""
        curve = self.model.cost_curve
        planned = self.settings.verify and self.settings.max_parallel_tokens > 0
        return curve.to_dict() if planned and curve is not None and self.steps else None


def stream(model, input_ids=None, attention_mask=None, *, hooks: Iterable[Hook] = (), **settings):
    hooks = _check_hooks(hooks)
    prompt, resolved = _start(model, input_ids, attention_mask, settings)
    return GenerationStream(model, prompt, resolved, hooks)
