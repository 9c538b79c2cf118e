"""Every catalog item asked as a query, in every mode, and the check that bulk ranking is the engine's.

Rankings come from :mod:`recommender.search.ranking`, the functions ``Recommender.recommend``
calls with a batch of one; :func:`verify_against_engine` asks ``recommend(item_id=...)`` for a
sample of items and stops the evaluation if any ranking differs beyond tied scores.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from recommender.engine import Recommender
from recommender.search.ranking import (
    Candidates,
    fuse_candidates,
    hybrid_candidates,
    search_excluding,
)

from .base import (
    NOT_SAVED,
    EvaluationContext,
    EvaluationError,
    EvaluationResult,
    Metrics,
)
from .metrics import mean, per_label_means, ranking_report, reference_report

FUSIONS = ("weighted", "rrf")


def item_candidates(recommender: Recommender, rows: np.ndarray, k: int) -> Candidates:
    """Hybrid candidates of catalog ``rows`` asked for ``k`` results, as ``recommend(item_id=...)`` finds them
    (removed rows never among them)."""
    return hybrid_candidates(recommender.image_index, recommender.text_index, recommender.image_vectors,
                             recommender.text_vectors, recommender.image_vectors[rows], recommender.text_vectors[rows],
                             recommender.search.candidate_depth(k, len(recommender)), exclude_rows=rows,
                             removed=recommender.catalog.removed)


def item_rankings(recommender: Recommender, rows: np.ndarray, k: int, alpha: float, fusion: str = "weighted",
                  candidates: Candidates | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Top ``k`` (rows, scores) per mode for catalog rows asked as queries, as ``recommend(item_id=...)`` ranks.

    ``candidates``: this ``k``'s :func:`item_candidates`, when already computed.
    """
    if candidates is None:
        candidates = item_candidates(recommender, rows, k)
    removed = recommender.catalog.removed
    return {
        "image": search_excluding(recommender.image_index, recommender.image_vectors[rows], k, rows, removed),
        "text": search_excluding(recommender.text_index, recommender.text_vectors[rows], k, rows, removed),
        "hybrid": fuse_candidates(candidates, alpha, k, fusion, recommender.search.rrf_k),
    }


def hybrid_report(recommender: Recommender, candidates: dict[int, Candidates], labels: np.ndarray, rows: np.ndarray,
                  alpha: float, fusion: str) -> dict[str, np.ndarray]:
    """Per-query hybrid metrics at each ``k`` of ``candidates`` (``k`` -> that ``k``'s candidates)."""
    report: dict[str, np.ndarray] = {}
    for k, per_k in candidates.items():
        ranked, _ = fuse_candidates(per_k, alpha, k, fusion, recommender.search.rrf_k)
        report.update(ranking_report(ranked, labels, rows, (k,)))
    return report


def same_ranking(engine_rows: list[int], engine_scores: list[float], rows: np.ndarray, scores: np.ndarray,
                 tolerance: float = 1e-5) -> str:
    """``identical``, ``tie`` (same score sequence, tied items in another order) or ``different``."""
    rows, scores = rows[rows >= 0], scores[rows >= 0]
    if list(rows) == list(engine_rows):
        return "identical"
    if len(rows) == len(engine_rows) and np.allclose(scores, engine_scores, atol=tolerance, rtol=0):
        return "tie"
    return "different"


@dataclass(frozen=True)
class Verification:
    """Bulk rankings compared with ``Recommender.recommend``: how many came out the same."""

    queries: int
    identical: int = 0
    tie: int = 0
    different: int = 0


def verify_against_engine(recommender: Recommender, rows: np.ndarray, k: int, alpha: float,
                          fusions: tuple[str, ...] = FUSIONS) -> Verification:
    """Ask ``recommend(item_id=...)`` for ``rows`` in every mode and compare with the bulk rankings.

    Raises :class:`EvaluationError` when a ranking differs beyond ties: the report must measure
    what the engine serves.
    """
    verdicts: Counter[str] = Counter()
    checks = [("image", "weighted"), ("text", "weighted")] + [("hybrid", fusion) for fusion in fusions]
    for mode, fusion in checks:
        bulk = item_rankings(recommender, rows, k, alpha, fusion)[mode]
        for position, row in enumerate(rows):
            item_id = recommender.catalog.item_ids[row]
            served = recommender.recommend(item_id=item_id, mode=mode, k=k, alpha=alpha, fusion=fusion)
            verdict = same_ranking(served.rows.tolist(), [r.score for r in served], bulk[0][position],
                                   bulk[1][position])
            verdicts[verdict] += 1
            if verdict == "different":
                raise EvaluationError(
                    f"Bulk ranking drifted from Recommender.recommend for item {item_id!r} ({mode}, {fusion}): "
                    f"engine {served.rows.tolist()}, bulk {bulk[0][position].tolist()}."
                )
    return Verification(int(len(rows)), verdicts["identical"], verdicts["tie"], verdicts["different"])


@dataclass(frozen=True)
class References:
    """What a uniformly random ranking scores, and the best any ranking can (all relevant items first)."""

    random: Metrics
    ceiling: Metrics


@dataclass(frozen=True)
class RankingResult(EvaluationResult):
    """Mean metrics of every catalog item asked as a query, per mode, next to random and best rankings."""

    metric: str
    modes: dict[str, Metrics]  # image, text, hybrid (weighted fusion at ``alpha``)
    alpha: float
    hybrid_rrf: Metrics  # hybrid with RRF fusion at ``alpha_rrf``
    alpha_rrf: float
    reference: References
    #: Label name -> ``items`` and mean ``metric`` per mode (the largest labels, the rest pooled).
    per_label: dict[str, dict[str, float]]
    verification: Verification
    #: Mode -> ``(queries, max k)`` ranked rows of every live catalog item, in the order of
    #: ``EvaluationContext.rows`` (for the example plots).
    ranked: dict[str, np.ndarray] = field(metadata=NOT_SAVED, repr=False, compare=False)

    @property
    def primary_metric(self) -> str:
        return f"hybrid {self.metric}"

    @property
    def primary(self) -> float:
        return self.modes["hybrid"][self.metric]


@dataclass(frozen=True)
class RankingEvaluator:
    """Rank every catalog item as a query in image, text and hybrid mode (weighted at ``alpha``, RRF at
    ``alpha_rrf``); check ``verify_queries`` sampled items per mode against ``Recommender.recommend``."""

    alpha: float
    alpha_rrf: float
    verify_queries: int = 30
    name: ClassVar[str] = "rankings"

    def __call__(self, context: EvaluationContext) -> RankingResult:
        recommender, rows, labels, ks = context.recommender, context.rows, context.labels, context.ks
        candidates = {k: item_candidates(recommender, rows, k) for k in ks}
        ranked = item_rankings(recommender, rows, context.top, self.alpha, candidates=candidates[context.top])
        per_query = {mode: ranking_report(ranked[mode][0], labels, rows, ks) for mode in ("image", "text")}
        per_query["hybrid"] = hybrid_report(recommender, candidates, labels, rows, self.alpha, "weighted")
        rrf = hybrid_report(recommender, candidates, labels, rows, self.alpha_rrf, "rrf")
        references = reference_report(labels, rows, ks, candidates=len(rows) - 1)
        count = len(rows)
        sample = np.sort(context.rng.choice(rows, size=min(self.verify_queries, count), replace=False))
        verification = verify_against_engine(recommender, sample, context.top, self.alpha)
        per_label = per_label_means({**per_query, "hybrid (rrf)": rrf, "ceiling": references["ceiling"]},
                                    labels[rows], context.label_names, context.metric)
        return RankingResult(
            metric=context.metric, modes={mode: mean(values) for mode, values in per_query.items()}, alpha=self.alpha,
            hybrid_rrf=mean(rrf), alpha_rrf=self.alpha_rrf,
            reference=References(mean(references["random"]), mean(references["ceiling"])), per_label=per_label,
            verification=verification, ranked={mode: rows_and_scores[0] for mode, rows_and_scores in ranked.items()},
        )
