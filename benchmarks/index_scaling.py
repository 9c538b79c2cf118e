"""Index scaling: search latency and recall@10 against exact search, at 10k to 1M vectors.

Vectors have the real dimensions and are synthesised from the real ones: each is a real vector
plus Gaussian noise with the real vectors' own covariance (scaled by ``sigma``), re-normalised,
so the synthetic catalog keeps the real data's shape instead of being uniform noise. Queries are
fresh perturbations (not in the index). For each size the index is the one the engine chooses
(:func:`recommender.search.index.choose_index_key`, built by :func:`recommender.search.index.build_index` with
its constants); its search-time knob (HNSW ``efSearch`` / IVF ``nprobe``) is swept, the engine's
default marked. Latency is one query per call, as the engine searches; recall uses all queries.
"""

from __future__ import annotations

import logging
import time

import faiss
import numpy as np

from recommender.search import index as engine_index

from .common import Results, Row, percentiles

logger = logging.getLogger(__name__)

K = 10
EF_SEARCH = (16, 32, 64, 128, 256)
NPROBE = (1, 4, 8, 16, 32, 64, 128)


def synthesise(real: np.ndarray, count: int, sigma: float, rng: np.random.Generator,
               chunk: int = 65_536) -> np.ndarray:
    """``count`` unit vectors: random real vectors plus ``sigma`` x noise shaped by the real covariance."""
    real = np.asarray(real, dtype=np.float64)
    centred = real - real.mean(axis=0)
    covariance = centred.T @ centred / max(len(real) - 1, 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    transform = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))).T.astype(np.float32)  # z @ transform ~ N(0, C)
    real32 = real.astype(np.float32)
    out = np.empty((count, real.shape[1]), dtype=np.float32)
    for start in range(0, count, chunk):
        stop = min(count, start + chunk)
        bases = rng.integers(0, len(real), stop - start)
        noise = rng.standard_normal((stop - start, real.shape[1]), dtype=np.float32) @ transform
        out[start:stop] = real32[bases] + np.float32(sigma) * noise
    faiss.normalize_L2(out)
    return out


def _knob(index: faiss.Index) -> tuple[str, tuple[int, ...], int] | None:
    """The search-time setting to sweep: name, values, engine default."""
    hnsw = engine_index._hnsw_of(index)
    if hnsw is not None:
        return "efSearch", EF_SEARCH, hnsw.efSearch
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    return "nprobe", tuple(p for p in NPROBE if p <= ivf.nlist), ivf.nprobe


def _set(index: faiss.Index, name: str, value: int) -> None:
    if name == "efSearch":
        engine_index._hnsw_of(index).efSearch = value
    else:
        faiss.extract_index_ivf(index).nprobe = value


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth)]))


def _single_query_latency(search, queries: np.ndarray) -> dict:
    """p50/p95 of one query per call, with FAISS's default OpenMP threads and with one thread."""
    out = {}
    default_threads = faiss.omp_get_max_threads()
    for suffix, threads in (("", default_threads), ("_1t", 1)):
        faiss.omp_set_num_threads(threads)
        try:
            durations = []
            for query in queries:
                started = time.perf_counter()
                search(query[None])
                durations.append(time.perf_counter() - started)
        finally:
            faiss.omp_set_num_threads(default_threads)
        stats = percentiles(durations[2:] if len(durations) > 5 else durations)
        out.update({f"p50_ms{suffix}": stats["p50_ms"], f"p95_ms{suffix}": stats["p95_ms"]})
    out["threads"] = default_threads
    return out


def measure_size(database: np.ndarray, queries: np.ndarray, timed: int, key: str | None = None,
                 exact_timed: int = 30) -> list[dict]:
    """Rows for one database: exact scan, then the chosen index at each knob value."""
    similarities, truth = faiss.knn(queries, database, K, metric=faiss.METRIC_INNER_PRODUCT)
    top1 = float(similarities[:, 0].mean())
    exact = _single_query_latency(lambda q: faiss.knn(q, database, K, metric=faiss.METRIC_INNER_PRODUCT),
                                  queries[:exact_timed])
    rows = [{"index": "exact scan (faiss.knn)", "setting": "", "build_s": 0.0, "recall": 1.0, "top1": top1, **exact}]
    key = key or engine_index.choose_index_key(len(database))
    started = time.perf_counter()
    index = engine_index.build_index(database, key)
    build_s = time.perf_counter() - started
    name = engine_index.describe_index(index)
    knob = _knob(index)
    settings = [(None, None)] if knob is None else [(knob[0], value) for value in knob[1]]
    default = knob[2] if knob else None
    for knob_name, value in settings:
        if knob_name:
            _set(index, knob_name, value)
        found = index.search(queries, K)[1]
        latency = _single_query_latency(lambda q: index.search(q, K), queries[:timed])
        rows.append({"index": f"{key} ({name})", "setting": f"{knob_name}={value}" if knob_name else "",
                     "default": value == default if knob_name else True, "build_s": build_s,
                     "recall": _recall(found, truth), "top1": top1, **latency})
    return rows


def sources(ours_image: np.ndarray, ours_text: np.ndarray) -> dict[str, np.ndarray]:
    """Real vectors per dimension measured: text, image and 768-d (e5-base size)."""
    both = np.concatenate([ours_text, ours_image], axis=1)
    if both.shape[1] >= 768:
        wide = both[:, :768]
    else:
        wide = np.pad(both, ((0, 0), (0, 768 - both.shape[1])))
    out = {"text": (f"text {ours_text.shape[1]}-d", ours_text),
           "image": (f"image {ours_image.shape[1]}-d", ours_image),
           "768": ("768-d (e5-base size: text + image vectors side by side)", wide)}
    return {key: (name, np.ascontiguousarray(vectors, dtype=np.float32)) for key, (name, vectors) in out.items()}


def run(image_vectors: np.ndarray, text_vectors: np.ndarray, results: Results, sizes: list[int],
        dimensions: list[str] | None = None, queries: int = 500, timed: int = 200, sigma: float = 0.5,
        seed: int = 0, keys: list[str] | None = None) -> None:
    threads = faiss.omp_get_max_threads()
    table = ["| vectors | source | index | build s | setting | p50 ms | p95 ms | p50 ms, 1 thread | recall@10 |",
             "|---:|---|---|---:|---|---:|---:|---:|---:|"]
    raw = []
    for key_name, (name, real) in sources(image_vectors, text_vectors).items():
        if dimensions and key_name not in dimensions:
            continue
        rng = np.random.default_rng(seed)
        query_vectors = synthesise(real, queries, sigma, rng)
        real_top1 = float(np.sort(real @ real.T, axis=1)[:, -2].mean()) if len(real) <= 20_000 else float("nan")
        for size in sizes:
            logger.info("Index scaling: %s, %d vectors", name, size)
            started = time.perf_counter()
            database = synthesise(real, size, sigma, np.random.default_rng(seed + size))
            made_s = time.perf_counter() - started
            for key in [None, *(keys or [])]:
                measured = measure_size(database, query_vectors, timed, key)
                for row in measured:
                    row.update({"vectors": size, "source": name, "synthesis_s": made_s, "key": key or "engine"})
                    mark = " (engine default)" if row.get("default") and row["setting"] and key is None else ""
                    table.append(f"| {size:,} | {name} | {row['index']} | {row['build_s']:.1f} | {row['setting']}{mark} | "
                                 f"{row['p50_ms']:.3f} | {row['p95_ms']:.3f} | {row['p50_ms_1t']:.3f} | "
                                 f"{row['recall']:.3f} |")
                raw.extend(measured)
                chosen = next((r for r in measured[1:] if r.get("default")), None)
                if chosen and key is None:
                    results.add(Row("index scaling", f"{size:,} x {name.split(' (')[0]}: {chosen['index']} "
                                    f"{chosen['setting']}", f"p50 {chosen['p50_ms']:.2f} ms (1 thread "
                                    f"{chosen['p50_ms_1t']:.2f}), recall@10 {chosen['recall']:.3f}",
                                    f"exact scan p50 {measured[0]['p50_ms']:.2f} ms", "",
                                    f"build {chosen['build_s']:.0f} s"))
            del database
        raw.append({"source": name, "real_mean_top1_similarity": real_top1, "sigma": sigma,
                    "synthetic_query_top1_similarity": {r["vectors"]: r["top1"] for r in raw
                                                        if r.get("source") == name and "top1" in r}})
    results.tables[f"Index scaling (vectors synthesised from the real ones, sigma {sigma}; one query per search call, "
                   f"FAISS default {threads} OpenMP threads unless said)"] = table
    results.raw["index_scaling"] = raw
