"""The Gradio Blocks page: layout, and the wiring of every event to an endpoint.

Public events carry an ``api_name`` (see the README's API section); events that only glue the page
together (clicks on galleries, rendering the details table, startup polling) are private.
Recommendation events skip Gradio's preprocessing so that the engine, not Pillow inside
Gradio, decodes uploads: bad images then get the engine's clear message. The endpoint opens only
files in Gradio's upload folder (:func:`~recommender.serving.endpoints.uploaded_image`).
"""

from __future__ import annotations

import re
from typing import Any

import gradio as gr
import pandas as pd

from ..engine import MAX_K, MODES, Recommender
from ..search.config import FUSION_METHODS
from .endpoints import Endpoints
from .startup import Startup

#: Largest upload the server accepts (a YouTube thumbnail is well under 1 MB).
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: How often an open page refreshes its banner when the app watches its bundle for new revisions.
WATCHED_BANNER_SECONDS = 15.0
#: Recommendation requests served at once; the engine is thread-safe and mostly waits on small matrix products.
DEFAULT_CONCURRENCY = 4
THEME = gr.themes.Soft(primary_hue="red", secondary_hue="slate", neutral_hue="slate")
CSS = """
.gradio-container { max-width: 1280px !important; margin: auto; }
#banner { font-size: 0.9em; opacity: 0.85; }
#details { contain: inline-size; }  /* a wide table scrolls inside its box instead of widening the page */
#results-gallery .caption-label, #catalog-gallery .caption-label { font-size: 0.8em; }
@media (max-width: 640px) {
  #results-gallery .grid-container, #catalog-gallery .grid-container {
    grid-template-columns: repeat(2, minmax(0, 1fr)) !important;
  }
}
"""
INTRO = ("# Video recommender\n"
         "Find videos like one you know: from its **thumbnail**, its **title**, or both. "
         "Click any recommendation to keep exploring from it.")
TABLE_HEADERS = ("#", "title", "score", "image score", "text score", "item id")
EMPTY_RESULTS = "Upload a thumbnail, type a title or pick a catalog item, then press **Recommend**."


def create_app(source: Recommender | Startup, concurrency: int = DEFAULT_CONCURRENCY) -> gr.Blocks:
    """Build the page for a loaded recommender, or for a :class:`Startup` still loading one (it shows progress)."""
    startup = source if isinstance(source, Startup) else Startup.loaded(source)
    api = Endpoints(startup)
    default_alpha = startup.default_alpha()
    first_gallery, first_page = api.shuffle_catalog() if startup.ready else ([], None)
    engine = {"concurrency_limit": concurrency, "concurrency_id": "engine"}
    private = {"api_visibility": "private"}

    with gr.Blocks(title="Video recommender") as demo:
        gr.Markdown(INTRO)
        banner = gr.Markdown(banner_text(api), elem_id="banner")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300, elem_id="query-column"):
                with gr.Tabs(selected="upload") as tabs:
                    with gr.Tab("Upload or type", id="upload"):
                        image = gr.Image(label="Thumbnail", type="filepath", image_mode=None,
                                         sources=["upload", "clipboard"], height=220, elem_id="query-image")
                        title = gr.Textbox(label="Title", placeholder="e.g. best budget phone 2025", max_lines=3,
                                           elem_id="query-title")
                        recommend_button = gr.Button("Recommend", variant="primary", elem_id="recommend-button")
                    with gr.Tab("Pick from the catalog", id="catalog"):
                        with gr.Row(equal_height=True):
                            search = gr.Textbox(show_label=False, placeholder="Search titles, press Enter", scale=4,
                                                min_width=160, elem_id="catalog-search")
                            shuffle = gr.Button("Shuffle", scale=1, min_width=90, elem_id="shuffle-button")
                        catalog_gallery = gr.Gallery(first_gallery, label="Catalog",
                                                     columns=3, height=330, allow_preview=False, interactive=False,
                                                     object_fit="cover", elem_id="catalog-gallery")
                        catalog_json = gr.JSON(first_page, label="catalog", visible=False)
                        with gr.Row(equal_height=True):
                            item_image = gr.Image(show_label=False, interactive=False, height=90, min_width=120,
                                                  scale=1, buttons=[], container=False, visible=False)
                            item_text = gr.Markdown("No item picked yet.", elem_id="item-text")
                        item_id = gr.Textbox(label="Item id", placeholder="pick a video above, or type its id",
                                             elem_id="item-id")
                        item_button = gr.Button("Recommend similar", variant="primary", elem_id="item-button")
                with gr.Accordion("Settings", open=True):
                    mode = gr.Radio(list(MODES), value="hybrid", label="Mode", elem_id="mode",
                                    info="image: look-alike thumbnails · text: similar titles · hybrid: both")
                    k = gr.Slider(1, MAX_K, value=8, step=1, label="How many results (k)", elem_id="k")
                    with gr.Column() as hybrid_settings:
                        alpha = gr.Slider(0, 1, value=default_alpha, step=0.05, label="Title weight α",
                                          info="0 = thumbnail only, 1 = title only", elem_id="alpha")
                        fusion = gr.Radio(list(FUSION_METHODS), value="weighted", label="Fusion",
                                          info="weighted scores, or reciprocal rank fusion", elem_id="fusion")
            with gr.Column(scale=3, min_width=300, elem_id="results-column"):
                summary = gr.Markdown(EMPTY_RESULTS, elem_id="summary")
                results_gallery = gr.Gallery(label="Recommendations", columns=4,
                                             allow_preview=False, interactive=False, object_fit="cover",
                                             height="auto", elem_id="results-gallery")
                with gr.Accordion("Details", open=True):
                    table = gr.Dataframe(headers=list(TABLE_HEADERS), interactive=False, wrap=True, max_chars=48,
                                         elem_id="details")
                with gr.Accordion("JSON (what the API returns)", open=False):
                    results_json = gr.JSON(label="results", elem_id="results-json")
        timer = gr.Timer(1.0, active=not startup.ready)

        settings = [mode, k, alpha, fusion]
        shown_results = [results_gallery, results_json]
        picked = [item_id, item_image, item_text]

        # Public API: one event per action, with the JSON beside the gallery.
        recommend_button.click(api.recommend, [image, title, *settings], shown_results, api_name="recommend",
                               preprocess=False, scroll_to_output=True, **engine)
        title.submit(api.recommend, [image, title, *settings], shown_results, preprocess=False, **engine, **private)
        item_button.click(api.recommend_item, [item_id, *settings], shown_results, api_name="recommend_item",
                          preprocess=False, scroll_to_output=True, **engine)
        search.submit(api.search_catalog, search, [catalog_gallery, catalog_json], api_name="search_catalog",
                      preprocess=False)
        shuffle.click(api.shuffle_catalog, None, [catalog_gallery, catalog_json], api_name="shuffle_catalog")
        gr.api(api.info, api_name="info")

        # Page glue: picking an item (from the catalog or from the results) makes it the query.
        item_id.submit(show_item(api), [item_id], picked, **private, queue=False).success(
            api.recommend_item, [item_id, *settings], shown_results, preprocess=False, **engine, **private)
        catalog_gallery.select(pick(api, "items"), [catalog_json], picked, **private).success(
            api.recommend_item, [item_id, *settings], shown_results, preprocess=False, **engine, **private)
        results_gallery.select(pick(api, "results", switch_to=True), [results_json], [*picked, tabs],
                               **private).success(
            api.recommend_item, [item_id, *settings], shown_results, preprocess=False, **engine, **private)
        results_json.change(render_details, results_json, [summary, table], **private, queue=False)
        mode.change(lambda chosen: gr.Column(visible=chosen == "hybrid"), mode, hybrid_settings, **private,
                    queue=False)

        # Startup: poll until the recommender is ready, then fill the page.
        poll, update = [banner, catalog_gallery, catalog_json, alpha, timer], refresh(api)
        demo.load(update, catalog_json, poll, **private)
        timer.tick(update, catalog_json, poll, **private)

    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    return demo


def launch(demo: gr.Blocks, **options: Any) -> Any:
    """``demo.launch`` with the app's theme, CSS and upload cap; ``options`` override (ports, quiet...)."""
    return demo.launch(**{"max_file_size": MAX_UPLOAD_BYTES, "theme": THEME, "css": CSS, **options})


def banner_text(api: Endpoints) -> str:
    """What is loaded, in one line: catalog size, models, index types and where the bundle came from."""
    info = api.info()
    if not info["ready"]:
        return f"**{markdown_text(info['status'], limit=400)}**"
    return (f"**{info['items']:,} videos** · titles: `{info['text_model']}` ({info['text_dimension']}-d, "
            f"{info['text_index']}) · thumbnails: {info['image_encoder'].upper()}"
            f"{' + title head' if info['title_head'] else ''} ({info['image_dimension']}-d, "
            f"{info['image_index']}) · default α {info['default_alpha']:.2f} · bundle: "
            f"{markdown_text(info['bundle'], limit=200)} · revision `{info['revision']['id']}`")


def refresh(api: Endpoints):
    """Page load and startup polling: progress until ready; then the banner, and a catalog page and α
    for a page built before the recommender was ready (one built after has them already)."""

    def update(shown: dict | None) -> tuple:
        if not api.startup.ready:
            return banner_text(api), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=not api.startup.failed)
        # A watched bundle can change revision: the banner keeps saying which one is served.
        timer = gr.Timer(WATCHED_BANNER_SECONDS, active=True) if api.startup.watch_status else gr.Timer(active=False)
        if shown and shown.get("items"):
            return banner_text(api), gr.skip(), gr.skip(), gr.skip(), timer
        gallery, page = api.shuffle_catalog()
        return banner_text(api), gallery, page, api.recommender.default_alpha, timer

    return update


def show_item(api: Endpoints):
    """Handler for an item id typed into the box: preview it before recommending from it."""

    def show(chosen: str) -> tuple:
        return preview(api, str(chosen or "").strip())

    return show


def preview(api: Endpoints, item_id: str) -> tuple[str, gr.Image, str]:
    """Item id box, thumbnail and description of the item that is now the query."""
    path, item = api.item_preview(item_id)
    channel = item["metadata"].get("channel")
    by = f" · {markdown_text(str(channel))}" if channel else ""
    return item["item_id"], gr.Image(value=path, visible=True), f"**{markdown_text(item['title'])}**{by}"


def pick(api: Endpoints, key: str, switch_to: bool = False):
    """Handler for a click on a gallery whose JSON lists items under ``key``: that item becomes the query."""

    def select(data: dict | None, event: gr.SelectData) -> tuple:
        items = (data or {}).get(key) or []
        if not isinstance(event.index, int) or not 0 <= event.index < len(items):
            raise gr.Error("That item is no longer shown; pick again.", print_exception=False)
        chosen = items[event.index]["item_id"]
        picked = preview(api, chosen)
        return (*picked, gr.Tabs(selected="catalog")) if switch_to else picked

    return select


def render_details(data: dict | None) -> tuple[str, pd.DataFrame]:
    """Summary line and details table for a recommendation result (the JSON the API returned)."""
    if not data or "results" not in data:
        return EMPTY_RESULTS, pd.DataFrame(columns=list(TABLE_HEADERS))
    query = data["query"]
    if query["type"] == "item":
        described = f"catalog video **{markdown_text(query['title'])}**"
    else:
        parts = [f"thumbnail *{markdown_text(query['image'])}*" if query.get("image") else "",
                 f"title **{markdown_text(query['title'])}**" if query.get("title") else ""]
        described = " and ".join(part for part in parts if part)
    how = data["mode"] + (f", α = {data['alpha']:.2f}, {data['fusion']}" if data["mode"] == "hybrid" else "")
    lines = [f"**{len(data['results'])} recommendations** for {described} ({how}). Click one to explore from it."]
    lines += [f"> {note}" for note in data["notes"]]
    rows = [{"#": r["rank"], "title": r["title"], "score": r["score"], "image score": r["image_score"],
             "text score": r["text_score"], **r["metadata"], "item id": r["item_id"]} for r in data["results"]]
    return "\n\n".join(lines), pd.DataFrame(rows, columns=list(rows[0]) if rows else list(TABLE_HEADERS)).round(3)


def markdown_text(text: str, limit: int = 120) -> str:
    """User or catalog text shown inside Markdown: shortened, with Markdown syntax characters escaped."""
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", text)
