"""Hybrid ranking: fuse per-modality scores of candidate sets into one ranking.

The functions take the candidates' exact scores on each modality (not their ranks in separate
top-k lists), so an item that only one index retrieved is not penalised. :func:`fuse_batch` is
the one implementation (a batch of candidate sets, padded where ``valid`` is false, as
evaluation needs); the single-set functions below are views of it for one query.
"""

from __future__ import annotations

import numpy as np

#: Text weight of hybrid mode when a bundle has none tuned: the middle of the best P@10 plateau of
#: the alpha sweep on the real 2,013-video benchmark catalog (python -m train evaluate: 0.880 from
#: 0.6 to 0.7 with the title head; 0.872 at 0.65 without it).
DEFAULT_ALPHA = 0.65
RRF_K = 60
FUSION_METHODS = ("weighted", "rrf")


def masked_min_max(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Min-max scaling of each row over its valid entries (constant rows become zeros)."""
    low = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
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
               method: str = "weighted") -> np.ndarray:
    """:func:`recommender.fusion.fuse` per row over the valid entries; invalid entries get ``-inf``."""
    alpha = float(alpha)
    if method == "weighted":
        fused = alpha * masked_min_max(text_scores, valid) + (1.0 - alpha) * masked_min_max(image_scores, valid)
    elif method == "rrf":
        fused = (alpha / (RRF_K + masked_ranks(text_scores, valid))
                 + (1.0 - alpha) / (RRF_K + masked_ranks(image_scores, valid)))
    else:
        raise ValueError(f"Unknown fusion method {method!r}; choose one of {FUSION_METHODS}.")
    return np.where(valid, fused, -np.inf).astype(np.float32)


def _one(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float32)[None, :]
    return scores, np.ones(scores.shape, dtype=bool)


def min_max(scores: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the candidate set; a constant vector becomes all zeros (carries no ranking)."""
    return masked_min_max(*_one(scores))[0]


def fuse(text_scores: np.ndarray, image_scores: np.ndarray, alpha: float, method: str = "weighted") -> np.ndarray:
    """One candidate set: ``weighted`` is ``alpha * text + (1 - alpha) * image`` after min-max scaling
    of each; ``rrf`` is ``alpha / (RRF_K + text rank) + (1 - alpha) / (RRF_K + image rank)``."""
    text, valid = _one(text_scores)
    return fuse_batch(text, _one(image_scores)[0], valid, alpha, method)[0]


def weighted_fusion(text_scores: np.ndarray, image_scores: np.ndarray, alpha: float) -> np.ndarray:
    return fuse(text_scores, image_scores, alpha, "weighted")


def reciprocal_rank_fusion(text_scores: np.ndarray, image_scores: np.ndarray, alpha: float) -> np.ndarray:
    return fuse(text_scores, image_scores, alpha, "rrf")
