"""Query titles on ONNX Runtime: the same vectors as PyTorch, faster for one title on a CPU.

A title query is one short sentence, where PyTorch spends much of its time dispatching many
small operations (docs/performance.md has the figures).
The loaded SentenceTransformer (tokenizer excluded, pooling and normalisation included) is
exported with ``torch.onnx`` into a temporary file, and only used after it has reproduced
PyTorch's vectors on probe titles: a model that does not export, or exports differently, simply
stays on PyTorch. Batches (building a bundle) always run on PyTorch.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .title_vectors import unit_sentence_embeddings

logger = logging.getLogger(__name__)

#: Largest difference from PyTorch's vector, per coordinate, that still counts as the same vector.
TOLERANCE = 1e-4
#: Tokenizer outputs an exported model may take, in this order.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


#: torch.export's tracing state is process-wide: two exports at once (startup's and a hot swap's,
#: or two apps in one process) fail with errors such as "Expected proxy mode to be set".
_EXPORT_LOCK = threading.Lock()


@contextmanager
def exporting() -> Iterator[None]:
    """One ``torch.onnx`` export at a time in this process, its INFO lines (hundreds of graph-pass
    messages) out of the app's log.

    Only these libraries' loggers are touched: the export runs beside live queries, so
    process-wide state (warning filters, stdout) is left alone.
    """
    with _EXPORT_LOCK:
        loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
        levels = [log.level for log in loggers]
        for log in loggers:
            log.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels):
                log.setLevel(level)


def cpu_session(path: Path, threads: int = 1):
    """An ONNX Runtime CPU session on ``threads`` intra-op threads (the app runs one per query,
    startup.py); ``run`` is thread-safe, so concurrent queries share it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxExportError(RuntimeError):
    """The model could not be exported, or the export does not reproduce PyTorch's vectors."""


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

    def __init__(self, path: Path, input_names: Sequence[str], threads: int = 1):
        self.session = cpu_session(path, threads)
        self.input_names = tuple(input_names)

    def __call__(self, features: dict[str, torch.Tensor]) -> np.ndarray:
        inputs = {name: features[name].cpu().numpy().astype(np.int64) for name in self.input_names}
        return np.ascontiguousarray(self.session.run(None, inputs)[0], dtype=np.float32)


def export_title_model(model: torch.nn.Module, probe_texts: Sequence[str]) -> OnnxTitleModel:
    """Export ``model`` (a SentenceTransformer) and check it against PyTorch on ``probe_texts``.

    Raises :class:`OnnxExportError` when the export fails or any probe's vector differs by more
    than :data:`TOLERANCE` from the PyTorch path it replaces. ``model`` must be the caller's own
    (a copy no other thread uses: its tokenizer is not thread-safe); PyTorch's vectors of the probes
    are taken before the export touches it.
    """
    if not probe_texts:
        raise OnnxExportError("No probe titles to check the export against.")
    probes = [model.preprocess([text]) for text in probe_texts]
    with torch.inference_mode():
        expected = [unit_sentence_embeddings(model, features).cpu().numpy() for features in probes]
    example = model.preprocess([max(probe_texts, key=len)])
    input_names = [name for name in MODEL_INPUTS if name in example]
    wrapper = _UnitSentenceEmbedding(model.cpu()).eval()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    try:
        with tempfile.TemporaryDirectory(prefix="title-model-onnx-") as folder, exporting():
            path = Path(folder) / "title_model.onnx"
            torch.onnx.export(wrapper, (), str(path), kwargs={name: example[name] for name in input_names},
                              input_names=list(input_names), output_names=["unit_vector"],
                              dynamic_shapes={name: {0: batch, 1: length} for name in input_names}, dynamo=True,
                              verbose=False)
            onnx_model = OnnxTitleModel(path, input_names)  # the session holds the graph: the file can go
    except Exception as error:  # torch.onnx and onnxruntime raise many types; all mean "no export"
        raise OnnxExportError(f"{type(error).__name__}: {error}") from error
    worst = 0.0
    try:
        for features, vector in zip(probes, expected, strict=True):
            worst = max(worst, float(np.abs(onnx_model(features) - vector).max()))
    except Exception as error:  # e.g. the session refuses an input shape the export did not foresee
        raise OnnxExportError(f"the exported model fails on a probe title: {type(error).__name__}: {error}") from error
    if worst > TOLERANCE:
        raise OnnxExportError(f"the exported model's vectors differ from PyTorch's by up to {worst:.2g}.")
    logger.info("Title queries run on ONNX Runtime (largest difference from PyTorch on %d probes: %.1g)",
                len(probe_texts), worst)
    return onnx_model
