"""The throughput benchmark (``python -m benchmarks --only throughput``): its echo app has the app's
recommendation interface, so the ratio compares the app's own work with Gradio's cost for the same
inputs, outputs and event settings (fails when the two drift apart); and a small run of it checks
every concurrent answer against the sequential one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client

from benchmarks.latency_gradio import Query, echo_app
from benchmarks.load_test import (
    KINDS,
    Request,
    against_echo,
    call,
    plan,
    references_for,
)
from recommender import Recommender
from recommender.search.config import SearchConfig
from recommender.serving.interface import RECOMMEND_INPUTS, RECOMMEND_ITEM_INPUTS
from recommender.serving.startup import BundlePlan, Startup
from recommender.serving.ui import create_app, launch

from .conftest import free_port, serve

ENDPOINTS = {"recommend": RECOMMEND_INPUTS, "recommend_item": RECOMMEND_ITEM_INPUTS}
#: Event settings that change what Gradio does per request.
EVENT_SETTINGS = ("preprocess", "postprocess", "queue", "batch", "concurrency_limit", "concurrency_id",
                  "api_visibility", "show_progress", "trigger_mode", "time_limit", "stream_every")


def event(demo: gr.Blocks, api_name: str):
    (function,) = (fn for fn in demo.fns.values() if fn.api_name == api_name)
    return function


#: Component settings that say where a component sits on the page or which page events listen to it
#: (the app's gallery is clickable), not what Gradio does with an API request.
PAGE_ONLY = {"id", "_id", "key", "_selectable"}


def component_config(block: gr.components.Component) -> dict:
    """A component as Gradio describes it, without :data:`PAGE_ONLY`."""
    return {"type": type(block).__name__,
            **{key: value for key, value in block.get_config().items() if key not in PAGE_ONLY}}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[gr.Blocks, gr.Blocks]:
    """The app (still loading a bundle, so it starts at the default search settings) and the echo app."""
    missing = tmp_path_factory.mktemp("no-bundle") / "bundle"
    missing.mkdir()
    app = create_app(Startup(BundlePlan(str(missing), None, "--bundle")))
    return app, echo_app(SearchConfig())


@pytest.mark.parametrize("api_name", sorted(ENDPOINTS))
def test_the_echo_apps_endpoints_are_the_apps(pair: tuple[gr.Blocks, gr.Blocks], api_name: str) -> None:
    app, echo = pair
    assert echo.get_api_info()["named_endpoints"][f"/{api_name}"] == \
        app.get_api_info()["named_endpoints"][f"/{api_name}"]
    ours, theirs = event(app, api_name), event(echo, api_name)
    assert [block.label for block in ours.inputs] == [block.label for block in theirs.inputs]
    assert len(ours.inputs) == len(ENDPOINTS[api_name])
    assert [component_config(block) for block in theirs.inputs] == [component_config(block) for block in ours.inputs]
    assert [component_config(block) for block in theirs.outputs] == \
        [component_config(block) for block in ours.outputs]
    assert {name: getattr(theirs, name) for name in EVENT_SETTINGS} == \
        {name: getattr(ours, name) for name in EVENT_SETTINGS}
    assert ours.preprocess is False


def test_the_echo_app_queues_like_the_app(pair: tuple[gr.Blocks, gr.Blocks]) -> None:
    app, echo = pair
    for setting in ("max_size", "default_concurrency_limit", "ANAYLTICS_CACHE_FREQUENCY"):
        assert getattr(echo._queue, setting) == getattr(app._queue, setting), setting


@contextmanager
def serving(demo: gr.Blocks) -> Iterator[str]:
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


def shape(value: object) -> object:
    """The keys of a JSON answer, nested (lists by their first element), without the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items() if key != "metadata"}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


@pytest.fixture(scope="module")
def recommender(bundle_dir: Path, text_model: Path) -> Recommender:
    return Recommender.load(bundle_dir, text_model=str(text_model))


@pytest.fixture(scope="module")
def urls(recommender: Recommender) -> Iterator[tuple[str, str]]:
    """The app and the echo app, each on a free local port."""
    with serve(recommender) as app_url, serving(echo_app(recommender.search)) as echo_url:
        yield app_url, echo_url


def queries(recommender: Recommender, folder: Path, rows: range) -> list[Query]:
    found = []
    for row in rows:
        image = folder / f"{row}.jpg"
        image.write_bytes(recommender.catalog.image_bytes(row))
        found.append(Query(recommender.catalog.item_ids[row], recommender.catalog.titles[row], image))
    return found


def test_the_echo_app_answers_every_load_test_request_in_the_apps_shape(recommender: Recommender,
                                                                        urls: tuple[str, str],
                                                                        tmp_path: Path) -> None:
    (query,) = queries(recommender, tmp_path, range(3, 4))
    app, echo = (Client(url, verbose=False, download_files=False) for url in urls)
    for kind in KINDS:
        ours, theirs = call(app, Request(kind, query), k=5), call(echo, Request(kind, query), k=5)
        assert shape(theirs) == shape(ours), kind
        assert len(theirs["results"]) == len(ours["results"]) == 5
        assert (theirs["mode"], theirs["alpha"], theirs["fusion"]) == (ours["mode"], ours["alpha"],
                                                                      ours["fusion"]), kind


def test_a_small_run_against_the_echo_app_checks_every_answer(recommender: Recommender, urls: tuple[str, str],
                                                               tmp_path: Path) -> None:
    app_url, echo_url = urls
    requests = plan(queries(recommender, tmp_path, range(0, 12, 3)), callers=3, per_caller=3)
    references = references_for(app_url, requests, k=4)
    result = against_echo(app_url, echo_url, requests, references, k=4, rounds=2)
    assert (result["requests"], result["app_errors"], result["echo_errors"], result["differ"]) == (9, 0, 0, 0)
    assert result["ratio_median"] > 0 and len(result["ratios"]) == 2

    wrong = {request: {**answer, "results": answer["results"][::-1]} for request, answer in references.items()}
    assert against_echo(app_url, echo_url, requests, wrong, k=4, rounds=1)["differ"] > 0


def test_gradio_traffic_monitoring_is_off(urls: tuple[str, str]) -> None:
    """Gradio's traffic summary is not served to anyone: monitoring is off, as the shared queue configuration
    (which stops recomputing that summary after every event) assumes."""
    for url in urls:
        assert httpx.get(f"{url}monitoring/summary").status_code == 403
