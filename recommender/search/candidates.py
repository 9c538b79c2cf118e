"""One query's candidate pool: the top ``depth`` rows it may return, ranked, with their scores.

Without a filter the pool is what the engine has always ranked (:mod:`~recommender.search.ranking`:
each index's top rows but the query's own, fused in hybrid mode), so a query without controls keeps
its answer. With a :class:`~recommender.search.filters.RowMask` (``where``, ``exclude``, a
session's items) the mask is applied inside the search: an ``IDSelector`` in FAISS, or exact
search over the admitted rows when they are few (and whenever an approximate index comes back
short), so the pool is exactly the top of the matching items.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from ..data.tombstones import Tombstones
from .filters import RowMask
from .fusion import fuse_batch
from .index import search_live
from .ranking import Candidates, hybrid_candidates, search_excluding

#: Catalogs up to this size are scored whole by one matrix product, the filter applied to the scores.
FULL_SCAN_LIMIT = 20_000
#: In larger catalogs, up to this many admitted rows are scored directly instead of asking FAISS.
EXACT_SUBSET_LIMIT = 4096


@dataclass(frozen=True)
class Pool:
    """Candidate rows in ranking order with the score that ranked them."""

    rows: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def _ranked(rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best score first, ties by row (as FAISS's flat search and the hybrid ``lexsort`` order them)."""
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


def masked_top(index: faiss.Index, vectors: np.ndarray, query: np.ndarray, depth: int,
               mask: RowMask) -> tuple[np.ndarray, np.ndarray]:
    """The top ``depth`` admitted rows for one query (exactly, when the index is approximate and misses some)."""
    depth = min(depth, mask.count)
    if depth <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if len(vectors) <= FULL_SCAN_LIMIT:
        scores = np.where(mask.allowed, vectors @ query[0], -np.inf)
        top = np.argpartition(-scores, depth - 1)[:depth]
        return _ranked(top.astype(np.int64), scores[top].astype(np.float32))
    if mask.count > EXACT_SUBSET_LIMIT:
        scores, rows = search_live(index, query, depth, mask)
        keep = rows[0] >= 0
        if keep.sum() == depth:
            return rows[0][keep].astype(np.int64), scores[0][keep]
    rows = mask.rows()
    scores = vectors[rows] @ query[0]
    if depth < len(rows):
        top = np.argpartition(-scores, depth - 1)[:depth]
        rows, scores = rows[top], scores[top]
    return _ranked(rows, scores.astype(np.float32))


def single_pool(index: faiss.Index, vectors: np.ndarray, query: np.ndarray, depth: int, own_row: int | None,
                removed: Tombstones, mask: RowMask | None) -> Pool:
    """One modality's top ``depth`` rows: the engine's ``search_excluding`` without a mask, else :func:`masked_top`."""
    if mask is None:
        rows, scores = search_excluding(index, query, depth, np.array([-1 if own_row is None else own_row]), removed)
        keep = rows[0] >= 0
        rows, scores = rows[0][keep], scores[0][keep]
    else:
        rows, scores = masked_top(index, vectors, query, depth, mask)
    return Pool(rows, scores)


def hybrid_pool(indexes: tuple[faiss.Index, faiss.Index], vectors: tuple[np.ndarray, np.ndarray],
                queries: tuple[np.ndarray, np.ndarray], depth: int, alpha: float, fusion: str, rrf_k: int,
                own_row: int | None, removed: Tombstones, mask: RowMask | None) -> Pool:
    """Both indexes' top ``depth`` rows, re-scored exactly on both modalities and fused, best first."""
    (image_index, text_index), (image_vectors, text_vectors), (image_query, text_query) = indexes, vectors, queries
    if mask is None:
        candidates = hybrid_candidates(image_index, text_index, image_vectors, text_vectors, image_query, text_query,
                                       depth, np.array([-1 if own_row is None else own_row]), removed)
    else:
        rows = np.union1d(masked_top(image_index, image_vectors, image_query, depth, mask)[0],
                          masked_top(text_index, text_vectors, text_query, depth, mask)[0])
        candidates = Candidates(rows[None], np.ones((1, len(rows)), dtype=bool),
                                (image_vectors[rows] @ image_query[0])[None], (text_vectors[rows] @ text_query[0])[None])
    fused = fuse_batch(candidates.text_scores, candidates.image_scores, candidates.valid, alpha, fusion, rrf_k)[0]
    valid = candidates.valid[0]
    return Pool(*_ranked(candidates.rows[0][valid], fused[valid]))
