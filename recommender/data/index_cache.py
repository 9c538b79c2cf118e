"""Joined indexes of a live bundle, kept on local disk so that loading does not redo an HNSW insertion.

A segment's entries join an HNSW graph only by inserting its vectors: FAISS cannot merge graphs
(:func:`~recommender.search.index.append_index`). Without this cache every load of such a bundle would
insert every row added since the last ``compact`` again. Instead, the first load writes the joined
index here, named by the checksums of the parts it joins, and later loads of the same parts read it
back; a load after a further ``add`` (a hot swap to the next revision) starts from the longest cached
prefix of its segments and inserts only the rest.

The cache is local and derived: it is never pushed (the joined graph is as large as the whole index,
and a push sends only what changed), deleting it only costs the insertion again, and a file that does
not read back as the expected index is ignored. The folder is the server user's alone (mode 0700);
each writer writes a temporary file of its own and renames it into place; one joined file is kept
per base index, and :data:`MAX_CACHED_JOINS` in all (the newest).
``RECOMMENDER_INDEX_CACHE`` names the folder (default ``video-recommender/joined-indexes`` under
``XDG_CACHE_HOME``, else ``~/.cache``); an empty value turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path

import faiss

logger = logging.getLogger(__name__)

ENV_INDEX_CACHE = "RECOMMENDER_INDEX_CACHE"
#: Joined indexes kept at most, newest first (a ``compact`` leaves its old base's joins behind).
MAX_CACHED_JOINS = 8


def cache_folder() -> Path | None:
    """Where joined indexes are kept, or ``None`` when the cache is off."""
    value = os.environ.get(ENV_INDEX_CACHE)
    if value is not None:
        return Path(value) if value else None
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "video-recommender" / "joined-indexes"


class JoinedIndexCache:
    """The cached joins of one modality's base index with the first 1, 2, ... of its segments."""

    def __init__(self, folder: Path, parts: list[str]):
        """``parts``: a checksum of the base index's files, then one of each segment's index and vectors."""
        self.folder = folder
        self.keys = [hashlib.sha256("\n".join(parts[:count + 1]).encode()).hexdigest() for count in range(len(parts))]

    def longest(self, counts: list[int], dimension: int) -> tuple[int, faiss.Index] | None:
        """``(segments joined, index)`` of the longest cached join that holds the rows ``counts`` says it must."""
        for joined in range(len(self.keys) - 1, 0, -1):
            path = self._path(joined)
            if not path.is_file():
                continue
            try:
                index = faiss.read_index(str(path))
            except RuntimeError as error:
                logger.warning("Ignoring the unreadable cached index %s (%s).", path, str(error).splitlines()[0])
                continue
            if index.ntotal == sum(counts[:joined + 1]) and index.d == dimension:
                return joined, index
            logger.warning("Ignoring the cached index %s: it does not hold the rows of this bundle.", path)
        return None

    def store(self, index: faiss.Index) -> None:
        """Keep ``index`` as the join of the base with every segment, in place of earlier joins of this base.
        A cache that cannot be written (read-only, full) is skipped with a warning: loading goes on."""
        path = self._path(len(self.keys) - 1)
        partial = None
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # a file of this writer's own: two loads of one bundle at once (a hot swap beside a load) each write theirs
            descriptor, name = tempfile.mkstemp(dir=self.folder, prefix=f"{path.stem}.", suffix=".partial")
            os.close(descriptor)
            partial = Path(name)
            faiss.write_index(index, str(partial))
            os.replace(partial, path)
            for old in self.folder.glob(f"{self.keys[0][:16]}-*.faiss"):
                if old != path:
                    old.unlink(missing_ok=True)
            joins = sorted(self.folder.glob("*.faiss"), key=lambda file: file.stat().st_mtime, reverse=True)
            for old in joins[MAX_CACHED_JOINS:]:
                old.unlink(missing_ok=True)
        except (OSError, RuntimeError) as error:
            if partial is not None:
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
            logger.warning("Cannot cache the joined index in %s (%s); the next load inserts the segments again.",
                           self.folder, str(error).splitlines()[0])

    def _path(self, joined: int) -> Path:
        return self.folder / f"{self.keys[0][:16]}-{self.keys[joined]}.faiss"
