"""Query latency in process: uploads (image / title / both) and catalog items, per mode.

Measured as the app serves: one torch / FAISS thread per query (``use_one_thread_per_query``), and
title queries on ONNX Runtime once its export has reproduced PyTorch (``TitleEncoder.use_onnx_runtime``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np
import torch

from recommender.engine import Recommender
from recommender.serving.startup import ONNX_PROBE_TITLES, use_one_thread_per_query

from .common import Results, Row, percentiles, time_each

K = 10


def measure(recommender: Recommender, queries: int, seed: int) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(recommender), size=min(queries, len(recommender)), replace=False).tolist()
    images = {row: recommender.catalog.image_bytes(row) for row in rows}
    titles = {row: recommender.catalog.titles[row] for row in rows}
    ids = {row: recommender.catalog.item_ids[row] for row in rows}
    cases = {
        "image (upload)": lambda row: recommender.recommend(image=images[row], mode="image", k=K),
        "text (title)": lambda row: recommender.recommend(title=titles[row], mode="text", k=K),
        "hybrid (upload + title)": lambda row: recommender.recommend(image=images[row], title=titles[row],
                                                                     mode="hybrid", k=K),
        "image (by item)": lambda row: recommender.recommend(item_id=ids[row], mode="image", k=K),
        "text (by item)": lambda row: recommender.recommend(item_id=ids[row], mode="text", k=K),
        "hybrid (by item)": lambda row: recommender.recommend(item_id=ids[row], mode="hybrid", k=K),
    }
    return {name: percentiles(time_each(case, rows)) for name, case in cases.items()}


@contextmanager
def served_threads() -> Iterator[None]:
    """One thread per query, as in the app; the process's thread counts come back afterwards."""
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    use_one_thread_per_query()
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        faiss.omp_set_num_threads(faiss_threads)


def run(ours: Recommender, baseline: Recommender | None, results: Results, queries: int = 200, seed: int = 0,
        baseline_queries: int = 40) -> None:
    """Fewer queries for the baseline (``baseline_queries``): its thumbnail encoder is far slower."""
    ours.title_encoder.use_onnx_runtime(ours.catalog.titles[:ONNX_PROBE_TITLES])
    if baseline is not None and baseline.title_encoder.model_name_or_path == ours.title_encoder.model_name_or_path:
        baseline.title_encoder = ours.title_encoder  # the same text model: one export, not two
    elif baseline is not None:
        baseline.title_encoder.use_onnx_runtime(baseline.catalog.titles[:ONNX_PROBE_TITLES])
    with served_threads():
        measured = {"ours": measure(ours, queries, seed)}
        if baseline is not None:
            measured["baseline"] = measure(baseline, min(queries, baseline_queries), seed)
    for case, stats in measured["ours"].items():
        other = measured.get("baseline", {}).get(case)
        for percentile in ("p50", "p95"):
            results.add(Row("latency (in process)", f"{case} {percentile}", stats[f"{percentile}_ms"],
                            other[f"{percentile}_ms"] if other else None, "ms",
                            f"k={K}, {stats['n']} queries, 1 thread, titles on {ours.title_encoder.backend}" + (f" (baseline {other['n']}); baseline = its encoder "
                                                               "through this engine" if other and percentile == "p50"
                                                               else ""), "lower"))
    results.raw["latency"] = measured
