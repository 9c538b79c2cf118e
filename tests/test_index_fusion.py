"""FAISS indexes (types, probes, persistence, mismatches) and hybrid ranking as a real fusion."""

from __future__ import annotations

from pathlib import Path

import datasets
import faiss
import numpy as np
import pytest

from recommender import Recommender
from recommender.data.catalog import Catalog
from recommender.errors import BundleError
from recommender.search.config import SearchConfig
from recommender.search.fusion import fuse_batch, masked_min_max
from recommender.search.index import (
    EXACT_SEARCH_LIMIT,
    build_index,
    choose_index_key,
    describe_index,
    load_index,
    normalize,
    save_index,
)

from .synthetic import catalog_records


def unit_vectors(count: int, dimension: int, seed: int = 0) -> np.ndarray:
    return normalize(np.random.default_rng(seed).standard_normal((count, dimension)))


def test_normalize_gives_unit_rows_keeps_zero_rows_and_copies() -> None:
    raw = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float64)
    normalised = normalize(raw)
    assert normalised.dtype == np.float32 and normalised.flags.c_contiguous
    assert np.allclose(normalised, [[0.6, 0.8], [0.0, 0.0]])
    assert raw[0, 0] == 3.0  # the caller's array is untouched
    assert normalize(np.array([0.0, 2.0])).shape == (1, 2)


def test_index_type_follows_catalog_size() -> None:
    assert choose_index_key(EXACT_SEARCH_LIMIT) == "Flat"
    assert choose_index_key(EXACT_SEARCH_LIMIT + 1).startswith("HNSW")
    vectors = unit_vectors(300, 16)
    exact = build_index(vectors)
    assert describe_index(exact) == "IndexFlatIP" and exact.metric_type == faiss.METRIC_INNER_PRODUCT
    assert describe_index(build_index(vectors, "HNSW32,Flat")) == "IndexHNSWFlat"


@pytest.mark.parametrize("key", ["HNSW32,Flat", "IVF8,Flat"])
def test_approximate_indexes_are_tuned_to_agree_with_exact_search(key: str) -> None:
    """An IVF index left at FAISS's nprobe=1 misses most neighbours; ours must find what Flat finds."""
    vectors = unit_vectors(400, 16, seed=1)
    queries = unit_vectors(20, 16, seed=2)
    _, exact = build_index(vectors).search(queries, 5)
    index = build_index(vectors, key)
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT and index.ntotal == 400
    _, approximate = index.search(queries, 5)
    recall = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(approximate, exact, strict=True)])
    assert recall >= 0.95
    _, self_hits = index.search(vectors[:50], 1)
    assert (self_hits[:, 0] == np.arange(50)).mean() >= 0.95  # row i is id i


def test_index_round_trip_and_hnsw_search_depth(tmp_path: Path) -> None:
    vectors = unit_vectors(200, 8)
    for key in ("Flat", "HNSW16,Flat"):
        index = build_index(vectors, key)
        save_index(index, tmp_path / "index.faiss")
        loaded = load_index(tmp_path / "index.faiss", expected_count=200, expected_dimension=8)
        for a, b in zip(index.search(vectors[:10], 7), loaded.search(vectors[:10], 7), strict=True):
            assert np.array_equal(a, b)
        assert describe_index(loaded) == describe_index(index)  # what the manifest says is what loads
        if key.startswith("HNSW"):
            assert faiss.downcast_index(loaded).hnsw.efSearch == SearchConfig().hnsw_ef_search


def test_load_index_refuses_files_that_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "image.faiss"
    with pytest.raises(BundleError, match="Missing index file .*image.faiss"):
        load_index(path, 10, 8)
    save_index(build_index(unit_vectors(10, 8)), path)
    with pytest.raises(BundleError, match=r"image.faiss holds 10 vectors of dimension 8.*11 items"):
        load_index(path, 11, 8)
    with pytest.raises(BundleError, match=r"image.faiss holds 10 vectors of dimension 8.*dimension 9"):
        load_index(path, 10, 9)
    l2 = faiss.IndexFlatL2(8)
    l2.add(unit_vectors(10, 8))
    faiss.write_index(l2, str(path))
    with pytest.raises(BundleError, match="image.faiss does not use inner product"):
        load_index(path, 10, 8)
    path.write_bytes(b"\x00garbage" * 20)
    with pytest.raises(BundleError, match="image.faiss is corrupted"):
        load_index(path, 10, 8)


def fuse_one(text: np.ndarray, image: np.ndarray, alpha: float, method: str = "weighted", rrf_k: int = 60) -> np.ndarray:
    """Fused scores of one candidate set (a batch of one, every entry valid)."""
    return fuse_batch(text[None], image[None], np.ones((1, len(text)), dtype=bool), alpha, method, rrf_k)[0]


def min_max(scores: np.ndarray) -> np.ndarray:
    return masked_min_max(scores[None], np.ones((1, len(scores)), dtype=bool))[0]


def test_min_max_and_weighted_fusion() -> None:
    assert np.array_equal(min_max(np.array([0.3, 0.3, 0.3])), [0, 0, 0])  # a constant modality ranks nothing
    assert np.allclose(min_max(np.array([0.2, 0.6, 1.0])), [0.0, 0.5, 1.0])
    text, image = np.array([0.9, 0.1, 0.5]), np.array([0.0, 1.0, 0.8])
    assert np.allclose(fuse_one(text, image, 1.0), min_max(text))
    assert np.allclose(fuse_one(text, image, 0.0), min_max(image))
    assert np.allclose(fuse_one(text, image, 0.5), 0.5 * min_max(text) + 0.5 * min_max(image))
    with pytest.raises(ValueError, match="fusion method"):
        fuse_one(text, image, 0.5, "union")


@pytest.mark.parametrize("rrf_k", [60, 5])
def test_reciprocal_rank_fusion_uses_ranks_not_scores(rrf_k: int) -> None:
    text, image = np.array([0.9, 0.1, 0.5]), np.array([0.99, 0.2, 0.1])
    scores = fuse_one(text, image, 0.5, "rrf", rrf_k)
    assert np.allclose(scores, [0.5 / (rrf_k + 1) + 0.5 / (rrf_k + 1), 0.5 / (rrf_k + 3) + 0.5 / (rrf_k + 2),
                                0.5 / (rrf_k + 2) + 0.5 / (rrf_k + 3)])
    # Rescaling one modality's scores (same order) changes nothing: only ranks count.
    assert np.allclose(fuse_one(text * 100, image, 0.3, "rrf"), fuse_one(text, image, 0.3, "rrf"))
    assert np.array_equal(np.argsort(-fuse_one(text, image, 1.0, "rrf")), np.argsort(-text))


# ---- hybrid ranking on a Recommender whose vectors are made by hand -------------------------------------

#: (name, cosine to the query's title, cosine to the query's thumbnail). Row 0 is the query item.
HANDMADE = [("query", 1.0, 1.0),
            ("text-1", 0.95, 0.00), ("text-2", 0.90, 0.05),
            ("image-1", 0.00, 0.95), ("image-2", 0.05, 0.90),
            ("both", 0.80, 0.80),
            ("filler-1", 0.10, 0.20), ("filler-2", 0.20, 0.10), ("filler-3", 0.15, 0.15)]


def vectors_with_similarities(similarities: list[float], dimension: int) -> np.ndarray:
    """Row 0 is the unit vector e0; row j has cosine ``similarities[j]`` to it and is otherwise orthogonal to all."""
    vectors = np.zeros((len(similarities), dimension), dtype=np.float32)
    vectors[0, 0] = 1.0
    for row, similarity in enumerate(similarities[1:], start=1):
        vectors[row, 0] = similarity
        vectors[row, row] = np.sqrt(1.0 - similarity ** 2)
    return vectors


@pytest.fixture(scope="module")
def handmade(bundle_dir: Path) -> Recommender:
    """The bundle's real encoders, with a catalog whose similarities to item ``query`` are set exactly."""
    base = Recommender.load(bundle_dir)
    image = catalog_records()[0]["image"]
    table = datasets.Dataset.from_dict(
        {"item_id": [name for name, _, _ in HANDMADE], "title": [name for name, _, _ in HANDMADE],
         "image": [image] * len(HANDMADE)},
        features=datasets.Features({"item_id": datasets.Value("string"), "title": datasets.Value("string"),
                                    "image": datasets.Image()}))
    text_vectors = vectors_with_similarities([t for _, t, _ in HANDMADE], base.title_encoder.dimension)
    image_vectors = vectors_with_similarities([i for _, _, i in HANDMADE], base.thumbnail_encoder.dimension)
    return Recommender(Catalog(table), base.thumbnail_encoder, base.title_encoder, image_vectors, text_vectors,
                       build_index(image_vectors), build_index(text_vectors), base.manifest)


def ids(results: list) -> list[str]:
    return [r.item_id for r in results]


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_hybrid_is_a_ranked_fusion_not_a_union(handmade: Recommender, fusion: str) -> None:
    text = ids(handmade.recommend(item_id="query", mode="text", k=2))
    image = ids(handmade.recommend(item_id="query", mode="image", k=2))
    assert text == ["text-1", "text-2"] and image == ["image-1", "image-2"]
    hybrid = handmade.recommend(item_id="query", mode="hybrid", k=2, alpha=0.5, fusion=fusion)
    assert len(hybrid) == 2
    # The item third on both lists is the best compromise: a union of the two top-2 lists cannot contain it.
    assert hybrid[0].item_id == "both"
    assert set(ids(hybrid)) != set(text) | set(image)
    assert hybrid[0].text_score == pytest.approx(0.80, abs=1e-5)
    assert hybrid[0].image_score == pytest.approx(0.80, abs=1e-5)


def test_hybrid_scores_are_the_weighted_fusion_over_the_candidates(handmade: Recommender) -> None:
    results = handmade.recommend(item_id="query", mode="hybrid", k=8, alpha=0.3)
    assert "query" not in ids(results) and len(results) == 8
    text = np.array([r.text_score for r in results])
    image = np.array([r.image_score for r in results])
    assert np.allclose([r.score for r in results], 0.3 * min_max(text) + 0.7 * min_max(image), atol=1e-5)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_alpha_moves_the_ranking_from_image_to_text(handmade: Recommender) -> None:
    everything = len(HANDMADE) - 1
    by_text = ids(handmade.recommend(item_id="query", mode="text", k=everything))
    by_image = ids(handmade.recommend(item_id="query", mode="image", k=everything))
    assert ids(handmade.recommend(item_id="query", mode="hybrid", k=everything, alpha=1.0)) == by_text
    assert ids(handmade.recommend(item_id="query", mode="hybrid", k=everything, alpha=0.0)) == by_image
    tops = [handmade.recommend(item_id="query", mode="hybrid", k=1, alpha=alpha)[0]
            for alpha in (0.0, 0.1, 0.5, 0.9, 1.0)]
    assert ids(tops) == ["image-1", "image-1", "both", "text-1", "text-1"]
