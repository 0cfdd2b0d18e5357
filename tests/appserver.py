"""Start the app in-process on a free port, for client and browser tests."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(model_spec: str = "tiny", *, model=None):
    """Yield the URL of a running app whose model SHUFFLELM_MODEL=model_spec selects (or
    `model`, a LazyModel), and the demo."""
    previous = os.environ.get("SHUFFLELM_MODEL")
    os.environ["SHUFFLELM_MODEL"] = model_spec
    import app

    demo = app.build_demo(model)
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        **app.LAUNCH_OPTIONS,
    )
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()
        if previous is None:
            os.environ.pop("SHUFFLELM_MODEL", None)
        else:
            os.environ["SHUFFLELM_MODEL"] = previous
