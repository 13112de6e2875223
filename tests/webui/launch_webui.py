"""Start a real text-generation-webui with stock gradio 4.37.2 (test helper, not shipped).

The webui pins a custom gradio build that is not on PyPI; stock 4.37.2 lacks three things it
uses (see ../shared/WEBUI.md). This launcher adds them before importing server.py (and lets
gradio's start-up check of its own page wait longer than 3 s), then runs it with the given
arguments. Usage, from the webui's folder:

    python /path/to/launch_webui.py --cpu --model NAME --extensions spanish_ft --api ...
"""

from __future__ import annotations

import functools
import runpy
import sys
from pathlib import Path

import huggingface_hub

if not hasattr(huggingface_hub, "HfFolder"):  # removed in hub 1.x, still imported by gradio 4.37

    class _HfFolder:
        @staticmethod
        def get_token():
            return huggingface_hub.get_token()

    huggingface_hub.HfFolder = _HfFolder

import gradio as gr
import gradio.networking as gradio_networking
import gradio_client.utils as gradio_client_utils
import httpx


def _drop_unknown_kwargs(init):
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        kwargs.pop("dark_theme", None)
        return init(self, *args, **kwargs)

    return wrapper


class Headless(gr.JSON):
    """Hidden JSON component standing in for the custom build's gr.Headless."""

    @functools.wraps(gr.JSON.__init__)
    def __init__(self, *args, **kwargs):
        kwargs["visible"] = False
        super().__init__(*args, **kwargs)

    def get_block_name(self):
        # gradio names the Svelte component after type(self).__name__: name the parent's
        # instead, or the page asks for a custom component that does not exist and hangs
        return gr.JSON.__name__.lower()


class DragDrop(gr.Textbox):
    """A textbox standing in for the custom build's gr.DragDrop."""

    @functools.wraps(gr.Textbox.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

    def get_block_name(self):
        return gr.Textbox.__name__.lower()  # the parent's Svelte component (see Headless)


def _accept_boolean_schemas(convert):
    # gradio 4.37 crashes on `additionalProperties: true` when it serves the API page
    @functools.wraps(convert)
    def wrapper(schema, defs=None):
        if isinstance(schema, bool):
            return "Any"
        return convert(schema, defs)

    return wrapper


def _url_ok_patiently(url: str) -> bool:
    # gradio 4.37 checks its own page with a 3 s timeout and dies of the ReadTimeout when a busy CPU
    # (a training run, the model answering a test's first request) serves the page more slowly
    try:
        return httpx.head(url, timeout=120, verify=False).status_code in (200, 401, 302)
    except httpx.HTTPError:
        return False


def patch_gradio() -> None:
    gradio_networking.url_ok = _url_ok_patiently
    gradio_client_utils._json_schema_to_python_type = _accept_boolean_schemas(
        gradio_client_utils._json_schema_to_python_type
    )
    gr.Blocks.__init__ = _drop_unknown_kwargs(gr.Blocks.__init__)
    gr.Headless = Headless
    gr.DragDrop = DragDrop


if __name__ == "__main__":
    patch_gradio()
    sys.path.insert(0, str(Path.cwd()))
    sys.argv = ["server.py", *sys.argv[1:]]
    runpy.run_path("server.py", run_name="__main__")
