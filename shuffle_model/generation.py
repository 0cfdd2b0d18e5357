"""The one generation loop, shared by generate(), stream(), the app, the CLI and the benchmark.

One decoding step:
 1. anchor  - the backbone's own next token at h_t (chosen at the end of the previous step)
 2. draft   - the head gives K slots: distribution, drafted token, keep prob, score row
 3. shuffle - each slot gets an offset after the anchor (shuffle.py)
 4. filter  - the contiguous block d_1..d_m of confident, in-range slots (filtering.py)
 5. forward - the backbone runs once over [anchor, d_1..d_m] with its KV cache
 6. verify  - keep the prefix the backbone agrees with; crop the cache (verify.py)
 7. hooks   - a StepTrace goes to every hook; with none registered no per-step record is built
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from .filtering import filter_slots
from .sampling import TokenSampler
from .settings import GenerationSettings
from .shuffle import assign_offsets
from .trace import (
    ACCEPTED,
    EMITTED,
    REJECTED,
    GenerationTrace,
    SlotTrace,
    StepTrace,
    TokenInfo,
    Totals,
)
from .verify import verify_block

TRACE_TOP_K = 5  # candidates recorded per slot
Hook = Callable[[StepTrace], None]


@dataclass
class Draft:
    """One step's drafted slots, on the CPU."""

    tokens: torch.Tensor  # (K,) drafted token per slot
    probs: torch.Tensor  # (K, V) distribution each token was drawn from (on the model device)
    keep_probs: torch.Tensor  # (K,)
    scores: torch.Tensor  # (K, K) shuffle score logits


@dataclass
class DecodeResult:
    output_ids: list[int]  # the new tokens
    steps: int
    backbone_forwards: int
    wall_seconds: float  # generation time, excluding the time the consumer held each step


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


@torch.no_grad()
def decode(
    model, prompt: torch.Tensor, settings: GenerationSettings, *, record: bool
) -> Iterator[StepTrace | None]:
    """The loop. Yields a StepTrace per step (None when not recording); returns DecodeResult."""
    start = time.perf_counter()
    device = model.device
    sampler = TokenSampler(
        temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed, device=device
    )
    eos_ids = model.config.eos_token_ids
    cache = model.new_cache()
    trunk = model.trunk_forward(prompt, cache=cache)
    forwards = 1
    hidden = trunk.hidden[0, -1]  # (H,) h_t of the last prompt token
    anchor_probs = sampler.probs(trunk.logits[0, -1])
    anchor = int(sampler.choose(trunk.logits[0, -1], anchor_probs))
    anchor_prob = float(anchor_probs[anchor])
    output: list[int] = []
    step, paused = 0, 0.0
    while True:
        clock = _Clock(device, enabled=record)
        remaining = settings.max_new_tokens - len(output)
        final = anchor in eos_ids or remaining == 1
        budget = 0 if final else min(settings.max_parallel_tokens, remaining - 1)
        draft = draft_slots(model, hidden, anchor, sampler) if budget > 0 else None
        statuses, block = [], []
        offsets, sinkhorn = [], None
        if draft is not None:
            assignment = assign_offsets(
                settings.shuffle_strategy, draft.scores.numpy(), draft.keep_probs.numpy()
            )
            offsets, sinkhorn = assignment.offsets, assignment.sinkhorn
            kept = filter_slots(
                offsets,
                draft.keep_probs.tolist(),
                keep_threshold=settings.keep_threshold,
                max_offset=budget,
            )
            statuses, block = kept.statuses, kept.block
        clock.lap("draft")

        emitted = [anchor]
        forwarded: list[int] = []
        if not final:
            block_tokens = draft.tokens[block] if block else torch.empty(0, dtype=torch.long)
            forwarded = [anchor, *block_tokens.tolist()]
            trunk = model.trunk_forward(torch.tensor([forwarded], device=device), cache=cache)
            forwards += 1
            clock.lap("forward")
            verdict = verify_block(
                target_logits=trunk.logits[0],
                block_tokens=block_tokens.to(device),
                draft_probs=draft.probs[block] if block else None,
                sampler=sampler,
                verify=settings.verify,
                eos_ids=eos_ids,
            )
            kept_drafts = verdict.accepted
            emitted += block_tokens[:kept_drafts].tolist()
            if kept_drafts < len(block):
                cache.crop(-(len(block) - kept_drafts))  # forget the rejected drafts
            hidden = trunk.hidden[0, kept_drafts]
            for position, slot in enumerate(block):
                keep = ACCEPTED if settings.verify else EMITTED
                statuses[slot] = keep if position < kept_drafts else REJECTED
            clock.lap("verify")
        output += emitted
        suspended = time.perf_counter()
        if record:
            yield build_step_trace(
                model,
                index=step,
                anchor=(emitted[0], anchor_prob),
                draft=draft,
                offsets=offsets,
                statuses=statuses,
                sinkhorn=sinkhorn,
                block=block,
                emitted=emitted,
                forwarded=forwarded,
                timings=clock.laps,
            )
        else:
            yield None
        paused += time.perf_counter() - suspended  # the consumer's time is not generation time
        step += 1
        if final or any(t in eos_ids for t in emitted) or len(output) >= settings.max_new_tokens:
            break
        anchor, anchor_prob = verdict.next_anchor, verdict.next_anchor_prob
    return DecodeResult(output, step, forwards, time.perf_counter() - start - paused)


def draft_slots(model, hidden: torch.Tensor, anchor: int, sampler: TokenSampler) -> Draft:
    anchor_ids = torch.tensor(anchor, device=hidden.device)
    out = model.draft(hidden, anchor_ids)  # logits (K, N), scores (K, K), keep (K,)
    probs = sampler.probs(out.logits)  # (K, N)
    tokens = sampler.choose(out.logits, probs)  # (K,) columns of the draft vocabulary
    if out.vocab is not None:  # back to token ids, and distributions over the whole vocabulary
        tokens = out.vocab[tokens]
        full = probs.new_zeros(probs.shape[0], model.config.vocab_size)
        probs = full.scatter_(1, out.vocab.expand(probs.shape[0], -1), probs)
    return Draft(
        tokens=tokens.cpu(),
        probs=probs,
        keep_probs=out.keep_logits.float().sigmoid().cpu(),
        scores=out.shuffle_scores.float().cpu(),
    )


class _Clock:
    """Per-phase wall times of a step; synchronises CUDA only while recording."""

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


# --- traces -----------------------------------------------------------------------------------


def token_text(tokenizer, token_id: int) -> str | None:
    if tokenizer is None:
        return None
    return tokenizer.decode([token_id])


def build_step_trace(
    model,
    *,
    index: int,
    anchor: tuple[int, float],
    draft: Draft | None,
    offsets: list[int | None],
    statuses: list[str],
    sinkhorn,
    block: list[int],
    emitted: list[int],
    forwarded: list[int],
    timings: dict[str, float],
) -> StepTrace:
    tok = model.tokenizer
    slots, shuffle_probs = [], []
    if draft is not None:
        top_probs, top_ids = draft.probs.float().topk(TRACE_TOP_K, dim=-1)  # (K, top)
        top_probs, top_ids = top_probs.cpu().tolist(), top_ids.cpu().tolist()
        drafted_probs = draft.probs.gather(-1, draft.tokens[:, None].to(draft.probs.device))
        for k, token in enumerate(draft.tokens.tolist()):
            slots.append(
                SlotTrace(
                    index=k,
                    token=TokenInfo(token, token_text(tok, token), float(drafted_probs[k])),
                    candidates=[
                        TokenInfo(i, token_text(tok, i), p)
                        for i, p in zip(top_ids[k], top_probs[k], strict=True)
                    ],
                    keep_prob=float(draft.keep_probs[k]),
                    offset=offsets[k],
                    status=statuses[k],
                )
            )
        shuffle_probs = draft.scores.softmax(-1).tolist()
    emitted_info = [TokenInfo(emitted[0], token_text(tok, emitted[0]), anchor[1])]
    by_slot = {slot: s for slot, s in enumerate(slots)}
    for position, token in enumerate(emitted[1:]):
        drafted = by_slot[block[position]].token
        emitted_info.append(TokenInfo(token, drafted.text, drafted.prob))
    return StepTrace(
        index=index,
        anchor=emitted_info[0],
        slots=slots,
        shuffle_probs=shuffle_probs,
        sinkhorn=None if sinkhorn is None else sinkhorn.tolist(),
        block_order=list(block),
        emitted=emitted_info,
        forwarded_ids=forwarded,
        timings_ms=timings,
    )


def model_description(model) -> dict:
    info = dict(model.model_info())
    info.update(
        num_slots=model.config.num_slots,
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
    """Decode one prompt. Returns the (1, prompt+new) sequence, or (sequence, GenerationTrace)."""
    hooks = _check_hooks(hooks)
    prompt, resolved = _start(model, input_ids, attention_mask, settings)
    record = bool(hooks) or return_trace
    loop = decode(model, prompt, resolved, record=record)
    steps: list[StepTrace] = []
    while True:
        try:
            step = next(loop)
        except StopIteration as stop:
            result: DecodeResult = stop.value
            break
        if step is not None:
            for hook in hooks:
                hook(step)
            if return_trace:
                steps.append(step)
    new = torch.tensor([result.output_ids], dtype=torch.long, device=prompt.device)
    sequence = torch.cat([prompt, new], dim=1)
    if return_trace:
        return sequence, trace_of_result(model, prompt, resolved, steps, result)
    return sequence


class GenerationStream:
    """Iterate to get one StepTrace per step; afterwards `.trace` is the GenerationTrace.
    `snapshot()` gives the trace of the steps so far at any time (e.g. after a Stop); its wall
    time is the sum of the steps' own times (the prefill not included)."""

    def __init__(self, model, prompt: torch.Tensor, settings: GenerationSettings, hooks):
        self.model, self.prompt, self.settings, self.hooks = model, prompt, settings, hooks
        self.trace: GenerationTrace | None = None
        self.steps: list[StepTrace] = []
        self._started: float | None = None

    def __iter__(self) -> Iterator[StepTrace]:
        if self._started is not None:
            raise RuntimeError("a GenerationStream can be iterated once")
        self._started = time.perf_counter()
        loop = decode(self.model, self.prompt, self.settings, record=True)
        while True:
            try:
                step = next(loop)
            except StopIteration as stop:
                result = stop.value
                break
            for hook in self.hooks:
                hook(step)
            self.steps.append(step)
            yield step
        self.trace = trace_of_result(self.model, self.prompt, self.settings, self.steps, result)

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
            backbone_forwards=1 + sum(1 for s in self.steps if s.forwarded_ids),
            wall_seconds=elapsed,
        )


def stream(model, input_ids=None, attention_mask=None, *, hooks: Iterable[Hook] = (), **settings):
    hooks = _check_hooks(hooks)
    prompt, resolved = _start(model, input_ids, attention_mask, settings)
    return GenerationStream(model, prompt, resolved, hooks)
