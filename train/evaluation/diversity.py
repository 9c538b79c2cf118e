"""Diversity sweep: what MMR re-ranking (``recommend(diversity=...)``) buys in spread and costs in precision.

Sampled live catalog items are asked by id in every mode at each diversity from 0 (today's
ranking) to 1, through ``Recommender.recommend`` with dedupe off (so only diversity changes).
Per setting: precision@k (same label as the query = relevant), intra-list similarity (mean
pairwise cosine of the top k, on image vectors, text vectors, and the mode's own: their mean
in hybrid) and distinct labels (e.g. channels) in the top k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from recommender.engine import Recommender

from .base import EvaluationContext, EvaluationResult
from .metrics import ranking_report

DIVERSITIES = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
MODES = ("image", "text", "hybrid")


def intra_list_similarity(vectors: np.ndarray, rows: np.ndarray) -> float:
    """Mean pairwise cosine of the (unit) vectors of ``rows`` (-1 padding ignored); ``nan`` under two rows."""
    rows = rows[rows >= 0]
    if len(rows) < 2:
        return float("nan")
    chosen = vectors[rows]
    cosine = chosen @ chosen.T
    return float((cosine.sum() - np.trace(cosine)) / (len(rows) * (len(rows) - 1)))


def distinct_labels(labels: np.ndarray, rows: np.ndarray) -> int:
    """Distinct labels among ``rows``; each item without a label counts as one of its own."""
    found = labels[rows[rows >= 0]]
    return int(len(np.unique(found[found >= 0])) + np.count_nonzero(found < 0))


@dataclass(frozen=True)
class DiversityPoint:
    """Mean over the queries at one diversity setting, in one mode."""

    diversity: float
    precision: float  # P@k
    ils: float  # intra-list similarity on the mode's own vectors (hybrid: mean of image and text)
    ils_image: float
    ils_text: float
    distinct: float  # distinct labels in the top k


@dataclass(frozen=True)
class DiversityResult(EvaluationResult):
    """Per mode, one :class:`DiversityPoint` per diversity setting (ascending)."""

    metric: str  # P@k
    k: int
    queries: int
    label: str
    modes: dict[str, list[DiversityPoint]]

    def point(self, mode: str, diversity: float) -> DiversityPoint:
        return next(point for point in self.modes[mode] if point.diversity == diversity)

    @property
    def primary_metric(self) -> str:
        return f"hybrid {self.metric} at diversity 0.3"

    @property
    def primary(self) -> float:
        points = self.modes["hybrid"]
        return min(points, key=lambda point: abs(point.diversity - 0.3)).precision


def sweep_mode(recommender: Recommender, rows: np.ndarray, labels: np.ndarray, mode: str, k: int,
               diversities: tuple[float, ...], show_progress_bar: bool = False) -> list[DiversityPoint]:
    """Ask each of ``rows`` by id at every diversity in ``mode``; the mean metrics per setting."""
    points = []
    for diversity in diversities:
        ranked = np.full((len(rows), k), -1, dtype=np.int64)
        for position, row in enumerate(tqdm(rows.tolist(), desc=f"Diversity {diversity} ({mode})", unit="query",
                                            disable=not show_progress_bar)):
            served = recommender.recommend(item_id=recommender.catalog.item_ids[row], mode=mode, k=k,
                                           diversity=diversity, dedupe=False)
            ranked[position, :len(served.rows)] = served.rows
        ils_image = np.nanmean([intra_list_similarity(recommender.image_vectors, line) for line in ranked])
        ils_text = np.nanmean([intra_list_similarity(recommender.text_vectors, line) for line in ranked])
        own = {"image": ils_image, "text": ils_text, "hybrid": (ils_image + ils_text) / 2}[mode]
        points.append(DiversityPoint(
            diversity=float(diversity), precision=float(ranking_report(ranked, labels, rows, (k,))[f"P@{k}"].mean()),
            ils=float(own), ils_image=float(ils_image), ils_text=float(ils_text),
            distinct=float(np.mean([distinct_labels(labels, line) for line in ranked]))))
    return points


@dataclass(frozen=True)
class DiversityEvaluator:
    """Ask ``queries`` sampled live items (all when fewer) in every mode at each of ``diversities``."""

    queries: int = 400
    diversities: tuple[float, ...] = DIVERSITIES
    show_progress_bar: bool = False
    name: ClassVar[str] = "diversity"

    def __call__(self, context: EvaluationContext) -> DiversityResult:
        rows = np.sort(context.rng.choice(context.rows, size=min(self.queries, len(context.rows)), replace=False))
        diversities = tuple(sorted(self.diversities))
        modes = {mode: sweep_mode(context.recommender, rows, context.labels, mode, context.top, diversities,
                                  self.show_progress_bar) for mode in MODES}
        return DiversityResult(context.metric, context.top, int(len(rows)), context.label, modes)
