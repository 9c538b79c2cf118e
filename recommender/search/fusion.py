"""Hybrid ranking: fuse per-modality scores of candidate sets into one ranking.

The functions take the candidates' exact scores on each modality (not their ranks in separate
top-k lists), so an item that only one index retrieved is not penalised. They work on a batch of
candidate sets, padded where ``valid`` is false: the engine passes a batch of one, evaluation a
batch of every catalog item.
"""

from __future__ import annotations

import numpy as np

from .config import FUSION_METHODS, SearchConfig


def masked_min_max(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Min-max scaling of each row over its valid entries (constant rows become zeros).

    Rows may be empty: a query whose every candidate was excluded has none."""
    low = np.where(valid, scores, np.inf).min(axis=1, keepdims=True, initial=np.inf)
    high = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True, initial=-np.inf)
    spread = (high.astype(np.float64) - low.astype(np.float64))
    flat = ~(spread >= 1e-12)  # also catches rows with no valid entry (inf - inf = nan)
    safe_low = np.where(flat, 0.0, low).astype(np.float32)
    safe_spread = np.where(flat, 1.0, spread).astype(np.float32)
    scaled = ((scores - safe_low) / safe_spread).astype(np.float32)
    return np.where(flat | ~valid, np.float32(0), scaled)


def masked_ranks(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1-based rank of each valid entry among its row's valid entries (stable: ties by position)."""
    keyed = np.where(valid, -scores.astype(np.float64), np.inf)
    order = np.argsort(keyed, axis=1, kind="stable")
    ranks = np.empty(scores.shape, dtype=np.float32)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1, dtype=np.float32)[None, :].repeat(len(scores), 0),
                      axis=1)
    return ranks


def fuse_batch(text_scores: np.ndarray, image_scores: np.ndarray, valid: np.ndarray, alpha: float,
               method: str = "weighted", rrf_k: int = SearchConfig.rrf_k) -> np.ndarray:
    """Fused score of every valid entry of each row; invalid entries get ``-inf``.

    ``weighted`` is ``alpha * text + (1 - alpha) * image`` after min-max scaling of each over the
    row's valid entries; ``rrf`` is ``alpha / (rrf_k + text rank) + (1 - alpha) / (rrf_k + image rank)``.
    """
    alpha = float(alpha)
    if method == "weighted":
        fused = alpha * masked_min_max(text_scores, valid) + (1.0 - alpha) * masked_min_max(image_scores, valid)
    elif method == "rrf":
        fused = (alpha / (rrf_k + masked_ranks(text_scores, valid))
                 + (1.0 - alpha) / (rrf_k + masked_ranks(image_scores, valid)))
    else:
        raise ValueError(f"Unknown fusion method {method!r}; choose one of {FUSION_METHODS}.")
    return np.where(valid, fused, -np.inf).astype(np.float32)

