"""Query vectors kept by content, so asking again costs no encoding.

**More** asks the same ranking for its next page, and a client paging through ``offset`` sends the
same thumbnail and title each time: without a cache every page encodes them again. A thumbnail is
keyed by the SHA-256 of its encoded bytes and a title by its cleaned text, so equal content hits
whatever the file is called; the vector is the one the encoders gave the first time (the engine's
answers stay those of a cold engine).

One cache belongs to one loaded bundle (a :class:`~recommender.engine.Recommender`): image-index
vectors depend on its title head and catalog, and a hot swap loads a new engine with an empty cache.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np

from ..data.images import ImageInput, read_image_bytes

#: Entries the app keeps: about 5 KB each (an 864-d image vector or a 384-d title vector, float32).
DEFAULT_QUERY_CACHE_SIZE = 1024


class QueryVectorCache:
    """A thread-safe LRU of ``key -> vector``; ``size`` 0 keeps nothing (every query encodes).

    Two threads missing the same key at once both encode it: the encoders are deterministic, so either
    result is the right one, and no thread waits behind another's encoding.
    """

    def __init__(self, size: int = DEFAULT_QUERY_CACHE_SIZE) -> None:
        if size < 0:
            raise ValueError(f"The query cache size must be 0 or more, got {size}.")
        self.size = size
        self.hits = self.misses = 0
        self._vectors: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The vector of ``key``, computed by ``compute`` on a miss (an error it raises is not kept)."""
        if self.size == 0:
            return compute()
        with self._lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
                self.hits += 1
                return vector
            self.misses += 1
        vector = compute()
        vector.flags.writeable = False  # shared by every later hit: nobody may change it in place
        with self._lock:
            self._vectors[key] = vector
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return vector

    def __len__(self) -> int:
        return len(self._vectors)

    def stats(self) -> dict[str, int]:
        """Size, entries, hits and misses: what ``/info`` reports, to size the cache by."""
        return {"size": self.size, "entries": len(self), "hits": self.hits, "misses": self.misses}


def image_key(source: ImageInput) -> tuple[tuple[str, str] | None, ImageInput]:
    """``(cache key, what to decode)`` of an uploaded thumbnail.

    A file path or bytes is keyed by the SHA-256 of its bytes, and those bytes are what gets decoded
    (the file is read once). An in-memory picture (PIL image, array) has no key: it is encoded each time.
    """
    if isinstance(source, (str, Path)):
        source = read_image_bytes(Path(source))
    if isinstance(source, (bytes, bytearray)):
        return ("image", hashlib.sha256(source).hexdigest()), source
    return None, source
