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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import BundleError


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild the network and preprocess its input."""

    architecture: str = "dae"
    width: int = 128
    height: int = 72
    grayscale: bool = False
    crop_letterbox: bool = True
    #: Divide out each image's brightness and contrast first: re-uploads are often brightened or darkened.
    photometric_normalisation: bool = True
    channels: tuple[int, ...] = (32, 64, 128, 256)
    latent_channels: int = 64
    #: The decoder only exists to train the encoder, so it is kept thin where pixels are many.
    decoder_channels: tuple[int, ...] = (64, 32, 16, 8)
    #: Generalised-mean pooling exponent for the embedding (1 = average, large = max).
    gem_p: float = 3.0

    def __post_init__(self) -> None:
        if self.architecture == "dae" and len(self.decoder_channels) != len(self.channels):
            raise ValueError("decoder_channels needs one entry per encoder stage (each upsamples 2x).")

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
            raise BundleError(f"Unknown encoder config keys {sorted(unknown)}: the bundle was made by another version "
                             "of this code. Rebuild it with `python -m train build`.")
        data = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return cls(**data)


BASELINE_CONFIG = EncoderConfig(
    architecture="baseline", width=480, height=360, grayscale=True, crop_letterbox=False,
    photometric_normalisation=False, channels=(16, 32, 64), latent_channels=64, decoder_channels=(32, 16),
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
    """Stride-2 conv stages down to a ``latent_channels x H/16 x W/16`` code, and a light decoder back up.

    The embedding concatenates GeM-pooled features of every encoder stage, each L2-normalised:
    early stages carry colour and texture, late ones layout and shapes; pooling makes them
    tolerant of the few-percent crops and shifts that re-uploads bring.
    """

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
        ups, previous = [], config.latent_channels
        for channels in config.decoder_channels:
            ups.append(_up_block(previous, channels))
            previous = channels
        self.decoder = nn.Sequential(*ups, nn.Conv2d(previous, config.in_channels, 3, padding=1))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image brightness/contrast normalisation (colour ratios kept); also the reconstruction target."""
        if not self.config.photometric_normalisation:
            return images
        luminance = images.mean(dim=1, keepdim=True)
        mean = luminance.mean(dim=(2, 3), keepdim=True)
        std = luminance.std(dim=(2, 3), keepdim=True).clamp(min=0.02)
        return (images - mean) / std

    def stage_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        features, maps = self.normalise(images), []
        for stage in self.stages:
            features = stage(features)
            maps.append(features)
        return maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction of the (normalised) clean image from a possibly corrupted one."""
        reconstruction = self.decoder(self.to_latent(self.stage_features(images)[-1]))
        if reconstruction.shape[-2:] != images.shape[-2:]:  # odd sizes round up on the way down
            reconstruction = F.interpolate(reconstruction, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return reconstruction

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        p = self.config.gem_p
        pooled = [F.normalize(m.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p), dim=1)
                  for m in self.stage_features(images)]
        return torch.cat(pooled, dim=1)


class BaselineAutoencoder(nn.Module):
    """The original design: grayscale 480x360, conv stages to 64x120x90, Linear -> 64 with ReLU."""

    def __init__(self, config: EncoderConfig = BASELINE_CONFIG):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        d1, d2 = config.decoder_channels
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
            nn.ConvTranspose2d(c3, d1, 2, stride=2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(d1, d2, 2, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(d2, 1, 3, padding=1), nn.Sigmoid(),
        )

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return images

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
        parts = [model.stages]
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
