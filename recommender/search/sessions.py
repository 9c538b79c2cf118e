"""A session (several items, "because you watched A, B and C") as one ranking.

Two ways, chosen by ``SearchConfig.session_fusion``:

- ``centroid``: search once from the members' mean vector (renormalised) in each modality;
- ``rrf``: rank each member's own candidate pool and fuse the lists by reciprocal rank
  (``sum 1 / (rrf_k + rank)``), so one member unlike the others still brings its neighbours.
"""

from __future__ import annotations

import numpy as np

from .candidates import Pool
from .index import normalize


def centroid(vectors: list[np.ndarray]) -> np.ndarray:
    """The members' mean direction, as one unit query vector ``(1, dimension)``."""
    return normalize(np.mean(np.vstack(vectors), axis=0, keepdims=True))


def rank_fusion(pools: list[Pool], rrf_k: int) -> Pool:
    """Reciprocal rank fusion of ranked pools: best fused score first, ties by row."""
    rows = np.concatenate([pool.rows for pool in pools])
    weights = np.concatenate([1.0 / (rrf_k + np.arange(1, len(pool) + 1)) for pool in pools])
    unique, positions = np.unique(rows, return_inverse=True)
    fused = np.bincount(positions, weights=weights, minlength=len(unique)).astype(np.float32)
    order = np.lexsort((unique, -fused))
    return Pool(unique[order], fused[order])
