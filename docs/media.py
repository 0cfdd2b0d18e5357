"""The README's pictures, made by the project's own code from the shipped example traces:

    python docs/media.py        # (make examples runs it after regenerating the traces)

- docs/media/shufflelm.gif: the first example trace as the app exports it (viz.render_gif),
  made smaller until it fits MAX_GIF_BYTES;
- docs/media/app.png: the app's first screen in Chromium (1440x900) with that trace loaded, at
  its busiest step (the app on the tiny model, which is never loaded: the page only replays
  the trace).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere in the checkout

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from playwright.sync_api import sync_playwright  # noqa: E402

import viz  # noqa: E402
from shuffle_model import GenerationTrace  # noqa: E402
from shuffle_model.model.runtime import LazyModel  # noqa: E402
from shuffle_model.resources import ASSETS  # noqa: E402
from shufflers import app  # noqa: E402

OUT = ROOT / "docs" / "media"
EXAMPLE = "01-rotary-verified-greedy"
MAX_GIF_BYTES = 2_000_000  # at most 2 MB (decimal): the README opens with it
GIF_SIZES = [(640, 240), (560, 200), (480, 160), (400, 120)]  # (width, most frames), tried in turn
VIEWPORT = {"width": 1440, "height": 900}
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def readme_gif(trace: GenerationTrace, path: Path) -> Path:
    """The run as the app exports it, at the first size that fits MAX_GIF_BYTES."""
    for width, frames in GIF_SIZES:
        data = viz.render_gif(trace, None, width=width, max_frames=frames)
        if len(data) <= MAX_GIF_BYTES:
            path.write_bytes(data)
            return path
    raise SystemExit(f"no GIF size fits {MAX_GIF_BYTES} bytes; add a smaller one to GIF_SIZES")


def busiest_step(trace: GenerationTrace) -> int:
    """The step that wrote the most tokens (the first of them): the picture worth showing."""
    return max(range(len(trace.steps)), key=lambda i: (trace.steps[i].num_emitted, -i))


def app_screenshot(example: str, path: Path, chromium: str, *, step: int = 0) -> Path:
    """The app's first screen with the example trace loaded at `step`, as a visitor sees it."""
    demo = app.build_demo(LazyModel.from_spec("tiny"))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **app.launch_options())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        page.wait_for_selector("#prompt textarea", timeout=60_000)
        page.locator("#example-trace input").click()
        page.get_by_role("option", name=example).click()
        page.wait_for_function(
            "document.querySelector('#caption textarea').value.startsWith('Step')",
            timeout=60_000,
        )
        slider = page.locator("#step-slider input[type=number]")
        slider.fill(str(step))
        slider.press("Enter")
        page.wait_for_function(
            f"document.querySelector('#caption textarea').value.startsWith('Step {step}:')",
            timeout=60_000,
        )
        page.wait_for_selector("#shuffle-plot .js-plotly-plot", timeout=60_000)
        page.evaluate("window.scrollTo(0, 0)")  # choosing the example scrolled down
        page.wait_for_timeout(800)  # the plot's transition
        page.screenshot(path=str(path))
        browser.close()
    demo.close()
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/media.py", description=__doc__)
    parser.add_argument("--example", default=EXAMPLE, help="the example trace to show")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--chromium", default=os.environ.get("SHUFFLELM_CHROMIUM") or shutil.which("chromium")
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    trace = GenerationTrace.load(ASSETS / "examples" / f"{args.example}.json")
    gif = readme_gif(trace, args.out / "shufflelm.gif")
    print(f"{gif}: {gif.stat().st_size / 2**20:.2f} MB")
    if not args.chromium:
        print("error: Chromium is needed for the screenshot (make chromium)", file=sys.stderr)
        return 2
    shot = app_screenshot(
        args.example, args.out / "app.png", args.chromium, step=busiest_step(trace)
    )
    print(f"{shot}: {shot.stat().st_size / 2**10:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
