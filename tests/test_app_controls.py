"""The recommendation controls through the app's API: a real Gradio server, called with the real ``gradio_client``.

Every control (where, diversity, max_per, dedupe, offset, items, exclude) must give the engine's own answer
through ``/recommend`` and ``/recommend_item``; calls without them keep today's answers; bad values get a
clear message, never a traceback, and the server keeps serving.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from recommender import Recommender

from .conftest import serve
from .test_app_api import (
    RAW_CONTROL_DEFAULTS,
    assert_clear_error,
    assert_still_serving,
    result_ids,
)

CONTROLS = ("where", "diversity", "max_per", "dedupe", "offset", "items", "exclude")


def engine_ids(recommender: Recommender, **query) -> list[str]:
    return [r.item_id for r in recommender.recommend(**query)]


def channels(data: dict) -> list[str]:
    return [result["metadata"]["channel"] for result in data["results"]]


# -- the API's shape ------------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", ["/recommend", "/recommend_item"])
def test_view_api_lists_every_control_with_its_default(client: Client, recommender: Recommender,
                                                       endpoint: str) -> None:
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"][endpoint]["parameters"]
    names = [p["parameter_name"] for p in parameters]
    assert names[-len(CONTROLS):] == list(CONTROLS)  # after today's parameters: positional calls keep working
    defaults = {p["parameter_name"]: p["parameter_default"] for p in parameters if p["parameter_has_default"]}
    assert {name: defaults[name] for name in CONTROLS} == {"where": None, "diversity": 0, "max_per": None,
                                                            "dedupe": True, "offset": 0, "items": None,
                                                            "exclude": None}
    assert defaults["fusion"] == recommender.search.fusion and defaults["alpha"] == recommender.default_alpha


def test_every_result_says_what_it_folded_and_every_answer_where_it_pages(client: Client,
                                                                          recommender: Recommender) -> None:
    _, data = client.predict(title="paper crafts", mode="text", k=5, api_name="/recommend")
    expected = recommender.recommend(title="paper crafts", mode="text", k=5)
    assert result_ids(data) == [r.item_id for r in expected]
    assert [r["duplicates"] for r in data["results"]] == [r.duplicates for r in expected]
    assert (data["offset"], data["more"]) == (0, expected.more) == (0, True)


def test_positional_calls_of_today_keep_todays_answers(client: Client, recommender: Recommender) -> None:
    _, data = client.predict(None, "paper plane tutorial", "hybrid", 4, 0.5, "rrf", api_name="/recommend")
    assert result_ids(data) == engine_ids(recommender, title="paper plane tutorial", k=4, alpha=0.5, fusion="rrf")
    item = recommender.catalog.item_ids[3]
    _, data = client.predict(item, "image", 4, api_name="/recommend_item")
    assert result_ids(data) == engine_ids(recommender, item_id=item, mode="image", k=4)


def test_a_title_alone_finds_thumbnails_in_image_mode(client: Client, recommender: Recommender) -> None:
    _, data = client.predict(title="paper crafts", mode="image", k=5, api_name="/recommend")
    expected = recommender.recommend(title="paper crafts", mode="image", k=5)
    assert data["mode"] == "image" and data["notes"] == [] and len(data["results"]) == 5
    assert result_ids(data) == [r.item_id for r in expected]
    assert all(r["text_score"] is None for r in data["results"])  # ranked by the image vectors alone


# -- where ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", [{"channel": "Crafts"}, '{"channel": "Crafts"}', {"channel": ["Crafts"]},
                                   {"channel": ["Crafts", "Tech Reviews"]}, {"channel": {"not": ["Crafts"]}}])
@pytest.mark.parametrize("mode", ["image", "text", "hybrid"])
def test_where_gives_the_engines_top_k_among_the_matches(client: Client, recommender: Recommender, where: object,
                                                         mode: str) -> None:
    item = recommender.catalog.item_ids[1]  # a Tech Reviews video: most of its neighbours are other channels'
    _, data = client.predict(item_id=item, mode=mode, k=6, where=where, api_name="/recommend_item")
    parsed = json.loads(where) if isinstance(where, str) else where
    allowed = parsed["channel"]
    matches = [c not in allowed["not"] if isinstance(allowed, dict) else c in ([allowed] if isinstance(allowed, str)
                                                                                else allowed) for c in channels(data)]
    assert len(data["results"]) == 6 and all(matches), channels(data)  # a full page, every result matching
    assert result_ids(data) == engine_ids(recommender, item_id=item, mode=mode, k=6, where=parsed)
    assert data["controls"]["where"] == parsed


def test_a_filter_nothing_matches_is_an_empty_answer_with_a_note(client: Client) -> None:
    _, data = client.predict(title="paper", mode="text", where={"channel": "No Such Channel"}, api_name="/recommend")
    assert data["results"] == [] and data["notes"] and data["more"] is False


# -- diversity, max_per, dedupe ------------------------------------------------------------------------------
@pytest.mark.parametrize("diversity", [0.0, 0.5, 1.0])
def test_diversity_gives_the_engines_ranking(client: Client, recommender: Recommender, diversity: float) -> None:
    _, data = client.predict(title="paper crafts", mode="hybrid", k=8, diversity=diversity, api_name="/recommend")
    assert result_ids(data) == engine_ids(recommender, title="paper crafts", k=8, diversity=diversity)
    assert data["controls"]["diversity"] == diversity


def test_max_per_caps_each_value(client: Client, recommender: Recommender) -> None:
    item = recommender.catalog.item_ids[9]
    _, data = client.predict(item_id=item, mode="image", k=8, max_per={"channel": 2}, api_name="/recommend_item")
    assert len(data["results"]) == 8 and max(Counter(channels(data)).values()) == 2
    assert result_ids(data) == engine_ids(recommender, item_id=item, mode="image", k=8, max_per={"channel": 2})


@pytest.mark.parametrize("dedupe", [True, False])
def test_dedupe_gives_the_engines_answer(client: Client, recommender: Recommender, dedupe: bool) -> None:
    item = recommender.catalog.item_ids[17]
    _, data = client.predict(item_id=item, mode="image", k=8, dedupe=dedupe, api_name="/recommend_item")
    expected = recommender.recommend(item_id=item, mode="image", k=8, dedupe=dedupe)
    assert result_ids(data) == [r.item_id for r in expected]
    assert [r["duplicates"] for r in data["results"]] == [r.duplicates for r in expected]
    if not dedupe:
        assert all(r["duplicates"] == [] for r in data["results"])


# -- offset: paging --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["image", "text", "hybrid"])
def test_pages_continue_with_no_repeats_and_no_gaps(client: Client, recommender: Recommender, mode: str) -> None:
    """Page after page, every control on, until the last: together they are the engine's one ranking."""
    controls = {"where": {"channel": {"not": ["Crafts"]}}, "diversity": 0.3, "max_per": {"channel": 5},
                "dedupe": True, "exclude": [recommender.catalog.item_ids[2]]}
    item = recommender.catalog.item_ids[0]
    pages, offset, more = [], 0, True
    while more:
        _, data = client.predict(item_id=item, mode=mode, k=4, offset=offset, **controls, api_name="/recommend_item")
        assert data["offset"] == offset and len(data["results"]) <= 4
        assert [r["rank"] for r in data["results"]] == list(range(offset + 1, offset + 1 + len(data["results"])))
        pages.append(result_ids(data))
        offset, more = offset + len(data["results"]), data["more"]
        assert len(pages) < 10
    shown = [item_id for page in pages for item_id in page]
    assert len(pages) >= 2 and all(len(page) == 4 for page in pages[:-1])  # no short page before the last
    assert len(shown) == len(set(shown))  # no repeats
    assert shown == engine_ids(recommender, item_id=item, mode=mode, k=len(shown), **controls)  # no gaps


# -- items: a session; exclude ---------------------------------------------------------------------------------
def test_a_session_ranks_for_all_its_items_and_returns_none_of_them(client: Client, recommender: Recommender) -> None:
    session = [recommender.catalog.item_ids[row] for row in (8, 9, 12)]
    _, data = client.predict(items=session, mode="hybrid", k=8, api_name="/recommend")
    assert len(data["results"]) == 8 and not set(session) & set(result_ids(data))
    assert result_ids(data) == engine_ids(recommender, items=session, k=8)
    assert data["query"]["type"] == "session"
    assert [item["item_id"] for item in data["query"]["items"]] == session
    _, same = client.predict(item_id=session[0], items=json.dumps(session[1:]), k=8, api_name="/recommend_item")
    assert result_ids(same) == result_ids(data)  # the item and the items: one session


def test_exclude_is_honoured(client: Client, recommender: Recommender) -> None:
    item = recommender.catalog.item_ids[20]
    first = engine_ids(recommender, item_id=item, mode="image", k=5)
    _, data = client.predict(item_id=item, mode="image", k=5, exclude=first[:2], api_name="/recommend_item")
    assert len(data["results"]) == 5 and not set(first[:2]) & set(result_ids(data))
    assert result_ids(data) == engine_ids(recommender, item_id=item, mode="image", k=5, exclude=first[:2])
    assert result_ids(data)[:3] == first[2:]  # the rest keep their order


# -- bad values: a clear message, and the server keeps serving -----------------------------------------------------
BAD_CONTROLS = {
    "where: malformed JSON": ({"where": '{"channel": "Crafts"'}, "where is not valid JSON"),
    "where: a list": ({"where": ["Crafts"]}, "where must be a JSON object"),
    "where: a number": ({"where": 3}, "where must be a JSON object"),
    "where: an unknown column": ({"where": {"no_such_column": "x"}}, "no_such_column"),
    "max_per: text": ({"max_per": "two"}, "max_per is not valid JSON"),
    "max_per: below 1": ({"max_per": {"channel": 0}}, "max_per"),
    "diversity above 1": ({"diversity": 1.5}, "diversity"),
    "diversity as text": ({"diversity": "high"}, "diversity"),
    "dedupe as text": ({"dedupe": "yes"}, "dedupe must be true or false"),
    "negative offset": ({"offset": -4}, "offset"),
    "offset as a fraction": ({"offset": 2.5}, "offset"),
    "items: one id, not a list": ({"items": {"id": "vid000"}}, "items must be a list of item ids"),
    "items: an unknown id": ({"items": ["vid000", "nope"]}, "nope"),
    "exclude: a number": ({"exclude": 7}, "exclude must be a list of item ids"),
    "exclude: malformed JSON": ({"exclude": "[vid000"}, "exclude is not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_CONTROLS))
def test_bad_controls_give_a_clear_error(client: Client, case: str) -> None:
    arguments, expected = BAD_CONTROLS[case]
    with pytest.raises(AppError) as error:
        client.predict(title="paper", mode="text", **arguments, api_name="/recommend")
    assert_clear_error(error, expected)
    assert_still_serving(client)


def test_malformed_where_over_raw_http(url: str) -> None:
    """Any HTTP client, not only gradio_client: the JSON string arrives as it was sent."""
    base = url.rstrip("/")
    sent = httpx.post(f"{base}/gradio_api/call/recommend",
                      json={"data": [None, "paper", "text", 3, None, None, "{channel: Crafts}",
                                     *RAW_CONTROL_DEFAULTS[1:]]}, timeout=60)
    sent.raise_for_status()
    stream = httpx.get(f"{base}/gradio_api/call/recommend/{sent.json()['event_id']}", timeout=120).text
    events = dict(re.findall(r"^event: (\w+)\ndata: (.*)$", stream, flags=re.MULTILINE))
    assert "complete" not in events and "where is not valid JSON" in json.loads(events["error"])["error"]
    assert "Traceback" not in stream


# -- the bundle's search settings are the defaults -------------------------------------------------------------------
def folding_threshold(recommender: Recommender, item: str) -> float:
    """A dedupe threshold at which this item's image-mode results fold something (the synthetic catalog has
    no re-uploads, so the bundle's calibrated threshold folds nothing)."""
    for threshold in (0.95, 0.9, 0.8, 0.7, 0.5, 0.3, 0.0):
        folding = Recommender(**{**recommender_parts(recommender), "search": recommender.search.replace(
            dedupe_threshold=threshold)})
        if any(r.duplicates for r in folding.recommend(item_id=item, mode="image", k=6)):
            return threshold
    raise AssertionError("no threshold folds anything")


def recommender_parts(recommender: Recommender) -> dict:
    return {"catalog": recommender.catalog, "thumbnail_encoder": recommender.thumbnail_encoder,
            "title_encoder": recommender.title_encoder, "image_vectors": recommender.image_vectors,
            "text_vectors": recommender.text_vectors, "image_index": recommender.image_index,
            "text_index": recommender.text_index, "manifest": recommender.manifest,
            "title_head": recommender.title_head}


def test_the_bundles_fusion_and_dedupe_threshold_are_the_defaults(recommender: Recommender, bundle_dir: Path,
                                                                  text_model: Path, tmp_path: Path) -> None:
    """A bundle whose search settings say rrf and a low dedupe threshold: left out, fusion is rrf (explicit
    values still win), and dedupe folds results, listing them in ``duplicates``; dedupe=False shows them."""
    item = recommender.catalog.item_ids[5]
    threshold = folding_threshold(recommender, item)
    bundle = Recommender.load(bundle_dir, text_model=str(text_model),
                              search={"fusion": "rrf", "dedupe_threshold": threshold})
    with serve(bundle) as address:
        client = Client(address, verbose=False, download_files=str(tmp_path))
        parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/recommend_item"]
        assert next(p for p in parameters["parameters"] if p["parameter_name"] == "fusion")["parameter_default"] == "rrf"
        _, data = client.predict(item_id=item, k=6, api_name="/recommend_item")
        assert data["fusion"] == "rrf" and result_ids(data) == engine_ids(bundle, item_id=item, k=6, fusion="rrf")
        _, weighted = client.predict(item_id=item, k=6, fusion="weighted", api_name="/recommend_item")
        assert weighted["fusion"] == "weighted"
        assert result_ids(weighted) == engine_ids(bundle, item_id=item, k=6, fusion="weighted")

        _, folded = client.predict(item_id=item, mode="image", k=6, api_name="/recommend_item")
        hidden = [duplicate for r in folded["results"] for duplicate in r["duplicates"]]
        assert hidden and not set(hidden) & set(result_ids(folded))
        expected = bundle.recommend(item_id=item, mode="image", k=6)
        assert [r["duplicates"] for r in folded["results"]] == [r.duplicates for r in expected]
        every = len(bundle.catalog) - 1
        _, everything = client.predict(item_id=item, mode="image", k=every, dedupe=False, api_name="/recommend_item")
        assert set(hidden) <= set(result_ids(everything))  # shown again without dedupe
        assert all(r["duplicates"] == [] for r in everything["results"])
