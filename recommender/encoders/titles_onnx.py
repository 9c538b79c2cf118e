"""Query titles on ONNX Runtime: the same vectors as PyTorch, faster for one title on a CPU.

A title query is one short sentence, where PyTorch spends much of its time dispatching many
small operations (docs/performance.md has the figures).
The SentenceTransformer (tokenizer excluded, pooling and normalisation included) is exported with
``torch.onnx`` by a child process (:mod:`.onnx_export` says why) into a temporary file, and only
used after it has reproduced this process's PyTorch vectors on probe titles: a model that does
not export, or exports differently, simply stays on PyTorch. Batches (building a bundle) always
run on PyTorch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .onnx_export import OnnxExportError, exported_session
from .title_vectors import unit_sentence_embeddings

logger = logging.getLogger(__name__)

#: Largest difference from PyTorch's vector, per coordinate, that still counts as the same vector.
TOLERANCE = 1e-4
#: Tokenizer outputs an exported model may take, in this order.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _UnitSentenceEmbedding(torch.nn.Module):
    """:func:`unit_sentence_embeddings` with tensors in and out, the form ``torch.onnx`` exports."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            features["token_type_ids"] = token_type_ids
        return unit_sentence_embeddings(self.model, features)


class OnnxTitleModel:
    """An ONNX Runtime session that maps one tokenised title to its unit vector (thread-safe)."""

    def __init__(self, session):
        self.session = session
        self.input_names = tuple(node.name for node in self.session.get_inputs())

    def __call__(self, features: dict[str, torch.Tensor]) -> np.ndarray:
        inputs = {name: features[name].cpu().numpy().astype(np.int64) for name in self.input_names}
        return np.ascontiguousarray(self.session.run(None, inputs)[0], dtype=np.float32)


def write_title_onnx(model: torch.nn.Module, example_text: str, path: Path) -> None:
    """Export ``model`` (a SentenceTransformer) traced on ``example_text`` to ``path``, with dynamic
    batch and length. Runs in :mod:`.onnx_export`'s child process, never beside live queries."""
    example = model.preprocess([example_text])
    input_names = [name for name in MODEL_INPUTS if name in example]
    wrapper = _UnitSentenceEmbedding(model.cpu()).eval()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    torch.onnx.export(wrapper, (), str(path), kwargs={name: example[name] for name in input_names},
                      input_names=input_names, output_names=["unit_vector"],
                      dynamic_shapes={name: {0: batch, 1: length} for name in input_names}, dynamo=True,
                      verbose=False)


def export_title_model(model_name_or_path: str, revision: str | None, probes: Sequence[dict[str, torch.Tensor]],
                       expected: Sequence[np.ndarray], example_text: str) -> OnnxTitleModel:
    """Export the model loaded from ``model_name_or_path`` at ``revision`` in a child process, traced on
    ``example_text``, and check it on ``probes`` (tokenised titles) against ``expected``, the vectors
    this process's PyTorch model gives them.

    Raises :class:`OnnxExportError` when the export fails or any probe's vector differs by more
    than :data:`TOLERANCE` from the PyTorch path it replaces.
    """
    if not probes:
        raise OnnxExportError("No probe titles to check the export against.")
    arguments = ["title", f"--model={model_name_or_path}", f"--example={example_text}"]
    if revision:
        arguments.append(f"--revision={revision}")
    onnx_model = OnnxTitleModel(exported_session(arguments))
    worst = 0.0
    try:
        for features, vector in zip(probes, expected, strict=True):
            worst = max(worst, float(np.abs(onnx_model(features) - vector).max()))
    except Exception as error:  # e.g. the session refuses an input shape the export did not foresee
        raise OnnxExportError(f"the exported model fails on a probe title: {type(error).__name__}: {error}") from error
    if not worst <= TOLERANCE:  # NaN included
        raise OnnxExportError(f"the exported model's vectors differ from PyTorch's by up to {worst:.2g}.")
    logger.info("Title queries run on ONNX Runtime (largest difference from PyTorch on %d probes: %.1g)",
                len(probes), worst)
    return onnx_model
