"""Live catalog: adding videos against a full rebuild, what a push then sends, and swaps under load.

- **add vs rebuild**: ``train add`` of N videos (a sample of ``--data`` under new ids) to a copy of
  the bundle, timed next to a full ``train build`` of the same resulting catalog with the bundle's
  training epochs, in the same run;
- **push**: the bytes a ``train push`` after that add uploads, against the whole bundle (the
  repo is taken to hold the bundle as it was before the add);
- **swap under load**: ``app.py --watch`` serving the bundle while callers send mixed requests
  through ``gradio_client``; the served folder is switched to another revision (50 more videos)
  and back several times (each a complete bundle put in place by renames, so nothing but the
  app's own reload runs meanwhile). Latency of requests sent while a revision loads and swaps, next to the steady state,
  and every failed request counted.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .common import Results, Row, free_port, percentiles

SWAP_TIMEOUT_S = 600.0


def new_videos(data: Path, count: int, output: Path, seed: int = 0, suffix: str = "-live") -> Path:
    """``count`` random rows of ``data`` as videos the bundle does not have: ids get ``suffix``."""
    import datasets

    table = datasets.Dataset.from_parquet(str(data))
    rows = np.sort(np.random.default_rng(seed).permutation(len(table))[:count])
    id_column = next(name for name in ("item_id", "id", "video_id") if name in table.column_names)
    table.select(rows).map(lambda row: {id_column: row[id_column] + suffix}).to_parquet(str(output))
    return output


def as_remote(folder: Path) -> dict:
    """What a Hub repo holding ``folder`` lists (``RepoFile`` by path): the repo before a push."""
    from huggingface_hub.hf_api import RepoFile

    from recommender.data.bundle import sha256_of
    from recommender.data.hub_sync import git_blob_id, local_files

    return {name: RepoFile(path=name, size=path.stat().st_size, oid=git_blob_id(path),
                           lfs={"size": path.stat().st_size, "oid": sha256_of(path), "pointerSize": 134})
            for name, path in local_files(folder).items()}


class _Remote:
    """An ``HfApi`` stand-in whose repo holds given files: :func:`plan_push` against a known state."""

    def __init__(self, files: dict):
        self.files = files

    def list_repo_tree(self, *args: object, **kwargs: object) -> list:
        return list(self.files.values())


def add_and_rebuild(bundle: Path, data: Path, text_model: str | None, work: Path, count: int,
                    rebuild: bool) -> dict:
    """Time ``train add`` of ``count`` new videos to a copy of ``bundle``, the push it makes, and a full rebuild."""
    from recommender.data.hub_sync import plan_push
    from train.build import build_bundle
    from train.live import add_items
    from train.trainer import TrainingConfig

    work.mkdir(parents=True, exist_ok=True)
    source = new_videos(data, count, work / "new-videos.parquet")
    live = work / "added"
    shutil.rmtree(live, ignore_errors=True)
    shutil.copytree(bundle, live)
    before = as_remote(live)
    started = time.perf_counter()
    update = add_items(live, source, text_model=text_model, show_progress_bar=False)
    measured = {"add_s": time.perf_counter() - started, "added": update.rows, "items": update.items}
    plan = plan_push(_Remote(before), live, "benchmark/bundle")
    measured.update(push_bytes=plan.upload_bytes, bundle_bytes=plan.bundle_bytes, push_files=len(plan.upload))
    if rebuild:
        import datasets

        manifest = json.loads((bundle / "manifest.json").read_text())
        training = manifest["image_encoder"].get("training") or {}
        epochs = len(training.get("epoch_seconds") or []) or TrainingConfig.epochs
        everything = work / "rebuild-catalog.parquet"
        datasets.concatenate_datasets([datasets.Dataset.from_parquet(str(data)),
                                       datasets.Dataset.from_parquet(str(source))]).to_parquet(str(everything))
        started = time.perf_counter()
        build_bundle(everything, work / "rebuilt", text_model=text_model or manifest["text_model"]["name"],
                     training=TrainingConfig(epochs=epochs), overwrite=True, show_progress_bar=False)
        measured.update(rebuild_s=time.perf_counter() - started, rebuild_epochs=epochs)
    return measured


def linked_copy(source: Path, target: Path) -> Path:
    """A copy of a bundle made of hard links: instant, and the source is never written through it."""
    shutil.rmtree(target, ignore_errors=True)
    return Path(shutil.copytree(source, target, copy_function=os.link))


def swap_under_load(first: Path, second: Path, text_model: str | None, work: Path, callers: int = 4,
                    steady_s: float = 20.0, swaps: int = 4, watch_s: float = 1.0) -> dict:
    """Serve ``first`` with ``--watch``, switch the folder between ``second`` and ``first`` ``swaps`` times
    under load; latency while a revision loads and swaps vs steady, errors, and each swap's duration."""
    from gradio_client import Client

    from train.build import replace_folder

    from .latency_gradio import running, sample_queries
    from .load_test import KINDS, Request, call

    served = linked_copy(first, work / "served")
    port = free_port()
    command = [sys.executable, "app.py", "--bundle", str(served), "--host", "127.0.0.1", "--port", str(port),
               "--watch", str(watch_s), "--query-cache", "0"] + (["--text-model", text_model] if text_model else [])
    samples: list[tuple[float, float, str, str | None]] = []  # start, seconds, phase, error
    phase = ["steady"]
    stop = threading.Event()
    with running(command, f"http://127.0.0.1:{port}/") as url, tempfile.TemporaryDirectory() as folder:
        queries = sample_queries(url, 40, Path(folder))
        monitor = Client(url, verbose=False, download_files=False)

        def caller(number: int) -> None:
            client = Client(url, verbose=False, download_files=False)
            step = number
            while not stop.is_set():
                request = Request(KINDS[step % len(KINDS)], queries[step % len(queries)])
                began, error = time.perf_counter(), None
                now = phase[0]
                try:
                    call(client, request, 10)
                except Exception as failure:  # noqa: BLE001 - counted
                    error = f"{type(failure).__name__}: {failure}"
                samples.append((began, time.perf_counter() - began, now, error))
                step += callers

        threads = [threading.Thread(target=caller, args=(number,)) for number in range(callers)]
        for thread in threads:
            thread.start()
        durations = []
        try:
            revision = monitor.predict(api_name="/info")["revision"]["id"]
            for swap in range(swaps):
                time.sleep(steady_s)
                target = second if swap % 2 == 0 else first
                staged = linked_copy(target, work / "staged")
                phase[0] = "loading + swap"
                published = time.perf_counter()
                replace_folder(staged, served)
                while monitor.predict(api_name="/info")["revision"]["id"] == revision:
                    if time.perf_counter() - published > SWAP_TIMEOUT_S:
                        raise TimeoutError(f"the app did not swap to {target} within {SWAP_TIMEOUT_S:.0f} s")
                    time.sleep(0.2)
                durations.append(time.perf_counter() - published)
                phase[0] = "steady"
                revision = monitor.predict(api_name="/info")["revision"]["id"]
            time.sleep(steady_s)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    by_phase = {name: percentiles([seconds for _, seconds, now, error in samples if now == name and not error])
                for name in ("steady", "loading + swap")}
    errors = [error for *_, error in samples if error]
    return {"phases": by_phase, "errors": len(errors), "first_errors": errors[:3], "requests": len(samples),
            "swap_s": durations, "callers": callers}


def run(bundle: Path, data: Path | None, text_model: str | None, results: Results, work: Path, count: int = 1000,
        rebuild: bool = True, swaps: int = 4) -> None:
    """The ``live`` section of ``python -m benchmarks``."""
    from train.live import add_items

    if data is None:
        raise ValueError("the live section needs --data: the new videos come from it")
    work = work / "live"
    measured = add_and_rebuild(bundle, Path(data), text_model, work, count, rebuild)
    results.add(
        Row("live", f"add {measured['added']:,} videos to the bundle", measured["add_s"], measured.get("rebuild_s"), "s",
            f"vs a full rebuild of the same {measured['items']:,}-video catalog ({measured.get('rebuild_epochs')} "
            "epochs)" if rebuild else "no rebuild timed (--no-live-rebuild)", "lower"),
        Row("live", "push after that add", measured["push_bytes"] / 1e6, measured["bundle_bytes"] / 1e6, "MB",
            f"{measured['push_files']} changed files vs the whole bundle", "lower"),
    )
    # Two revisions to switch between: the bundle after the add, and the same with 50 more videos
    # (none removed, so every query the callers send is valid in both).
    other = linked_copy(work / "added", work / "more")
    add_items(other, new_videos(Path(data), 50, work / "more-videos.parquet", seed=1, suffix="-more"),
              text_model=text_model, show_progress_bar=False)
    swapping = swap_under_load(work / "added", other, text_model, work, swaps=swaps)
    steady, during = swapping["phases"]["steady"], swapping["phases"]["loading + swap"]
    results.add(
        Row("live", "request p50 / p95 while a new revision loads and swaps",
            f"{during['p50_ms']:.0f} / {during['p95_ms']:.0f} ms", f"{steady['p50_ms']:.0f} / {steady['p95_ms']:.0f} ms",
            "", f"baseline = steady state; {swapping['callers']} callers, {during['n']} + {steady['n']} requests"),
        Row("live", "failed requests across the swaps", swapping["errors"], None, "",
            f"of {swapping['requests']}; {len(swapping['swap_s'])} swaps"),
        Row("live", "publish to serving the new revision (median)", statistics.median(swapping["swap_s"]), None, "s",
            "app.py --watch 1: poll, load in the background, swap"),
    )
    results.raw["live"] = {**measured, "swap": swapping}
