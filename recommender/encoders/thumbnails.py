"""Thumbnail embeddings: preprocessing + the trained autoencoder's encoder, batched and normalised.

Queries run on ONNX Runtime once :meth:`ThumbnailEncoder.use_onnx_runtime` has exported the encoder
and checked it (see :mod:`.thumbnails_onnx`); building a bundle stays on PyTorch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.images import ImageInput, crop_letterbox, load_image
from ..errors import InvalidQueryError
from ..search.index import normalize
from .autoencoder import EncoderConfig, encoder_parameter_count, load_autoencoder
from .onnx_export import OnnxExportError
from .thumbnails_onnx import OnnxThumbnailModel, export_thumbnail_model

logger = logging.getLogger(__name__)


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

    def __init__(self, model: torch.nn.Module, device: str = "cpu"):
        """``device``: where PyTorch runs the encoder (``"cuda"`` in a GPU build worker; serving uses the CPU)."""
        self.device = torch.device(device)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.config: EncoderConfig = model.config
        with torch.inference_mode():
            probe = torch.zeros(1, self.config.in_channels, self.config.height, self.config.width, device=self.device)
            self.dimension = int(self.model.embed(probe).shape[1])
        self.parameters = encoder_parameter_count(self.model)
        self._onnx: OnnxThumbnailModel | None = None  # set by use_onnx_runtime()

    @property
    def backend(self) -> str:
        """What thumbnails are embedded on: ``"onnxruntime"`` or ``"pytorch"``."""
        return "pytorch" if self._onnx is None else "onnxruntime"

    def use_onnx_runtime(self, probe_images: Sequence[ImageInput]) -> bool:
        """Embed thumbnails on ONNX Runtime from now on if the exported encoder reproduces PyTorch's
        vectors on ``probe_images`` (see :mod:`~recommender.encoders.thumbnails_onnx`); otherwise keep
        PyTorch and say why.

        Takes seconds (a child process exports): call it off the request path; queries keep running
        on PyTorch meanwhile. The session gets as many intra-op threads as torch has now: one per query once
        serving's thread policy is set (``serving/startup.py``)."""
        try:
            probes = np.stack([self.prepare(image) for image in probe_images]) if probe_images else np.zeros(0)
            self._onnx = export_thumbnail_model(self.model, probes, threads=torch.get_num_threads())
        except (OnnxExportError, InvalidQueryError) as error:  # the export, or a probe that does not decode
            logger.warning("Thumbnails stay on PyTorch: the ONNX export of the %s encoder failed (%s)",
                           self.config.architecture, error)
            return False
        return True

    @classmethod
    def load(cls, weights_path: Path, config_path: Path) -> "ThumbnailEncoder":
        return cls(load_autoencoder(weights_path, config_path))

    def prepare(self, source: ImageInput) -> np.ndarray:
        """Decode and preprocess one image (raises :class:`InvalidQueryError` on bad input)."""
        return preprocess(decode_for(self.config, source), self.config)

    def same_model(self, other: ThumbnailEncoder) -> bool:
        """Whether ``other`` embeds with the same configuration and weights (a new bundle revision
        made by ``train add`` keeps its encoder)."""
        if self.config != other.config:
            return False
        theirs = other.model.state_dict()
        return all(torch.equal(tensor, theirs[name]) for name, tensor in self.model.state_dict().items())

    def embed_arrays(self, arrays: np.ndarray) -> np.ndarray:
        """``N x C x H x W`` preprocessed arrays -> ``N x D`` unit vectors, on ONNX Runtime once
        :meth:`use_onnx_runtime` succeeded (every batch size: one upload and a batch of uploads get
        the same vectors, to float rounding), else on PyTorch.

        No lock: an ONNX Runtime session is thread-safe, and an eval-mode forward pass under
        ``inference_mode`` changes no state, so concurrent queries run side by side (each on its own
        thread, the same result as alone)."""
        onnx = self._onnx
        if onnx is not None:
            return normalize(onnx(arrays))
        batch = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32))
        batch = batch.to(self.device, memory_format=torch.channels_last)
        with torch.inference_mode():
            vectors = self.model.embed(batch).float().cpu().numpy()
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
