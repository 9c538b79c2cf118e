"""The original design, as a baseline: a bundle built with ``--encoder baseline``, scored two ways.

- **as it was served**: IndexFlatL2 over the encoder's raw codes, hybrid = the set union of the
  image and text top-k lists (a set has no ranking);
- **through this engine**: the same encoder behind this project's cosine indexes and weighted
  fusion (alpha swept the same way), to separate what the encoder costs from what fusion costs.

Its re-upload queries are the evaluated bundle's (same rows, same alterations), headline variants only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np
import torch

from recommender.engine import Recommender
from recommender.search.ranking import search_excluding

from .alpha_sweep import ALPHAS, alpha_sweep, choose_alpha
from .base import EvaluationContext, EvaluationError, EvaluationResult, Metrics
from .metrics import mean, per_label_means, ranking_report, recall_at_k
from .rankings import item_rankings
from .reupload import REUPLOAD_HEADLINE, Recall, headline_recall, reupload_queries

logger = logging.getLogger(__name__)

RAW_CODES_CACHE = "baseline_raw_codes.npy"


@torch.inference_mode()
def raw_codes(recommender: Recommender, images: list[bytes], batch_size: int = 32) -> np.ndarray:
    """The encoder's output before normalisation: what the original design indexed."""
    encoder = recommender.thumbnail_encoder
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([encoder.prepare(image) for image in images[start:start + batch_size]])
        tensor = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        chunks.append(encoder.model.embed(tensor).float().numpy())
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def union_of_top_k(image_rows: np.ndarray, text_rows: np.ndarray, k: int) -> np.ndarray:
    """The original hybrid: ``list(set(image_top_k) | set(text_top_k))`` cut to ``k`` (a set has no ranking)."""
    out = np.full((len(image_rows), k), -1, dtype=np.int64)
    for position, (image, text) in enumerate(zip(image_rows.tolist(), text_rows.tolist())):
        union = list({row for row in image[:k] if row >= 0} | {row for row in text[:k] if row >= 0})[:k]
        out[position, :len(union)] = union
    return out


def catalog_raw_codes(baseline: Recommender, cache: Path | None = None) -> np.ndarray:
    """Raw codes of every catalog thumbnail; cached in ``cache`` (the baseline encoder is slow on a CPU).

    The cache is used only while it matches the catalog size and the stored vectors' directions.
    """
    if cache is not None and cache.is_file():
        codes = np.load(cache, allow_pickle=False)
        if codes.shape == baseline.image_vectors.shape:
            norms = np.linalg.norm(codes, axis=1, keepdims=True)
            directions = np.divide(codes, norms, out=np.zeros_like(codes), where=norms > 0)
            if np.allclose(directions, baseline.image_vectors, atol=1e-3):
                return np.ascontiguousarray(codes, dtype=np.float32)
        logger.warning("Ignoring %s: it does not match this bundle's image vectors.", cache)
    codes = raw_codes(baseline, list(baseline.catalog.iter_image_bytes()))
    if cache is not None:
        try:
            np.save(cache, codes, allow_pickle=False)
        except OSError as error:
            logger.warning("Could not cache raw codes in %s: %s", cache, error)
    return codes


@dataclass(frozen=True)
class OriginalDesign:
    """The baseline bundle as the original design served it."""

    modes: dict[str, Metrics]  # image (IndexFlatL2, raw codes), text (IndexFlatL2), hybrid (set union)
    reupload: dict[str, Recall]  # headline variants
    reupload_headline: Recall
    dead_dimensions: int  # code dimensions that are zero for every catalog item (dead ReLU units)
    code_dimension: int
    per_label: dict[str, dict[str, float]]  # as RankingResult.per_label


@dataclass(frozen=True)
class ThroughEngine:
    """The baseline encoder behind this project's engine, hybrid weighted at its own best ``alpha``."""

    modes: dict[str, Metrics]
    alpha: float


@dataclass(frozen=True)
class BaselineResult(EvaluationResult):
    bundle: str
    metric: str
    image_encoder: dict  # architecture, dimension, parameters
    original_design: OriginalDesign
    through_engine: ThroughEngine

    @property
    def primary_metric(self) -> str:
        return f"original design hybrid {self.metric}"

    @property
    def primary(self) -> float:
        return self.original_design.modes["hybrid"][self.metric]


def original_design(baseline: Recommender, context: EvaluationContext, reupload_rows: np.ndarray,
                    cache: Path | None) -> OriginalDesign:
    """The baseline bundle served as the original design did: IndexFlatL2, raw codes, union hybrid."""
    rows, labels, ks, top = context.rows, context.labels, context.ks, context.top
    codes = catalog_raw_codes(baseline, cache)
    image_index = faiss.IndexFlatL2(codes.shape[1])
    image_index.add(codes)
    text_index = faiss.IndexFlatL2(baseline.text_vectors.shape[1])
    text_index.add(np.ascontiguousarray(baseline.text_vectors))
    removed = baseline.catalog.removed
    image_rows, _ = search_excluding(image_index, codes[rows], top, rows, removed)
    text_rows, _ = search_excluding(text_index, baseline.text_vectors[rows], top, rows, removed)
    per_query = {"image": ranking_report(image_rows, labels, rows, ks),
                 "text": ranking_report(text_rows, labels, rows, ks), "hybrid": {}}
    for k in ks:
        per_query["hybrid"].update(ranking_report(union_of_top_k(image_rows, text_rows, k), labels, rows, (k,)))
    # The baseline encoder is ~100x slower: its re-upload check uses the headline variants only.
    recall = {}
    queries_per_variant = reupload_queries(context.recommender.catalog, reupload_rows, context.seed, REUPLOAD_HEADLINE)
    for name, queries in queries_per_variant.items():
        ranked, _ = search_excluding(image_index, raw_codes(baseline, queries), 5, removed=removed)
        recall[name] = Recall(recall_at_k(ranked, reupload_rows, 1), recall_at_k(ranked, reupload_rows, 5))
    return OriginalDesign(
        modes={mode: mean(values) for mode, values in per_query.items()}, reupload=recall,
        reupload_headline=headline_recall(recall), dead_dimensions=int((codes.max(axis=0) <= 0).sum()),
        code_dimension=int(codes.shape[1]),
        per_label=per_label_means(per_query, labels[rows], context.label_names, context.metric),
    )


@dataclass(frozen=True)
class BaselineEvaluator:
    """Score ``bundle`` (the same catalog, built with ``--encoder baseline``) as the original design served it
    and through this engine; re-upload queries: the thumbnails of ``reupload_rows``, altered as the evaluated
    bundle's were."""

    bundle: Path
    reupload_rows: np.ndarray
    alphas: tuple[float, ...] = ALPHAS
    name: ClassVar[str] = "baseline"

    def __call__(self, context: EvaluationContext) -> BaselineResult:
        baseline = Recommender.load(self.bundle, text_model=context.text_model)
        if baseline.catalog.item_ids != context.recommender.catalog.item_ids:
            raise EvaluationError(f"Baseline bundle {self.bundle} has a different catalog (items or order) from the "
                                  "evaluated bundle; build both from the same dataset.")
        if not np.array_equal(baseline.catalog.removed.rows, context.recommender.catalog.removed.rows):
            raise EvaluationError(f"Baseline bundle {self.bundle} has other items removed than the evaluated bundle; "
                                  "remove the same items from both (or compact both) to compare them.")
        original = original_design(baseline, context, self.reupload_rows, Path(self.bundle) / RAW_CODES_CACHE)
        rows, labels, ks = context.rows, context.labels, context.ks
        sweep = alpha_sweep(baseline, rows, labels, ks, self.alphas, ("weighted",))["weighted"]
        alpha = choose_alpha(sweep, context.metric, f"nDCG@{context.top}")
        ranked = item_rankings(baseline, rows, context.top, alpha)
        engine_modes = {"image": mean(ranking_report(ranked["image"][0], labels, rows, ks)),
                        "text": mean(ranking_report(ranked["text"][0], labels, rows, ks)),
                        "hybrid": mean(sweep[alpha])}
        return BaselineResult(
            bundle=str(self.bundle), metric=context.metric,
            image_encoder={key: baseline.manifest.get("image_encoder", {}).get(key)
                           for key in ("architecture", "dimension", "parameters")},
            original_design=original, through_engine=ThroughEngine(engine_modes, alpha),
        )
