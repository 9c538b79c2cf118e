"""End-to-end latency of the app through ``gradio_client``, next to a trivial echo Gradio app.

Both servers run in their own processes (so the client does not share a GIL with them) and are
timed in the same run, interleaved call by call, so the echo app's numbers are Gradio's own floor
on this machine at this moment. Queries are real catalog items fetched through the API
(thumbnails uploaded back, titles typed back).

    python -m benchmarks.latency_gradio --bundle /tmp/realbundle --text-model PATH
    python -m benchmarks.latency_gradio --data real_thumbnails_dev.parquet --text-model PATH  # builds a bundle in /tmp
    python -m benchmarks.latency_gradio --url http://127.0.0.1:7860/                        # an app already running

``suite_probe`` is what ``python -m benchmarks`` (section ``gradio``) runs against the ``app.py``
its serving section started.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import Results, Row, free_port, percentiles, stop_process

if TYPE_CHECKING:
    from recommender.search.config import SearchConfig

ROOT = Path(__file__).resolve().parent.parent
#: Substrings searched to collect a deterministic, varied set of catalog items as queries.
SEARCHES = ("", "a", "e", "o", "i", "s", "t", "n", "r", "l")


@dataclass(frozen=True)
class Query:
    item_id: str
    title: str
    image: Path  # the item's thumbnail, as downloaded through the API


def environment() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "GRADIO_ANALYTICS_ENABLED": "False"}


@contextmanager
def started(command: list[str], url: str, timeout: float = 600.0) -> Iterator[subprocess.Popen]:
    """Run a server process until the block ends; yields it once the app at ``url`` answers ``/info`` as ready."""
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(url, process, log, timeout)
        yield process
    finally:
        stop_process(process)
        log.close()


@contextmanager
def running(command: list[str], url: str, timeout: float = 600.0) -> Iterator[str]:
    """:func:`started`, yielding the server's ``url``."""
    with started(command, url, timeout):
        yield url


def wait_until_ready(url: str, process: subprocess.Popen, log, timeout: float) -> None:
    """Poll until the server answers; for the app, until ``/info`` says the recommender is loaded and
    its title queries have settled on their backend (the ONNX export runs after loading)."""
    from gradio_client import Client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log.read()[-3000:]}")
        try:
            client = Client(url, verbose=False, download_files=False)
        except Exception:  # noqa: BLE001 - httpx connection errors until the server listens
            time.sleep(0.5)
            continue
        if "/info" not in client.view_api(print_info=False, return_format="dict")["named_endpoints"]:
            return  # the echo app: being up is being ready
        info = client.predict(api_name="/info")
        if info["ready"] and info.get("text_backend_settled", True):
            return
        if info.get("status", "").startswith("Startup failed"):  # no status once ready: titles still settling
            raise RuntimeError(info["status"])
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready after {timeout:.0f} s")


def app_command(bundle: Path, text_model: str | None, port: int, query_cache: int = 0) -> list[str]:
    """``python app.py`` serving ``bundle`` on a loopback ``port``.

    ``query_cache``: the app's ``--query-cache``. Benchmarks send the same queries again (warm-up rounds,
    reference answers), so they turn the cache off unless told: every request then encodes, as a new
    query would.
    """
    command = [sys.executable, "app.py", "--bundle", str(bundle), "--host", "127.0.0.1", "--port", str(port),
               "--query-cache", str(query_cache)]
    return command + ["--text-model", text_model] if text_model else command


@contextmanager
def serve_app(bundle: Path, text_model: str | None = None, query_cache: int = 0) -> Iterator[str]:
    """``python app.py`` on a free loopback port, for as long as the block runs."""
    port = free_port()
    with running(app_command(bundle, text_model, port, query_cache), f"http://127.0.0.1:{port}/") as url:
        yield url


@contextmanager
def serve_echo() -> Iterator[str]:
    """The trivial echo app (see :func:`echo_app`) on a free loopback port."""
    port = free_port()
    with running(echo_command(port), f"http://127.0.0.1:{port}/") as url:
        yield url


def echo_command(port: int) -> list[str]:
    """The echo app (see :func:`echo_app`) on a loopback ``port``."""
    return [sys.executable, "-m", "benchmarks.latency_gradio", "--serve-echo", str(port)]


def echo_app(search: SearchConfig | None = None, concurrency: int | None = None):
    """Gradio's floor: a text echo, and an image upload answered with its file name (no decoding);
    and ``/recommend`` / ``/recommend_item`` with the app's own interface (the components of
    :mod:`recommender.serving.interface`, the same event settings and queue) answering ``k`` fixed
    thumbnails (served in place, like the catalog's) and a JSON of the app's shape without
    recommending anything. The load test sends both apps the same requests."""
    import gradio as gr

    from recommender.engine import MAX_K
    from recommender.search.config import SearchConfig
    from recommender.serving.endpoints import Endpoints
    from recommender.serving.interface import (
        COMPONENTS,
        CONTROLS,
        add_recommendation_api,
        component,
        configure_queue,
    )
    from recommender.serving.ui import DEFAULT_CONCURRENCY

    search = search or SearchConfig()
    concurrency = concurrency or DEFAULT_CONCURRENCY
    thumbnails = echo_thumbnails(MAX_K)
    gr.set_static_paths([Path(thumbnails[0]).parent])
    pages = [echo_page(k, thumbnails) for k in range(MAX_K + 1)]

    def answer(query: dict, given: dict) -> tuple[list, dict]:
        gallery, results = pages[min(max(int(given["k"] or 0), 0), MAX_K)]
        hybrid = given["mode"] == "hybrid"
        return gallery, {"query": query, "requested_mode": given["mode"], "mode": given["mode"],
                         "alpha": (search.alpha if given["alpha"] is None else given["alpha"]) if hybrid else None,
                         "fusion": (given["fusion"] or search.fusion) if hybrid else None,
                         "controls": {name: given[name] for name in CONTROLS if name != "offset"}, "notes": [],
                         "results": results, "offset": 0, "more": False, "revision": "echo"}

    @like(Endpoints.recommend)
    def recommend(given: dict) -> tuple[list, dict]:
        image = given["image"]
        name = Path(image["path"]).name if isinstance(image, dict) and image.get("path") else None
        return answer({"type": "upload", "title": given["title"], "image": name}, given)

    @like(Endpoints.recommend_item)
    def recommend_item(given: dict) -> tuple[list, dict]:
        return answer({"type": "item", "item_id": given["item_id"], "title": "Echo", "metadata": {"channel": "echo"}},
                      given)

    with gr.Blocks() as demo:
        text, image, out = gr.Textbox(), gr.Image(type="filepath"), gr.Textbox()
        gr.Button("echo").click(lambda value: value, text, out, api_name="echo")
        gr.Button("echo upload").click(lambda payload: Path(payload["path"]).name, image, out,
                                       api_name="echo_upload", preprocess=False)
        add_recommendation_api({name: component(name, search) for name in COMPONENTS}, recommend, recommend_item,
                               concurrency)
    return configure_queue(demo, concurrency)


def like(method: Callable) -> Callable[[Callable[[dict], Any]], Callable]:
    """Give a handler taking ``{parameter: value}`` the signature of an :class:`Endpoints` method (without
    ``self``): Gradio names the API's parameters and fills in their defaults from it."""
    signature = inspect.signature(method)
    signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    def wrap(handler: Callable[[dict], Any]) -> Callable:
        def called(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return handler(bound.arguments)

        called.__signature__ = signature  # type: ignore[attr-defined]
        called.__name__, called.__doc__ = method.__name__, method.__doc__
        return called

    return wrap


def echo_page(k: int, thumbnails: list[str]) -> tuple[list[tuple[str, str]], list[dict]]:
    """The gallery and the results of an echo answer with ``k`` results, fields as the app's."""
    from recommender.results import Recommendation

    results = [asdict(Recommendation(rank, f"echo{rank}", f"Echo {rank}", 1.0 / rank, 1.0 / rank, None,
                                     {"channel": "echo"})) for rank in range(1, k + 1)]
    gallery = [(path, f"{r['rank']}. {r['title']} · {r['score']:.3f}") for r, path in zip(results, thumbnails,
                                                                                          strict=False)]
    return gallery, results


def echo_thumbnails(count: int) -> list[str]:
    """``count`` small JPEG thumbnails, in a private folder laid out like the app's thumbnail folder."""
    import io

    from PIL import Image

    from recommender.data.catalog import ThumbnailFolder

    folder = ThumbnailFolder("echo")
    paths = []
    for index in range(count):
        data = io.BytesIO()
        Image.new("RGB", (480, 360), (index * 37 % 256, index * 91 % 256, 128)).save(data, "JPEG")
        paths.append(str(folder.file(f"{index}.jpg", data.getvalue())))
    return paths


def build_bundle_from(data: Path, text_model: str, output: Path, epochs: int, limit: int | None) -> Path:
    """A bundle from a local parquet file, written outside the repository (the data never goes in it)."""
    from train.build import build_bundle
    from train.trainer import TrainingConfig

    if not (output / "manifest.json").is_file():
        build_bundle(data, output, text_model=text_model, training=TrainingConfig(epochs=epochs), limit=limit,
                     overwrite=True)
    return output


def sample_queries(url: str, count: int, folder: Path) -> list[Query]:
    """``count`` catalog items (id, title, downloaded thumbnail), found through ``/search_catalog``."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=str(folder))
    queries: dict[str, Query] = {}
    for text in SEARCHES:
        gallery, page = client.predict(query=text, api_name="/search_catalog")
        for entry, item in zip(gallery, page["items"], strict=True):
            queries.setdefault(item["item_id"], Query(item["item_id"], item["title"], Path(entry["image"])))
        if len(queries) >= count:
            break
    return list(queries.values())[:count]


def cases(app, echo, k: int) -> dict[str, Callable[[Query], object]]:
    """One call per case, each taking a query; the echo cases are the floor for the app's text and upload calls."""
    from gradio_client import handle_file

    return {
        "echo (text)": lambda q: echo.predict(q.title, api_name="/echo"),
        "echo (upload)": lambda q: echo.predict(handle_file(q.image), api_name="/echo_upload"),
        "text": lambda q: app.predict(title=q.title, mode="text", k=k, api_name="/recommend"),
        "image": lambda q: app.predict(image=handle_file(q.image), mode="image", k=k, api_name="/recommend"),
        "hybrid": lambda q: app.predict(image=handle_file(q.image), title=q.title, mode="hybrid", k=k,
                                        api_name="/recommend"),
        "item (hybrid)": lambda q: app.predict(item_id=q.item_id, mode="hybrid", k=k, api_name="/recommend_item"),
        "search": lambda q: app.predict(query=(q.title.split() or [""])[0], api_name="/search_catalog"),
    }


def measure(url: str, queries: int = 50, k: int = 10, warmup: int = 3, download: bool = False) -> dict[str, dict]:
    """p50 / p95 / mean per case against the app at ``url`` and a fresh echo app, interleaved call by call.

    ``download=False`` leaves the result thumbnails on the server (their URLs are in the answer),
    as an API caller that wants the JSON would; ``True`` also fetches every thumbnail.
    """
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as folder, serve_echo() as echo_url:
        sample = sample_queries(url, queries, Path(folder))
        files = str(Path(folder) / "out") if download else False
        app, echo = Client(url, verbose=False, download_files=files), Client(echo_url, verbose=False)
        calls = cases(app, echo, k)
        for query in sample[:warmup]:
            for call in calls.values():
                call(query)
        timings: dict[str, list[float]] = {name: [] for name in calls}
        for query in sample:
            for name, call in calls.items():
                started = time.perf_counter()
                call(query)
                timings[name].append(time.perf_counter() - started)
    return {name: percentiles(values) for name, values in timings.items()}


def suite_probe(results: Results, queries: int) -> Callable[[str], dict]:
    """``(url) -> measured`` for :func:`benchmarks.serving.app_startup`; adds one row per case to ``results``."""

    def run(url: str) -> dict:
        measured = measure(url, queries=queries)
        for case, stats in measured.items():
            results.add(Row("latency (gradio_client)", f"{case} p50 / p95",
                            f"{stats['p50_ms']:.1f} / {stats['p95_ms']:.1f} ms", None, "", f"{stats['n']} calls"))
        results.raw["gradio_latency"] = measured
        return measured

    return run


def table(results: dict[str, dict]) -> str:
    floor = {"text": "echo (text)", "item (hybrid)": "echo (text)", "search": "echo (text)",
             "image": "echo (upload)", "hybrid": "echo (upload)"}
    lines = [f"{'case':<16}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}   p50 above its echo floor",
             "-" * 72]
    for name, stats in results.items():
        extra = f"{stats['p50_ms'] - results[floor[name]]['p50_ms']:+.1f} ms" if name in floor else "(floor)"
        lines.append(f"{name:<16}{stats['p50_ms']:>9.1f}{stats['p95_ms']:>9.1f}{stats['mean_ms']:>9.1f}   {extra}")
    return "\n".join(lines)


def add_app_arguments(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """Which app to run against (shared with ``benchmarks.load_test``)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="an app already running")
    source.add_argument("--bundle", type=Path, help="bundle folder to serve with python app.py")
    source.add_argument("--data", type=Path, help="parquet file to build a bundle from (kept in --work)")
    parser.add_argument("--text-model", help="text model (local path for offline use)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "app-benchmark-bundle",
                        help="where --data builds its bundle, reused by later runs (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs when building from --data")
    parser.add_argument("--limit", type=int, help="use only the first N rows of --data")
    parser.add_argument("--query-cache", type=int, default=0, metavar="N",
                        help="the served app's --query-cache (default: 0, every request encodes as a new query would)")
    return source


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_app_arguments(parser).add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--queries", type=int, default=50, help="timed calls per case (default: %(default)s)")
    parser.add_argument("-k", type=int, default=10, help="recommendations per call (default: %(default)s)")
    parser.add_argument("--download", action="store_true", help="also download every result thumbnail")
    parser.add_argument("--json", type=Path, help="write the numbers here as JSON")
    return parser.parse_args(argv)


@contextmanager
def app_from(args: argparse.Namespace) -> Iterator[str]:
    """The app to benchmark: a given URL, a bundle served here, or a bundle built from data first."""
    if args.url:
        yield args.url
        return
    bundle = args.bundle or build_bundle_from(args.data, args.text_model, args.work, args.epochs, args.limit)
    with serve_app(bundle, args.text_model, args.query_cache) as url:
        yield url


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_echo:
        from recommender.serving.ui import launch

        launch(echo_app(), server_name="127.0.0.1", server_port=args.serve_echo, quiet=True)
        return
    with app_from(args) as url:
        results = measure(url, queries=args.queries, k=args.k, download=args.download)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
