"""The functions behind the app's API endpoints: engine results as (gallery, JSON) pairs.

Every endpoint returns a gallery (catalog thumbnails served as the original files, captioned)
and a JSON-friendly dict with the same results, so ``gradio_client`` callers get data, not
pictures. Every failure becomes a ``gr.Error`` with a message meant for the person who sent the
query; unexpected ones are logged with their traceback and reported without it.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import orjson
from gradio.utils import get_upload_folder

from ..data.catalog import Catalog
from ..encoders.titles import MAX_TITLE_CHARS
from ..engine import Recommender
from ..errors import InvalidQueryError, RecommenderError
from ..results import Recommendation, Recommendations
from .controls import Controls, parse_controls
from .public import public_name
from .startup import Startup

logger = logging.getLogger(__name__)

#: Catalog items per browse / search / shuffle page.
CATALOG_PAGE = 24
#: The answer to an image that is not a file uploaded to this server (see :func:`uploaded_image`).
UPLOAD_AGAIN = "Upload the thumbnail again: this server only reads images uploaded to it."

Gallery = list[tuple[str, str]]
RESULT_FIELDS = tuple(field.name for field in fields(Recommendation))
#: Folders already given to ``gr.set_static_paths`` (a process-wide list in Gradio).
_STATIC_FOLDERS: set[Path] = set()
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(function: F) -> F:
    """Turn exceptions into ``gr.Error`` so the page shows a message and the API raises it, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except RecommenderError as error:
            raise gr.Error(str(error), title="Cannot do that", print_exception=False) from None
        except Exception:
            logger.exception("Unexpected error in %s", function.__name__)
            raise gr.Error("Something went wrong on the server; it logged the details. Try another query.",
                           print_exception=False) from None

    return wrapper  # type: ignore[return-value]


def one_recommender(method: F) -> F:
    """Run an endpoint on the recommender served when it began, to its end: a bundle revision swapped
    in meanwhile answers the next request, never half of this one."""

    @functools.wraps(method)
    def wrapper(self: Endpoints, *args: Any, **kwargs: Any) -> Any:
        with self.startup.pinned():
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def jsonable(value: Any) -> Any:
    """Metadata straight from parquet can hold dates or numpy scalars; make it plain JSON (such values become
    their ``str``, NaN becomes ``null``). A fresh copy: nothing in it is shared with the engine or the catalog."""
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME
                                     | orjson.OPT_NON_STR_KEYS))


def shallow_dict(result: Recommendation) -> dict:
    """``result`` as a dict of its fields, not copied (:func:`jsonable` copies the whole answer once)."""
    return {name: getattr(result, name) for name in RESULT_FIELDS}


def uploaded_image(payload: Any) -> Path | None:
    """The file an unprocessed ``gr.Image`` payload (a FileData dict, or a bare path) names, if it is
    one that was uploaded to this server; ``None`` for no image.

    The payload comes from the client: a raw API call can name any path. Only a regular file inside
    Gradio's upload folder (``GRADIO_TEMP_DIR``, the folder ``/gradio_api/upload`` writes to), symlinks
    resolved, may be opened; anything else gets :data:`UPLOAD_AGAIN`, the same answer whether the path
    exists or not, so the server's files cannot be probed, read or sized through this endpoint.
    """
    if payload is None or payload == "":
        return None
    path = payload.get("path") if isinstance(payload, dict) else payload
    try:
        resolved = Path(path).resolve(strict=True)
        uploaded = resolved.is_relative_to(Path(get_upload_folder()).resolve()) and resolved.is_file()
    except (TypeError, ValueError, OSError, RuntimeError):  # not a path, NUL bytes, missing, a symlink loop
        uploaded = False
    if not uploaded:
        logger.warning("Refused an image outside the upload folder: %r", path)
        raise InvalidQueryError(UPLOAD_AGAIN)
    return resolved


def blank_to_none(text: Any) -> Any:
    """An empty title box is no title (so the engine can say which input is missing)."""
    return None if isinstance(text, str) and not text.strip() else text


class Endpoints:
    """One method per API endpoint, all reading the recommender from a :class:`Startup`."""

    def __init__(self, startup: Startup):
        self.startup = startup

    @property
    def recommender(self) -> Recommender:
        return self.startup.get()

    # -- recommendations ------------------------------------------------------------------------
    @user_errors
    @one_recommender
    def recommend(self, image: Any = None, title: str | None = None, mode: str = "hybrid", k: float = 8,
                  alpha: float | None = None, fusion: str | None = None, where: Any = None, diversity: float = 0.0,
                  max_per: Any = None, dedupe: bool = True, offset: int = 0, items: Any = None,
                  exclude: Any = None) -> tuple[Gallery, dict]:
        """Recommend from an uploaded thumbnail and/or a typed title, or a session of catalog items (``items``,
        with the thumbnail/title as one more member if given)."""
        title = blank_to_none(title)
        path = uploaded_image(image)
        controls = parse_controls(where, diversity, max_per, dedupe, offset, items, exclude)
        fusion = blank_to_none(fusion)
        results = self.recommender.recommend(image=path, title=title, mode=mode, k=k, alpha=alpha, fusion=fusion,
                                             **controls.engine_arguments())
        query = {"type": "session" if controls.items else "upload", "title": title,
                 "image": Path(path).name if path else None}
        if controls.items:
            query["items"] = [self._item(self.recommender.catalog.row_of(item)) for item in controls.items]
        return self._answer(results, query, mode, alpha, fusion, controls)

    @user_errors
    @one_recommender
    def recommend_item(self, item_id: str | None = None, mode: str = "hybrid", k: float = 8,
                       alpha: float | None = None, fusion: str | None = None, where: Any = None,
                       diversity: float = 0.0, max_per: Any = None, dedupe: bool = True, offset: int = 0,
                       items: Any = None, exclude: Any = None) -> tuple[Gallery, dict]:
        """Recommend from a catalog item (which never recommends itself); with ``items``, from the session of
        that item (if any) and those items, none of which is returned."""
        controls = parse_controls(where, diversity, max_per, dedupe, offset, items, exclude)
        fusion = blank_to_none(fusion)
        if controls.items:
            first = blank_to_none(item_id)
            session = ([str(first).strip()] if first is not None else []) + controls.items
            controls = replace(controls, items=session)
            results = self.recommender.recommend(mode=mode, k=k, alpha=alpha, fusion=fusion,
                                                 **controls.engine_arguments())
            query = {"type": "session", "items": [self._item(self.recommender.catalog.row_of(item))
                                                  for item in session]}
            return self._answer(results, query, mode, alpha, fusion, controls)
        row = self._row(item_id)
        results = self.recommender.recommend(item_id=str(item_id).strip(), mode=mode, k=k, alpha=alpha,
                                             fusion=fusion, **controls.engine_arguments())
        query = {"type": "item", **self._item(row)}
        return self._answer(results, query, mode, alpha, fusion, controls)

    def _answer(self, results: Recommendations, query: dict, mode: str, alpha: float | None,
                fusion: str | None, controls: Controls) -> tuple[Gallery, dict]:
        for note in results.notes:
            gr.Warning(note)
        used_alpha = self.recommender.default_alpha if alpha is None else float(alpha)
        used_fusion = self.recommender.search.fusion if fusion is None else fusion
        data = jsonable({
            "query": query,
            "requested_mode": mode,
            "mode": results.mode,
            "alpha": used_alpha if results.mode == "hybrid" else None,
            "fusion": used_fusion if results.mode == "hybrid" else None,
            "controls": {name: value for name, value in controls.engine_arguments().items() if name != "offset"},
            "notes": list(results.notes),
            "results": [shallow_dict(r) for r in results],
            "offset": results.offset,
            "more": results.more,
            "revision": self.recommender.revision["id"],
        })
        return self.gallery_of(data["results"]), data

    def gallery_of(self, results: list[dict]) -> Gallery:
        """The gallery of results given as JSON (as :meth:`recommend` returns them): thumbnails captioned
        with rank, title and score. (A page shown before a live update removed one of its items keeps its
        thumbnail: ``lookup`` finds removed rows too.)"""
        catalog = self._serving_thumbnails()
        return [(catalog.gallery_source(catalog.lookup(r["item_id"])), f"{r['rank']}. {r['title']} · {r['score']:.3f}"
                 + (f" (+{len(r['duplicates'])} alike)" if r.get("duplicates") else "")) for r in results]

    # -- catalog --------------------------------------------------------------------------------
    @user_errors
    @one_recommender
    def search_catalog(self, query: str | None = None) -> tuple[Gallery, dict]:
        """Catalog items whose title contains ``query`` (an empty query browses from the start)."""
        query = query or ""
        if not isinstance(query, str):
            raise gr.Error(f"Search text must be text, got {type(query).__name__}.", title="Cannot do that",
                           print_exception=False)
        if len(query) > MAX_TITLE_CHARS:
            raise gr.Error(f"Search text is {len(query):,} characters long; the limit is {MAX_TITLE_CHARS:,}.",
                           title="Cannot do that", print_exception=False)
        catalog = self.recommender.catalog
        rows = catalog.search(query, limit=len(catalog))
        return self._page(rows[:CATALOG_PAGE], {"query": query, "matches": len(rows)})

    @user_errors
    @one_recommender
    def shuffle_catalog(self) -> tuple[Gallery, dict]:
        """A random page of the catalog, to wander somewhere new."""
        live = self.recommender.catalog.live_rows().tolist()
        rows = sorted(random.Random().sample(live, min(CATALOG_PAGE, len(live))))
        return self._page(rows, {"query": None, "matches": len(live)})

    def _page(self, rows: list[int], header: dict) -> tuple[Gallery, dict]:
        catalog = self._serving_thumbnails()
        gallery = [(catalog.gallery_source(row), catalog.titles[row]) for row in rows]
        return gallery, jsonable({**header, "shown": len(rows), "items": [self._item(row) for row in rows]})

    def _serving_thumbnails(self) -> Catalog:
        """The catalog, with its thumbnail folder among the folders Gradio serves in place (no copy into its
        cache, no re-encoding), so that its :meth:`~Catalog.gallery_source` can go into a gallery."""
        catalog = self.recommender.catalog
        folder = catalog.thumbnail_folder
        if folder not in _STATIC_FOLDERS:
            gr.set_static_paths([folder])
            _STATIC_FOLDERS.add(folder)
        return catalog

    def _row(self, item_id: Any) -> int:
        if item_id is None or not str(item_id).strip():
            raise gr.Error("Pick a catalog item first (browse, search or shuffle the catalog), or type its id.",
                           title="No item", print_exception=False)
        return self.recommender.catalog.row_of(item_id)

    def _item(self, row: int) -> dict:
        catalog = self.recommender.catalog
        return {"item_id": catalog.item_ids[row], "title": catalog.titles[row], "metadata": catalog.metadata(row)}

    # -- status ---------------------------------------------------------------------------------
    @one_recommender
    def info(self) -> dict:
        """What is loaded (catalog size, models, index types) and where the bundle came from: Hub repo
        ids, or local folders by their names (visitors never see server paths)."""
        bundle = self.startup.plan.describe(public=True)
        if not self.startup.ready:
            return {"ready": False, "status": self.startup.status_line(), "bundle": bundle}
        info = self.recommender.info()
        info.update(text_model=public_name(info["text_model"]), source=public_name(info["source"]))
        return jsonable({"ready": True, "bundle": bundle, **info, "text_backend_settled": self.startup.titles_settled,
                         "watch": self.startup.watch_status})

    @user_errors
    @one_recommender
    def item_preview(self, item_id: str) -> tuple[str, dict]:
        """Thumbnail path and description of a catalog item, for the query panel."""
        row = self._row(item_id)
        return self._serving_thumbnails().gallery_source(row), self._item(row)
