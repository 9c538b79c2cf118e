"""The :class:`Recommender`: loads a bundle and answers queries by image, title or catalog item."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np

from .data.bundle import (
    DEFAULT_BUNDLE_DIR,
    FILES,
    read_manifest,
    read_search_config,
    resolve_bundle,
)
from .data.catalog import Catalog
from .data.images import ImageInput
from .data.live import BundleParts, describe_revision
from .encoders.query_cache import QueryVectorCache, image_key
from .encoders.thumbnails import ThumbnailEncoder
from .encoders.title_head import TitleHead
from .encoders.titles import TitleEncoder, clean_title, default_prefix
from .errors import BundleError, InvalidQueryError
from .results import Recommendation, Recommendations
from .search.candidates import (
    FULL_SCAN_LIMIT,
    MaskedSearch,
    Pool,
    hybrid_pool,
    masked_hybrid_pool,
    masked_pool,
    single_pool,
)
from .search.config import FUSION_METHODS, SearchConfig
from .search.dedupe import hidden_copies, index_copies, scan_copies
from .search.filters import Condition, MetadataColumns, RowMask, parse_caps, parse_where
from .search.index import apply_search_config, describe_index, normalize, search_live
from .search.paging import Tiers, anything_left, rank
from .search.rerank import Caps, Selection, Similarity
from .search.sessions import centroid, rank_fusion

logger = logging.getLogger(__name__)

MODES = ("image", "text", "hybrid")
MAX_K = 100
#: Deepest page start: a page past the candidate pool searches a deeper one, so paging has a cost.
MAX_OFFSET = 1000
MAX_SESSION_ITEMS = 50
#: Hybrid queries whose thumbnails can be encoded at once (the app serves 4 queries at a time).
HYBRID_WORKERS = 16
#: Encodes a hybrid query's thumbnail while the calling thread encodes its title: a worker per
#: concurrent hybrid query, so none waits for another's thumbnail. One pool per process, shared by
#: every Recommender: a hot swap to a new bundle revision must not leave an old pool's threads behind.
_THUMBNAIL_POOL = ThreadPoolExecutor(max_workers=HYBRID_WORKERS, thread_name_prefix="encode-thumbnail")


@dataclass(frozen=True)
class _Query:
    image_vector: np.ndarray | None
    text_vector: np.ndarray | None
    exclude_row: int | None


@dataclass(frozen=True)
class _Controls:
    """A query's checked controls: filter conditions, MMR weight, caps, dedupe, page start, session and excluded rows."""

    conditions: dict[str, Condition]
    diversity: float
    caps: dict[str, int]
    dedupe: bool
    offset: int
    session_rows: list[int]
    exclude_rows: list[int]


class Recommender:
    """Everything needed to answer queries, loaded once per process; safe to call from many threads."""

    def __init__(self, catalog: Catalog, thumbnail_encoder: ThumbnailEncoder, title_encoder: TitleEncoder,
                 image_vectors: np.ndarray, text_vectors: np.ndarray, image_index: faiss.Index,
                 text_index: faiss.Index, manifest: dict | None = None, title_head: TitleHead | None = None,
                 search: SearchConfig | None = None, folder: Path | None = None, query_cache_size: int = 0):
        """Serve these parts (as :meth:`load` reads them from a bundle). ``search`` defaults to the
        manifest's ``search`` section; the indexes are set to search as it says. ``folder``: where the
        bundle was read from (a Hub snapshot's names the commit of its revision). ``query_cache_size``:
        uploaded thumbnails and titles whose vectors are kept (:mod:`~recommender.encoders.query_cache`;
        0, the default, encodes every query, as a benchmark of the encoders needs)."""
        count = len(catalog)
        for name, array in (("image vectors", image_vectors), ("text vectors", text_vectors)):
            if array.shape[0] != count:
                raise BundleError(f"{name} have {array.shape[0]} rows but the catalog has {count} items.")
        image_dimension = thumbnail_encoder.dimension if title_head is None else title_head.dimension
        if image_vectors.shape[1] != image_dimension:
            producer = "thumbnail encoder and title head produce" if title_head else "thumbnail encoder produces"
            raise BundleError(f"Image vectors have dimension {image_vectors.shape[1]} but the bundle's {producer} "
                              f"{image_dimension}. Rebuild the bundle.")
        if text_vectors.shape[1] != title_encoder.dimension:
            raise BundleError(
                f"Text model {title_encoder.model_name_or_path!r} produces {title_encoder.dimension}-d vectors but "
                f"the bundle's {FILES['text_vectors']} is {text_vectors.shape[1]}-d: use the model the bundle was "
                "built with (see manifest.json) or rebuild the bundle with this model."
            )
        self.catalog = catalog
        self.thumbnail_encoder = thumbnail_encoder
        self.title_head = title_head
        self.title_encoder = title_encoder
        self.image_vectors = image_vectors
        self.text_vectors = text_vectors
        self.image_index = image_index
        self.text_index = text_index
        self.manifest = manifest or {}
        #: Which bundle revision this is (with the Hub commit it came from, if any).
        self.revision = describe_revision(self.manifest, folder, catalog.live_count)
        self.search = search if search is not None else read_search_config(self.manifest)
        self._metadata = MetadataColumns(catalog.metadata_columns, lambda column: catalog.dataset[column])
        self._copies: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # row -> its near-identical rows (dedupe)
        self.query_cache = QueryVectorCache(query_cache_size)
        for index in (image_index, text_index):
            apply_search_config(index, self.search)

    @classmethod
    def load(cls, source: str | Path = DEFAULT_BUNDLE_DIR, revision: str | None = None,
             text_model: str | None = None, verify: bool = True,
             search: SearchConfig | Mapping[str, object] | None = None,
             title_encoder: TitleEncoder | None = None, query_cache_size: int = 0) -> "Recommender":
        """Load a bundle from a local folder or a Hub repo id (+ ``revision``).

        ``text_model`` overrides the manifest's model (e.g. a local copy for offline use); it
        must produce vectors of the bundle's dimension, and titles keep the manifest's prefix. ``search`` replaces the manifest's
        :class:`SearchConfig`, or (a mapping) changes some of its fields, e.g. ``{"hnsw_ef_search": 256}``.
        ``title_encoder``: one already loaded, used if it is the model this load would load (a hot
        swap to a new bundle revision keeps the model, and its ONNX export, instead of loading it again).
        ``query_cache_size``: see :class:`Recommender`.
        """
        folder = resolve_bundle(source, revision)
        manifest = read_manifest(folder, verify=verify)
        search_config = read_search_config(manifest, folder)
        if isinstance(search, SearchConfig):
            search_config = search
        elif search:
            search_config = search_config.replace(**search)  # TypeError / ValueError name the bad setting
        parts = BundleParts(folder, manifest)  # the base, then segments appended by `train add`
        catalog = parts.catalog()
        count = len(catalog)
        if manifest.get("count") not in (None, count):
            raise BundleError(f"{folder / FILES['catalog']} has {count} items but {folder / 'manifest.json'} "
                              f"says {manifest['count']}. Rebuild the bundle.")
        thumbnail_encoder = ThumbnailEncoder.load(folder / FILES["encoder_weights"], folder / FILES["encoder_config"])
        title_head = parts.title_head(count, thumbnail_encoder.dimension) if manifest.get("title_head") else None
        text_info = manifest.get("text_model", {})
        model = text_model or text_info.get("name")
        if not model:
            raise BundleError(f"{folder / 'manifest.json'} names no text model; pass text_model=.")
        same_model = text_model is None or text_model == text_info.get("name")
        # The catalog's title vectors were made with the manifest's prefix: queries need it too,
        # whatever the override's folder is called (every build records it; without one, the build's rule).
        prefix = text_info["prefix"] if "prefix" in text_info else default_prefix(text_info.get("name", ""))
        wanted = (model, text_info.get("revision") if same_model else None, prefix)
        try:
            if title_encoder is None or not _is_model(title_encoder, *wanted):
                title_encoder = TitleEncoder(*wanted)
        except OSError as error:  # missing path, unknown or unreachable Hub model
            named_by = "given as text_model" if text_model else f"named in {folder / 'manifest.json'}"
            raise BundleError(f"Text model {model!r} ({named_by}) cannot be loaded: {error}. Pass text_model= "
                              "a local copy of the model the bundle was built with.") from None
        image_vectors = parts.vectors("image", count)
        text_vectors = parts.vectors("text", count)
        image_index = parts.index("image", image_vectors, search_config)
        text_index = parts.index("text", text_vectors, search_config)
        logger.info("Loaded bundle %s: %d items", folder, catalog.live_count)
        return cls(catalog, thumbnail_encoder, title_encoder, image_vectors, text_vectors, image_index, text_index,
                   manifest, title_head, search_config, folder, query_cache_size)

    @property
    def default_alpha(self) -> float:
        """Hybrid mode's text weight when a query gives none: the bundle's tuned value."""
        return self.search.alpha

    def __len__(self) -> int:
        return len(self.catalog)

    def info(self) -> dict:
        """What is loaded, for startup banners and the API."""
        return {
            "items": self.catalog.live_count,
            "revision": self.revision,
            "text_model": self.title_encoder.model_name_or_path,
            "text_dimension": self.title_encoder.dimension,
            "text_backend": self.title_encoder.backend,
            "image_encoder": self.thumbnail_encoder.config.architecture,
            "image_backend": self.thumbnail_encoder.backend,
            "image_dimension": self.image_vectors.shape[1],
            "title_head": self.title_head is not None,
            "image_index": describe_index(self.image_index),
            "text_index": describe_index(self.text_index),
            "default_alpha": self.default_alpha,
            "search": self.search.to_dict(),
            "source": self.manifest.get("source", {}).get("dataset"),
            "query_cache": self.query_cache.stats(),
        }

    def encode_title(self, title: str) -> np.ndarray:
        """The title's query vector (read-only: it may be the cache's)."""
        cleaned = clean_title(title)
        return self.query_cache.get(("title", self.title_encoder.backend, cleaned),
                                    lambda: self.title_encoder.encode([cleaned]))

    def encode_image(self, image: ImageInput) -> np.ndarray:
        """An upload's image-index vector (read-only: it may be the cache's)."""
        key, image = image_key(image) if self.query_cache.size else (None, image)  # no hashing with no cache

        def encode() -> np.ndarray:
            return self.image_vectors_for(self.thumbnail_encoder.embed_arrays(self.thumbnail_encoder.prepare(image)[None]))

        return encode() if key is None else self.query_cache.get((*key, self.thumbnail_encoder.backend), encode)

    def encode_images(self, images: list[ImageInput]) -> np.ndarray:
        """Many uploads at once, batched: the vectors :meth:`encode_image` gives one by one."""
        return self.image_vectors_for(self.thumbnail_encoder.encode(images))

    def image_vectors_for(self, features: np.ndarray) -> np.ndarray:
        """Image-index vectors of uploaded thumbnails' autoencoder features.

        With a title head, each upload's title is predicted by the fold of the live catalog item it
        looks most like (nearest by features alone), as that item's own vector was.
        """
        if self.title_head is None:
            return features
        _, nearest = search_live(self.image_index, self.title_head.looks_query(features), 1, self.catalog.removed)
        return self.title_head.join(features, self.title_head.predict(features, np.maximum(nearest[:, 0], 0)))

    def recommend(self, image: ImageInput | None = None, title: str | None = None, item_id: str | int | None = None,
                  mode: str = "hybrid", k: int = 8, alpha: float | None = None, fusion: str | None = None, *,
                  where: Mapping[str, object] | None = None, diversity: float = 0.0,
                  max_per: Mapping[str, int] | None = None, dedupe: bool = True, offset: int = 0,
                  items: Sequence[str | int] | None = None,
                  exclude: Sequence[str | int] | None = None) -> Recommendations:
        """Rank catalog items for a query given as an image, a title, both, a catalog item or a session.

        A catalog item is queried with its stored vectors and never recommends itself. In hybrid
        mode ``alpha`` weighs text against image (default: the bundle's tuned value); with only one
        of the two inputs, hybrid falls back to that modality and says so in ``.notes``. In image
        mode a title alone is searched through the title head's predicted-title half of the image vectors.

        Controls (see docs/api.md): ``where`` keeps items whose metadata match (``{"channel": "A"}``,
        a list of values, or ``{"not": [...]}``; columns ANDed); ``diversity`` (0-1) re-ranks by MMR;
        ``max_per`` caps results per metadata value (``{"channel": 2}``); ``dedupe`` folds near-identical
        thumbnails into the higher-ranked one (``.duplicates``); ``offset`` gives results
        ``[offset, offset + k)`` of one ranking (``.more``: whether a next page exists); ``items`` asks
        for several catalog items at once (with ``image``/``title`` as one more member), none of them
        returned; ``exclude`` names items never to return.
        """
        mode, k, alpha, fusion = self._check_parameters(mode, k, alpha, fusion)
        controls = self._check_controls(where, diversity, max_per, dedupe, offset, items, exclude)
        if controls.session_rows and item_id is not None and item_id != "":
            raise InvalidQueryError("Give either item_id or items (a session), not both.")
        members = [_Query(self.image_vectors[row:row + 1], self.text_vectors[row:row + 1], row)
                   for row in controls.session_rows]
        if not members or image is not None or (title is not None and str(title).strip()):
            members.append(self._build_query(image, title, item_id, mode))
        notes: list[str] = []
        has_image = any(member.image_vector is not None for member in members)
        has_text = any(member.text_vector is not None for member in members)
        if mode == "hybrid" and not (has_image and has_text):
            mode = "image" if has_image else "text"
            notes.append(f"Hybrid needs both a thumbnail and a title; only a {'thumbnail' if mode == 'image' else 'title'} "
                         f"was given, so this is {mode} mode.")
        query = members[0] if len(members) == 1 else _Query(
            centroid([m.image_vector for m in members if m.image_vector is not None]) if has_image else None,
            centroid([m.text_vector for m in members if m.text_vector is not None]) if has_text else None, None)
        mask = self._row_mask(controls, query.exclude_row)
        if mask is not None and mask.count == 0:
            notes.append("No recommendations: no catalog item matches the filter." if controls.conditions else
                         "No recommendations: every catalog item is excluded.")
            return Recommendations([], mode, notes, np.zeros(0, dtype=np.int64), controls.offset, False)
        if len(members) > 1 and self.search.session_fusion == "rrf":
            sources = [self._pools(member, mode, alpha, fusion, mask) for member in members]

            def pool_at(depth: int) -> Pool:
                return rank_fusion([source(depth) for source in sources], self.search.rrf_k)
        else:
            pool_at = self._pools(query, mode, alpha, fusion, mask)
        selection = Selection(controls.diversity, self._similarity(mode, alpha),
                              self._looks if controls.dedupe else None, self.search.dedupe_threshold,
                              self._caps(controls.caps), len(self.catalog))
        admitted = self.catalog.removed.live.copy() if mask is None else mask.allowed
        if mask is None and query.exclude_row is not None:
            admitted[query.exclude_row] = False
        count = len(self.catalog)
        tiers = Tiers(-(-self.search.min_candidates // self.search.candidate_factor),
                      lambda size: self.search.candidate_depth(size, count),
                      self.catalog.live_count if mask is None else mask.count)
        rank(selection, pool_at, controls.offset + k, tiers)
        page = slice(controls.offset, controls.offset + k)
        rows = np.asarray(selection.picked[page], dtype=np.int64)
        scores = np.asarray(selection.scores[page], dtype=np.float32)
        if not len(rows) and not controls.offset:
            notes.append(self._nothing_found(query))
        duplicates = self._hidden_copies(selection, controls.offset, admitted) if controls.dedupe else [[]] * len(rows)
        results = self._describe(rows, scores, query, duplicates, controls.offset)
        return Recommendations(results, mode, notes, rows, controls.offset, anything_left(selection, admitted))

    def filterable_columns(self, max_values: int = 50) -> dict[str, list[str]]:
        """Metadata columns with at most ``max_values`` distinct values among live items, and those
        values, most frequent first: what ``where`` and ``max_per`` are offered on (the page's dropdowns)."""
        live = self.catalog.removed.live
        columns = {}
        for column in self._metadata.names:
            values = self._metadata.frequent_values(column, live, max_values)
            if values:
                columns[column] = values
        return columns

    def _check_controls(self, where: object, diversity: object, max_per: object, dedupe: object, offset: object,
                        items: object, exclude: object) -> _Controls:
        if isinstance(diversity, bool) or not isinstance(diversity, (int, float, np.floating)) \
                or not 0.0 <= diversity <= 1.0:
            raise InvalidQueryError(f"diversity must be a number from 0 to 1, got {diversity!r}.")
        if not isinstance(dedupe, (bool, np.bool_)):
            raise InvalidQueryError(f"dedupe must be true or false, got {dedupe!r}.")
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer, float)) or int(offset) != offset \
                or not 0 <= offset <= MAX_OFFSET:
            raise InvalidQueryError(f"offset must be a whole number from 0 to {MAX_OFFSET}, got {offset!r}.")
        session_rows = self._rows_of(items, "items")
        if len(session_rows) > MAX_SESSION_ITEMS:
            raise InvalidQueryError(f"A session has at most {MAX_SESSION_ITEMS} items, got {len(session_rows)}.")
        return _Controls(parse_where(where, self._metadata.names), float(diversity),
                         parse_caps(max_per, self._metadata.names), bool(dedupe), int(offset),
                         session_rows, self._rows_of(exclude, "exclude"))

    def _rows_of(self, item_ids: object, name: str) -> list[int]:
        """Catalog rows of a list of item ids (in order, each once); unknown or removed ids are refused."""
        if item_ids is None:
            return []
        if isinstance(item_ids, (str, int, np.integer)) or not isinstance(item_ids, Sequence):
            raise InvalidQueryError(f"{name} must be a list of item ids, got {item_ids!r}.")
        rows = []
        for item in item_ids:
            if isinstance(item, bool) or not isinstance(item, (str, int, np.integer)):
                raise InvalidQueryError(f"{name} must be a list of item ids, got {item!r} in it.")
            row = self.catalog.row_of(item)
            if row not in rows:
                rows.append(row)
        return rows

    def _row_mask(self, controls: _Controls, own_row: int | None) -> RowMask | None:
        """Rows the query may return, or ``None`` when that is every live row but the queried item's."""
        if not (controls.conditions or controls.exclude_rows or controls.session_rows):
            return None
        allowed = self.catalog.removed.live.copy()
        if controls.conditions:
            allowed &= self._metadata.matching(controls.conditions, len(allowed))
        allowed[controls.exclude_rows + controls.session_rows + ([] if own_row is None else [own_row])] = False
        return RowMask(allowed)

    def _pools(self, query: _Query, mode: str, alpha: float, fusion: str,
               mask: RowMask | None) -> Callable[[int], Pool]:
        """``depth -> query's top depth candidates in mode``, for every pool tier of one query (a session
        member with one modality uses that one); what the tiers share is computed once."""
        hybrid = mode == "hybrid" and query.image_vector is not None and query.text_vector is not None
        image = mode == "image" or (mode == "hybrid" and query.text_vector is None)
        removed, own_row = self.catalog.removed, query.exclude_row
        if mask is not None:
            image_search = MaskedSearch(self.image_index, self.image_vectors, query.image_vector, mask) \
                if hybrid or image else None
            text_search = MaskedSearch(self.text_index, self.text_vectors, query.text_vector, mask) \
                if hybrid or not image else None
            if hybrid:
                return lambda depth: masked_hybrid_pool(image_search, text_search, depth, alpha, fusion,
                                                        self.search.rrf_k)
            return lambda depth: masked_pool(image_search or text_search, depth)
        if hybrid:
            return lambda depth: hybrid_pool((self.image_index, self.text_index), (self.image_vectors, self.text_vectors),
                                             (query.image_vector, query.text_vector), depth, alpha, fusion,
                                             self.search.rrf_k, own_row, removed)
        if image:
            return lambda depth: single_pool(self.image_index, query.image_vector, depth, own_row, removed)
        return lambda depth: single_pool(self.text_index, query.text_vector, depth, own_row, removed)

    def _similarity(self, mode: str, alpha: float):
        """How alike two results are for diversity: image vectors, text vectors, or hybrid's alpha-weighted mix."""
        weights = {"image": (1.0, 0.0), "text": (0.0, 1.0), "hybrid": (1.0 - alpha, alpha)}[mode]
        return Similarity(((self.image_vectors, weights[0]), (self.text_vectors, weights[1]))).gather

    def _looks(self, rows: np.ndarray) -> np.ndarray:
        """Unit vectors of what ``rows``' thumbnails look like: image vectors without a title head's prediction."""
        if len(self.catalog) <= FULL_SCAN_LIMIT:
            return self._all_looks[rows]
        return self._looks_of(rows)

    def _looks_of(self, rows: np.ndarray) -> np.ndarray:
        return self.title_head.features_of(self.image_vectors[rows]) if self.title_head is not None \
            else self.image_vectors[rows]

    def _hidden_copies(self, selection: Selection, offset: int, admitted: np.ndarray) -> list[list[int]]:
        """Rows folded into each result of the page, found over the whole catalog (not one pool)."""
        if len(self.catalog) <= FULL_SCAN_LIMIT:
            nearest = scan_copies(self._all_looks, self._looks, self.search.dedupe_threshold, self._copies)
        elif self.title_head is None:
            nearest = index_copies(self.image_index, lambda rows: self.image_vectors[rows], 1.0, self.catalog.removed)
        else:
            head = self.title_head
            nearest = index_copies(self.image_index, lambda rows: head.looks_query(self._looks(rows)),
                                   float(np.sqrt(head.feature_share)), self.catalog.removed)
        return hidden_copies(self._looks, self.search.dedupe_threshold, selection.picked, offset, admitted, nearest)

    @cached_property
    def _all_looks(self) -> np.ndarray:
        """Every row's unit looks vector, for dedupe in catalogs scanned whole (made at the first query that folds)."""
        return np.ascontiguousarray(self._looks_of(np.arange(len(self.catalog))))

    def _caps(self, caps: Mapping[str, int]) -> Caps | None:
        if not caps:
            return None
        columns = [self._metadata.codes(column) for column in caps]
        return Caps(tuple(codes for _, codes in columns), tuple(caps.values()), tuple(len(values) for values, _ in columns))

    def _nothing_found(self, query: _Query) -> str:
        """Why a query has no results: in practice, a catalog with nothing but the queried item."""
        count = len(self.catalog)
        if query.exclude_row is not None:
            return (f"No recommendations: the catalog has {count} item{'s' if count != 1 else ''} and an item "
                    "never recommends itself.")
        return "No recommendations: no catalog item was found for this query."

    def _check_parameters(self, mode: str, k: object, alpha: object,
                          fusion: str | None) -> tuple[str, int, float, str]:
        fusion = self.search.fusion if fusion is None else fusion
        if mode not in MODES:
            raise InvalidQueryError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
        if fusion not in FUSION_METHODS:
            raise InvalidQueryError(f"Unknown fusion {fusion!r}; choose one of {', '.join(FUSION_METHODS)}.")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer, float)) or not 1 <= k <= MAX_K or int(k) != k:
            raise InvalidQueryError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}.")
        if alpha is None:
            alpha = self.default_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 <= alpha <= 1.0:
            raise InvalidQueryError(f"alpha (text weight) must be between 0 and 1, got {alpha!r}.")
        return mode, int(k), float(alpha), fusion

    def _build_query(self, image: ImageInput | None, title: str | None, item_id: str | int | None,
                     mode: str) -> _Query:
        if item_id is not None and item_id != "":
            if image is not None or (title is not None and str(title).strip()):
                raise InvalidQueryError("Give either a catalog item or an image/title, not both.")
            row = self.catalog.row_of(item_id)
            return _Query(self.image_vectors[row:row + 1], self.text_vectors[row:row + 1], row)
        if title is not None and not str(title).strip() and image is not None:
            title = None  # an empty title box next to an uploaded image is no query
        wants_image = mode in ("image", "hybrid")
        wants_text = mode in ("text", "hybrid")
        if wants_text and not wants_image and title is None:
            raise InvalidQueryError("Text mode needs a title.")
        if wants_image and not wants_text and image is None:
            if title is None:
                raise InvalidQueryError("Image mode needs a thumbnail (or, with a title head, a title).")
            return _Query(self._title_image_query(self.encode_title(title)), None, None)
        if image is None and title is None:
            raise InvalidQueryError("Give a thumbnail, a title, or a catalog item.")
        if image is not None and wants_image and title is not None and wants_text:
            return _Query(*self._encode_both(image, title), None)
        image_vector = self.encode_image(image) if image is not None and wants_image else None
        text_vector = self.encode_title(title) if title is not None and wants_text else None
        return _Query(image_vector, text_vector, None)

    def _title_image_query(self, text_vector: np.ndarray) -> np.ndarray:
        """An image-index query for a title alone: zero features, the title in the predicted-title half, so
        image vectors rank by how well their predicted title matches it."""
        if self.title_head is None:
            raise InvalidQueryError("Image mode needs a thumbnail: this bundle has no title head, so it cannot find "
                                    "thumbnails for a title alone. Use text mode, or rebuild the bundle with a title head.")
        if self.title_head.title_dimension != text_vector.shape[1]:
            raise InvalidQueryError(f"This bundle's title head predicts {self.title_head.title_dimension}-d titles but "
                                    f"the text model gives {text_vector.shape[1]}-d vectors: image mode cannot "
                                    "search by a title with this text model.")
        query = np.zeros((1, self.title_head.dimension), dtype=np.float32)
        query[:, self.title_head.feature_dimension:] = normalize(text_vector)
        return query

    def _encode_both(self, image: ImageInput, title: str) -> tuple[np.ndarray, np.ndarray]:
        """Thumbnail and title at the same time, on two cores: a hybrid upload costs the slower of
        the two encoders rather than their sum. The title is checked first, so a bad one wastes nothing."""
        clean_title(title)
        pending = _THUMBNAIL_POOL.submit(self.encode_image, image)
        text_vector = self.encode_title(title)
        return pending.result(), text_vector  # result() raises the thumbnail's own error, if any

    def _describe(self, rows: np.ndarray, scores: np.ndarray, query: _Query, duplicates: list[list[int]],
                  offset: int) -> list[Recommendation]:
        results = []
        item_ids = self.catalog.item_ids
        for rank, (row, score, copies) in enumerate(zip(rows.tolist(), scores.tolist(), duplicates), start=offset + 1):
            image_score = float(self.image_vectors[row] @ query.image_vector[0]) if query.image_vector is not None else None
            text_score = float(self.text_vectors[row] @ query.text_vector[0]) if query.text_vector is not None else None
            results.append(Recommendation(rank, item_ids[row], self.catalog.titles[row], float(score),
                                          image_score, text_score, self.catalog.metadata(row),
                                          [item_ids[copy] for copy in copies]))
        return results


def _is_model(encoder: TitleEncoder, model: str, revision: str | None, prefix: str) -> bool:
    """Whether ``encoder`` is what ``TitleEncoder(model, revision, prefix)`` would load."""
    return (encoder.model_name_or_path, encoder.revision, encoder.prefix) == (str(model), revision, prefix)
