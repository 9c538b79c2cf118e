"""Index at scale: a catalog of ``--vectors`` title-like vectors (10 million by default), built, tuned and
searched as the engine does above :data:`~recommender.search.large_index.LARGE_INDEX_THRESHOLD`.

Text vectors are the dev bundle's real 384-d title vectors plus noise shaped by their covariance
(:func:`benchmarks.index_scaling.synthetic_chunks`); the image side is the real 864-d image vectors
projected on their top ``image_dim`` principal axes, plus noise the same way, drawn from the *same* real
item as the row's title vector so the two modalities agree as in a real catalog. Vectors are generated
chunk by chunk into float16 ``.npy`` files in a scratch folder under ``/tmp`` (memory-mapped afterwards,
deleted at the end), never all in RAM.

Each index is trained on a sample, filled shard by shard from the memory-mapped vectors and written one
shard file at a time, read back with its float16 re-ranking vectors memory-mapped, and tuned on 200
held-out rows. Measured on 200 other held-out rows: recall@10 against exact search (computed chunk by
chunk over the stored vectors, each query's own row left out), one-thread p50 of a k = 10 query, and a
hybrid query (both indexes searched, candidates re-scored exactly on both modalities from the
memory-mapped vectors, fused: the engine's own :func:`recommender.search.ranking.hybrid_candidates`).
Index RAM is the serialised size of what stays in RAM (codes, ids, centroids), the float16 re-ranking
vectors counted apart; a one-thread exact scan of 20,000 vectors, timed in the same run, tells how loaded
the machine was (2.0 ms on a quiet one).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from recommender.search import large_index
from recommender.search.config import SearchConfig
from recommender.search.ranking import fuse_candidates, hybrid_candidates

from .common import Results, Row, percentiles
from .index_scaling import synthetic_chunks

logger = logging.getLogger(__name__)

K = 10
SHARD_ROWS = 2_000_000  # build RAM per shard: its float16 re-ranking copy plus codes
SWEEP = (8, 16, 32, 64, 128)
REFERENCE_ROWS = 20_000


def principal_projection(vectors: np.ndarray, dimension: int) -> np.ndarray:
    """``vectors`` on their top ``dimension`` principal axes, re-normalised: a smaller-d image side."""
    centred = (vectors - vectors.mean(axis=0)).astype(np.float64)
    _, axes = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    projected = np.ascontiguousarray(centred @ axes[:, ::-1][:, :dimension], dtype=np.float32)
    faiss.normalize_L2(projected)
    return projected


def write_vectors(real: dict[str, np.ndarray], count: int, folder: Path, sigma: float, seed: int,
                  chunk: int) -> dict[str, np.ndarray]:
    """Generate each modality's ``count`` vectors chunk by chunk into a float16 ``.npy`` file; return them memory-mapped."""
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, len(next(iter(real.values()))), count)
    paths = {}
    for offset, (name, source) in enumerate(real.items()):
        path = folder / f"{name}.f16.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(count, source.shape[1]))
        start = 0
        for part in synthetic_chunks(source, count, sigma, np.random.default_rng(seed + 1 + offset), chunk, bases):
            out[start:start + len(part)] = part
            start += len(part)
        out.flush()
        del out
        paths[name] = path
    return {name: np.load(path, mmap_mode="r") for name, path in paths.items()}


def build_shard_files(vectors: np.ndarray, folder: Path, name: str, shards: int, train_sample: int,
                      chunk: int) -> tuple[list[Path], str]:
    """Train the engine's large index on the first ``train_sample`` rows, fill it shard by shard from
    ``vectors`` and write each shard as it is done: one shard in RAM at a time."""
    key = large_index.large_index_key(len(vectors), vectors.shape[1])
    trained = large_index.train_index(key, np.asarray(vectors[:train_sample], dtype=np.float32))
    paths, start = [], 0
    for number, rows in enumerate(large_index.shard_sizes(len(vectors), shards)):
        shard = large_index.empty_copy(trained)
        large_index.add_chunks(shard, large_index.chunked(vectors[start:start + rows], chunk), total=rows)
        path = folder / f"{name}.shard{number}.faiss"
        faiss.write_index(shard, str(path))
        paths.append(path)
        start += rows
        del shard
    return paths, key


def rss_anon_mib() -> float:
    """This process's anonymous resident memory (heap, not memory-mapped files) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed_single(search, queries: np.ndarray) -> dict:
    durations = []
    for position in range(len(queries)):
        started = time.perf_counter()
        search(queries[position:position + 1])
        durations.append(time.perf_counter() - started)
    return percentiles(durations)


def run(text_vectors: np.ndarray, image_vectors: np.ndarray, results: Results, vectors: int = 10_000_000,
        queries: int = 200, image_dim: int = 128, shards: int | None = None, sigma: float = 0.5,
        train_sample: int = large_index.DEFAULT_TRAIN_SAMPLE, chunk: int = 250_000, seed: int = 0,
        scratch: Path | None = None) -> dict:
    """Build, tune and measure both indexes at ``vectors`` rows; add rows and a table to ``results``."""
    shards = shards or max(1, math.ceil(vectors / SHARD_ROWS))
    # enough rows for the inverted lists (their count depends on the catalog size alone)
    train_sample = min(large_index.lists_training_sample(large_index.list_count(vectors), train_sample),
                       vectors - 2 * queries)
    folder = Path(tempfile.mkdtemp(prefix="scale-index-", dir=scratch or "/tmp"))
    threads = faiss.omp_get_max_threads()
    raw: dict = {"vectors": vectors, "shards": shards, "train_sample": train_sample, "sigma": sigma,
                 "image_dim": image_dim, "queries": queries}
    try:
        started = time.perf_counter()
        real = {"text": np.asarray(text_vectors, dtype=np.float32),
                "image": principal_projection(np.asarray(image_vectors, dtype=np.float32), image_dim)}
        stored = write_vectors(real, vectors, folder, sigma, seed, chunk)
        raw["generate_s"] = time.perf_counter() - started
        logger.info("Scale index: %d vectors generated in %.0f s", vectors, raw["generate_s"])

        tuning_rows = np.arange(train_sample, train_sample + queries)
        eval_rows = np.arange(train_sample + queries, train_sample + 2 * queries)
        query_rows = np.concatenate([tuning_rows, eval_rows])
        indexes, truths = {}, {}
        rss_before = rss_anon_mib()
        for name, data in stored.items():
            faiss.omp_set_num_threads(threads)
            started = time.perf_counter()
            paths, key = build_shard_files(data, folder, name, shards, train_sample, chunk)
            build_s = time.perf_counter() - started
            started = time.perf_counter()
            _, truth = large_index.exact_neighbours(large_index.chunked(data, chunk),
                                                    np.asarray(data[query_rows], dtype=np.float32), K + 1)
            truth_s = time.perf_counter() - started
            truths[name] = truth
            loaded = [faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC) for path in paths]
            index = large_index.join_shards(loaded) if len(loaded) > 1 else loaded[0]
            tuning = large_index.tune_search_depth(index, np.asarray(data[tuning_rows], dtype=np.float32),
                                                   truth[:queries], tuning_rows)
            indexes[name] = index
            raw[name] = {"key": key, "build_s": build_s, "exact_truth_s": truth_s, "tuning": tuning.to_dict(),
                         "file_mib": sum(p.stat().st_size for p in paths) / 2 ** 20,
                         "vectors_f16_mib": data.nbytes / 2 ** 20}
            logger.info("Scale index: %s built in %.0f s, %s", name, build_s, tuning)
        raw["index_rss_anon_mib"] = rss_anon_mib() - rss_before
        in_ram, mapped = zip(*(large_index.index_bytes(index) for index in indexes.values()))
        raw["index_ram_mib"], raw["index_mapped_mib"] = sum(in_ram) / 2 ** 20, sum(mapped) / 2 ** 20

        faiss.omp_set_num_threads(1)
        table = ["| index | vectors | shards | nprobe | k_factor | recall@10 | p50 ms, 1 thread | p95 ms |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, index in indexes.items():
            data = stored[name]
            evaluate = np.asarray(data[eval_rows], dtype=np.float32)
            tuned = raw[name]["tuning"]
            sweep = []
            for nprobe in sorted({*SWEEP, tuned["nprobe"]}):
                for shard in large_index.sub_indexes(index):
                    faiss.extract_index_ivf(shard).nprobe = nprobe
                _, found = index.search(evaluate, K + 1)
                recall = large_index.recall_at_k(found, truths[name][queries:], K, eval_rows)
                latency = _timed_single(lambda q, index=index: index.search(q, K), evaluate)
                sweep.append({"nprobe": nprobe, "recall": recall, **latency})
                mark = " (tuned)" if nprobe == tuned["nprobe"] else ""
                table.append(f"| {name} {data.shape[1]}-d {raw[name]['key']} | {vectors:,} | {shards} | {nprobe}{mark} | "
                             f"{tuned['k_factor']} | {recall:.3f} | {latency['p50_ms']:.2f} | {latency['p95_ms']:.2f} |")
            raw[name]["sweep"] = sweep
            for shard in large_index.sub_indexes(index):
                faiss.extract_index_ivf(shard).nprobe = tuned["nprobe"]
            chosen = next(row for row in sweep if row["nprobe"] == tuned["nprobe"])
            results.add(Row("scale index", f"{vectors:,} x {data.shape[1]}-d {name}: {raw[name]['key']}, "
                            f"nprobe {tuned['nprobe']} (tuned)",
                            f"p50 {chosen['p50_ms']:.2f} ms (1 thread), recall@10 {chosen['recall']:.3f}", None, "",
                            f"build {raw[name]['build_s']:.0f} s, {shards} shard(s)"))

        search = SearchConfig()
        depth = search.candidate_depth(K, vectors)
        text_queries = np.asarray(stored["text"][eval_rows], dtype=np.float32)
        image_queries = np.asarray(stored["image"][eval_rows], dtype=np.float32)

        def hybrid(position: int) -> None:
            candidates = hybrid_candidates(indexes["image"], indexes["text"], stored["image"], stored["text"],
                                           image_queries[position:position + 1], text_queries[position:position + 1],
                                           depth, eval_rows[position:position + 1])
            fuse_candidates(candidates, search.alpha, K, search.fusion)

        durations = []
        for position in range(len(eval_rows)):
            started = time.perf_counter()
            hybrid(position)
            durations.append(time.perf_counter() - started)
        raw["hybrid"] = {"depth": depth, **percentiles(durations)}
        # load gauge: the same one-thread exact scan of 20,000 384-d vectors takes 2.0 ms on a quiet machine
        reference = np.asarray(stored["text"][:REFERENCE_ROWS], dtype=np.float32)
        raw["reference_exact_scan"] = _timed_single(
            lambda q: faiss.knn(q, reference, K, metric=faiss.METRIC_INNER_PRODUCT), text_queries[:50])
        raw["index_rss_anon_after_queries_mib"] = rss_anon_mib() - rss_before
        table.append(f"| hybrid (text + image, exact re-score of {depth}+{depth} candidates from memory-mapped "
                     f"float16 vectors) | {vectors:,} | {shards} | tuned | | | {raw['hybrid']['p50_ms']:.2f} | "
                     f"{raw['hybrid']['p95_ms']:.2f} |")
        results.add(Row("scale index", f"{vectors:,}: hybrid query", f"p50 {raw['hybrid']['p50_ms']:.2f} ms (1 thread)"),
                    Row("scale index", f"{vectors:,}: both indexes in RAM",
                        f"{raw['index_ram_mib']:.0f} MiB", None, "",
                        f"+ {raw['index_mapped_mib']:.0f} MiB of float16 re-ranking vectors memory-mapped; "
                        f"text build {raw['text']['build_s']:.0f} s, image build {raw['image']['build_s']:.0f} s"))
        results.tables[f"Index at scale ({vectors:,} vectors, generated in {raw['generate_s']:.0f} s; indexes "
                       f"{raw['index_ram_mib']:.0f} MiB in RAM + {raw['index_mapped_mib']:.0f} MiB memory-mapped, "
                       f"{raw['index_rss_anon_mib']:.0f} MiB anonymous RSS after loading; load gauge: exact scan of "
                       f"{min(REFERENCE_ROWS, vectors):,} vectors p50 {raw['reference_exact_scan']['p50_ms']:.1f} ms, "
                       f"1 thread)"] = table
        results.raw["scale_index"] = raw
        return raw
    finally:
        faiss.omp_set_num_threads(threads)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    import argparse
    import json

    from .common import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("/work/eval/dev-bundle-pristine"),
                        help="bundle whose text_vectors.npy / image_vectors.npy seed the synthetic catalog")
    parser.add_argument("--vectors", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--shards", type=int, default=None, help=f"default: one per {SHARD_ROWS:,} vectors")
    parser.add_argument("--image-dim", type=int, default=128)
    parser.add_argument("--train-sample", type=int, default=large_index.DEFAULT_TRAIN_SAMPLE)
    parser.add_argument("--json", type=Path, help="write everything measured here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = Results()
    raw = run(np.load(args.bundle / "text_vectors.npy"), np.load(args.bundle / "image_vectors.npy"), results,
              args.vectors, args.queries, args.image_dim, args.shards, train_sample=args.train_sample)
    print("\n".join(markdown_table(results.rows)))
    for title, table in results.tables.items():
        print(f"\n{title}\n" + "\n".join(table))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2, default=float))


if __name__ == "__main__":
    main()
