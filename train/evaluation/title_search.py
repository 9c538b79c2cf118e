"""Title -> thumbnails: image mode asked with a title alone, next to text mode asked with the same title.

In image mode a title with no thumbnail is searched through the title head's predicted-title half
of the image vectors: thumbnails that look like a video about that title. Sampled live items'
titles are asked both ways through ``Recommender.recommend``, the item itself excluded; relevant =
same label. Bundles without a title head cannot do this (the result says so and measures nothing).

The catalog's predicted titles are cross-fitted (no item's prediction saw its own title), but a
query's title was among those the other folds' regressions were fitted on: in-catalog numbers
flatter image-by-title a little, as they do every in-catalog query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import EvaluationContext, EvaluationResult, Metrics
from .metrics import mean, ranking_report, reference_report

MODES = {"image (title through the title head)": "image", "text (title)": "text"}


@dataclass(frozen=True)
class TitleSearchResult(EvaluationResult):
    """Mean metrics of the same title queries in image and text mode; ``None`` without a title head."""

    metric: str
    queries: int
    label: str
    modes: dict[str, Metrics] | None  # MODES' keys -> metrics
    random: Metrics | None
    ceiling: Metrics | None

    @property
    def primary_metric(self) -> str:
        return f"image-mode {self.metric} of a title alone"

    @property
    def primary(self) -> float:
        return float("nan") if self.modes is None else self.modes[next(iter(MODES))][self.metric]


@dataclass(frozen=True)
class TitleSearchEvaluator:
    """Ask the titles of ``queries`` sampled live items (all when fewer) in image and in text mode."""

    queries: int = 500
    name: ClassVar[str] = "title_search"

    def __call__(self, context: EvaluationContext) -> TitleSearchResult:
        recommender = context.recommender
        rows = np.sort(context.rng.choice(context.rows, size=min(self.queries, len(context.rows)), replace=False))
        if recommender.title_head is None:
            return TitleSearchResult(context.metric, 0, context.label, None, None, None)
        catalog, k = recommender.catalog, context.top
        ranked = {name: np.full((len(rows), k), -1, dtype=np.int64) for name in MODES}
        for position, row in enumerate(rows.tolist()):
            for name, mode in MODES.items():
                served = recommender.recommend(title=catalog.titles[row], mode=mode, k=k,
                                               exclude=[catalog.item_ids[row]], dedupe=False)
                ranked[name][position, :len(served.rows)] = served.rows
        references = reference_report(context.labels, rows, context.ks, candidates=len(context.rows) - 1)
        return TitleSearchResult(
            context.metric, int(len(rows)), context.label,
            {name: mean(ranking_report(ranked[name], context.labels, rows, context.ks)) for name in MODES},
            mean(references["random"]), mean(references["ceiling"]))
