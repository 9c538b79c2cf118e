"""Training the thumbnail autoencoder: reproducible, validates on held-out rows, leaves its plots,
and round-trips through safetensors + a JSON config."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from recommender.data.catalog import load_catalog
from recommender.encoders.autoencoder import (
    BASELINE_CONFIG,
    EncoderConfig,
    load_autoencoder,
    save_autoencoder,
)
from recommender.errors import BundleError
from train.trainer import TrainingConfig, catalog_arrays, train_autoencoder

from .conftest import TEST_ENCODER

QUICK = TrainingConfig(epochs=2, batch_size=4, validation_fraction=0.2, seed=11)


@pytest.fixture(scope="module")
def arrays(catalog_parquet: Path) -> np.ndarray:
    """Ten real synthetic thumbnails, preprocessed the way training sees them."""
    catalog, _ = load_catalog(catalog_parquet, limit=10)
    prepared = catalog_arrays(catalog, TEST_ENCODER)
    assert prepared.dtype == np.uint8 and prepared.shape == (10, 3, TEST_ENCODER.height, TEST_ENCODER.width)
    return prepared


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_training_is_reproducible_with_a_seed(arrays: np.ndarray) -> None:
    first, first_history = train_autoencoder(arrays, TEST_ENCODER, QUICK, show_progress_bar=False)
    second, second_history = train_autoencoder(arrays, TEST_ENCODER, QUICK, show_progress_bar=False)
    assert same_weights(weights(first), weights(second))
    assert first_history.train_loss == second_history.train_loss
    assert first_history.validation_loss == second_history.validation_loss
    other, _ = train_autoencoder(arrays, TEST_ENCODER, dataclasses.replace(QUICK, seed=12), show_progress_bar=False)
    assert not same_weights(weights(first), weights(other))
    assert not first.training  # returned ready for inference


def test_validation_rows_are_held_out_and_scored(arrays: np.ndarray) -> None:
    """Changing a validation thumbnail must leave the weights alone and change the validation loss;
    changing a training thumbnail must change the weights. Exactly 20% of 10 rows are held out."""
    config = dataclasses.replace(QUICK, epochs=1)
    reference, history = train_autoencoder(arrays, TEST_ENCODER, config, show_progress_bar=False)
    assert len(history.train_loss) == len(history.validation_loss) == 1
    assert np.isfinite(history.validation_loss[0]) and history.validation_loss[0] > 0
    held_out = []
    for row in range(len(arrays)):
        changed = arrays.copy()
        changed[row] = 255 - changed[row]
        model, changed_history = train_autoencoder(changed, TEST_ENCODER, config, show_progress_bar=False)
        if same_weights(weights(model), weights(reference)):
            held_out.append(row)
            assert changed_history.validation_loss != history.validation_loss
        else:
            assert changed_history.train_loss != history.train_loss
    assert len(held_out) == 2


def test_the_time_budget_stops_training_within_an_epoch(arrays: np.ndarray) -> None:
    """A training sample of a large catalog can make one epoch last far longer than ``--time-budget``."""
    config = dataclasses.replace(QUICK, epochs=3, batch_size=4, time_budget_s=0.0)
    assert len(arrays) > 2 * config.batch_size
    _, history = train_autoencoder(arrays, TEST_ENCODER, config, show_progress_bar=False)
    assert history.steps == 1 and len(history.train_loss) == len(history.validation_loss) == 1
    _, unlimited = train_autoencoder(arrays, TEST_ENCODER, dataclasses.replace(config, time_budget_s=None),
                                     show_progress_bar=False)
    assert len(unlimited.train_loss) == 3 and unlimited.steps > 3


def test_bundle_build_leaves_loss_curve_and_reconstructions(bundle_dir: Path) -> None:
    training = bundle_dir / "training"
    for name in ("loss_curve.png", "reconstructions.png"):
        with Image.open(training / name) as image:
            assert image.format == "PNG"
            assert image.width >= 300 and image.height >= 200
            assert np.asarray(image.convert("L")).std() > 5  # something was drawn
    history = json.loads((training / "history.json").read_text())
    assert len(history["train_loss"]) == len(history["validation_loss"]) == 2  # the fixture trains 2 epochs
    assert all(np.isfinite(history["validation_loss"]))
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["image_encoder"]["training"]["validation_loss"] == history["validation_loss"]


@pytest.mark.parametrize("config", [TEST_ENCODER, dataclasses.replace(BASELINE_CONFIG, width=32, height=24)],
                         ids=["dae", "baseline"])
def test_safetensors_and_json_config_round_trip(tmp_path: Path, config: EncoderConfig) -> None:
    images = np.random.default_rng(0).integers(0, 256, (6, config.in_channels, config.height, config.width),
                                               dtype=np.uint8)
    model, _ = train_autoencoder(images, config, dataclasses.replace(QUICK, epochs=1), show_progress_bar=False)
    save_autoencoder(model, tmp_path / "encoder.safetensors", tmp_path / "encoder.json")
    assert EncoderConfig.from_dict(json.loads((tmp_path / "encoder.json").read_text())) == config
    with safe_open(str(tmp_path / "encoder.safetensors"), framework="pt") as stored:
        assert set(stored.keys()) == set(model.state_dict())
    loaded = load_autoencoder(tmp_path / "encoder.safetensors", tmp_path / "encoder.json")
    assert not loaded.training and same_weights(weights(loaded), weights(model))
    probe = torch.rand(3, config.in_channels, config.height, config.width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(loaded.embed(probe), model.eval().embed(probe))


def test_config_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    data = json.loads(TEST_ENCODER.to_json())
    data["attention_heads"] = 4
    (tmp_path / "encoder.json").write_text(json.dumps(data))
    (tmp_path / "encoder.safetensors").write_bytes(b"")
    with pytest.raises(BundleError, match="attention_heads"):
        load_autoencoder(tmp_path / "encoder.safetensors", tmp_path / "encoder.json")


def test_replacing_a_bundle_never_loses_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--overwrite swaps folders by renames: done, only the new one is left; interrupted between the
    two renames, the previous bundle is still whole in <bundle>.old."""
    from train.build import replace_folder

    def folders(name: str) -> tuple[Path, Path]:
        new, target = tmp_path / name / "bundle.partial", tmp_path / name / "bundle"
        for folder, content in ((new, "new"), (target, "old")):
            folder.mkdir(parents=True)
            (folder / "manifest.json").write_text(content)
        return new, target

    new, target = folders("done")
    replace_folder(new, target)
    assert (target / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["bundle"]

    new, target = folders("interrupted")
    rename = Path.rename

    def crash_on_the_new_bundle(self: Path, destination: Path) -> Path:
        if self == new:
            raise KeyboardInterrupt
        return rename(self, destination)

    monkeypatch.setattr(Path, "rename", crash_on_the_new_bundle)
    with pytest.raises(KeyboardInterrupt):
        replace_folder(new, target)
    assert (target.with_name("bundle.old") / "manifest.json").read_text() == "old"


FRAGMENTED_HEAP = """
from train.build import release_freed_memory

def resident_anonymous_mib():
    return int(next(line for line in open("/proc/self/status") if line.startswith("RssAnon")).split()[1]) / 1024

# 200 MiB of 2 KiB blocks from the C heap, one in 64 kept: glibc cannot shrink a heap whose top is in use
blocks = [bytearray(2048) for _ in range(100_000)]
kept = blocks[::64]
del blocks
before = resident_anonymous_mib()
release_freed_memory()
print("RELEASED", before - resident_anonymous_mib())
"""


def test_freed_memory_goes_back_to_the_system() -> None:
    """What training freed must not stay resident through the hours of embedding after it."""
    result = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    released = float(result.stdout.split("RELEASED")[1])
    assert released >= 100, result.stdout
