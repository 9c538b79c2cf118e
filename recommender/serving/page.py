"""What the page does around the API calls, with each visitor's state kept in ``gr.State``.

The page remembers the last request it sent (so **More** asks for the next page of the same ranking
and **Less like this** asks again without the result), the items hidden with "less like this", the
session basket and the selected result. Every recommendation still goes through
:class:`~recommender.serving.endpoints.Endpoints`, the functions behind the public API.
"""

from __future__ import annotations

import re
from typing import Any

import gradio as gr

from .endpoints import Endpoints, user_errors

#: Metadata columns offered as filter dropdowns (the page has this many slots).
FILTER_SLOTS = 3
#: Most values a column may have to get a dropdown (a channel dropdown stays usable: it filters as you type).
FILTER_VALUES = 200

Request = dict[str, Any]  # {"endpoint": "recommend" | "recommend_item", "arguments": {...}}
Item = dict[str, str]  # {"item_id": ..., "title": ...}


def where_of(columns: list[str] | None, chosen: tuple[Any, ...]) -> dict[str, list] | None:
    """The ``where`` filter the dropdowns describe: each column with values chosen allows just those."""
    where = {column: list(values) for column, values in zip(columns or [], chosen) if values}
    return where or None


class Page:
    """Event handlers of the page; ``gr.State`` values come in as arguments and go out as results."""

    def __init__(self, api: Endpoints):
        self.api = api

    # -- filters -------------------------------------------------------------------------------------
    def filter_choices(self) -> list[tuple[str, list[str]]]:
        """The metadata columns the filter slots offer, with their values (most frequent first)."""
        columns = self.api.recommender.filterable_columns(max_values=FILTER_VALUES)
        return [(column, [str(value) for value in values]) for column, values in columns.items()][:FILTER_SLOTS]

    def filters(self) -> tuple[list[str], list[gr.Dropdown]]:
        """Columns of the filter slots, and the slots' dropdowns (unused slots hidden)."""
        choices = self.filter_choices()
        return [column for column, _ in choices], [gr.Dropdown(**filter_slot(choices, slot))
                                                   for slot in range(FILTER_SLOTS)]

    # -- asking ---------------------------------------------------------------------------------------
    def recommend(self, image: Any, title: str | None, *settings: Any) -> tuple:
        """The **Recommend** button: a thumbnail and/or a title."""
        return self.run({"endpoint": "recommend", "arguments": {"image": image, "title": title,
                                                                **self.settings(*settings)}})

    def recommend_item(self, item_id: str | None, *settings: Any) -> tuple:
        """A catalog item picked, typed or explored from."""
        return self.run({"endpoint": "recommend_item", "arguments": {"item_id": item_id, **self.settings(*settings)}})

    def recommend_session(self, basket: list[Item] | None, *settings: Any) -> tuple:
        """**Recommend for this session**: every item in the basket at once, none of them returned."""
        if not basket:
            raise gr.Error("Add results to the session first.", print_exception=False)
        return self.run({"endpoint": "recommend", "arguments": {"items": [item["item_id"] for item in basket],
                                                                **self.settings(*settings)}})

    @staticmethod
    def settings(mode: Any, k: Any, alpha: Any, fusion: Any, diversity: Any, dedupe: Any, excluded: list[Item] | None,
                 columns: list[str] | None, *chosen: Any) -> dict[str, Any]:
        """Endpoint arguments from the settings panel, the filter dropdowns and the items hidden so far."""
        return {"mode": mode, "k": k, "alpha": alpha, "fusion": fusion, "diversity": diversity, "dedupe": dedupe,
                "where": where_of(columns, chosen), "exclude": [item["item_id"] for item in excluded or []] or None}

    def run(self, request: Request) -> tuple:
        """First page of ``request``: gallery, JSON, the request (for **More**), the **More** button,
        and the selection cleared (its result may be gone)."""
        gallery, data = getattr(self.api, request["endpoint"])(**request["arguments"])
        return (gr.Gallery(gallery, selected_index=None), data, request, gr.Button(visible=data["more"]), None,
                gr.Column(visible=False))

    @user_errors
    def more(self, request: Request | None, shown: dict | None) -> tuple:
        """**More**: the next page of the same ranking, appended to what is shown."""
        if not request or not shown or "results" not in shown:
            raise gr.Error("Ask for recommendations first.", print_exception=False)
        _, page = getattr(self.api, request["endpoint"])(**request["arguments"],
                                                         offset=shown["offset"] + len(shown["results"]))
        merged = {**page, "results": shown["results"] + page["results"], "offset": shown["offset"]}
        return self.api.gallery_of(merged["results"]), merged, gr.Button(visible=merged["more"])

    # -- the selected result ------------------------------------------------------------------------
    def select(self, shown: dict | None, event: gr.SelectData) -> tuple[Item, gr.Column, str]:
        """A click on a result selects it and offers what can be done with it."""
        results = (shown or {}).get("results") or []
        if not isinstance(event.index, int) or not 0 <= event.index < len(results):
            raise gr.Error("That result is no longer shown; pick again.", print_exception=False)
        chosen = results[event.index]
        channel = chosen.get("metadata", {}).get("channel")
        by = f" · {markdown_text(str(channel))}" if channel else ""
        return ({"item_id": chosen["item_id"], "title": chosen["title"]}, gr.Column(visible=True),
                f"Selected: **{markdown_text(chosen['title'])}**{by}")

    def add_to_basket(self, basket: list[Item] | None, selected: Item | None) -> tuple[list[Item], gr.Column, str]:
        """**Add to session**: the selected result joins the basket (once)."""
        selected = self.chosen(selected)
        basket = list(basket or [])
        if selected["item_id"] not in {item["item_id"] for item in basket}:
            basket.append(selected)
        return basket, gr.Column(visible=True), basket_text(basket)

    @staticmethod
    def clear_basket() -> tuple[list[Item], gr.Column, str]:
        return [], gr.Column(visible=False), ""

    def less_like_this(self, excluded: list[Item] | None, selected: Item | None,
                       request: Request | None) -> tuple:
        """**Less like this**: never show the selected result again in this visit, and ask again without it."""
        selected = self.chosen(selected)
        excluded = list(excluded or [])
        if selected["item_id"] not in {item["item_id"] for item in excluded}:
            excluded.append(selected)
        return (excluded, *hidden_note(excluded), *self.again(request, excluded))

    def show_hidden_again(self, request: Request | None) -> tuple:
        """Forget every "less like this" of this visit, and ask again."""
        return ([], *hidden_note([]), *self.again(request, []))

    def again(self, request: Request | None, excluded: list[Item]) -> tuple:
        """The last request asked again with this exclude list (nothing changes if nothing was asked yet)."""
        if not request:
            return (gr.skip(),) * 6
        exclude = [item["item_id"] for item in excluded] or None
        return self.run({**request, "arguments": {**request["arguments"], "exclude": exclude}})

    @staticmethod
    def chosen(selected: Item | None) -> Item:
        if not selected:
            raise gr.Error("Click a result first.", print_exception=False)
        return selected


def filter_slot(choices: list[tuple[str, list[str]]], slot: int) -> dict[str, Any]:
    """Label, choices and visibility of filter dropdown ``slot`` (hidden when there is no column for it)."""
    if slot < len(choices):
        column, values = choices[slot]
        return {"choices": values, "value": [], "label": column, "visible": True}
    return {"choices": [], "value": [], "label": "filter", "visible": False}


def basket_text(basket: list[Item]) -> str:
    titles = " · ".join(markdown_text(item["title"], limit=60) for item in basket)
    return f"**Session** ({len(basket)} video{'s' if len(basket) != 1 else ''}): {titles}"


def hidden_note(excluded: list[Item]) -> tuple[gr.Row, str]:
    """The "N hidden" line under the results, shown while anything is hidden."""
    count = len(excluded)
    return gr.Row(visible=bool(count)), f"{count} video{'s' if count != 1 else ''} hidden with *less like this*."


def markdown_text(text: str, limit: int = 120) -> str:
    """User or catalog text shown inside Markdown: shortened, with Markdown syntax characters escaped."""
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", text)
