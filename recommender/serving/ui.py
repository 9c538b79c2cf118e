"""The Gradio Blocks page: layout, and the wiring of every event to an endpoint.

Public events carry an ``api_name`` (see the README's API section); events that only glue the page
together (clicks on galleries, rendering the details table, startup polling) are private.
Recommendation events skip Gradio's preprocessing so that the engine, not Pillow inside
Gradio, decodes uploads: bad images then get the engine's clear message. The endpoint opens only
files in Gradio's upload folder (:func:`~recommender.serving.endpoints.uploaded_image`).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from ..engine import Recommender
from .endpoints import Endpoints
from .interface import add_recommendation_api, component, configure_queue, engine_queue
from .page import FILTER_SLOTS, Page, filter_slot, markdown_text
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
         "Click a recommendation to explore from it, add it to a session, or see less like it.")
TABLE_HEADERS = ("#", "title", "score", "image score", "text score", "item id")
EMPTY_RESULTS = "Upload a thumbnail, type a title or pick a catalog item, then press **Recommend**."


def create_app(source: Recommender | Startup, concurrency: int = DEFAULT_CONCURRENCY) -> gr.Blocks:
    """Build the page for a loaded recommender, or for a :class:`Startup` still loading one (it shows progress)."""
    startup = source if isinstance(source, Startup) else Startup.loaded(source)
    api = Endpoints(startup)
    page = Page(api)
    search_defaults = startup.default_search()
    first_gallery, first_page = api.shuffle_catalog() if startup.ready else ([], None)
    first_filters = page.filter_choices() if startup.ready else []
    engine = engine_queue(concurrency)
    private = {"api_visibility": "private"}

    def new(name: str) -> gr.components.Component:
        return component(name, search_defaults)

    with gr.Blocks(title="Video recommender") as demo:
        gr.Markdown(INTRO)
        banner = gr.Markdown(banner_text(api), elem_id="banner")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300, elem_id="query-column"):
                with gr.Tabs(selected="upload") as tabs:
                    with gr.Tab("Upload or type", id="upload"):
                        image, title = new("image"), new("title")
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
                        item_id = new("item_id")
                        item_button = gr.Button("Recommend similar", variant="primary", elem_id="item-button")
                with gr.Column(visible=False, elem_id="session") as session_box:
                    session_text = gr.Markdown(elem_id="session-text")
                    with gr.Row():
                        session_button = gr.Button("Recommend for this session", variant="primary", size="sm",
                                                   min_width=120, elem_id="session-button")
                        clear_session = gr.Button("Clear", size="sm", min_width=80, elem_id="clear-session")
                with gr.Accordion("Settings", open=True):
                    mode, k = new("mode"), new("k")
                    with gr.Column() as hybrid_settings:
                        alpha, fusion = new("alpha"), new("fusion")
                    filters = [gr.Dropdown(**filter_slot(first_filters, slot), multiselect=True,
                                           info="only these (none = any)", elem_id=f"filter-{slot}")
                               for slot in range(FILTER_SLOTS)]
                    diversity, dedupe = new("diversity"), new("dedupe")
            with gr.Column(scale=3, min_width=300, elem_id="results-column"):
                summary = gr.Markdown(EMPTY_RESULTS, elem_id="summary")
                results_gallery = new("gallery")
                with gr.Column(visible=False, elem_id="selected-actions") as actions:
                    selected_text = gr.Markdown(elem_id="selected-text")
                    with gr.Row():
                        explore_button = gr.Button("More like this", size="sm", min_width=100,
                                                   elem_id="explore-button")
                        basket_button = gr.Button("Add to session", size="sm", min_width=100,
                                                  elem_id="add-to-session")
                        less_button = gr.Button("Less like this", size="sm", min_width=100,
                                                elem_id="less-like-this")
                more_button = gr.Button("More", visible=False, elem_id="more-button")
                with gr.Row(visible=False, equal_height=True, elem_id="hidden-row") as hidden_row:
                    hidden_text = gr.Markdown(elem_id="hidden-text")
                    show_again = gr.Button("Show them again", size="sm", min_width=100, scale=0,
                                           elem_id="show-hidden")
                with gr.Accordion("Details", open=True):
                    table = gr.Dataframe(headers=list(TABLE_HEADERS), interactive=False, wrap=True, max_chars=48,
                                         elem_id="details")
                with gr.Accordion("JSON (what the API returns)", open=False):
                    results_json = new("json")
        with gr.Column(visible=False):  # the API's own parameters (the page passes them from its state instead)
            where, max_per, items, exclude, offset = (new(name) for name in ("where", "max_per", "items", "exclude",
                                                                              "offset"))
            add_recommendation_api({"image": image, "title": title, "item_id": item_id, "mode": mode, "k": k,
                                    "alpha": alpha, "fusion": fusion, "where": where, "diversity": diversity,
                                    "max_per": max_per, "dedupe": dedupe, "offset": offset, "items": items,
                                    "exclude": exclude, "gallery": results_gallery, "json": results_json},
                                   api.recommend, api.recommend_item, concurrency)
        timer = gr.Timer(1.0, active=not startup.ready)

        filter_columns = gr.State([column for column, _ in first_filters])
        last_request, excluded, basket, selected = gr.State(None), gr.State([]), gr.State([]), gr.State(None)
        settings = [mode, k, alpha, fusion]
        page_settings = [*settings, diversity, dedupe, excluded, filter_columns, *filters]
        shown_results = [results_gallery, results_json]
        asked = [*shown_results, last_request, more_button, selected, actions]
        picked = [item_id, item_image, item_text]

        # Public API: one endpoint per action, with the JSON beside the gallery (recommendations: above).
        search.submit(api.search_catalog, search, [catalog_gallery, catalog_json], api_name="search_catalog",
                      preprocess=False)
        shuffle.click(api.shuffle_catalog, None, [catalog_gallery, catalog_json], api_name="shuffle_catalog")
        gr.api(api.info, api_name="info")

        # The page: the same endpoints, called with the visitor's filters, hidden items and session.
        ask = {"preprocess": False, **engine, **private}
        for trigger in (recommend_button.click, title.submit):
            trigger(page.recommend, [image, title, *page_settings], asked, scroll_to_output=True, **ask)
        item_button.click(page.recommend_item, [item_id, *page_settings], asked, scroll_to_output=True, **ask)
        item_id.submit(show_item(api), [item_id], picked, **private, queue=False).success(
            page.recommend_item, [item_id, *page_settings], asked, **ask)
        catalog_gallery.select(pick(api, "items"), [catalog_json], picked, **private).success(
            page.recommend_item, [item_id, *page_settings], asked, **ask)
        more_button.click(page.more, [last_request, results_json], [*shown_results, more_button], **ask)

        results_gallery.select(page.select, [results_json], [selected, actions, selected_text], **private,
                               queue=False)
        explore_button.click(explore(api), [selected], [*picked, tabs], **private).success(
            page.recommend_item, [item_id, *page_settings], asked, **ask)
        basket_button.click(page.add_to_basket, [basket, selected], [basket, session_box, session_text], **private,
                            queue=False)
        clear_session.click(page.clear_basket, None, [basket, session_box, session_text], **private, queue=False)
        session_button.click(page.recommend_session, [basket, *page_settings], asked, scroll_to_output=True, **ask)
        less_button.click(page.less_like_this, [excluded, selected, last_request],
                          [excluded, hidden_row, hidden_text, *asked], **ask)
        show_again.click(page.show_hidden_again, [last_request], [excluded, hidden_row, hidden_text, *asked], **ask)

        results_json.change(render_details, results_json, [summary, table], **private, queue=False)
        mode.change(lambda chosen: gr.Column(visible=chosen == "hybrid"), mode, hybrid_settings, **private,
                    queue=False)

        # Startup: poll until the recommender is ready, then fill the page.
        poll = [banner, catalog_gallery, catalog_json, alpha, fusion, filter_columns, *filters, timer]
        demo.load(refresh(api, page), catalog_json, poll, **private)
        timer.tick(refresh(api, page), catalog_json, poll, **private)

    return configure_queue(demo, concurrency)


def launch(demo: gr.Blocks, **options: Any) -> Any:
    """``demo.launch`` with the app's theme, CSS and upload cap, and Gradio's traffic monitoring off (it is not
    used, and its per-event summary is switched off by :func:`configure_queue`); ``options`` override."""
    return demo.launch(**{"max_file_size": MAX_UPLOAD_BYTES, "theme": THEME, "css": CSS, "enable_monitoring": False,
                          **options})


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


def refresh(api: Endpoints, page: Page):
    """Page load and startup polling: progress until ready; then the banner, and a catalog page, α, fusion and
    filters for a page built before the recommender was ready (one built after has them already)."""

    def update(shown: dict | None) -> tuple:
        unchanged = (gr.skip(),) * (5 + FILTER_SLOTS)  # catalog gallery and page, alpha, fusion, filters
        if not api.startup.ready:
            return banner_text(api), *unchanged, gr.Timer(active=not api.startup.failed)
        # A watched bundle can change revision: the banner keeps saying which one is served.
        timer = gr.Timer(WATCHED_BANNER_SECONDS, active=True) if api.startup.watch_status else gr.Timer(active=False)
        if shown and shown.get("items"):
            return banner_text(api), *unchanged, timer
        gallery, catalog_page = api.shuffle_catalog()
        columns, dropdowns = page.filters()
        search = api.recommender.search
        return banner_text(api), gallery, catalog_page, search.alpha, search.fusion, columns, *dropdowns, timer

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


def pick(api: Endpoints, key: str):
    """Handler for a click on a gallery whose JSON lists items under ``key``: that item becomes the query."""

    def select(data: dict | None, event: gr.SelectData) -> tuple:
        items = (data or {}).get(key) or []
        if not isinstance(event.index, int) or not 0 <= event.index < len(items):
            raise gr.Error("That item is no longer shown; pick again.", print_exception=False)
        return preview(api, items[event.index]["item_id"])

    return select


def explore(api: Endpoints):
    """Handler for **More like this** on the selected result: it becomes the query, shown in the catalog tab."""

    def go(selected: dict | None) -> tuple:
        return (*preview(api, Page.chosen(selected)["item_id"]), gr.Tabs(selected="catalog"))

    return go


def render_details(data: dict | None) -> tuple[str, pd.DataFrame]:
    """Summary line and details table for a recommendation result (the JSON the API returned)."""
    if not data or "results" not in data:
        return EMPTY_RESULTS, pd.DataFrame(columns=list(TABLE_HEADERS))
    how = data["mode"] + (f", α = {data['alpha']:.2f}, {data['fusion']}" if data["mode"] == "hybrid" else "")
    how += "".join(f"; {part}" for part in describe_controls(data.get("controls") or {}))
    lines = [(f"**{len(data['results'])} recommendations** for {describe_query(data['query'])} ({how}). "
             "Click one to explore from it, add it to a session, or see less like it.")]
    lines += [f"> {note}" for note in data["notes"]]
    folded = any(r.get("duplicates") for r in data["results"])
    rows = [{"#": r["rank"], "title": r["title"], "score": r["score"], "image score": r["image_score"],
             "text score": r["text_score"], **r["metadata"],
             **({"near-duplicates": len(r.get("duplicates") or [])} if folded else {}), "item id": r["item_id"]}
            for r in data["results"]]
    return "\n\n".join(lines), pd.DataFrame(rows, columns=list(rows[0]) if rows else list(TABLE_HEADERS)).round(3)


def describe_query(query: dict) -> str:
    """The query in words: a catalog video, a session of videos, a thumbnail and/or a title."""
    if query["type"] == "item":
        return f"catalog video **{markdown_text(query['title'])}**"
    parts = [f"thumbnail *{markdown_text(query['image'])}*" if query.get("image") else "",
             f"title **{markdown_text(query['title'])}**" if query.get("title") else ""]
    if query["type"] == "session":
        titles = [f"**{markdown_text(item['title'], limit=60)}**" for item in query["items"]]
        listed = ", ".join(titles[:-1]) + f" and {titles[-1]}" if len(titles) > 1 else titles[0]
        parts.insert(0, f"a session of {len(titles)} video{'s' if len(titles) != 1 else ''} ({listed})")
    return " and ".join(part for part in parts if part)


def describe_controls(controls: dict) -> list[str]:
    """The controls that changed the ranking, in words (none for the defaults)."""
    parts = []
    for column, allowed in (controls.get("where") or {}).items():
        if isinstance(allowed, dict):
            parts.append(f"{markdown_text(column)} not {markdown_text(', '.join(map(str, allowed.get('not', []))))}")
        else:
            values = allowed if isinstance(allowed, list) else [allowed]
            parts.append(f"only {markdown_text(column)} {markdown_text(', '.join(map(str, values)))}")
    if controls.get("diversity"):
        parts.append(f"diversity {float(controls['diversity']):.1f}")
    parts += [f"at most {limit} per {markdown_text(column)}" for column, limit in (controls.get("max_per") or {}).items()]
    if controls.get("dedupe") is False:
        parts.append("near-duplicates shown")
    if controls.get("exclude"):
        parts.append(f"{len(controls['exclude'])} hidden")
    return parts
