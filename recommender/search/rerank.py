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
        """Vectors of ``rows`` whose inner products are the similarity (weights folded in as square roots),
        written side by side into one float32 array."""
        parts = [(vectors, weight) for vectors, weight in self.parts if weight > 0]
        out = np.empty((len(rows), sum(vectors.shape[1] for vectors, _ in parts)), dtype=np.float32)
        start = 0
        for vectors, weight in parts:
            block = out[:, start:start + vectors.shape[1]]
            if vectors.dtype == np.float32:
                np.take(vectors, rows, axis=0, out=block, mode="clip")  # rows are valid; "clip" skips a buffer
            else:
                block[:] = vectors[rows]
            if weight != 1:
                block *= np.sqrt(weight, dtype=np.float32)
            start += vectors.shape[1]
        return out


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
        self._results_looks_buffer = np.zeros((0, 0), dtype=np.float32)  # dedupe on: results' looks, grown as picked

    def taken(self) -> np.ndarray:
        """Boolean mask over the catalog: rows picked or folded into a pick."""
        return self._taken

    def extend(self, pool: Pool, target: int) -> bool:
        """Pick from ``pool`` until ``target`` results; ``False`` if the pool ran out of candidates first.

        A candidate is checked against the results' looks only when it would be picked (a copy is
        folded then and the next one tried), and capped values are dropped as their caps fill, so a
        pick costs one pass over the pool's vectors with diversity and almost nothing without.
        """
        fresh = ~self._taken[pool.rows]
        rows, score = pool.rows[fresh], pool.score[fresh]
        open_ = self._eligible(rows)  # a capped value never opens again
        if not (self.diversity > 0 and len(rows)):
            for position in np.flatnonzero(open_).tolist():
                if len(self.picked) >= target:
                    return True
                row = int(rows[position])
                if self.caps is not None and self._capped(row):
                    continue
                looks = self._looks_of(row)
                if not self._folded(row, looks):
                    self._pick(row, float(score[position]), looks)
                    if self.caps is not None:
                        self._count(row, None)
            return len(self.picked) >= target
        relevance = score.astype(np.float64)  # min-max scaled over the whole fresh pool
        spread = relevance.max() - relevance.min()
        relevance = (relevance - relevance.min()) / spread if spread > 1e-12 else np.zeros_like(relevance)
        keep = np.flatnonzero(open_)
        rows, score, gain = rows[keep], score[keep], (1.0 - self.diversity) * relevance[keep]
        if not len(rows):
            return False
        vectors = self.similarity(rows)
        closest = (vectors @ self.similarity(np.asarray(self.picked)).T).max(axis=1) if self.picked \
            else np.zeros(len(rows))
        value = gain - self.diversity * closest
        while len(self.picked) < target:
            position = int(np.argmax(value))
            if value[position] == -np.inf:
                return False
            value[position] = -np.inf
            row = int(rows[position])
            looks = self._looks_of(row)
            if self._folded(row, looks):
                continue
            self._pick(row, float(score[position]), looks)
            np.maximum(closest, vectors @ vectors[position], out=closest)
            closed = np.isneginf(value)
            if self.caps is not None:
                closed |= ~self._count(row, rows)
            value = gain - self.diversity * closest
            value[closed] = -np.inf
        return True

    def _looks_of(self, row: int) -> np.ndarray | None:
        """``row``'s looks vector, gathered once for both the copy check and the pick (``None``: dedupe off)."""
        return None if self.looks is None else self.looks(np.array([row]))[0]

    def _pick(self, row: int, score: float, looks: np.ndarray | None) -> None:
        self.picked.append(row)
        self.scores.append(score)
        self._taken[row] = True
        if looks is not None:
            if len(self.picked) > len(self._results_looks_buffer):  # grown by doubling: one copy per doubling
                grown = np.empty((2 * len(self.picked), len(looks)), dtype=np.float32)
                if len(self.picked) > 1:
                    grown[:len(self.picked) - 1] = self._results_looks_buffer[:len(self.picked) - 1]
                self._results_looks_buffer = grown
            self._results_looks_buffer[len(self.picked) - 1] = looks

    def _folded(self, row: int, looks: np.ndarray | None) -> bool:
        """Whether ``row``'s thumbnail (``looks``) copies a result's (it is then folded into it: taken, never shown)."""
        if looks is None or not self.picked:
            return False
        if not (self._results_looks() @ looks >= self.threshold).any():
            return False
        self._taken[row] = True
        return True

    def _results_looks(self) -> np.ndarray:
        """The results' looks vectors, one row per result."""
        return self._results_looks_buffer[:len(self.picked)]

    def _capped(self, row: int) -> bool:
        return any(full[codes[row]] for codes, full in zip(self.caps.codes, self._full))

    def copies_a_result(self, rows: np.ndarray) -> np.ndarray:
        """Which of ``rows`` copy some result's thumbnail (all ``False`` with dedupe off)."""
        if self.looks is None or not self.picked or not len(rows):
            return np.zeros(len(rows), dtype=bool)
        return (self.looks(rows) @ self._results_looks().T >= self.threshold).any(axis=1)

    def _eligible(self, rows: np.ndarray) -> np.ndarray:
        eligible = np.ones(len(rows), dtype=bool)
        for codes, full in zip(self.caps.codes, self._full) if self.caps else ():
            eligible &= ~full[codes[rows]]
        return eligible

    def _count(self, row: int, rows: np.ndarray | None) -> np.ndarray | None:
        """Count ``row`` against each cap; which of ``rows`` (if given) are still allowed after it."""
        eligible = None if rows is None else np.ones(len(rows), dtype=bool)
        for codes, counts, full, limit in zip(self.caps.codes, self._counts, self._full, self.caps.limits):
            code = codes[row]
            counts[code] += 1
            if counts[code] >= limit:
                full[code] = True
                if rows is not None:
                    eligible &= codes[rows] != code
        return eligible

    def capped(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per cap, its codes and which values reached it (to tell whether anything selectable is left)."""
        return list(zip(self.caps.codes, self._full)) if self.caps else []
