"""Recommendation controls on a real bundle, each checked against brute force over the stored vectors:
where, exclude, dedupe, diversity, max_per, offset (paging), sessions and title -> thumbnails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recommender import MODES, InvalidQueryError, Recommender
from recommender.search import candidates
from recommender.search.config import SearchConfig
from recommender.search.fusion import fuse_batch
from recommender.search.index import build_index, normalize
from recommender.search.paging import anything_left
from recommender.search.rerank import Selection, Similarity

from .synthetic import catalog_records

RECORDS = catalog_records()
ALPHA = 0.4


@pytest.fixture(scope="module")
def tiered(bundle_dir: Path) -> Recommender:
    """Small candidate pools (5, 9, 17, 33 deep), so pages cross from one pool tier into the next."""
    return Recommender.load(bundle_dir, search={"candidate_factor": 1, "min_candidates": 4})


def rebuilt(recommender: Recommender, image_vectors: np.ndarray, index_key: str | None = None,
            title_head: object = "same", **search: object) -> Recommender:
    """The same catalog and models with other image vectors (and a freshly built index over them)."""
    head = recommender.title_head if title_head == "same" else title_head
    text_index = build_index(recommender.text_vectors, index_key)
    return Recommender(recommender.catalog, recommender.thumbnail_encoder, recommender.title_encoder, image_vectors,
                       recommender.text_vectors, build_index(image_vectors, index_key), text_index,
                       recommender.manifest, head, recommender.search.replace(**search))


def ids(results: list) -> list[str]:
    return [r.item_id for r in results]


def brute_force(recommender: Recommender, row: int, mode: str, allowed: np.ndarray, k: int) -> list[int]:
    """Top ``k`` allowed rows (never ``row``) for catalog item ``row`` as query, from the stored vectors."""
    allowed = allowed.copy()
    allowed[row] = False
    rows = np.flatnonzero(allowed)
    image = recommender.image_vectors[rows] @ recommender.image_vectors[row]
    text = recommender.text_vectors[rows] @ recommender.text_vectors[row]
    if mode == "image":
        score = image
    elif mode == "text":
        score = text
    else:  # the whole (filtered) test catalog is the candidate set
        score = fuse_batch(text[None], image[None], np.ones((1, len(rows)), dtype=bool), ALPHA)[0]
    return rows[np.lexsort((rows, -score))][:k].tolist()


def channel_mask(recommender: Recommender, wanted: set[str], negated: bool = False) -> np.ndarray:
    hit = np.array([recommender.catalog.metadata(row)["channel"] in wanted for row in range(len(recommender))])
    return ~hit if negated else hit


# -- where ---------------------------------------------------------------------------------------------

WHERES = [
    ({"views": 2000}, lambda meta: meta["views"] == 2000),  # a rare value: 4 of 32 items
    ({"channel": ["Crafts", "Tech Reviews"]}, lambda meta: meta["channel"] in ("Crafts", "Tech Reviews")),
    ({"channel": {"not": ["Crafts", "Tech Reviews", "தமிழ் சமையல்"]}}, lambda meta: meta["channel"] == "සිංහල ගීත"),
    ({"channel": "Crafts", "views": ["1000", 3000]}, lambda meta: meta["channel"] == "Crafts"
     and meta["views"] in (1000, 3000)),
]


@pytest.mark.parametrize("path", ["full scan", "exact subset", "faiss selector", "hnsw selector"])
@pytest.mark.parametrize("mode", MODES)
def test_where_gives_exactly_the_top_matching_items(recommender: Recommender, monkeypatch: pytest.MonkeyPatch,
                                                    mode: str, path: str) -> None:
    """Every filter, in every mode, by each search path: exactly brute force's top k among the matching
    items, however rare they are (no short page while matches remain)."""
    served = recommender if path != "hnsw selector" else rebuilt(recommender, recommender.image_vectors, "HNSW8,Flat")
    if path != "full scan":
        monkeypatch.setattr(candidates, "FULL_SCAN_LIMIT", 0)
    if path not in ("full scan", "exact subset"):
        monkeypatch.setattr(candidates, "EXACT_SUBSET_LIMIT", 0)
    for where, condition in WHERES:
        allowed = np.array([condition(served.catalog.metadata(row)) for row in range(len(served))])
        for row in (0, 9, 17, 30):
            item = served.catalog.item_ids[row]
            results = served.recommend(item_id=item, mode=mode, k=6, alpha=ALPHA, where=where, dedupe=False)
            expected = brute_force(served, row, mode, allowed, 6)
            assert results.rows.tolist() == expected, (where, item)
            assert all(condition(r.metadata) for r in results)


def test_a_filter_nothing_matches_is_an_empty_answer_with_a_note(recommender: Recommender) -> None:
    for where in ({"channel": "No such channel"}, {"channel": "Crafts", "views": 123}):
        results = recommender.recommend(item_id="vid000", mode="hybrid", where=where)
        assert list(results) == [] and results.more is False
        assert results.notes == ["No recommendations: no catalog item matches the filter."]


@pytest.mark.parametrize(("arguments", "message"), [
    ({"where": {"colour": "red"}}, "Unknown metadata column 'colour' in where; metadata columns: channel, views\\."),
    ({"where": {"title": "x"}}, "Unknown metadata column"),
    ({"where": ["channel", "Crafts"]}, "where must be an object"),
    ({"where": {"channel": {"is": ["Crafts"]}}}, "must be {\"not\""),
    ({"where": {"channel": []}}, "non-empty list"),
    ({"where": {"channel": [["Crafts"]]}}, "non-empty list"),
    ({"where": {"channel": None}}, "non-empty list"),
    ({"diversity": 1.5}, "diversity must be"),
    ({"diversity": -0.1}, "diversity must be"),
    ({"diversity": "0.5"}, "diversity must be"),
    ({"max_per": {"channel": 0}}, "max_per\\['channel'\\] must be a whole number"),
    ({"max_per": {"channel": 1.5}}, "whole number"),
    ({"max_per": {"colour": 1}}, "Unknown metadata column 'colour' in max_per; metadata columns: channel, views\\."),
    ({"max_per": 2}, "max_per must be an object"),
    ({"dedupe": "yes"}, "dedupe must be true or false"),
    ({"offset": -1}, "offset must be"),
    ({"offset": 2.5}, "offset must be"),
    ({"offset": 1001}, "offset must be"),
    ({"items": ["vid999"]}, "Unknown item id"),
    ({"items": "vid001"}, "items must be a list"),
    ({"exclude": ["vid001", "nope"]}, "Unknown item id 'nope'"),
    ({"exclude": [None]}, "exclude must be a list"),
    ({"items": ["vid001"], "item_id": "vid002"}, "either item_id or items"),
])
def test_bad_control_values_are_refused_clearly(recommender: Recommender, arguments: dict, message: str) -> None:
    query = {} if "item_id" in arguments or "items" in arguments else {"item_id": "vid000"}
    with pytest.raises(InvalidQueryError, match=message):
        recommender.recommend(**query, **arguments)


def test_filterable_columns_are_the_low_cardinality_ones_most_frequent_first(recommender: Recommender) -> None:
    columns = recommender.filterable_columns()
    assert sorted(columns["channel"]) == sorted({r["channel"] for r in RECORDS})
    assert columns["views"][:2] == ["1000", "2000"]  # all equally frequent: by value
    assert "views" not in recommender.filterable_columns(max_values=4)


# -- exclude -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_excluded_items_never_come_back_and_the_rest_keep_their_order(recommender: Recommender, mode: str) -> None:
    everything = recommender.recommend(item_id="vid101", mode=mode, k=31, alpha=ALPHA, dedupe=False)
    dropped = [everything[0].item_id, everything[3].item_id, "vid300"]
    results = recommender.recommend(item_id="vid101", mode=mode, k=31, alpha=ALPHA, dedupe=False, exclude=dropped)
    assert not set(dropped) & set(ids(results)) and len(results) == 31 - len(set(dropped) - {"vid101"})
    allowed = np.ones(len(recommender), dtype=bool)
    allowed[[recommender.catalog.row_of(item) for item in dropped]] = False
    assert results.rows.tolist() == brute_force(recommender, recommender.catalog.row_of("vid101"), mode, allowed, 31)


# -- dedupe --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def with_copies(recommender: Recommender) -> Recommender:
    """The catalog where vid001 and vid002 are re-uploads of vid000's thumbnail (same looks, own titles)."""
    vectors = recommender.image_vectors.copy()
    features = recommender.title_head.feature_dimension
    for copy in ("vid001", "vid002"):
        vectors[recommender.catalog.row_of(copy), :features] = vectors[0, :features]
    return rebuilt(recommender, normalize(vectors))


@pytest.mark.parametrize("mode", MODES)
def test_dedupe_folds_copies_into_the_higher_ranked_one(with_copies: Recommender, mode: str) -> None:
    query = {"image": RECORDS[0]["image"]["bytes"], "title": RECORDS[0]["title"]}
    query = {key: value for key, value in query.items() if mode == "hybrid" or (key == "title") == (mode == "text")}
    plain = with_copies.recommend(**query, mode=mode, k=12, dedupe=False)
    folded = with_copies.recommend(**query, mode=mode, k=10)
    copies = {"vid000", "vid001", "vid002"}
    first = next(r.item_id for r in plain if r.item_id in copies)
    kept = [r for r in folded if r.item_id in copies]
    assert [r.item_id for r in kept] == [first]
    assert sorted(kept[0].duplicates) == sorted(copies - {first})
    assert [i for i in ids(plain) if i not in copies - {first}][:10] == ids(folded)
    assert all(r.duplicates == [] for r in plain)


def test_dedupe_changes_nothing_in_a_catalog_without_copies(recommender: Recommender) -> None:
    for mode in MODES:
        for record in RECORDS[::5]:
            on = recommender.recommend(item_id=record["video_id"], mode=mode, k=31)
            off = recommender.recommend(item_id=record["video_id"], mode=mode, k=31, dedupe=False)
            assert [(r.item_id, r.score) for r in on] == [(r.item_id, r.score) for r in off]


# -- diversity and max_per -----------------------------------------------------------------------------

def similarity(recommender: Recommender, mode: str, a: int, b: int) -> float:
    image = float(recommender.image_vectors[a] @ recommender.image_vectors[b])
    text = float(recommender.text_vectors[a] @ recommender.text_vectors[b])
    return {"image": image, "text": text, "hybrid": ALPHA * text + (1 - ALPHA) * image}[mode]


@pytest.mark.parametrize("mode", MODES)
def test_diversity_zero_is_todays_ranking_and_one_picks_the_least_similar(recommender: Recommender, mode: str) -> None:
    for record in RECORDS[::7]:
        query = {"item_id": record["video_id"], "mode": mode, "k": 10, "alpha": ALPHA}
        today = recommender.recommend(**query)
        assert ids(recommender.recommend(**query, diversity=0.0)) == ids(today)
        spread = recommender.recommend(**query, diversity=1.0)
        assert spread[0].item_id == today[0].item_id  # nothing shown yet: the most relevant first
        others = [row for row in range(len(recommender)) if row not in (recommender.catalog.row_of(record["video_id"]),
                                                                          spread.rows[0])]
        least = min(similarity(recommender, mode, row, spread.rows[0]) for row in others)
        assert similarity(recommender, mode, spread.rows[1], spread.rows[0]) == pytest.approx(least, abs=1e-5)

        def intra_list(results) -> float:
            rows = results.rows
            return np.mean([similarity(recommender, mode, a, b) for a in rows for b in rows if a < b])

        assert intra_list(spread) < intra_list(today)


@pytest.mark.parametrize("mode", MODES)
def test_max_per_caps_each_value_and_keeps_the_order_otherwise(recommender: Recommender, mode: str) -> None:
    everything = recommender.recommend(item_id="vid000", mode=mode, k=31, alpha=ALPHA, dedupe=False)
    results = recommender.recommend(item_id="vid000", mode=mode, k=10, alpha=ALPHA, dedupe=False,
                                    max_per={"channel": 2})
    counts: dict[str, int] = {}
    expected = []
    for r in everything:
        channel = r.metadata["channel"]
        if counts.get(channel, 0) < 2:
            counts[channel] = counts.get(channel, 0) + 1
            expected.append(r.item_id)
    assert ids(results) == expected and len(expected) == 8  # 4 channels x 2
    assert results.more is False


# -- offset --------------------------------------------------------------------------------------------

CONTROL_SETS = [
    {},
    {"diversity": 0.5},
    {"max_per": {"channel": 5}},
    {"where": {"channel": {"not": ["Crafts"]}}, "exclude": ["vid305"]},
    {"diversity": 0.7, "max_per": {"channel": 4}, "where": {"views": {"not": [8000]}}, "exclude": ["vid001"]},
]


@pytest.mark.parametrize("controls", CONTROL_SETS)
@pytest.mark.parametrize("mode", MODES)
def test_pages_continue_one_ranking_with_no_repeats_and_no_gaps(tiered: Recommender, with_copies: Recommender,
                                                                mode: str, controls: dict) -> None:
    """Pages of 3 cross several pool tiers (5, 9, 17, 33 deep): together they are one request for all."""
    for served in (tiered, rebuilt(with_copies, with_copies.image_vectors, candidate_factor=1, min_candidates=4)):
        for query in ({"item_id": "vid000"}, {"image": RECORDS[9]["image"]["bytes"], "title": RECORDS[9]["title"]}):
            if mode != "hybrid" and "title" in query:
                query = {"image": query["image"]} if mode == "image" else {"title": query["title"]}
            whole = served.recommend(**query, mode=mode, k=100, alpha=ALPHA, **controls)
            pages, offset = [], 0
            while True:
                page = served.recommend(**query, mode=mode, k=3, offset=offset, alpha=ALPHA, **controls)
                assert page.offset == offset and [r.rank for r in page] == list(range(offset + 1, offset + 1 + len(page)))
                pages.extend(page)
                offset += 3
                if not page.more:
                    break
                assert len(page) == 3  # no short page while more follow
            assert ids(pages) == ids(whole) and len(set(ids(pages))) == len(pages)
            assert [r.duplicates for r in pages] == [r.duplicates for r in whole]
            assert len(pages) >= 10


def test_a_page_past_the_first_pool_gets_a_deeper_one(tiered: Recommender) -> None:
    """Pools of 5: page 3 of 4 (results 9-12) still comes back whole, as brute force ranks it."""
    row = tiered.catalog.row_of("vid200")
    page = tiered.recommend(item_id="vid200", mode="text", k=4, offset=8)
    expected = brute_force(tiered, row, "text", np.ones(len(tiered), dtype=bool), 12)[8:]
    assert page.rows.tolist() == expected and page.more


def test_no_next_page_when_only_copies_of_shown_results_are_left() -> None:
    """Row 1 is a re-upload of row 0 and never came up in a pool: once row 0 is shown nothing is left to page to."""
    looks = normalize(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    def selection(dedupe: bool) -> Selection:
        return Selection(0.0, Similarity(((looks, 1.0),)).gather, (lambda rows: looks[rows]) if dedupe else None,
                         SearchConfig.dedupe_threshold, None, len(looks))
    admitted = np.array([True, True, False])
    for dedupe, more in ((True, False), (False, True)):
        chosen = selection(dedupe)
        chosen.extend(candidates.Pool(np.array([0]), np.array([1.0], dtype=np.float32)), 1)
        assert chosen.picked == [0] and anything_left(chosen, admitted) is more


# -- sessions ------------------------------------------------------------------------------------------

SESSION = ["vid000", "vid102", "vid201"]


@pytest.mark.parametrize("fusion", ["centroid", "rrf"])
@pytest.mark.parametrize("mode", MODES)
def test_a_session_ranks_like_its_fusion_says_and_never_returns_its_items(recommender: Recommender, mode: str,
                                                                          fusion: str) -> None:
    served = rebuilt(recommender, recommender.image_vectors, session_fusion=fusion)
    results = served.recommend(items=SESSION, mode=mode, k=29, alpha=ALPHA, dedupe=False)
    assert not set(SESSION) & set(ids(results)) and len(results) == 29
    rows = [served.catalog.row_of(item) for item in SESSION]
    allowed = np.ones(len(served), dtype=bool)
    allowed[rows] = False
    others = np.flatnonzero(allowed)
    if fusion == "centroid":
        image = normalize(served.image_vectors[rows].mean(axis=0))[0]
        text = normalize(served.text_vectors[rows].mean(axis=0))[0]
        score = {"image": served.image_vectors[others] @ image, "text": served.text_vectors[others] @ text,
                 "hybrid": fuse_batch((served.text_vectors[others] @ text)[None],
                                      (served.image_vectors[others] @ image)[None],
                                      np.ones((1, len(others)), dtype=bool), ALPHA)[0]}[mode]
    else:
        score = np.zeros(len(others))
        for row in rows:
            rank_of = {item: rank for rank, item in enumerate(brute_force(served, row, mode, allowed, 32), start=1)}
            score += [1.0 / (served.search.rrf_k + rank_of[item]) for item in others]
    expected = others[np.lexsort((others, -score))]
    assert results.rows.tolist() == expected.tolist()


def test_an_upload_joins_a_session_as_one_more_member(recommender: Recommender) -> None:
    upload = RECORDS[25]["image"]["bytes"]
    alone = recommender.recommend(items=["vid000", "vid001"], mode="image", k=10)
    joined = recommender.recommend(items=["vid000", "vid001"], image=upload, mode="image", k=10)
    assert ids(joined) != ids(alone) and not {"vid000", "vid001"} & set(ids(joined))
    one = recommender.recommend(items=["vid300"], mode="text", k=31)
    assert ids(one) == ids(recommender.recommend(item_id="vid300", mode="text", k=31))


# -- title -> thumbnails -------------------------------------------------------------------------------

def test_image_mode_finds_thumbnails_for_a_title_through_the_predicted_titles(recommender: Recommender) -> None:
    head = recommender.title_head
    title = RECORDS[12]["title"]
    results = recommender.recommend(title=title, mode="image", k=8)
    assert results.mode == "image" and results.notes == []
    predicted = normalize(recommender.image_vectors[:, head.feature_dimension:])
    expected = np.argsort(-(predicted @ recommender.encode_title(title)[0]), kind="stable")[:8]
    assert results.rows.tolist() == expected.tolist()
    assert all(r.text_score is None for r in results)


def test_a_bundle_without_a_title_head_says_it_cannot_search_thumbnails_by_title(recommender: Recommender) -> None:
    features = recommender.title_head.features_of(recommender.image_vectors)
    plain = rebuilt(recommender, features, title_head=None)
    with pytest.raises(InvalidQueryError, match="no title head"):
        plain.recommend(title="paper plane tutorial", mode="image")
    assert len(plain.recommend(title="paper plane tutorial", mode="text", k=3)) == 3


def test_search_settings_have_checked_defaults() -> None:
    assert SearchConfig().session_fusion == "rrf" and 0.9 < SearchConfig().dedupe_threshold <= 1.0
    assert SearchConfig.from_dict({"alpha": 0.3}).dedupe_threshold == SearchConfig().dedupe_threshold
    for bad in ({"dedupe_threshold": 0}, {"dedupe_threshold": 1.2}, {"dedupe_threshold": True},
                {"session_fusion": "mean"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SearchConfig(**bad)
