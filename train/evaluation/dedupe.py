"""Dedupe calibration: the thumbnail-feature cosine at which two results are the same picture.

``recommend(dedupe=True)`` folds a result into a higher-ranked one whose autoencoder features (the
looks part of an image vector, without the title head's prediction) are at least
``SearchConfig.dedupe_threshold`` similar. A threshold is good when the same picture collapses and
distinct videos do not, so this measures, for a grid of thresholds:

- re-uploads: sampled catalog thumbnails altered as re-uploads alter them (JPEG recompression,
  resize, a small crop, as :mod:`.reupload` makes them) against their original: share that collapses;
- known duplicates: catalog pairs holding the same picture, found without the encoder (identical
  bytes, or pixels within :data:`SAME_PICTURE_RMS` at a small size): share that collapses;
- distinct videos: each live item's most similar other video of its own label (e.g. channel, where
  videos look most alike) and of any label, known duplicates left out: share that would wrongly collapse.

The recommended threshold is the lowest of the grid whose same-label false-collapse rate is at most
``tolerance``: the lowest that keeps distinct videos apart collapses the most re-uploads.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import ClassVar

import faiss
import numpy as np
from PIL import Image

from recommender.data.catalog import Catalog
from recommender.search.index import normalize

from .base import NOT_SAVED, EvaluationContext, EvaluationResult
from .reupload import Reupload, reupload_queries, thumbnail_features

#: How re-uploads differ from their original: each alteration alone, then all three at once.
DEDUPE_VARIANTS = {
    "JPEG q30": Reupload(crop=0.0, jpeg_quality=30),
    "half size": Reupload(crop=0.0, scale=0.5),
    "crop 4%": Reupload(crop=0.04),
    "crop 4% + half size + JPEG q30": Reupload(crop=0.04, scale=0.5, jpeg_quality=30),
}
THRESHOLDS = (0.98, 0.985, 0.99, 0.991, 0.992, 0.993, 0.994, 0.995, 0.996, 0.997, 0.998, 0.999)
#: Two thumbnails are the same picture when their root-mean-square pixel difference (0-255) at
#: :data:`PIXEL_SIZE` is at most this: re-encodings differ by about 1, distinct videos by 30 or more.
SAME_PICTURE_RMS = 4.0
PIXEL_SIZE = (32, 18)
#: Other videos searched per item for its most similar distinct one of any label.
NEIGHBOURS = 16


def pixels(images: list[bytes]) -> np.ndarray:
    """Thumbnails as float32 RGB vectors at :data:`PIXEL_SIZE` (what "the same picture" is judged on)."""
    out = np.empty((len(images), PIXEL_SIZE[0] * PIXEL_SIZE[1] * 3), dtype=np.float32)
    for position, data in enumerate(images):
        image = Image.open(io.BytesIO(data)).convert("RGB").resize(PIXEL_SIZE, Image.Resampling.BOX)
        out[position] = np.asarray(image, dtype=np.float32).ravel()
    return out


def known_duplicates(catalog: Catalog, rows: np.ndarray, max_rms: float = SAME_PICTURE_RMS) -> np.ndarray:
    """``(pairs, 2)`` catalog rows (ascending within and across pairs) whose thumbnails are the same picture:
    identical bytes, or an RMS pixel difference of at most ``max_rms`` (an exact range search over pixels)."""
    images = [catalog.image_bytes(row) for row in rows.tolist()]
    pairs: set[tuple[int, int]] = set()
    first_of: dict[str, int] = {}
    for row, data in zip(rows.tolist(), images):
        digest = hashlib.sha256(data).hexdigest()
        if digest in first_of:
            pairs.add((first_of[digest], row))
        first_of.setdefault(digest, row)
    vectors = pixels(images)
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    limits, _, found = index.range_search(vectors, max_rms ** 2 * vectors.shape[1])
    for position in range(len(rows)):
        for other in found[limits[position]:limits[position + 1]].tolist():
            if other > position:
                pairs.add((int(rows[position]), int(rows[other])))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def nearest_distinct(features: np.ndarray, labels: np.ndarray, rows: np.ndarray,
                     duplicates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``rows``: feature cosine of its most similar other row with the same label and with any
    label (``-inf`` where there is none), known duplicate pairs left out."""
    twins = {(int(a), int(b)) for a, b in duplicates} | {(int(b), int(a)) for a, b in duplicates}
    same_label = np.full(len(rows), -np.inf, dtype=np.float32)
    position_of = {int(row): position for position, row in enumerate(rows)}
    for code in np.unique(labels[rows][labels[rows] >= 0]):
        members = rows[labels[rows] == code]
        if len(members) < 2:
            continue
        cosine = features[members] @ features[members].T
        np.fill_diagonal(cosine, -np.inf)
        member_position = {int(member): i for i, member in enumerate(members)}
        for a, b in twins:
            if a in member_position and b in member_position:
                cosine[member_position[a], member_position[b]] = -np.inf
        for member, best in zip(members.tolist(), cosine.max(axis=1).tolist()):
            same_label[position_of[member]] = best
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(np.ascontiguousarray(features[rows], dtype=np.float32))
    scores, found = index.search(np.ascontiguousarray(features[rows], dtype=np.float32), min(NEIGHBOURS, len(rows)))
    any_label = np.full(len(rows), -np.inf, dtype=np.float32)
    for position, row in enumerate(rows.tolist()):
        for score, other in zip(scores[position].tolist(), found[position].tolist()):
            other_row = int(rows[other]) if other >= 0 else -1
            if other_row not in (-1, row) and (row, other_row) not in twins:
                any_label[position] = score
                break
    return same_label, any_label


@dataclass(frozen=True)
class DedupeRates:
    """At one threshold: the share of each kind of pair whose features are at least that similar."""

    threshold: float
    reuploads: dict[str, float]  # variant -> share of re-uploads folded into their original (should be 1)
    known_duplicates: float | None  # share of known duplicate pairs folded (should be 1); None: none found
    distinct_same_label: float  # share of items with a distinct same-label video folded into it (should be 0)
    distinct_any_label: float  # the same over videos of any label

    @property
    def reuploads_all(self) -> float:
        return float(np.mean(list(self.reuploads.values())))


@dataclass(frozen=True)
class DedupeResult(EvaluationResult):
    """Collapse rates across thresholds and the recommended threshold."""

    label: str
    threshold: float  # recommended: lowest with distinct_same_label <= tolerance
    tolerance: float
    current: float | None  # the bundle's SearchConfig.dedupe_threshold, if it has one
    reupload_items: int  # thumbnails per re-upload variant
    live_items: int
    duplicate_pairs: list[tuple[str, str]]  # item ids of the known duplicates
    rates: list[DedupeRates]  # one per threshold, ascending
    #: Per-query cosines behind the rates (variant / "known duplicates" / "distinct same label" / "distinct any
    #: label" -> values), for the plot.
    cosines: dict[str, np.ndarray] = field(metadata=NOT_SAVED, repr=False, compare=False)

    @property
    def at_threshold(self) -> DedupeRates:
        return next(rates for rates in self.rates if rates.threshold == self.threshold)

    @property
    def primary_metric(self) -> str:
        return f"re-uploads collapsed at the recommended dedupe threshold {self.threshold}"

    @property
    def primary(self) -> float:
        return self.at_threshold.reuploads_all


def collapse_rates(cosines: dict[str, np.ndarray], variants: list[str], threshold: float) -> DedupeRates:
    """Shares at ``threshold`` of the cosines :class:`DedupeResult` keeps."""
    def share(values: np.ndarray) -> float:
        return float(np.mean(values >= threshold)) if len(values) else float("nan")

    duplicates = cosines["known duplicates"]
    return DedupeRates(threshold, {name: share(cosines[name]) for name in variants},
                       share(duplicates) if len(duplicates) else None,
                       share(cosines["distinct same label"]), share(cosines["distinct any label"]))


@dataclass(frozen=True)
class DedupeEvaluator:
    """Alter ``items`` sampled live thumbnails in each of ``variants``, find the catalog's known duplicates,
    and measure collapse rates at each of ``thresholds``; recommend the lowest whose same-label false-collapse
    rate is at most ``tolerance``."""

    items: int = 250
    thresholds: tuple[float, ...] = THRESHOLDS
    tolerance: float = 0.001
    variants: tuple[str, ...] = tuple(DEDUPE_VARIANTS)
    name: ClassVar[str] = "dedupe"

    def __call__(self, context: EvaluationContext) -> DedupeResult:
        recommender, rows = context.recommender, context.rows
        catalog = recommender.catalog
        features = thumbnail_features(recommender)
        sample = np.sort(context.rng.choice(rows, size=min(self.items, len(rows)), replace=False))
        queries = reupload_queries(catalog, sample, context.seed, {name: DEDUPE_VARIANTS[name] for name in self.variants})
        cosines: dict[str, np.ndarray] = {}
        for name, images in queries.items():
            altered = normalize(recommender.thumbnail_encoder.encode(images))
            cosines[name] = np.einsum("ij,ij->i", altered, features[sample])
        duplicates = known_duplicates(catalog, rows)
        cosines["known duplicates"] = np.einsum("ij,ij->i", features[duplicates[:, 0]], features[duplicates[:, 1]])
        same_label, any_label = nearest_distinct(features, context.labels, rows, duplicates)
        cosines["distinct same label"] = same_label[np.isfinite(same_label)]
        cosines["distinct any label"] = any_label[np.isfinite(any_label)]
        rates = [collapse_rates(cosines, list(queries), float(t)) for t in sorted(self.thresholds)]
        acceptable = [r.threshold for r in rates if r.distinct_same_label <= self.tolerance]
        threshold = acceptable[0] if acceptable else rates[-1].threshold
        return DedupeResult(
            label=context.label, threshold=threshold, tolerance=self.tolerance,
            current=getattr(recommender.search, "dedupe_threshold", None), reupload_items=int(len(sample)),
            live_items=int(len(rows)),
            duplicate_pairs=[(catalog.item_ids[a], catalog.item_ids[b]) for a, b in duplicates.tolist()],
            rates=rates, cosines=cosines,
        )
