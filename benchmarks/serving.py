"""Startup time and peak memory of a serving process, from a local bundle.

Two processes, each started fresh (imports included):

- the library: ``Recommender.load`` then queries, in a child Python process;
- the app: ``python app.py --bundle ...``, timed until its page answers and until its log says
  the recommender is ready, then until its title queries settle on ONNX Runtime (or stay on
  PyTorch); its peak RSS is read from ``/proc`` while it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from recommender.serving.startup import THUMBNAILS_SETTLED_LOG, TITLES_SETTLED_LOG

from .common import Results, Row, free_port, peak_rss_mib, stop_process

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time
started = time.perf_counter()
from recommender import Recommender
from benchmarks.common import peak_rss_mib
imported = time.perf_counter()
recommender = Recommender.load(sys.argv[1], text_model=sys.argv[2] or None)
loaded = time.perf_counter()
recommender.recommend(item_id=recommender.catalog.item_ids[0], mode="hybrid", k=10)
first = time.perf_counter()
print("READY " + json.dumps({"import_s": imported - started, "load_s": loaded - imported,
                             "first_query_s": first - loaded}), flush=True)
rows = range(0, len(recommender), max(1, len(recommender) // int(sys.argv[3])))
for row in rows:
    recommender.recommend(image=recommender.catalog.image_bytes(row), title=recommender.catalog.titles[row],
                          mode="hybrid", k=10)
print("DONE " + json.dumps({"peak_rss_mib": peak_rss_mib(), "queries": len(rows)}), flush=True)
"""


def _environment() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def library_startup(bundle: Path, text_model: str | None, queries: int = 100) -> dict:
    """One fresh process: spawn -> loaded and answered a query; then its peak RSS after ``queries`` uploads."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", _CHILD, str(bundle), text_model or "", str(queries)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env=_environment())
    result: dict = {}
    for line in process.stdout:
        if line.startswith("READY "):
            result["ready_s"] = time.perf_counter() - started
            result.update(json.loads(line[6:]))
        elif line.startswith("DONE "):
            result.update(json.loads(line[5:]))
    _, errors = process.communicate()
    if process.returncode != 0 or "ready_s" not in result:
        raise RuntimeError(f"Library startup failed ({process.returncode}): {errors[-2000:]}")
    return result


def app_startup(bundle: Path, text_model: str | None, timeout: float = 600.0,
                while_running=None) -> dict:
    """Start ``app.py`` on a free loopback port; time page-up and recommender-ready; peak RSS; stop it.

    ``while_running(url)`` (optional) runs against the live app before it is stopped (e.g. gradio_client
    latency), and its return value is kept under ``"while_running"``.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, str(ROOT / "app.py"), "--bundle", str(bundle), "--host", "127.0.0.1", "--port", str(port),
               "--query-cache", "0"]  # the probes repeat queries: each must encode, as a new one would
    if text_model:
        command += ["--text-model", text_model]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                               env=_environment())
    marks: dict = {}
    log: list[str] = []

    def read() -> None:
        for line in process.stdout:
            log.append(line)
            if "Ready in" in line and "ready_s" not in marks:
                marks["ready_s"] = time.perf_counter() - started
            if "Startup failed" in line:
                marks["failed"] = line.strip()
            if THUMBNAILS_SETTLED_LOG in line and "thumbnails_s" not in marks:
                marks["thumbnails_s"] = time.perf_counter() - started
                marks["thumbnails_backend"] = line.split(THUMBNAILS_SETTLED_LOG, 1)[1].strip()
            if TITLES_SETTLED_LOG in line and "titles_s" not in marks:
                marks["titles_s"] = time.perf_counter() - started
                marks["titles_backend"] = line.split(TITLES_SETTLED_LOG, 1)[1].strip()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while time.perf_counter() - started < timeout and process.poll() is None:
            if "page_s" not in marks:
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            marks["page_s"] = time.perf_counter() - started
                except OSError:
                    pass
            if "page_s" in marks and ("ready_s" in marks or "failed" in marks):
                break
            time.sleep(0.05)
        if "ready_s" not in marks:
            raise RuntimeError(f"app.py did not become ready in {timeout:.0f} s: {''.join(log[-30:])}")
        while "titles_s" not in marks and time.perf_counter() - started < timeout and process.poll() is None:
            time.sleep(0.1)  # the ONNX export of the text model, after "ready": measure the settled app
        marks["peak_rss_after_start_mib"] = peak_rss_mib(process.pid)
        if while_running is not None:
            marks["while_running"] = while_running(url)
            marks["peak_rss_after_queries_mib"] = peak_rss_mib(process.pid)
    finally:
        stop_process(process)
    return marks


def run(ours: Path, baseline: Path | None, text_model: str | None, results: Results, repeats: int = 3,
        with_app: bool = True, while_running=None, with_library: bool = True) -> None:
    measured: dict = {}
    for name, bundle in (("ours", ours), ("baseline", baseline)):
        if bundle is None or not with_library:
            continue
        # The baseline's uploads are ~100x slower to encode: fewer of them for its memory peak.
        runs = [library_startup(bundle, text_model, queries=100 if name == "ours" else 20) for _ in range(repeats)]
        measured[name] = {key: float(np.median([run[key] for run in runs]))
                          for key in ("ready_s", "import_s", "load_s", "first_query_s", "peak_rss_mib")}
    get = lambda name, key: measured[name][key] if name in measured else None  # noqa: E731
    if with_library:
        results.add(
            Row("serving", "library: fresh process -> first answer (median)", get("ours", "ready_s"),
                get("baseline", "ready_s"), "s", f"imports {get('ours', 'import_s'):.1f} s + Recommender.load "
                f"{get('ours', 'load_s'):.1f} s + first query; {repeats} runs", "lower"),
            Row("serving", "library: peak RSS after 100 hybrid uploads (baseline 20)", get("ours", "peak_rss_mib"),
                get("baseline", "peak_rss_mib"), "MiB", "VmHWM of the process", "lower"),
        )
    if with_app and (ROOT / "app.py").is_file():
        try:
            app = app_startup(ours, text_model, while_running=while_running)
        except (RuntimeError, OSError) as error:
            results.add(Row("serving", "app.py startup", "not measured", None, "", str(error).splitlines()[0][:120]))
            app = {}
        measured["app"] = app
        if app:
            results.add(
                Row("serving", "app.py: start -> page answers", app.get("page_s"), None, "s", "local bundle"),
                Row("serving", "app.py: start -> recommender ready", app.get("ready_s"), None, "s",
                    "'Ready in' in its log"),
                Row("serving", "app.py: start -> thumbnail queries settled", app.get("thumbnails_s"), None, "s",
                    f"on {app.get('thumbnails_backend', '?')} (the ONNX exports run after 'ready', this one first)"),
                Row("serving", "app.py: start -> title queries settled", app.get("titles_s"), None, "s",
                    f"on {app.get('titles_backend', '?')} (the ONNX export runs after 'ready')"),
                Row("serving", "app.py: peak RSS when settled", app.get("peak_rss_after_start_mib"), None, "MiB"),
            )
        if app and app.get("peak_rss_after_queries_mib"):
            results.add(Row("serving", "app.py: peak RSS after the gradio_client queries",
                            app["peak_rss_after_queries_mib"], None, "MiB"))
    results.raw["serving"] = measured
