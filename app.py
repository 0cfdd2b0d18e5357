"""ShuffleLM web app (placeholder until the app issue lands): builds a Gradio page."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="ShuffleLM") as demo:
        gr.Markdown("# ShuffleLM\nThe interactive demo is being built; see the README.")
    return demo


if __name__ == "__main__":
    build_demo().launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
