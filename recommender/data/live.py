"""The live part of a bundle: videos appended by ``train add`` and removed by ``train remove``.

What ``train build`` writes is the bundle's *base*. ``train add`` never rewrites a base file: it
writes a *segment*, a folder ``segments/<revision>/`` holding the same kinds of files for the new
rows only (catalog rows, image and text vectors, image and text FAISS indexes with just those
entries, and ``title_folds.npy``, the title-head fold of each new item), and declares it in the
manifest's ``live`` section. Rows are numbered base first, then the segments in order, so once
:class:`BundleParts` joins them at load time row i of the catalog is still vector i of every index.
``train remove`` writes a tombstone file (:mod:`.tombstones`); ``train compact`` folds everything
back into one base. Appending new files instead of rewriting old ones keeps an update small, which
is what ``train push`` uploads, and lets the manifest be the one file that switches revisions.

The section, as the manifest holds it::

    "live": {
      "revision": 3,                  # live updates since the build
      "trained_rows": 2013,           # leading rows the thumbnail encoder and title head were fitted on
      "added_since_training": 1000,   # live rows after those (the encoder and head never saw them)
      "segments": [{"path": "segments/000001", "count": 1000, "source": "new.parquet", "created": "...",
                    "files": {"catalog": "segments/000001/catalog.parquet", ...}}],
      "tombstones": {"file": "tombstones-000003.json", "count": 2}
    }
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import faiss
import numpy as np

from ..encoders.title_head import TitleHead
from ..errors import BundleError
from ..search.config import SearchConfig
from ..search.index import (
    append_index,
    apply_search_config,
    is_hnsw,
    load_index,
    shard_files,
)
from .bundle import FILES, OPTIONAL_FILES
from .catalog import Catalog
from .index_cache import JoinedIndexCache, cache_folder
from .vectors import StackedVectors, open_vector_shards, open_vectors, stack_vectors

SEGMENTS_DIR = "segments"
#: The files of a segment, by role: the base's names, and the title-head folds of its rows.
SEGMENT_FILES = {role: FILES[role] for role in ("catalog", "image_vectors", "text_vectors", "image_index",
                                                 "text_index")} | {"title_folds": "title_folds.npy"}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def live_section(manifest: dict) -> dict:
    """The manifest's ``live`` section with its defaults: a freshly built bundle is revision 0, trained
    on all its rows, with no segments and no tombstones."""
    live = dict(manifest.get("live") or {})
    live.setdefault("revision", 0)
    live.setdefault("trained_rows", manifest.get("count"))
    live.setdefault("added_since_training", 0)
    live.setdefault("segments", [])
    live.setdefault("tombstones", None)
    return live


class BundleParts:
    """Where a bundle's rows live: the base files, then each appended segment, in row order."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = Path(folder)
        self.checksums: dict[str, str] = manifest.get("files", {})
        live = live_section(manifest)
        self.segments: list[dict] = live["segments"]
        self.sharded: dict = manifest.get("vectors") or {}
        self.tombstones: str | None = (live["tombstones"] or {}).get("file")

    def counts(self, rows: int) -> list[int]:
        """Rows of the base and of each segment, in a bundle of ``rows`` rows."""
        appended = [int(segment["count"]) for segment in self.segments]
        if rows - sum(appended) < 0:
            raise BundleError(f"{self.folder} declares {sum(appended)} appended rows but has {rows} in all. "
                              "Rebuild the bundle.")
        return [rows - sum(appended), *appended]

    def _paths(self, role: str) -> list[Path]:
        """The base's file of ``role``, then each segment's."""
        return [self.folder / FILES[role], *self._segment_paths(role)]

    def _segment_paths(self, role: str) -> list[Path]:
        return [self.folder / segment["files"][role] for segment in self.segments]

    def catalog(self) -> Catalog:
        """Every part's catalog rows, joined, with the bundle's tombstones. Its thumbnail folder is keyed
        on the checksums of every catalog part, so another revision's pictures never pass for these."""
        paths = self._paths("catalog")
        sums = [self.checksums.get(str(path.relative_to(self.folder))) for path in paths]
        key = None if None in sums else sums[0] if len(sums) == 1 else hashlib.sha256("".join(sums).encode()).hexdigest()
        return Catalog.load(paths, self.folder / self.tombstones if self.tombstones else None, checksum=key)

    def vectors(self, modality: str, rows: int) -> np.ndarray | StackedVectors:
        """One modality's vectors of every part, memory-mapped and joined without a copy (each part checked
        against its row count): the base's shards (or its single file, in bundles from before shards),
        then each segment's file."""
        counts = self.counts(rows)
        if modality in self.sharded:
            base = open_vector_shards(self.folder, self.sharded[modality], counts[0])
            base_parts = list(base.parts) if isinstance(base, StackedVectors) else [base]
        else:
            base_parts = [open_vectors(self.folder / FILES[f"{modality}_vectors"], counts[0])]
        segments = [open_vectors(path, count) for path, count in zip(self._segment_paths(f"{modality}_vectors"),
                                                                     counts[1:])]
        return stack_vectors(base_parts + segments, f"{self.folder}'s {modality} vectors")

    def index(self, modality: str, vectors: np.ndarray, search: SearchConfig) -> faiss.Index:
        """The base index of one modality with every segment's entries appended, searching as ``search`` says.

        Where appending means inserting vectors (HNSW), the joined index is cached on local disk
        (:mod:`.index_cache`): a later load of the same parts reads it instead of inserting again."""
        paths, counts = self._paths(f"{modality}_index"), self.counts(len(vectors))
        dimension = vectors.shape[1]
        cache = self._joined_cache(modality)
        found = cache.longest(counts, dimension) if cache is not None else None
        joined, index = found if found is not None else (0, load_index(paths[0], counts[0], dimension, search))
        start = sum(counts[:joined + 1])
        for path, count in zip(paths[joined + 1:], counts[joined + 1:]):
            append_index(index, load_index(path, count, dimension, search), vectors[start:start + count])
            start += count
        if cache is not None and joined < len(self.segments) and is_hnsw(index):
            cache.store(index)
        apply_search_config(index, search)
        return index

    def _joined_cache(self, modality: str) -> JoinedIndexCache | None:
        """The cache of this modality's joined indexes; ``None`` without segments, with the cache off, or
        where the manifest lacks a checksum of a part (nothing then names the join reliably)."""
        folder = cache_folder()
        if not self.segments or folder is None:
            return None
        base = self.folder / FILES[f"{modality}_index"]
        base_files = [base, *shard_files(base)] if base.is_file() else [base]
        segment_files = [[self.folder / segment["files"][f"{modality}_{role}"] for role in ("index", "vectors")]
                         for segment in self.segments]
        sums = [[self.checksums.get(path.relative_to(self.folder).as_posix()) for path in files]
                for files in (base_files, *segment_files)]
        if any(None in part for part in sums):
            return None
        return JoinedIndexCache(folder, [" ".join(part) for part in sums])

    def title_head(self, rows: int, feature_dimension: int) -> TitleHead:
        """The base's title head, its per-item folds extended by every segment's."""
        counts = self.counts(rows)
        head = TitleHead.load(self.folder / OPTIONAL_FILES["title_head"], counts[0], feature_dimension)
        if not self.segments:
            return head
        folds = [head.folds]
        for path, count in zip(self._segment_paths("title_folds"), counts[1:]):
            try:
                part = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as error:
                raise BundleError(f"Title folds {path} cannot be read ({error}). Rebuild the bundle.") from None
            if part.shape != (count,) or (count and not 0 <= part.min() <= part.max() < head.weights.shape[0]):
                raise BundleError(f"Title folds {path} do not fit this bundle ({part.shape}, expected ({count},) "
                                  f"folds below {head.weights.shape[0]}). Rebuild the bundle.")
            folds.append(part.astype(np.int32))
        return dataclasses.replace(head, folds=np.concatenate(folds))


def describe_revision(manifest: dict, folder: Path | None = None, live_items: int | None = None) -> dict:
    """Which revision of a bundle this is, for ``/info`` and the banner: a short digest of its manifest,
    the Hub commit when it was loaded from a Hub snapshot, its live-update counter and item count."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()[:12]
    commit = None
    if folder is not None and Path(folder).parent.name == "snapshots" and _COMMIT.match(Path(folder).name):
        commit = Path(folder).name
    live = live_section(manifest)
    return {"id": commit[:8] if commit else digest, "manifest": digest, "commit": commit,
            "live_revision": live["revision"], "items": live_items if live_items is not None else manifest.get("count"),
            "added_since_training": live["added_since_training"], "created": manifest.get("updated") or
            manifest.get("created")}
