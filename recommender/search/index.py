"""FAISS indexes over L2-normalised vectors (inner product = cosine similarity).

The index type follows catalog size: exact search while it is cheap, HNSW above
:data:`EXACT_SEARCH_LIMIT`, a compressed IVF-PQ index with exact re-ranking above
:data:`~recommender.search.large_index.LARGE_INDEX_THRESHOLD` (:mod:`~recommender.search.large_index`),
or any FAISS factory string given explicitly. How deep an index searches (HNSW ``efSearch``, IVF
``nprobe``, re-ranking ``k_factor``) comes from the bundle's :class:`~recommender.search.config.SearchConfig`;
a large catalog's build tunes ``nprobe`` against exact search. An index may be split into shards, saved
as one file each. ``docs/index-scaling.md`` has the measurements behind the limits.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from ..data.tombstones import Tombstones
from ..errors import BundleError
from . import large_index
from .config import SearchConfig
from .large_index import LARGE_INDEX_THRESHOLD, Tuning

#: Up to this many vectors, brute force is exact and one query stays within the 5 ms budget.
EXACT_SEARCH_LIMIT = 20_000
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80


def choose_index_key(count: int, dimension: int | None = None, large_threshold: int = LARGE_INDEX_THRESHOLD) -> str:
    """Factory string for a catalog of ``count`` vectors of ``dimension`` (needed above ``large_threshold``)."""
    if count > large_threshold:
        if dimension is None:
            raise ValueError(f"a catalog of {count} vectors gets a compressed index, whose shape needs their dimension")
        return large_index.large_index_key(count, dimension)
    return "Flat" if count <= EXACT_SEARCH_LIMIT else f"HNSW{HNSW_NEIGHBOURS},Flat"


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation into a new contiguous float32 array; zero rows stay zero."""
    vectors = np.array(vectors, dtype=np.float32, copy=True, order="C")
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    faiss.normalize_L2(vectors)
    return vectors


def build_index(vectors: np.ndarray, index_key: str | None = None, search: SearchConfig = SearchConfig(), *,
                large_threshold: int = LARGE_INDEX_THRESHOLD, shards: int = 1,
                train_sample: int = large_index.DEFAULT_TRAIN_SAMPLE, seed: int = 0) -> faiss.Index:
    """Build an inner-product index over ``vectors`` (already normalised; an array or a memory map), row i =
    id i, searching as ``search`` says.

    Indexes that need training are trained on ``train_sample`` random rows and filled chunk by chunk, so a
    memory-mapped catalog is never copied whole into RAM; ``shards`` > 1 splits the rows into that many
    consecutive sub-indexes searched together (``faiss.IndexShards``).
    """
    count, dimension = vectors.shape
    key = index_key or choose_index_key(count, dimension, large_threshold)
    index = faiss.index_factory(dimension, key, faiss.METRIC_INNER_PRODUCT)
    hnsw = _hnsw_of(index)
    if hnsw is not None:
        hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if isinstance(index, faiss.IndexRefine):
        index.k_factor = large_index.REFINE_K_FACTOR
    if not index.is_trained:
        sample = large_index.training_sample(key, train_sample)
        index.train(np.ascontiguousarray(vectors[training_rows(count, sample, seed)], dtype=np.float32))
    if shards > 1:
        index = large_index.build_sharded(index, large_index.chunked(vectors), large_index.shard_sizes(count, shards))
    elif hnsw is None:
        large_index.add_chunks(index, large_index.chunked(vectors))
    else:  # HNSW inserts each batch by level: one batch keeps the graph independent of chunking
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    apply_search_config(index, search)
    return index


def training_rows(count: int, sample: int, seed: int = 0) -> np.ndarray | slice:
    """Rows an index trains on: all of them up to ``sample``, else ``sample`` random ones, sorted."""
    if count <= sample:
        return slice(None)
    return np.sort(np.random.default_rng(seed).choice(count, size=sample, replace=False))


def build_tuned_index(vectors: np.ndarray, index_key: str | None = None, search: SearchConfig = SearchConfig(), *,
                      large_threshold: int = LARGE_INDEX_THRESHOLD, shards: int = 1,
                      train_sample: int = large_index.DEFAULT_TRAIN_SAMPLE, target: float = large_index.TARGET_RECALL,
                      seed: int = 0) -> tuple[faiss.Index, Tuning | None]:
    """:func:`build_index`, then, for an IVF index, measure recall@10 against exact search on held-out rows
    (not trained on): at ``search.ivf_nprobe`` when given, else at the smallest ``nprobe`` reaching
    ``target``, which the index keeps. ``None`` for indexes without ``nprobe``."""
    index = build_index(vectors, index_key, search, large_threshold=large_threshold, shards=shards,
                        train_sample=train_sample, seed=seed)
    if not _is_ivf(index):
        return index, None
    count, dimension = vectors.shape
    key = index_key or choose_index_key(count, dimension, large_threshold)
    trained_on = np.arange(count)[training_rows(count, large_index.training_sample(key, train_sample), seed)]
    rows = large_index.held_out_rows(count, trained_on, large_index.TUNING_QUERIES, np.random.default_rng(seed + 1))
    queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    _, truth = large_index.exact_neighbours(large_index.chunked(vectors), queries, large_index.TUNING_K + 1)
    nprobes = None if search.ivf_nprobe is None else (search.ivf_nprobe,)
    tuning = large_index.tune_search_depth(index, queries, truth, rows, target, nprobes=nprobes,
                                           grow_k_factor=search.refine_k_factor is None)
    return index, tuning


def tuned_search(search: SearchConfig, tunings: list[Tuning | None]) -> SearchConfig:
    """``search`` with the deepest tuned ``nprobe`` and ``k_factor`` of ``tunings`` (one setting serves every
    index, and a deeper search only finds more), where it gave none itself."""
    tunings = [tuning for tuning in tunings if tuning is not None]
    if not tunings:
        return search
    if search.ivf_nprobe is None:
        search = search.replace(ivf_nprobe=max(tuning.nprobe for tuning in tunings))
    if search.refine_k_factor is None and any(tuning.k_factor > 1 for tuning in tunings):
        search = search.replace(refine_k_factor=max(tuning.k_factor for tuning in tunings))
    return search


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(large_index.sub_indexes(index)[0])
    except RuntimeError:
        return False
    return True


def _hnsw_of(index: faiss.Index):
    for candidate in (index, faiss.downcast_index(index)):
        if hasattr(candidate, "hnsw"):
            return candidate.hnsw
    return None


def apply_search_config(index: faiss.Index, search: SearchConfig) -> None:
    """Set how deep ``index`` (each shard of it) searches: HNSW ``efSearch``, IVF ``nprobe`` (FAISS's default
    of 1 list loses most recall, so ``None`` probes a share of the lists), re-ranking ``k_factor``. Other
    index types ignore it."""
    for shard in large_index.sub_indexes(index):
        hnsw = _hnsw_of(shard)
        if hnsw is not None:
            hnsw.efSearch = search.hnsw_ef_search
        if isinstance(shard, faiss.IndexRefine) and search.refine_k_factor is not None:
            shard.k_factor = search.refine_k_factor
        try:
            ivf = faiss.extract_index_ivf(shard)
        except RuntimeError:
            continue
        ivf.nprobe = min(ivf.nlist, search.ivf_nprobe or max(8, ivf.nlist // 32))


def search_live(index: faiss.Index, queries: np.ndarray, k: int,
                removed: Tombstones | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(queries, k)`` over the live rows only: removed rows are skipped inside FAISS (an
    ``IDSelector``), so the answer is the index's top ``k`` of the live items, padded with ``-1``.

    A re-ranking index re-scores at most :data:`REFINE_CANDIDATE_CAP` candidates a query (a deep search,
    such as hybrid's 101 candidates, needs no more: it is re-scored exactly afterwards). A sharded index is
    searched shard by shard when it needs parameters, each with its own rows' selector (FAISS's
    ``IndexShards`` would hand every shard the same selector over shard-local ids)."""
    shards = large_index.sub_indexes(index)
    if not removed and not any(_refine_capped(shard, k) for shard in shards):
        return index.search(queries, k)
    if len(shards) == 1:
        return index.search(queries, k, params=_search_parameters(index, k, removed.selector() if removed else None))
    scores, rows, offset = [], [], 0
    for shard in shards:
        selector = None
        if removed:
            local = removed.rows[(removed.rows >= offset) & (removed.rows < offset + shard.ntotal)] - offset
            shard_removed = Tombstones(local, shard.ntotal)  # lives until this shard's search returns
            selector = shard_removed.selector()
        found_scores, found_rows = shard.search(queries, k, params=_search_parameters(shard, k, selector))
        scores.append(np.where(found_rows >= 0, found_scores, -np.inf))
        rows.append(np.where(found_rows >= 0, found_rows + offset, -1))
        offset += shard.ntotal
    scores, rows = np.concatenate(scores, axis=1), np.concatenate(rows, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best_scores = np.take_along_axis(scores, order, axis=1)
    best_rows = np.take_along_axis(rows, order, axis=1)
    return np.where(best_rows >= 0, best_scores, -np.inf).astype(np.float32), best_rows


#: Most candidates a re-ranking index re-scores for one query.
REFINE_CANDIDATE_CAP = 1024


def _refine_capped(index: faiss.Index, k: int) -> bool:
    return isinstance(index, faiss.IndexRefine) and k * index.k_factor > REFINE_CANDIDATE_CAP


def _search_parameters(index: faiss.Index, k: int, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
    """Search parameters (with ``selector``, if any) that keep the index's own search depth: IVF takes its
    own parameter type (whose default would probe one list), a re-ranking index its own around it (whose
    default would re-rank no deeper than ``k``; capped at :data:`REFINE_CANDIDATE_CAP` candidates); HNSW
    keeps its ``efSearch`` under plain ones."""
    extra = {} if selector is None else {"sel": selector}
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return faiss.SearchParameters(**extra)
    params = faiss.SearchParametersIVF(nprobe=ivf.nprobe, max_codes=ivf.max_codes, **extra)
    if isinstance(index, faiss.IndexRefine):
        depth = min(index.k_factor, max(1.0, REFINE_CANDIDATE_CAP / k))
        refined = faiss.IndexRefineSearchParameters(k_factor=depth, **extra)
        refined.base_index_params = params
        refined.keep_alive = params  # the SWIG object holds a raw pointer only
        return refined
    return params


def append_index(index: faiss.Index, segment: faiss.Index, vectors: np.ndarray) -> None:
    """Append ``segment``'s entries (rows ``index.ntotal`` on, built by :func:`empty_like` + ``add``) to ``index``.

    Flat and IVF indexes take the segment's entries as they are (IVF entries keep their list and
    codes, with ids shifted past ``index.ntotal``); an HNSW graph cannot be merged, nor can a re-ranking
    index, so ``vectors`` (the segment's) are inserted into it. A sharded index appends to its last
    shard, so row ids stay in order. An index read memory-mapped cannot grow: load it into RAM first.
    """
    if is_memory_mapped(index):
        raise BundleError("This index was loaded memory-mapped (read-only); load it into RAM to append to it.")
    shards = large_index.sub_indexes(index)
    if len(shards) > 1:
        append_index(shards[-1], segment, vectors)
        index.syncWithSubIndexes()
        return
    if isinstance(index, faiss.IndexRefine):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        try:
            index.merge_from(segment, 0)  # flat codes: ids are positions
        except RuntimeError:
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return
    index.merge_from(segment, index.ntotal)


def is_hnsw(index: faiss.Index) -> bool:
    """Whether ``index`` is one HNSW graph, which :func:`append_index` grows by inserting each segment's
    vectors (work worth keeping), where flat and IVF indexes take a segment's entries as they are."""
    return len(large_index.sub_indexes(index)) == 1 and _hnsw_of(index) is not None


def is_memory_mapped(index: faiss.Index) -> bool:
    """Whether any flat codes of ``index`` (a re-ranking index's vectors, a flat index's) are a view of a
    memory-mapped file, which FAISS cannot grow (it would abort the process)."""
    for shard in large_index.sub_indexes(index):
        shard = faiss.downcast_index(shard.refine_index) if isinstance(shard, faiss.IndexRefine) else shard
        if isinstance(shard, faiss.IndexFlatCodes) and not shard.codes.is_owned:
            return True
    return False


def empty_like(index: faiss.Index) -> faiss.Index:
    """A copy of ``index`` (of its last shard, for a sharded one) with its training (IVF centroids, PQ
    codebooks, HNSW settings) and no entries, in RAM even where ``index`` is memory-mapped."""
    source = large_index.sub_indexes(index)[-1]
    if isinstance(source, faiss.IndexRefine) and is_memory_mapped(source):
        return _empty_refine(source)
    try:
        empty = faiss.clone_index(source)
    except RuntimeError:  # FAISS cannot clone some transforms (e.g. L2norm): a serialised round trip copies all
        empty = faiss.deserialize_index(faiss.serialize_index(source))
    empty.reset()
    return empty


def _empty_refine(source: faiss.IndexRefine) -> faiss.IndexRefine:
    """An empty re-ranking index like ``source``, whose memory-mapped flat codes neither clone nor reset."""
    base = faiss.clone_index(source.base_index)  # the IVF lists live in RAM
    base.reset()
    flat = faiss.downcast_index(source.refine_index)
    if isinstance(flat, faiss.IndexScalarQuantizer):
        refine = faiss.IndexScalarQuantizer(flat.d, flat.sq.qtype, flat.metric_type)
        refine.sq = flat.sq  # trained ranges, if the quantiser has any
    else:
        refine = faiss.IndexFlat(flat.d, flat.metric_type)
    empty = faiss.IndexRefine(base, refine)
    empty.k_factor = source.k_factor
    empty.own_fields = True
    base.this.disown()
    refine.this.disown()
    return empty


#: First bytes of a sharded index's main file: a JSON list of its shard files, each a FAISS index.
SHARDS_FORMAT = "faiss-shards/1"


def save_index(index: faiss.Index, path: Path) -> list[Path]:
    """Write ``index`` to ``path``; a sharded one as one FAISS file per shard next to it
    (``<name>.shard<i><suffix>``) and ``path`` listing them. Returns every file written."""
    path = Path(path)
    shards = large_index.sub_indexes(index)
    if len(shards) == 1:
        faiss.write_index(index, str(path))
        return [path]
    files = [path.with_name(f"{path.stem}.shard{number}{path.suffix}") for number in range(len(shards))]
    for shard, file in zip(shards, files):
        faiss.write_index(shard, str(file))
    path.write_text(json.dumps({"format": SHARDS_FORMAT, "shards": [file.name for file in files],
                                "rows": [int(shard.ntotal) for shard in shards]}, indent=1))
    return [path, *files]


def shard_files(path: Path) -> list[Path]:
    """The shard files a sharded index's main file lists (``[]`` for a plain FAISS file)."""
    path = Path(path)
    with path.open("rb") as file:
        if file.read(1) != b"{":
            return []
    try:
        listing = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise BundleError(f"Index file {path} is corrupted (an unreadable shard list). Rebuild the bundle.") from None
    if not isinstance(listing, dict) or listing.get("format") != SHARDS_FORMAT:
        raise BundleError(f"Index file {path} is not a FAISS index nor a {SHARDS_FORMAT} shard list. Rebuild the bundle.")
    return [path.with_name(Path(name).name) for name in listing["shards"]]


def load_index(path: Path, expected_count: int, expected_dimension: int,
               search: SearchConfig = SearchConfig(), mmap: bool = False) -> faiss.Index:
    """Read an index (one file, or a shard list and its shards), check it matches the catalog and the vectors
    it claims to hold, and set it to search as ``search`` says.

    ``mmap`` leaves flat codes (a re-ranking index's float16 vectors, a flat index's vectors) in the file,
    memory-mapped, so RAM holds the compressed codes only; such an index is read-only (no live appends)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"Missing index file {path}. Rebuild the bundle with `python -m train build`.")
    files = shard_files(path) or [path]
    shards = [_read_index(file, mmap) for file in files]
    index = large_index.join_shards(shards) if len(shards) > 1 else shards[0]
    if index.ntotal != expected_count or index.d != expected_dimension:
        raise BundleError(
            f"Index {path} holds {index.ntotal} vectors of dimension {index.d}, but the bundle has "
            f"{expected_count} items of dimension {expected_dimension}. Rebuild the bundle."
        )
    if any(shard.metric_type != faiss.METRIC_INNER_PRODUCT for shard in shards):
        raise BundleError(f"Index {path} does not use inner product; rebuild the bundle with this version.")
    apply_search_config(index, search)
    return index


def _read_index(path: Path, mmap: bool) -> faiss.Index:
    if not path.is_file():
        raise BundleError(f"Missing index shard {path}. Rebuild the bundle with `python -m train build`.")
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except RuntimeError as error:
        raise BundleError(f"Index file {path} is corrupted ({str(error).splitlines()[0]}). Rebuild the bundle.") from None


def describe_index(index: faiss.Index) -> str:
    """Short human description, e.g. ``IndexFlatIP`` or ``IndexHNSWFlat``.

    The factory's ``Flat`` is an ``IndexFlat`` that reads back from disk as ``IndexFlatIP`` /
    ``IndexFlatL2``: it is named by its metric, so a manifest and a loaded bundle agree.
    """
    shards = large_index.sub_indexes(index)
    if len(shards) > 1:
        return f"IndexShards({len(shards)} x {describe_index(shards[0])})"
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        return f"IndexRefine({describe_index(index.base_index)})"
    name = type(index).__name__
    if name == "IndexFlat":
        return "IndexFlatIP" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "IndexFlatL2"
    return name
