"""The catalog: one table of videos whose row order is the id space of every index.

Built once from a Hugging Face dataset id, a parquet file or an image folder
(:func:`load_catalog`), validated row by row, then saved into the bundle as parquet with
the original image bytes (never re-encoded). At serving time :class:`Catalog` gives fast
access to ids, titles, metadata and images by row.
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
from .tombstones import Tombstones

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "Ransaka/youtube_recommendation_data"
#: Columns looked for, in order, when no id column is named.
ID_COLUMN_CANDIDATES = ("item_id", "id", "video_id")
RESERVED_COLUMNS = ("item_id", "title", "image")


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


def _image_bytes(value: object) -> bytes:
    """Original encoded bytes of a ``datasets.Image(decode=False)`` cell."""
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
    warning); ids never shift because a default id is the row's position in the source.
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
    if isinstance(raw.features.get(image_column), datasets.Image):
        raw = raw.cast_column(image_column, datasets.Image(decode=False))

    metadata_columns = [c for c in raw.column_names if c not in (image_column, title_column, id_column)
                        and c not in RESERVED_COLUMNS]
    rows: dict[str, list] = {"item_id": [], "title": [], "image": []} | {c: [] for c in metadata_columns}
    skipped: list[SkippedRow] = []
    seen: set[str] = set()
    for position, record in enumerate(tqdm(raw, total=len(raw), desc="Validating catalog", unit="item")):
        item_id = str(record[id_column]) if id_column else str(position)
        reason = _problem(record, image_column, title_column)
        if reason is None and item_id in seen:
            reason = "duplicate item id"
        if reason is not None:
            skipped.append(SkippedRow(position, item_id, reason))
            continue
        seen.add(item_id)
        rows["item_id"].append(item_id)
        rows["title"].append(" ".join(record[title_column].split()))
        rows["image"].append({"bytes": _image_bytes(record[image_column]), "path": None})
        for column in metadata_columns:
            rows[column].append(record[column])
    if skipped:
        named = ", ".join(f"#{s.position} ({s.item_id}: {s.reason})" for s in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        warnings.warn(f"Skipped {len(skipped)} of {len(raw)} rows: {named}{more}.", stacklevel=2)
    if not rows["item_id"]:
        raise CatalogError(f"No usable rows in {source}: all {len(raw)} were skipped.")
    features = datasets.Features(
        {"item_id": datasets.Value("string"), "title": datasets.Value("string"), "image": datasets.Image()}
        | {c: raw.features[c] for c in metadata_columns}
    )
    return Catalog(datasets.Dataset.from_dict(rows, features=features)), skipped


def _problem(record: dict, image_column: str, title_column: str) -> str | None:
    title = record[title_column]
    if not isinstance(title, str) or not title.strip():
        return "missing or blank title"
    try:
        load_image(_image_bytes(record[image_column]))
    except (InvalidQueryError, ValueError, OSError) as error:
        return f"bad image ({error})"
    return None


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
        self.dataset = dataset.cast_column("image", datasets.Image(decode=False))
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
        self.dataset.cast_column("image", datasets.Image()).to_parquet(str(path))

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
        return _image_bytes(self.dataset[row]["image"])

    def image(self, row: int) -> Image.Image:
        return load_image(self.image_bytes(row))

    def iter_image_bytes(self, batch_size: int = 256) -> Iterable[bytes]:
        """All images in row order, read in batches (fast for large catalogs)."""
        for start in range(0, len(self), batch_size):
            for value in self.dataset[start:start + batch_size]["image"]:
                yield _image_bytes(value)

    def image_path(self, row: int) -> Path:
        """The original file of row ``row`` on disk (written once, never re-encoded), for serving."""
        path = self._thumbnail_paths.get(row)
        if path is None or not path.is_file():  # not written yet, or removed by a /tmp cleaner since
            data = self.image_bytes(row)
            path = self._thumbnail_paths[row] = self._thumbnails.file(f"{row}{_extension(data)}", data)
        return path

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

    def file(self, name: str, data: bytes) -> Path:
        """``name`` in this catalog's folder, holding ``data`` (written by the first caller that needs it)."""
        folder = self.root() / self.key
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
