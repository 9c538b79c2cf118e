"""The interface of the public recommendation endpoints: their components, in API order, and how
their events are queued.

The page (:func:`~recommender.serving.ui.create_app`) places these components in its layout; the
benchmarks' echo app (``benchmarks/latency_gradio.py``) builds the very same ones around trivial
handlers. Both take them from here, so the throughput benchmark compares the app's own work with
Gradio's cost for one interface, and the two cannot drift apart (``tests/test_throughput_benchmark.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import gradio as gr

from ..engine import MAX_K, MODES
from ..search.config import FUSION_METHODS, SearchConfig

#: Inputs both recommendation endpoints take after their query, in API order.
SETTINGS = ("mode", "k", "alpha", "fusion")
CONTROLS = ("where", "diversity", "max_per", "dedupe", "offset", "items", "exclude")
RECOMMEND_INPUTS = ("image", "title", *SETTINGS, *CONTROLS)
RECOMMEND_ITEM_INPUTS = ("item_id", *SETTINGS, *CONTROLS)
OUTPUTS = ("gallery", "json")
#: Events queued at most this deep; more get Gradio's "queue is full".
MAX_QUEUE = 64
#: ``demo.queue`` recomputes a traffic summary (a pandas DataFrame over up to 10,000 past events) after
#: every event by default, for the ``/monitoring`` page; the app launches with monitoring off, so never.
ANALYTICS_CACHE_FREQUENCY = "GRADIO_ANALYTICS_CACHE_FREQUENCY"

_FACTORIES: dict[str, Callable[[SearchConfig], gr.components.Component]] = {
    "image": lambda _: gr.Image(label="Thumbnail", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                height=220, elem_id="query-image"),
    "title": lambda _: gr.Textbox(label="Title", placeholder="e.g. best budget phone 2025", max_lines=3,
                                  elem_id="query-title"),
    "item_id": lambda _: gr.Textbox(label="Item id", placeholder="pick a video above, or type its id",
                                    elem_id="item-id"),
    "mode": lambda _: gr.Radio(list(MODES), value="hybrid", label="Mode", elem_id="mode",
                               info="image: look-alike thumbnails (or thumbnails for a title) · text: similar titles · "
                                    "hybrid: both"),
    "k": lambda _: gr.Slider(1, MAX_K, value=8, step=1, label="How many results (k)", elem_id="k"),
    "alpha": lambda search: gr.Slider(0, 1, value=search.alpha, step=0.05, label="Title weight α",
                                      info="0 = thumbnail only, 1 = title only", elem_id="alpha"),
    "fusion": lambda search: gr.Radio(list(FUSION_METHODS), value=search.fusion, label="Fusion",
                                      info="weighted scores, or reciprocal rank fusion", elem_id="fusion"),
    "diversity": lambda _: gr.Slider(0, 1, value=0.0, step=0.1, label="Diversity", elem_id="diversity",
                                     info="0 = closest matches first, 1 = as varied as possible"),
    "dedupe": lambda _: gr.Checkbox(True, label="Hide near-identical thumbnails", elem_id="dedupe"),
    # The API's own parameters (the page passes them from its state instead), in a hidden column.
    "where": lambda _: gr.JSON(None, label="where"),
    "max_per": lambda _: gr.JSON(None, label="max_per"),
    "items": lambda _: gr.JSON(None, label="items"),
    "exclude": lambda _: gr.JSON(None, label="exclude"),
    "offset": lambda _: gr.Number(0, precision=0, minimum=0, label="offset"),
    "gallery": lambda _: gr.Gallery(label="Recommendations", columns=4, allow_preview=False, interactive=False,
                                    object_fit="cover", height="auto", elem_id="results-gallery"),
    "json": lambda _: gr.JSON(label="results", elem_id="results-json"),
}
COMPONENTS = tuple(_FACTORIES)


def component(name: str, search: SearchConfig) -> gr.components.Component:
    """A new component for the input or output ``name`` (see :data:`COMPONENTS`); ``search``
    gives the α slider's and fusion choice's starting values (the bundle's)."""
    return _FACTORIES[name](search)


def engine_queue(concurrency: int) -> dict[str, Any]:
    """Event options of every recommendation event: one queue slot pool shared by the API and the page."""
    return {"concurrency_limit": concurrency, "concurrency_id": "engine"}


def add_recommendation_api(components: Mapping[str, gr.components.Component], recommend: Callable,
                           recommend_item: Callable, concurrency: int) -> None:
    """The ``/recommend`` and ``/recommend_item`` events, on hidden buttons placed where this is called.

    They skip Gradio's preprocessing so that the engine, not Pillow inside Gradio, decodes uploads
    (bad images get the engine's message) and the controls arrive as sent.
    """
    outputs = [components[name] for name in OUTPUTS]
    for api_name, function, inputs in (("recommend", recommend, RECOMMEND_INPUTS),
                                       ("recommend_item", recommend_item, RECOMMEND_ITEM_INPUTS)):
        gr.Button(visible=False).click(function, [components[name] for name in inputs], outputs, api_name=api_name,
                                       preprocess=False, **engine_queue(concurrency))


def configure_queue(demo: gr.Blocks, concurrency: int) -> gr.Blocks:
    """Gradio's queue for an app serving the recommendation API: ``concurrency`` events at once by default,
    at most :data:`MAX_QUEUE` waiting, and no per-event traffic summary (launch with monitoring off)."""
    os.environ.setdefault(ANALYTICS_CACHE_FREQUENCY, str(2**62))
    return demo.queue(default_concurrency_limit=concurrency, max_size=MAX_QUEUE)
