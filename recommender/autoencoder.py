"""Convolutional autoencoders for thumbnails; the encoder half becomes the image feature extractor.

Two architectures share one interface (``forward`` reconstructs, ``embed`` gives retrieval
vectors) and one file format (``safetensors`` weights + a JSON :class:`EncoderConfig`):

- ``"dae"`` (default): a compact RGB denoising autoencoder on letterbox-cropped 16:9 input,
  whose embedding pools the encoder's feature maps over a coarse spatial grid, keeping colour
  and layout while tolerating small crops and re-encodes.
- ``"baseline"``: the design this project started from (grayscale 480x360, three conv stages,
  a ``Linear(64*120*90 -> 64)`` ReLU bottleneck), kept only so benchmarks can compare against it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import BundleError


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild the network and preprocess its input."""

    architecture: str = "dae"
    width: int = 128
    height: int = 72
    grayscale: bool = False
    crop_letterbox: bool = True
    channels: tuple[int, ...] = (32, 64, 128)
    latent_channels: int = 64
    pool_grid: tuple[int, int] = (2, 2)

    @property
    def in_channels(self) -> int:
        return 1 if self.grayscale else 3

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise BundleError(f"Unknown encoder config keys {sorted(unknown)}: the bundle was made by a newer version.")
        data = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return cls(**data)


BASELINE_CONFIG = EncoderConfig(
    architecture="baseline", width=480, height=360, grayscale=True, crop_letterbox=False,
    channels=(16, 32, 64), latent_channels=64, pool_grid=(1, 1),
)


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DenoisingAutoencoder(nn.Module):
    """Three stride-2 stages down to a ``latent_channels x H/8 x W/8`` code, mirrored back up."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        stages, previous = [], config.in_channels
        for index, channels in enumerate(config.channels):
            blocks = [_conv_block(previous, channels, stride=2)]
            if index > 0:  # the stem stays light; deeper stages get a second conv
                blocks.append(_conv_block(channels, channels, stride=1))
            stages.append(nn.Sequential(*blocks))
            previous = channels
        self.stages = nn.ModuleList(stages)
        self.to_latent = nn.Conv2d(previous, config.latent_channels, 1)
        # Going up, each resolution gets the channel count the encoder had one stage earlier
        # (and the full-resolution block half the stem's): the decoder only trains the encoder,
        # so it stays cheap where pixels are many.
        ups, previous = [], config.latent_channels
        for channels in (*reversed(config.channels[:-1]), max(config.channels[0] // 2, 4)):
            ups.append(_up_block(previous, channels))
            previous = channels
        self.decoder = nn.Sequential(*ups, nn.Conv2d(previous, config.in_channels, 3, padding=1), nn.Sigmoid())

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the last stage's feature map and the latent code."""
        features = images
        for stage in self.stages:
            features = stage(features)
        return features, self.to_latent(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        reconstruction = self.decoder(self.encode(images)[1])
        if reconstruction.shape[-2:] != images.shape[-2:]:  # sizes not divisible by 8 round up on the way down
            reconstruction = F.interpolate(reconstruction, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return reconstruction

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Grid-pooled features plus a global mean: colour and coarse layout, robust to small shifts."""
        features, latent = self.encode(images)
        grid = F.adaptive_avg_pool2d(latent, self.config.pool_grid).flatten(1)
        global_mean = features.mean(dim=(2, 3))
        return torch.cat([global_mean, grid], dim=1)


class BaselineAutoencoder(nn.Module):
    """The original design: grayscale 480x360, conv stages to 64x120x90, Linear -> 64 with ReLU."""

    def __init__(self, config: EncoderConfig = BASELINE_CONFIG):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.map_shape = (c3, config.height // 4, config.width // 4)
        flat = int(np.prod(self.map_shape))
        self.bottleneck = nn.Sequential(nn.Linear(flat, config.latent_channels), nn.ReLU(inplace=True))
        self.expand = nn.Sequential(nn.Linear(config.latent_channels, flat), nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c3, c2, 2, stride=2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c2, c1, 2, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(c1, 1, 3, padding=1), nn.Sigmoid(),
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.features(images).flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        code = self.expand(self.embed(images))
        return self.decoder(code.view(-1, *self.map_shape))


ARCHITECTURES: dict[str, type[nn.Module]] = {"dae": DenoisingAutoencoder, "baseline": BaselineAutoencoder}


def build_autoencoder(config: EncoderConfig) -> nn.Module:
    if config.architecture not in ARCHITECTURES:
        raise BundleError(f"Unknown encoder architecture {config.architecture!r}; known: {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[config.architecture](config)


def encoder_parameter_count(model: nn.Module) -> int:
    """Parameters used by ``embed`` (the decoder is only needed for training)."""
    if isinstance(model, DenoisingAutoencoder):
        parts = [model.stages, model.to_latent]
    elif isinstance(model, BaselineAutoencoder):
        parts = [model.features, model.bottleneck]
    else:
        raise TypeError(type(model).__name__)
    return sum(p.numel() for part in parts for p in part.parameters())


def save_autoencoder(model: nn.Module, weights_path: Path, config_path: Path) -> None:
    """Write weights as safetensors and the architecture as JSON (never a pickle)."""
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(state, str(weights_path))
    Path(config_path).write_text(model.config.to_json())


def load_autoencoder(weights_path: Path, config_path: Path) -> nn.Module:
    """Rebuild the model from its JSON config and load safetensors weights, in eval mode."""
    for path in (weights_path, config_path):
        if not Path(path).is_file():
            raise BundleError(f"Missing encoder file {path}. Rebuild the bundle with `python -m train build`.")
    try:
        config = EncoderConfig.from_dict(json.loads(Path(config_path).read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise BundleError(f"Encoder config {config_path} is not valid: {error}") from None
    model = build_autoencoder(config)
    try:
        state = load_file(str(weights_path))
        model.load_state_dict(state, strict=True)
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise BundleError(
            f"Encoder weights {weights_path} do not load into the architecture in {config_path}: {error}"
        ) from None
    return model.eval().to(memory_format=torch.channels_last)
