"""Server CPU per thumbnail and hybrid query, thumbnails on PyTorch next to ONNX Runtime, in one process.

CPU time (all threads of this process), not wall time, so a machine shared with other work moves
both backends little; the backends alternate round by round. Serving's thread policy applies (one
thread per query) and titles run on ONNX Runtime, as the app serves. A second table compares the two
backends on batches of 64 thumbnails with every core (how a bundle is built).

    python -m benchmarks.thumbnail_backends --bundle BUNDLE --text-model PATH [--queries 40 --rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from recommender.engine import Recommender
from recommender.serving.startup import ONNX_PROBE_THUMBNAILS, ONNX_PROBE_TITLES

from .latency import served_threads

BACKENDS = ("pytorch", "onnxruntime")


def cpu_ms_per_call(function: Callable[[object], object], inputs: list) -> float:
    """Process CPU time (user + system, every thread) per call of ``function`` over ``inputs``, in ms."""
    before = time.process_time()
    for item in inputs:
        function(item)
    return 1000 * (time.process_time() - before) / len(inputs)


def probes(recommender: Recommender) -> list[bytes]:
    return [recommender.catalog.image_bytes(row) for row in range(ONNX_PROBE_THUMBNAILS)]


def batch_rates(recommender: Recommender, images: list[bytes], repeats: int = 3, batch_size: int = 64) -> dict:
    """Thumbnails per second (wall) and CPU ms per thumbnail, batches of ``batch_size`` on every core."""
    threads = torch.get_num_threads()
    encoders = {"pytorch": recommender.thumbnail_encoder}
    onnx = type(recommender.thumbnail_encoder)(recommender.thumbnail_encoder.model)
    if onnx.use_onnx_runtime(probes(recommender)):  # threads: torch's, i.e. every core here
        encoders["onnxruntime"] = onnx
    arrays = np.stack([recommender.thumbnail_encoder.prepare(image) for image in images])
    batches = [arrays[start:start + batch_size] for start in range(0, len(arrays), batch_size)]
    measured: dict[str, dict[str, list[float]]] = {name: {"img_s": [], "cpu_ms": []} for name in encoders}
    for repeat in range(repeats):
        for name in encoders if repeat % 2 == 0 else reversed(encoders):
            wall, cpu = time.perf_counter(), time.process_time()
            for batch in batches:
                encoders[name].embed_arrays(batch)
            measured[name]["img_s"].append(len(arrays) / (time.perf_counter() - wall))
            measured[name]["cpu_ms"].append(1000 * (time.process_time() - cpu) / len(arrays))
    return {"threads": threads, "batch_size": batch_size, "images": len(arrays),
            **{name: {key: float(np.median(values)) for key, values in m.items()} for name, m in measured.items()}}


def measure(bundle: Path, text_model: str | None, queries: int = 40, rounds: int = 5, k: int = 10) -> dict:
    """Per-query CPU of each case on each backend (medians over ``rounds``), and the batch comparison."""
    pytorch = Recommender.load(bundle, text_model=text_model)
    count = len(pytorch.catalog)
    rows = [ONNX_PROBE_THUMBNAILS + (step * 7) % (count - ONNX_PROBE_THUMBNAILS) for step in range(queries)]
    batch = batch_rates(pytorch, [pytorch.catalog.image_bytes(row) for row in rows * max(1, 256 // queries)])
    with served_threads():  # as the app serves; the process's thread counts come back afterwards
        return {**_per_query(pytorch, bundle, text_model, rows, queries, rounds, k), "batch": batch}


def _per_query(pytorch: Recommender, bundle: Path, text_model: str | None, rows: list[int], queries: int,
               rounds: int, k: int) -> dict:
    count = len(pytorch.catalog)
    pytorch.title_encoder.use_onnx_runtime(pytorch.catalog.titles[:ONNX_PROBE_TITLES])
    onnx = Recommender.load(bundle, text_model=text_model, title_encoder=pytorch.title_encoder)
    if not onnx.thumbnail_encoder.use_onnx_runtime(probes(onnx)):
        raise RuntimeError("The thumbnail encoder did not export: nothing to compare (see the warning above).")
    recommenders = {"pytorch": pytorch, "onnxruntime": onnx}
    with tempfile.TemporaryDirectory(prefix="thumbnail-backends-") as folder:
        files = []
        for row in rows:  # uploads reach the engine as files, as in the app
            path = Path(folder) / f"{row}.jpg"
            path.write_bytes(pytorch.catalog.image_bytes(row))
            files.append(path)
        titles = [pytorch.catalog.titles[(row + 11) % count] for row in rows]
        arrays = [pytorch.thumbnail_encoder.prepare(path)[None] for path in files]
        cases: dict[str, Callable[[Recommender], tuple[Callable, list]]] = {
            "decode + preprocess": lambda r: (r.thumbnail_encoder.prepare, files),
            "thumbnail encoder": lambda r: (r.thumbnail_encoder.embed_arrays, arrays),
            "image query (upload)": lambda r: (lambda p: r.recommend(image=p, mode="image", k=k), files),
            "hybrid query (upload + title)": lambda r: (
                lambda pair: r.recommend(image=pair[0], title=pair[1], mode="hybrid", k=k), list(zip(files, titles))),
        }
        for recommender in recommenders.values():  # warm-up: first calls allocate
            for make in cases.values():
                function, inputs = make(recommender)
                for item in inputs[:3]:
                    function(item)
        cpu = {case: {name: [] for name in BACKENDS} for case in cases}
        for round_ in range(rounds):
            for name in BACKENDS if round_ % 2 == 0 else reversed(BACKENDS):
                for case, make in cases.items():
                    cpu[case][name].append(cpu_ms_per_call(*make(recommenders[name])))
        same = sum([r.item_id for r in recommenders["pytorch"].recommend(image=path, mode="image", k=k)] ==
                   [r.item_id for r in recommenders["onnxruntime"].recommend(image=path, mode="image", k=k)]
                   for path in files)
    return {"queries": queries, "rounds": rounds, "k": k, "load_average": os.getloadavg(),
            "cpu_ms": {case: {name: float(np.median(values)) for name, values in by.items()}
                       for case, by in cpu.items()},
            "same_image_answers": same}


def tables(result: dict) -> str:
    lines = [(f"Server CPU per query, median of {result['rounds']} alternating rounds x {result['queries']} queries "
             f"(k={result['k']}, one thread per query, titles on ONNX Runtime)"),
             f"{'case':<32}{'PyTorch ms':>12}{'ONNX RT ms':>12}{'saved':>9}", "-" * 65]
    for case, by in result["cpu_ms"].items():
        lines.append(f"{case:<32}{by['pytorch']:>12.2f}{by['onnxruntime']:>12.2f}"
                     f"{by['pytorch'] - by['onnxruntime']:>9.2f}")
    lines.append(f"image queries with the same items in the same order on both: {result['same_image_answers']}"
                 f"/{result['queries']}")
    batch = result["batch"]
    lines += ["", (f"Batches of {batch['batch_size']} ({batch['images']} thumbnails, {batch['threads']} threads; "
              "building a bundle)"), f"{'backend':<14}{'images/s':>10}{'CPU ms/img':>12}", "-" * 36]
    lines += [f"{name:<14}{batch[name]['img_s']:>10.0f}{batch[name]['cpu_ms']:>12.2f}" for name in BACKENDS
              if name in batch]
    return "\n".join(lines)


def suite_rows(result: dict) -> list:
    """Rows for ``python -m benchmarks``' table: ours = ONNX Runtime, baseline column = PyTorch."""
    from .common import Row

    cpu = result["cpu_ms"]
    return [Row("throughput", f"server CPU per {case}: ONNX Runtime vs PyTorch thumbnails", cpu[case]["onnxruntime"],
                cpu[case]["pytorch"], "ms", f"in process, median of {result['rounds']} alternating rounds", "lower")
            for case in ("thumbnail encoder", "image query (upload)", "hybrid query (upload + title)")]


def main(argv: list[str] | None = None) -> int:
    from .__main__ import default_text_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--text-model", default=default_text_model())
    parser.add_argument("--queries", type=int, default=40, help="queries per case and round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default: %(default)s)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    before = os.getloadavg()[0]
    result = measure(args.bundle, args.text_model, args.queries, args.rounds)
    print(tables(result))
    print(f"\nload average (1 min): {before:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
