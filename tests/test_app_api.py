"""The app's API, called with the real ``gradio_client`` against the real app on a local port.

Covers every documented endpoint, the startup order, and every kind of bad input the README
promises a clear message for; after each bad input the server must still answer.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from recommender import Recommender
from recommender.serving.endpoints import CATALOG_PAGE, UPLOAD_AGAIN, Endpoints
from recommender.serving.startup import (
    ENV_BUNDLE,
    ENV_REVISION,
    BundlePlan,
    NotReadyError,
    Startup,
    plan_bundle,
)
from recommender.serving.ui import (
    MAX_UPLOAD_BYTES,
    banner_text,
    render_details,
)

from .conftest import HubCache, free_port
from .synthetic import CHANNELS, jpeg_bytes, thumbnail

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = {"/recommend", "/recommend_item", "/search_catalog", "/shuffle_catalog", "/info"}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Query images of every awkward kind, written as files the client uploads."""
    folder = tmp_path_factory.mktemp("queries")
    style = CHANNELS["Crafts"]
    base = thumbnail(style["colour"], style["shape"], seed=7, letterbox=True)
    files: dict[str, bytes] = {
        "good.jpg": jpeg_bytes(base),
        "not-an-image.jpg": b"this is a text file pretending to be a JPEG\n" * 20,
        "truncated.jpg": jpeg_bytes(base)[:2000],
        "empty.png": b"",
        "bomb.png": decompression_bomb(50_000, 50_000),
        "rgba.png": encoded(base.convert("RGBA"), "PNG"),
        "palette.png": encoded(base.convert("P"), "PNG"),
        "cmyk.jpg": encoded(base.convert("CMYK"), "JPEG"),
        "grey.png": encoded(base.convert("L"), "PNG"),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    frames = [base, thumbnail(style["colour"], style["shape"], seed=8)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (folder / "oversized.jpg").write_bytes(b"\xff\xd8" + bytes(MAX_UPLOAD_BYTES + 1024))
    return {path.name: path for path in folder.iterdir()}


def encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


def decompression_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (decoding it would need gigabytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def result_ids(data: dict) -> list[str]:
    return [result["item_id"] for result in data["results"]]


# -- the documented endpoints ---------------------------------------------------------------------
def test_every_documented_endpoint_is_named(client: Client) -> None:
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert ENDPOINTS <= named


def test_info_describes_what_is_loaded(client: Client, recommender: Recommender) -> None:
    info = client.predict(api_name="/info")
    assert info["ready"] is True
    assert info["items"] == len(recommender.catalog)
    assert info["text_index"] and info["image_index"] and info["text_model"] and info["image_encoder"]
    assert info["text_backend"] == "pytorch" and info["text_backend_settled"] is True  # loaded in-process: no export


@pytest.mark.parametrize("mode", ["image", "text", "hybrid"])
def test_recommend_matches_the_engine(client: Client, recommender: Recommender, images: dict[str, Path],
                                      mode: str) -> None:
    title = "paper plane tutorial for kids"
    gallery, data = client.predict(image=handle_file(images["good.jpg"]), title=title, mode=mode, k=5, alpha=0.3,
                                   fusion="weighted", api_name="/recommend")
    expected = recommender.recommend(image=images["good.jpg"], title=title, mode=mode, k=5, alpha=0.3)
    assert data["mode"] == mode and data["notes"] == []
    assert result_ids(data) == [r.item_id for r in expected]
    assert [r["score"] for r in data["results"]] == pytest.approx([r.score for r in expected], abs=1e-5)
    assert [r["metadata"]["channel"] for r in data["results"]] == [r.metadata["channel"] for r in expected]
    assert len(gallery) == 5 and gallery[0]["caption"].startswith(f"1. {expected[0].title}")


def test_gallery_serves_the_original_catalog_files(client: Client, url: str, recommender: Recommender) -> None:
    gallery, data = client.predict(title="phone camera test", mode="text", k=3, api_name="/recommend")
    links, _ = Client(url, verbose=False, download_files=False).predict(title="phone camera test", mode="text", k=3,
                                                                        api_name="/recommend")
    for entry, link, result in zip(gallery, links, data["results"], strict=True):
        row = recommender.catalog.row_of(result["item_id"])
        assert Path(entry["image"]).read_bytes() == recommender.catalog.image_bytes(row)  # the original bytes
        assert link["image"]["url"].endswith(f"file={recommender.catalog.image_path(row)}")  # served in place


def test_hybrid_with_only_a_title_says_it_fell_back(client: Client) -> None:
    _, data = client.predict(title="diy paper flowers", mode="hybrid", k=4, api_name="/recommend")
    assert data["requested_mode"] == "hybrid" and data["mode"] == "text"
    assert data["notes"] and "title" in data["notes"][0]


def test_defaults_apply_when_parameters_are_left_out(client: Client, recommender: Recommender) -> None:
    _, data = client.predict(title="new phone unboxing", api_name="/recommend")
    assert data["mode"] == "text" and len(data["results"]) == 8


@pytest.mark.parametrize("name", ["rgba.png", "palette.png", "cmyk.jpg", "grey.png", "animated.gif"])
def test_unusual_image_modes_are_converted_not_refused(client: Client, images: dict[str, Path], name: str) -> None:
    gallery, data = client.predict(image=handle_file(images[name]), mode="image", k=3, api_name="/recommend")
    assert len(gallery) == 3 and data["query"]["image"]


def test_recommend_item_never_returns_the_item(client: Client, recommender: Recommender) -> None:
    item = recommender.catalog.item_ids[9]
    gallery, data = client.predict(item_id=item, mode="hybrid", k=6, alpha=0.5, fusion="rrf",
                                   api_name="/recommend_item")
    expected = recommender.recommend(item_id=item, mode="hybrid", k=6, alpha=0.5, fusion="rrf")
    assert result_ids(data) == [r.item_id for r in expected] and item not in result_ids(data)
    assert data["query"] == {"type": "item", "item_id": item, "title": recommender.catalog.titles[9],
                             "metadata": recommender.catalog.metadata(9)}
    assert data["fusion"] == "rrf" and len(gallery) == 6


def test_search_catalog(client: Client, recommender: Recommender) -> None:
    gallery, data = client.predict(query="PAPER", api_name="/search_catalog")
    expected = [row for row, title in enumerate(recommender.catalog.titles) if "paper" in title]
    assert data["matches"] == len(expected) == len(gallery) == len(data["items"]) > 0
    assert [item["item_id"] for item in data["items"]] == [recommender.catalog.item_ids[row] for row in expected]
    _, nothing = client.predict(query="no such title anywhere", api_name="/search_catalog")
    assert nothing["matches"] == 0 and nothing["items"] == []
    browse, everything = client.predict(query="", api_name="/search_catalog")
    assert everything["matches"] == len(recommender.catalog) and len(browse) == CATALOG_PAGE


def test_shuffle_catalog_gives_a_page_of_real_items(client: Client, recommender: Recommender) -> None:
    gallery, data = client.predict(api_name="/shuffle_catalog")
    ids = [item["item_id"] for item in data["items"]]
    assert len(gallery) == len(ids) == len(set(ids)) == min(CATALOG_PAGE, len(recommender.catalog))
    assert set(ids) <= set(recommender.catalog.item_ids)


DOCUMENTED_ENDPOINTS = ("/recommend", "/recommend_item", "/search_catalog", "/shuffle_catalog", "/info")


@pytest.mark.parametrize("page", ["README.md", "docs/api.md"])
def test_the_documented_examples_run(url: str, page: str) -> None:
    """The gradio_client examples of the README (one per endpoint) and of docs/api.md (the full
    guide), each page's blocks run in order as written, in a namespace of their own."""
    source = ROOT / page
    blocks = re.findall(r"```python\n(.*?)```", source.read_text(), flags=re.DOTALL)
    code = "\n".join(block for block in blocks if "gradio_client" in block or "client." in block)
    for endpoint in DOCUMENTED_ENDPOINTS:
        assert f'api_name="{endpoint}"' in code, f"{page} has no example of {endpoint}"
    controls = ("where", "diversity", "max_per", "dedupe", "offset", "items", "exclude")
    for control in controls if page == "docs/api.md" else ("where", "offset", "items"):
        assert f"{control}=" in code, f"{page} has no example of {control}"
    exec(compile(code.replace("http://127.0.0.1:7860/", url), str(source), "exec"), {})


def test_details_table_and_summary_from_the_json(client: Client) -> None:
    _, data = client.predict(title="*phone* [review](http://x)", mode="text", k=3, api_name="/recommend")
    summary, table = render_details(data)
    assert "\\*phone\\* \\[review\\]\\(http" in summary and "(text)" in summary
    assert list(table.columns) == ["#", "title", "score", "image score", "text score", "channel", "views", "item id"]
    assert table["item id"].tolist() == result_ids(data) and table["#"].tolist() == [1, 2, 3]
    empty_summary, empty_table = render_details(None)
    assert "Recommend" in empty_summary and empty_table.empty


# -- bad input: a clear message, never a traceback, and the server keeps serving ----------------------
BAD_QUERIES = {
    "not an image": ({"image": "not-an-image.jpg", "mode": "image"}, "not an image"),
    "truncated JPEG": ({"image": "truncated.jpg", "mode": "image"}, "truncated"),
    "empty file": ({"image": "empty.png", "mode": "image"}, "empty"),
    "decompression bomb": ({"image": "bomb.png", "mode": "hybrid", "title": "paper"}, "pixels"),
    "empty title in text mode": ({"title": "", "mode": "text"}, "needs a title"),
    "whitespace title in text mode": ({"title": "   \t ", "mode": "text"}, "needs a title"),
    "10,000-character title": ({"title": "a" * 10_000, "mode": "text"}, "10,000 characters"),
    "no query at all": ({"mode": "hybrid"}, "Give a thumbnail, a title"),
    "image mode with neither image nor title": ({"mode": "image"}, "Image mode needs a thumbnail"),
    "k = 0": ({"title": "paper", "mode": "text", "k": 0}, "k must be a whole number from 1 to 100"),
    "k = 101": ({"title": "paper", "mode": "text", "k": 101}, "k must be a whole number from 1 to 100"),
    "k = 2.5": ({"title": "paper", "mode": "text", "k": 2.5}, "k must be a whole number"),
    "alpha < 0": ({"title": "paper", "mode": "text", "alpha": -0.1}, "between 0 and 1"),
    "alpha > 1": ({"title": "paper", "mode": "text", "alpha": 1.5}, "between 0 and 1"),
    "unknown mode": ({"title": "paper", "mode": "audio"}, "Unknown mode 'audio'"),
    "unknown fusion": ({"title": "paper", "mode": "text", "fusion": "max"}, "Unknown fusion 'max'"),
}


def assert_clear_error(error: pytest.ExceptionInfo, expected: str) -> None:
    message = str(error.value)
    assert expected.lower() in message.lower(), message
    assert "Traceback" not in message and 'File "' not in message


def assert_still_serving(client: Client) -> None:
    _, data = client.predict(title="paper plane tutorial", mode="text", k=2, api_name="/recommend")
    assert len(data["results"]) == 2


@pytest.mark.parametrize("case", list(BAD_QUERIES))
def test_bad_query_gives_a_clear_error(client: Client, images: dict[str, Path], case: str) -> None:
    arguments, expected = BAD_QUERIES[case]
    if "image" in arguments:
        arguments = {**arguments, "image": handle_file(images[arguments["image"]])}
    with pytest.raises(AppError) as error:
        client.predict(**arguments, api_name="/recommend")
    assert_clear_error(error, expected)
    assert_still_serving(client)


@pytest.mark.parametrize(("item_id", "expected"), [("no-such-id", "Unknown item id"), ("", "Pick a catalog item"),
                                                   ("vid000", "k must be")])
def test_bad_item_query_gives_a_clear_error(client: Client, item_id: str, expected: str) -> None:
    with pytest.raises(AppError) as error:
        client.predict(item_id=item_id, k=500 if item_id == "vid000" else 8, api_name="/recommend_item")
    assert_clear_error(error, expected)
    assert_still_serving(client)


@pytest.mark.parametrize(("query", "expected"), [("x" * 10_000, "limit is 1,000"), (42, "must be text")])
def test_bad_search_gives_a_clear_error(client: Client, query: object, expected: str) -> None:
    with pytest.raises(AppError) as error:
        client.predict(query=query, api_name="/search_catalog")
    assert_clear_error(error, expected)


def test_uploads_over_the_cap_are_refused(client: Client, url: str, images: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client checks before sending
        client.predict(image=handle_file(images["oversized.jpg"]), mode="image", api_name="/recommend")
    with open(images["oversized.jpg"], "rb") as handle:  # and the server refuses a client that does not
        response = httpx.post(f"{url.rstrip('/')}/gradio_api/upload", files={"files": handle}, timeout=60)
    assert response.status_code == 413 and "maximum" in response.text.lower()
    assert_still_serving(client)



# -- the image input names a file: only an uploaded one may be opened -----------------------------------
#: where, diversity, max_per, dedupe, offset, items, exclude: a raw HTTP call sends every input (gradio_client fills them).
RAW_CONTROL_DEFAULTS = (None, 0.0, None, True, 0, None, None)


def raw_recommend(url: str, image: object, mode: str = "image") -> tuple[str, object]:
    """``/recommend`` called as any HTTP client can, without gradio_client (which always uploads first):
    the event's kind (``complete`` or ``error``) and its data."""
    base = url.rstrip("/")
    sent = httpx.post(f"{base}/gradio_api/call/recommend",
                      json={"data": [image, "paper plane" if mode == "hybrid" else "", mode, 3, 0.5, "weighted",
                                     *RAW_CONTROL_DEFAULTS]},
                      timeout=60)
    sent.raise_for_status()
    stream = httpx.get(f"{base}/gradio_api/call/recommend/{sent.json()['event_id']}", timeout=120).text
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, flags=re.MULTILINE)
    kind, data = next((kind, data) for kind, data in events if kind in ("complete", "error"))
    return kind, json.loads(data)


def upload(url: str, path: Path) -> str:
    with open(path, "rb") as handle:
        response = httpx.post(f"{url.rstrip('/')}/gradio_api/upload", files={"files": handle}, timeout=60)
    response.raise_for_status()
    return response.json()[0]


def test_recommend_opens_only_uploaded_files(url: str, recommender: Recommender, images: dict[str, Path],
                                             tmp_path: Path) -> None:
    """A raw call can put any path in the image's FileData. Files elsewhere on the server (an image,
    text, a large file, a missing one, a catalog thumbnail, a way out of the upload folder by ".."
    or by a symlink) all get one answer, which says nothing about them."""
    import gradio

    elsewhere = tmp_path / "server-files"
    elsewhere.mkdir()
    shutil.copy(images["good.jpg"], elsewhere / "photo.jpg")
    (elsewhere / "secret.txt").write_text("not for visitors")
    with open(elsewhere / "large.bin", "wb") as handle:
        handle.truncate(64 * 2**20)  # a size the old answer reported in MiB
    uploaded = Path(upload(url, images["good.jpg"]))
    escape = uploaded.parent / f"escape-{os.getpid()}-{time.monotonic_ns()}.jpg"
    escape.symlink_to(elsewhere / "photo.jpg")
    dot_dot = Path(uploaded.parent, *[".."] * (len(uploaded.parent.parts) - 1), *elsewhere.parts[1:], "photo.jpg")
    package_png = next(Path(gradio.__file__).parent.rglob("*.png"))  # an image in site-packages
    probes = [elsewhere / "photo.jpg", elsewhere / "secret.txt", elsewhere / "large.bin", elsewhere / "missing.jpg",
              "/etc/hostname", "/nonexistent/x.jpg", package_png, recommender.catalog.image_path(2), dot_dot, escape, ""]
    try:
        for probe in probes:
            for mode in ("image", "hybrid"):
                kind, data = raw_recommend(url, {"path": str(probe)}, mode)
                assert kind == "error" and data["error"] == UPLOAD_AGAIN, (probe, mode, str(data)[:300])
    finally:
        escape.unlink()
    kind, data = raw_recommend(url, {"path": str(uploaded)})  # the upload itself is fine, with or without meta
    assert kind == "complete" and len(data[1]["results"]) == 3
    kind, data = raw_recommend(url, {"path": str(uploaded), "meta": {"_type": "gradio.FileData"}}, "hybrid")
    assert kind == "complete" and data[1]["mode"] == "hybrid"

# -- startup ----------------------------------------------------------------------------------------
def test_startup_order(tmp_path: Path) -> None:
    default = tmp_path / "bundle"
    environ = {ENV_BUNDLE: "someone/bundle", ENV_REVISION: "v2"}
    assert plan_bundle("given", "v1", environ, default) == BundlePlan("given", "v1", "--bundle")
    assert plan_bundle(None, None, environ, default) == BundlePlan("someone/bundle", "v2", f"${ENV_BUNDLE}")
    built = plan_bundle(None, None, {}, default, dataset="owner/data")
    assert built.build_from == "owner/data" and built.source == str(default)
    default.mkdir()
    (default / "manifest.json").write_text("{}")
    assert plan_bundle(None, None, {}, default).build_from is None
    assert plan_bundle(None, None, {}, default).source == str(default)


def test_startup_loads_a_hub_repo_at_the_revision_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, hub_cache: HubCache, text_model: Path) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache.cache_dir))
    environ = {ENV_BUNDLE: hub_cache.repo_id, ENV_REVISION: hub_cache.old_commit}
    plan = plan_bundle(None, None, environ)
    startup = Startup(plan, text_model=str(text_model), onnx_titles=False)
    assert startup.default_alpha() == 0.2  # read from the manifest before loading, for the page and API defaults
    recommender = startup.start().wait(timeout=120)
    assert plan.describe() == f"{hub_cache.repo_id}@{hub_cache.old_commit} (${ENV_BUNDLE})"
    assert recommender.default_alpha == 0.2  # only the old commit has this alpha


def test_endpoints_say_when_still_starting_or_failed(tmp_path: Path) -> None:
    waiting = Endpoints(Startup(BundlePlan("bundle", None, "test")))
    assert waiting.info()["ready"] is False
    with pytest.raises(gr.Error, match="Still starting"):
        waiting.recommend(title="paper", mode="text")
    failed = Startup(BundlePlan(str(tmp_path / "missing"), None, "test")).start()
    with pytest.raises(Exception, match="neither a local folder nor a Hub repo id"):
        failed.wait(timeout=60)
    with pytest.raises(gr.Error, match="Startup failed"):
        Endpoints(failed).search_catalog("paper")


def test_visitors_see_names_not_server_paths(tmp_path: Path, recommender: Recommender, bundle_dir: Path,
                                             text_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    """/info, the banner and "Startup failed" name bundles and models by Hub id or folder name;
    the server log keeps the full paths."""
    missing = tmp_path / "srv" / "bundles" / "v3"
    failed = Startup(BundlePlan(str(missing), None, "--bundle"))
    with caplog.at_level(logging.ERROR, logger="recommender.serving.startup"), pytest.raises(NotReadyError):
        failed.start().wait(timeout=60)
    assert str(missing) in caplog.text
    api = Endpoints(failed)
    with pytest.raises(gr.Error) as refused:
        api.search_catalog("paper")
    shown = [json.dumps(api.info()), banner_text(api), str(refused.value)]
    assert all(str(tmp_path) not in text for text in shown), shown
    assert api.info()["bundle"] == "v3 (--bundle)"
    assert api.info()["status"] == "Startup failed: Bundle v3 is neither a local folder nor a Hub repo id (owner/name)."

    ready = Endpoints(Startup.loaded(recommender, description=str(bundle_dir)))
    info = ready.info()
    assert str(bundle_dir.parent) not in json.dumps(info) + banner_text(ready)
    assert (info["bundle"], info["text_model"]) == (f"{bundle_dir.name} (in-process)", text_model.name)
    assert f"`{text_model.name}`" in banner_text(ready)

def test_builds_a_bundle_when_there_is_none(tmp_path: Path, catalog_parquet: Path, text_model: Path) -> None:
    from train.trainer import TrainingConfig

    from .conftest import TEST_ENCODER

    plan = plan_bundle(None, None, {}, tmp_path / "bundle", dataset=str(catalog_parquet))
    options = {"encoder_config": TEST_ENCODER, "training": TrainingConfig(epochs=1, batch_size=16),
               "show_progress_bar": False}
    startup = Startup(plan, text_model=str(text_model), build_options=options, onnx_titles=False).start()
    recommender = startup.wait(timeout=300)
    assert (tmp_path / "bundle" / "manifest.json").is_file() and len(recommender.catalog) == 32
    assert Endpoints(startup).info()["bundle"].startswith(f"building bundle from {catalog_parquet.name} (")


def test_python_app_py_serves_a_local_bundle_offline(bundle_dir: Path, text_model: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "app.py", "--bundle", str(bundle_dir), "--text-model", str(text_model), "--port", str(port),
         "--host", "127.0.0.1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        first_line = process.stdout.readline()
        assert first_line.strip() == f"Bundle: {bundle_dir} (--bundle)"
        client = wait_for_client(f"http://127.0.0.1:{port}/", process)
        info = wait_until_ready(client)
        assert info["items"] == 32 and info["bundle"] == f"{bundle_dir.name} (--bundle)"  # the log has the path
        parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/recommend"]
        alpha = next(p for p in parameters["parameters"] if p["parameter_name"] == "alpha")
        assert alpha["parameter_default"] == info["default_alpha"]  # though the app loaded in the background
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_client(url: str, process: subprocess.Popen, attempts: int = 240) -> Client:
    for _ in range(attempts):
        assert process.poll() is None, process.stdout.read()
        try:
            return Client(url, verbose=False)
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.5)
    raise AssertionError(f"{url} never came up")


def wait_until_ready(client: Client, attempts: int = 240) -> dict:
    for _ in range(attempts):
        info = client.predict(api_name="/info")
        if info["ready"]:
            return info
        assert "failed" not in info["status"], info["status"]
        time.sleep(0.5)
    raise AssertionError("the app never became ready")


def test_serving_uses_one_thread_per_query_in_every_pool() -> None:
    """torch, FAISS and numpy's BLAS (the title head's matrix products) each get one thread: BLAS
    threads spinning beside torch's made hybrid uploads twice as slow."""
    script = ("import faiss, torch; from threadpoolctl import threadpool_info\n"
              "blas = lambda: max(p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas')\n"
              "before = blas()\n"
              "from recommender.serving.startup import use_one_thread_per_query\n"
              "use_one_thread_per_query()\n"
              "print(before, blas(), torch.get_num_threads(), faiss.omp_get_max_threads())\n")
    env = {name: value for name, value in os.environ.items() if name not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = "4"  # several BLAS threads to start from, even on a one-core machine
    run = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    before, blas, torch_threads, faiss_threads = map(int, run.stdout.split())
    assert before > 1 and (blas, torch_threads, faiss_threads) == (1, 1, 1)
