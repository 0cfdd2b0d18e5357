"""Continuous batching for distillation on a CPU: a pool of rows decodes together, and a row
that ends (EOS or its token budget) is refilled with the next prompt at once.

`model.generate` on a fixed batch runs every row until the longest answer ends and pads every
prompt to the longest one; with answers of 10 to 256 tokens most of that work is thrown away.
Here each row has its own start column in one preallocated key/value buffer per layer (no
`torch.cat` of the whole cache at every step), new prompts are prefilled a few at a time and
written into the free rows, and a step attends only to the columns some live row still uses.
Greedy rows give the tokens `generate` gives; sampled rows use the same temperature / top-p
warpers. Works with Hugging Face decoder models built like Llama (`model.model.layers`,
`embed_tokens`, `norm`, `rotary_emb`; SmolLM2, Llama, Qwen2, Mistral).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper


@dataclass
class Job:
    key: str  # unique name of the request (a resumed run skips keys it already has)
    prompt_ids: list[int]  # the tokens to continue (chat-templated prompt)
    sampled: bool  # True: temperature / top-p sampling; False: greedy
    max_new_tokens: int  # the answer's token budget
    payload: dict = field(default_factory=dict)  # the caller's own data, handed back
    temperature: float = 0.7  # of a sampled job
    top_p: float = 0.9  # nucleus of a sampled job


@dataclass
class Finished:
    job: Job  # the request
    answer_ids: list[int]  # the continuation, EOS included when it stopped there


JobSource = Callable[[int], list[Job]]  # n -> up to n new jobs; [] when none are ready


class KVBuffer:
    """Keys and values of the pool's rows: one (rows, kv_heads, capacity, head_dim) buffer per
    layer and per kind. Column c holds the same time step for every row; the attention layers
    call `update`, which writes the new column(s) and returns the window [lo, now)."""

    def __init__(self, layers: int, rows: int, heads: int, head_dim: int, capacity: int, *, like):
        shape = (rows, heads, capacity, head_dim)
        self.keys = [like.new_zeros(shape) for _ in range(layers)]
        self.values = [like.new_zeros(shape) for _ in range(layers)]
        self.lo = 0  # first column the current forward attends to
        self.now = 0  # columns in use; a decode step writes column `now`

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def update(self, key, value, layer_idx, *args, **kwargs):
        width = key.shape[2]
        self.keys[layer_idx][:, :, self.now : self.now + width] = key
        self.values[layer_idx][:, :, self.now : self.now + width] = value
        end = self.now + width
        return (
            self.keys[layer_idx][:, :, self.lo : end],
            self.values[layer_idx][:, :, self.lo : end],
        )

    def shift(self, columns: int) -> None:
        """Move every column by `columns` (negative: left, dropping the first ones)."""
        for buffer in (*self.keys, *self.values):
            if columns >= 0:
                buffer[:, :, columns : columns + self.now] = buffer[:, :, : self.now].clone()
            else:
                buffer[:, :, : self.now + columns] = buffer[:, :, -columns : self.now].clone()
        self.now += columns

    def add_rows(self, count: int) -> None:
        for buffers in (self.keys, self.values):
            for i, buffer in enumerate(buffers):
                extra = buffer.new_zeros((count, *buffer.shape[1:]))
                buffers[i] = torch.cat([buffer, extra])

    def select_rows(self, rows: torch.Tensor) -> None:
        for buffers in (self.keys, self.values):
            for i, buffer in enumerate(buffers):
                buffers[i] = buffer[rows].contiguous()


class _Collect:
    """A throwaway cache for a prefill: keeps each layer's keys and values as they come."""

    def __init__(self, layers: int):
        self.keys: list = [None] * layers
        self.values: list = [None] * layers

    def update(self, key, value, layer_idx, *args, **kwargs):
        self.keys[layer_idx], self.values[layer_idx] = key, value
        return key, value


def _parts(model):
    """The pieces of a Llama-like causal LM the pool drives itself."""
    base = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if base is None or not all(hasattr(base, name) for name in needed):
        raise TypeError(f"{type(model).__name__} is not a Llama-like decoder model")
    return base, model.get_output_embeddings()


class RowPool:
    """The state of the decoding pool: which job each row serves and where its columns start."""

    def __init__(
        self,
        model,
        *,
        rows: int,
        capacity: int,
        eos_ids: set[int],
        seed: int,
    ):
        self.model = model
        self.base, self.lm_head = _parts(model)
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // (
            config.num_attention_heads
        )
        weight = self.lm_head.weight
        self.buffer = KVBuffer(
            config.num_hidden_layers,
            rows,
            getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            head_dim,
            capacity,
            like=weight.new_zeros(()),
        )
        self.jobs: list[Job | None] = [None] * rows  # the job of each row; None: free
        self.answers: list[list[int]] = [[] for _ in range(rows)]
        self.start = torch.zeros(rows, dtype=torch.long)  # first column of each row's tokens
        self.position = torch.zeros(rows, dtype=torch.long)  # position id of the next token
        self.eos_ids = eos_ids
        self.generator = torch.Generator().manual_seed(seed)
        self.device = weight.device

    @property
    def rows(self) -> int:
        return len(self.jobs)

    def free_rows(self) -> list[int]:
        return [r for r, job in enumerate(self.jobs) if job is None]

    def live_rows(self) -> list[int]:
        return [r for r, job in enumerate(self.jobs) if job is not None]

    def choose(self, logits: torch.Tensor, jobs: list[Job]) -> list[int]:
        """One next token per row of (n, V) logits: argmax for greedy jobs, a temperature /
        top-p draw (Hugging Face's warpers) for sampled ones."""
        tokens = logits.argmax(-1)
        groups: dict[tuple[float, float], list[int]] = {}
        for i, job in enumerate(jobs):
            if job.sampled:
                groups.setdefault((job.temperature, job.top_p), []).append(i)
        for (temperature, top_p), pick in groups.items():
            warped = logits[pick].float()
            warped = TemperatureLogitsWarper(temperature)(None, warped)
            if top_p < 1.0:
                warped = TopPLogitsWarper(top_p)(None, warped)
            drawn = torch.multinomial(warped.softmax(-1), 1, generator=self.generator)
            tokens[pick] = drawn.squeeze(1).to(tokens.device)
        return tokens.tolist()

    def layers_forward(self, ids, mask, positions, cache):
        """The decoder stack over (n, T) ids with a (n, 1, T, W) boolean mask; the final
        normalised hidden state of the last column -> (n, V) logits."""
        hidden = self.base.embed_tokens(ids)
        embeddings = self.base.rotary_emb(hidden, position_ids=positions)
        for layer in self.base.layers:
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_embeddings=embeddings,
                position_ids=positions,
                cache=cache,
            )
            if isinstance(hidden, tuple):  # older transformers return (hidden, ...)
                hidden = hidden[0]
        return self.lm_head(self.base.norm(hidden[:, -1]))

    def admit(self, jobs: list[Job]) -> list[Finished]:
        """Prefill `jobs` together (left-padded to the longest) into free rows; returns those
        that end at their first token."""
        rows = self.free_rows()[: len(jobs)]
        width = max(len(job.prompt_ids) for job in jobs)
        ids = torch.zeros((len(jobs), width), dtype=torch.long)
        real = torch.zeros((len(jobs), width), dtype=torch.bool)
        for i, job in enumerate(jobs):
            ids[i, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
            real[i, width - len(job.prompt_ids) :] = True
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        eye = torch.eye(width, dtype=torch.bool)  # padding attends to itself: no NaN rows
        mask = (causal & real[:, None, :]) | eye
        positions = (real.cumsum(1) - 1).clamp(min=0)
        collect = _Collect(len(self.base.layers))
        logits = self.layers_forward(
            ids.to(self.device), mask[:, None].to(self.device), positions.to(self.device), collect
        )
        self.make_room(width)
        buffer, index = self.buffer, torch.tensor(rows)
        for layer in range(len(collect.keys)):
            buffer.keys[layer][index, :, buffer.now - width : buffer.now] = collect.keys[layer]
            buffer.values[layer][index, :, buffer.now - width : buffer.now] = collect.values[layer]
        for row, job in zip(rows, jobs, strict=True):
            self.jobs[row], self.answers[row] = job, []
            self.start[row] = buffer.now - len(job.prompt_ids)
            self.position[row] = len(job.prompt_ids)
        return self.extend(rows, self.choose(logits, jobs))

    def make_room(self, width: int) -> None:
        """Columns [now - width, now) for a prefill and one free column after them: drop the
        columns no live row uses, and shift right when `now` is smaller than `width`."""
        buffer = self.buffer
        live = self.live_rows()
        first = min((int(self.start[r]) for r in live), default=buffer.now)
        if first > 0 and (first >= buffer.capacity // 4 or buffer.now + 1 > buffer.capacity):
            buffer.shift(-first)
            self.start -= first
        if buffer.now < width:
            grow = width - buffer.now
            if buffer.now + grow + 1 > buffer.capacity:
                raise ValueError(f"a prompt of {width} tokens does not fit the buffer")
            buffer.shift(grow)
            self.start += grow

    def extend(self, rows: list[int], tokens: list[int]) -> list[Finished]:
        """Append one token to each row; rows that reach EOS or their budget are freed."""
        done = []
        for row, token in zip(rows, tokens, strict=True):
            job, answer = self.jobs[row], self.answers[row]
            answer.append(token)
            if token in self.eos_ids or len(answer) >= job.max_new_tokens:
                done.append(Finished(job, answer))
                self.jobs[row] = None
        return done

    def step(self) -> list[Finished]:
        """One decode step for every row (free rows compute a throwaway column)."""
        buffer = self.buffer
        live = self.live_rows()
        if buffer.now + 1 > buffer.capacity:
            self.make_room(0)
            if buffer.now + 1 > buffer.capacity:
                raise ValueError("the key/value buffer is full: raise the capacity")
        buffer.lo = min(int(self.start[r]) for r in live)
        last = torch.tensor([self.answers[r][-1] if self.jobs[r] else 0 for r in range(self.rows)])
        columns = torch.arange(buffer.lo, buffer.now + 1)
        mask = columns[None, :] >= self.start[:, None]  # (rows, W)
        alive = torch.tensor([job is not None for job in self.jobs])
        mask &= alive[:, None] | (columns[None, :] == buffer.now)
        logits = self.layers_forward(
            last[:, None].to(self.device),
            mask[:, None, None].to(self.device),
            self.position[:, None].to(self.device),
            buffer,
        )
        buffer.now += 1
        buffer.lo = 0
        self.position += 1
        tokens = self.choose(logits[live], [self.jobs[r] for r in live])
        return self.extend(live, tokens)

    def grow(self, count: int) -> None:
        """Add `count` free rows (after a shrink, when jobs come again)."""
        if count <= 0:
            return
        self.buffer.add_rows(count)
        self.jobs += [None] * count
        self.answers += [[] for _ in range(count)]
        self.start = torch.cat([self.start, torch.zeros(count, dtype=torch.long)])
        self.position = torch.cat([self.position, torch.zeros(count, dtype=torch.long)])

    def shrink(self) -> None:
        """Keep only the live rows (no job is ready and half the pool is idle)."""
        live = self.live_rows()
        index = torch.tensor(live)
        self.buffer.select_rows(index)
        self.jobs = [self.jobs[r] for r in live]
        self.answers = [self.answers[r] for r in live]
        self.start, self.position = self.start[index], self.position[index]


def prefill_groups(jobs: list[Job], *, waste: float) -> list[list[Job]]:
    """Jobs sorted by prompt length and cut into groups whose left padding to the group's
    longest prompt is at most `waste` of the prefilled tokens (0: one job per group)."""
    groups: list[list[Job]] = []
    for job in sorted(jobs, key=lambda j: len(j.prompt_ids)):
        if groups:
            group = groups[-1]
            padded = len(job.prompt_ids) * (len(group) + 1)
            real = sum(len(j.prompt_ids) for j in group) + len(job.prompt_ids)
            if padded - real <= waste * padded:
                group.append(job)
                continue
        groups.append([job])
    return groups


@torch.no_grad()
def generate_stream(
    model,
    next_jobs: JobSource,
    *,
    rows: int = 32,
    refill_at: int = 4,
    capacity: int = 1024,
    eos_ids: set[int] | None = None,
    seed: int = 0,
    prefill_waste: float = 0.1,
) -> Iterator[Finished]:
    """Answer jobs as they come from `next_jobs`, up to `rows` at a time, yielding each when it
    ends. Free rows are refilled once `refill_at` of them are free (or nothing is decoding),
    prefilled in groups of similar length (`prefill_waste`: the padding share a group may have);
    when `next_jobs` has nothing ready and half the pool is idle, the idle rows are dropped
    (and come back when jobs do). The stream ends when nothing decodes and nothing is ready."""
    if eos_ids is None:
        eos = model.generation_config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
    pool = RowPool(
        model,
        rows=rows,
        capacity=capacity,
        eos_ids=eos_ids,
        seed=seed,
    )
    while True:
        live = len(pool.live_rows())
        wanted = rows - live
        if wanted and (wanted >= min(refill_at, rows) or not live):
            jobs = next_jobs(wanted)
            for job in jobs:
                if len(job.prompt_ids) + 1 > capacity:
                    raise ValueError(f"job {job.key}: its prompt does not fit the buffer")
            if jobs:
                pool.grow(len(jobs) - len(pool.free_rows()))
                for group in prefill_groups(jobs, waste=prefill_waste):
                    yield from pool.admit(group)
                continue
            if not live:
                return
            if live <= pool.rows // 2:
                pool.shrink()
        yield from pool.step()
