"""Dataset -> bundle: validate the catalog, train (or reuse) the thumbnail encoder, embed, index.

Memory stays bounded at any catalog size: the catalog streams to disk as it is validated, the
autoencoder trains on a sample (:attr:`TrainingConfig.sample_size`), embedding runs batch by batch
(in this process, or on Ray Data with ``EmbeddingConfig(ray=True)``: see :mod:`.distributed`) into
vector shards on disk, and the title head and indexes read those shards memory-mapped.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import platform
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from recommender.data.bundle import (
    FILES,
    MANIFEST,
    OPTIONAL_FILES,
    read_search_config,
    write_manifest,
)
from recommender.data.catalog import DEFAULT_DATASET, Catalog, load_catalog
from recommender.data.vectors import (
    VECTORS_DIR,
    VectorShardWriter,
    iter_blocks,
    open_vector_shards,
)
from recommender.encoders.autoencoder import (
    EncoderConfig,
    load_autoencoder,
    save_autoencoder,
)
from recommender.encoders.thumbnails import ThumbnailEncoder
from recommender.encoders.title_head import TitleHead, TitleHeadConfig, fold_assignment
from recommender.encoders.titles import DEFAULT_TEXT_MODEL, TitleEncoder
from recommender.search.config import SearchConfig
from recommender.search.index import build_tuned_index, describe_index, save_index, tuned_search
from recommender.search.large_index import LARGE_INDEX_THRESHOLD

from .embedding import RAY_INPUT_DIR, EmbeddingConfig
from .trainer import (
    TrainingConfig,
    catalog_arrays,
    plot_loss_curve,
    plot_reconstructions,
    train_autoencoder,
    training_rows,
)

logger = logging.getLogger(__name__)
TRAINING_DIR = "training"
#: Autoencoder features before the title head joins them, kept only while the build runs.
SCRATCH_DIR = ".features"
#: Everything a build writes into a bundle folder (and ``train evaluate`` adds to it).
_BUILD_OUTPUTS = {*FILES.values(), *OPTIONAL_FILES.values(), MANIFEST, TRAINING_DIR, VECTORS_DIR, SCRATCH_DIR,
                  RAY_INPUT_DIR, "evaluation", "README.md"}


def build_bundle(source: str | Path = DEFAULT_DATASET, output: str | Path = "bundle", *,
                 image_column: str = "image", title_column: str = "title", id_column: str | None = None,
                 dataset_revision: str | None = None, limit: int | None = None,
                 text_model: str = DEFAULT_TEXT_MODEL, text_revision: str | None = None, text_prefix: str | None = None,
                 encoder_config: EncoderConfig = EncoderConfig(), training: TrainingConfig = TrainingConfig(),
                 encoder_weights: Path | None = None, title_head: TitleHeadConfig | None = TitleHeadConfig(),
                 index_key: str | None = None, search: SearchConfig = SearchConfig(), index_shards: int = 1,
                 large_index_threshold: int = LARGE_INDEX_THRESHOLD, overwrite: bool = False,
                 show_progress_bar: bool = True, embedding: EmbeddingConfig = EmbeddingConfig()) -> dict:
    """Build a complete bundle in ``output`` and return its manifest.

    Work happens in ``<output>.partial`` and replaces ``output`` only when everything
    succeeded, so a failed build never leaves a half-written bundle behind. ``title_head`` fits a
    :class:`~recommender.encoders.title_head.TitleHead` on the catalog with those settings (``None``:
    none; skipped, with a warning, for catalogs under its ``min_items``). ``search`` is recorded in
    the manifest as the bundle's search settings, with the ``nprobe`` tuned for catalogs above
    ``large_index_threshold`` (compressed indexes) where it gave none; ``index_shards`` splits each index
    into that many files. ``embedding``: where the catalog is embedded (this process or Ray) and how its
    vectors are stored; the vectors are the same either way.
    """
    output = Path(output)
    if output.exists() and not _is_empty_folder(output) and not overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite to replace it.")
    staging = output.with_name(output.name + ".partial")
    for folder in (output, staging, _previous(output)):  # every folder the build may delete
        check_replaceable(folder)
    shutil.rmtree(staging, ignore_errors=True)
    with _removed_on_failure(staging):
        (staging / TRAINING_DIR).mkdir(parents=True)
        timings: dict[str, float] = {}

        started = time.perf_counter()
        catalog, skipped = load_catalog(source, image_column=image_column, title_column=title_column,
                                        id_column=id_column, revision=dataset_revision, limit=limit)
        catalog.save(staging / FILES["catalog"])
        timings["catalog_s"] = time.perf_counter() - started

        started = time.perf_counter()
        if encoder_weights is not None:
            weights = Path(encoder_weights)
            model = load_autoencoder(weights, weights.with_suffix(".json"))
            encoder_config, history = model.config, None
        else:
            rows = training_rows(len(catalog), training.sample_size, training.seed)
            arrays = catalog_arrays(catalog, encoder_config, rows, show_progress_bar)
            model, history = train_autoencoder(arrays, encoder_config, training, show_progress_bar=show_progress_bar)
            plot_loss_curve(history, staging / TRAINING_DIR / "loss_curve.png")
            plot_reconstructions(model, arrays[:8], training, staging / TRAINING_DIR / "reconstructions.png")
            (staging / TRAINING_DIR / "history.json").write_text(json.dumps(history.to_dict(), indent=2))
            del arrays
            release_freed_memory()
        save_autoencoder(model, staging / FILES["encoder_weights"], staging / FILES["encoder_config"])
        timings["encoder_s"] = time.perf_counter() - started

        started = time.perf_counter()
        thumbnail_encoder = ThumbnailEncoder(model)
        title_encoder = TitleEncoder(text_model, revision=text_revision, prefix=text_prefix)
        text_model_entry = {"name": title_encoder.model_name_or_path, "revision": text_revision,
                            "prefix": title_encoder.prefix, "dimension": title_encoder.dimension}
        fit_head = title_head is not None and len(catalog) >= title_head.min_items
        if title_head is not None and not fit_head:
            logger.warning("Catalog has %d items: too few to fit a title head (needs %d); building without one.",
                           len(catalog), title_head.min_items)
        feature_writer = VectorShardWriter(staging / SCRATCH_DIR if fit_head else staging, "features" if fit_head
                                           else "image", thumbnail_encoder.dimension,
                                           "float32" if fit_head else embedding.vector_dtype, embedding.shard_rows)
        text_writer = VectorShardWriter(staging, "text", title_encoder.dimension, embedding.vector_dtype,
                                        embedding.shard_rows)
        if embedding.ray:
            from .distributed import embed_on_ray

            # The actors load their own copies. The driver's (loaded to fail early on a bad model name)
            # would sit idle beside them for the whole stage: 1.1 GB for multilingual-e5-base.
            del title_encoder
            release_freed_memory()
            batches = embed_on_ray(catalog, staging, text_model_entry, embedding, show_progress_bar)
        else:
            batches = embed_in_process(catalog, thumbnail_encoder, title_encoder, embedding.batch_size,
                                       show_progress_bar)
        for features, titles in batches:
            feature_writer.append(features)
            text_writer.append(titles)
        vector_entries = {"text": text_writer.close()}
        feature_entry = feature_writer.close()
        timings["embedding_s"] = time.perf_counter() - started

        head_info = None
        if fit_head:
            started = time.perf_counter()
            features = open_vector_shards(staging / SCRATCH_DIR, feature_entry, len(catalog))
            text_vectors = open_vector_shards(staging, vector_entries["text"], len(catalog))
            head = TitleHead.fit(features, text_vectors, fold_assignment(len(catalog), title_head.folds,
                                                                         title_head.seed), title_head)
            head.save(staging / OPTIONAL_FILES["title_head"])
            image_writer = VectorShardWriter(staging, "image", head.dimension, embedding.vector_dtype,
                                             embedding.shard_rows)
            for start, block in iter_blocks(features):
                image_writer.append(head.join(block, head.predict(block, np.arange(start, start + len(block)))))
            vector_entries["image"] = image_writer.close()
            del features
            shutil.rmtree(staging / SCRATCH_DIR)
            head_info = {"file": OPTIONAL_FILES["title_head"], "folds": int(head.weights.shape[0]),
                         "random_features": int(head.phase.shape[0]), "dimension": head.dimension,
                         "config": title_head.to_dict()}
            timings["title_head_s"] = time.perf_counter() - started
        else:
            vector_entries["image"] = feature_entry

        started = time.perf_counter()
        indexes, tunings = {}, []
        for modality in ("image", "text"):
            vectors = open_vector_shards(staging, vector_entries[modality], len(catalog))
            index, tuning = build_tuned_index(vectors, index_key, search, shards=index_shards,
                                              large_threshold=large_index_threshold)
            tunings.append(tuning)
            files = save_index(index, staging / FILES[f"{modality}_index"])
            indexes[modality] = {"file": FILES[f"{modality}_index"], "key": index_key or "auto",
                                 "type": describe_index(index), "dimension": int(vectors.shape[1]),
                                 "shard_files": [file.name for file in files[1:]],
                                 "tuning": tuning.to_dict() if tuning else None}
            del vectors, index
        search = tuned_search(search, tunings)  # the manifest records how deep the large indexes must search
        timings["index_s"] = time.perf_counter() - started

        manifest = write_manifest(staging, {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "count": len(catalog),
            "source": {"dataset": str(source), "revision": dataset_revision, "image_column": image_column,
                       "title_column": title_column, "id_column": id_column, "skipped_rows": len(skipped),
                       "metadata_columns": catalog.metadata_columns},
            "text_model": text_model_entry,
            "image_encoder": {"architecture": encoder_config.architecture, "dimension": thumbnail_encoder.dimension,
                              "parameters": thumbnail_encoder.parameters, "config": asdict(encoder_config),
                              "training": None if history is None else {**asdict(training), **history.to_dict()},
                              "weights_reused_from": str(encoder_weights) if encoder_weights else None},
            "title_head": head_info,
            "vectors": {modality: vector_entries[modality] for modality in ("image", "text")},
            "indexes": indexes,
            "search": search.to_dict(),
            "build": {"timings": timings, "embedded_on": "ray" if embedding.ray else "process",
                      "torch": torch.__version__, "python": platform.python_version()},
        })
        replace_folder(staging, output)
        return manifest


@dataclass(frozen=True)
class BuildSettings:
    """What :func:`build_bundle` was given, as a bundle's manifest records it: enough to build another
    bundle the same way (e.g. on part of its catalog, as the never-seen evaluation does)."""

    text_model: str
    text_revision: str | None
    text_prefix: str | None
    encoder_config: EncoderConfig
    training: TrainingConfig
    title_head: TitleHeadConfig | None
    index_key: str | None
    search: SearchConfig

    @classmethod
    def of(cls, manifest: dict) -> "BuildSettings":
        """Read the settings from a manifest, including those written before ``title_head.config`` existed.

        A bundle whose encoder weights were reused (no training recorded) gets the default training.
        """
        text = manifest.get("text_model", {})
        encoder = manifest.get("image_encoder", {})
        recorded_training = encoder.get("training") or {}
        head = manifest.get("title_head")
        head_config = None
        if head:
            values = head.get("config") or head  # older manifests kept the settings beside file and dimension
            head_config = TitleHeadConfig(**{name: values[name] for name in _field_names(TitleHeadConfig)
                                             if name in values})
        key = manifest.get("indexes", {}).get("image", {}).get("key")
        return cls(
            text_model=text.get("name") or DEFAULT_TEXT_MODEL, text_revision=text.get("revision"),
            text_prefix=text.get("prefix"), encoder_config=EncoderConfig.from_dict(encoder.get("config", {})),
            training=TrainingConfig(**{name: recorded_training[name] for name in _field_names(TrainingConfig)
                                       if name in recorded_training}),
            title_head=head_config, index_key=None if key in (None, "auto") else key,
            search=read_search_config(manifest),
        )

    def keywords(self) -> dict:
        """Keyword arguments of :func:`build_bundle`."""
        return {item.name: getattr(self, item.name) for item in fields(self)}


def _field_names(config: type) -> list[str]:
    return [item.name for item in fields(config)]


def check_replaceable(folder: Path) -> None:
    """Refuse to delete anything but a bundle: ``folder`` may be replaced only if it does not exist,
    is empty, holds a bundle's ``manifest.json``, or holds nothing but what a build writes (one
    killed midway, before its manifest). ``--output ~`` must not wipe a home directory.

    Raises :class:`FileExistsError` (the CLI prints it) naming the folder.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink() and (
            (folder / MANIFEST).is_file() or all(entry.name in _BUILD_OUTPUTS for entry in folder.iterdir())):
        return
    raise FileExistsError(f"{folder} is not a bundle folder (no {MANIFEST} in it): refusing to replace it. "
                          "Give --output a new folder, or an existing bundle's.")


def _is_empty_folder(folder: Path) -> bool:
    return folder.is_dir() and next(folder.iterdir(), None) is None


def _previous(target: Path) -> Path:
    return target.with_name(target.name + ".old")


def replace_folder(new: Path, target: Path) -> None:
    """Put ``new`` in place of ``target`` with renames only, so a crash midway never loses both: the
    previous bundle waits in ``<target>.old`` until the new one is in place, then goes."""
    previous = _previous(target)
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    new.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


@contextmanager
def _removed_on_failure(folder: Path) -> Iterator[None]:
    """Delete ``folder`` if the block fails (or is interrupted), so no half-built bundle is left behind."""
    try:
        yield
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def release_freed_memory() -> None:
    """Collect garbage, then hand the C heap's free pages back to the system (glibc's ``malloc_trim``).

    Training and model loading leave the heap full of freed but still resident pages that glibc keeps
    for reuse; a build then holds them through hours of embedding, and on the Ray path beside the
    actors' own copies of everything. A no-op where the C library is not glibc.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def embed_in_process(catalog: Catalog, thumbnail_encoder: ThumbnailEncoder, title_encoder: TitleEncoder,
                     batch_size: int, show_progress_bar: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Autoencoder features and title vectors of the catalog, one batch of rows at a time, in row order."""
    for start in tqdm(range(0, len(catalog), batch_size), desc="Embedding", unit="batch",
                      disable=not show_progress_bar):
        rows = np.arange(start, min(start + batch_size, len(catalog)))
        arrays = catalog_arrays(catalog, thumbnail_encoder.config, rows, show_progress_bar=False)
        yield (embed_thumbnail_arrays(thumbnail_encoder, arrays, False),
               title_encoder.encode(catalog.titles[rows[0]:rows[-1] + 1], show_progress_bar=False))


def embed_thumbnail_arrays(encoder: ThumbnailEncoder, arrays: np.ndarray, show_progress_bar: bool,
                           batch_size: int = 128) -> np.ndarray:
    """The autoencoder features of the already-preprocessed catalog thumbnails (no second decode);
    ``train add`` embeds appended videos with it too, so they get the vectors a build would give them."""
    chunks = [encoder.embed_arrays(arrays[start:start + batch_size].astype(np.float32) / 255.0)
              for start in tqdm(range(0, len(arrays), batch_size), desc="Embedding thumbnails", unit="batch",
                                disable=not show_progress_bar)]
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.dimension), dtype=np.float32)
