"""How a build embeds its catalog: settings only, light enough for the CLI to import before any model."""

from __future__ import annotations

from dataclasses import dataclass

from recommender.data.vectors import DEFAULT_SHARD_ROWS, VECTOR_DTYPES

#: Where a Ray build writes the parquet shards Ray reads, inside the bundle being built (removed after).
RAY_INPUT_DIR = ".ray-input"


@dataclass(frozen=True)
class EmbeddingConfig:
    """How a build embeds the catalog and stores its vectors (none of it changes a vector's value
    beyond float16 rounding)."""

    #: Embed on Ray Data (actors holding the encoders) instead of in this process.
    ray: bool = False
    #: Ray cluster to join (default: ``RAY_ADDRESS``, else a local Ray started for the build).
    ray_address: str | None = None
    #: Encoder actors (default: one per GPU on a GPU cluster, else one per 4 CPUs: ``distributed.actor_plan``).
    ray_concurrency: int | None = None
    #: Thumbnails and titles embedded per batch.
    batch_size: int = 256
    #: How vectors are stored for re-scoring: ``float16`` halves their disk and page cache.
    vector_dtype: str = "float32"
    #: Rows per vector shard file.
    shard_rows: int = DEFAULT_SHARD_ROWS

    def __post_init__(self) -> None:
        if self.vector_dtype not in VECTOR_DTYPES:
            raise ValueError(f"vector_dtype must be one of {VECTOR_DTYPES}, got {self.vector_dtype!r}.")
        if self.batch_size < 1 or self.shard_rows < 1 or (self.ray_concurrency is not None
                                                           and self.ray_concurrency < 1):
            raise ValueError("batch_size, shard_rows and ray_concurrency must be positive.")
