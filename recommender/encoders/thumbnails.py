"""Thumbnail embeddings: preprocessing + the trained autoencoder's encoder, batched and normalised."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.images import ImageInput, crop_letterbox, load_image
from ..search.index import normalize
from .autoencoder import EncoderConfig, encoder_parameter_count, load_autoencoder


def preprocess(image: Image.Image, config: EncoderConfig) -> np.ndarray:
    """PIL image -> float32 ``C x H x W`` array in [0, 1], as the network expects it."""
    if config.crop_letterbox:
        image = crop_letterbox(image)
    if config.grayscale:
        image = image.convert("L")
    if image.size != (config.width, config.height):
        image = image.resize((config.width, config.height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_for(config: EncoderConfig, source: ImageInput) -> Image.Image:
    """Decode, letting JPEG DCT scaling skip detail the network would discard anyway (much faster).

    The 1.5x margin keeps a letterboxed 480x360 thumbnail's content above the input size.
    """
    return load_image(source, draft=(int(config.width * 1.5), int(config.height * 1.5)))


class ThumbnailEncoder:
    """Turns thumbnails into unit vectors with a trained autoencoder; safe to share between threads."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.config: EncoderConfig = model.config
        with torch.inference_mode():
            probe = torch.zeros(1, self.config.in_channels, self.config.height, self.config.width)
            self.dimension = int(self.model.embed(probe).shape[1])
        self.parameters = encoder_parameter_count(self.model)

    @classmethod
    def load(cls, weights_path: Path, config_path: Path) -> "ThumbnailEncoder":
        return cls(load_autoencoder(weights_path, config_path))

    def prepare(self, source: ImageInput) -> np.ndarray:
        """Decode and preprocess one image (raises :class:`InvalidQueryError` on bad input)."""
        return preprocess(decode_for(self.config, source), self.config)

    def embed_arrays(self, arrays: np.ndarray) -> np.ndarray:
        """``N x C x H x W`` preprocessed arrays -> ``N x D`` unit vectors.

        No lock: an eval-mode forward pass under ``inference_mode`` changes no state, so concurrent
        queries run it side by side (each on its own thread, the same result as alone)."""
        batch = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32))
        batch = batch.to(memory_format=torch.channels_last)
        with torch.inference_mode():
            vectors = self.model.embed(batch).float().numpy()
        return normalize(vectors)

    def encode(self, images: Sequence[ImageInput] | Iterable[ImageInput], batch_size: int = 64,
               total: int | None = None, show_progress_bar: bool = False) -> np.ndarray:
        """Embed many images, batched, with an optional progress bar."""
        chunks, pending = [], []
        progress = tqdm(images, total=total, desc="Embedding thumbnails", unit="img", disable=not show_progress_bar)
        for image in progress:
            pending.append(self.prepare(image))
            if len(pending) == batch_size:
                chunks.append(self.embed_arrays(np.stack(pending)))
                pending = []
        if pending:
            chunks.append(self.embed_arrays(np.stack(pending)))
        if not chunks:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(chunks)
