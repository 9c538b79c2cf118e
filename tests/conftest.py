"""Session fixtures: a synthetic catalog, a tiny text model and a bundle built from them (all offline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from recommender.autoencoder import EncoderConfig  # noqa: E402

from .synthetic import write_catalog_parquet, write_tiny_text_model  # noqa: E402

#: Small and fast, same architecture family as the default.
TEST_ENCODER = EncoderConfig(width=64, height=36, channels=(8, 16, 32), latent_channels=16)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def catalog_parquet(data_dir: Path) -> Path:
    return write_catalog_parquet(data_dir / "catalog.parquet")


@pytest.fixture(scope="session")
def text_model(data_dir: Path) -> Path:
    return write_tiny_text_model(data_dir / "text-model")


@pytest.fixture(scope="session")
def bundle_dir(data_dir: Path, catalog_parquet: Path, text_model: Path) -> Path:
    """A complete bundle built by the real pipeline (2 quick epochs)."""
    from train.autoencoder import TrainingConfig
    from train.build import build_bundle

    output = data_dir / "bundle"
    build_bundle(catalog_parquet, output, text_model=str(text_model), encoder_config=TEST_ENCODER,
                 training=TrainingConfig(epochs=2, batch_size=8), show_progress_bar=False)
    return output
