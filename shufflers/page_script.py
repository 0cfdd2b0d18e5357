"""A script at the very start of the app page's <head>, before Gradio's own modules load: frame
loops that change nothing on the page are slowed to a few frames a second.

Why: Gradio 6.31's page-load status tracker is destroyed without its teardown while it loads, and
two loops it started go on for the page's whole life: its elapsed-time count and its loader's
spring animation each ask for every animation frame (60 a second) of a page that shows neither.
Every frame is a main-thread pass for the browser (40-80 ms of CPU a second on this project's
2-core machine), which a visitor running the model on the same machine pays out of its speed.

What: a frame callback asked for from inside another frame callback (a loop) while nothing on
the page has changed for QUIET_MS gets its frame SLOW_MS later instead; as soon as the page
changes (any DOM mutation) loops get every frame again. One-off requests (an event's redraw, a
scroll) are never delayed, and anything that moves on the page changes it, so it keeps its
frames. The script must come first: Gradio's modules keep the `requestAnimationFrame` they find
when they load, and Gradio's own `head` option adds scripts only after that. `PageScript`, an ASGI
middleware (app.launch_options), adds it to the page Gradio serves.
"""

from __future__ import annotations

QUIET_FRAMES = r"""
(() => {
  const QUIET_MS = 100;  // a loop that has changed nothing on the page for this long...
  const SLOW_MS = 250;   // ...gets a frame this often, until the page changes again
  const frame = window.requestAnimationFrame.bind(window);
  const cancelFrame = window.cancelAnimationFrame.bind(window);
  let inFrame = false;
  let changedAt = performance.now();
  const changes = new MutationObserver(() => { changedAt = performance.now(); });
  changes.observe(document, {
    subtree: true, childList: true, attributes: true, characterData: true,
  });
  const quiet = () => {
    // a change made in this frame is not reported yet (observers run after the callback)
    if (changes.takeRecords().length > 0) changedAt = performance.now();
    return performance.now() - changedAt > QUIET_MS;
  };
  const inside = (callback) => (time) => {
    inFrame = true;
    try { callback(time); } finally { inFrame = false; }
  };
  const slowed = new Map();  // our id (negative) -> {timer, frame}
  let nextId = -1;
  window.__shufflelm_slowed_frames = 0;
  window.requestAnimationFrame = (callback) => {
    if (!inFrame || !quiet()) return frame(inside(callback));
    window.__shufflelm_slowed_frames++;
    const id = nextId--;
    const later = { frame: null };
    later.timer = setTimeout(() => {
      later.frame = frame((time) => { slowed.delete(id); inside(callback)(time); });
    }, SLOW_MS);
    slowed.set(id, later);
    return id;
  };
  window.cancelAnimationFrame = (id) => {
    const later = slowed.get(id);
    if (!later) return cancelFrame(id);
    clearTimeout(later.timer);
    if (later.frame !== null) cancelFrame(later.frame);
    slowed.delete(id);
  };
})();
"""


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

    def __init__(self, app, source: str = QUIET_FRAMES):
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
