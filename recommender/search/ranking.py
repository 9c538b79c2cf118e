"""Ranking for a batch of queries: single-mode search and hybrid candidate fusion.

:class:`~recommender.Recommender` calls these with a batch of one; evaluation asks every
catalog item as a query (and an alpha sweep asks them all again per alpha), so both share one
implementation and cannot drift apart:

- single mode: ``index.search(queries, k + 1)``, drop ``-1`` and the query's own row, keep ``k``;
- hybrid: the union of each index's top ``depth`` rows (minus the query's row) is the candidate
  set; every candidate is scored exactly on both modalities against the stored vectors,
  each modality min-max normalised over the candidate set, fused (weighted or RRF), and ranked
  by fused score with ties broken by row.

Candidates do not depend on ``alpha`` or the fusion method, so a sweep computes them once
(:func:`hybrid_candidates`) and re-fuses (:func:`fuse_candidates`). Results are padded with
row ``-1`` (score ``-inf``) where fewer than ``k`` items qualify.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from ..data.tombstones import Tombstones
from .config import SearchConfig
from .fusion import fuse_batch
from .index import search_live

_NO_ROW = -1


def _exclusions(exclude_rows: np.ndarray | None, count: int) -> np.ndarray:
    if exclude_rows is None:
        return np.full(count, _NO_ROW, dtype=np.int64)
    exclude_rows = np.asarray(exclude_rows, dtype=np.int64).reshape(-1)
    if len(exclude_rows) != count:
        raise ValueError(f"{len(exclude_rows)} rows to exclude for {count} queries.")
    return np.where(exclude_rows < 0, _NO_ROW, exclude_rows)


def _first_kept(rows: np.ndarray, scores: np.ndarray, keep: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the first ``k`` entries where ``keep`` holds, in their order; padded with -1 / -inf."""
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(keep, order, axis=1)
    out_rows = np.where(kept, np.take_along_axis(rows, order, axis=1), _NO_ROW)
    out_scores = np.where(kept, np.take_along_axis(scores, order, axis=1), -np.inf).astype(np.float32)
    if out_rows.shape[1] < k:  # a catalog smaller than k
        pad = k - out_rows.shape[1]
        out_rows = np.pad(out_rows, ((0, 0), (0, pad)), constant_values=_NO_ROW)
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return out_rows.astype(np.int64), out_scores


def search_excluding(index: faiss.Index, queries: np.ndarray, k: int, exclude_rows: np.ndarray | None = None,
                     removed: Tombstones | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` live rows per query, never the query's own row: ``Recommender._single_mode`` in bulk."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exclude = _exclusions(exclude_rows, len(queries))
    scores, rows = search_live(index, queries, min(k + 1, index.ntotal), removed)
    keep = (rows >= 0) & (rows != exclude[:, None])
    return _first_kept(rows, scores, keep, k)


@dataclass(frozen=True)
class Candidates:
    """Hybrid candidate sets of a batch of queries, with both modalities' exact scores.

    ``rows`` is ``(queries, width)``: each query's candidates ascending (as ``np.union1d`` gives
    them), then padding where ``valid`` is false.
    """

    rows: np.ndarray
    valid: np.ndarray
    image_scores: np.ndarray
    text_scores: np.ndarray


def hybrid_candidates(image_index: faiss.Index, text_index: faiss.Index, image_vectors: np.ndarray,
                      text_vectors: np.ndarray, image_queries: np.ndarray, text_queries: np.ndarray, depth: int,
                      exclude_rows: np.ndarray | None = None, removed: Tombstones | None = None) -> Candidates:
    """Union of both indexes' top ``depth`` live rows per query (minus the query's row), scored on both modalities.

    Searches and scores one query at a time with the very calls the engine makes (a batched
    search or matrix product can differ in the last bit, enough to move an item across the
    ``depth`` boundary or swap a near-tie in RRF); only fusion and ranking, which a sweep
    repeats, are batched.
    """
    image_queries = np.ascontiguousarray(image_queries, dtype=np.float32)
    text_queries = np.ascontiguousarray(text_queries, dtype=np.float32)
    count = len(image_queries)
    exclude = _exclusions(exclude_rows, count)
    per_query = []
    for position in range(count):
        _, image_rows = search_live(image_index, image_queries[position:position + 1], depth, removed)
        _, text_rows = search_live(text_index, text_queries[position:position + 1], depth, removed)
        candidates = np.union1d(image_rows[0], text_rows[0])
        candidates = candidates[(candidates >= 0) & (candidates != exclude[position])]
        per_query.append((candidates, image_vectors[candidates] @ image_queries[position],
                          text_vectors[candidates] @ text_queries[position]))
    width = max((len(c) for c, _, _ in per_query), default=0)
    rows = np.full((count, width), _NO_ROW, dtype=np.int64)
    valid = np.zeros((count, width), dtype=bool)
    image_scores = np.zeros((count, width), dtype=np.float32)
    text_scores = np.zeros((count, width), dtype=np.float32)
    for position, (candidates, image, text) in enumerate(per_query):
        size = len(candidates)
        rows[position, :size], valid[position, :size] = candidates, True
        image_scores[position, :size], text_scores[position, :size] = image, text
    return Candidates(rows, valid, image_scores, text_scores)


def fuse_candidates(candidates: Candidates, alpha: float, k: int, method: str = "weighted",
                    rrf_k: int = SearchConfig.rrf_k) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of each candidate set by fused score, ties broken by row (the engine's ``lexsort``)."""
    fused = fuse_batch(candidates.text_scores, candidates.image_scores, candidates.valid, alpha, method, rrf_k)
    order = np.lexsort((candidates.rows, -fused), axis=-1)[:, :k]
    rows = np.take_along_axis(candidates.rows, order, axis=1)
    scores = np.take_along_axis(fused, order, axis=1)
    keep = np.isfinite(scores)
    return _first_kept(rows, scores, keep, k)
