"""Tokenised titles to unit vectors: the one definition that both query paths compute, PyTorch
(:mod:`~recommender.encoders.titles`) and its ONNX export (:mod:`~recommender.encoders.titles_onnx`),
so they cannot drift apart."""

from __future__ import annotations

import torch


def unit_sentence_embeddings(model: torch.nn.Module, features: dict) -> torch.Tensor:
    """A SentenceTransformer's embeddings of tokenised ``features``, L2-normalised: every query vector,
    on PyTorch or exported to ONNX (:mod:`~recommender.encoders.titles_onnx`), is this function's output."""
    return torch.nn.functional.normalize(model(features)["sentence_embedding"].float(), p=2, dim=-1)
