"""Which near-identical thumbnails each shown result hides (its ``duplicates``), over the whole catalog.

The ranking folds a candidate into the first result whose looks it copies (cosine of the
autoencoder features ``>= threshold``, :mod:`~recommender.search.rerank`), pool by pool. What a
result reports must not depend on how deep a pool its page needed, so its copies are looked up in
the image index itself: each result's nearest thumbnails by looks alone, kept when they copy it,
are admitted, are not results themselves and copy no earlier result (those fold into that one).
"""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np

from ..data.tombstones import Tombstones
from .index import search_live

#: Nearest thumbnails by looks checked per result: more copies of one thumbnail than this are not all named.
MAX_COPIES = 32


def hidden_copies(looks: Callable[[np.ndarray], np.ndarray], threshold: float, picked: list[int], start: int,
                  admitted: np.ndarray, nearest: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> list[list[int]]:
    """Per result ``picked[start:]``, the rows folded into it, most alike first.

    ``looks(rows)``: unit looks vectors; ``nearest(rows)``: for each of ``rows``, candidate copies and
    their looks cosines (:func:`scan_copies` or :func:`index_copies`).
    """
    page = np.asarray(picked[start:], dtype=np.int64)
    if not len(page):
        return []
    chosen = np.asarray(picked, dtype=np.int64)
    shown = np.zeros(len(admitted), dtype=bool)
    shown[chosen] = True
    found = []
    for position, (rows, cosines) in enumerate(zip(*nearest(page))):
        keep = (cosines >= threshold) & admitted[rows] & ~shown[rows]
        rows = rows[keep][np.argsort(-cosines[keep], kind="stable")]
        if len(rows) and start + position > 0:  # a copy of an earlier result folds into that one
            earlier = looks(rows) @ looks(chosen[:start + position]).T
            rows = rows[~(earlier >= threshold).any(axis=1)]
        found.append(rows.tolist())
    return found


def scan_copies(all_looks: np.ndarray, looks: Callable[[np.ndarray], np.ndarray], threshold: float,
                cache: dict[int, tuple[np.ndarray, np.ndarray]]) -> Callable[[np.ndarray], tuple[list, list]]:
    """Copies by a matrix product with every row's looks (a catalog small enough to scan whole). A row's
    copies depend on the catalog alone, so ``cache`` (one per loaded catalog) keeps them for later queries."""
    def nearest(page: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        missing = [row for row in page.tolist() if row not in cache]
        if missing:
            for row, cosines in zip(missing, looks(np.asarray(missing)) @ all_looks.T):
                hits = np.flatnonzero(cosines >= threshold)
                cache[row] = (hits, cosines[hits])
        found = [cache[row] for row in page.tolist()]
        return [rows for rows, _ in found], [cosines for _, cosines in found]
    return nearest


def index_copies(image_index: faiss.Index, looks_queries: Callable[[np.ndarray], np.ndarray], scale: float,
                 removed: Tombstones) -> Callable[[np.ndarray], tuple[list[np.ndarray], list[np.ndarray]]]:
    """Copies among each result's :data:`MAX_COPIES` nearest thumbnails by looks, from the image index
    (queries that score a row by ``scale`` times its looks cosine)."""
    def nearest(page: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        scores, rows = search_live(image_index, looks_queries(page), min(MAX_COPIES + 1, image_index.ntotal), removed)
        valid = rows >= 0
        return [row[ok] for row, ok in zip(rows, valid)], [score[ok] / scale for score, ok in zip(scores, valid)]
    return nearest
