"""Live updates of a bundle in place: ``add`` videos, ``remove`` them, ``compact`` the result.

Nothing is retrained. ``add`` embeds new videos with the bundle's own thumbnail encoder, title
head and text model, exactly as a build would have, and writes them as a new *segment*
(:mod:`recommender.data.live`); ``remove`` writes a new tombstone file; both then replace the
manifest, which is the one switch between revisions. Every new file gets a name no earlier
revision used, and ``manifest.json`` is replaced by a rename only once they are all written: a crash
at any point leaves the previous revision complete and loadable (the next update clears what the
crash left). ``compact`` rewrites the bundle without its removed rows, with segments folded into
the base, and swaps folders the way ``train build --overwrite`` does.

The encoder and the title head were fitted on the bundle's first ``trained_rows`` rows; the
manifest counts the live items added since, and ``add`` warns once they pass
:data:`DRIFT_WARNING_SHARE` of the catalog: time to rebuild (docs/live-catalog.md has the measurements).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy as np

from recommender.data.bundle import (
    FILES,
    LIVE_FORMAT_VERSION,
    MANIFEST,
    OPTIONAL_FILES,
    bundle_files,
    read_manifest,
    write_manifest,
)
from recommender.data.catalog import Catalog, SkippedRow, load_catalog
from recommender.data.live import SEGMENT_FILES, SEGMENTS_DIR, BundleParts, live_section
from recommender.data.tombstones import Tombstones
from recommender.engine import Recommender
from recommender.errors import BundleError, CatalogError
from recommender.search.index import empty_like, load_index, save_index, search_live

from .build import embed_thumbnail_arrays, replace_folder
from .trainer import catalog_arrays

logger = logging.getLogger(__name__)

#: ``add`` warns when more than this share of the live catalog was added after the encoder and the
#: title head were trained: where P@10 on the dev catalog starts to fall below a full rebuild's.
DRIFT_WARNING_SHARE = 0.3
TOMBSTONES = "tombstones-{revision:06d}.json"
LOCK = ".live.lock"


@dataclass
class LiveUpdate:
    """What a live update did, for the command line and for tests."""

    operation: str
    revision: int
    rows: int  # rows appended (add) or removed (remove, compact)
    items: int  # live items afterwards
    added_since_training: int
    seconds: float
    replaced: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)

    @property
    def drift_share(self) -> float:
        """Share of the live catalog the encoder and title head never saw."""
        return self.added_since_training / self.items if self.items else 0.0


def add_items(bundle: str | Path, source: str | Path, *, image_column: str = "image", title_column: str = "title",
              id_column: str | None = None, dataset_revision: str | None = None, limit: int | None = None,
              update: bool = False, text_model: str | None = None, show_progress_bar: bool = True) -> LiveUpdate:
    """Append the videos of ``source`` (anything ``train build`` reads) to ``bundle``.

    An id the bundle already serves is skipped with a warning or, with ``update``, replaces the old
    row (which is tombstoned; the new version is appended). ``text_model`` overrides the manifest's
    model path (e.g. a local copy) and must be the same model.
    """
    bundle = Path(bundle)
    started = time.perf_counter()
    with _exclusive(bundle):
        recommender = Recommender.load(bundle, text_model=text_model)
        manifest = recommender.manifest
        _remove_garbage(bundle, manifest)
        incoming, skipped = load_catalog(source, image_column=image_column, title_column=title_column,
                                         id_column=id_column, revision=dataset_revision, limit=limit)
        keep, replaced_rows, duplicates = _sort_ids(recommender.catalog, incoming, update)
        if duplicates:
            skipped += duplicates
            named = ", ".join(item.item_id for item in duplicates[:20])
            more = f" and {len(duplicates) - 20} more" if len(duplicates) > 20 else ""
            warnings.warn(f"Skipped {len(duplicates)} video(s) the bundle already has: {named}{more}. Pass "
                          "--update to replace them (a source without an id column numbers its videos from 0: "
                          "name one with --id-column).", stacklevel=2)
        live = live_section(manifest)
        if not keep:
            logger.warning("Nothing to add: every video of %s was skipped; %s is unchanged.", source, bundle)
            return LiveUpdate("add", live["revision"], 0, recommender.catalog.live_count,
                              live["added_since_training"], time.perf_counter() - started, 0, skipped)
        new_rows = Catalog(_conformed(incoming.dataset.select(keep), recommender.catalog.dataset.features))
        revision = live["revision"] + 1
        segment = f"{SEGMENTS_DIR}/{revision:06d}"
        written = [segment]
        try:
            files = _write_segment(bundle, segment, recommender, new_rows, show_progress_bar)
            count = len(recommender.catalog) + len(new_rows)
            removed = recommender.catalog.removed.with_rows(replaced_rows, count)
            tombstones = live["tombstones"]
            if replaced_rows:
                tombstones = _write_tombstones(bundle, revision, removed, recommender.catalog.item_ids + new_rows.item_ids)
                written.append(tombstones["file"])
            segments = [*live["segments"], {"path": segment, "count": len(new_rows), "files": files,
                                            "source": str(source), "created": _now()}]
            manifest = _commit(bundle, manifest, revision, count, removed, segments, tombstones)
        except BaseException:
            _discard(bundle, written)
            raise
        _remove_garbage(bundle, manifest)
    update_report = LiveUpdate("add", revision, len(new_rows), removed.live_count,
                               manifest["live"]["added_since_training"], time.perf_counter() - started,
                               len(replaced_rows), skipped)
    _warn_about_drift(update_report)
    return update_report


def remove_items(bundle: str | Path, item_ids: list[str]) -> LiveUpdate:
    """Tombstone ``item_ids`` in ``bundle``: no query finds them from then on.

    Unknown ids are an error and change nothing (a typo must not pass silently); ids already
    removed are skipped with a warning.
    """
    bundle = Path(bundle)
    started = time.perf_counter()
    with _exclusive(bundle):
        manifest = read_manifest(bundle, verify=True)
        _remove_garbage(bundle, manifest)
        catalog = BundleParts(bundle, manifest).catalog()
        wanted = list(dict.fromkeys(str(item).strip() for item in item_ids if str(item).strip()))
        if not wanted:
            raise CatalogError("Name at least one item id to remove.")
        rows, unknown, gone = [], [], []
        for item in wanted:
            row = catalog.lookup(item)
            if row is None:
                unknown.append(item)
            elif row in catalog.removed:
                gone.append(item)
            else:
                rows.append(row)
        if unknown:
            raise CatalogError(f"{len(unknown)} id(s) are not in {bundle}: {', '.join(map(repr, unknown[:20]))}. "
                               "Nothing was removed.")
        if gone:
            warnings.warn(f"Already removed, skipped: {', '.join(gone[:20])}.", stacklevel=2)
        live = live_section(manifest)
        if not rows:
            return LiveUpdate("remove", live["revision"], 0, catalog.live_count, live["added_since_training"],
                              time.perf_counter() - started)
        revision = live["revision"] + 1
        removed = catalog.removed.with_rows(rows)
        tombstones = _write_tombstones(bundle, revision, removed, catalog.item_ids)
        try:
            manifest = _commit(bundle, manifest, revision, len(catalog), removed, live["segments"], tombstones)
        except BaseException:
            _discard(bundle, [tombstones["file"]])
            raise
        _remove_garbage(bundle, manifest)
    return LiveUpdate("remove", revision, len(rows), removed.live_count, manifest["live"]["added_since_training"],
                      time.perf_counter() - started)


def compact_bundle(bundle: str | Path) -> LiveUpdate:
    """Rewrite ``bundle`` as one base without its removed rows: segments folded in, no tombstones.

    Live rows keep their order, vectors and title-head folds; each index is rebuilt from the live
    vectors with the same structure and training (an HNSW graph cannot drop nodes). The new bundle
    is written beside the old one and swapped in by renames, like ``train build --overwrite``.
    """
    from recommender.encoders.thumbnails import ThumbnailEncoder

    bundle = Path(bundle)
    started = time.perf_counter()
    staging = bundle.with_name(bundle.name + ".partial")
    with _exclusive(bundle):
        manifest = read_manifest(bundle, verify=True)
        parts = BundleParts(bundle, manifest)
        catalog = parts.catalog()
        keep = catalog.live_rows()
        if not len(keep):
            raise CatalogError(f"Every item of {bundle} was removed: there is nothing to compact. Build a new bundle.")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir()
            _link_or_copy(bundle, staging, [FILES["encoder_weights"], FILES["encoder_config"]] + [
                name for name in os.listdir(bundle) if (bundle / name).is_dir() and name != SEGMENTS_DIR])
            Catalog(catalog.dataset.select(keep)).save(staging / FILES["catalog"])
            base_rows = parts.counts(len(catalog))[0]
            for modality in ("image", "text"):
                vectors = parts.vectors(modality, len(catalog))
                np.save(staging / FILES[f"{modality}_vectors"], vectors[keep], allow_pickle=False)
                # The base index gives the structure and training (IVF centroids, PQ codebooks, HNSW settings).
                index = empty_like(load_index(bundle / FILES[f"{modality}_index"], base_rows, vectors.shape[1]))
                index.add(np.ascontiguousarray(vectors[keep]))
                save_index(index, staging / FILES[f"{modality}_index"])
            if manifest.get("title_head"):
                encoder = ThumbnailEncoder.load(bundle / FILES["encoder_weights"], bundle / FILES["encoder_config"])
                head = parts.title_head(len(catalog), encoder.dimension)
                replace(head, folds=head.folds[keep]).save(staging / OPTIONAL_FILES["title_head"])
            live = live_section(manifest)
            trained = int(catalog.removed.live[:live["trained_rows"]].sum())
            compacted = {**manifest, "format_version": 1, "count": len(keep), "updated": _now(),
                         "live": {**live, "revision": live["revision"] + 1, "trained_rows": trained,
                                  "added_since_training": len(keep) - trained, "segments": [], "tombstones": None}}
            compacted.pop("files", None)
            compacted.pop("vectors", None)  # the compacted vectors are the single files written above
            write_manifest(staging, compacted)
            replace_folder(staging, bundle)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return LiveUpdate("compact", compacted["live"]["revision"], len(catalog) - len(keep), len(keep),
                      compacted["live"]["added_since_training"], time.perf_counter() - started)


# -- add ----------------------------------------------------------------------------------------

def _sort_ids(catalog: Catalog, incoming: Catalog, update: bool) -> tuple[list[int], list[int], list[SkippedRow]]:
    """Positions of ``incoming`` to append, live rows they replace (``update``), and skipped duplicates."""
    keep, replaced, duplicates = [], [], []
    for position, item in enumerate(incoming.item_ids):
        row = catalog.lookup(item)
        if row is None or row in catalog.removed:
            keep.append(position)
        elif update:
            keep.append(position)
            replaced.append(row)
        else:
            duplicates.append(SkippedRow(position, item, "already in the bundle"))
    return keep, replaced, duplicates


def _conformed(table: datasets.Dataset, features: datasets.Features) -> datasets.Dataset:
    """``table`` with exactly the bundle catalog's columns and types: a metadata column the new videos
    lack is left empty, one the bundle lacks is dropped (both said in a warning)."""
    missing = [name for name in features if name not in table.column_names]
    extra = [name for name in table.column_names if name not in features]
    if missing:
        warnings.warn(f"The new videos have no {', '.join(missing)} column(s): left empty.", stacklevel=3)
    if extra:
        warnings.warn(f"The bundle's catalog has no {', '.join(extra)} column(s): not added.", stacklevel=3)
    table = table.remove_columns(extra)
    for name in missing:
        table = table.add_column(name, [None] * len(table))
    try:
        return table.select_columns(list(features)).cast(features)
    except (ValueError, TypeError) as error:
        raise CatalogError(f"The new videos' columns do not fit the bundle's catalog ({error}).") from None


def _write_segment(bundle: Path, segment: str, recommender: Recommender, rows: Catalog,
                   show_progress_bar: bool) -> dict[str, str]:
    """Embed ``rows`` as a build would and write their segment files; their paths by role."""
    partial = bundle / (segment + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    encoder = recommender.thumbnail_encoder
    features = embed_thumbnail_arrays(encoder, catalog_arrays(rows, encoder.config), show_progress_bar)
    text_vectors = recommender.title_encoder.encode(rows.titles, show_progress_bar=show_progress_bar)
    image_vectors, head = features, recommender.title_head
    roles = [role for role in SEGMENT_FILES if role != "title_folds" or head is not None]
    if head is not None:
        # Each new video is predicted by the fold of the live item it looks most like, as an upload is.
        _, nearest = search_live(recommender.image_index, head.looks_query(features), 1, recommender.catalog.removed)
        nearest = np.maximum(nearest[:, 0], 0)
        image_vectors = head.join(features, head.predict(features, nearest))
        np.save(partial / SEGMENT_FILES["title_folds"], head.folds[nearest].astype(np.int32), allow_pickle=False)
    rows.save(partial / SEGMENT_FILES["catalog"])
    for modality, vectors in (("image", image_vectors), ("text", text_vectors)):
        np.save(partial / SEGMENT_FILES[f"{modality}_vectors"], vectors, allow_pickle=False)
        index = empty_like(getattr(recommender, f"{modality}_index"))
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        save_index(index, partial / SEGMENT_FILES[f"{modality}_index"])
    partial.rename(bundle / segment)
    return {role: f"{segment}/{SEGMENT_FILES[role]}" for role in roles}


# -- shared -------------------------------------------------------------------------------------

def _write_tombstones(bundle: Path, revision: int, removed: Tombstones, item_ids: list[str]) -> dict:
    """A new tombstone file for this revision: every removed row so far."""
    name = TOMBSTONES.format(revision=revision)
    removed.save(bundle / name, item_ids)
    return {"file": name, "count": len(removed)}


def _commit(bundle: Path, manifest: dict, revision: int, count: int, removed: Tombstones, segments: list[dict],
            tombstones: dict | None) -> dict:
    """Write the new revision's manifest (the switch): counts, parts, drift, and checksums of new files only."""
    live = live_section(manifest)
    trained = live["trained_rows"] if live["trained_rows"] is not None else manifest["count"]
    new = {**manifest, "format_version": LIVE_FORMAT_VERSION, "count": count, "updated": _now(),
           "live": {**live, "revision": revision, "trained_rows": trained,
                    "added_since_training": int(removed.live[trained:].sum()), "segments": segments,
                    "tombstones": tombstones}}
    known = new.pop("files", {})
    return write_manifest(bundle, new, known=known)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _warn_about_drift(update: LiveUpdate) -> None:
    if update.drift_share > DRIFT_WARNING_SHARE:
        logger.warning("%.0f%% of the catalog (%d of %d items) was added after the thumbnail encoder and the title "
                       "head were trained; above %.0f%%, quality falls below a full rebuild's "
                       "(docs/live-catalog.md). Rebuild the bundle with `python -m train build`.",
                       100 * update.drift_share, update.added_since_training, update.items,
                       100 * DRIFT_WARNING_SHARE)


def _discard(bundle: Path, written: list[str | None]) -> None:
    """Remove what a failed update wrote (the manifest still names only the previous revision's files)."""
    for name in filter(None, written):
        path = bundle / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        shutil.rmtree(bundle / (name + ".partial"), ignore_errors=True)


def _remove_garbage(bundle: Path, manifest: dict) -> None:
    """Delete segments and tombstone files the manifest does not name: left by a crash, or replaced."""
    named = set(bundle_files(manifest))
    segments = bundle / SEGMENTS_DIR
    for folder in sorted(segments.iterdir()) if segments.is_dir() else []:
        if not any(name.startswith(f"{SEGMENTS_DIR}/{folder.name}/") for name in named):
            shutil.rmtree(folder, ignore_errors=True)
    for path in bundle.glob(TOMBSTONES.replace("{revision:06d}", "*")):
        if path.name not in named:
            path.unlink(missing_ok=True)
    (bundle / (MANIFEST + ".partial")).unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path, names: list[str]) -> None:
    """Files and folders of the old bundle the compacted one keeps unchanged: hard links where possible."""
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, copy_function=_link_file)
        elif (source / name).exists():
            _link_file(source / name, target / name)


def _link_file(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@contextmanager
def _exclusive(bundle: Path) -> Iterator[None]:
    """One live update of a bundle at a time: two at once would lose one's revision. The lock is a hidden
    file in the bundle folder (never declared in the manifest, never pushed)."""
    if not (bundle / MANIFEST).is_file():
        raise BundleError(f"{bundle} is not a bundle: {MANIFEST} is missing. Build one with `python -m train build`.")
    with open(bundle / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BundleError(f"Another live update of {bundle} is running; try again when it has finished.") from None
        yield
