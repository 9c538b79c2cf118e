"""The Recommender on a real bundle: ids line up, self-exclusion, validation, fallbacks and thread safety."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import numpy as np
import pytest

from recommender import MODES, InvalidQueryError, Recommender
from recommender.data.bundle import FILES
from recommender.search.config import SearchConfig

from .synthetic import catalog_records, jpeg_bytes, thumbnail

RECORDS = catalog_records()


def ids(results: list) -> list[str]:
    return [r.item_id for r in results]


@pytest.mark.parametrize("mode", MODES)
def test_every_item_finds_itself_first_by_its_own_image_and_title(recommender: Recommender, mode: str) -> None:
    """Row i of the catalog is vector i of both indexes: a query built from an item's own content
    (not its id) must rank that item first, in English, Sinhala and Tamil alike."""
    for record in RECORDS:
        query = {"image": record["image"]["bytes"] if mode != "text" else None,
                 "title": record["title"] if mode != "image" else None}
        results = recommender.recommend(**query, mode=mode, k=3)
        assert results.mode == mode and results.notes == []
        top = results[0]
        assert (top.item_id, top.title) == (record["video_id"], record["title"]), (mode, record["title"])
        assert top.metadata == {"channel": record["channel"], "views": record["views"]}


def test_a_query_title_gets_the_vector_the_catalog_was_built_with(recommender: Recommender) -> None:
    """One title takes a leaner path than a batch; both must give the catalog's stored vector."""
    for row, record in enumerate(RECORDS[:6]):
        one = recommender.title_encoder.encode([record["title"]])
        batch = recommender.title_encoder.encode([record["title"], "another, much longer title that pads the batch"])
        assert one.shape == (1, recommender.title_encoder.dimension) and one.dtype == np.float32
        np.testing.assert_allclose(one[0], batch[0], atol=1e-5)
        np.testing.assert_allclose(one[0], recommender.text_vectors[row], atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_item_queries_never_return_the_item_itself(recommender: Recommender, mode: str) -> None:
    for record in RECORDS:
        results = recommender.recommend(item_id=record["video_id"], mode=mode, k=31)
        assert record["video_id"] not in ids(results)
        assert len(results) == 31 and len(set(ids(results))) == 31  # everything else, each once


def test_item_query_uses_the_stored_vectors(recommender: Recommender) -> None:
    """Querying by id equals querying with the item's stored vectors, less the item itself."""
    row = recommender.catalog.row_of("vid102")
    by_id = recommender.recommend(item_id="vid102", mode="hybrid", k=5)
    for result, result_row in zip(by_id, by_id.rows):
        assert result.image_score == pytest.approx(float(recommender.image_vectors[result_row]
                                                         @ recommender.image_vectors[row]), abs=1e-6)
        assert result.text_score == pytest.approx(float(recommender.text_vectors[result_row]
                                                        @ recommender.text_vectors[row]), abs=1e-6)
    by_text = recommender.recommend(item_id="vid102", mode="text", k=5)
    expected = np.argsort(-(recommender.text_vectors @ recommender.text_vectors[row]), kind="stable")
    assert by_text.rows.tolist() == [int(i) for i in expected if i != row][:5]


def test_results_carry_ranks_rows_and_the_right_scores(recommender: Recommender) -> None:
    text = recommender.recommend(title="paper plane tutorial", mode="text", k=6)
    assert [r.rank for r in text] == list(range(1, 7))
    assert all(r.image_score is None and r.score == pytest.approx(r.text_score, abs=1e-5) for r in text)
    assert [r.score for r in text] == sorted((r.score for r in text), reverse=True)
    for r, row in zip(text, text.rows):
        assert recommender.catalog.item_ids[row] == r.item_id and recommender.catalog.titles[row] == r.title
        assert r.to_dict()["item_id"] == r.item_id
    image = recommender.recommend(image=RECORDS[5]["image"]["bytes"], mode="image", k=4)
    assert all(r.text_score is None and r.score == pytest.approx(r.image_score, abs=1e-5) for r in image)


def test_hybrid_alpha_extremes_rank_like_each_modality(recommender: Recommender) -> None:
    """Over the candidate set (the whole 32-item catalog here), alpha=1 is text mode and alpha=0 image mode."""
    image, title = RECORDS[3]["image"]["bytes"], RECORDS[20]["title"]  # a phone thumbnail, a Sinhala title
    by_text = recommender.recommend(title=title, mode="text", k=20)
    by_image = recommender.recommend(image=image, mode="image", k=20)
    for fusion in ("weighted", "rrf"):
        at_one = recommender.recommend(image=image, title=title, mode="hybrid", k=20, alpha=1.0, fusion=fusion)
        assert_same_ranking(at_one, by_text, "text_score")
        at_zero = recommender.recommend(image=image, title=title, mode="hybrid", k=20, alpha=0.0, fusion=fusion)
        assert_same_ranking(at_zero, by_image, "image_score")
    balanced = recommender.recommend(image=image, title=title, mode="hybrid", k=20, alpha=0.5)
    assert ids(balanced) not in (ids(by_text), ids(by_image))


def assert_same_ranking(found: list, expected: list, score: str) -> None:
    """The same items in the same order, but for neighbours whose ``score`` ties within float32 noise: the
    FAISS index and the hybrid re-scoring's matrix product may round such ties apart either way."""
    assert sorted(ids(found)) == sorted(ids(expected))
    for got, want in zip(found, expected):
        assert got.item_id == want.item_id or abs(getattr(got, score) - getattr(want, score)) < 1e-5


def test_rrf_scores_are_reciprocal_ranks(recommender: Recommender) -> None:
    """With 32 items every other item is a candidate, so the expected RRF scores follow from the stored vectors."""
    row = recommender.catalog.row_of("vid001")
    others = np.array([i for i in range(len(recommender)) if i != row])

    def ranks(vectors: np.ndarray) -> dict[int, int]:
        order = others[np.argsort(-(vectors[others] @ vectors[row]), kind="stable")]
        return {int(item): rank for rank, item in enumerate(order, start=1)}

    text_ranks, image_ranks = ranks(recommender.text_vectors), ranks(recommender.image_vectors)
    results = recommender.recommend(item_id="vid001", mode="hybrid", k=10, fusion="rrf", alpha=0.25)
    rrf_k = SearchConfig().rrf_k
    for r, row in zip(results, results.rows.tolist()):
        expected = 0.25 / (rrf_k + text_ranks[row]) + 0.75 / (rrf_k + image_ranks[row])
        assert r.score == pytest.approx(expected, rel=1e-5)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


@pytest.mark.parametrize(("query", "fallback"), [
    ({"title": RECORDS[12]["title"]}, "text"),
    ({"image": RECORDS[12]["image"]["bytes"]}, "image"),
    ({"image": RECORDS[12]["image"]["bytes"], "title": "   "}, "image"),  # an empty title box beside an upload
])
def test_hybrid_with_one_input_falls_back_and_says_so(recommender: Recommender, query: dict, fallback: str) -> None:
    results = recommender.recommend(**query, mode="hybrid", k=5)
    assert results.mode == fallback
    assert len(results.notes) == 1 and f"{fallback} mode" in results.notes[0]
    same = recommender.recommend(**{key: value for key, value in query.items() if str(value).strip()},
                                 mode=fallback, k=5)
    assert [(r.item_id, r.score) for r in results] == [(r.item_id, r.score) for r in same]


LONG_TITLE = "paper plane " * 834  # 10,008 characters


@pytest.mark.parametrize(("arguments", "message"), [
    ({"item_id": "vid999"}, "Unknown item id"),
    ({"item_id": "vid000", "title": "a title"}, "either a catalog item or an image/title"),
    ({"title": "phone", "k": 0}, "k must be"),
    ({"title": "phone", "k": 101}, "k must be"),
    ({"title": "phone", "k": -3}, "k must be"),
    ({"title": "phone", "k": 2.5}, "k must be"),
    ({"title": "phone", "k": "5"}, "k must be"),
    ({"title": "phone", "k": None}, "k must be"),
    ({"title": "phone", "k": True}, "k must be"),
    ({"title": "phone", "k": float("nan")}, "k must be"),
    ({"title": "phone", "k": float("inf")}, "k must be"),
    ({"item_id": "vid000", "alpha": -0.1}, "alpha"),
    ({"item_id": "vid000", "alpha": 1.5}, "alpha"),
    ({"item_id": "vid000", "alpha": float("nan")}, "alpha"),
    ({"item_id": "vid000", "alpha": "0.5"}, "alpha"),
    ({"item_id": "vid000", "mode": "visual"}, "Unknown mode"),
    ({"item_id": "vid000", "fusion": "union"}, "Unknown fusion"),
    ({"title": "", "mode": "text"}, "Title is empty"),
    ({"title": " \t\n ", "mode": "text"}, "Title is empty"),
    ({"title": " \t\n ", "mode": "hybrid"}, "Title is empty"),
    ({"title": LONG_TITLE, "mode": "text"}, "limit is 1,000"),
    ({"title": 42, "mode": "text"}, "Title must be text"),
    ({"mode": "hybrid"}, "Give a thumbnail, a title, or a catalog item"),
    ({"mode": "text"}, "needs a title"),
    ({"mode": "image"}, "needs a thumbnail"),
    ({"image": RECORDS[0]["image"]["bytes"], "mode": "text"}, "needs a title"),
    ({"image": b"not an image", "mode": "image"}, "not an image"),
    ({"image": b"not an image", "title": "phone", "mode": "hybrid"}, "not an image"),
    ({"image": RECORDS[0]["image"]["bytes"], "title": 42, "mode": "hybrid"}, "Title must be text"),
    ({"image": RECORDS[0]["image"]["bytes"], "title": LONG_TITLE, "mode": "hybrid"}, "limit is 1,000"),
])
def test_invalid_queries_are_refused_clearly(recommender: Recommender, arguments: dict, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        recommender.recommend(**arguments)


def test_whole_number_k_of_other_types_is_accepted(recommender: Recommender) -> None:
    assert len(recommender.recommend(title="phone", mode="text", k=3.0)) == 3
    assert len(recommender.recommend(title="phone", mode="text", k=np.int64(4))) == 4
    assert len(recommender.recommend(item_id="vid000", mode="text", k=100)) == 31  # whole catalog but itself


def test_concurrent_queries_match_sequential_ones(recommender: Recommender) -> None:
    queries = [{"item_id": RECORDS[i]["video_id"], "mode": MODES[i % 3], "k": 6} for i in range(0, 32, 5)]
    queries += [{"title": RECORDS[i]["title"], "mode": "text", "k": 5} for i in range(2, 32, 6)]
    queries += [{"image": RECORDS[i]["image"]["bytes"], "mode": "image", "k": 5} for i in range(1, 32, 6)]
    queries += [{"image": RECORDS[i]["image"]["bytes"], "title": RECORDS[31 - i]["title"], "mode": "hybrid",
                 "k": 7, "alpha": 0.3, "fusion": ("weighted", "rrf")[i % 2]} for i in range(3, 32, 7)]

    def run(query: dict) -> list[tuple]:
        results = recommender.recommend(**query)
        return [(r.item_id, r.score, r.image_score, r.text_score) for r in results]

    expected = [run(query) for query in queries]
    start = threading.Barrier(8)

    def worker(offset: int) -> list[tuple[int, list[tuple]]]:
        start.wait()
        order = [(offset + i) % len(queries) for i in range(len(queries))] * 2
        return [(position, run(queries[position])) for position in order]

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(worker, range(0, 8 * 3, 3)))
    for outcome in outcomes:
        for position, answer in outcome:
            assert answer == expected[position]


def test_ids_line_up_after_skipped_rows(tmp_path: Path, bundle_dir: Path, text_model: Path) -> None:
    """A source without an id column, with bad rows in between: ids are source positions, and every
    surviving item still finds itself by its own image and title."""
    from train.build import build_bundle

    records = RECORDS[:12]
    titles = [r["title"] for r in records]
    images = [r["image"] for r in records]
    broken = jpeg_bytes(thumbnail((10, 10, 10), "rectangle", seed=5))[:1500]
    for position, title, image in ((0, "blank image", {"bytes": b"", "path": None}), (5, "", images[0]),
                                   (9, "truncated", {"bytes": broken, "path": None})):
        titles.insert(position, title)
        images.insert(position, image)
    source = tmp_path / "source.parquet"
    features = datasets.Features({"title": datasets.Value("string"), "image": datasets.Image()})
    datasets.Dataset.from_dict({"title": titles, "image": images}, features=features).to_parquet(str(source))

    with pytest.warns(UserWarning, match="Skipped 3 of 15 rows"):
        manifest = build_bundle(source, tmp_path / "bundle", text_model=str(text_model), show_progress_bar=False,
                                encoder_weights=bundle_dir / FILES["encoder_weights"])
    assert manifest["source"]["skipped_rows"] == 3 and manifest["count"] == 12
    recommender = Recommender.load(tmp_path / "bundle")
    survivors = [position for position in range(15) if position not in (0, 5, 9)]
    assert recommender.catalog.item_ids == [str(position) for position in survivors]
    for position in survivors:
        for mode in MODES:
            results = recommender.recommend(image=images[position]["bytes"], title=titles[position], mode=mode, k=2)
            assert results[0].item_id == str(position) and results[0].title == titles[position]
        assert str(position) not in ids(recommender.recommend(item_id=position, mode="hybrid", k=11))


def test_a_query_with_no_candidates_gets_an_empty_answer_and_a_note(tmp_path: Path, bundle_dir: Path,
                                                                     text_model: Path) -> None:
    """A one-item catalog asked by its own id has nothing else to offer: hybrid fusion over an empty
    candidate set must give an empty result that says why, like the single modes do."""
    from train.build import build_bundle

    from .synthetic import write_catalog_parquet

    source = write_catalog_parquet(tmp_path / "one.parquet", RECORDS[:1])
    build_bundle(source, tmp_path / "bundle", text_model=str(text_model), show_progress_bar=False,
                 encoder_weights=bundle_dir / FILES["encoder_weights"])
    recommender = Recommender.load(tmp_path / "bundle")
    for mode in MODES:
        for fusion in ("weighted", "rrf"):
            results = recommender.recommend(item_id=RECORDS[0]["video_id"], mode=mode, k=5, fusion=fusion)
            assert list(results) == [] and results.rows.tolist() == [] and results.mode == mode
            assert results.notes == ["No recommendations: the catalog has 1 item and an item never recommends itself."]
