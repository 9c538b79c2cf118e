"""Serving a bundle that changes: the app swaps to a new revision without a restart and without an error.

The main test runs the real app on a local port and keeps ``gradio_client`` callers querying it
while ``train add`` and ``train remove`` change the bundle underneath: every answer must be
exactly what one revision served (old, in between or new: the answer names which) gives, never an
error or a mix.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file

from recommender import Recommender
from recommender.serving.endpoints import Endpoints
from recommender.serving.startup import BundlePlan, Startup
from recommender.serving.ui import banner_text, create_app, launch
from recommender.serving.watch import BundleWatcher, hub_probe, local_probe
from train.live import add_items, remove_items

from .conftest import HubCache, free_port
from .synthetic import catalog_records, new_records, write_catalog_parquet
from .test_bundle import offline_hub  # noqa: F401 - the fixture

RECORDS = catalog_records()
ITEMS = ["vid000", "vid103", "vid206", "vid305"]  # stay in the catalog through the update
REMOVED = "vid107"


def started(folder: Path) -> Startup:
    """The app's startup serving ``folder``, loaded."""
    startup = Startup(BundlePlan(str(folder), None, "test"), onnx_titles=False, onnx_thumbnails=False).start()
    startup.wait(120)
    assert startup.ready, startup.status_line()
    return startup


@pytest.fixture
def folder(tmp_path: Path, bundle_dir: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


def test_a_request_finishes_on_the_recommender_it_started_with(folder: Path, bundle_dir: Path) -> None:
    startup = started(folder)
    old, new = startup.get(), Recommender.load(bundle_dir)
    with startup.pinned():
        startup.swap(new)
        assert startup.get() is old
        with startup.pinned():  # nested: still the request's own
            assert startup.get() is old
        seen = []
        other = threading.Thread(target=lambda: seen.append(startup.get()))
        other.start()
        other.join()
        assert seen == [new]  # another thread (the next request) gets the new one
    assert startup.get() is new


def test_local_watcher_swaps_in_each_new_revision(folder: Path, tmp_path: Path) -> None:
    startup = started(folder)
    watcher = BundleWatcher(startup, interval=60)
    first = startup.get()
    assert not watcher.check()  # nothing changed
    add_items(folder, write_catalog_parquet(tmp_path / "new.parquet", new_records(4)), show_progress_bar=False)
    assert watcher.check()
    second = startup.get()
    assert second is not first and second.info()["items"] == 36
    assert second.title_encoder is first.title_encoder  # same model: kept, not loaded again
    assert second.revision["live_revision"] == 1 and second.revision["id"] != first.revision["id"]
    assert second.revision["manifest"] == local_probe(folder)()
    api = Endpoints(startup)
    assert api.info()["revision"]["id"] == second.revision["id"] and api.info()["watch"]["swaps"] == 1
    assert f"revision `{second.revision['id']}`" in banner_text(api)
    assert not watcher.check()


def test_a_revision_that_fails_to_load_leaves_the_old_one_serving(folder: Path, tmp_path: Path) -> None:
    startup = started(folder)
    served = startup.get()
    loads = []
    watcher = BundleWatcher(startup, interval=60)
    real_load = watcher.load
    watcher.load = lambda key: loads.append(key) or real_load(key)
    add_items(folder, write_catalog_parquet(tmp_path / "new.parquet", new_records(2)), show_progress_bar=False)
    index = folder / "segments" / "000001" / "text.faiss"
    good = index.read_bytes()
    index.write_bytes(b"not an index")
    assert not watcher.check() and not watcher.check()
    assert startup.get() is served and len(loads) == 1  # reported once, not retried until the bundle changes
    assert "did not load" in startup.watch_status["error"] and "text.faiss" in startup.watch_status["error"]
    assert Endpoints(startup).info()["watch"]["error"] == startup.watch_status["error"]
    index.write_bytes(good)  # repaired, and changed again:
    add_items(folder, write_catalog_parquet(tmp_path / "more.parquet", new_records(2, start=2)),
              show_progress_bar=False)
    assert watcher.check() and startup.get().info()["items"] == 36 and startup.watch_status["error"] is None


def test_the_hub_watcher_follows_the_branch(offline_hub: HubCache) -> None:  # noqa: F811
    startup = Startup(BundlePlan(offline_hub.repo_id, None, "test"), onnx_titles=False, onnx_thumbnails=False).start()
    assert startup.wait(120).revision["commit"] == offline_hub.main_commit
    asked = []
    head = [offline_hub.main_commit]

    def model_info(repo_id: str, revision: str) -> SimpleNamespace:
        asked.append((repo_id, revision))
        return SimpleNamespace(sha=head[0])

    watcher = BundleWatcher(startup, interval=60, probe=hub_probe(offline_hub.repo_id, None, model_info))
    assert not watcher.check() and asked == [(offline_hub.repo_id, "main")]
    head[0] = offline_hub.old_commit  # "main" moved to another commit (its manifest says alpha 0.2)
    assert watcher.check()
    now = startup.get()
    assert now.revision["commit"] == offline_hub.old_commit and now.default_alpha == 0.2
    assert Endpoints(startup).info()["revision"]["id"] == offline_hub.old_commit[:8]


def test_an_unreachable_hub_keeps_the_current_revision(caplog: pytest.LogCaptureFixture) -> None:
    def offline(repo_id: str, revision: str) -> None:
        raise ConnectionError("no network")

    assert hub_probe("someone/bundle", "main", offline)() is None
    assert "Cannot check someone/bundle for a new revision: no network" in caplog.text


def test_queries_through_a_swap_see_the_old_or_the_new_bundle_never_an_error(folder: Path, tmp_path: Path) -> None:
    startup = started(folder)
    old = startup.get()
    revisions = {old.revision["id"]: old}  # every revision served: old, any in between, new
    swap = startup.swap
    startup.swap = lambda recommender: revisions.setdefault(recommender.revision["id"], recommender) and swap(recommender)
    watcher = BundleWatcher(startup, interval=0.05).start()
    thumbnails = []
    # The expected answers call the endpoints directly, which read only uploads: put the files where uploads go.
    upload_folder = Path(get_upload_folder())
    upload_folder.mkdir(parents=True, exist_ok=True)
    uploads = Path(tempfile.mkdtemp(dir=upload_folder))
    for record in RECORDS[::5]:
        path = uploads / f"{record['video_id']}.jpg"
        path.write_bytes(record["image"]["bytes"])
        thumbnails.append((str(path), record["title"]))
    requests = [("/recommend_item", {"item_id": item, "mode": mode, "k": 10})
                for item in ITEMS for mode in ("image", "text", "hybrid")]
    requests += [("/recommend", {"image": path, "title": title, "mode": "hybrid", "k": 10})
                 for path, title in thumbnails]
    requests += [("/search_catalog", {"query": "paper"})]
    answers: list[tuple[int, dict | None, str | None]] = []
    stop = threading.Event()
    demo = create_app(startup)
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)

    def caller(offset: int) -> None:
        client = Client(url, verbose=False, download_files=False)
        position = offset
        while not stop.is_set():
            number = position % len(requests)
            name, arguments = requests[number]
            arguments = {**arguments, "image": handle_file(arguments["image"])} if "image" in arguments else arguments
            try:
                answers.append((number, client.predict(**arguments, api_name=name)[1], None))
            except Exception as error:  # noqa: BLE001 - any failure fails the test below
                answers.append((number, None, f"{type(error).__name__}: {error}"))
            position += 1

    threads = [threading.Thread(target=caller, args=(offset,)) for offset in range(3)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        add_items(folder, write_catalog_parquet(tmp_path / "new.parquet", new_records(8)), show_progress_bar=False)
        remove_items(folder, [REMOVED])
        deadline = time.monotonic() + 120
        while startup.get().revision["live_revision"] != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        watcher.stop()
        demo.close()
    new = startup.get()
    assert new.revision["live_revision"] == 2, startup.watch_status
    errors = [error for _, _, error in answers if error]
    assert not errors, errors[:3]
    expected = {}
    for revision in revisions.values():
        api = Endpoints(Startup.loaded(revision))
        for number, (name, arguments) in enumerate(requests):
            if name == "/search_catalog":
                expected[number, revision.revision["id"]] = api.search_catalog(**arguments)[1]
            else:
                call = api.recommend_item if name == "/recommend_item" else api.recommend
                expected[number, revision.revision["id"]] = call(**arguments)[1]["results"]
    served = dict.fromkeys(revisions, 0)
    for number, data, _ in answers:
        if "results" in data:
            assert data["revision"] in served, data["revision"]
            served[data["revision"]] += 1
            assert data["results"] == expected[number, data["revision"]]
        else:
            assert data in [expected[number, revision] for revision in revisions]
    assert served[old.revision["id"]] and served[new.revision["id"]], served  # the swaps happened under load
    differ = [n for n in range(len(requests)) if expected[n, old.revision["id"]] != expected[n, new.revision["id"]]]
    assert len(differ) >= 3  # and the two revisions answer differently, so a mix would show


def test_a_swap_in_the_middle_of_a_request_does_not_mix_revisions(folder: Path, tmp_path: Path) -> None:
    """Swap exactly between ranking and describing the results: the answer is all old revision."""
    startup = started(folder)
    old = startup.get()
    reference = Endpoints(Startup.loaded(old)).recommend_item("vid000", mode="hybrid", k=10)[1]
    first = reference["results"][0]["item_id"]
    add_items(folder, write_catalog_parquet(tmp_path / "new.parquet", new_records(8)), show_progress_bar=False)
    remove_items(folder, [first])
    new = Recommender.load(folder)
    api = Endpoints(startup)
    rank = old.recommend

    def rank_then_swap(*args, **kwargs):
        results = rank(*args, **kwargs)
        startup.swap(new)
        return results

    old.recommend = rank_then_swap
    _, answer = api.recommend_item("vid000", mode="hybrid", k=10)
    assert answer == reference and answer["revision"] == old.revision["id"]
    _, answer = api.recommend_item("vid000", mode="hybrid", k=10)  # the next request: the new revision
    assert answer["revision"] == new.revision["id"] and first not in [r["item_id"] for r in answer["results"]]
