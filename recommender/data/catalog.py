"""The catalog: one table of videos whose row order is the id space of every index.

Built once from a Hugging Face dataset id, a parquet file or an image folder
(:func:`load_catalog`), validated row by row, then saved into the bundle as parquet with
the original image bytes (never re-encoded), or, when the image column holds strings, with each
thumbnail's URL or file path instead (see :mod:`.references`). At serving time :class:`Catalog`
gives fast access to ids, titles, metadata and images by row.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import BundleError, CatalogError, InvalidQueryError
from .images import load_image
from .references import is_url, read_reference
from .tombstones import Tombstones

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "Ransaka/youtube_recommendation_data"
#: Columns looked for, in order, when no id column is named.
ID_COLUMN_CANDIDATES = ("item_id", "id", "video_id")
RESERVED_COLUMNS = ("item_id", "title", "image")
_STRING_TYPES = ("string", "large_string")


@dataclass(frozen=True)
class SkippedRow:
    """A source row left out of the catalog, and why."""

    position: int
    item_id: str
    reason: str


def _read_source(source: str | Path, revision: str | None) -> datasets.Dataset:
    """Any supported source as one Dataset (all splits of a Hub dataset concatenated)."""
    path = Path(source)
    if path.is_file() and path.suffix == ".parquet":
        loaded = datasets.load_dataset("parquet", data_files=str(path))
    elif path.is_dir() and any(path.glob("*.parquet")):
        loaded = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in path.glob("*.parquet")))
    elif path.is_dir():
        if not any(path.glob("metadata.*")):
            raise CatalogError(f"Image folder {path} needs a metadata.csv or metadata.jsonl with file_name and title columns.")
        loaded = datasets.load_dataset("imagefolder", data_dir=str(path))
    elif path.suffix in (".parquet", ".csv", ".jsonl") or str(source).startswith((".", "/")):
        raise CatalogError(f"Catalog source {source} does not exist.")
    else:
        try:
            loaded = datasets.load_dataset(str(source), revision=revision)
        except OSError as error:  # not found, offline, private: ConnectionError / DatasetNotFoundError
            raise CatalogError(f"Could not load dataset {source}@{revision or 'main'} from the Hub: {error}") from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.concatenate_datasets([loaded[name] for name in sorted(loaded)])
    return loaded


def image_cell_bytes(value: object) -> bytes:
    """Original encoded bytes of a ``datasets.Image(decode=False)`` cell, or of the URL / file path a
    string cell names (fetched: see :func:`~.references.read_reference`)."""
    if isinstance(value, str):
        return read_reference(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            return Path(value["path"]).read_bytes()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise ValueError("no image data")


def load_catalog(source: str | Path = DEFAULT_DATASET, *, image_column: str = "image", title_column: str = "title",
                 id_column: str | None = None, revision: str | None = None,
                 limit: int | None = None) -> tuple["Catalog", list[SkippedRow]]:
    """Read and validate a dataset into a :class:`Catalog`.

    Rows with an undecodable image or a blank title are skipped (returned, and named in a
    warning); ids never shift because a default id is the row's position in the source. An image
    column of strings holds references (URLs or file paths): each is fetched once to check it, an
    unreachable one skips its row, and the catalog keeps the references, not the bytes. Valid rows
    go to an Arrow file on disk as they are read, so memory does not grow with the catalog.
    """
    raw = _read_source(source, revision)
    if limit is not None:
        raw = raw.select(range(min(limit, len(raw))))
    missing = [column for column in (image_column, title_column) if column not in raw.column_names]
    if missing:
        raise CatalogError(
            f"Dataset {source} has no column(s) {missing}; it has {raw.column_names}. "
            "Name the right ones with --image-column / --title-column."
        )
    if id_column is None:
        id_column = next((c for c in ID_COLUMN_CANDIDATES if c in raw.column_names), None)
    elif id_column not in raw.column_names:
        raise CatalogError(f"Id column {id_column!r} not in dataset columns {raw.column_names}.")
    image_feature = raw.features.get(image_column)
    by_reference = isinstance(image_feature, datasets.Value) and image_feature.dtype in _STRING_TYPES
    if isinstance(image_feature, datasets.Image):
        raw = raw.cast_column(image_column, datasets.Image(decode=False))

    metadata_columns = [c for c in raw.column_names if c not in (image_column, title_column, id_column)
                        and c not in RESERVED_COLUMNS]
    skipped: list[SkippedRow] = []

    def valid_rows(nonce: str):  # the nonce keeps `datasets` from reusing another build's cached result
        seen: set[str] = set()
        for position, record in enumerate(tqdm(raw, total=len(raw), desc="Validating catalog", unit="item")):
            item_id = str(record[id_column]) if id_column else str(position)
            data, reason = _checked_image(record[image_column])
            if reason is None:
                reason = _title_problem(record[title_column])
            if reason is None and item_id in seen:
                reason = "duplicate item id"
            if reason is not None:
                skipped.append(SkippedRow(position, item_id, reason))
                continue
            seen.add(item_id)
            image = record[image_column].strip() if by_reference else {"bytes": data, "path": None}
            yield {"item_id": item_id, "title": " ".join(record[title_column].split()), "image": image,
                   **{column: record[column] for column in metadata_columns}}

    features = datasets.Features(
        {"item_id": datasets.Value("string"), "title": datasets.Value("string"),
         "image": datasets.Value("string") if by_reference else datasets.Image()}
        | {c: raw.features[c] for c in metadata_columns}
    )
    try:
        table = datasets.Dataset.from_generator(valid_rows, features=features, gen_kwargs={"nonce": uuid.uuid4().hex},
                                                split="train")
    except datasets.exceptions.DatasetGenerationError as error:  # from_generator wraps what the loop raises
        raise (error.__cause__ or error) from None
    except ValueError:  # "corresponds to no data": every row was skipped
        if len(skipped) < len(raw):
            raise
        table = None
    if skipped:
        named = ", ".join(f"#{s.position} ({s.item_id}: {s.reason})" for s in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        warnings.warn(f"Skipped {len(skipped)} of {len(raw)} rows: {named}{more}.", stacklevel=2)
    if table is None:
        raise CatalogError(f"No usable rows in {source}: all {len(raw)} were skipped.")
    return Catalog(table), skipped


def _title_problem(title: object) -> str | None:
    return "missing or blank title" if not isinstance(title, str) or not title.strip() else None


def _checked_image(value: object) -> tuple[bytes | None, str | None]:
    """The cell's encoded image and ``None``, or ``None`` and why it cannot be used (unreadable,
    unreachable reference, not an image)."""
    try:
        data = image_cell_bytes(value)
        load_image(data)
    except (InvalidQueryError, ValueError, OSError) as error:
        named = isinstance(value, str) and value.strip() not in str(error)  # say which reference
        return None, f"bad image ({value.strip() + ': ' if named else ''}{error})"
    return data, None


class Catalog:
    """Serving-time view of the catalog; row ``i`` is vector ``i`` of every index."""

    def __init__(self, dataset: datasets.Dataset, checksum: str | None = None, removed: Tombstones | None = None):
        """``checksum`` (the bundle manifest's SHA-256 of the catalog) names this catalog's thumbnail
        folder; without one the folder is this object's alone. ``removed``: rows taken out of a live
        catalog (see :mod:`~recommender.data.tombstones`); they keep their place, so row numbers still
        match the vectors, but lookups, search and shuffle skip them."""
        missing = [c for c in RESERVED_COLUMNS if c not in dataset.column_names]
        if missing:
            raise CatalogError(f"Catalog table lacks columns {missing}.")
        image_feature = dataset.features["image"]
        #: Thumbnails held as URLs / file paths rather than bytes (see :mod:`.references`).
        self.by_reference = isinstance(image_feature, datasets.Value) and image_feature.dtype in _STRING_TYPES
        self.dataset = dataset if self.by_reference else dataset.cast_column("image", datasets.Image(decode=False))
        self.item_ids: list[str] = list(self.dataset["item_id"])
        self.titles: list[str] = list(self.dataset["title"])
        self.metadata_columns = [c for c in self.dataset.column_names if c not in RESERVED_COLUMNS]
        self._metadata = self.dataset.select_columns(self.metadata_columns).to_list() if self.metadata_columns \
            else [{} for _ in self.item_ids]
        self.removed = Tombstones.none(len(self.item_ids)) if removed is None else removed
        if self.removed.count != len(self.item_ids):
            raise BundleError(f"Tombstones cover {self.removed.count} rows but the catalog has {len(self.item_ids)}.")
        live = self.removed.live
        self._rows: dict[str, int] = {}
        for row, item_id in enumerate(self.item_ids):  # an id's live row wins over its removed versions
            if live[row] or not live[self._rows.get(item_id, row)]:
                self._rows[item_id] = row
        self._lower_titles = [title.casefold() for title in self.titles]
        is_digest = checksum is not None and re.fullmatch(r"[0-9a-f]{64}", checksum) is not None  # a folder name
        self._thumbnails = ThumbnailFolder(checksum if is_digest else uuid.uuid4().hex)
        self._thumbnail_paths: dict[int, Path] = {}  # rows written already: no table read to find their file

    @classmethod
    def load(cls, path: Path | list[Path], tombstones: Path | None = None, checksum: str | None = None) -> "Catalog":
        """Read a bundle's catalog: one parquet file, or its parts in row order (a live bundle's base and
        appended segments), and its tombstone file if it has one. An unreadable file is a
        :class:`BundleError` that names it. ``checksum``: see :class:`Catalog`."""
        tables = []
        for part in [path] if isinstance(path, (str, Path)) else path:
            try:
                tables.append(datasets.Dataset.from_parquet(str(part)))
            except (ValueError, OSError) as error:  # pyarrow.ArrowInvalid is a ValueError
                raise BundleError(f"Catalog file {part} cannot be read ({error}). Rebuild the bundle.") from None
        try:
            table = tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)
        except ValueError as error:
            raise BundleError(f"The catalog parts of this bundle do not share one schema ({error}). "
                              "Rebuild the bundle.") from None
        removed = None if tombstones is None else Tombstones.load(tombstones, list(table["item_id"]))
        return cls(table, checksum, removed)

    def save(self, path: Path) -> None:
        (self.dataset if self.by_reference else self.dataset.cast_column("image", datasets.Image())).to_parquet(str(path))

    def __len__(self) -> int:
        return len(self.item_ids)

    def row_of(self, item_id: str | int) -> int:
        """Row of ``item_id``; unknown ids raise :class:`InvalidQueryError`."""
        row = self._rows.get(str(item_id).strip())
        if row is None:
            raise InvalidQueryError(f"Unknown item id {item_id!r}: the catalog has {self.live_count} items.")
        if row in self.removed:
            raise InvalidQueryError(f"Item {item_id!r} was removed from the catalog.")
        return row

    def lookup(self, item_id: str) -> int | None:
        """Row of ``item_id`` without judging it: its live row, else its last removed one, else ``None``."""
        return self._rows.get(str(item_id).strip())

    @property
    def live_count(self) -> int:
        """Items a query can find: rows that were not removed."""
        return self.removed.live_count

    def live_rows(self) -> np.ndarray:
        return self.removed.live_rows()

    def metadata(self, row: int) -> dict:
        return dict(self._metadata[row])

    def image_bytes(self, row: int) -> bytes:
        """The row's encoded thumbnail (fetched, for a catalog of references)."""
        return image_cell_bytes(self.dataset[row]["image"])

    def reference(self, row: int) -> str | None:
        """The URL or file path of the row's thumbnail in a catalog of references, else ``None``."""
        return self.dataset[row]["image"] if self.by_reference else None

    def image(self, row: int) -> Image.Image:
        return load_image(self.image_bytes(row))

    def iter_image_bytes(self, batch_size: int = 256, rows: np.ndarray | None = None) -> Iterable[bytes]:
        """All images (or those of ``rows``) in row order, read in batches (fast for large catalogs).
        A reference that cannot be fetched any more is a :class:`CatalogError` naming it."""
        table = self.dataset.select_columns(["image"])
        if rows is not None:
            table = table.select(np.asarray(rows, dtype=np.int64))
        for start in range(0, len(table), batch_size):
            for value in table[start:start + batch_size]["image"]:
                try:
                    yield image_cell_bytes(value)
                except InvalidQueryError as error:
                    raise CatalogError(f"Thumbnail {value} was readable when the catalog was checked and is not "
                                       f"now: {error}") from None

    def image_path(self, row: int) -> Path | str:
        """The original file of row ``row`` on disk (written once, never re-encoded), for serving; for a
        catalog of URL references, the URL itself (the visitor's browser fetches it)."""
        reference = self.reference(row)
        if reference is not None and is_url(reference):
            return reference
        path = self._thumbnail_paths.get(row)
        if path is None or not path.is_file():  # not written yet, or removed by a /tmp cleaner since
            data = self.image_bytes(row)
            path = self._thumbnail_paths[row] = self._thumbnails.file(f"{row}{_extension(data)}", data)
        return path

    def gallery_source(self, row: int) -> str:
        """What a gallery shows for row ``row``: for a catalog of URL references, the URL (the visitor's
        browser fetches it); else the path of the original file in :attr:`thumbnail_folder`."""
        reference = self.reference(row)
        if reference is not None and is_url(reference):
            return reference
        return str(self.image_path(row))

    @property
    def thumbnail_folder(self) -> Path:
        """The folder :meth:`image_path` writes this catalog's thumbnails to (a server serves it in place)."""
        return self._thumbnails.folder

    def search(self, query: str, limit: int = 50) -> list[int]:
        """Live rows whose title contains ``query`` (case-insensitive), in catalog order."""
        needle = " ".join(query.split()).casefold()
        live = self.removed.live
        return list(islice((row for row, title in enumerate(self._lower_titles) if live[row] and needle in title),
                           limit))


class ThumbnailFolder:
    """Catalog thumbnails as files, for Gradio to serve in place: ``<private folder>/<key>/<row>.<ext>``.

    - The private folder is made once per process by :func:`tempfile.mkdtemp` (an unpredictable
      name, mode 0700) and removed at exit: Gradio serves whatever is in it, so nobody else on the
      machine may put files there.
    - ``key`` is the catalog file's checksum: a rebuilt bundle with the same ids but new pictures
      gets a folder of its own, never the old files.
    - Each writer writes its own temporary file and renames it into place (``os.replace``, atomic):
      concurrent first requests for a row all get the whole file.
    """

    _root: Path | None = None
    _root_lock = threading.Lock()

    def __init__(self, key: str):
        self.key = key

    @classmethod
    def root(cls) -> Path:
        with cls._root_lock:
            if cls._root is None:
                cls._root = Path(tempfile.mkdtemp(prefix="video-recommender-thumbnails-"))
                atexit.register(shutil.rmtree, cls._root, ignore_errors=True)
            return cls._root

    @property
    def folder(self) -> Path:
        """This catalog's folder (made when the first thumbnail is written)."""
        return self.root() / self.key

    def file(self, name: str, data: bytes) -> Path:
        """``name`` in this catalog's folder, holding ``data`` (written by the first caller that needs it)."""
        folder = self.folder
        path = folder / name
        if path.is_file():
            return path
        folder.mkdir(mode=0o700, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path


def _extension(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data.startswith(b"GIF8"):
        return ".gif"
    return ".jpg"
