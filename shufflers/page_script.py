"""A script at the very start of the app page's <head>, before Gradio's own modules load, for two
things Gradio 6.31 does with the browser's CPU that a visitor running the model on the same machine
pays out of the model's speed.

1. Gradio's status-tracker loops take animation frames only while a tracker or a toast is shown
   (FRAMES_WHEN_SHOWN). Gradio's page-load status tracker is destroyed, while it still says
   "pending", without its teardown (the page's `{#if loader_status === "pending"}` removes it
   first), so two of its loops go on for the page's whole life, each asking for every frame (60 a
   second) on a page that shows no tracker: its elapsed-time count (a callback that reads the
   clock) and its loading animation's springs (Svelte's motion loop, which also moves the toasts).
   An idle page cost 38-47 ms of Chromium's CPU a second here with them at full rate; 7-12 with
   them held. A callback that is a tracker's count (short, reads `performance.now()` and turns
   milliseconds into seconds, `/1e3`) gets a frame TICK_MS later, and the motion loop (short,
   runs `.tasks.forEach(` and asks `.tick(` again) its next frame, when a status tracker (one of
   Gradio's `wrap` elements, marked `data-testid="status-tracker"`) not
   hidden or a toast is in the page (or no tracker is marked Gradio's way at all); otherwise they
   wait, one timer looking again every TICK_MS. A shown tracker shows its count to a tenth of a
   second, so at ten a second it reads the same; every other frame request passes untouched.

2. A new picture is drawn once instead of three times (ONE_DRAW). Gradio's Plot draws each new
   figure on the plot it is about to remove (the old PlotlyPlot's effect sees the new value), then
   on a fresh one (a `{#key}` block re-mounts it), then calls `Plotly.Plots.resize`, which 100 ms
   later draws the whole figure again though its size did not change (the first two took 45-100
   and 20-55 ms of CPU here; a replayed run's page cost 45 ms a step, 34 with one draw). Gradio's
   calls to `Plotly.react` (through the `window.Plotly` it sets) are drawn a microtask later, when
   only plots still in the page are drawn, the latest figure of each; its `Plots.resize` resizes a
   plot only when its box is not the size it was drawn at.

The script must come first: Gradio's status tracker keeps the `requestAnimationFrame` it finds
when its module loads, and Gradio's own `head` option adds scripts only after that. `PageScript`,
an ASGI middleware (app.launch_options), adds it to the page Gradio serves. If a later Gradio
writes its loops or its plots differently, nothing matches and nothing changes
(tests/test_browser.py notices: the idle page asks for frames again, a picture update draws more
than once, or nothing is skipped).
"""

from __future__ import annotations

FRAMES_WHEN_SHOWN = r"""
(() => {
  const TICK_MS = 100;  // a shown tracker's count: ten times a second; held loops look as often
  // live lists (the browser keeps them current): Gradio's status trackers are among its "wrap"
  // elements; a query of the whole page instead scanned every node of every plot drawn
  const wraps = document.getElementsByClassName("wrap");
  const toasts = document.getElementsByClassName("toast-body");
  const frame = window.requestAnimationFrame.bind(window);
  const cancelFrame = window.cancelAnimationFrame.bind(window);
  const isTrackerCount = (source) =>
    source.length < 120 && source.includes("performance.now()") && source.includes("/1e3");
  const isMotionLoop = (source) =>
    source.length < 200 && source.includes(".tasks.forEach(") && source.includes(".tick(");
  // a tracker or a toast is on screen (a page without trackers marked Gradio's way: as if shown)
  const shown = () => {
    let trackers = 0;
    for (const element of wraps) {
      if (element.dataset.testid !== "status-tracker") continue;
      if (!element.classList.contains("hide")) return true;
      trackers++;
    }
    return trackers === 0 || toasts.length > 0;
  };
  const later = new Map();  // our id (negative) -> {timer}, {frame} or {callback} (parked)
  let nextId = -1;
  let look = null;  // the timer that looks again whether something is shown
  window.__shufflelm_looks = 0;  // looks that found nothing shown (the parked callbacks wait)
  const toFrame = (id, callback) => {
    later.set(id, { frame: frame((time) => { later.delete(id); callback(time); }) });
  };
  const lookAgain = () => {
    look = null;
    if (!shown()) {
      window.__shufflelm_looks++;
      look = setTimeout(lookAgain, TICK_MS);
      return;
    }
    for (const [id, tick] of later) if (tick.callback) toFrame(id, tick.callback);
  };
  const park = (id, callback) => {
    later.set(id, { callback });
    look ??= setTimeout(lookAgain, TICK_MS);
  };
  const ask = (id, callback) => (shown() ? toFrame(id, callback) : park(id, callback));
  window.requestAnimationFrame = (callback) => {
    const source = Function.prototype.toString.call(callback);
    const count = isTrackerCount(source);
    if (!count && !(isMotionLoop(source) && !shown())) return frame(callback);
    const id = nextId--;
    if (count) later.set(id, { timer: setTimeout(() => ask(id, callback), TICK_MS) });
    else park(id, callback);  // a motion loop with nothing shown (just looked)
    return id;
  };
  window.cancelAnimationFrame = (id) => {
    const tick = later.get(id);
    if (!tick) return cancelFrame(id);
    if (tick.timer !== undefined) clearTimeout(tick.timer);
    if (tick.frame !== undefined) cancelFrame(tick.frame);
    later.delete(id);
  };
})();
"""


ONE_DRAW = r"""
(() => {
  window.__shufflelm_skipped_draws = 0;  // draws of plots gone, and resizes to the same size
  let plotly;
  const drawOnce = (library) => {
    const react = library.react.bind(library);
    const resize = library.Plots.resize.bind(library.Plots);
    const latest = new Map();  // plot div -> the arguments of its latest react, not yet drawn
    library.react = (div, ...figure) => {
      const queued = latest.has(div);
      latest.set(div, figure);
      if (queued) return Promise.resolve(div);
      return Promise.resolve().then(() => {
        const drawn = latest.get(div);
        latest.delete(div);
        if (div.isConnected) return react(div, ...drawn);
        window.__shufflelm_skipped_draws++;
        return div;
      });
    };
    library.Plots.resize = (div) => Promise.resolve().then(() => {  // after the react above
      const size = div._fullLayout;
      const same = size && div.clientWidth === size.width && div.clientHeight === size.height;
      if (div.isConnected && !same) return resize(div);
      window.__shufflelm_skipped_draws++;
      return div;
    });
  };
  Object.defineProperty(window, "Plotly", {
    configurable: true,
    get: () => plotly,
    set: (library) => {
      if (library && library !== plotly && library.react && library.Plots) drawOnce(library);
      plotly = library;
    },
  });
})();
"""

PAGE_SCRIPT = FRAMES_WHEN_SHOWN.strip() + "\n" + ONE_DRAW.strip()


def script_tag(source: str) -> bytes:
    """An inline <script> element for `source` (which must not contain "</script")."""
    if "</script" in source.lower():
        raise ValueError("an inline script cannot contain '</script'")
    return f"<script>{source.strip()}</script>".encode()


def with_script(start: dict, body: bytes, tag: bytes) -> bytes:
    """The page's HTML with `tag` right after <head>; any other response as it was."""
    headers = {name.lower(): value for name, value in start.get("headers", [])}
    html_page = headers.get(b"content-type", b"").startswith(b"text/html")
    if start.get("status") != 200 or not html_page or b"content-encoding" in headers:
        return body
    return body.replace(b"<head>", b"<head>" + tag, 1)


class PageScript:
    """ASGI middleware: the page Gradio serves at / gets `source` as the first element of its
    <head>; every other request passes through untouched."""

    def __init__(self, app, source: str = PAGE_SCRIPT):
        self.app = app
        self.tag = script_tag(source)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != "/":
            await self.app(scope, receive, send)
            return
        start, chunks = None, []

        async def send_with_script(message):
            nonlocal start
            if message["type"] == "http.response.start":
                start = message  # held back until the body is whole: its length changes
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = with_script(start, b"".join(chunks), self.tag)
            headers = [
                (name, str(len(body)).encode() if name.lower() == b"content-length" else value)
                for name, value in start["headers"]
            ]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_with_script)
