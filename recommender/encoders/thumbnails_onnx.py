"""Thumbnail queries on ONNX Runtime: the autoencoder's embedding, the same vectors as PyTorch, in
about half the CPU time per upload (docs/performance.md has the figures).

The encoder's ``embed`` (photometric normalisation, conv stages, GeM pooling) is exported with
``torch.onnx`` and a dynamic batch size by a child process (:mod:`.onnx_export` says why) into a
temporary file, and only used after it has reproduced this process's PyTorch vectors on probe
thumbnails, one at a time and as one batch: a model that does not export, or exports differently,
simply stays on PyTorch.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..search.index import normalize
from .autoencoder import ARCHITECTURES, save_autoencoder
from .onnx_export import OnnxExportError, exported_session

logger = logging.getLogger(__name__)

#: Largest difference from PyTorch's unit vector, per coordinate, that still counts as the same vector.
TOLERANCE = 1e-4


class _Embedding(torch.nn.Module):
    """The autoencoder's ``embed`` as ``forward``, the form ``torch.onnx`` exports."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images)


class OnnxThumbnailModel:
    """An ONNX Runtime session mapping ``N x C x H x W`` preprocessed thumbnails to features (thread-safe)."""

    def __init__(self, session):
        self.session = session

    def __call__(self, arrays: np.ndarray) -> np.ndarray:
        features = self.session.run(None, {"images": np.ascontiguousarray(arrays, dtype=np.float32)})[0]
        return np.ascontiguousarray(features, dtype=np.float32)


def _pytorch_vectors(model: torch.nn.Module, arrays: np.ndarray) -> np.ndarray:
    """Unit vectors as :meth:`ThumbnailEncoder.embed_arrays` computes them on PyTorch."""
    batch = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32)).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        return normalize(model.embed(batch).float().numpy())


def write_thumbnail_onnx(model: torch.nn.Module, path: Path) -> None:
    """Export ``model``'s ``embed`` to ``path`` with a dynamic batch size. Runs in :mod:`.onnx_export`'s
    child process, never beside live queries."""
    config = model.config
    # torch.export specialises a dimension whose example size is 1: the example batch has two.
    example = torch.rand(2, config.in_channels, config.height, config.width, generator=torch.Generator().manual_seed(0))
    wrapper = _Embedding(model.to(memory_format=torch.contiguous_format)).eval()
    torch.onnx.export(wrapper, (example,), str(path), input_names=["images"], output_names=["features"],
                      dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False)


def export_thumbnail_model(model: torch.nn.Module, probes: np.ndarray, threads: int = 1) -> OnnxThumbnailModel:
    """Export ``model``'s ``embed`` in a child process and check it against PyTorch on ``probes``
    (``N x C x H x W``, N >= 1).

    The child rebuilds the model from its config and weights, so only the architectures a config
    names can be exported. Raises :class:`OnnxExportError` when the export fails or any probe's unit
    vector, alone or in the batch of all probes, differs by more than :data:`TOLERANCE`.
    ``threads``: ONNX Runtime's intra-op threads (serving runs one per query).
    """
    if len(probes) == 0:
        raise OnnxExportError("No probe thumbnails to check the export against.")
    config = getattr(model, "config", None)
    if config is None or type(model) is not ARCHITECTURES.get(config.architecture):
        raise OnnxExportError(f"a {type(model).__name__} is not rebuilt from its config by the export process.")
    probes = np.ascontiguousarray(probes, dtype=np.float32)
    alone = np.concatenate([_pytorch_vectors(model, probe[None]) for probe in probes])
    together = _pytorch_vectors(model, probes)
    with tempfile.TemporaryDirectory(prefix="thumbnail-encoder-") as folder:  # what the child rebuilds it from
        weights, config_path = Path(folder) / "encoder.safetensors", Path(folder) / "encoder.json"
        save_autoencoder(model, weights, config_path)
        onnx_model = OnnxThumbnailModel(exported_session(["thumbnail", f"--weights={weights}",
                                                          f"--config={config_path}"], threads))
    try:
        worst = max(float(np.abs(normalize(onnx_model(probe[None])) - vector).max())
                    for probe, vector in zip(probes, alone, strict=True))
        worst = max(worst, float(np.abs(normalize(onnx_model(probes)) - together).max()))
    except Exception as error:  # e.g. the session refuses a batch size the export did not foresee
        raise OnnxExportError(f"the exported model fails on the probe thumbnails: {type(error).__name__}: "
                              f"{error}") from error
    if not worst <= TOLERANCE:  # NaN included
        raise OnnxExportError(f"the exported model's vectors differ from PyTorch's by up to {worst:.2g}.")
    logger.info("Thumbnail queries run on ONNX Runtime, %d intra-op thread(s) (largest difference from PyTorch "
                "on %d probes: %.1g)", threads, len(probes), worst)
    return onnx_model
