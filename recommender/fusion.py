"""Hybrid ranking: fuse per-modality scores of one candidate set into one ranking.

Both functions take the candidates' exact scores on each modality (not their ranks in
separate top-k lists), so an item that only one index retrieved is not penalised.
"""

from __future__ import annotations

import numpy as np

DEFAULT_ALPHA = 0.5
RRF_K = 60
FUSION_METHODS = ("weighted", "rrf")


def min_max(scores: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the candidate set; a constant vector becomes all zeros (carries no ranking)."""
    low, high = float(scores.min()), float(scores.max())
    if high - low < 1e-12:
        return np.zeros_like(scores, dtype=np.float32)
    return ((scores - low) / (high - low)).astype(np.float32)


def weighted_fusion(text_scores: np.ndarray, image_scores: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * text + (1 - alpha) * image`` after min-max normalisation of each modality."""
    return alpha * min_max(text_scores) + (1.0 - alpha) * min_max(image_scores)


def reciprocal_rank_fusion(text_scores: np.ndarray, image_scores: np.ndarray, alpha: float,
                           k: int = RRF_K) -> np.ndarray:
    """Weighted reciprocal rank fusion: ``alpha / (k + rank_text) + (1 - alpha) / (k + rank_image)``."""
    def ranks(scores: np.ndarray) -> np.ndarray:
        order = np.argsort(-scores, kind="stable")
        positions = np.empty(len(scores), dtype=np.float32)
        positions[order] = np.arange(1, len(scores) + 1, dtype=np.float32)
        return positions

    return alpha / (k + ranks(text_scores)) + (1.0 - alpha) / (k + ranks(image_scores))


def fuse(text_scores: np.ndarray, image_scores: np.ndarray, alpha: float, method: str = "weighted") -> np.ndarray:
    if method == "weighted":
        return weighted_fusion(text_scores, image_scores, alpha)
    if method == "rrf":
        return reciprocal_rank_fusion(text_scores, image_scores, alpha)
    raise ValueError(f"Unknown fusion method {method!r}; choose one of {FUSION_METHODS}.")
