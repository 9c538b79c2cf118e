"""Ranking metrics with a label as relevance: precision@k and nDCG@k, with their random and best values.

A recommendation is relevant when it shares the query's label (e.g. the same channel). Queries
are catalog items (:func:`ranking_report`: the query item itself is never a candidate) or
uploads from outside the catalog (:func:`upload_ranking_report`). Every query counts, including
those whose label has no (other) item in the catalog: their precision and nDCG are 0 whatever the
ranking, which the ceiling shows. Rankings are ``(queries, k)`` arrays of catalog rows, padded
with ``-1`` (never relevant).
"""

from __future__ import annotations

import numpy as np


def encode_labels(values: list | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Label values -> integer codes (``-1`` for a missing label, relevant to nothing) and the names."""
    names: dict[str, int] = {}
    codes = np.empty(len(values), dtype=np.int64)
    for position, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
            codes[position] = -1
            continue
        codes[position] = names.setdefault(str(value), len(names))
    return codes, list(names)


def label_counts(labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """Per query label, how many catalog items carry it (0 for a missing label)."""
    labels, query_labels = np.asarray(labels), np.asarray(query_labels)
    sizes = np.bincount(labels[labels >= 0],
                        minlength=max(int(labels.max(initial=-1)), int(query_labels.max(initial=-1))) + 1)
    return np.where(query_labels >= 0, sizes[np.maximum(query_labels, 0)], 0).astype(np.int64)


def relevant_counts(labels: np.ndarray, query_rows: np.ndarray) -> np.ndarray:
    """Per query, how many *other* catalog items share its label."""
    counts = label_counts(labels, np.asarray(labels)[query_rows])
    return np.maximum(counts - 1, 0)


def relevance(ranked_rows: np.ndarray, labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """Boolean ``(queries, k)``: does the item at each rank share the query's label?"""
    ranked_rows = np.asarray(ranked_rows)
    labels = np.asarray(labels)
    item_labels = np.where(ranked_rows >= 0, labels[np.maximum(ranked_rows, 0)], -2)
    query_labels = np.asarray(query_labels)[:, None]
    return (item_labels == query_labels) & (query_labels >= 0) & (ranked_rows >= 0)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def precision_at_k(relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-query share of relevant items among the first ``k`` (missing ranks count as misses)."""
    return relevant[:, :k].sum(axis=1) / k


def ideal_dcg(n_relevant: np.ndarray, k: int) -> np.ndarray:
    cumulative = np.concatenate([[0.0], np.cumsum(_discounts(k))])
    return cumulative[np.minimum(np.asarray(n_relevant), k)]


def ndcg_at_k(relevant: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-query binary nDCG@k; 0 for a query with nothing relevant to find."""
    top = relevant[:, :k].astype(np.float64)
    dcg = (top * _discounts(top.shape[1])[None, :]).sum(axis=1)
    ideal = ideal_dcg(n_relevant, k)
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def random_expectation(n_relevant: np.ndarray, n_candidates: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected per-query precision@k and nDCG@k of a uniformly random ranking of ``n_candidates`` items."""
    share = np.asarray(n_relevant, dtype=np.float64) / max(n_candidates, 1)
    ideal = ideal_dcg(n_relevant, k)
    dcg = share * _discounts(min(k, n_candidates)).sum()
    return share, np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def ceiling(n_relevant: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best possible per-query precision@k and nDCG@k (all relevant items first)."""
    n_relevant = np.asarray(n_relevant)
    return np.minimum(n_relevant, k) / k, (n_relevant > 0).astype(np.float64)


def _report(ranked_rows: np.ndarray, labels: np.ndarray, query_labels: np.ndarray, n_relevant: np.ndarray,
            ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    relevant = relevance(ranked_rows, labels, query_labels)
    report = {}
    for k in ks:
        report[f"P@{k}"] = precision_at_k(relevant, k)
        report[f"nDCG@{k}"] = ndcg_at_k(relevant, n_relevant, k)
    return report


def _references(n_relevant: np.ndarray, n_candidates: int, ks: tuple[int, ...]) -> dict[str, dict[str, np.ndarray]]:
    random, best = {}, {}
    for k in ks:
        random[f"P@{k}"], random[f"nDCG@{k}"] = random_expectation(n_relevant, n_candidates, k)
        best[f"P@{k}"], best[f"nDCG@{k}"] = ceiling(n_relevant, k)
    return {"random": random, "ceiling": best}


def ranking_report(ranked_rows: np.ndarray, labels: np.ndarray, query_rows: np.ndarray,
                   ks: tuple[int, ...] = (5, 10)) -> dict[str, np.ndarray]:
    """Per-query ``P@k`` and ``nDCG@k`` arrays for each ``k`` (``ranked_rows`` needs ``max(ks)`` columns),
    for catalog rows asked as queries."""
    return _report(ranked_rows, labels, np.asarray(labels)[query_rows], relevant_counts(labels, query_rows), ks)


def reference_report(labels: np.ndarray, query_rows: np.ndarray, ks: tuple[int, ...] = (5, 10),
                     candidates: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per-query random and ceiling values of every metric in :func:`ranking_report`; ``candidates``:
    items a query can be answered with (default: every other catalog row)."""
    candidates = len(labels) - 1 if candidates is None else candidates
    return _references(relevant_counts(labels, query_rows), candidates, ks)


def upload_ranking_report(ranked_rows: np.ndarray, labels: np.ndarray, query_labels: np.ndarray,
                          ks: tuple[int, ...] = (5, 10)) -> dict[str, np.ndarray]:
    """:func:`ranking_report` for queries from outside the catalog, given by their labels
    (``labels`` holds the catalog's; every catalog item with the query's label is relevant)."""
    return _report(ranked_rows, labels, query_labels, label_counts(labels, query_labels), ks)


def upload_reference_report(labels: np.ndarray, query_labels: np.ndarray,
                            ks: tuple[int, ...] = (5, 10)) -> dict[str, dict[str, np.ndarray]]:
    """Per-query random and ceiling values of every metric in :func:`upload_ranking_report`."""
    return _references(label_counts(labels, query_labels), len(labels), ks)


def recall_at_k(ranked_rows: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of queries whose target row is among the first ``k`` results."""
    ranked_rows = np.asarray(ranked_rows)[:, :k]
    return float((ranked_rows == np.asarray(targets)[:, None]).any(axis=1).mean()) if len(ranked_rows) else float("nan")


def mean(values: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(np.mean(array)) if len(array) else float("nan") for name, array in values.items()}


def per_label_means(per_query: dict[str, dict[str, np.ndarray]], labels: np.ndarray, label_names: list[str],
                    metric: str, largest: int = 8, min_items: int = 10) -> dict[str, dict[str, float]]:
    """Mean ``metric`` per mode (``per_query``'s keys) and item count (``items``) for the largest labels
    (at most ``largest``, each with ``min_items`` or more), the rest pooled as ``other (N labels)``."""
    codes, sizes = np.unique(labels[labels >= 0], return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    big = codes[order[:largest]][sizes[order[:largest]] >= min_items]
    groups = {label_names[int(code)]: labels == code for code in big}
    rest = ~np.isin(labels, big)
    if rest.any():
        groups[f"other ({len(codes) - len(big)} labels)"] = rest
    return {name: {"items": int(mask.sum()), **{mode: float(np.mean(values[metric][mask]))
                                                for mode, values in per_query.items()}}
            for name, mask in groups.items()}
