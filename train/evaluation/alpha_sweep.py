"""The hybrid weight sweep: hybrid quality for text weights 0..1, the best one, and how honest that choice is.

Every catalog item is asked as a query at each alpha, with weighted and RRF fusion (candidates
do not depend on alpha, so they are computed once per k). The best weighted alpha becomes the
bundle's default; since it is tuned on the queries it is scored on, a k-fold estimate chooses
alpha on k-1 folds of queries and scores the held-out fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from recommender.engine import Recommender

from .base import EvaluationContext, EvaluationResult, Metrics
from .metrics import mean
from .rankings import FUSIONS, hybrid_report, item_candidates

ALPHAS = tuple(round(float(a), 2) for a in np.linspace(0.0, 1.0, 21))

#: Fusion -> alpha -> metric name -> per-query values.
PerQuerySweep = dict[str, dict[float, dict[str, np.ndarray]]]


def alpha_sweep(recommender: Recommender, rows: np.ndarray, labels: np.ndarray, ks: tuple[int, ...],
                alphas: tuple[float, ...] = ALPHAS, fusions: tuple[str, ...] = FUSIONS) -> PerQuerySweep:
    """Per fusion and alpha, per-query metrics of the hybrid ranking (candidates computed once per k)."""
    candidates = {k: item_candidates(recommender, rows, k) for k in ks}
    return {fusion: {alpha: hybrid_report(recommender, candidates, labels, rows, alpha, fusion) for alpha in alphas}
            for fusion in fusions}


def choose_alpha(per_alpha: dict[float, dict[str, np.ndarray]], metric: str, tie_metric: str,
                 queries: np.ndarray | None = None) -> float:
    """Alpha with the best mean ``metric`` (then ``tie_metric``, then closest to 0.5) over ``queries``."""
    def score(alpha: float) -> tuple[float, float, float]:
        values = per_alpha[alpha]
        pick = slice(None) if queries is None else queries
        return (round(float(np.mean(values[metric][pick])), 9), round(float(np.mean(values[tie_metric][pick])), 9),
                -abs(alpha - 0.5))

    return max(per_alpha, key=score)


@dataclass(frozen=True)
class CrossValidation:
    """Alpha chosen on ``folds - 1`` folds of queries, ``metric`` measured on the held-out fold (``value``)."""

    folds: int
    metric: str
    value: float
    alphas: list[float]  # chosen per fold


def cross_validated(per_alpha: dict[float, dict[str, np.ndarray]], metric: str, tie_metric: str, folds: int,
                    seed: int) -> CrossValidation:
    """Choose alpha on k-1 folds of the queries, measure ``metric`` on the held-out fold."""
    count = len(next(iter(per_alpha.values()))[metric])
    assignment = np.random.default_rng(seed).permutation(count) % folds
    held_out, chosen = np.empty(count), []
    for fold in range(folds):
        train, test = np.flatnonzero(assignment != fold), np.flatnonzero(assignment == fold)
        alpha = choose_alpha(per_alpha, metric, tie_metric, train)
        chosen.append(alpha)
        held_out[test] = per_alpha[alpha][metric][test]
    return CrossValidation(folds, metric, float(held_out.mean()), chosen)


@dataclass(frozen=True)
class AlphaSweepResult(EvaluationResult):
    """Mean hybrid metrics per fusion and alpha, the best alpha of each fusion, and its cross-validated score."""

    metric: str  # alpha is chosen on this (ties: ``tie_metric``, then closest to 0.5)
    tie_metric: str
    alpha: float  # best with weighted fusion: the bundle's default
    alpha_rrf: float  # best with RRF
    sweep: dict[str, dict[float, Metrics]]  # fusion -> alpha -> mean metrics
    cross_validated: CrossValidation | None

    @property
    def primary_metric(self) -> str:
        return f"hybrid {self.metric} at the chosen alpha"

    @property
    def primary(self) -> float:
        return self.sweep["weighted"][self.alpha][self.metric]


@dataclass(frozen=True)
class AlphaSweepEvaluator:
    """Sweep ``alphas`` with each of ``fusions``; cross-validate the weighted choice over ``folds`` (1: don't)."""

    alphas: tuple[float, ...] = ALPHAS
    fusions: tuple[str, ...] = FUSIONS
    folds: int = 5
    name: ClassVar[str] = "sweep"

    def __call__(self, context: EvaluationContext) -> AlphaSweepResult:
        sweep = alpha_sweep(context.recommender, context.rows, context.labels, context.ks, self.alphas, self.fusions)
        metric, tie_metric = context.metric, f"nDCG@{context.top}"
        best = {fusion: choose_alpha(sweep[fusion], metric, tie_metric) for fusion in self.fusions}
        folds = min(self.folds, len(context.rows))
        cv = cross_validated(sweep["weighted"], metric, tie_metric, folds, context.seed) if self.folds > 1 else None
        return AlphaSweepResult(
            metric=metric, tie_metric=tie_metric, alpha=best["weighted"], alpha_rrf=best.get("rrf", best["weighted"]),
            sweep={fusion: {alpha: mean(values) for alpha, values in per_alpha.items()}
                   for fusion, per_alpha in sweep.items()},
            cross_validated=cv,
        )
