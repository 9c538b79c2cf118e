"""One-title queries on ONNX Runtime: the real export of the tests' tiny BERT, checked against PyTorch.

Each export takes about ten seconds (a child process running torch.onnx with dynamo); the module
exports five times.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from recommender.encoders import titles_onnx
from recommender.encoders.titles import TitleEncoder
from recommender.serving.startup import TITLES_SETTLED_LOG, BundlePlan, Startup

from .synthetic import catalog_records, write_tiny_xlmr_model

TITLES = [record["title"] for record in catalog_records()]


def test_the_app_moves_title_queries_to_onnx_runtime_with_the_same_vectors(
        bundle_dir: Path, text_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After startup the export runs in the background; once it has, queries give PyTorch's vectors."""
    caplog.set_level(logging.INFO, logger="recommender.serving.startup")
    startup = Startup(BundlePlan(str(bundle_dir), None, "test"), text_model=str(text_model)).start()
    recommender = startup.wait(timeout=120)
    encoder = recommender.title_encoder
    deadline = time.monotonic() + 240
    while not startup.titles_settled and time.monotonic() < deadline:
        time.sleep(0.5)
    assert startup.titles_settled
    assert encoder.backend == "onnxruntime" and recommender.info()["text_backend"] == "onnxruntime"
    assert f"{TITLES_SETTLED_LOG} onnxruntime" in caplog.text  # what the serving benchmark waits for
    # Titles it was not probed on, in English, Sinhala and Tamil, of every length in the catalog.
    for title in TITLES[-12:] + ["a", "an unusually long title " * 8]:
        onnx = encoder.encode([title])
        assert onnx.shape == (1, encoder.dimension) and onnx.dtype == np.float32
        np.testing.assert_allclose(onnx[0], encoder.encode([title, "padding partner"])[0], atol=1e-5)  # PyTorch
    top = recommender.recommend(title=TITLES[-1], mode="text", k=3)
    assert top[0].title == TITLES[-1]


def test_the_default_models_architecture_exports_too(text_model: Path, tmp_path: Path) -> None:
    """multilingual-e5 is an XLM-RoBERTa used with its "query: " prefix: a tiny one must export and match."""
    encoder = TitleEncoder(str(write_tiny_xlmr_model(tmp_path / "xlmr", text_model.parent / "raw")), prefix="query: ")
    expected = encoder.encode(TITLES[-6:])  # a batch: always PyTorch
    assert encoder.use_onnx_runtime(TITLES[:8]) is True and encoder.backend == "onnxruntime"
    for title, vector in zip(TITLES[-6:], expected, strict=True):
        np.testing.assert_allclose(encoder.encode([title])[0], vector, atol=1e-5)


def test_an_export_that_does_not_reproduce_pytorch_is_not_used(text_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    encoder = TitleEncoder(str(text_model))
    before = encoder.encode([TITLES[0]])
    monkeypatch.setattr(titles_onnx, "TOLERANCE", -1.0)  # no export can be that exact
    with caplog.at_level(logging.WARNING, logger="recommender.encoders.titles"):
        assert encoder.use_onnx_runtime(TITLES[:4]) is False
    assert "stay on PyTorch" in caplog.text and "differ from PyTorch's" in caplog.text
    assert encoder.backend == "pytorch"
    np.testing.assert_array_equal(encoder.encode([TITLES[0]]), before)


def test_no_probe_titles_is_no_export(text_model: Path) -> None:
    encoder = TitleEncoder(str(text_model))
    assert encoder.use_onnx_runtime([]) is False and encoder.backend == "pytorch"


def test_title_queries_while_the_export_runs_never_share_the_tokenizer(text_model: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The export runs in the first seconds after startup, beside live queries. A fast tokenizer
    used by two threads at once raises "Already borrowed": here the live one raises exactly that
    whenever two threads are inside it, and titles are sent from several threads until the export ends."""
    encoder = TitleEncoder(str(text_model))
    expected = {title: vector for title, vector in zip(TITLES, encoder.encode(TITLES), strict=True)}
    tokenizer = encoder.model.tokenizer
    call = type(tokenizer).__call__
    inside = threading.Lock()

    def one_thread_at_a_time(self, *args, **kwargs):
        if self is not tokenizer:  # another model's
            return call(self, *args, **kwargs)
        if not inside.acquire(blocking=False):
            raise RuntimeError("Already borrowed")
        try:
            time.sleep(0.002)  # a longer title keeps it a little longer
            return call(self, *args, **kwargs)
        finally:
            inside.release()

    monkeypatch.setattr(type(tokenizer), "__call__", one_thread_at_a_time)
    exported: list[bool] = []
    export = threading.Thread(target=lambda: exported.append(encoder.use_onnx_runtime(TITLES[:16])))
    failures: list[str] = []
    answered = [0] * 4

    def send_titles(caller: int) -> None:
        step = 0
        while export.is_alive() or step < 20:
            title = TITLES[(caller * 7 + step) % len(TITLES)]
            step += 1
            try:
                np.testing.assert_allclose(encoder.encode([title])[0], expected[title], atol=1e-5)
                answered[caller] += 1
            except Exception as error:  # noqa: BLE001 - every failure is reported
                failures.append(f"{type(error).__name__}: {error}")

    callers = [threading.Thread(target=send_titles, args=(caller,)) for caller in range(4)]
    export.start()
    for caller in callers:
        caller.start()
    for thread in (export, *callers):
        thread.join()
    assert failures == [] and exported == [True] and encoder.backend == "onnxruntime"
    assert min(answered) >= 20


def test_a_model_loaded_while_an_export_runs_loads(text_model: Path) -> None:
    """torch.onnx's tracing switches on process-wide state that every torch.compiler.disable-wrapped call
    touches: a title model loaded in this process during an export (a hot swap, a first-start build)
    once failed with ``KeyError: 'custom'``. The export now runs in a child process."""
    encoder = TitleEncoder(str(text_model))
    exported: list[bool] = []
    export = threading.Thread(target=lambda: exported.append(encoder.use_onnx_runtime(TITLES[:8])))
    export.start()
    loads, failures = 0, []
    while export.is_alive() or loads < 10:
        try:
            TitleEncoder(str(text_model))
            loads += 1
        except Exception as error:  # noqa: BLE001 - every failure is reported
            failures.append(f"{type(error).__name__}: {error}")
    export.join()
    assert failures == [] and exported == [True]


def test_an_export_process_that_fails_leaves_titles_on_pytorch(text_model: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The child loads the model from where this process did: here the folder is gone by then."""
    folder = shutil.copytree(text_model, tmp_path / "model")
    encoder = TitleEncoder(str(folder))
    before = encoder.encode([TITLES[0]])
    shutil.rmtree(folder)
    with caplog.at_level(logging.WARNING, logger="recommender.encoders.titles"):
        assert encoder.use_onnx_runtime(TITLES[:4]) is False
    assert "stay on PyTorch" in caplog.text and "the export process failed" in caplog.text
    assert encoder.backend == "pytorch"
    np.testing.assert_array_equal(encoder.encode([TITLES[0]]), before)
