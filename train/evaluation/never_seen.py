"""Never-seen uploads: videos the bundle has never seen, asked as uploads.

In-catalog rankings flatter a bundle: every query is a catalog item, the thumbnail encoder
trained on its picture and the title head was fitted with the other folds' titles. Here a seeded
share of the catalog is held out, a bundle is built from the rest with the settings the
evaluated bundle records (text model, encoder and training, title head, indexes, search), and
each held-out video is uploaded through ``Recommender.recommend``: its thumbnail alone (image
mode), its title alone (text mode), both (hybrid). Relevant = a catalog item with the query's label.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from recommender.data.catalog import Catalog
from recommender.engine import Recommender

from .base import (
    NOT_SAVED,
    EvaluationContext,
    EvaluationError,
    EvaluationResult,
    Metrics,
)
from .metrics import mean, upload_ranking_report, upload_reference_report
from .rankings import References

logger = logging.getLogger(__name__)

DEFAULT_FRACTION = 0.2
MODES = ("image", "text", "hybrid")


def split_catalog(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(held_out, kept)`` catalog rows, both sorted: a seeded random ``fraction`` of ``count`` held out."""
    if not 0.0 < fraction < 1.0:
        raise EvaluationError(f"The held-out fraction must be between 0 and 1 (exclusive), got {fraction}.")
    held_count = int(round(fraction * count))
    if held_count < 1 or count - held_count < 2:
        raise EvaluationError(f"Holding out {fraction:.0%} of {count} items leaves {held_count} to ask and "
                              f"{count - held_count} to build from; needs at least 1 and 2.")
    held_out = np.sort(np.random.default_rng(seed).choice(count, size=held_count, replace=False))
    return held_out, np.setdiff1d(np.arange(count), held_out)


def build_without(context: EvaluationContext, kept: np.ndarray, folder: Path, epochs: int | None = None,
                  show_progress_bar: bool = True) -> Path:
    """Build a bundle in ``folder/bundle`` of the catalog's ``kept`` rows, the way the evaluated bundle was built
    (``epochs`` overrides its recorded training epochs); returns its path."""
    from train.build import (  # the training stack, only when a bundle is built
        BuildSettings,
        build_bundle,
    )

    source = folder / "catalog.parquet"
    Catalog(context.recommender.catalog.dataset.select(kept)).save(source)
    manifest = context.recommender.manifest
    settings = BuildSettings.of(manifest)
    if manifest.get("image_encoder", {}).get("training") is None:
        logger.warning("%s reused encoder weights trained elsewhere: the never-seen bundle trains a new encoder "
                       "with the default training settings.", context.bundle)
    title_encoder = context.recommender.title_encoder  # the model queries are encoded with, override included
    settings = dataclasses.replace(
        settings, text_model=title_encoder.model_name_or_path, text_revision=title_encoder.revision,
        text_prefix=title_encoder.prefix,
        training=settings.training if epochs is None else dataclasses.replace(settings.training, epochs=epochs))
    output = folder / "bundle"
    build_bundle(source, output, id_column="item_id", show_progress_bar=show_progress_bar, **settings.keywords())
    return output


def ask_as_uploads(recommender: Recommender, catalog: Catalog, rows: np.ndarray, k: int, alpha: float,
                   show_progress_bar: bool = True) -> dict[str, np.ndarray]:
    """Mode -> ``(queries, k)`` ranked rows of ``recommender``'s catalog (padded with -1) for ``catalog``'s
    ``rows`` uploaded one by one: thumbnail bytes in image mode, title in text mode, both in hybrid."""
    ranked = {mode: np.full((len(rows), k), -1, dtype=np.int64) for mode in MODES}
    for position, row in enumerate(tqdm(rows.tolist(), desc="Asking never-seen uploads", unit="video",
                                        disable=not show_progress_bar)):
        image, title = catalog.image_bytes(row), catalog.titles[row]
        queries = {"image": {"image": image}, "text": {"title": title}, "hybrid": {"image": image, "title": title}}
        for mode, query in queries.items():
            served = recommender.recommend(**query, mode=mode, k=k, alpha=alpha, fusion="weighted")
            ranked[mode][position, :len(served.rows)] = served.rows
    return ranked


@dataclass(frozen=True)
class NeverSeenResult(EvaluationResult):
    """Mean metrics of held-out videos asked as uploads against a bundle built without them."""

    metric: str
    fraction: float
    seed: int
    held_out: int  # queries
    catalog_items: int  # items of the bundle built without them
    epochs: int  # its encoder's training epochs
    alpha: float  # hybrid's text weight (weighted fusion)
    modes: dict[str, Metrics]  # image (thumbnail only), text (title only), hybrid (both)
    reference: References
    build_seconds: float
    query_seconds: float
    held_out_ids: list[str] = field(metadata=NOT_SAVED, repr=False, compare=False)

    @property
    def primary_metric(self) -> str:
        return f"never-seen hybrid {self.metric}"

    @property
    def primary(self) -> float:
        return self.modes["hybrid"][self.metric]


@dataclass(frozen=True)
class NeverSeenEvaluator:
    """Hold out ``fraction`` of the catalog (seeded by the context's seed), build a bundle on the rest with
    the recorded settings (``epochs`` overrides the training epochs), ask the held-out videos as uploads
    (hybrid at ``alpha``, default: the bundle's)."""

    fraction: float = DEFAULT_FRACTION
    epochs: int | None = None
    alpha: float | None = None
    show_progress_bar: bool = True
    name: ClassVar[str] = "never_seen"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise EvaluationError(f"The held-out fraction must be between 0 and 1 (exclusive), got {self.fraction}.")
        if self.epochs is not None and self.epochs < 1:
            raise EvaluationError(f"The never-seen bundle needs at least one training epoch, got {self.epochs}.")

    def __call__(self, context: EvaluationContext) -> NeverSeenResult:
        catalog = context.recommender.catalog
        held_out, kept = (context.rows[part] for part in split_catalog(len(context.rows), self.fraction, context.seed))
        alpha = context.recommender.default_alpha if self.alpha is None else self.alpha
        with tempfile.TemporaryDirectory(prefix="never-seen-") as folder:
            started = time.perf_counter()
            built = build_without(context, kept, Path(folder), self.epochs, self.show_progress_bar)
            build_seconds = time.perf_counter() - started
            started = time.perf_counter()
            recommender = Recommender.load(built, text_model=context.text_model)
            ranked = ask_as_uploads(recommender, catalog, held_out, context.top, alpha, self.show_progress_bar)
            query_seconds = time.perf_counter() - started
            bundle_labels = context.labels[[catalog.row_of(item_id) for item_id in recommender.catalog.item_ids]]
        query_labels = context.labels[held_out]
        references = upload_reference_report(bundle_labels, query_labels, context.ks)
        training = recommender.manifest["image_encoder"]["training"]
        return NeverSeenResult(
            metric=context.metric, fraction=self.fraction, seed=context.seed, held_out=int(len(held_out)),
            catalog_items=len(recommender), epochs=len(training["train_loss"]), alpha=alpha,
            modes={mode: mean(upload_ranking_report(ranked[mode], bundle_labels, query_labels, context.ks))
                   for mode in MODES},
            reference=References(mean(references["random"]), mean(references["ceiling"])),
            build_seconds=build_seconds, query_seconds=query_seconds,
            held_out_ids=[catalog.item_ids[row] for row in held_out],
        )
