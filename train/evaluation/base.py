"""What every evaluator shares: the bundle under evaluation with its relevance labels, and a typed result.

An evaluator is a small callable object (its settings are its fields) with a ``name``; called
with an :class:`EvaluationContext` it returns a frozen dataclass derived from
:class:`EvaluationResult`, which names one primary metric and turns itself into JSON.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

import numpy as np

from recommender.engine import Recommender
from recommender.errors import RecommenderError

from .metrics import encode_labels

#: Metric name (``P@10``, ``nDCG@5``, ``recall@1``...) -> mean over the queries.
Metrics = dict[str, float]


class EvaluationError(RecommenderError):
    """The evaluation cannot run (missing label, mismatched baseline) or its fast path drifted from the engine."""


@dataclass
class EvaluationContext:
    """The bundle under evaluation, loaded once, and what every evaluator scores it by.

    Relevance: two items are relevant to each other when they share ``label`` (``labels`` holds its
    integer codes per catalog row, -1 where missing). Rows removed from a live bundle (tombstones) are
    neither asked nor found: their label is -1 and :attr:`rows` leaves them out. ``rng`` is shared: evaluators that sample
    queries draw from it in the order they run, so a whole run is reproducible from ``seed``.
    """

    bundle: Path
    recommender: Recommender
    label: str
    labels: np.ndarray
    label_names: list[str]
    ks: tuple[int, ...] = (5, 10)
    seed: int = 0
    text_model: str | None = None  # the override the bundle was loaded with, if any
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @classmethod
    def load(cls, bundle: str | Path, *, text_model: str | None = None, label: str = "channel",
             ks: tuple[int, ...] = (5, 10), seed: int = 0) -> "EvaluationContext":
        recommender = Recommender.load(bundle, text_model=text_model)
        if label not in recommender.catalog.metadata_columns:
            raise EvaluationError(f"The catalog has no column {label!r} to use as relevance label; its metadata "
                                  f"columns are {recommender.catalog.metadata_columns}.")
        labels, label_names = encode_labels(recommender.catalog.dataset[label])
        labels[~recommender.catalog.removed.live] = -1  # a removed item is relevant to nothing
        if recommender.catalog.live_count < 2:
            raise EvaluationError("Evaluation needs at least two catalog items.")
        return cls(Path(bundle), recommender, label, labels, label_names, tuple(ks), seed, text_model)

    @property
    def rows(self) -> np.ndarray:
        """Every live catalog row: in-catalog evaluators ask each item as a query."""
        return self.recommender.catalog.live_rows()

    @property
    def top(self) -> int:
        return max(self.ks)

    @property
    def metric(self) -> str:
        """The metric alpha is tuned on and results are led by: precision at the largest k."""
        return f"P@{self.top}"


class EvaluationResult(ABC):
    """Base of every evaluator's result (a frozen dataclass): one primary metric, and JSON.

    Fields declared with ``field(metadata=NOT_SAVED)`` (per-query arrays kept for plots or
    other evaluators) stay out of :meth:`to_dict`.
    """

    @property
    @abstractmethod
    def primary_metric(self) -> str:
        """What :attr:`primary` measures, e.g. ``hybrid P@10``."""

    @property
    @abstractmethod
    def primary(self) -> float:
        """The one number that sums this evaluator up (higher is better)."""

    def to_dict(self) -> dict:
        values = {item.name: to_plain(getattr(self, item.name)) for item in dataclasses.fields(self)
                  if item.metadata.get("saved", True)}
        return {"primary_metric": self.primary_metric, "primary": self.primary, **values}


#: ``field(metadata=NOT_SAVED)``: kept on the result object, left out of its JSON.
NOT_SAVED = {"saved": False}

Result = TypeVar("Result", bound=EvaluationResult, covariant=True)


class Evaluator(Protocol[Result]):
    """Scores the context's bundle in one way. ``name`` keys its timing and its part of the report."""

    name: ClassVar[str]

    def __call__(self, context: EvaluationContext) -> Result: ...


def to_plain(value: object) -> object:
    """JSON-ready copy: dataclasses and mappings to dicts, sequences to lists, numpy scalars to Python."""
    if isinstance(value, EvaluationResult):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: to_plain(getattr(value, item.name)) for item in dataclasses.fields(value)
                if item.metadata.get("saved", True)}
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
