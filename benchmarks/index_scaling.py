"""Index scaling: search latency and recall@10 against exact search, at 10k to 1M vectors.

Vectors have the real dimensions and are synthesised from the real ones: each is a real vector
plus Gaussian noise with the real vectors' own covariance (scaled by ``sigma``), re-normalised,
so the synthetic catalog keeps the real data's shape instead of being uniform noise. Queries are
fresh perturbations (not in the index). For each size the index is the one the engine chooses
(:func:`recommender.search.index.choose_index_key`, built by :func:`recommender.search.index.build_tuned_index`
as a bundle build does, IVF ``nprobe`` tuned on catalog rows), plus any ``keys`` to compare; its search-time
knob (HNSW ``efSearch`` / IVF ``nprobe``) is swept, the engine's default marked. Latency is one query per
call, as the engine searches; recall uses all queries. RAM is the index's serialised size, a re-ranking
index's float16 vectors counted apart (memory-mapped when served so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import faiss
import numpy as np

from recommender.search import index as engine_index
from recommender.search import large_index

from .common import Results, Row, percentiles

logger = logging.getLogger(__name__)

K = 10
EF_SEARCH = (16, 32, 64, 128, 256)
NPROBE = (1, 4, 8, 16, 32, 64, 128)
#: ``--index-keys`` names for the engine's index families at any size (their factory strings depend on it).
KEY_ALIASES = {"hnsw": lambda count, dimension: engine_index.choose_index_key(engine_index.EXACT_SEARCH_LIMIT + 1),
               "large": large_index.large_index_key}


def synthetic_chunks(real: np.ndarray, count: int, sigma: float, rng: np.random.Generator,
                     chunk: int = 65_536, bases: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """``count`` unit vectors, ``chunk`` rows at a time: real vectors (``bases``, else drawn at random) plus
    ``sigma`` x noise shaped by the real covariance, so a catalog of any size never sits in RAM at once."""
    real = np.asarray(real, dtype=np.float64)
    centred = real - real.mean(axis=0)
    covariance = centred.T @ centred / max(len(real) - 1, 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    transform = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))).T.astype(np.float32)  # z @ transform ~ N(0, C)
    real32 = real.astype(np.float32)
    for start in range(0, count, chunk):
        stop = min(count, start + chunk)
        rows = rng.integers(0, len(real), stop - start) if bases is None else bases[start:stop]
        noise = rng.standard_normal((stop - start, real.shape[1]), dtype=np.float32) @ transform
        out = real32[rows] + np.float32(sigma) * noise
        faiss.normalize_L2(out)
        yield out


def synthesise(real: np.ndarray, count: int, sigma: float, rng: np.random.Generator,
               chunk: int = 65_536) -> np.ndarray:
    """``count`` unit vectors: random real vectors plus ``sigma`` x noise shaped by the real covariance."""
    return np.concatenate(list(synthetic_chunks(real, count, sigma, rng, chunk)), axis=0)


def _knob(index: faiss.Index) -> tuple[str, tuple[int, ...], int] | None:
    """The search-time setting to sweep: name, values, engine default."""
    hnsw = engine_index._hnsw_of(index)
    if hnsw is not None:
        return "efSearch", EF_SEARCH, hnsw.efSearch
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    return "nprobe", tuple(sorted({*(p for p in NPROBE if p <= ivf.nlist), ivf.nprobe})), ivf.nprobe  # + the tuned one


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


def _distinct_keys(keys: list[str], shape: tuple[int, int], engine: bool = True) -> list[str | None]:
    """``None`` (the engine's choice, if ``engine``) and each extra key, aliases resolved, without repeating
    the engine's when it is measured."""
    if not engine:
        return list(keys)
    chosen = engine_index.choose_index_key(*shape)
    return [None, *(key for key in keys if (KEY_ALIASES[key](*shape) if key in KEY_ALIASES else key) != chosen)]


def measure_size(database: np.ndarray, queries: np.ndarray, timed: int, key: str | None = None,
                 exact_timed: int = 30) -> list[dict]:
    """Rows for one database: exact scan, then the chosen index at each knob value."""
    similarities, truth = faiss.knn(queries, database, K, metric=faiss.METRIC_INNER_PRODUCT)
    top1 = float(similarities[:, 0].mean())
    exact = _single_query_latency(lambda q: faiss.knn(q, database, K, metric=faiss.METRIC_INNER_PRODUCT),
                                  queries[:exact_timed])
    rows = [{"index": "exact scan (faiss.knn)", "setting": "", "build_s": 0.0, "recall": 1.0, "top1": top1,
             "ram_mib": database.nbytes / 2 ** 20, "mapped_mib": 0.0, **exact}]
    key = KEY_ALIASES[key](*database.shape) if key in KEY_ALIASES else \
        key or engine_index.choose_index_key(len(database), database.shape[1])
    started = time.perf_counter()
    index, _ = engine_index.build_tuned_index(database, key)  # IVF: nprobe tuned on catalog rows, as a build does
    build_s = time.perf_counter() - started
    ram, mapped = large_index.index_bytes(index)
    memory = {"ram_mib": ram / 2 ** 20, "mapped_mib": mapped / 2 ** 20}
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
                     "recall": _recall(found, truth), "top1": top1, **memory, **latency})
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
        seed: int = 0, keys: list[str] | None = None, engine: bool = True) -> None:
    threads = faiss.omp_get_max_threads()
    table = ["| vectors | source | index | build s | RAM MiB (+ memory-mapped) | setting | p50 ms | p95 ms | "
             "p50 ms, 1 thread | recall@10 |",
             "|---:|---|---|---:|---:|---|---:|---:|---:|---:|"]
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
            for key in _distinct_keys(keys or [], database.shape, engine):
                measured = measure_size(database, query_vectors, timed, key)
                for row in measured:
                    row.update({"vectors": size, "source": name, "synthesis_s": made_s, "key": key or "engine"})
                    mark = " (engine default)" if row.get("default") and row["setting"] and key is None else ""
                    mapped = f" (+ {row['mapped_mib']:.0f})" if row["mapped_mib"] else ""
                    table.append(f"| {size:,} | {name} | {row['index']} | {row['build_s']:.1f} | "
                                 f"{row['ram_mib']:.0f}{mapped} | {row['setting']}{mark} | "
                                 f"{row['p50_ms']:.3f} | {row['p95_ms']:.3f} | {row['p50_ms_1t']:.3f} | "
                                 f"{row['recall']:.3f} |")
                    logger.info("Index scaling row: %s", table[-1])  # long runs: rows as they come
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


def main() -> None:
    """``python -m benchmarks.index_scaling``: this section alone, on a bundle's stored vectors (no model loaded)."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("/work/eval/dev-bundle-pristine"),
                        help="bundle whose text_vectors.npy / image_vectors.npy seed the synthetic catalogs")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dims", help="'text', 'image', '768' (default: all three)")
    parser.add_argument("--keys", help="extra factory strings, ';'-separated ('hnsw', 'large': the engine's families)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--no-engine-choice", action="store_true", help="measure the --keys only")
    parser.add_argument("--sigma", type=float, default=0.5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = Results()
    run(np.load(args.bundle / "image_vectors.npy"), np.load(args.bundle / "text_vectors.npy"), results,
        [int(size) for size in args.sizes.split(",")], args.dims.split(",") if args.dims else None,
        queries=args.queries, sigma=args.sigma, keys=args.keys.split(";") if args.keys else None,
        engine=not args.no_engine_choice)
    for title, table in results.tables.items():
        print(f"\n{title}\n" + "\n".join(table))


if __name__ == "__main__":
    main()
