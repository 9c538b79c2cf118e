"""Vector shards: a bundle's vectors as ``.npy`` files on disk, written in streamed batches and served
memory-mapped, so neither building nor serving holds a large catalog's vectors in RAM.

A build writes each modality as shards of at most ``shard_rows`` rows (``vectors/image-00000.npy``,
...), in catalog row order, and records them in the manifest's ``vectors`` section::

    "vectors": {"image": {"dtype": "float16", "dimension": 864, "count": 2013,
                          "shards": [{"file": "vectors/image-00000.npy", "count": 2013}]}, "text": {...}}

The checksum of every shard is in the manifest's ``files``, like every other bundle file. Stored
vectors may be float16 (half the disk and page cache, for re-scoring); whatever is stored, rows
are read back as float32, the type FAISS and the ranking code work in. Bundles from before shards
(one ``image_vectors.npy`` / ``text_vectors.npy``) have no ``vectors`` section and load as before.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import BundleError

VECTORS_DIR = "vectors"
#: One million rows per shard: 3.5 GB of 864-d float32 image vectors, a file any filesystem and the Hub take.
DEFAULT_SHARD_ROWS = 1_000_000
VECTOR_DTYPES = ("float32", "float16")
#: Bytes before a shard's rows: the ``.npy`` magic, version and header, padded to this fixed size so the
#: header can be written before the row count is known and rewritten in place once it is.
NPY_PREAMBLE_BYTES = 128


class VectorShardWriter:
    """Appends row batches of one modality to ``<folder>/vectors/<modality>-NNNNN.npy`` shards.

    Rows go to disk as they come, once: each batch is appended to the open shard's ``.partial`` file
    after a fixed-size ``.npy`` header, and closing the shard writes the final row count into that
    header and renames the file. So memory stays one batch (plus page cache the OS may drop), whatever
    ``shard_rows`` is: collecting a shard's rows in RAM first held 5 KB an item, 1 GB at 200,000 items
    and twice that while joining them.
    """

    def __init__(self, folder: Path, modality: str, dimension: int, dtype: str = "float32",
                 shard_rows: int = DEFAULT_SHARD_ROWS):
        if dtype not in VECTOR_DTYPES:
            raise ValueError(f"Vector dtype must be one of {VECTOR_DTYPES}, got {dtype!r}.")
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be positive, got {shard_rows}.")
        self.folder, self.modality, self.dimension = Path(folder), modality, int(dimension)
        self.dtype, self.shard_rows = dtype, int(shard_rows)
        self.shards: list[dict] = []
        self._open: BinaryIO | None = None  # the open shard's raw rows, written as they come
        self._open_rows = 0
        (self.folder / VECTORS_DIR).mkdir(parents=True, exist_ok=True)

    def append(self, batch: np.ndarray) -> None:
        """Add rows (any float dtype, ``rows x dimension``) after the ones already written."""
        batch = np.asarray(batch)
        if batch.ndim != 2 or batch.shape[1] != self.dimension:
            raise ValueError(f"Expected rows of {self.dimension} values for {self.modality} vectors, got {batch.shape}.")
        while len(batch):
            if self._open is None:
                self._open = self._partial_path(len(self.shards)).open("wb")
                self._open.write(self._header(0))
            room = self.shard_rows - self._open_rows
            self._open.write(np.ascontiguousarray(batch[:room], dtype=self.dtype).tobytes())
            self._open_rows += min(room, len(batch))
            batch = batch[room:]
            if self._open_rows == self.shard_rows:
                self._flush()

    def close(self) -> dict:
        """Write the last partial shard; return the manifest entry of this modality."""
        if self._open is not None or not self.shards:
            self._flush()
        return {"dtype": self.dtype, "dimension": self.dimension, "count": sum(s["count"] for s in self.shards),
                "shards": list(self.shards)}

    def _partial_path(self, number: int) -> Path:
        return self.folder / VECTORS_DIR / f".{self.modality}-{number:05d}.npy.partial"

    def _header(self, rows: int) -> bytes:
        """The ``.npy`` (version 1.0) preamble of a ``rows x dimension`` shard, padded to
        :data:`NPY_PREAMBLE_BYTES` whatever ``rows`` is."""
        header = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(self.dtype)), "fortran_order": False,
                       "shape": (rows, self.dimension)})
        room = NPY_PREAMBLE_BYTES - len(np.lib.format.MAGIC_PREFIX) - 2 - 2 - 1  # version, length, newline
        if len(header) > room:
            raise ValueError(f"a {rows} x {self.dimension} shard's .npy header does not fit {NPY_PREAMBLE_BYTES} bytes")
        text = header.ljust(room) + "\n"
        return np.lib.format.MAGIC_PREFIX + bytes([1, 0]) + struct.pack("<H", len(text)) + text.encode("latin1")

    def _flush(self) -> None:
        """Close the open shard: its final row count into the header, then renamed into place."""
        number = len(self.shards)
        name = f"{VECTORS_DIR}/{self.modality}-{number:05d}.npy"
        if self._open is None:  # a catalog with no rows: its shard is the header alone
            self._open = self._partial_path(number).open("wb")
        self._open.seek(0)
        self._open.write(self._header(self._open_rows))
        self._open.close()
        self._partial_path(number).replace(self.folder / name)
        self.shards.append({"file": name, "count": self._open_rows})
        self._open, self._open_rows = None, 0


def shard_files(section: dict | None) -> list[str]:
    """Paths (relative to the bundle) of every shard a manifest's ``vectors`` section declares."""
    return [shard["file"] for modality in (section or {}).values() for shard in modality.get("shards", [])]


def open_vector_shards(folder: Path, entry: dict, expected_count: int) -> "StackedVectors | np.ndarray":
    """One modality's shards, memory-mapped and checked against the manifest entry and the catalog size.

    A single float32 shard comes back as its mapped array itself (see :func:`open_vectors`); anything
    else as :class:`StackedVectors`, which reads rows as float32.
    """
    parts = []
    for shard in entry.get("shards", []):
        path = Path(folder) / shard["file"]
        parts.append(open_vectors(path, int(shard["count"]), str(entry.get("dtype", "float32"))))
    count = sum(len(part) for part in parts)
    if count != expected_count or count != entry.get("count", count):
        raise BundleError(f"The vector shards of {folder} hold {count} rows but the catalog has {expected_count}. "
                          "Rebuild the bundle.")
    return stack_vectors(parts, f"{folder}")


def open_vectors(path: Path, expected_count: int, dtype: str = "float32") -> np.ndarray:
    """One ``.npy`` matrix memory-mapped (never unpickled), checked: ``expected_count`` rows of ``dtype``.

    It comes back as a plain read-only ``np.ndarray`` over the mapped pages (its ``base`` is the
    ``np.memmap``): ``np.memmap``'s subclass hooks would run on every row a query reads, and cost
    more than the read itself.
    """
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise BundleError(f"Vector file {path} cannot be read ({error}). Rebuild the bundle.") from None
    if vectors.ndim != 2 or vectors.shape[0] != expected_count or vectors.dtype != np.dtype(dtype):
        raise BundleError(f"Vector file {path} holds {vectors.shape} {vectors.dtype}, expected "
                          f"({expected_count}, dim) {dtype} for this catalog. Rebuild the bundle.")
    return vectors.view(np.ndarray)


def stack_vectors(parts: list[np.ndarray], where: str) -> "StackedVectors | np.ndarray":
    """``parts`` (in row order) as one matrix: the part itself when there is one float32 part, else a
    :class:`StackedVectors` view (no copy)."""
    if len({part.shape[1] for part in parts}) > 1:
        raise BundleError(f"The vector parts of {where} differ in dimension. Rebuild the bundle.")
    if len(parts) == 1 and parts[0].dtype == np.float32:
        return parts[0]
    return StackedVectors(parts)


class StackedVectors:
    """Several row-aligned matrices (memory-mapped shards, float32 or float16) seen as one read-only
    ``N x D`` float32 matrix: indexing reads only the rows asked for, from the shards that hold them.

    It supports what serving and building do with vectors: ``len``, ``shape``, ``[row]``,
    ``[start:stop]``, ``[rows]`` (integer array or boolean mask) and ``np.asarray`` (all rows: only for
    what must hold them anyway; :func:`iter_blocks` passes over them a block at a time).
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, parts: list[np.ndarray]):
        if not parts:
            raise ValueError("StackedVectors needs at least one part.")
        self.parts = parts
        self.offsets = np.cumsum([0, *(len(part) for part in parts)])
        self.shape = (int(self.offsets[-1]), int(parts[0].shape[1]))
        self.stored_dtype = np.result_type(*(part.dtype for part in parts))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            rows, columns = key[0], key[1:]
            return self[rows][(slice(None), *columns)] if not np.isscalar(rows) else self[rows][columns]
        if isinstance(key, (int, np.integer)):
            row = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} vectors")
            part = int(np.searchsorted(self.offsets, row, side="right")) - 1
            return np.asarray(self.parts[part][row - self.offsets[part]], dtype=np.float32)
        if isinstance(key, slice):
            return self._take(np.arange(*key.indices(len(self))))
        rows = np.asarray(key)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {rows.shape} for {len(self)} vectors")
            rows = np.flatnonzero(rows)
        return self._take(rows.astype(np.int64, copy=False))

    def _take(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((*rows.shape, self.shape[1]), dtype=np.float32)
        if rows.size == 0:
            return out
        flat = rows.reshape(-1)
        flat = np.where(flat < 0, flat + len(self), flat)
        if flat.min() < 0 or flat.max() >= len(self):
            raise IndexError(f"rows out of range for {len(self)} vectors")
        target = out.reshape(-1, self.shape[1])
        part_of = np.searchsorted(self.offsets, flat, side="right") - 1
        for part in np.unique(part_of):
            chosen = part_of == part
            target[chosen] = self.parts[part][flat[chosen] - self.offsets[part]]
        return out

    def __array__(self, dtype=None, copy=None):
        whole = self._take(np.arange(len(self)))
        return whole if dtype is None else whole.astype(dtype, copy=False)


def iter_blocks(vectors: np.ndarray | StackedVectors, rows: int = 65_536):
    """``(start, float32 block)`` of any vector matrix in row order: shard-friendly passes for index
    building (a block at a time instead of every vector at once)."""
    for start in range(0, len(vectors), rows):
        yield start, np.ascontiguousarray(vectors[start:start + rows], dtype=np.float32)
