"""Thumbnail queries on ONNX Runtime: the real export of the tests' encoder, checked against PyTorch.

The app's startup exports once for the module (a child process running torch.onnx with dynamo,
10-30 s on a busy machine); one more test runs two exports at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recommender import Recommender
from recommender.encoders import thumbnails_onnx
from recommender.encoders.autoencoder import DenoisingAutoencoder
from recommender.encoders.thumbnails import ThumbnailEncoder
from recommender.serving.startup import (
    THUMBNAILS_SETTLED_LOG,
    BundlePlan,
    Startup,
    use_onnx_runtime,
)

from .conftest import TEST_ENCODER


@pytest.fixture(scope="module")
def settled(bundle_dir: Path) -> Recommender:
    """The recommender as the app serves it: loaded by a :class:`Startup`, thumbnails moved onto ONNX
    Runtime in the background (titles stay on PyTorch here: their export has its own tests)."""
    startup = Startup(BundlePlan(str(bundle_dir), None, "test"), onnx_titles=False).start()
    recommender = startup.wait(timeout=120)
    deadline = time.monotonic() + 300
    while not startup.titles_settled and time.monotonic() < deadline:
        time.sleep(0.5)
    assert startup.titles_settled
    return recommender


def catalog_thumbnails(recommender: Recommender) -> list[bytes]:
    return [recommender.catalog.image_bytes(row) for row in range(len(recommender.catalog))]


def test_startup_moves_thumbnails_to_onnx_runtime_with_pytorchs_vectors(settled: Recommender,
                                                                         bundle_dir: Path) -> None:
    assert settled.thumbnail_encoder.backend == "onnxruntime"
    assert settled.info()["image_backend"] == "onnxruntime" and settled.info()["text_backend"] == "pytorch"
    pytorch = Recommender.load(bundle_dir)
    assert pytorch.info()["image_backend"] == "pytorch"
    images = catalog_thumbnails(settled)  # the first 16 were the probes; the rest were never checked
    expected = pytorch.thumbnail_encoder.encode(images, batch_size=8)
    onnx = settled.thumbnail_encoder.encode(images, batch_size=8)
    assert onnx.shape == expected.shape and onnx.dtype == np.float32
    assert np.abs(onnx - expected).max() <= thumbnails_onnx.TOLERANCE
    # One upload at a time gives the vectors of a batch of uploads (to float rounding), on ONNX Runtime too.
    alone = np.concatenate([settled.encode_image(image) for image in images[-6:]])
    np.testing.assert_allclose(alone, settled.encode_images(images[-6:]), atol=1e-6)
    # And the same recommendations as PyTorch: the catalog's own thumbnail finds itself first.
    for row in (len(images) - 1, len(images) // 2):
        ours, theirs = (r.recommend(image=images[row], mode="image", k=5) for r in (settled, pytorch))
        assert [x.item_id for x in ours] == [x.item_id for x in theirs]
        assert ours[0].item_id == settled.catalog.item_ids[row]
        np.testing.assert_allclose([x.score for x in ours], [x.score for x in theirs], atol=1e-4)


def test_startup_logs_the_backend_it_settled_on(bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What the serving benchmark reads; with the export switched off, thumbnails stay on PyTorch."""
    caplog.set_level(logging.INFO, logger="recommender.serving.startup")
    startup = Startup(BundlePlan(str(bundle_dir), None, "test"), onnx_titles=False, onnx_thumbnails=False).start()
    recommender = startup.wait(timeout=120)
    deadline = time.monotonic() + 60
    while not startup.titles_settled and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"{THUMBNAILS_SETTLED_LOG} pytorch" in caplog.text
    assert recommender.info()["image_backend"] == "pytorch"


def test_concurrent_thumbnail_queries_get_the_sequential_answers(settled: Recommender) -> None:
    """Eight threads share one ONNX Runtime session, without a lock: every answer must equal the same
    query sent alone (items, order and scores, exactly)."""
    images = catalog_thumbnails(settled)
    titles = settled.catalog.titles
    queries = [("image", row) for row in range(0, len(images), 2)]
    queries += [("hybrid", row) for row in range(1, len(images), 3)]

    def ask(query: tuple[str, int]) -> list[tuple[str, float]]:
        mode, row = query
        title = titles[(row + 5) % len(titles)] if mode == "hybrid" else None  # not the image's own title
        return [(r.item_id, r.score) for r in settled.recommend(image=images[row], title=title, mode=mode, k=6)]

    expected = {query: ask(query) for query in queries}
    answers: list[tuple[tuple[str, int], list]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(seed: int) -> None:
        mine = queries * 2
        random.Random(seed).shuffle(mine)
        start.wait()
        for query in mine:
            try:
                answers.append((query, ask(query)))
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(answers) == 8 * 2 * len(queries)
    assert all(answer == expected[query] for query, answer in answers)


class _BrightnessGated(DenoisingAutoencoder):
    """A model its config does not describe: the export process, which rebuilds the model from the
    config and weights, would export a plain DenoisingAutoencoder instead."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        vectors = super().embed(images)
        return vectors if images.mean() > 0.5 else -vectors


def test_a_model_the_export_process_cannot_rebuild_stays_on_pytorch(settled: Recommender,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    encoder = ThumbnailEncoder(_BrightnessGated(TEST_ENCODER))
    images = catalog_thumbnails(settled)[:4]
    before = encoder.encode(images)
    with caplog.at_level(logging.WARNING, logger="recommender.encoders.thumbnails"):
        assert encoder.use_onnx_runtime(images) is False
    assert "stay on PyTorch" in caplog.text and "_BrightnessGated is not rebuilt from its config" in caplog.text
    assert encoder.backend == "pytorch"
    np.testing.assert_array_equal(encoder.encode(images), before)


def test_an_export_that_does_not_reproduce_pytorch_is_not_used(settled: Recommender,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: here no export is exact enough (the tolerance is below zero)."""
    encoder = ThumbnailEncoder(DenoisingAutoencoder(TEST_ENCODER))
    monkeypatch.setattr(thumbnails_onnx, "TOLERANCE", -1.0)
    with pytest.raises(thumbnails_onnx.OnnxExportError, match="differ from PyTorch"):
        thumbnails_onnx.export_thumbnail_model(encoder.model, np.stack([encoder.prepare(image) for image in
                                                                        catalog_thumbnails(settled)[:3]]))
    assert encoder.use_onnx_runtime([]) is False and encoder.backend == "pytorch"


def test_a_new_revision_with_the_same_encoder_keeps_its_session(settled: Recommender, bundle_dir: Path) -> None:
    """A hot swap to a revision made by ``train add`` keeps the encoder: no second export."""
    new = Recommender.load(bundle_dir)
    use_onnx_runtime(new, titles=False, thumbnails=True, previous=settled)
    assert new.thumbnail_encoder is settled.thumbnail_encoder and new.info()["image_backend"] == "onnxruntime"
    other = ThumbnailEncoder(DenoisingAutoencoder(TEST_ENCODER))  # same architecture, other weights
    assert not other.same_model(settled.thumbnail_encoder)


def test_two_exports_at_once_both_succeed(settled: Recommender) -> None:
    """torch.export's tracing state is process-wide: startup's export and a hot swap's (or two apps in
    one process) once failed each other ("Expected proxy mode to be set") and left PyTorch serving.
    Each export now has its own process."""
    images = catalog_thumbnails(settled)[:4]
    encoders = [ThumbnailEncoder(DenoisingAutoencoder(TEST_ENCODER)) for _ in range(2)]
    start, exported = threading.Barrier(len(encoders)), {}

    def export(index: int) -> None:
        start.wait()
        exported[index] = encoders[index].use_onnx_runtime(images)

    threads = [threading.Thread(target=export, args=(index,)) for index in range(len(encoders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert exported == {0: True, 1: True}
