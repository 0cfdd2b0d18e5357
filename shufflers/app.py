"""ShuffleLM web app: watch a language model draft, shuffle, filter and verify tokens.

    shufflelm app [--model tiny]   # installed: http://127.0.0.1:7860 (GRADIO_SERVER_NAME / _PORT)
    python app.py                  # in the repository (the Hugging Face Space's app_file)

It lives here, in the wheel, because it imports both shuffle_model and viz (dependencies point
one way: app -> viz -> shuffle_model); the repository's app.py makes `import app` this module.
In Gradio's order: the handlers (module-level functions, testable without a server), then
the layout, then the wiring. The model comes from shuffle_model (loaded lazily on first use;
`build_demo(LazyModel.from_spec("tiny"))`, or SHUFFLELM_MODEL=tiny for `python app.py`, picks
a tiny random model), the pictures from viz; the settings are validated by the library.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse
import errno
import html
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import gradio as gr
from starlette.middleware import Middleware

import viz
from shuffle_model import STRATEGIES, GenerationSettings, GenerationTrace, TraceError
from shuffle_model.decoding.cost import ensure_cost_curve
from shuffle_model.decoding.lossless import compare
from shuffle_model.decoding.planning import COST, FIXED
from shuffle_model.decoding.settings import DRAFT_SOURCES, max_drafts
from shuffle_model.model.backbone import BackboneNotFound
from shuffle_model.model.chat import encode_prompt
from shuffle_model.model.devices import precision_note
from shuffle_model.model.runtime import LazyModel
from shuffle_model.resources import ASSETS
from viz.numbers import per_pass_text, run_numbers
from viz.page import (
    STEP_FIGURES,
    counters,
    last_drafting_step,
    step_caption,
    step_figure,
    step_view,
    text_html,
)

from .page_script import PageScript

EXAMPLES_DIR = ASSETS / "examples"
MAX_PROMPT_CHARS = 20_000
MAX_TRACE_BYTES = 5 * 2**20
MAX_NEW_TOKENS = 256  # the service's cap on one request's work (the library's is the context)
QUEUE_SIZE = 16
CONCURRENCY = 2
# Seconds Gradio's queue waits before it looks again for an event to start, and for progress to
# send, while it has none (Gradio's own on Linux: 0.001 and 0.01, its own on Windows: 0.05 and
# 0.1). At a thousand looks a second an idle server took 66-80 ms of CPU a second here, taken
# from the model on a shared machine; at these, 4-8. An event starts at most QUEUE_LOOK later.
QUEUE_LOOK = 0.02
PROGRESS_LOOK = 0.1
PLAY_DELAY = 0.6  # seconds per step when replaying
PACK_VALUES = "(...values) => [values]"  # the page's run inputs as one list (its one output)
# While a run streams, the page is updated at the pace a person follows, not at the model's:
# seconds a step's text and counters may wait on the server (a page shows them within 250 ms: the
# rest is for delivery and drawing)
TEXT_LATE = 0.2
# the most seconds between updates of the step shown: its caption, the slider and the open tab's
# picture, together, so that they describe one step (the closed tabs: when opened, or at the end)
PICTURE_EVERY = 1.0
BLOCK_LENGTHS = [
    ("cost-aware: the drafts worth their time on this machine", COST),
    ("fixed: every draft the filter keeps", FIXED),
]
SOURCE_NAMES = {
    "head+context": "head + context",
    "head": "head only (the shuffle head)",
    "context": "context only (copied from earlier text)",
    "head+context+corpus": "head + context + corpus",
}
DRAFT_SOURCE_CHOICES = [(SOURCE_NAMES.get(source, source), source) for source in DRAFT_SOURCES]
KEEP_AUTO = "auto"  # the library's default keep threshold (keep_threshold=None)
KEEP_CHOICES = [(KEEP_AUTO, KEEP_AUTO)] + [(f"{k / 10:.1f}", round(k / 10, 1)) for k in range(11)]
KEEP_LABEL = (
    "Keep threshold (auto: 0 under the cost-aware rule, which weighs every draft; the head's "
    "own default under the fixed rule; or pick or type a number in [0, 1])"
)
EXAMPLE_PROMPTS = [
    "Explain how a rainbow forms, in three sentences.",
    "Write a short poem about the sea at night.",
    "Write a Python function that checks whether a number is prime.",
    "What are three tips for learning a new language?",
    "Summarize the story of Romeo and Juliet in two sentences.",
]
HOW_IT_WORKS = """
**How it works** — one backbone pass per step, often several tokens out; the pictures show
one step at a time:

1. **Anchor** — the backbone picks the next token as usual (⚓ blue in the text).
2. **Draft, from two sources** — the *shuffle head* guesses K more tokens *at once*, as an
   unordered set of slots (the *draft candidates* heatmap: each slot's best guesses). The
   *context* looks for the last few tokens earlier in the prompt and the answer; if they
   appeared before, what followed them there is a second guess (↩ wine in the text).
3. **Shuffle** — each slot predicts where its token belongs after the anchor (the *shuffle*
   heatmap; outlined squares are the offsets chosen).
4. **Filter and plan** — slots with clashing offsets or gaps are dropped, so the head's
   guesses form a chain. Every guess has an estimated chance of being right, and checking
   more tokens in one pass takes a little longer (this machine's *cost curve*). The step
   checks as many guesses as give the most tokens per unit of time — sometimes none, an
   ordinary step. Guesses that would cost more than they are likely to give are marked ✂
   (the *filter and plan* chart); the caption says what was decided, and why. Beside the
   head's chain come its 2nd and 3rd choices for the first offsets: the guesses form a
   *tree*, all of its branches checked in the same pass (the *draft tree*: the bold path is
   what the backbone accepted, ◆ an alternative).
5. **Verify** — one backbone pass over the anchor and the chosen guesses (both chains side
   by side, when both are worth it) keeps the longest run it agrees with (✓ green from the
   head, ↩ wine from the context); the rest is rejected. Verified text is exactly what
   ordinary decoding writes. Switch *verify* off for pure parallel mode (the head's guesses
   emitted unchecked, sky blue).

■ *end of answer* marks where the model ended its answer. Under *Settings*: *block length*
**fixed** checks every guess the filter keeps, as ShuffleLM first did; *draft source* picks the
head, the context, or both.
"""
# The live view stays on the first screen: the output text keeps one height and scrolls (nothing
# below it moves while a run streams), and on a narrow screen (a phone) the explanation follows
# the pictures instead of preceding them.
CSS = """
#output-text .spans { height: 6.4em; overflow-y: auto; white-space: pre-wrap;
  overflow-wrap: anywhere; line-height: 1.6; }
#output-text .legend { display: flex; flex-wrap: wrap; gap: 4px; margin: 1.6em 0 0.4em;
  font-size: 0.85em; }
#output-text .span { border-radius: 4px; padding: 0 2px; }
#output-text .legend .span { padding: 1px 6px; white-space: nowrap; }
@media (max-width: 767px) {
  #story { flex-direction: column; }
  #controls { display: contents; }
  #controls > * { order: 0; }
  #live-view { order: 1; }
  #how-it-works { order: 2; }
}
"""


class UserError(gr.Error):
    """A bad input or setting: shown to the user as a message, never as a traceback."""


SKIP = gr.skip()  # leave a component as it is


class Page(NamedTuple):
    """What a run or a loaded trace updates, by name; the event outputs are these components,
    in this order (build_demo makes the Page of components)."""

    status: object = SKIP  # counters, or what is happening
    text: object = SKIP  # the output, coloured by origin
    caption: object = SKIP  # the step's decision, in words
    shuffle: object = SKIP  # the step's shuffle heatmap
    drafts: object = SKIP  # the step's draft candidates
    filter: object = SKIP  # the step's filter-and-plan chart
    tree: object = SKIP  # the tree of drafts the step checked
    step: object = SKIP  # the step slider
    trace: object = SKIP  # the GenerationTrace (state)
    trace_file: object = SKIP  # the trace's JSON, for download
    overview: object = SKIP  # the whole run
    cost: object = SKIP  # the machine's cost curve


VIEW = ("caption", "shuffle", "drafts", "filter", "tree")  # one step's view: scrubbing and playing


@dataclass
class Watching:
    """What one visitor's page is showing, shared by a streaming run and the tab events (a
    gr.State, passed by reference): the open picture tab, and the running step."""

    tab: str = STEP_FIGURES[0]  # the open picture tab (PLOT_TABS' names)
    running: bool = False  # a run is streaming
    step: object = None  # its latest StepTrace
    settings: dict = field(default_factory=dict)  # its settings (the filter chart reads them)


class Pacer:
    """Which updates are due while a run streams. A run can send only when a step arrives, so
    an update goes out when waiting for the next step (expected to take as long as the last one)
    would leave the oldest step not yet shown more than TEXT_LATE seconds behind, or the step
    shown (caption, slider, the open tab's picture) more than PICTURE_EVERY seconds old; the
    first step gets both. A step's view always comes with the text."""

    def __init__(self):
        self.last_step = None  # when the latest step arrived
        self.unsent = None  # when the oldest step not yet sent arrived
        self.picture_at = None  # when the step shown was sent
        self.updates = 0  # pages sent while streaming
        self.seconds = 0.0  # the server's time spent making them

    def due(self, now: float) -> tuple[bool, bool]:
        next_step = now + (0.0 if self.last_step is None else now - self.last_step)
        self.last_step = now
        self.unsent = now if self.unsent is None else self.unsent
        first = self.picture_at is None
        picture = first or next_step - self.picture_at > PICTURE_EVERY
        text = picture or next_step - self.unsent > TEXT_LATE
        self.unsent = None if text else self.unsent
        self.picture_at = now if picture else self.picture_at
        return text, picture


# --- helpers of the handlers --------------------------------------------------------------------


def new_request_dir() -> Path:
    """A fresh temporary directory per request; file names never come from user input."""
    return Path(tempfile.mkdtemp(prefix="shufflelm-"))


def request_file(name: str, write: Callable[[Path], object]) -> Path:
    """The file `write(path)` makes in a fresh request directory. On an error (OSError when the
    disk is full or not writable) the directory goes again, and the error goes on."""
    directory = new_request_dir()
    try:
        write(directory / name)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory / name


def disk_trouble(error: OSError) -> str:
    """Why a file for the user could not be written, in words: no path, no traceback."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the server's temporary folder is full"
    if isinstance(error, PermissionError) or error.errno == errno.EROFS:
        return "the server's temporary folder is not writable"
    return f"the server could not write it ({error.strerror or type(error).__name__})"


def whole(value):
    """A slider's or number box's whole number as an int (a float like 24.0 comes through the
    API); anything else unchanged, for the library to name in its message."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("The prompt is empty: type something for the model to answer.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(
            f"The prompt is {len(prompt):,} characters long; the limit is {MAX_PROMPT_CHARS:,}."
        )
    # NUL and other controls stay text; lone surrogates become U+FFFD in chat.encode_text
    return prompt


def keep_setting(keep):
    """The keep-threshold box: None for "auto" (the library's default), a number for a number's
    text; anything else as it came, for the library to refuse by name."""
    if keep is None or (isinstance(keep, str) and keep.strip().lower() in ("", KEEP_AUTO)):
        return None
    try:
        return float(keep)
    except (TypeError, ValueError):
        return keep


def generation_settings(
    max_new_tokens,
    max_parallel_tokens,
    shuffle_strategy,
    temperature,
    top_p,
    keep_threshold,
    verify,
    seed,
    block_length=COST,
    draft_source=DRAFT_SOURCES[0],
    *,
    config,
) -> dict:
    """The page's settings (named as generate() names them: the API's names) as generate()
    settings, checked once, by the library (GenerationSettings.resolved with the model's config:
    K, the head's keep threshold)."""
    max_new_tokens = whole(max_new_tokens)
    if isinstance(max_new_tokens, int) and max_new_tokens > MAX_NEW_TOKENS:
        raise UserError(f"max new tokens: at most {MAX_NEW_TOKENS} per request here")
    raw = GenerationSettings(
        max_new_tokens=max_new_tokens,
        max_parallel_tokens=whole(max_parallel_tokens),
        shuffle_strategy=shuffle_strategy,
        temperature=temperature,
        top_p=top_p,
        keep_threshold=keep_setting(keep_threshold),
        verify=verify,
        seed=None if seed in (None, "") else whole(seed),
        block_length=block_length,
        draft_source=draft_source,
    )
    try:
        resolved = raw.resolved(
            num_slots=config.num_slots, default_keep_threshold=config.default_keep_threshold
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    return resolved.to_dict()


def drafts_slider(num_slots: int, **extra) -> dict:
    """The max-drafts slider's range for a head with num_slots."""
    most = max_drafts(num_slots)
    label = (
        f"Max drafts per step (up to {most}: {num_slots} head slots + {most - num_slots} "
        "context drafts; 0 = ordinary decoding)"
    )
    return dict(minimum=0, maximum=most, value=most, step=1, label=label, **extra)


def needs_cost_curve(model, settings: dict) -> bool:
    """Whether this run plans with a cost curve the model has not measured yet."""
    planned = settings["verify"] and settings["max_parallel_tokens"] > 0
    return planned and getattr(model, "cost_curve", None) is None


def markdown_text(text: str) -> str:
    """Text (token strings included) shown literally in Markdown: HTML escaped, and Markdown's
    own punctuation behind backslashes."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", html.escape(text, quote=False))


def sameness(lm, trace: GenerationTrace, fast: list[int], plain: list[int]) -> str:
    """Whether the two outputs agree, in the terms of the guarantee
    (shuffle_model.decoding.lossless)."""
    found = compare(lm, trace.prompt_ids, fast, plain)
    if found.identical:
        return "The two texts are **identical**."
    if not trace.settings.get("verify", True):
        return "The texts differ: pure parallel mode emits drafts unchecked."
    if trace.settings.get("temperature", 0) > 0:
        return "The texts differ: sampling draws other tokens (with the same distribution)."
    note = (
        " — a near-tie of half precision, within the guarantee"
        if found.within_guarantee
        else " — **beyond the guarantee: please report it**"
    )
    return f"The texts {markdown_text(found.describe(lm.tokenizer))}{note}."


def step_page(trace: GenerationTrace, index: int, *, running: bool) -> Page:
    """The counters, the text and one step's view of a trace."""
    view = step_view(trace, index)
    return Page(
        status=counters(trace, running=running),
        text=text_html(trace),
        caption=view.caption,
        shuffle=view.shuffle,
        drafts=view.drafts,
        filter=view.filter,
        tree=view.tree,
        step=gr.Slider(minimum=0, maximum=max(len(trace.steps) - 1, 1), value=view.index, step=1),
    )


def trace_download(trace: GenerationTrace) -> str | None:
    """The trace's JSON file for download; None (no file, a warning on the page) when the server
    cannot write it: the run is shown all the same, and the next one tries again."""
    try:
        return str(request_file("trace.json", trace.save))
    except OSError as error:
        gr.Warning(f"The trace could not be saved for download: {disk_trouble(error)}.")
        return None


def trace_page(trace: GenerationTrace, index: int = 0) -> Page:
    """The whole page for a finished trace: a step, the trace file and the run's charts."""
    return step_page(trace, index, running=False)._replace(
        trace=trace,
        trace_file=trace_download(trace),
        overview=viz.overview(trace),
        cost=viz.cost_curve_chart(trace),
    )


def read_trace(path: Path) -> GenerationTrace:
    size = path.stat().st_size
    if size > MAX_TRACE_BYTES:
        raise UserError(
            f"The trace file is {size / 2**20:.1f} MB; the limit is "
            f"{MAX_TRACE_BYTES / 2**20:.0f} MB."
        )
    try:
        trace = GenerationTrace.from_json(path.read_bytes())
    except TraceError as error:
        raise UserError(f"That file is not a ShuffleLM trace: {error}") from None
    if not trace.steps:
        raise UserError("That trace has no steps to show.")
    return trace


def loaded_model(runtime: LazyModel):
    try:
        return runtime.get()
    except BackboneNotFound as error:
        raise gr.Error(str(error)) from None


def step_index(trace, index) -> int:
    if trace is None:
        raise UserError("Nothing to show yet: generate something or load a trace.")
    index = whole(index)
    if not isinstance(index, int) or index < 0:
        raise UserError(f"step must be a whole number >= 0; got {index!r}")
    return index


# --- handlers -----------------------------------------------------------------------------------


def generate(runtime: LazyModel, watching: Watching, prompt, chat, **settings):
    """Stream a generation: paced pages while it runs (Pacer: the text and counters within
    TEXT_LATE, the step's caption, slider and open tab's picture every PICTURE_EVERY), then the
    finished run with every step and picture. `settings` are the page's settings by
    generation_settings' names (wire() passes them as keyword inputs, so that the API names them
    too)."""
    prompt = check_prompt(prompt)
    if not runtime.loaded:
        yield Page(status="Loading the model (first use only)…")
    lm = loaded_model(runtime)
    settings = generation_settings(**settings, config=lm.config)
    if needs_cost_curve(lm, settings):
        most = max_drafts(lm.config.num_slots) + 1
        yield Page(
            status=f"Measuring what a pass over 1..{most} tokens costs on this machine "
            "(first run only, about 10 s)…"
        )
        ensure_cost_curve(lm, max_tokens=most)
    try:
        ids = encode_prompt(lm.tokenizer, prompt, chat=bool(chat))
        run = lm.stream([ids], **settings)
    except ValueError as error:
        raise UserError(str(error)) from None
    pacer = Pacer()
    watching.running, watching.settings = True, run.settings.to_dict()
    shown = None  # (caption, step index) of the step the page shows
    try:
        for step in run:
            watching.step = step
            text, picture = pacer.due(time.perf_counter())
            if text:
                page = streaming_page(
                    run, step, watching, picture=picture, pacer=pacer, shown=shown
                )
                shown = (page.caption, step.index) if picture else shown
                yield page
    finally:
        watching.running = False
    page = trace_page(run.trace, last_drafting_step(run.trace))
    yield page._replace(status=f"{page.status}  \n{page_cost(pacer)}")


def run_inputs(control: Controls) -> dict:
    """generate()'s inputs by name (the prompt, chat, then the settings), their components: the
    order in which the page packs their values."""
    return {"prompt": control.prompt, "chat": control.chat, **control.settings._asdict()}


def generate_from_page(runtime: LazyModel, watching: Watching, values, *, inputs: dict):
    """The page's Generate: generate() on the values the page sent as one list (`values`, in the
    order of `inputs`: run_inputs), each read as Gradio reads an input (the component's
    preprocess: the same checks, the same messages)."""
    if not isinstance(values, list) or len(values) != len(inputs):
        raise UserError("The page sent its settings incompletely: reload it and try again.")
    read = {name: c.preprocess(v) for (name, c), v in zip(inputs.items(), values, strict=True)}
    yield from generate(runtime, watching, **read)


def streaming_page(
    run, step, watching: Watching, *, picture: bool, pacer: Pacer, shown: tuple | None
) -> Page:
    """What changed: the counters and the text, and (when due) this step's view: its decision,
    the slider on it and the open tab's picture of it; the trace lands at the end. The rest is
    sent as the page shows it (`shown`: the caption and index of the step last shown) or
    cleared (the closed tabs' pictures, the run's charts and the last run's trace file: drawn
    when opened or at the end), not skipped: Gradio builds a new component for every gr.skip()
    of every message (0.7-2.6 ms of the server's CPU each, ten a message here, taken from the
    model), while a value sent as it was costs next to nothing (a stream sends what changed)."""
    started = time.perf_counter()
    snapshot = run.snapshot()
    cleared = {name: None for name, _, _ in PLOT_TABS if name != watching.tab}
    page = Page(
        status=counters(snapshot, running=True),
        text=text_html(snapshot),
        trace_file=None,
        **cleared,
    )
    if picture:
        page = page._replace(
            caption=step_caption(snapshot, step.index),
            step=gr.Slider(minimum=0, maximum=max(step.index, 1), value=step.index, step=1),
        )
        if watching.tab in STEP_FIGURES:
            figure = step_figure(step, watching.tab, settings=snapshot.settings)
            page = page._replace(**{watching.tab: figure})
    else:
        caption, index = shown
        page = page._replace(caption=caption, step=index)
    pacer.updates += 1
    pacer.seconds += time.perf_counter() - started
    return page


def page_cost(pacer: Pacer) -> str:
    """What watching cost the server, apart from the model's own time."""
    return (
        f"watching it: {pacer.updates} page updates while generating, "
        f"{pacer.seconds * 1000:.0f} ms of the server's time"
    )


def open_tab(watching: Watching, name: str):
    """A picture tab was opened: a running generation updates that tab from now on, and shows
    it for its latest step at once; otherwise the picture is already there."""
    watching.tab = name
    if watching.running and watching.step is not None and name in STEP_FIGURES:
        return step_figure(watching.step, name, settings=watching.settings)
    return SKIP


def fit_to_model(runtime: LazyModel):
    """On page load: load the model (the first visitor waits for it) and say when it is ready."""
    if not runtime.loaded:
        yield "Loading the model (first use only)…"
    try:
        model = runtime.get()
    except BackboneNotFound as error:
        yield f"The model could not be loaded: {error}"
        return
    yield f"Ready: the model runs in {precision_note(model)}."


def show_step(trace, index):
    view = step_view(trace, step_index(trace, index))
    return tuple(getattr(view, name) for name in VIEW)


def play(trace):
    if trace is None:
        raise UserError("Nothing to replay yet: generate something or load a trace.")
    for index in range(len(trace.steps)):
        view = step_view(trace, index)
        yield index, *(getattr(view, name) for name in VIEW)
        time.sleep(PLAY_DELAY)


def export_gif(trace, width, progress=gr.Progress()):  # noqa: B008 (the Gradio idiom)
    if trace is None:
        raise UserError("Nothing to export yet: generate something or load a trace.")
    progress(0, desc="drawing frames")

    def draw(path: Path) -> None:
        viz.render_gif(
            trace, path, width=whole(width), progress=lambda f: progress(f, desc="drawing frames")
        )

    try:
        path = str(request_file("shufflelm.gif", draw))
    except (TypeError, ValueError) as error:
        raise UserError(f"GIF: {error}") from None
    except OSError as error:
        raise UserError(f"The GIF could not be made: {disk_trouble(error)}; try later.") from None
    return path, path


def load_trace(file):
    if file is None:
        raise UserError("Choose a trace file (.json) to load.")
    return trace_page(read_trace(Path(file if isinstance(file, str) else file.name)))


def load_example(name):
    choices = {p.stem: p for p in sorted(EXAMPLES_DIR.glob("*.json"))}
    if name not in choices:
        raise UserError(f"Unknown example {name!r}; choose one of {sorted(choices)}")
    return trace_page(read_trace(choices[name]))


def compare_runs(runtime: LazyModel, trace):
    """Ordinary decoding on the trace's prompt and settings, beside a fresh ShuffleLM run."""
    if trace is None:
        raise UserError("Generate something first; the comparison reruns its prompt.")
    lm = loaded_model(runtime)
    s = trace.settings
    ids = trace.prompt_ids
    if trace.model.get("backbone") != lm.config.backbone:
        raise UserError("This trace was made with another model; generate with this one.")
    fast = lm.generate([ids], return_trace=True, **s)[1]
    plain = lm.generate([ids], return_trace=True, **{**s, "max_parallel_tokens": 0})[1]
    runs = run_numbers(fast), run_numbers(plain)  # counted as the status line counts them
    table = (
        "| | ShuffleLM | ordinary decoding |\n|---|---:|---:|\n"
        f"| seconds | {fast.totals.wall_seconds:.2f} | {plain.totals.wall_seconds:.2f} |\n"
        f"| tokens/s of generation | {fast.totals.tokens_per_second:.1f} | "
        f"{plain.totals.tokens_per_second:.1f} |\n"
        "| backbone passes after the prefill | "
        + " | ".join(str(run["backbone_passes"]) for run in runs)
        + " |\n| tokens per pass | "
        + " | ".join(per_pass_text(run["new_tokens"], run["backbone_passes"]) for run in runs)
        + " |\n\n"
        + (
            f"Speed-up: **{plain.totals.wall_seconds / fast.totals.wall_seconds:.2f}x**. "
            if fast.totals.wall_seconds > 0
            else ""
        )
        + sameness(lm, trace, fast.output_ids, plain.output_ids)
    )
    return table, fast.output_text, plain.output_text


def tab_opener(name: str):
    """open_tab for the tab `name`, under a name of its own."""
    function = partial(open_tab, name=name)
    function.__name__ = f"open_{name}_tab"
    return function


def bound(handler, runtime: LazyModel):
    """The handler with the app's model as its first argument, under the handler's own name."""
    function = partial(handler, runtime)
    function.__name__ = getattr(handler, "func", handler).__name__
    return function


# Uploads are capped; errors reach the page as their one-line message (never a traceback),
# including Gradio's own input checks (e.g. a null sent for a slider through the API).
# No run history: Gradio 6's browser-side history copies every streamed page (figures included)
# into the visitor's localStorage, reading and rewriting the whole history as it goes: work for
# the browser on every streamed message, beside the model on a shared machine; the page's own
# export and replay (the trace file, the example traces) keep runs instead. The page starts with
# page_script's script: Gradio's status trackers take animation frames only while a tracker or a
# toast is shown, a shown tracker's count ten a second (the page-load tracker's count and loading
# animation otherwise take 60 frames a second each for the page's life), and each new picture is
# drawn once instead of three times.


def launch_options() -> dict:
    """demo.launch()'s options for the app (a fresh dict each time: Gradio adds to app_kwargs)."""
    return dict(
        max_file_size="5mb",
        show_error=True,
        css=CSS,
        run_history=False,
        app_kwargs={"middleware": [Middleware(PageScript)]},
    )


# --- layout -------------------------------------------------------------------------------------
# The story first: the prompt, Generate and the live view (the step's text, decision and
# picture) fit the first screen; settings are folded; the explanation sits beside the pictures
# it explains. Each part returns its components by name.


class Settings(NamedTuple):
    """A run's settings, named and ordered as generation_settings' parameters: generate() gets
    them as keyword arguments, and the API (/generate) lists them by these names."""

    max_new_tokens: gr.Slider
    max_parallel_tokens: gr.Slider
    shuffle_strategy: gr.Radio
    temperature: gr.Slider
    top_p: gr.Slider
    keep_threshold: gr.Dropdown
    verify: gr.Checkbox
    seed: gr.Number
    block_length: gr.Radio
    draft_source: gr.Radio


class Controls(NamedTuple):
    prompt: gr.Textbox
    chat: gr.Checkbox
    settings: Settings
    run: gr.Button
    stop: gr.Button
    values: gr.JSON  # hidden: the page's run inputs, packed into one list by the browser


class LiveView(NamedTuple):
    status: gr.Markdown
    text: gr.HighlightedText
    caption: gr.Textbox
    shuffle: gr.Plot
    drafts: gr.Plot
    filter: gr.Plot
    tree: gr.Plot
    overview: gr.Plot
    cost: gr.Plot
    step: gr.Slider
    play: gr.Button
    tabs: dict  # PLOT_TABS' name -> its gr.Tab (opening one tells a running generation)


class ComparePanel(NamedTuple):
    run: gr.Button
    table: gr.Markdown
    fast: gr.Textbox
    plain: gr.Textbox


class ExportPanel(NamedTuple):
    width: gr.Slider
    make_gif: gr.Button
    preview: gr.Image
    gif_file: gr.File
    trace_file: gr.File
    upload: gr.File
    example: gr.Dropdown


def controls(num_slots: int) -> Controls:
    """The prompt, Generate and Stop, the example prompts and the folded settings."""
    prompt = gr.Textbox(
        label="Prompt",
        lines=1,
        max_lines=8,
        elem_id="prompt",
        placeholder="Ask the model something… (Enter generates; Shift+Enter: a new line)",
    )
    with gr.Row():
        run = gr.Button("Generate", variant="primary", elem_id="generate")
        stop = gr.Button("Stop", variant="stop", elem_id="stop")
    gr.Examples(  # its own endpoint renamed: /load_example loads an example trace
        EXAMPLE_PROMPTS,
        inputs=[prompt],
        label="Example prompts",
        api_name="example_prompt",
        api_visibility="private",
    )
    with gr.Accordion("Settings", open=False, elem_id="settings"):
        chat = gr.Checkbox(
            value=True, label="Use the chat template (instruct model)", elem_id="chat"
        )
        settings = Settings(  # created in the page's order, named in generate()'s
            max_new_tokens=gr.Slider(
                1,
                MAX_NEW_TOKENS,
                value=64,
                step=1,
                label="Max new tokens",
                elem_id="max-new-tokens",
            ),
            max_parallel_tokens=gr.Slider(**drafts_slider(num_slots, elem_id="max-drafts")),
            block_length=gr.Radio(
                BLOCK_LENGTHS, value=COST, label="Block length", elem_id="block-length"
            ),
            draft_source=gr.Radio(
                DRAFT_SOURCE_CHOICES,
                value=DRAFT_SOURCES[0],
                label="Draft source",
                elem_id="draft-source",
            ),
            shuffle_strategy=gr.Radio(list(STRATEGIES), value="rotary", label="Shuffle strategy"),
            temperature=gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)"),
            top_p=gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p"),
            keep_threshold=gr.Dropdown(
                KEEP_CHOICES,
                value=KEEP_AUTO,
                allow_custom_value=True,
                label=KEEP_LABEL,
                elem_id="keep-threshold",
            ),
            verify=gr.Checkbox(value=True, label="Verify with the backbone (lossless)"),
            seed=gr.Number(value=0, precision=0, label="Seed (sampling)"),
        )
    values = gr.JSON(visible=False, elem_id="run-values")
    return Controls(prompt, chat, settings, run, stop, values)


PLOT_TABS = [  # (LiveView field, tab label, elem_id), in the tabs' order
    ("shuffle", "Shuffle", "shuffle-plot"),
    ("drafts", "Draft candidates", "draft-plot"),
    ("filter", "Filter and plan", "filter-plot"),
    ("tree", "Draft tree", "tree-plot"),
    ("overview", "Overview", "overview-plot"),
    ("cost", "Cost curve", "cost-plot"),
]


def live_view() -> LiveView:
    """Counters, the text coloured by origin, the step's decision, its pictures in tabs and the
    step slider with Play."""
    status = gr.Markdown("Ready.", elem_id="status")
    text = gr.HTML(  # viz.page.text_html: a legend, then the text (HighlightedText's colours
        # are redrawn on canvases on every update: work for the browser while a run streams)
        label="Output, coloured by origin",
        show_label=True,
        container=True,
        elem_id="output-text",
    )
    caption = gr.Textbox(
        label="This step: what was decided, and why", lines=3, interactive=False, elem_id="caption"
    )
    plots, tabs = {}, {}
    with gr.Tabs():
        for name, label, elem_id in PLOT_TABS:
            with gr.Tab(label, elem_id=f"{elem_id}-tab") as tabs[name]:
                plots[name] = gr.Plot(elem_id=elem_id, show_label=False)
    with gr.Row():
        step = gr.Slider(0, 1, value=0, step=1, label="Step", elem_id="step-slider")
        play = gr.Button("▶ Play", elem_id="play", scale=0, min_width=90)
    return LiveView(status, text, caption, **plots, step=step, play=play, tabs=tabs)


def compare_panel() -> ComparePanel:
    with gr.Accordion("Compare with ordinary decoding", open=False):
        run = gr.Button("Run ordinary decoding on the same prompt", elem_id="compare")
        table = gr.Markdown()
        with gr.Row():
            fast = gr.Textbox(label="ShuffleLM", lines=6, interactive=False)
            plain = gr.Textbox(label="Ordinary decoding", lines=6, interactive=False)
    return ComparePanel(run, table, fast, plain)


def export_panel() -> ExportPanel:
    """The GIF, the trace's download, and loading a saved or an example trace."""
    with gr.Accordion("Export and replay", open=True):
        with gr.Row():
            width = gr.Slider(320, 1600, value=800, step=40, label="GIF width")
            make_gif = gr.Button("Make GIF", elem_id="make-gif")
        preview = gr.Image(label="Animation", type="filepath", elem_id="gif-preview")
        with gr.Row():
            gif_file = gr.File(label="GIF download", elem_id="gif-file")
            trace_file = gr.File(label="Trace (JSON) download", elem_id="trace-file")
        upload = gr.File(
            label="Load a saved trace (.json)", file_types=[".json"], elem_id="trace-upload"
        )
        example = gr.Dropdown(
            sorted(p.stem for p in EXAMPLES_DIR.glob("*.json")),
            label="…or an example trace",
            value=None,
            elem_id="example-trace",
        )
    return ExportPanel(width, make_gif, preview, gif_file, trace_file, upload, example)


def build_demo(model: LazyModel | None = None) -> gr.Blocks:
    """The page for `model` (default: the shipped default model, loaded on first use)."""
    runtime = model or LazyModel()
    with gr.Blocks(title="ShuffleLM — parallel drafting, live") as demo:
        trace = gr.State(None)
        watching = gr.State(Watching())
        gr.Markdown(
            "## ShuffleLM — watch a language model write several tokens per step\n"
            "Type a prompt and watch each step draft tokens in parallel, shuffle them "
            "into place, filter the doubtful ones and verify the rest.",
            elem_id="intro",
        )
        with gr.Row(elem_id="story"):
            with gr.Column(scale=2, min_width=320, elem_id="controls"):
                control = controls(runtime.config.num_slots)
                gr.Markdown(HOW_IT_WORKS, elem_id="how-it-works")
            with gr.Column(scale=3, min_width=480, elem_id="live-view"):
                live = live_view()
                comparison = compare_panel()
                export = export_panel()
        wire(demo, runtime, trace, watching, control, live, comparison, export)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    calm_queue(demo)
    return demo


def calm_queue(demo: gr.Blocks) -> None:
    """Gradio's queue looks for work every QUEUE_LOOK seconds and for progress every
    PROGRESS_LOOK while it has none (its Queue's own knobs: no public option sets them)."""
    queue = demo._queue
    for knob in ("sleep_when_free", "progress_update_sleep_when_free"):
        if not isinstance(getattr(queue, knob, None), float):  # a later Gradio: leave it be
            return
    queue.sleep_when_free = QUEUE_LOOK
    queue.progress_update_sleep_when_free = PROGRESS_LOOK


# --- wiring --------------------------------------------------------------------------------------


def wire(demo, runtime, trace, watching, control, live, comparison, export) -> None:
    """Every event: the handlers, bound to the app's model where they need it."""
    page = Page(  # the components a run or a loaded trace updates, by name
        status=live.status,
        text=live.text,
        caption=live.caption,
        shuffle=live.shuffle,
        drafts=live.drafts,
        filter=live.filter,
        tree=live.tree,
        step=live.step,
        trace=trace,
        trace_file=export.trace_file,
        overview=live.overview,
        cost=live.cost,
    )
    view = [getattr(page, name) for name in VIEW]
    outputs = list(page)
    run_options = dict(  # what the page's runs and the API's share
        concurrency_limit=CONCURRENCY,  # runs at once, the page's and the API's together
        concurrency_id="generate",
        show_progress="hidden",  # the status says it: no animated overlay on every output,
        show_progress_on=[],  # on no component (Gradio renews the progress state of each
        # target on every streamed message: work for the page)
    )
    gr.on(  # /generate: the prompt and chat positional, the settings by name (the API's names)
        [],  # no trigger on the page: the API's own endpoint
        bound(generate, runtime),
        inputs=[watching, control.prompt, control.chat],  # the state is not in the API
        inputs_kwargs=control.settings._asdict(),
        outputs=outputs,
        api_name="generate",
        **run_options,
    )
    # The page sends its run's inputs as one value: Gradio renews the loading state of every
    # input of a finished event on every later streamed message (13 components, about 75 times
    # a run), so the page's run has two inputs; the browser packs the values (PACK_VALUES).
    inputs = run_inputs(control)
    run = dict(
        fn=bound(partial(generate_from_page, inputs=inputs), runtime),
        inputs=[watching, control.values],
        outputs=outputs,
        api_name=False,
        **run_options,
    )
    pack = dict(
        fn=None,
        inputs=list(inputs.values()),
        outputs=[control.values],
        js=PACK_VALUES,
        api_name=False,
    )
    generating = control.run.click(**pack).then(**run)
    submitting = control.prompt.submit(**pack).then(**run)  # Enter in the prompt box
    control.stop.click(None, None, None, cancels=[generating, submitting], api_name=False)
    for name, tab in live.tabs.items():  # a running generation updates the open tab only
        tab.select(tab_opener(name), [watching], [getattr(live, name)], api_name=False)
    live.step.input(show_step, [trace, live.step], view, api_name="show_step")
    live.play.click(play, [trace], [live.step, *view], api_name="play")
    export.make_gif.click(
        export_gif,
        [trace, export.width],
        [export.preview, export.gif_file],
        api_name="export_gif",
        concurrency_limit=CONCURRENCY,
    )
    export.upload.upload(load_trace, [export.upload], outputs, api_name="load_trace")
    export.example.input(load_example, [export.example], outputs, api_name="load_example")
    comparison.run.click(
        bound(compare_runs, runtime),
        [trace],
        [comparison.table, comparison.fast, comparison.plain],
        api_name="compare",
        concurrency_limit=CONCURRENCY,
    )
    demo.load(bound(fit_to_model, runtime), None, [live.status], api_name=False)


# --- serving --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    """`shufflelm app` (and `python app.py`): serve the page until interrupted."""
    parser = argparse.ArgumentParser(
        prog="shufflelm app", description="Serve the ShuffleLM web app (Ctrl+C stops it)."
    )
    parser.add_argument(
        "--model",
        default=os.environ.get("SHUFFLELM_MODEL", "default"),
        help="'default' (the shipped head on SmolLM2-135M-Instruct), 'tiny' (a tiny random "
        "model: fast, meaningless text) or a head directory (default: $SHUFFLELM_MODEL, "
        "else 'default')",
    )
    parser.add_argument(
        "--host", default=None, help="address to serve on (default: $GRADIO_SERVER_NAME or local)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)"
    )
    args = parser.parse_args(argv)
    try:
        demo = build_demo(LazyModel.from_spec(args.model))  # reads the head's config
    except (BackboneNotFound, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    demo.launch(server_name=args.host, server_port=args.port, **launch_options())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
