"""Embedding on Ray Data: the same vectors as the in-process build, from a cluster or a local Ray.

The validated catalog is written as parquet shards (row number, title, image bytes or reference),
each read back by a Ray task (:func:`shard_rows`) and embedded by ``map_batches`` over
:class:`EmbedActor` (an ``ActorPoolStrategy`` of ``concurrency`` actors),
a class whose actors each load the thumbnail encoder and the title model once (a GPU each when the
cluster has GPUs). The actors run the very functions the in-process build runs
(:func:`~train.trainer.preprocessed_arrays`, :func:`~train.build.embed_thumbnail_arrays`,
:meth:`~recommender.encoders.titles.TitleEncoder.encode`), so a vector differs from the in-process one
only by floating-point reordering (tests hold it under 1e-5).

The driver receives the vectors in row order (``preserve_order``) and appends them to the bundle's
vector shards: only vectors travel back, about 5 KB an item, never a decoded thumbnail.

Which Ray: ``EmbeddingConfig.ray_address``, else ``RAY_ADDRESS``, else a local Ray started for the
build, without a dashboard or usage reporting, and shut down when it ends. Ray is imported here
only, never by serving (``pip install .[scale]`` installs it).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import recommender
import train
from recommender.data.catalog import Catalog, image_cell_bytes
from recommender.encoders.titles import TitleEncoder

from .embedding import RAY_INPUT_DIR, EmbeddingConfig

logger = logging.getLogger(__name__)
#: Embedding batches per parquet shard Ray reads: enough blocks for every actor, few enough files.
BATCHES_PER_SHARD = 4
#: CPUs per encoder actor on a CPU cluster (each actor runs that many torch threads). Every actor holds
#: its own copy of both models, so fewer, wider actors use less memory: on 2 vCPUs one actor of 2 threads
#: embedded 2,000 items faster than two of 1 thread, at 0.7 GiB less peak memory (docs/scale.md).
CPUS_PER_ACTOR = 4
#: CPUs a shard-reading task claims: less than any actor does (``actor_plan`` gives at least 0.25), so Ray
#: keeps reading an operator of its own. Fused into the actors' operator, one task took every shard of a
#: 200,000-item catalog and returned nothing until the whole catalog was embedded.
READ_TASK_CPUS = 0.1
#: Object store of a Ray this module starts itself. Ray sizes it from the machine's memory (3.4 GiB on
#: this 24 GiB machine) and Ray Data reads ahead into it: at 200,000 items 30 shards (600 MiB) waited in
#: it for the one actor, and a 3 GiB memory cgroup OOM-killed the build. It is shared memory that stays
#: charged once touched, so it is sized for a dozen shards of read-ahead, enough to keep the actors of
#: one machine busy; beyond it Ray spills to disk instead of growing.
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
#: Ray settings of a Ray this module starts itself. By default a local Ray starts one idle worker per CPU
#: for the first driver; they run the default runtime environment, and the build's tasks and
#: actors need one that ships this project's code, so they would sit idle through the whole build.
LOCAL_SYSTEM_CONFIG = {"prestart_worker_first_driver": False}


def actor_plan(cpus: int, gpus: int, requested: int | None = None) -> tuple[int, int, float]:
    """``(actors, torch threads each, CPUs each claims)`` for a cluster of ``cpus`` CPUs and ``gpus`` GPUs.

    One actor per GPU on a GPU cluster, else one per :data:`CPUS_PER_ACTOR` CPUs (at least one); ``requested``
    overrides the count. Actors claim all CPUs but one between them, which stays free to list and read the
    parquet shards (actors holding every CPU would deadlock the read).
    """
    actors = requested or (gpus if gpus else max(1, cpus // CPUS_PER_ACTOR))
    threads = 1 if gpus else max(1, round(cpus / actors))
    claimed = 1.0 if gpus else max(0.25, (cpus - 1) / actors)
    return actors, threads, claimed


@contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Ray, joined or started for the block: a Ray already initialised in this process is used as is;
    else ``address`` or ``RAY_ADDRESS`` is joined; else a local Ray starts (no dashboard, no usage
    statistics, a :data:`LOCAL_OBJECT_STORE_BYTES` object store) and is shut down after the block."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # Workers import the actor's code from these packages: ship them, so a cluster (or a local Ray started
    # outside the repository) needs no copy of this project installed.
    code = {"py_modules": [str(Path(package.__file__).parent) for package in (recommender, train)]}
    if address:
        ray.init(address=address, runtime_env=code, log_to_driver=False)
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(include_dashboard=False, runtime_env=code, log_to_driver=False, configure_logging=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, _system_config=LOCAL_SYSTEM_CONFIG)
    try:
        yield
    finally:
        ray.shutdown()


def shard_rows(paths: list[Path], readers: int):
    """A Ray dataset of the rows of parquet ``paths``, one block per shard, read by at most ``readers``
    tasks at a time (reading is cheap next to embedding: one reader per actor).

    ``ray.data.read_parquet`` would first list every shard's footer on a pool of 32 actors (Ray 2.60's
    default): about 110 MiB each, so 3.5 GiB on a 2-CPU machine before one item is embedded, to learn
    row counts the driver wrote itself. A dataset of shard paths, each read by a task, streams the same
    rows with no listing.
    """
    import ray

    def read_shard(batch: dict[str, np.ndarray]) -> pa.Table:
        # Defined here, so Ray ships it by value: a reader worker imports pyarrow, not this module (whose
        # imports, torch and sentence-transformers among them, held 486 MiB in an idle reader).
        return pa.concat_tables([pq.read_table(path) for path in batch["path"]])

    files = ray.data.from_items([{"path": str(path)} for path in paths], override_num_blocks=max(1, len(paths)))
    return files.map_batches(read_shard, batch_size=1, batch_format="numpy", num_cpus=READ_TASK_CPUS,
                             concurrency=readers)


def write_parquet_shards(catalog: Catalog, folder: Path, rows_per_shard: int) -> list[Path]:
    """The catalog's rows as ``part-NNNNN.parquet`` files of ``row``, ``title`` and ``image`` (bytes or the
    reference), read a shard at a time from its memory-mapped table."""
    folder.mkdir(parents=True, exist_ok=True)
    table = catalog.dataset.select_columns(["title", "image"]).with_format("arrow")
    paths = []
    for number, start in enumerate(range(0, len(catalog), rows_per_shard)):
        part = table[start:start + rows_per_shard]
        part = part.append_column("row", pa.array(np.arange(start, start + len(part), dtype=np.int64)))
        paths.append(folder / f"part-{number:05d}.parquet")
        pq.write_table(part, paths[-1])
    return paths


class EmbedActor:
    """A Ray actor's encoders, loaded once: Arrow batches of rows in, their features and title vectors out."""

    def __init__(self, encoder_weights: bytes, encoder_config: str, text_model: str, text_revision: str | None,
                 text_prefix: str | None, threads: int):
        import torch

        from recommender.encoders.autoencoder import load_autoencoder
        from recommender.encoders.thumbnails import ThumbnailEncoder

        torch.set_num_threads(threads)
        # Ray gave this actor a GPU when the cluster has them: the encoders run there, in full float32
        # (TF32 convolutions would move vectors further than the in-process build's 1e-5 agreement)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        with tempfile.TemporaryDirectory() as folder:  # weights travel as bytes: workers need no shared disk
            (Path(folder) / "encoder.safetensors").write_bytes(encoder_weights)
            (Path(folder) / "encoder.json").write_text(encoder_config)
            self.thumbnail_encoder = ThumbnailEncoder(load_autoencoder(Path(folder) / "encoder.safetensors",
                                                                       Path(folder) / "encoder.json"), device)
        self.title_encoder = TitleEncoder(text_model, revision=text_revision, prefix=text_prefix, device=device)

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        from .build import embed_thumbnail_arrays
        from .trainer import preprocessed_arrays

        images = [image_cell_bytes(cell) for cell in batch.column("image").to_pylist()]
        arrays = preprocessed_arrays(images, self.thumbnail_encoder.config, len(images))
        return {"row": batch.column("row").to_numpy(),
                "features": embed_thumbnail_arrays(self.thumbnail_encoder, arrays, False),
                "text": self.title_encoder.encode(batch.column("title").to_pylist(), show_progress_bar=False)}


def embed_on_ray(catalog: Catalog, staging: Path, text_model: Mapping[str, Any], embedding: EmbeddingConfig,
                 show_progress_bar: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Features and title vectors of the catalog computed by Ray actors, yielded in row order.

    ``text_model`` is the manifest's entry for the title model (``name``, ``revision``, ``prefix``):
    each actor loads it, the driver need not.

    ``staging`` holds the bundle being built: its saved encoder weights are what the actors load, and
    the parquet shards Ray reads are written (then removed) inside it.
    """
    import ray

    from recommender.data.bundle import FILES

    shards = staging / RAY_INPUT_DIR
    paths = write_parquet_shards(catalog, shards, embedding.batch_size * BATCHES_PER_SHARD)
    try:
        with ray_session(embedding.ray_address):
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True
            context.enable_progress_bars = show_progress_bar
            gpus = int(ray.cluster_resources().get("GPU", 0))
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            concurrency, threads, actor_cpus = actor_plan(cpus, gpus, embedding.ray_concurrency)
            dataset = shard_rows(paths, readers=concurrency).map_batches(
                EmbedActor, batch_format="pyarrow", batch_size=embedding.batch_size,
                compute=ray.data.ActorPoolStrategy(size=concurrency),
                num_gpus=1 if gpus else 0, num_cpus=actor_cpus,
                fn_constructor_kwargs={
                    "encoder_weights": (staging / FILES["encoder_weights"]).read_bytes(),
                    "encoder_config": (staging / FILES["encoder_config"]).read_text(),
                    "text_model": text_model["name"], "text_revision": text_model["revision"],
                    "text_prefix": text_model["prefix"], "threads": threads})
            logger.info("Embedding %d items on Ray: %d actors (%s)", len(catalog), concurrency,
                        f"{gpus} GPUs" if gpus else f"{threads} CPU threads each")
            expected = 0
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                rows = batch["row"]
                if len(rows) and (rows[0] != expected or not np.array_equal(rows, np.arange(expected, expected + len(rows)))):
                    raise RuntimeError(f"Ray returned rows out of order (expected row {expected}, got {rows[0]}).")
                expected += len(rows)
                yield np.asarray(batch["features"], dtype=np.float32), np.asarray(batch["text"], dtype=np.float32)
            if expected != len(catalog):
                raise RuntimeError(f"Ray embedded {expected} of {len(catalog)} rows.")
    finally:
        shutil.rmtree(shards, ignore_errors=True)
