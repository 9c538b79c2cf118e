"""Which catalog rows a query may return: ``where`` metadata filters, ``exclude`` and tombstones as one row mask.

A :class:`RowMask` is searched inside FAISS (an ``IDSelectorBitmap``) or, when it admits few
rows, by exact search over them (:mod:`~recommender.search.candidates`), so a filtered query
gets exactly the top items among those that match, never a short page. Metadata values are
matched by their text (``{"views": "1000"}`` matches the number 1000, as a URL or the CLI gives
it); :class:`MetadataColumns` keeps each column's value codes and caches each value's row mask,
so a filtered query does not scan the catalog's metadata again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import faiss
import numpy as np

from ..errors import InvalidQueryError

#: A filter's values per column: allowed values, or (``negated``) values to leave out.
Condition = tuple[tuple[str, ...], bool]


class RowMask:
    """Rows a search may return (a boolean mask), with its FAISS selector (valid while this object lives)."""

    def __init__(self, allowed: np.ndarray):
        self.allowed = np.ascontiguousarray(allowed, dtype=bool)
        self.count = int(self.allowed.sum())
        self._bitmap = np.packbits(self.allowed, bitorder="little")  # FAISS reads it through a raw pointer
        self._selector = faiss.IDSelectorBitmap(len(self._bitmap), faiss.swig_ptr(self._bitmap))

    def selector(self) -> faiss.IDSelector:
        return self._selector

    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.allowed)

    def __bool__(self) -> bool:  # like Tombstones: something is masked out
        return self.count < len(self.allowed)


def parse_where(where: Mapping[str, object] | None, columns: Sequence[str]) -> dict[str, Condition]:
    """``{"channel": "A"}``, ``{"channel": ["A", "B"]}`` or ``{"channel": {"not": ["A"]}}`` per column
    (columns ANDed) as conditions; an unknown column or another shape raises :class:`InvalidQueryError`."""
    if where is None:
        return {}
    if not isinstance(where, Mapping):
        raise InvalidQueryError(f"where must be an object of column -> value(s), got {where!r}.")
    conditions = {}
    for column, wanted in where.items():
        _known_column(column, columns, "where")
        negated = isinstance(wanted, Mapping)
        if negated:
            if set(wanted) != {"not"}:
                raise InvalidQueryError(f"where[{column!r}] as an object must be {{\"not\": [values]}}, got {wanted!r}.")
            wanted = wanted["not"]
        values = [wanted] if _is_scalar(wanted) else wanted
        if not isinstance(values, (list, tuple)) or not values or not all(_is_scalar(value) for value in values):
            raise InvalidQueryError(f"where[{column!r}] must be a value, a non-empty list of values, or "
                                    f"{{\"not\": [values]}}, got {wanted!r}.")
        conditions[str(column)] = (tuple(_text(value) for value in values), negated)
    return conditions


def parse_caps(max_per: Mapping[str, object] | None, columns: Sequence[str]) -> dict[str, int]:
    """``{"channel": 2}``: at most that many results per value of each column."""
    if max_per is None:
        return {}
    if not isinstance(max_per, Mapping):
        raise InvalidQueryError(f"max_per must be an object of column -> count, got {max_per!r}.")
    caps = {}
    for column, cap in max_per.items():
        _known_column(column, columns, "max_per")
        if isinstance(cap, bool) or not isinstance(cap, (int, np.integer, float)) or int(cap) != cap or cap < 1:
            raise InvalidQueryError(f"max_per[{column!r}] must be a whole number of at least 1, got {cap!r}.")
        caps[str(column)] = int(cap)
    return caps


def _known_column(column: object, columns: Sequence[str], parameter: str) -> None:
    """Raise :class:`InvalidQueryError` naming ``parameter`` and the catalog's metadata columns if ``column`` is not one."""
    if column not in columns:
        known = ", ".join(columns) if columns else "none"
        raise InvalidQueryError(f"Unknown metadata column {column!r} in {parameter}; metadata columns: {known}.")


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _text(value: object) -> str:
    """A value as the text it is matched by: ``3`` and ``3.0`` are both ``"3"``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


class MetadataColumns:
    """Per metadata column: each row's value code, the values' texts, and a cache of value -> row mask."""

    def __init__(self, names: Sequence[str], read: Callable[[str], Sequence[object]]):
        """``read(column)``: the column's value in every row, read once, when a query first needs it."""
        self.names = list(names)
        self._read = read
        self._codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._masks: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def codes(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """``(values, codes)``: the column's distinct value texts and each row's index into them."""
        found = self._codes.get(column)
        if found is None:
            texts = np.array(["" if value is None else _text(value) for value in self._read(column)], dtype=object)
            values, codes = np.unique(texts.astype(str), return_inverse=True)
            found = (values, codes.astype(np.int64))
            with self._lock:
                self._codes[column] = found
        return found

    def value_mask(self, column: str, value: str) -> np.ndarray:
        key = (column, value)
        mask = self._masks.get(key)
        if mask is None:
            values, codes = self.codes(column)
            position = int(np.searchsorted(values, value))
            mask = codes == position if position < len(values) and values[position] == value \
                else np.zeros(len(codes), dtype=bool)
            mask.setflags(write=False)
            with self._lock:
                self._masks[key] = mask
        return mask

    def matching(self, conditions: Mapping[str, Condition], count: int) -> np.ndarray:
        """Rows that meet every condition."""
        allowed = np.ones(count, dtype=bool)
        for column, (values, negated) in conditions.items():
            hit = np.zeros(count, dtype=bool)
            for value in values:
                hit |= self.value_mask(column, value)
            allowed &= ~hit if negated else hit
        return allowed

    def frequent_values(self, column: str, live: np.ndarray, max_values: int) -> list[str] | None:
        """The column's values among live rows, most frequent first; ``None`` if it has more than ``max_values``."""
        values, codes = self.codes(column)
        counts = np.bincount(codes[live], minlength=len(values))
        present = np.flatnonzero(counts)
        if not len(present) or len(present) > max_values:
            return None
        order = present[np.lexsort((values[present], -counts[present]))]
        return [str(values[position]) for position in order if values[position] != ""]
