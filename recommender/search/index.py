"""FAISS indexes over L2-normalised vectors (inner product = cosine similarity).

The index type follows catalog size: exact search while it is cheap, HNSW above
:data:`EXACT_SEARCH_LIMIT`, or any FAISS factory string given explicitly. How deep an index
searches (HNSW ``efSearch``, IVF ``nprobe``) comes from the bundle's
:class:`~recommender.search.config.SearchConfig`. ``docs/index-scaling.md`` has the
measurements behind the limit.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from ..data.tombstones import Tombstones
from ..errors import BundleError
from .config import SearchConfig

#: Up to this many vectors, brute force is exact and one query stays within the 5 ms budget.
EXACT_SEARCH_LIMIT = 20_000
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80


def choose_index_key(count: int) -> str:
    """Factory string for a catalog of ``count`` vectors."""
    return "Flat" if count <= EXACT_SEARCH_LIMIT else f"HNSW{HNSW_NEIGHBOURS},Flat"


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation into a new contiguous float32 array; zero rows stay zero."""
    vectors = np.array(vectors, dtype=np.float32, copy=True, order="C")
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    faiss.normalize_L2(vectors)
    return vectors


def build_index(vectors: np.ndarray, index_key: str | None = None,
                search: SearchConfig = SearchConfig()) -> faiss.Index:
    """Build an inner-product index over ``vectors`` (already normalised), row i = id i, searching as
    ``search`` says."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dimension = vectors.shape
    key = index_key or choose_index_key(count)
    index = faiss.index_factory(dimension, key, faiss.METRIC_INNER_PRODUCT)
    hnsw = _hnsw_of(index)
    if hnsw is not None:
        hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    apply_search_config(index, search)
    return index


def _hnsw_of(index: faiss.Index):
    for candidate in (index, faiss.downcast_index(index)):
        if hasattr(candidate, "hnsw"):
            return candidate.hnsw
    return None


def apply_search_config(index: faiss.Index, search: SearchConfig) -> None:
    """Set how deep ``index`` searches: HNSW ``efSearch``, IVF ``nprobe`` (FAISS's default of 1 list
    loses most recall, so ``None`` probes a share of the lists). Other index types ignore it."""
    hnsw = _hnsw_of(index)
    if hnsw is not None:
        hnsw.efSearch = search.hnsw_ef_search
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.nprobe = min(ivf.nlist, search.ivf_nprobe or max(8, ivf.nlist // 32))


def search_live(index: faiss.Index, queries: np.ndarray, k: int,
                removed: Tombstones | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(queries, k)`` over the live rows only: removed rows are skipped inside FAISS (an
    ``IDSelector``), so the answer is the index's top ``k`` of the live items, padded with ``-1``."""
    if not removed:
        return index.search(queries, k)
    return index.search(queries, k, params=_selecting(index, removed.selector()))


def _selecting(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """Search parameters with ``selector`` that keep the index's own search depth: IVF takes its own
    parameter type (whose default would probe one list); HNSW keeps its ``efSearch`` under plain ones."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return faiss.SearchParameters(sel=selector)
    return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe, max_codes=ivf.max_codes)


def append_index(index: faiss.Index, segment: faiss.Index, vectors: np.ndarray) -> None:
    """Append ``segment``'s entries (rows ``index.ntotal`` on, built by :func:`empty_like` + ``add``) to ``index``.

    Flat and IVF indexes take the segment's entries as they are (IVF entries keep their list and
    codes, with ids shifted past ``index.ntotal``); an HNSW graph cannot be merged, so ``vectors``
    (the segment's) are inserted into it.
    """
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        try:
            index.merge_from(segment, 0)  # flat codes: ids are positions
        except RuntimeError:
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return
    index.merge_from(segment, index.ntotal)


def empty_like(index: faiss.Index) -> faiss.Index:
    """A copy of ``index`` with its training (IVF centroids, PQ codebooks, HNSW settings) and no entries."""
    try:
        empty = faiss.clone_index(index)
    except RuntimeError:  # FAISS cannot clone some transforms (e.g. L2norm): a serialised round trip copies all
        empty = faiss.deserialize_index(faiss.serialize_index(index))
    empty.reset()
    return empty


def save_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def load_index(path: Path, expected_count: int, expected_dimension: int,
               search: SearchConfig = SearchConfig()) -> faiss.Index:
    """Read an index, check it matches the catalog and the vectors it claims to hold, and set it to
    search as ``search`` says."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"Missing index file {path}. Rebuild the bundle with `python -m train build`.")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise BundleError(f"Index file {path} is corrupted ({str(error).splitlines()[0]}). Rebuild the bundle.") from None
    if index.ntotal != expected_count or index.d != expected_dimension:
        raise BundleError(
            f"Index {path} holds {index.ntotal} vectors of dimension {index.d}, but the bundle has "
            f"{expected_count} items of dimension {expected_dimension}. Rebuild the bundle."
        )
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise BundleError(f"Index {path} does not use inner product; rebuild the bundle with this version.")
    apply_search_config(index, search)
    return index


def describe_index(index: faiss.Index) -> str:
    """Short human description, e.g. ``IndexFlatIP`` or ``IndexHNSWFlat``.

    The factory's ``Flat`` is an ``IndexFlat`` that reads back from disk as ``IndexFlatIP`` /
    ``IndexFlatL2``: it is named by its metric, so a manifest and a loaded bundle agree.
    """
    index = faiss.downcast_index(index)
    name = type(index).__name__
    if name == "IndexFlat":
        return "IndexFlatIP" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "IndexFlatL2"
    return name
