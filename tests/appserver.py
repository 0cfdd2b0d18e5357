"""Start the app in-process on a free port, for client and browser tests."""

from __future__ import annotations

import socket
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(model_spec: str = "tiny", *, model=None):
    """Yield the URL of a running app on the model `model_spec` names ("tiny", "default", a
    head directory) or on `model`, a LazyModel, and the demo."""
    import app
    from shuffle_model.model.runtime import LazyModel

    demo = app.build_demo(model or LazyModel.from_spec(model_spec))
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        **app.launch_options(),
    )
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()
