"""Indexes for catalogs too large for exact search or an in-RAM HNSW graph.

Above :data:`LARGE_INDEX_THRESHOLD` vectors the engine builds an inverted-file index with 4-bit
fast-scan product-quantisation codes (``IVF..., PQ...x4fs``) and re-ranks its candidates exactly
against float16 copies of the vectors (``Refine(SQfp16)``). The codes are small enough to stay in
RAM (24-48 bytes a vector); the float16 copies are read memory-mapped from the index file
(:func:`~recommender.search.index.load_index` reads it with ``IO_FLAG_MMAP_IFC``), so RAM holds only
what the re-ranking touches. ``docs/index-scaling.md`` has the measurements behind the choice.

The index is trained on a sample, then filled shard by shard from any iterator of arrays (e.g.
memory-mapped vector shards), so building never needs all vectors in RAM at once. It may be split
into N sub-indexes (``faiss.IndexShards``), each saved as its own file, so one bundle can later be
served from several machines. How deep it searches (``nprobe``) is tuned at build time to the
smallest value that reaches a recall@10 target against exact search on held-out rows.
"""

from __future__ import annotations

import re

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import faiss
import numpy as np
from tqdm.auto import tqdm

#: Above this many vectors the engine builds the compressed index (see docs/index-scaling.md).
LARGE_INDEX_THRESHOLD = 200_000
#: Vectors the coarse quantiser and the codebooks are trained on.
DEFAULT_TRAIN_SAMPLE = 100_000
#: Training vectors per inverted list at least (FAISS's k-means wants 39 and warns below).
MIN_TRAINING_PER_LIST = 40
#: Candidates the fast-scan codes propose per result, re-ranked exactly from the float16 vectors.
REFINE_K_FACTOR = 8
MAX_K_FACTOR = 64
#: Recall gained over two deeper ``nprobe`` steps below which tuning stops probing more lists.
PLATEAU = 0.003
TARGET_RECALL = 0.95
TUNING_QUERIES = 200
TUNING_K = 10
NPROBE_CANDIDATES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def list_count(count: int) -> int:
    """Inverted lists for ``count`` vectors: about ``sqrt(count)``, a power of two, at most 8,192, and at
    least 39 training vectors each (FAISS's minimum)."""
    return min(2 ** round(np.log2(max(count, 1) ** 0.5)), 2 ** int(np.log2(max(count // 39, 1))), 8192)


def large_index_key(count: int, dimension: int) -> str:
    """Factory string for ``count`` vectors: :func:`list_count` lists found through a small HNSW graph,
    4-bit fast-scan codes, float16 re-ranking."""
    return f"IVF{list_count(count)}_HNSW32,PQ{_sub_quantizers(dimension)}x4fs,Refine(SQfp16)"


def training_sample(key: str, requested: int) -> int:
    """Rows to train factory ``key`` on: ``requested``, raised to :data:`MIN_TRAINING_PER_LIST` a list for an
    IVF key (k-means with fewer points per centroid places them poorly, and FAISS warns)."""
    lists = re.search(r"IVF(\d+)", key)
    return lists_training_sample(int(lists.group(1)), requested) if lists else requested


def lists_training_sample(lists: int, requested: int) -> int:
    """Rows to train ``lists`` inverted lists on: ``requested``, at least :data:`MIN_TRAINING_PER_LIST` a list."""
    return max(requested, MIN_TRAINING_PER_LIST * lists)


def _sub_quantizers(dimension: int) -> int:
    """``dimension / 4`` sub-quantizers (two 4-bit codes a byte; ``dimension / 2``, up to 64, for small
    dimensions, where 4 dimensions a code lose too much), rounded down to a divisor of ``dimension`` and to
    an even number (fast-scan packs codes in pairs)."""
    for count in range(max(dimension // 4, min(dimension // 2, 64), 2), 1, -1):
        if dimension % count == 0 and count % 2 == 0:
            return count
    raise ValueError(f"no fast-scan product quantiser fits dimension {dimension}")


def chunked(vectors: np.ndarray, rows: int = 65_536) -> Iterator[np.ndarray]:
    """Consecutive float32 slices of ``vectors`` (an array or a memory map), ``rows`` at a time."""
    for start in range(0, len(vectors), rows):
        yield np.ascontiguousarray(vectors[start:start + rows], dtype=np.float32)


def train_index(key: str, sample: np.ndarray) -> faiss.Index:
    """An empty inner-product index of factory ``key``, trained on ``sample`` (normalised vectors)."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    index = faiss.index_factory(sample.shape[1], key, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexRefine):
        index.k_factor = REFINE_K_FACTOR
    if not index.is_trained:
        index.train(sample)
    return index


def add_chunks(index: faiss.Index, chunks: Iterable[np.ndarray], total: int | None = None) -> faiss.Index:
    """Append each chunk of vectors to ``index`` in order (rows keep their position as id)."""
    with tqdm(total=total, unit="vec", desc="index add", disable=total is None) as progress:
        for chunk in chunks:
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))
            progress.update(len(chunk))
    return index


def build_sharded(trained: faiss.Index, chunks: Iterable[np.ndarray], shard_rows: list[int]) -> faiss.Index:
    """Fill ``len(shard_rows)`` copies of ``trained`` with consecutive rows (``shard_rows[i]`` each) and
    join them in one ``faiss.IndexShards`` whose ids run on across shards."""
    shards = []
    chunks = iter(chunks)
    pending = np.zeros((0, trained.d), dtype=np.float32)
    for rows in shard_rows:
        shard = empty_copy(trained)
        while shard.ntotal < rows:
            if not len(pending):
                pending = np.ascontiguousarray(next(chunks), dtype=np.float32)
            take = min(rows - shard.ntotal, len(pending))
            shard.add(pending[:take])
            pending = pending[take:]
        shards.append(shard)
    return join_shards(shards)


def join_shards(shards: list[faiss.Index]) -> faiss.Index:
    """One index searching ``shards`` together, ids numbered on across them (shard 0 first).

    Searched one query at a time on one thread, as the engine serves (not ``threaded``)."""
    joined = faiss.IndexShards(shards[0].d, False, True)
    for shard in shards:
        joined.add_shard(shard)
    return joined  # faiss's Python wrapper keeps a reference to each added shard


def shard_sizes(count: int, shards: int) -> list[int]:
    """Row counts of ``shards`` consecutive, near-equal shards of ``count`` rows."""
    if shards < 1 or shards > max(count, 1):
        raise ValueError(f"shards must be from 1 to {max(count, 1)}, got {shards}")
    base, extra = divmod(count, shards)
    return [base + (i < extra) for i in range(shards)]


def sub_indexes(index: faiss.Index) -> list[faiss.Index]:
    """The shards of an ``IndexShards`` (views that live as long as it does), or ``[index]``."""
    if isinstance(index, faiss.IndexShards):
        return [faiss.downcast_index(index.at(i)) for i in range(index.count())]
    return [index]


def index_bytes(index: faiss.Index) -> tuple[int, int]:
    """Bytes of ``index`` held in RAM, and bytes a memory-mapped load leaves in the file (a re-ranking
    index's flat float16 vectors), from its serialised size."""
    in_ram = mapped = 0
    for shard in sub_indexes(index):
        if isinstance(shard, faiss.IndexRefine):
            mapped += faiss.serialize_index(shard.refine_index).nbytes
            in_ram += faiss.serialize_index(shard.base_index).nbytes
        else:
            in_ram += faiss.serialize_index(shard).nbytes
    return in_ram, mapped


def empty_copy(index: faiss.Index) -> faiss.Index:
    """A trained copy of ``index`` without entries (a serialised round trip copies any index type)."""
    copy = faiss.deserialize_index(faiss.serialize_index(index))
    copy.reset()
    return copy


def exact_neighbours(chunks: Iterable[np.ndarray], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of ``queries`` over vectors streamed chunk by chunk (row ids run on
    across chunks): ground truth for catalogs that do not fit in RAM."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    offset = 0
    for chunk in chunks:
        scores = queries @ np.asarray(chunk, dtype=np.float32).T
        take = min(k, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        merged_ids = np.concatenate([best_ids, top + offset], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_ids = np.take_along_axis(merged_ids, order, axis=1)
        offset += scores.shape[1]
    return best_scores, best_ids


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int, query_rows: np.ndarray | None = None) -> float:
    """Share of each query's ``k`` true neighbours among its first ``k`` found, averaged. With
    ``query_rows`` (the queries' own catalog rows) each query's own row is left out of both lists first,
    so finding itself earns nothing (pass ``k + 1`` columns then)."""
    hits = total = 0
    for i, (got, want) in enumerate(zip(found, truth)):
        own = -1 if query_rows is None else query_rows[i]
        want = [w for w in want if w != own and w >= 0][:k]
        got = [g for g in got if g != own and g >= 0][:k]
        hits += len(set(got) & set(want))
        total += len(want)
    return hits / max(total, 1)


@dataclass(frozen=True)
class Tuning:
    """What build-time tuning found: the smallest ``nprobe`` (at re-ranking depth ``k_factor``) reaching
    ``target`` recall@``k`` on ``queries`` held-out rows, the recall measured there, and whether the
    target was reached at all (if not: the deepest setting tried)."""

    nprobe: int
    k_factor: int
    recall: float
    target: float
    k: int
    queries: int
    reached: bool

    def to_dict(self) -> dict:
        return asdict(self)


def tune_search_depth(index: faiss.Index, queries: np.ndarray, truth: np.ndarray,
                      query_rows: np.ndarray | None = None, target: float = TARGET_RECALL,
                      k: int = TUNING_K, nprobes: tuple[int, ...] | None = None,
                      grow_k_factor: bool = True) -> Tuning:
    """Set ``index`` to the smallest ``nprobe`` (of ``nprobes``, default :data:`NPROBE_CANDIDATES` and
    ``nlist``) reaching ``target`` recall@``k`` against ``truth`` (exact neighbours, ``k + 1`` deep when
    ``query_rows`` leaves each query's own row out). If none reaches it (or recall stops growing with
    ``nprobe``) and ``grow_k_factor``, the re-ranking depth (``k_factor``) doubles, up to
    :data:`MAX_K_FACTOR`, and the sweep runs again: fewer lists with a deeper re-rank is cheaper than all lists."""
    shards = sub_indexes(index)
    refines = [shard for shard in shards if isinstance(shard, faiss.IndexRefine)]
    k_factor = int(refines[0].k_factor) if refines else 1
    while True:
        for refine in refines:
            refine.k_factor = k_factor
        tuning = _tune_nprobe(index, shards, queries, truth, query_rows, target, k, k_factor, nprobes)
        if tuning.reached or not refines or not grow_k_factor or k_factor >= MAX_K_FACTOR:
            return tuning
        k_factor *= 2


def _tune_nprobe(index: faiss.Index, shards: list[faiss.Index], queries: np.ndarray, truth: np.ndarray,
                 query_rows: np.ndarray | None, target: float, k: int, k_factor: int,
                 nprobes: tuple[int, ...] | None) -> Tuning:
    ivfs = [faiss.extract_index_ivf(shard) for shard in shards]
    nlist = ivfs[0].nlist
    depth = k + (query_rows is not None)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    candidates = list(nprobes) if nprobes else [p for p in NPROBE_CANDIDATES if p < nlist] + [nlist]
    recalls: list[float] = []
    for nprobe in candidates:
        for ivf in ivfs:
            ivf.nprobe = nprobe
        _, found = index.search(queries, depth)
        recalls.append(recall_at_k(found, truth[:, :depth], k, query_rows))
        if recalls[-1] >= target:
            return Tuning(nprobe, k_factor, recalls[-1], target, k, len(queries), True)
        if len(recalls) > 2 and recalls[-1] - recalls[-3] < PLATEAU:
            break  # more lists no longer help: the re-ranking depth limits recall
    return Tuning(nprobe, k_factor, recalls[-1], target, k, len(queries), False)


def held_out_rows(count: int, trained_on: np.ndarray, queries: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``queries`` sorted catalog rows that the index was not trained on."""
    free = np.setdiff1d(np.arange(count), trained_on, assume_unique=False)
    if not len(free):
        free = np.arange(count)
    return np.sort(rng.choice(free, size=min(queries, len(free)), replace=False))
