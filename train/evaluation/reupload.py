"""Re-upload robustness: catalog thumbnails altered the way re-uploads alter them, asked as image queries.

Each sampled thumbnail is re-encoded as a low-quality JPEG, cropped by a few percent and
brightened or darkened (the headline variants), or altered one way at a time; recall@1 says
how often the original comes back first. Rankings are the engine's (checked against
``Recommender.recommend`` on the first few queries of every variant).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from PIL import Image, ImageEnhance

from recommender.data.catalog import Catalog
from recommender.engine import Recommender
from recommender.search.ranking import search_excluding

from .base import NOT_SAVED, EvaluationContext, EvaluationError, EvaluationResult
from .metrics import recall_at_k
from .rankings import same_ranking


@dataclass(frozen=True)
class Reupload:
    """How a catalog thumbnail is altered before being uploaded again."""

    crop: float = 0.04  # share of width and height removed, split at random between opposite sides
    brightness: float = 1.0
    jpeg_quality: int | None = None  # None: saved losslessly (PNG)
    scale: float = 1.0

    def apply(self, data: bytes, rng: np.random.Generator) -> bytes:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        width, height = image.size
        if self.crop > 0:
            cut_w, cut_h = int(round(width * self.crop)), int(round(height * self.crop))
            left, top = int(rng.integers(0, cut_w + 1)), int(rng.integers(0, cut_h + 1))
            image = image.crop((left, top, width - (cut_w - left), height - (cut_h - top)))
        if self.brightness != 1.0:
            image = ImageEnhance.Brightness(image).enhance(self.brightness)
        if self.scale != 1.0:
            image = image.resize((max(1, int(image.width * self.scale)), max(1, int(image.height * self.scale))),
                                 Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        if self.jpeg_quality is None:
            image.save(buffer, "PNG", compress_level=1)
        else:
            image.save(buffer, "JPEG", quality=self.jpeg_quality)
        return buffer.getvalue()


#: Catalog thumbnails whose image vectors are this close are the same picture (re-encoded at most).
DUPLICATE_COSINE = 0.999
#: The headline: every query is cropped, brightened or darkened, and saved as a low-quality JPEG.
REUPLOAD_HEADLINE = {
    "crop 4% + brighten x1.2 + JPEG q30": Reupload(crop=0.04, brightness=1.2, jpeg_quality=30),
    "crop 4% + darken x0.8 + JPEG q30": Reupload(crop=0.04, brightness=0.8, jpeg_quality=30),
}
#: Each alteration alone, to see which one hurts.
REUPLOAD_SINGLE = {
    "JPEG q30": Reupload(crop=0.0, jpeg_quality=30),
    "crop 4%": Reupload(crop=0.04),
    "brighten x1.2": Reupload(crop=0.0, brightness=1.2),
    "darken x0.8": Reupload(crop=0.0, brightness=0.8),
    "half size": Reupload(crop=0.0, scale=0.5),
}


def reupload_queries(catalog: Catalog, rows: np.ndarray, seed: int,
                     variants: dict[str, Reupload] | None = None) -> dict[str, list[bytes]]:
    """The altered thumbnails of ``rows`` for every variant (default: all); a variant's crops depend
    only on ``seed``, so the same call always gives the same queries."""
    queries = {}
    for name, variant in (variants or {**REUPLOAD_HEADLINE, **REUPLOAD_SINGLE}).items():
        rng = np.random.default_rng(seed)
        queries[name] = [variant.apply(catalog.image_bytes(int(row)), rng) for row in rows]
    return queries


@dataclass(frozen=True)
class Recall:
    """How often an altered thumbnail found its original: first (``recall_at_1``) or in the top 5.

    ``misses``: rank-1 misses; ``misses_on_duplicates``: those that returned another catalog item
    with the same picture (``None`` where not measured).
    """

    recall_at_1: float
    recall_at_5: float
    misses: int | None = None
    misses_on_duplicates: int | None = None


def headline_recall(variants: dict[str, Recall]) -> Recall:
    """The headline variants together: mean recalls, summed misses."""
    headline = [variants[name] for name in REUPLOAD_HEADLINE]
    counted = all(recall.misses is not None for recall in headline)
    return Recall(float(np.mean([recall.recall_at_1 for recall in headline])),
                  float(np.mean([recall.recall_at_5 for recall in headline])),
                  sum(recall.misses for recall in headline) if counted else None,
                  sum(recall.misses_on_duplicates for recall in headline) if counted else None)


def reupload_recall(recommender: Recommender, rows: np.ndarray, queries: dict[str, list[bytes]],
                    verify: int = 10) -> dict[str, Recall]:
    """Image-mode recall of the original for each variant, as ``recommend(image=...)`` ranks."""
    features = thumbnail_features(recommender)
    results = {}
    for name, images in queries.items():
        vectors = recommender.encode_images(images)
        ranked, scores = search_excluding(recommender.image_index, vectors, 5, removed=recommender.catalog.removed)
        for position in range(min(verify, len(images))):
            served = recommender.recommend(image=images[position], mode="image", k=5)
            verdict = same_ranking(served.rows.tolist(), [r.score for r in served], ranked[position],
                                   scores[position], tolerance=1e-4)
            if verdict == "different":
                raise EvaluationError(
                    f"Bulk image search drifted from Recommender.recommend ({name}, query {position}).")
        results[name] = Recall(recall_at_k(ranked, rows, 1), recall_at_k(ranked, rows, 5),
                               int((ranked[:, 0] != rows).sum()), duplicate_misses(features, ranked[:, 0], rows))
    return results


def thumbnail_features(recommender: Recommender) -> np.ndarray:
    """The catalog's autoencoder vectors: what the picture looks like, without the title head's prediction."""
    head = recommender.title_head
    return recommender.image_vectors if head is None else head.features_of(recommender.image_vectors)


def duplicate_misses(features: np.ndarray, first: np.ndarray, originals: np.ndarray) -> int:
    """Rank-1 misses that returned another catalog item with the same thumbnail (catalogs hold re-uploads too).

    Same thumbnail = autoencoder vectors at cosine >= :data:`DUPLICATE_COSINE`; no image search can
    tell such items apart, so these misses are reported next to recall@1 rather than hidden in it.
    """
    missed = (first != originals) & (first >= 0)
    cosine = np.einsum("ij,ij->i", features[first[missed]], features[originals[missed]])
    return int((cosine >= DUPLICATE_COSINE).sum())


@dataclass(frozen=True)
class ReuploadResult(EvaluationResult):
    """Recall of the original per alteration, and of the headline variants together."""

    variants: dict[str, Recall]  # variant name -> recall, headline variants first
    headline: Recall
    queries: int  # thumbnails per variant
    #: The sampled catalog rows (so another bundle of this catalog can be asked the same queries).
    rows: np.ndarray = field(metadata=NOT_SAVED, repr=False, compare=False)

    @property
    def primary_metric(self) -> str:
        return "re-upload recall@1 (headline variants)"

    @property
    def primary(self) -> float:
        return self.headline.recall_at_1


@dataclass(frozen=True)
class ReuploadEvaluator:
    """Re-upload ``items`` sampled catalog thumbnails in every variant; check ``verify`` per variant
    against ``Recommender.recommend``."""

    items: int = 250
    verify: int = 10
    name: ClassVar[str] = "reupload"

    def __call__(self, context: EvaluationContext) -> ReuploadResult:
        count = len(context.rows)
        rows = np.sort(context.rng.choice(context.rows, size=min(self.items, count), replace=False))
        queries = reupload_queries(context.recommender.catalog, rows, context.seed)
        variants = reupload_recall(context.recommender, rows, queries, self.verify)
        return ReuploadResult(variants, headline_recall(variants), int(len(rows)), rows)
