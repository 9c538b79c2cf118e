"""The query-vector cache: paging and repeated queries encode nothing again, and answer as a cold engine does."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file

import app
from recommender import InvalidQueryError, Recommender
from recommender.encoders.query_cache import QueryVectorCache

from .conftest import serve
from .synthetic import catalog_records

RECORDS = catalog_records()


def test_the_cache_keeps_the_most_recently_used_and_nothing_at_size_zero() -> None:
    cache = QueryVectorCache(2)
    computed: list[str] = []

    def vector(key: str):
        return lambda: computed.append(key) or np.full((1, 3), len(computed), dtype=np.float32)

    for key in ("a", "b", "a", "c", "a", "b"):  # "c" evicts "b" (least recently used), "b" evicts "c"
        cache.get(key, vector(key))
    assert computed == ["a", "b", "c", "b"]
    assert (cache.hits, cache.misses, len(cache)) == (2, 4, 2)
    assert not cache.get("a", vector("a")).flags.writeable  # shared by later hits: nobody may change it

    off = QueryVectorCache(0)
    off.get("a", vector("a"))
    off.get("a", vector("a"))
    assert computed[-2:] == ["a", "a"] and len(off) == 0
    with pytest.raises(ValueError):
        QueryVectorCache(-1)


def test_an_error_is_not_kept() -> None:
    cache = QueryVectorCache(4)

    def bad():
        raise InvalidQueryError("no")

    for _ in range(2):
        with pytest.raises(InvalidQueryError):
            cache.get("x", bad)
    assert len(cache) == 0 and cache.misses == 2


@pytest.fixture(scope="module")
def cached(bundle_dir: Path, text_model: Path) -> Recommender:
    return Recommender.load(bundle_dir, text_model=str(text_model), query_cache_size=64)


def answer(recommender: Recommender, **query) -> list[tuple]:
    return [(r.item_id, r.score, r.image_score, r.text_score) for r in recommender.recommend(**query)]


def test_repeated_queries_hit_and_answer_as_a_cold_engine(cached: Recommender, recommender: Recommender,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same bytes under two file names are one thumbnail; a hit runs neither decoding nor either model."""
    image = RECORDS[4]["image"]["bytes"]
    first, second = tmp_path / "upload-1.jpg", tmp_path / "elsewhere.jpg"
    first.write_bytes(image)
    second.write_bytes(image)
    title = RECORDS[9]["title"]
    queries = [{"image": str(first), "mode": "image", "k": 6}, {"title": title, "mode": "text", "k": 6},
               {"image": image, "title": title, "mode": "hybrid", "k": 6},
               {"title": title, "mode": "image", "k": 6}]  # a title alone in image mode (the title head)
    cold = [answer(recommender, **query) for query in queries]
    assert [answer(cached, **query) for query in queries] == cold
    misses = cached.query_cache.misses

    def never(*args, **kwargs):
        raise AssertionError("a cached query was encoded again")

    monkeypatch.setattr(cached.thumbnail_encoder, "prepare", never)
    monkeypatch.setattr(cached.title_encoder, "encode", never)
    again = [dict(query, image=str(second)) if query.get("image") == str(first) else query for query in queries]
    assert [answer(cached, **query) for query in again] == cold
    assert [answer(cached, **dict(query, offset=6)) for query in again] == \
        [answer(recommender, **dict(query, offset=6)) for query in queries]  # the next page
    assert cached.query_cache.misses == misses


def test_bad_uploads_are_still_refused_with_a_cache(cached: Recommender, tmp_path: Path) -> None:
    with pytest.raises(InvalidQueryError, match="not found"):
        cached.recommend(image=str(tmp_path / "missing.jpg"), mode="image")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    for _ in range(2):  # the refusal is not cached: refused again
        with pytest.raises(InvalidQueryError):
            cached.recommend(image=str(broken), mode="image")


def test_concurrent_queries_on_a_cached_engine_match_sequential_ones(bundle_dir: Path, text_model: Path,
                                                                     recommender: Recommender) -> None:
    """Threads missing the same query at once, then hitting it, all get the cold engine's answer."""
    engine = Recommender.load(bundle_dir, text_model=str(text_model), query_cache_size=64)
    queries = [{"title": RECORDS[i]["title"], "mode": "text", "k": 5} for i in range(0, 24, 6)]
    queries += [{"image": RECORDS[i]["image"]["bytes"], "title": RECORDS[23 - i]["title"], "mode": "hybrid",
                 "k": 5} for i in range(1, 24, 6)]
    expected = [answer(recommender, **query) for query in queries]
    start = threading.Barrier(8)

    def worker(offset: int) -> list[tuple[int, list[tuple]]]:
        start.wait()
        order = [(offset + i) % len(queries) for i in range(len(queries))] * 3
        return [(position, answer(engine, **queries[position])) for position in order]

    with ThreadPoolExecutor(max_workers=8) as pool:
        for outcome in pool.map(worker, range(8)):
            for position, got in outcome:
                assert got == expected[position]
    assert engine.query_cache.hits > 0


def test_paging_an_upload_through_the_api_encodes_it_once(cached: Recommender, tmp_path: Path) -> None:
    """gradio_client uploads the file again for every page: the bytes, not the upload's path, are the key."""
    from gradio_client import Client

    thumbnail = tmp_path / "query.jpg"
    thumbnail.write_bytes(RECORDS[7]["image"]["bytes"])
    with serve(cached) as url:
        client = Client(url, verbose=False, download_files=False)
        misses = cached.query_cache.misses
        _, first = client.predict(image=handle_file(str(thumbnail)), title="", mode="image", k=4,
                                  api_name="/recommend")
        _, second = client.predict(image=handle_file(str(thumbnail)), title="", mode="image", k=4, offset=4,
                                   api_name="/recommend")
    assert cached.query_cache.misses == misses + 1
    assert cached.info()["query_cache"] == {"size": 64, "entries": len(cached.query_cache),
                                            "hits": cached.query_cache.hits, "misses": misses + 1}
    assert len(first["results"]) == len(second["results"]) == 4
    assert not {r["item_id"] for r in first["results"]} & {r["item_id"] for r in second["results"]}


def test_the_app_option_is_checked() -> None:
    assert app.parse_args(["--query-cache", "0"]).query_cache == 0
    assert app.parse_args([]).query_cache > 0  # the app keeps query vectors unless told not to
    with pytest.raises(SystemExit):
        app.parse_args(["--query-cache", "-3"])


def test_with_no_cache_an_upload_is_not_hashed(recommender: Recommender, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's default keeps nothing, so keying an upload would be wasted work on every query."""
    def never(source):
        raise AssertionError("an upload was keyed with no cache")

    monkeypatch.setattr("recommender.engine.image_key", never)
    assert recommender.query_cache.size == 0
    assert len(recommender.recommend(image=RECORDS[2]["image"]["bytes"], mode="image", k=3)) == 3
    assert recommender.info()["query_cache"] == {"size": 0, "entries": 0, "hits": 0, "misses": 0}
