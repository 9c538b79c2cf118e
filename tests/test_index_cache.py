"""The joined-index cache's writer: a private folder, and whole files when two loads store at once."""

from __future__ import annotations

import logging
import stat
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from recommender.data.index_cache import JoinedIndexCache


def _index(rows: int, dimension: int = 32) -> faiss.Index:
    index = faiss.IndexFlatIP(dimension)
    index.add(np.random.default_rng(rows).standard_normal((rows, dimension)).astype(np.float32))
    return index


def test_the_cache_folder_is_the_server_users_alone(tmp_path: Path) -> None:
    folder = tmp_path / "joined"
    JoinedIndexCache(folder, ["base", "segment"]).store(_index(10))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    joined, index = JoinedIndexCache(folder, ["base", "segment"]).longest([6, 4], 32)
    assert joined == 1 and index.ntotal == 10


def test_loads_that_store_the_same_join_at_once_leave_a_whole_file(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A hot swap's load beside another load of the same bundle: once, both wrote one temporary
    name, so one renamed the other's half-written file into place or failed to find its own."""
    folder, parts, big = tmp_path / "joined", ["base", "segment"], _index(60_000)
    start = threading.Barrier(4)

    def store() -> None:
        start.wait()
        for _ in range(5):
            JoinedIndexCache(folder, parts).store(big)

    threads = [threading.Thread(target=store) for _ in range(4)]
    with caplog.at_level(logging.WARNING, logger="recommender.data.index_cache"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert "Cannot cache" not in caplog.text
    joined, index = JoinedIndexCache(folder, parts).longest([50_000, 10_000], 32)
    assert joined == 1 and index.ntotal == 60_000
    assert faiss.vector_to_array(index.codes).tobytes() == faiss.vector_to_array(big.codes).tobytes()
    assert not list(folder.glob("*.partial"))
