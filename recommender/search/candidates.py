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


class MaskedSearch:
    """One query vector in one modality, searched under a :class:`RowMask`.

    Every pool tier of a query asks it again, deeper: a catalog small enough to scan whole is scored
    once (the mask applied to the scores) and each tier takes its top rows from those scores, and exact
    scores of any rows (a hybrid pool's re-scoring) are read from them too.
    """

    def __init__(self, index: faiss.Index, vectors: np.ndarray, query: np.ndarray, mask: RowMask):
        self.index, self.vectors, self.query, self.mask = index, vectors, query, mask
        self._scanned: np.ndarray | None = None

    def _scan(self) -> np.ndarray:
        if self._scanned is None:
            self._scanned = self.vectors @ self.query[0]
        return self._scanned

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Exact scores of ``rows``."""
        if len(self.vectors) <= FULL_SCAN_LIMIT:
            return self._scan()[rows]
        return self.vectors[rows] @ self.query[0]

    def top(self, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """The top ``depth`` admitted rows (exactly, when the index is approximate and misses some)."""
        mask = self.mask
        depth = min(depth, mask.count)
        if depth <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if len(self.vectors) <= FULL_SCAN_LIMIT:
            scores = np.where(mask.allowed, self._scan(), -np.inf)
            top = np.argpartition(-scores, depth - 1)[:depth]
            return _ranked(top.astype(np.int64), scores[top].astype(np.float32))
        if mask.count > EXACT_SUBSET_LIMIT:
            scores, rows = search_live(self.index, self.query, depth, mask)
            keep = rows[0] >= 0
            if keep.sum() == depth:
                return rows[0][keep].astype(np.int64), scores[0][keep]
        rows = mask.rows()
        scores = self.vectors[rows] @ self.query[0]
        if depth < len(rows):
            top = np.argpartition(-scores, depth - 1)[:depth]
            rows, scores = rows[top], scores[top]
        return _ranked(rows, scores.astype(np.float32))


def single_pool(index: faiss.Index, query: np.ndarray, depth: int, own_row: int | None, removed: Tombstones) -> Pool:
    """One modality's top ``depth`` live rows but the query's own: the engine's ``search_excluding``."""
    rows, scores = search_excluding(index, query, depth, np.array([-1 if own_row is None else own_row]), removed)
    keep = rows[0] >= 0
    return Pool(rows[0][keep], scores[0][keep])


def masked_pool(search: MaskedSearch, depth: int) -> Pool:
    """One modality's top ``depth`` rows among those ``search``'s mask admits."""
    return Pool(*search.top(depth))


def hybrid_pool(indexes: tuple[faiss.Index, faiss.Index], vectors: tuple[np.ndarray, np.ndarray],
                queries: tuple[np.ndarray, np.ndarray], depth: int, alpha: float, fusion: str, rrf_k: int,
                own_row: int | None, removed: Tombstones) -> Pool:
    """Both indexes' top ``depth`` live rows, re-scored exactly on both modalities and fused, best first."""
    candidates = hybrid_candidates(*indexes, *vectors, *queries, depth,
                                   np.array([-1 if own_row is None else own_row]), removed)
    return _fused(candidates, alpha, fusion, rrf_k)


def masked_hybrid_pool(image: MaskedSearch, text: MaskedSearch, depth: int, alpha: float, fusion: str,
                       rrf_k: int) -> Pool:
    """Both modalities' top ``depth`` admitted rows, re-scored exactly on both and fused, best first."""
    rows = np.union1d(image.top(depth)[0], text.top(depth)[0])
    candidates = Candidates(rows[None], np.ones((1, len(rows)), dtype=bool), image.score(rows)[None],
                            text.score(rows)[None])
    return _fused(candidates, alpha, fusion, rrf_k)


def _fused(candidates: Candidates, alpha: float, fusion: str, rrf_k: int) -> Pool:
    fused = fuse_batch(candidates.text_scores, candidates.image_scores, candidates.valid, alpha, fusion, rrf_k)[0]
    valid = candidates.valid[0]
    return Pool(*_ranked(candidates.rows[0][valid], fused[valid]))
