"""Title embeddings with sentence-transformers (multilingual by default)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidQueryError
from .title_vectors import unit_sentence_embeddings
from .titles_onnx import OnnxExportError, export_title_model

logger = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "intfloat/multilingual-e5-base"
#: Longer titles are refused: YouTube caps titles at 100 characters, so this is not a title.
MAX_TITLE_CHARS = 1000


def default_prefix(model_name_or_path: str) -> str:
    """The prefix a build uses when none is given: ``query: `` for an e5 model named by its Hub id
    (e5 models are trained with it; symmetric title-to-title search uses it on both sides), else none.

    Only a Hub id says which model it is: a local folder's name proves nothing, so a local copy of
    an e5 model needs ``--text-prefix``. Serving never guesses: it uses the manifest's prefix.
    """
    name = str(model_name_or_path)
    is_hub_id = not Path(name).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None
    return "query: " if is_hub_id and "e5" in name.split("/")[1].lower() else ""


def clean_title(title: object) -> str:
    """Validate a query title: a non-blank string of reasonable length, whitespace collapsed."""
    if not isinstance(title, str):
        raise InvalidQueryError(f"Title must be text, got {type(title).__name__}.")
    cleaned = " ".join(title.split())
    if not cleaned:
        raise InvalidQueryError("Title is empty: type a few words.")
    if len(cleaned) > MAX_TITLE_CHARS:
        raise InvalidQueryError(f"Title is {len(cleaned):,} characters long; the limit is {MAX_TITLE_CHARS:,}.")
    return cleaned


class TitleEncoder:
    """Wraps a SentenceTransformer: prefix, L2 normalisation, batching; safe to share between threads."""

    def __init__(self, model_name_or_path: str = DEFAULT_TEXT_MODEL, revision: str | None = None,
                 prefix: str | None = None, device: str = "cpu"):
        from sentence_transformers import (
            SentenceTransformer,  # heavy import, only when needed
        )

        self.model_name_or_path = str(model_name_or_path)
        self.revision = revision
        self.prefix = default_prefix(model_name_or_path) if prefix is None else prefix
        self.model = SentenceTransformer(self.model_name_or_path, revision=revision, device=device,
                                         trust_remote_code=False)
        self.dimension = int(self.model.get_embedding_dimension())
        self._lock = threading.Lock()
        self._onnx = None  # set by use_onnx_runtime(): one-title queries then run on ONNX Runtime

    @property
    def backend(self) -> str:
        """What one-title queries run on: ``"onnxruntime"`` or ``"pytorch"``."""
        return "pytorch" if self._onnx is None else "onnxruntime"

    def use_onnx_runtime(self, probe_titles: Sequence[str]) -> bool:
        """Run one-title queries on ONNX Runtime if the exported model reproduces PyTorch's vectors
        on ``probe_titles`` (see :mod:`~recommender.encoders.titles_onnx`); otherwise keep PyTorch and say why.

        Takes seconds to a minute (a child process exports): call it off the request path. Queries
        keep working meanwhile; this process only tokenises and embeds the probes, under the lock
        that queries hold (a fast tokenizer used by two threads at once raises "Already borrowed").
        """
        from sentence_transformers.util import batch_to_device

        texts = [self.prefix + title for title in probe_titles]
        with self._lock:
            probes = [self.model.preprocess([text]) for text in texts]
            with torch.inference_mode():
                expected = [unit_sentence_embeddings(self.model, batch_to_device(features, self.model.device))
                            .cpu().numpy() for features in probes]
        try:
            self._onnx = export_title_model(self.model_name_or_path, self.revision, probes, expected,
                                            example_text=max(texts, key=len, default=""))
        except OnnxExportError as error:
            logger.warning("Title queries stay on PyTorch: the ONNX export of %s failed (%s)",
                           self.model_name_or_path, error)
            return False
        return True

    def encode(self, titles: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
        """Return float32 ``(len(titles), dimension)`` unit vectors."""
        texts = [self.prefix + title for title in titles]
        if len(texts) == 1:
            return self._encode_one(texts[0])
        with self._lock:  # tokenizers and torch modules are not guaranteed re-entrant
            vectors = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=show_progress_bar)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _encode_one(self, text: str) -> np.ndarray:
        """A query title: on ONNX Runtime once :meth:`use_onnx_runtime` succeeded, else straight through
        the model's own modules. Either way the same vector as ``encode`` gives, without its batching
        machinery (length sorting, chunking, re-ordering: about 10% of a PyTorch query's time).

        The lock covers the tokenizer and the PyTorch modules; an ONNX Runtime session is thread-safe,
        so concurrent queries run it side by side."""
        from sentence_transformers.util import batch_to_device

        onnx = self._onnx
        with self._lock:
            features = self.model.preprocess([text])
            if onnx is None:
                with torch.inference_mode():
                    vector = unit_sentence_embeddings(self.model, batch_to_device(features, self.model.device))
                return np.ascontiguousarray(vector.cpu().numpy(), dtype=np.float32)
        return onnx(features)
