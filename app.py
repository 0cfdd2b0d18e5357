"""ShuffleLM web app: watch a language model draft, shuffle, filter and verify tokens.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / _PORT respected)

This file only wires components to events. The model comes from shuffle_model (loaded lazily
on first use; SHUFFLELM_MODEL=tiny picks a tiny random model), the pictures from viz.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import html
import re
import tempfile
import time
from pathlib import Path

import gradio as gr

import viz
from shuffle_model import STRATEGIES, GenerationTrace, TraceError
from shuffle_model.decoding.cost import cost_curve
from shuffle_model.decoding.lossless import compare
from shuffle_model.decoding.planning import COST, FIXED
from shuffle_model.decoding.settings import DRAFT_SOURCES, max_drafts
from shuffle_model.model.backbone import BackboneNotFound
from shuffle_model.model.chat import encode_prompt
from shuffle_model.model.runtime import LazyModel
from viz.replay import SPAN_COLORS, counters, last_drafting_step, step_view

EXAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "examples"
MAX_PROMPT_CHARS = 20_000
MAX_TRACE_BYTES = 5 * 2**20
MAX_NEW_TOKENS = 256
QUEUE_SIZE = 16
CONCURRENCY = 2
PLAY_DELAY = 0.6  # seconds per step when replaying
PROVISIONAL_SLOTS = 8  # the drafts slider's range before the model is loaded (heads have <= 8)
BLOCK_LENGTHS = [
    ("cost-aware: the drafts worth their time on this machine", COST),
    ("fixed: every draft the filter keeps (the original rule)", FIXED),
]
SOURCE_NAMES = {
    "head+context": "head + context",
    "head": "head only (the shuffle head)",
    "context": "context only (copied from earlier text)",
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
   (the *filter and plan* chart); the caption says what was decided, and why.
5. **Verify** — one backbone pass over the anchor and the chosen guesses (both chains side
   by side, when both are worth it) keeps the longest run it agrees with (✓ green from the
   head, ↩ wine from the context); the rest is rejected. Verified text is exactly what
   ordinary decoding writes. Switch *verify* off for pure parallel mode (the head's guesses
   emitted unchecked, sky blue).

■ *end of answer* marks where the model ended its answer. Under *Settings*: *block length*
**fixed** checks every guess the filter keeps, as ShuffleLM first did; *draft source* picks the
head, the context, or both.
"""
# The live view stays on the first screen: the output text scrolls instead of growing, and on a
# narrow screen (a phone) the explanation follows the pictures instead of preceding them.
CSS = """
#output-text .textfield { max-height: 7.5em; overflow-y: auto; }
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


def new_request_dir() -> Path:
    """A fresh temporary directory per request; file names never come from user input."""
    return Path(tempfile.mkdtemp(prefix="shufflelm-"))


def as_int(name: str, value, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(
            f"{name} must be a whole number in [{low}, {high}]; got {value!r}"
        ) from None
    if number != number or not low <= number <= high or number != int(number):
        raise UserError(f"{name} must be a whole number in [{low}, {high}]; got {value!r}")
    return int(number)


def as_float(name: str, value, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number in [{low}, {high}]; got {value!r}") from None
    if number != number or not low <= number <= high:
        raise UserError(f"{name} must be a number in [{low}, {high}]; got {value!r}")
    return number


def check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("The prompt is empty: type something for the model to answer.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(
            f"The prompt is {len(prompt):,} characters long; the limit is {MAX_PROMPT_CHARS:,}."
        )
    # NUL and other controls stay text; lone surrogates become U+FFFD in chat.encode_text
    return prompt


def generation_settings(
    max_new_tokens,
    max_parallel,
    strategy,
    temperature,
    top_p,
    keep,
    verify,
    seed,
    block_length=COST,
    draft_source=DRAFT_SOURCES[0],
    *,
    num_slots: int,
) -> dict:
    """The generate() settings from the page's inputs. The library checks them again
    (GenerationSettings.resolved) and its messages reach the user as UserError."""
    if strategy not in STRATEGIES:
        raise UserError(f"strategy must be one of {list(STRATEGIES)}; got {strategy!r}")
    if seed in (None, ""):
        seed = None
    else:
        seed = as_int("seed", seed, 0, 2**31 - 1)
    most = max_drafts(num_slots)
    return dict(
        max_new_tokens=as_int("max new tokens", max_new_tokens, 1, MAX_NEW_TOKENS),
        max_parallel_tokens=as_int(
            f"max drafts per step (this model: {num_slots} head slots + "
            f"{most - num_slots} context drafts)",
            max_parallel,
            0,
            most,
        ),
        shuffle_strategy=strategy,
        temperature=as_float("temperature", temperature, 0.0, 2.0),
        top_p=as_float("top-p", top_p, 0.01, 1.0),
        keep_threshold=keep_setting(keep),
        verify=bool(verify),
        seed=seed,
        block_length=block_length,
        draft_source=draft_source,
    )


def keep_setting(keep) -> float | None:
    """The keep threshold: None for "auto" (the library's default, never overridden here)."""
    if keep is None or (isinstance(keep, str) and keep.strip().lower() in ("", KEEP_AUTO)):
        return None
    return as_float("keep threshold", keep, 0.0, 1.0)


def drafts_slider(num_slots: int | None = None, **extra) -> dict:
    """The max-drafts slider's range for a head with num_slots (None: not loaded yet)."""
    most = max_drafts(num_slots or PROVISIONAL_SLOTS)
    what = (
        f"up to {most}: {num_slots} head slots + {most - num_slots} context drafts"
        if num_slots
        else "the range fits the model once it is loaded"
    )
    label = f"Max drafts per step ({what}; 0 = ordinary decoding)"
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


def page_for(trace: GenerationTrace, index: int, *, running: bool) -> tuple:
    """status, spans, caption, shuffle, drafts, filter, slider for one step of a trace."""
    view = step_view(trace, index)
    slider = gr.Slider(minimum=0, maximum=max(len(trace.steps) - 1, 1), value=view.index, step=1)
    return (
        counters(trace, running=running),
        viz.token_spans(trace),
        view.caption,
        view.shuffle,
        view.drafts,
        view.filter,
        slider,
    )


# Uploads are capped; errors reach the page as their one-line message (never a traceback),
# including Gradio's own input checks (e.g. a null sent for a slider through the API).
LAUNCH_OPTIONS = dict(max_file_size="5mb", show_error=True, css=CSS)


def build_demo(model: LazyModel | None = None) -> gr.Blocks:
    runtime = model or LazyModel()

    def get_model():
        try:
            return runtime.get()
        except BackboneNotFound as error:
            raise gr.Error(str(error)) from None

    # --- handlers ---------------------------------------------------------------------------
    def generate(
        prompt,
        chat,
        max_new_tokens,
        max_parallel,
        strategy,
        temperature,
        top_p,
        keep,
        verify,
        seed,
        block_length=COST,
        draft_source=DRAFT_SOURCES[0],
    ):
        prompt = check_prompt(prompt)
        skips = (gr.skip(),) * 10
        if not runtime.loaded:
            yield ("Loading the model (first use only)…", *skips)
        lm = get_model()
        settings = generation_settings(
            max_new_tokens,
            max_parallel,
            strategy,
            temperature,
            top_p,
            keep,
            verify,
            seed,
            block_length,
            draft_source,
            num_slots=lm.config.num_slots,
        )
        if needs_cost_curve(lm, settings):
            most = max_drafts(lm.config.num_slots) + 1
            yield (
                f"Measuring what a pass over 1..{most} tokens costs on this machine "
                "(first run only, about 10 s)…",
                *skips,
            )
            cost_curve(lm, max_tokens=most)
        try:
            ids = encode_prompt(lm.tokenizer, prompt, chat=bool(chat))
            run = lm.stream([ids], **settings)
        except ValueError as error:
            raise UserError(str(error)) from None
        last = 0.0
        for step in run:
            now = time.perf_counter()
            if now - last < 0.15 and len(step.emitted) and step.index > 0:
                continue  # keep the page responsive: at most ~7 updates a second
            last = now
            snapshot = run.snapshot()
            yield (
                *page_for(snapshot, step.index, running=True),
                snapshot,
                gr.skip(),
                gr.skip(),
                gr.skip(),
            )
        trace = run.trace
        path = new_request_dir() / "trace.json"
        trace.save(path)
        yield (
            *page_for(trace, last_drafting_step(trace), running=False),
            trace,
            str(path),
            viz.overview(trace),
            viz.cost_curve_chart(trace),
        )

    def fit_to_model():
        """On page load: load the model (first visitor only) and fit the drafts slider to it."""
        if not runtime.loaded:
            yield "Loading the model (first use only)…", gr.skip()
        try:
            lm = runtime.get()
        except BackboneNotFound as error:
            yield f"The model could not be loaded: {error}", gr.skip()
            return
        yield "Ready.", gr.Slider(**drafts_slider(lm.config.num_slots))

    def show_step(trace, index):
        if trace is None:
            raise UserError("Nothing to show yet: generate something or load a trace.")
        view = step_view(trace, as_int("step", index, 0, 10**6))
        return view.caption, view.shuffle, view.drafts, view.filter

    def play(trace):
        if trace is None:
            raise UserError("Nothing to replay yet: generate something or load a trace.")
        for index in range(len(trace.steps)):
            view = step_view(trace, index)
            yield index, view.caption, view.shuffle, view.drafts, view.filter
            time.sleep(PLAY_DELAY)

    def export_gif(trace, width, progress=gr.Progress()):  # noqa: B008 (the Gradio idiom)
        if trace is None:
            raise UserError("Nothing to export yet: generate something or load a trace.")
        width = as_int("GIF width", width, 320, 1600)
        path = new_request_dir() / "shufflelm.gif"
        progress(0, desc="drawing frames")
        viz.render_gif(
            trace, path, width=width, progress=lambda f: progress(f, desc="drawing frames")
        )
        return str(path), str(path)

    def load_trace(file):
        if file is None:
            raise UserError("Choose a trace file (.json) to load.")
        path = Path(file if isinstance(file, str) else file.name)
        return replay(read_trace(path))

    def load_example(name):
        choices = {p.stem: p for p in sorted(EXAMPLES_DIR.glob("*.json"))}
        if name not in choices:
            raise UserError(f"Unknown example {name!r}; choose one of {sorted(choices)}")
        return replay(read_trace(choices[name]))

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

    def replay(trace):
        path = new_request_dir() / "trace.json"
        trace.save(path)
        return (
            *page_for(trace, 0, running=False),
            trace,
            str(path),
            viz.overview(trace),
            viz.cost_curve_chart(trace),
        )

    def compare(trace):
        if trace is None:
            raise UserError("Generate something first; the comparison reruns its prompt.")
        lm = get_model()
        s = trace.settings
        ids = trace.prompt_ids
        if trace.model.get("backbone") != lm.config.backbone:
            raise UserError("This trace was made with another model; generate with this one.")
        fast = lm.generate([ids], return_trace=True, **s)[1]
        plain = lm.generate([ids], return_trace=True, **{**s, "max_parallel_tokens": 0})[1]
        table = (
            "| | ShuffleLM | ordinary decoding |\n|---|---:|---:|\n"
            f"| seconds | {fast.totals.wall_seconds:.2f} | {plain.totals.wall_seconds:.2f} |\n"
            f"| tokens/s | {fast.totals.tokens_per_second:.1f} | "
            f"{plain.totals.tokens_per_second:.1f} |\n"
            f"| backbone passes | {fast.totals.backbone_forwards} | "
            f"{plain.totals.backbone_forwards} |\n"
            f"| tokens per pass | {fast.totals.compression_ratio:.2f} | "
            f"{plain.totals.compression_ratio:.2f} |\n\n"
            + (
                f"Speed-up: **{plain.totals.wall_seconds / fast.totals.wall_seconds:.2f}x**. "
                if fast.totals.wall_seconds > 0
                else ""
            )
            + sameness(lm, trace, fast.output_ids, plain.output_ids)
        )
        return table, fast.output_text, plain.output_text

    # --- layout -----------------------------------------------------------------------------
    # The story first: the prompt, Generate and the live view (the step's text, decision and
    # picture) fit the first screen; settings are folded; the explanation sits beside the
    # pictures it explains.
    with gr.Blocks(title="ShuffleLM — parallel drafting, live") as demo:
        trace_state = gr.State(None)
        gr.Markdown(
            "## ShuffleLM — watch a language model write several tokens per step\n"
            "Type a prompt and watch each step draft tokens in parallel, shuffle them "
            "into place, filter the doubtful ones and verify the rest.",
            elem_id="intro",
        )
        with gr.Row(elem_id="story"):
            with gr.Column(scale=2, min_width=320, elem_id="controls"):
                prompt = gr.Textbox(
                    label="Prompt",
                    lines=1,
                    max_lines=8,
                    elem_id="prompt",
                    placeholder="Ask the model something… (Enter generates; Shift+Enter: a new "
                    "line)",
                )
                with gr.Row():
                    run_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
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
                    max_new_tokens = gr.Slider(
                        1,
                        MAX_NEW_TOKENS,
                        value=64,
                        step=1,
                        label="Max new tokens",
                        elem_id="max-new-tokens",
                    )
                    slots = runtime.get().config.num_slots if runtime.loaded else None
                    max_parallel = gr.Slider(**drafts_slider(slots, elem_id="max-drafts"))
                    block_length = gr.Radio(
                        BLOCK_LENGTHS, value=COST, label="Block length", elem_id="block-length"
                    )
                    draft_source = gr.Radio(
                        DRAFT_SOURCE_CHOICES,
                        value=DRAFT_SOURCES[0],
                        label="Draft source",
                        elem_id="draft-source",
                    )
                    strategy = gr.Radio(list(STRATEGIES), value="rotary", label="Shuffle strategy")
                    temperature = gr.Slider(
                        0, 2, value=0, step=0.05, label="Temperature (0 = greedy)"
                    )
                    top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p")
                    keep = gr.Dropdown(
                        KEEP_CHOICES,
                        value=KEEP_AUTO,
                        allow_custom_value=True,
                        label=KEEP_LABEL,
                        elem_id="keep-threshold",
                    )
                    verify = gr.Checkbox(value=True, label="Verify with the backbone (lossless)")
                    seed = gr.Number(value=0, precision=0, label="Seed (sampling)")
                gr.Markdown(HOW_IT_WORKS, elem_id="how-it-works")
            with gr.Column(scale=3, min_width=480, elem_id="live-view"):
                status = gr.Markdown("Ready.", elem_id="status")
                text = gr.HighlightedText(
                    label="Output, coloured by origin",
                    color_map=SPAN_COLORS,
                    combine_adjacent=False,
                    show_legend=True,
                    elem_id="output-text",
                )
                caption = gr.Textbox(
                    label="This step: what was decided, and why",
                    lines=3,
                    interactive=False,
                    elem_id="caption",
                )
                with gr.Tabs():
                    with gr.Tab("Shuffle"):
                        shuffle_plot = gr.Plot(elem_id="shuffle-plot", show_label=False)
                    with gr.Tab("Draft candidates"):
                        draft_plot = gr.Plot(elem_id="draft-plot", show_label=False)
                    with gr.Tab("Filter and plan"):
                        filter_plot = gr.Plot(elem_id="filter-plot", show_label=False)
                    with gr.Tab("Overview"):
                        overview_plot = gr.Plot(elem_id="overview-plot", show_label=False)
                    with gr.Tab("Cost curve"):
                        cost_plot = gr.Plot(elem_id="cost-plot", show_label=False)
                with gr.Row():
                    step_slider = gr.Slider(
                        0, 1, value=0, step=1, label="Step", elem_id="step-slider"
                    )
                    play_button = gr.Button("▶ Play", elem_id="play", scale=0, min_width=90)
                with gr.Accordion("Compare with ordinary decoding", open=False):
                    compare_button = gr.Button(
                        "Run ordinary decoding on the same prompt", elem_id="compare"
                    )
                    compare_table = gr.Markdown()
                    with gr.Row():
                        fast_text = gr.Textbox(label="ShuffleLM", lines=6, interactive=False)
                        plain_text = gr.Textbox(
                            label="Ordinary decoding", lines=6, interactive=False
                        )
                with gr.Accordion("Export and replay", open=True):
                    with gr.Row():
                        gif_width = gr.Slider(320, 1600, value=800, step=40, label="GIF width")
                        gif_button = gr.Button("Make GIF", elem_id="make-gif")
                    gif_preview = gr.Image(
                        label="Animation", type="filepath", elem_id="gif-preview"
                    )
                    with gr.Row():
                        gif_file = gr.File(label="GIF download", elem_id="gif-file")
                        trace_file = gr.File(label="Trace (JSON) download", elem_id="trace-file")
                    upload = gr.File(
                        label="Load a saved trace (.json)",
                        file_types=[".json"],
                        elem_id="trace-upload",
                    )
                    example_names = sorted(p.stem for p in EXAMPLES_DIR.glob("*.json"))
                    example = gr.Dropdown(
                        example_names,
                        label="…or an example trace",
                        value=None,
                        elem_id="example-trace",
                    )
        step_outputs = [status, text, caption, shuffle_plot, draft_plot, filter_plot, step_slider]
        settings_inputs = [
            prompt,
            chat,
            max_new_tokens,
            max_parallel,
            strategy,
            temperature,
            top_p,
            keep,
            verify,
            seed,
            block_length,
            draft_source,
        ]
        run_outputs = [*step_outputs, trace_state, trace_file, overview_plot, cost_plot]
        generating = run_button.click(
            generate,
            settings_inputs,
            run_outputs,
            api_name="generate",
            concurrency_limit=CONCURRENCY,
        )
        submitting = prompt.submit(  # Enter in the prompt box
            generate,
            settings_inputs,
            run_outputs,
            api_name=False,
            concurrency_limit=CONCURRENCY,
        )
        stop_button.click(None, None, None, cancels=[generating, submitting], api_name=False)
        step_slider.input(
            show_step,
            [trace_state, step_slider],
            [caption, shuffle_plot, draft_plot, filter_plot],
            api_name="show_step",
        )
        play_button.click(
            play,
            [trace_state],
            [step_slider, caption, shuffle_plot, draft_plot, filter_plot],
            api_name="play",
        )
        gif_button.click(
            export_gif,
            [trace_state, gif_width],
            [gif_preview, gif_file],
            api_name="export_gif",
            concurrency_limit=CONCURRENCY,
        )
        upload.upload(load_trace, [upload], run_outputs, api_name="load_trace")
        example.input(load_example, [example], run_outputs, api_name="load_example")
        compare_button.click(
            compare,
            [trace_state],
            [compare_table, fast_text, plain_text],
            api_name="compare",
            concurrency_limit=CONCURRENCY,
        )
        demo.load(fit_to_model, None, [status, max_parallel], api_name=False)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


if __name__ == "__main__":
    build_demo().launch(**LAUNCH_OPTIONS)
