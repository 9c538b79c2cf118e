"""Tombstones: catalog rows removed from a live bundle but still in its files until ``train compact``.

Removing a video must not renumber anything (row i of the catalog is vector i of every index),
so a removed row stays where it is and is only marked. Searches skip marked rows inside FAISS
(an ``IDSelector`` of the live rows, see :func:`recommender.search.index.search_live`), so a
result is exactly the top k of the live items; item lookups, catalog search and shuffle skip them too.

On disk a bundle's tombstones are one small JSON file its manifest declares (with a checksum), so
they travel with the bundle to the Hub: the removed rows and, as a check, their item ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from ..errors import BundleError


class Tombstones:
    """The removed rows of a catalog of ``count`` rows; immutable, shared by every thread."""

    def __init__(self, rows: np.ndarray | list[int], count: int):
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= count):
            raise ValueError(f"Removed rows must lie in 0..{count - 1}.")
        self.rows = rows
        self.count = int(count)
        self._live = np.ones(count, dtype=bool)
        self._live[rows] = False
        self._live.setflags(write=False)
        # FAISS reads the bitmap through a raw pointer: it lives as long as this object.
        self._bitmap = np.packbits(self._live, bitorder="little")
        self._selector = faiss.IDSelectorBitmap(len(self._bitmap), faiss.swig_ptr(self._bitmap))

    @classmethod
    def none(cls, count: int) -> Tombstones:
        return cls(np.zeros(0, dtype=np.int64), count)

    def __len__(self) -> int:
        return len(self.rows)

    def __bool__(self) -> bool:
        return len(self.rows) > 0

    def __contains__(self, row: object) -> bool:
        return isinstance(row, (int, np.integer)) and 0 <= row < self.count and not self._live[row]

    @property
    def live(self) -> np.ndarray:
        """Boolean mask over all rows: ``True`` where the row is live (read-only)."""
        return self._live

    @property
    def live_count(self) -> int:
        return self.count - len(self.rows)

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self._live)

    def selector(self) -> faiss.IDSelector:
        """A FAISS selector that admits live rows only (valid while this object lives)."""
        return self._selector

    def with_rows(self, rows: np.ndarray | list[int], count: int | None = None) -> Tombstones:
        """These tombstones plus ``rows``, for a catalog now of ``count`` rows (default: the same)."""
        return Tombstones(np.concatenate([self.rows, np.asarray(rows, dtype=np.int64)]),
                          self.count if count is None else count)

    def save(self, path: Path, item_ids: list[str]) -> None:
        """Write the removed rows and, as a check the loader makes, the ids they held."""
        Path(path).write_text(json.dumps({"rows": self.rows.tolist(),
                                          "item_ids": [item_ids[row] for row in self.rows.tolist()]}))

    @classmethod
    def load(cls, path: Path, item_ids: list[str]) -> Tombstones:
        """Read a tombstone file for a catalog whose ids are ``item_ids``; a file that names other ids
        than those rows hold is refused (it belongs to another revision of the bundle)."""
        try:
            data = json.loads(Path(path).read_text())
            rows, ids = np.asarray(data["rows"], dtype=np.int64), [str(item) for item in data["item_ids"]]
            tombstones = cls(rows, len(item_ids))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise BundleError(f"Tombstone file {path} cannot be read ({error}). Rebuild the bundle.") from None
        if len(ids) != len(rows) or any(item_ids[row] != item for row, item in zip(rows.tolist(), ids)):
            raise BundleError(f"Tombstone file {path} names items the catalog does not hold at those rows: it "
                              "belongs to another revision of this bundle. Rebuild or re-download the bundle.")
        return tombstones
