"""Vector shards: written in batches, served memory-mapped, answering exactly as vectors in RAM do."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from recommender import Recommender
from recommender.data.bundle import FILES, MANIFEST, write_manifest
from recommender.data.vectors import (
    StackedVectors,
    VectorShardWriter,
    open_vector_shards,
    open_vectors,
)
from recommender.errors import BundleError
from train.build import build_bundle
from train.embedding import EmbeddingConfig

from .conftest import TEST_ENCODER
from .test_bundle import answers

#: float16 keeps 11 significant bits; stored on both sides of an item query (and in the index), a score
#: on the test catalog moved by up to 3.8e-3.
FLOAT16_SCORE_TOLERANCE = 5e-3


def mapped(vectors: np.ndarray) -> bool:
    """Whether ``vectors`` is a plain read-only array over a memory map's pages (no ``np.memmap`` hooks, no copy)."""
    return type(vectors) is np.ndarray and isinstance(vectors.base, np.memmap) and not vectors.flags.writeable


def written(tmp_path: Path, rows: np.ndarray, dtype: str, shard_rows: int, batch: int = 7):
    writer = VectorShardWriter(tmp_path, "image", rows.shape[1], dtype, shard_rows)
    for start in range(0, len(rows), batch):
        writer.append(rows[start:start + batch])
    entry = writer.close()
    return entry, open_vector_shards(tmp_path, entry, len(rows))


def test_shards_read_back_like_the_matrix(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).standard_normal((53, 6)).astype(np.float32)
    entry, vectors = written(tmp_path, rows, "float32", shard_rows=20)
    assert [shard["count"] for shard in entry["shards"]] == [20, 20, 13]
    assert isinstance(vectors, StackedVectors) and all(mapped(p) for p in vectors.parts)
    assert vectors.shape == rows.shape and len(vectors) == 53
    picks = np.array([52, 0, 19, 20, 21, 40, 19])
    mask = np.arange(53) % 3 == 0
    for key in (5, -1, 19, 20, slice(15, 45), slice(None), slice(50, 60), picks, mask, np.array([], dtype=int)):
        np.testing.assert_array_equal(vectors[key], rows[key])
    np.testing.assert_array_equal(np.asarray(vectors), rows)
    np.testing.assert_array_equal(vectors[picks] @ rows[0], rows[picks] @ rows[0])
    with pytest.raises(IndexError):
        vectors[53]


def _bytes_written() -> int:
    """Bytes this process has passed to write() so far (Linux ``/proc/self/io``)."""
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["wchar"])


def test_writing_holds_one_batch_not_the_shard(tmp_path: Path) -> None:
    """Rows go to disk as they come, once: a 200,000-item build once held its whole shard in RAM (5 KB an
    item) and twice that while joining it, and the next writer wrote every row twice (a raw file, then
    a copy behind the header). Here 40 batches of 1 MiB under one shard: the writer's memory peak
    stays a few batches, the bytes written are the rows and a header, and the shard reads back exactly."""
    rows_per_batch, dimension, batches = 1024, 256, 40
    batch = np.random.default_rng(0).standard_normal((rows_per_batch, dimension)).astype(np.float32)
    writer = VectorShardWriter(tmp_path, "image", dimension, "float32", shard_rows=10**6)
    written_before = _bytes_written()
    tracemalloc.start()
    try:
        for number in range(batches):
            writer.append(batch + number)
        assert not (tmp_path / "vectors" / "image-00000.npy").exists()  # a crash leaves no shard that looks whole
        entry = writer.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _bytes_written() - written_before < batches * batch.nbytes * 1.05
    assert peak < 4 * batch.nbytes, f"peak {peak / 2**20:.1f} MiB for {batches} batches of {batch.nbytes / 2**20:.0f} MiB"
    assert entry["shards"] == [{"file": "vectors/image-00000.npy", "count": rows_per_batch * batches}]
    stored = np.load(tmp_path / "vectors" / "image-00000.npy", mmap_mode="r")
    np.testing.assert_array_equal(stored[-rows_per_batch:], batch + (batches - 1))
    assert sorted(path.name for path in (tmp_path / "vectors").iterdir()) == ["image-00000.npy"]


def test_one_float32_shard_is_a_plain_memory_map(tmp_path: Path) -> None:
    rows = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    _, vectors = written(tmp_path, rows, "float32", shard_rows=100)
    assert mapped(vectors)
    np.testing.assert_array_equal(vectors, rows)


def test_open_vectors_reads_the_files_pages(tmp_path: Path) -> None:
    """The array open_vectors returns is the file's mapped pages, not a copy: a change to the file shows in it."""
    path = tmp_path / "rows.npy"
    np.save(path, np.zeros((3, 2), dtype=np.float32))
    vectors = open_vectors(path, 3)
    assert mapped(vectors)
    with open(path, "r+b") as file:
        file.seek(-4, 2)  # the last float32 of the last row
        file.write(np.float32(7.5).tobytes())
    assert vectors[2, 1] == 7.5 and vectors.sum() == 7.5


def test_float16_shards_read_as_float32(tmp_path: Path) -> None:
    rows = np.random.default_rng(2).standard_normal((30, 8)).astype(np.float32)
    entry, vectors = written(tmp_path, rows, "float16", shard_rows=100)
    assert entry["dtype"] == "float16" and np.load(tmp_path / entry["shards"][0]["file"]).dtype == np.float16
    assert vectors[3].dtype == np.float32 and vectors[:4].dtype == np.float32
    np.testing.assert_allclose(np.asarray(vectors), rows, rtol=1e-3, atol=1e-3)


def test_shard_count_must_match_the_catalog(tmp_path: Path) -> None:
    rows = np.zeros((12, 3), dtype=np.float32)
    entry, _ = written(tmp_path, rows, "float32", shard_rows=5)
    with pytest.raises(BundleError, match="hold 12 rows but the catalog has 13"):
        open_vector_shards(tmp_path, entry, 13)
    entry["shards"][1]["count"] = 4
    with pytest.raises(BundleError, match=r"image-00001.npy holds \(5, 3\) float32, expected \(4, dim\)"):
        open_vector_shards(tmp_path, entry, 11)


def build_like(bundle_dir: Path, catalog_parquet: Path, text_model: Path, output: Path,
               embedding: EmbeddingConfig) -> Path:
    """The test bundle again, with its trained encoder, stored as ``embedding`` says."""
    build_bundle(catalog_parquet, output, text_model=str(text_model), encoder_config=TEST_ENCODER,
                 encoder_weights=bundle_dir / FILES["encoder_weights"], embedding=embedding,
                 show_progress_bar=False)
    return output


def in_memory(recommender: Recommender) -> Recommender:
    """The same recommender with its vectors copied into RAM as plain float32 arrays."""
    return Recommender(recommender.catalog, recommender.thumbnail_encoder, recommender.title_encoder,
                       np.array(recommender.image_vectors), np.array(recommender.text_vectors),
                       recommender.image_index, recommender.text_index, recommender.manifest,
                       recommender.title_head, recommender.search)


def test_memory_mapped_shards_answer_as_vectors_in_ram(tmp_path: Path, bundle_dir: Path, catalog_parquet: Path,
                                                       text_model: Path, recommender: Recommender) -> None:
    folder = build_like(bundle_dir, catalog_parquet, text_model, tmp_path / "sharded", EmbeddingConfig(shard_rows=10))
    manifest = json.loads((folder / MANIFEST).read_text())
    assert [s["count"] for s in manifest["vectors"]["image"]["shards"]] == [10, 10, 10, 2]
    memory_mapped = Recommender.load(folder)
    assert isinstance(memory_mapped.image_vectors, StackedVectors)
    assert all(mapped(part) for part in memory_mapped.image_vectors.parts)
    np.testing.assert_allclose(np.asarray(memory_mapped.image_vectors), recommender.image_vectors, atol=1e-5)
    assert answers(memory_mapped) == answers(in_memory(memory_mapped))
    assert [[row[0] for row in query] for query in answers(memory_mapped)] == \
           [[row[0] for row in query] for query in answers(recommender)]


def test_float16_vectors_keep_the_top_k(tmp_path: Path, bundle_dir: Path, catalog_parquet: Path, text_model: Path,
                                        recommender: Recommender) -> None:
    folder = build_like(bundle_dir, catalog_parquet, text_model, tmp_path / "half", EmbeddingConfig(vector_dtype="float16"))
    half = Recommender.load(folder)
    assert np.load(folder / "vectors/image-00000.npy", mmap_mode="r").dtype == np.float16
    assert half.image_vectors[0].dtype == np.float32
    for got, expected in zip(answers(half), answers(recommender)):
        got_ids, expected_ids = {row[0] for row in got}, {row[0] for row in expected}
        cut = expected[-1][1]  # the k-th score
        # the same top k, but for items tied with the k-th within the tolerance: those may trade places across the cut
        assert len(got_ids) == len(expected_ids)
        assert all(abs(row[1] - cut) <= 2 * FLOAT16_SCORE_TOLERANCE for row in got if row[0] not in expected_ids)
        assert all(abs(row[1] - cut) <= FLOAT16_SCORE_TOLERANCE for row in expected if row[0] not in got_ids)
        np.testing.assert_allclose([row[1] for row in got], [row[1] for row in expected],
                                   atol=FLOAT16_SCORE_TOLERANCE)  # the score at every rank
        by_id = {row[0]: row for row in expected}
        for mine in (row for row in got if row[0] in by_id):  # each item's scores (a mode's missing scores stay missing)
            theirs = by_id[mine[0]]
            assert [score is None for score in mine[1:]] == [score is None for score in theirs[1:]]
            np.testing.assert_allclose([x for x in mine[1:] if x is not None],
                                       [x for x in theirs[1:] if x is not None], atol=FLOAT16_SCORE_TOLERANCE)
        exact = {row[0]: row[1] for row in expected}
        for mine, theirs in zip(got, expected):  # only items tied within the tolerance may swap places
            tolerance = FLOAT16_SCORE_TOLERANCE if mine[0] in exact else 2 * FLOAT16_SCORE_TOLERANCE
            assert mine[0] == theirs[0] or abs(exact.get(mine[0], mine[1]) - exact[theirs[0]]) <= tolerance


def test_bundle_from_before_shards_still_loads(tmp_path: Path, bundle_dir: Path, recommender: Recommender) -> None:
    """Single ``image_vectors.npy`` / ``text_vectors.npy`` and no ``vectors`` section: the old layout."""
    old = Path(shutil.copytree(bundle_dir, tmp_path / "old"))
    manifest = json.loads((old / MANIFEST).read_text())
    for modality in ("image", "text"):
        np.save(old / FILES[f"{modality}_vectors"], np.asarray(getattr(recommender, f"{modality}_vectors")))
    shutil.rmtree(old / "vectors")
    for key in ("vectors", "format_version", "files"):
        manifest.pop(key)
    write_manifest(old, manifest)
    loaded = Recommender.load(old)
    assert mapped(loaded.image_vectors) and mapped(loaded.text_vectors)  # served from the files' pages, no copy
    assert answers(loaded) == answers(recommender)
