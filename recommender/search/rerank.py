"""From a ranked candidate pool to the results, one greedy pick at a time: dedupe, diversity, max_per.

- **dedupe**: when a result is picked, every candidate whose *looks* (the autoencoder features, without
  a title head's predicted title) have cosine ``>= threshold`` with it is folded into it
  (``duplicates``), so it is never shown after it;
- **diversity** (MMR, weight ``d``): the next pick maximises ``(1 - d) * relevance - d * max similarity
  to the results picked so far``, relevance min-max scaled over the pool; ``d = 0`` keeps the pool's
  order exactly, ``d = 1`` picks the candidate least like everything shown;
- **max_per**: a candidate whose metadata value already has its cap of results is skipped.

A :class:`Selection` keeps what was picked and folded, and continues from it with a deeper pool
(:mod:`~recommender.search.paging`): earlier picks never change, so pages stay consistent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .candidates import Pool


@dataclass(frozen=True)
class Similarity:
    """How alike two results are: ``sum(weight * parts[i][a] @ parts[i][b])`` over unit-vector matrices."""

    parts: tuple[tuple[np.ndarray, float], ...]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of ``rows`` whose inner products are the similarity (weights folded in as square roots)."""
        parts = [vectors[rows] if weight == 1 else np.sqrt(weight, dtype=np.float32) * vectors[rows]
                 for vectors, weight in self.parts if weight > 0]
        return parts[0] if len(parts) == 1 else np.hstack(parts)


@dataclass(frozen=True)
class Caps:
    """``max_per``: per column, each row's value code and the most results one value may have."""

    codes: tuple[np.ndarray, ...]
    limits: tuple[int, ...]
    values: tuple[int, ...]  # how many distinct values each column has (codes are below it)


@dataclass
class Selection:
    """Results picked so far (in order), and every row picked or folded into one (``taken``)."""

    diversity: float
    similarity: Callable[[np.ndarray], np.ndarray]  # rows -> vectors whose inner products say how alike they are
    looks: Callable[[np.ndarray], np.ndarray] | None  # rows -> unit looks vectors; None: dedupe is off
    threshold: float
    caps: Caps | None
    count: int  # catalog rows
    picked: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # each pick's score in the pool it came from

    def __post_init__(self) -> None:
        self._taken = np.zeros(self.count, dtype=bool)  # picked and folded rows
        self._counts = [np.zeros(values, dtype=np.int64) for values in (self.caps.values if self.caps else ())]
        self._full = [np.zeros(values, dtype=bool) for values in (self.caps.values if self.caps else ())]

    def taken(self) -> np.ndarray:
        """Boolean mask over the catalog: rows picked or folded into a pick."""
        return self._taken

    def extend(self, pool: Pool, target: int) -> bool:
        """Pick from ``pool`` until ``target`` results; ``False`` if the pool ran out of candidates first."""
        fresh = ~self._taken[pool.rows]
        rows, score = pool.rows[fresh], pool.score[fresh]
        relevance = score.astype(np.float64)
        available = np.ones(len(rows), dtype=bool)
        looks = self.looks(rows) if self.looks is not None and len(rows) else None
        if looks is not None and self.picked:
            self._fold_into_earlier(rows, looks, available)
        eligible = self._eligible(rows)
        mmr = self.diversity > 0 and len(rows) > 0
        if mmr:
            vectors = self.similarity(rows)
            spread = relevance.max() - relevance.min()
            relevance = (relevance - relevance.min()) / spread if spread > 1e-12 else np.zeros_like(relevance)
            closest = (vectors @ self.similarity(np.asarray(self.picked)).T).max(axis=1) if self.picked \
                else np.zeros(len(rows))
            gain = (1.0 - self.diversity) * relevance
        while len(self.picked) < target:
            open_ = available & eligible
            if not open_.any():
                return False
            if mmr:
                position = int(np.argmax(np.where(open_, gain - self.diversity * closest, -np.inf)))
            else:
                position = int(np.argmax(open_))  # the first one left, in the pool's order
            row = int(rows[position])
            available[position] = False
            self.picked.append(row)
            self.scores.append(float(score[position]))
            self._taken[row] = True
            if looks is not None:
                copies = available & (looks @ looks[position] >= self.threshold)
                if copies.any():
                    available &= ~copies
                    self._taken[rows[copies]] = True
            if mmr:
                closest = np.maximum(closest, vectors @ vectors[position])
            if self.caps is not None:
                eligible &= self._count(row, rows)
        return True

    def _fold_into_earlier(self, rows: np.ndarray, looks: np.ndarray, available: np.ndarray) -> None:
        """A deeper pool's candidates that copy an earlier result are folded (into the first such result)."""
        hit = (looks @ self.looks(np.asarray(self.picked)).T >= self.threshold).any(axis=1)
        available &= ~hit
        self._taken[rows[hit]] = True

    def _eligible(self, rows: np.ndarray) -> np.ndarray:
        eligible = np.ones(len(rows), dtype=bool)
        for codes, full in zip(self.caps.codes, self._full) if self.caps else ():
            eligible &= ~full[codes[rows]]
        return eligible

    def _count(self, row: int, rows: np.ndarray) -> np.ndarray:
        """Count ``row`` against each cap; the pool's rows still allowed after it."""
        eligible = np.ones(len(rows), dtype=bool)
        for codes, counts, full, limit in zip(self.caps.codes, self._counts, self._full, self.caps.limits):
            code = codes[row]
            counts[code] += 1
            if counts[code] >= limit:
                full[code] = True
                eligible &= codes[rows] != code
        return eligible

    def capped(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per cap, its codes and which values reached it (to tell whether anything selectable is left)."""
        return list(zip(self.caps.codes, self._full)) if self.caps else []
