"""Train a thumbnail autoencoder from scratch on a catalog (denoising by default).

Corruption (input only; the target is the clean thumbnail): per-image brightness,
contrast and colour gains, Gaussian noise and random masked rectangles. The encoder
must see through what re-uploads and re-encodes change, which is what retrieval needs.
Training is seeded, keeps a validation split, and writes a loss curve and a grid of
input / corrupted / reconstructed thumbnails. A large catalog trains on a random sample of its
thumbnails (:attr:`TrainingConfig.sample_size`), decoded as the catalog streams past: memory and
time per epoch stay those of the sample whatever the catalog's size.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recommender.data.catalog import Catalog
from recommender.encoders.autoencoder import EncoderConfig, build_autoencoder
from recommender.encoders.thumbnails import decode_for, preprocess

#: Thumbnails the autoencoder trains on at most: 20,000 preprocessed thumbnails take 0.55 GB of RAM
#: (27.6 KB each) and an epoch over them about 100 s on 2 cores, so 30 epochs stay under an hour at any
#: catalog size. Catalogs up to this size train on every item, as before.
DEFAULT_TRAIN_SAMPLE = 20_000


@dataclass(frozen=True)
class TrainingConfig:
    #: Image P@10 on the real benchmark catalog kept rising up to 30 epochs (docs/results.md).
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.1
    seed: int = 0
    denoising: bool = True
    noise_std: float = 0.08
    mask_count: int = 3
    mask_max_fraction: float = 0.3
    photometric_jitter: float = 0.25
    crop_jitter: float = 0.06
    time_budget_s: float | None = None
    #: Train on a random sample of at most this many catalog items (``None``: all of them).
    sample_size: int | None = DEFAULT_TRAIN_SAMPLE

    def __post_init__(self) -> None:
        if self.sample_size is not None and self.sample_size < 1:
            raise ValueError(f"The training sample needs at least one item, got {self.sample_size}.")


@dataclass
class TrainingHistory:
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    #: Optimiser steps taken; fewer than ``epochs`` times the steps per epoch when the time budget ran out.
    steps: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def training_rows(count: int, sample_size: int | None, seed: int = 0) -> np.ndarray:
    """Catalog rows the autoencoder trains on, in row order: all of them, or a seeded uniform sample."""
    if sample_size is None or sample_size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=sample_size, replace=False))


def catalog_arrays(catalog: Catalog, config: EncoderConfig, rows: np.ndarray | None = None,
                   show_progress_bar: bool = True) -> np.ndarray:
    """The thumbnails of ``rows`` (default: every row) preprocessed once, as uint8 ``N x C x H x W``:
    only those rows are read and decoded, as the catalog streams past."""
    count = len(catalog) if rows is None else len(rows)
    return preprocessed_arrays(catalog.iter_image_bytes(rows=rows), config, count, show_progress_bar)


def preprocessed_arrays(images, config: EncoderConfig, count: int, show_progress_bar: bool = False) -> np.ndarray:
    """``count`` encoded thumbnails -> uint8 ``N x C x H x W``, the form training and embedding share (so
    a thumbnail gets the same vector in a build, on Ray, and in ``train add``)."""
    arrays = np.empty((count, config.in_channels, config.height, config.width), dtype=np.uint8)
    for row, data in enumerate(tqdm(images, total=count, desc="Preparing thumbnails", unit="img",
                                    disable=not show_progress_bar)):
        arrays[row] = np.round(preprocess(decode_for(config, data), config) * 255).astype(np.uint8)
    return arrays


def corrupt(clean: torch.Tensor, config: TrainingConfig, generator: torch.Generator) -> torch.Tensor:
    """Photometric jitter, Gaussian noise and masked rectangles, per image."""
    n, c, h, w = clean.shape
    jitter = config.photometric_jitter
    gain = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * jitter
    colour = 1 + (torch.rand(n, c, 1, 1, generator=generator) * 2 - 1) * jitter / 3
    offset = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * jitter / 2
    mean = clean.mean(dim=(1, 2, 3), keepdim=True)
    noisy = (clean - mean) * gain * colour + mean + offset
    noisy = noisy + torch.randn(clean.shape, generator=generator) * config.noise_std
    for _ in range(config.mask_count):
        mask_h = (torch.rand(n, generator=generator) * config.mask_max_fraction * h).long()
        mask_w = (torch.rand(n, generator=generator) * config.mask_max_fraction * w).long()
        top = (torch.rand(n, generator=generator) * h).long()
        left = (torch.rand(n, generator=generator) * w).long()
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + mask_h).view(n, 1, 1))
                  & (cols >= left.view(n, 1, 1)) & (cols < (left + mask_w).view(n, 1, 1)))
        noisy = torch.where(inside.unsqueeze(1), torch.rand(n, c, 1, 1, generator=generator), noisy)
    return noisy.clamp(0, 1)


def random_crops(batch: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Crop each image by up to ``fraction`` per side and resize back: re-uploads are rarely pixel-aligned."""
    if fraction <= 0:
        return batch
    n, _, h, w = batch.shape
    out = torch.empty_like(batch)
    shrink = torch.rand(n, 4, generator=generator) * fraction
    for i in range(n):
        top, bottom = int(shrink[i, 0] * h), h - int(shrink[i, 1] * h)
        left, right = int(shrink[i, 2] * w), w - int(shrink[i, 3] * w)
        out[i] = F.interpolate(batch[i:i + 1, :, top:bottom, left:right], size=(h, w), mode="bilinear",
                               align_corners=False)[0]
    return out


def train_autoencoder(arrays: np.ndarray, encoder_config: EncoderConfig = EncoderConfig(),
                      config: TrainingConfig = TrainingConfig(),
                      show_progress_bar: bool = True) -> tuple[torch.nn.Module, TrainingHistory]:
    """Train on uint8 ``N x C x H x W`` thumbnails; returns the model in eval mode and its loss history."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_autoencoder(encoder_config).to(memory_format=torch.channels_last)
    order = np.random.default_rng(config.seed).permutation(len(arrays))
    n_validation = max(1, int(len(arrays) * config.validation_fraction)) if len(arrays) > 1 else 0
    validation, training = order[:n_validation], order[n_validation:] if n_validation < len(arrays) else order
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(training) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate,
                                                    total_steps=max(1, config.epochs * steps_per_epoch))
    history = TrainingHistory()
    started = time.perf_counter()

    def out_of_time() -> bool:
        return config.time_budget_s is not None and time.perf_counter() - started > config.time_budget_s

    for epoch in range(config.epochs):
        model.train()
        epoch_start, losses = time.perf_counter(), []
        permutation = torch.randperm(len(training), generator=generator).numpy()
        batches = tqdm(range(steps_per_epoch), desc=f"Epoch {epoch + 1}/{config.epochs}", unit="batch",
                       disable=not show_progress_bar, leave=False)
        for step in batches:
            rows = training[permutation[step * config.batch_size:(step + 1) * config.batch_size]]
            clean = _to_float(arrays[rows])
            if config.denoising:
                clean = random_crops(clean, config.crop_jitter, generator)
                inputs = corrupt(clean, config, generator)
            else:
                inputs = clean
            reconstruction = model(inputs.contiguous(memory_format=torch.channels_last))
            loss = F.mse_loss(reconstruction, model.normalise(clean))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            history.steps += 1
            batches.set_postfix(loss=f"{np.mean(losses):.4f}")
            if out_of_time():  # a sample of a large catalog can make one epoch far longer than the budget
                break
        history.train_loss.append(float(np.mean(losses)))
        history.validation_loss.append(validation_loss(model, arrays[validation], config.batch_size))
        history.epoch_seconds.append(time.perf_counter() - epoch_start)
        if show_progress_bar:
            tqdm.write(f"epoch {epoch + 1}: train {history.train_loss[-1]:.4f}  "
                       f"validation {history.validation_loss[-1]:.4f}  ({history.epoch_seconds[-1]:.0f}s)")
        if out_of_time():
            break
    return model.eval(), history


def _to_float(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).float().div_(255)


@torch.inference_mode()
def validation_loss(model: torch.nn.Module, arrays: np.ndarray, batch_size: int = 64) -> float:
    """Reconstruction MSE of clean validation thumbnails."""
    if len(arrays) == 0:
        return float("nan")
    model.eval()
    total = 0.0
    for start in range(0, len(arrays), batch_size):
        clean = _to_float(arrays[start:start + batch_size]).contiguous(memory_format=torch.channels_last)
        total += F.mse_loss(model(clean), model.normalise(clean), reduction="sum").item()
    return total / arrays.size


def _display_range(images: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling: reconstructions of a normalising model live in normalised units."""
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp(min=1e-6)


def plot_loss_curve(history: TrainingHistory, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history.train_loss) + 1)
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(epochs, history.train_loss, marker="o", label="train (corrupted input)")
    axis.plot(epochs, history.validation_loss, marker="o", label="validation (clean input)")
    axis.set(xlabel="epoch", ylabel="reconstruction MSE (normalised units)", title="Thumbnail autoencoder training")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@torch.inference_mode()
def plot_reconstructions(model: torch.nn.Module, arrays: np.ndarray, config: TrainingConfig, path: Path,
                         count: int = 8) -> None:
    """Grid: one column per thumbnail, rows = input, corrupted input, reconstruction of the corrupted input."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(arrays))
    clean = _to_float(arrays[:count])
    corrupted = corrupt(clean, config, torch.Generator().manual_seed(config.seed)) if config.denoising else clean
    reconstructed = _display_range(model.eval()(corrupted.contiguous(memory_format=torch.channels_last)))
    figure, axes = plt.subplots(3, count, figsize=(2.2 * count, 4.2), squeeze=False)
    for row, (label, batch) in enumerate((("input", clean), ("corrupted", corrupted), ("reconstructed", reconstructed))):
        for column in range(count):
            image = batch[column].permute(1, 2, 0).numpy()
            axes[row][column].imshow(image.squeeze(), cmap="gray" if image.shape[2] == 1 else None, vmin=0, vmax=1)
            axes[row][column].set_xticks([])
            axes[row][column].set_yticks([])
        axes[row][0].set_ylabel(label)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
