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


def hidden_copies(image_index: faiss.Index, looks_queries: np.ndarray, scale: float, threshold: float,
                  looks: Callable[[np.ndarray], np.ndarray], picked: list[int], start: int, admitted: np.ndarray,
                  removed: Tombstones) -> list[list[int]]:
    """Per result ``picked[start:]``, the rows folded into it.

    ``looks_queries``: those results' image-index queries that score a row by ``scale`` times its
    looks cosine; ``looks(rows)``: unit looks vectors, to tell which earlier result a copy belongs to.
    """
    page = picked[start:]
    if not page:
        return []
    scores, rows = search_live(image_index, looks_queries, min(MAX_COPIES + 1, image_index.ntotal), removed)
    chosen = set(picked)
    found = []
    for position, (row_scores, row_ids) in enumerate(zip(scores, rows)):
        close = row_ids[(row_scores >= scale * threshold) & (row_ids >= 0)]
        close = [int(row) for row in close if admitted[row] and int(row) not in chosen]
        if close and start + position > 0:
            earlier = looks(np.asarray(picked[:start + position])) @ looks(np.asarray(close)).T
            close = [row for row, owned in zip(close, (earlier >= threshold).any(axis=0)) if not owned]
        found.append(close)  # most alike first
    return found
