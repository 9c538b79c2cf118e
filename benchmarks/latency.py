"""Query latency in process: uploads (image / title / both) and catalog items, per mode, and catalog items
with every recommendation control off, then on at once (:func:`all_controls`), side by side in one run.

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
#: The metadata column the controls filter and cap on (the dev catalog's channel).
CONTROL_COLUMN = "channel"


def measure(recommender: Recommender, queries: int, seed: int) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(recommender), size=min(queries, len(recommender)), replace=False).tolist()
    images = {row: recommender.catalog.image_bytes(row) for row in rows}
    titles = {row: recommender.catalog.titles[row] for row in rows}
    ids = {row: recommender.catalog.item_ids[row] for row in rows}
    with_controls = CONTROL_COLUMN in recommender.catalog.metadata_columns
    controls = {row: all_controls(recommender, row, rng) for row in rows} if with_controls else {}
    cases = {
        "image (upload)": lambda row: recommender.recommend(image=images[row], mode="image", k=K),
        "text (title)": lambda row: recommender.recommend(title=titles[row], mode="text", k=K),
        "hybrid (upload + title)": lambda row: recommender.recommend(image=images[row], title=titles[row],
                                                                     mode="hybrid", k=K),
        "image (by item)": lambda row: recommender.recommend(item_id=ids[row], mode="image", k=K),
        "text (by item)": lambda row: recommender.recommend(item_id=ids[row], mode="text", k=K),
        "hybrid (by item)": lambda row: recommender.recommend(item_id=ids[row], mode="hybrid", k=K),
    }
    for mode in ("image", "text", "hybrid") if with_controls else ():
        cases[f"{mode} (by item, controls off)"] = (
            lambda row, mode=mode: recommender.recommend(item_id=ids[row], mode=mode, k=K, dedupe=False))
        cases[f"{mode} (by item, every control on)"] = (
            lambda row, mode=mode: recommender.recommend(item_id=ids[row], mode=mode, k=K, **controls[row]))
    return {name: percentiles(time_each(case, rows)) for name, case in cases.items()}


def all_controls(recommender: Recommender, row: int, rng: np.random.Generator, column: str = CONTROL_COLUMN) -> dict:
    """Every control of ``recommend`` at once for catalog ``row``: other values of ``column`` than its own
    (``where``, "more from elsewhere"), diversity 0.3, at most 2 per value, dedupe, page 2, 5 random items excluded."""
    value = recommender.catalog.metadata(row).get(column)
    others = rng.choice(len(recommender), size=min(5, len(recommender)), replace=False).tolist()
    return {"where": {column: {"not": [value]}}, "diversity": 0.3, "max_per": {column: 2}, "dedupe": True,
            "offset": K, "exclude": [recommender.catalog.item_ids[other] for other in others if other != row]}


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
        if "control" in case:
            for percentile in ("p50", "p95"):
                results.add(Row("latency (in process)", f"{case} {percentile}", stats[f"{percentile}_ms"], None, "ms",
                                f"k={K}, {stats['n']} queries, 1 thread" + (
                                    "; where channel != the item's, diversity 0.3, max_per channel 2, dedupe, "
                                    "offset 10, 5 items excluded" if "every control on" in case else "")))
            continue
        for percentile in ("p50", "p95"):
            results.add(Row("latency (in process)", f"{case} {percentile}", stats[f"{percentile}_ms"],
                            other[f"{percentile}_ms"] if other else None, "ms",
                            f"k={K}, {stats['n']} queries, 1 thread, titles on {ours.title_encoder.backend}" + (f" (baseline {other['n']}); baseline = its encoder "
                                                               "through this engine" if other and percentile == "p50"
                                                               else ""), "lower"))
    results.raw["latency"] = measured
