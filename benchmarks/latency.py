"""Query latency in process: uploads (image / title / both) and catalog items, per mode."""

from __future__ import annotations

import numpy as np

from recommender.engine import Recommender

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


def run(ours: Recommender, baseline: Recommender | None, results: Results, queries: int = 200, seed: int = 0,
        baseline_queries: int = 40) -> None:
    """Fewer queries for the baseline (``baseline_queries``): its thumbnail encoder is far slower."""
    measured = {"ours": measure(ours, queries, seed)}
    if baseline is not None:
        measured["baseline"] = measure(baseline, min(queries, baseline_queries), seed)
    for case, stats in measured["ours"].items():
        other = measured.get("baseline", {}).get(case)
        for percentile in ("p50", "p95"):
            results.add(Row("latency (in process)", f"{case} {percentile}", stats[f"{percentile}_ms"],
                            other[f"{percentile}_ms"] if other else None, "ms",
                            f"k={K}, {stats['n']} queries" + (f" (baseline {other['n']}); baseline = its encoder "
                                                               "through this engine" if other and percentile == "p50"
                                                               else ""), "lower"))
    results.raw["latency"] = measured
