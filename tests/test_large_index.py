"""Large-catalog indexes: chosen above the threshold, tuned to the recall target, sharded, memory-mapped,
tombstones and live appends, all against real FAISS on a small clustered synthetic catalog (the
threshold is a parameter, so a few thousand vectors stand in for millions)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from recommender.data.tombstones import Tombstones
from recommender.errors import BundleError
from recommender.search import large_index
from recommender.search.config import SearchConfig
from recommender.search.index import (
    append_index,
    apply_search_config,
    build_index,
    build_tuned_index,
    choose_index_key,
    describe_index,
    empty_like,
    is_memory_mapped,
    load_index,
    save_index,
    search_live,
    tuned_search,
)

COUNT, DIMENSION, THRESHOLD = 4_000, 32, 1_000


def clustered(count: int = COUNT, dimension: int = DIMENSION, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 random centres: neighbours that an index must tell apart."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, 50, count)] + 0.4 * rng.standard_normal((count, dimension)).astype(np.float32)
    faiss.normalize_L2(vectors)
    return vectors


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered()


@pytest.fixture(scope="module")
def tuned(vectors: np.ndarray) -> tuple[faiss.Index, large_index.Tuning]:
    return build_tuned_index(vectors, large_threshold=THRESHOLD, train_sample=2_000)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return faiss.knn(queries, vectors, k, faiss.METRIC_INNER_PRODUCT)[1]


def test_above_the_threshold_the_compressed_index_is_chosen(tuned) -> None:
    assert choose_index_key(THRESHOLD, DIMENSION, THRESHOLD) == "Flat"
    key = choose_index_key(THRESHOLD + 1, DIMENSION, THRESHOLD)
    assert "PQ" in key and key.startswith("IVF") and "Refine" in key
    with pytest.raises(ValueError, match="dimension"):
        choose_index_key(THRESHOLD + 1, None, THRESHOLD)
    index, _ = tuned
    assert describe_index(index) == "IndexRefine(IndexIVFPQFastScan)"


def test_tuning_reaches_the_recall_target_on_held_out_rows(vectors, tuned) -> None:
    index, tuning = tuned
    assert tuning.reached and tuning.recall >= large_index.TARGET_RECALL
    assert faiss.extract_index_ivf(index).nprobe == tuning.nprobe
    assert tuning.nprobe < faiss.extract_index_ivf(index).nlist  # tuning found a cheaper depth than all lists
    # an independent check on other queries: fresh perturbations of catalog rows, not the tuning rows
    rng = np.random.default_rng(7)
    queries = vectors[rng.choice(COUNT, 200, replace=False)] + 0.05 * rng.standard_normal((200, DIMENSION))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    faiss.normalize_L2(queries)
    found = index.search(queries, 10)[1]
    assert large_index.recall_at_k(found, exact_top(vectors, queries, 10), 10) >= 0.9
    search = tuned_search(SearchConfig(), [tuning, None])
    assert search.ivf_nprobe == tuning.nprobe and search.refine_k_factor == tuning.k_factor


def test_a_given_nprobe_is_measured_not_replaced(vectors) -> None:
    index, tuning = build_tuned_index(vectors, large_threshold=THRESHOLD, train_sample=2_000,
                                      search=SearchConfig(ivf_nprobe=1, refine_k_factor=2))
    assert tuning.nprobe == 1 and tuning.k_factor == 2 and 0 < tuning.recall < 1
    assert faiss.extract_index_ivf(index).nprobe == 1
    assert tuned_search(SearchConfig(ivf_nprobe=1, refine_k_factor=2), [tuning]).ivf_nprobe == 1


def test_exact_neighbours_in_chunks_equal_one_exact_search(vectors) -> None:
    queries = vectors[:20]
    scores, rows = large_index.exact_neighbours(large_index.chunked(vectors, 333), queries, 10)
    expected_scores, expected_rows = faiss.knn(queries, vectors, 10, faiss.METRIC_INNER_PRODUCT)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


def test_shards_answer_like_one_index_and_load_back_from_their_files(vectors, tmp_path: Path) -> None:
    search = SearchConfig(ivf_nprobe=8, refine_k_factor=8)
    single = build_index(vectors, search=search, large_threshold=THRESHOLD, train_sample=2_000)
    sharded = build_index(vectors, search=search, large_threshold=THRESHOLD, train_sample=2_000, shards=3)
    assert describe_index(sharded) == "IndexShards(3 x IndexRefine(IndexIVFPQFastScan))"
    assert [shard.ntotal for shard in large_index.sub_indexes(sharded)] == large_index.shard_sizes(COUNT, 3)
    queries = vectors[::97]
    truth = exact_top(vectors, queries, 10)
    # each shard re-ranks its own candidates, so shards together re-rank at least as many as one index
    single_recall = large_index.recall_at_k(single.search(queries, 10)[1], truth, 10)
    assert large_index.recall_at_k(sharded.search(queries, 10)[1], truth, 10) >= single_recall >= 0.9
    # searched exhaustively both are exact over the same float16 vectors: the same rows, ids run on across shards
    exhaustive = SearchConfig(ivf_nprobe=64, refine_k_factor=COUNT // 10)
    for index in (single, sharded):
        apply_search_config(index, exhaustive)
    scores, rows = single.search(queries, 10)
    sharded_scores, sharded_rows = sharded.search(queries, 10)
    np.testing.assert_array_equal(sharded_rows, rows)
    np.testing.assert_allclose(sharded_scores, scores, rtol=1e-5)

    files = save_index(sharded, tmp_path / "text.faiss")
    assert [file.name for file in files] == ["text.faiss", "text.shard0.faiss", "text.shard1.faiss", "text.shard2.faiss"]
    for mmap in (False, True):
        loaded = load_index(tmp_path / "text.faiss", COUNT, DIMENSION, exhaustive, mmap=mmap)
        np.testing.assert_array_equal(loaded.search(queries, 10)[1], rows)
        assert is_memory_mapped(loaded) == mmap
    with pytest.raises(BundleError, match="memory-mapped"):  # FAISS would abort the process growing a mapped file
        append_index(loaded, empty_like(loaded), vectors[:2])
    (tmp_path / "text.shard1.faiss").unlink()
    with pytest.raises(BundleError, match="Missing index shard"):
        load_index(tmp_path / "text.faiss", COUNT, DIMENSION, exhaustive)


def test_memory_mapped_index_answers_like_the_one_in_ram(vectors, tuned, tmp_path: Path) -> None:
    index, tuning = tuned
    search = tuned_search(SearchConfig(), [tuning])
    save_index(index, tmp_path / "index.faiss")
    in_ram = load_index(tmp_path / "index.faiss", COUNT, DIMENSION, search)
    mapped = load_index(tmp_path / "index.faiss", COUNT, DIMENSION, search, mmap=True)
    queries = vectors[::50]
    expected = index.search(queries, 10)
    for loaded in (in_ram, mapped):
        found = loaded.search(queries, 10)
        np.testing.assert_array_equal(found[1], expected[1])
        np.testing.assert_allclose(found[0], expected[0], rtol=1e-5)
    # a live segment made from the memory-mapped index lives in RAM and takes entries
    segment = empty_like(mapped)
    assert not is_memory_mapped(segment) and segment.ntotal == 0
    segment.add(vectors[:20])
    assert (segment.search(vectors[:20], 1)[1][:, 0] == np.arange(20)).mean() >= 0.9


@pytest.mark.parametrize("shards", [1, 3])
def test_tombstones_are_never_returned_and_keep_the_search_depth(vectors, shards: int) -> None:
    search = SearchConfig(ivf_nprobe=8, refine_k_factor=8)
    index = build_index(vectors, search=search, large_threshold=THRESHOLD, train_sample=2_000, shards=shards)
    queries = vectors[:40]
    _, before = index.search(queries, 10)
    removed = Tombstones(np.unique(before[:, :3]), COUNT)  # each query's own top hits, across all shards
    scores, rows = search_live(index, queries, 10, removed)
    assert not np.isin(rows, removed.rows).any()
    assert (rows >= 0).all() and np.all(np.diff(scores, axis=1) <= 1e-6)
    # the live answer is the index's own top 10 of the live rows: the first live rows of a deeper search
    _, deep = index.search(queries, 200)
    for found, candidates in zip(rows, deep):
        live = [row for row in candidates if row not in removed][:10]
        assert len(set(found) & set(live)) >= 9


@pytest.mark.parametrize("shards", [1, 3])
def test_live_appends_extend_the_compressed_index(vectors, shards: int) -> None:
    search = SearchConfig(ivf_nprobe=16, refine_k_factor=8)
    base, extra = vectors[:3_500], vectors[3_500:]
    index = build_index(base, search=search, large_threshold=THRESHOLD, train_sample=2_000, shards=shards)
    segment = empty_like(index)
    assert segment.ntotal == 0 and segment.is_trained
    segment.add(extra)
    append_index(index, segment, extra)
    assert index.ntotal == COUNT
    _, rows = index.search(extra[:50], 10)
    assert (rows == np.arange(3_500, 3_550)[:, None]).any(axis=1).mean() >= 0.95  # appended rows keep their row ids
    removed = Tombstones(np.arange(3_500, 3_550), COUNT)
    _, live_rows = search_live(index, extra[:50], 5, removed)
    assert not np.isin(live_rows, removed.rows).any()


def test_a_bundle_above_the_threshold_is_built_tuned_sharded_and_served(tmp_path: Path, catalog_parquet: Path,
                                                                        text_model: Path) -> None:
    from recommender import Recommender
    from train.build import build_bundle
    from train.trainer import TrainingConfig

    from .conftest import TEST_ENCODER

    bundle = tmp_path / "bundle"
    manifest = build_bundle(catalog_parquet, bundle, text_model=str(text_model), encoder_config=TEST_ENCODER,
                            training=TrainingConfig(epochs=1, batch_size=8), large_index_threshold=10,
                            index_shards=2, show_progress_bar=False)
    tunings = []
    for modality in ("image", "text"):
        entry = manifest["indexes"][modality]
        assert entry["type"].startswith("IndexShards(2 x IndexRefine(IndexIVFPQFastScan")
        assert [(bundle / name).is_file() for name in entry["shard_files"]] == [True, True]
        assert entry["tuning"]["reached"] and entry["tuning"]["recall"] >= large_index.TARGET_RECALL
        tunings.append(entry["tuning"])
    assert manifest["search"]["ivf_nprobe"] == max(tuning["nprobe"] for tuning in tunings)
    assert manifest["search"]["refine_k_factor"] == max(tuning["k_factor"] for tuning in tunings)

    recommender = Recommender.load(bundle, text_model=str(text_model))
    text_vectors = np.asarray(recommender.text_vectors)  # the bundle's vector shards, as served
    scores = text_vectors @ text_vectors[0]
    scores[0] = -np.inf
    exact = list(np.argsort(-scores, kind="stable")[:5])
    found = [int(row) for row in recommender.recommend(item_id="vid000", mode="text", k=5).rows]
    # the compressed index re-ranks on float16 copies: the exact top 5, near-ties in either order
    assert sorted(found) == sorted(exact)
    assert all(row == want or abs(scores[row] - scores[want]) < 2e-3 for row, want in zip(found, exact))


def test_scale_benchmark_runs_end_to_end_at_a_tiny_size(tmp_path: Path) -> None:
    from benchmarks import scale_index
    from benchmarks.common import Results

    results = Results()
    raw = scale_index.run(clustered(300, 48), clustered(300, 40, seed=1), results, vectors=3_000, queries=20,
                          image_dim=16, shards=2, train_sample=1_000, chunk=700, scratch=tmp_path)
    assert list(tmp_path.iterdir()) == []  # the generated vectors and index files are deleted
    for name in ("text", "image"):
        assert raw[name]["tuning"]["reached"] and raw[name]["build_s"] > 0
        assert max(row["recall"] for row in raw[name]["sweep"]) >= 0.9
    assert raw["hybrid"]["n"] == 20 and raw["hybrid"]["p50_ms"] > 0
    assert any("hybrid" in row.metric for row in results.rows)


def test_an_ivf_index_trains_on_enough_rows_for_its_lists() -> None:
    """A sample too small for the lists is raised to 40 a list: 50 rows cannot place 64 centroids."""
    assert large_index.training_sample("IVF4096_HNSW32,PQ96x4fs,Refine(SQfp16)", 100_000) == 163_840
    assert large_index.training_sample("IVF1024_HNSW32,PQ96x4fs,Refine(SQfp16)", 100_000) == 100_000
    assert large_index.training_sample("HNSW32,Flat", 500) == 500
    vectors = clustered(4_000)
    index = build_index(vectors, "IVF64,Flat", train_sample=50)
    assert index.ntotal == len(vectors) and faiss.extract_index_ivf(index).nlist == 64


def test_index_scaling_measures_every_key_asked_for_without_the_engine_choice() -> None:
    """`--no-engine-choice --keys "hnsw;large"` at 100k measured only the compressed index: the HNSW key
    was dropped as a repeat of the engine's choice, which was not being measured."""
    from benchmarks.index_scaling import _distinct_keys

    shape = (100_000, 384)
    assert _distinct_keys(["hnsw", "large"], shape, engine=False) == ["hnsw", "large"]
    assert _distinct_keys(["hnsw", "large"], shape, engine=True) == [None, "large"]  # the engine picks HNSW here
