"""What a query returns: ranked :class:`Recommendation` objects in a :class:`Recommendations` list."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import SupportsIndex, overload

import numpy as np


@dataclass(frozen=True)
class Recommendation:
    """One recommended video. ``image_score`` / ``text_score`` are cosine similarities to the query
    (``None`` when the query has no such modality); ``score`` is what the ranking used. ``duplicates``:
    ids of near-identical thumbnails folded into this result (``recommend(dedupe=True)``)."""

    rank: int
    item_id: str
    title: str
    score: float
    image_score: float | None
    text_score: float | None
    metadata: dict = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Recommendations(list):
    """A ranked ``list[Recommendation]`` that also says which mode actually ran and why (``notes``),
    and where each result sits in the bundle (``rows``: catalog row = row of every vector file).

    ``offset`` is where this page starts in the ranking and ``more`` whether a next page exists.
    A slice is a ``Recommendations`` too, with the same mode, notes, offset and ``more``.
    """

    def __init__(self, items: list[Recommendation], mode: str, notes: list[str], rows: np.ndarray | None = None,
                 offset: int = 0, more: bool = False):
        super().__init__(items)
        self.mode = mode
        self.notes = notes
        self.offset = offset
        self.more = more
        self.rows = np.asarray(rows if rows is not None else np.full(len(items), -1), dtype=np.int64)
        if len(self.rows) != len(items):
            raise ValueError(f"{len(items)} recommendations but {len(self.rows)} rows.")

    @overload
    def __getitem__(self, index: SupportsIndex) -> Recommendation: ...

    @overload
    def __getitem__(self, index: slice) -> "Recommendations": ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Recommendations(list.__getitem__(self, index), self.mode, list(self.notes), self.rows[index],
                                   self.offset, self.more)
        return list.__getitem__(self, index)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "notes": list(self.notes), "results": [r.to_dict() for r in self],
                "offset": self.offset, "more": self.more}
