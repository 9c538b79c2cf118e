"""The title head: it learns topics from thumbnail features, never sees an item's own title, and round-trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender import BundleError
from recommender.encoders.title_head import (
    TitleHead,
    TitleHeadConfig,
    fit_title_head,
    fold_assignment,
    random_fourier_features,
    random_fourier_projection,
    ridge_regression,
)
from recommender.search.index import normalize

TOPICS, PER_TOPIC, FEATURES, TITLES = 4, 50, 32, 12
ROOT = Path(__file__).resolve().parents[1]


def topic_catalog(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thumbnail features dominated by a visual style that has nothing to do with the topic (which
    only shifts them a little), all alike at cosine ~0.96 as pooled ReLU maps are, and titles that
    state the topic clearly."""
    rng = np.random.default_rng(seed)
    topics = np.repeat(np.arange(TOPICS), PER_TOPIC)
    styles = rng.integers(0, 4, len(topics))
    topic_looks, style_looks = rng.normal(size=(TOPICS, FEATURES)), rng.normal(size=(4, FEATURES))
    looks = normalize(0.6 * topic_looks[topics] + 3.0 * style_looks[styles] + rng.normal(size=(len(topics), FEATURES)))
    features = normalize(looks + 5.0 * normalize(np.ones((1, FEATURES))))
    meaning = rng.normal(size=(TOPICS, TITLES))
    titles = normalize(meaning[topics] + 0.5 * rng.normal(size=(len(topics), TITLES)))
    return features, titles, topics


def precision_at(vectors: np.ndarray, topics: np.ndarray, k: int = 5) -> float:
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((topics[top] == topics[:, None]).mean())


def test_head_makes_image_vectors_find_the_topic() -> None:
    """The predicted title carries the topic the features only hint at; shuffled titles teach nothing."""
    features, titles, topics = topic_catalog()
    _, vectors = fit_title_head(features, titles)
    _, shuffled = fit_title_head(features, titles[np.random.default_rng(1).permutation(len(titles))])
    predicted = normalize(vectors[:, FEATURES:])
    alone, joined, prediction, control = (precision_at(v, topics) for v in (features, vectors, predicted, shuffled))
    assert prediction > alone + 0.06 and joined > alone + 0.06, (alone, prediction, joined)
    assert control < alone, (alone, control)
    assert vectors.shape == (len(features), FEATURES + TITLES)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_random_features_approximate_the_gaussian_kernel() -> None:
    features, _, _ = topic_catalog()
    config = TitleHeadConfig()
    projection, phase = random_fourier_projection(FEATURES, config.random_features, config.kernel_gamma)
    mapped = random_fourier_features(features, projection, phase)
    kernel = np.exp(config.kernel_gamma * (features @ features.T - 1.0))
    assert np.abs(mapped @ mapped.T - kernel).max() < 0.1
    assert np.abs(mapped @ mapped.T - kernel).mean() < 0.02


def test_catalog_vectors_never_carry_their_own_title() -> None:
    """Cross-fitting: rewriting one item's title leaves its own vector exactly as it was, while the
    vectors of items in other folds (whose regressions learnt from that title) change."""
    features, titles, _ = topic_catalog()
    changed = titles.copy()
    changed[7] = -titles[7]
    (_, before), (_, after) = fit_title_head(features, titles), fit_title_head(features, changed)
    assert np.array_equal(before[7], after[7])
    folds = fold_assignment(len(features))
    others = folds != folds[7]
    assert not np.allclose(before[others], after[others])
    assert np.array_equal(before[~others], after[~others])


def test_joined_cosine_is_the_share_weighted_sum() -> None:
    features, titles, _ = topic_catalog()
    head, _ = fit_title_head(features, titles)
    rows = np.array([0, 50, 100])
    predicted = head.predict(features[rows], rows)
    joined = head.join(features[rows], predicted)
    expected = head.feature_share * (features[rows] @ features[rows].T) + (1 - head.feature_share) * (
        predicted @ predicted.T)
    assert np.allclose(joined @ joined.T, expected, atol=1e-5)
    assert np.allclose(head.features_of(joined), features[rows], atol=1e-5)
    looks = head.looks_query(features[rows])
    assert np.allclose(looks @ joined.T, np.sqrt(head.feature_share) * (features[rows] @ features[rows].T), atol=1e-5)


def test_too_few_items_are_refused() -> None:
    features, titles, _ = topic_catalog()
    least = TitleHeadConfig().min_items
    with pytest.raises(ValueError, match=f"at least {least}"):
        fit_title_head(features[:least - 1], titles[:least - 1])


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    features, titles, _ = topic_catalog()
    head, _ = fit_title_head(features, titles)
    head.save(tmp_path / "head.safetensors")
    again = TitleHead.load(tmp_path / "head.safetensors", len(features), FEATURES)
    rows = np.arange(len(features))
    assert np.array_equal(again.predict(features, rows), head.predict(features, rows))
    assert (again.ridge, again.feature_share) == (head.ridge, head.feature_share)


def test_load_refuses_a_head_that_does_not_fit(tmp_path: Path) -> None:
    features, titles, _ = topic_catalog()
    path = tmp_path / "head.safetensors"
    fit_title_head(features, titles)[0].save(path)
    with pytest.raises(BundleError, match=r"does not fit this bundle.*catalog has 99 items"):
        TitleHead.load(path, 99, FEATURES)
    with pytest.raises(BundleError, match=r"does not fit this bundle.*gives 64-d features"):
        TitleHead.load(path, len(features), 64)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(BundleError, match=r"head.safetensors cannot be read"):
        TitleHead.load(path, len(features), FEATURES)
    with pytest.raises(BundleError, match=r"missing\.safetensors is missing"):
        TitleHead.load(tmp_path / "missing.safetensors", len(features), FEATURES)


def test_large_catalogs_fit_on_a_sample_and_predict_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import recommender.encoders.title_head as title_head

    features, titles, _ = topic_catalog()
    _, whole = fit_title_head(features, titles)
    monkeypatch.setattr(title_head, "PREDICT_BATCH", 7)
    assert np.allclose(fit_title_head(features, titles)[1], whole, atol=1e-6)
    sample = TitleHeadConfig(max_fit_items=60)
    _, sampled = fit_title_head(features, titles, sample)
    fitted_on = np.random.default_rng(0).permutation(len(features))[:60]
    outside, inside = np.setdiff1d(np.arange(len(features)), fitted_on)[0], fitted_on[0]
    for row, matters in ((outside, False), (inside, True)):
        changed = titles.copy()
        changed[row] = -titles[row]
        assert np.array_equal(fit_title_head(features, changed, sample)[1], sampled) is not matters


def test_predicting_from_many_threads_leaves_the_blas_threads_alone() -> None:
    """The BLAS thread count of OpenBLAS is process-wide. Predictions run side by side on the app's
    workers: one that limited it for its own duration changed it under the others, and overlapping
    limits restored each other's in the wrong order, leaving the process on 1 thread. Serving sets
    it once, at start; predicting never touches it. A fresh process, so no thread holds threadpoolctl's
    control of OpenBLAS already."""
    script = """
import json
import threading
import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits
from recommender.encoders.title_head import TitleHeadConfig, fit_title_head
from tests.test_title_head import topic_catalog

features, titles, _ = topic_catalog()
head, _ = fit_title_head(features, titles, TitleHeadConfig(random_features=4096))
blas = [lib for lib in ThreadpoolController().lib_controllers if lib.internal_api == "openblas"
        and lib.threading_layer == "pthreads"][0]  # process-wide (an OpenMP build's count is per thread)
setter = threading.Thread(target=threadpool_limits, kwargs={"limits": 3, "user_api": "blas"})
setter.start()
setter.join()  # 3 threads, and the thread that set them is gone: nobody holds the control
seen, done = [blas.num_threads], threading.Event()

def watch():
    while not done.is_set():
        seen.append(blas.num_threads)

def predict(offset):
    for step in range(30):
        rows = np.arange(offset + step, offset + step + 8) % len(features)
        head.predict(features[rows], rows)

watcher = threading.Thread(target=watch)
workers = [threading.Thread(target=predict, args=(offset,)) for offset in range(0, 80, 10)]
watcher.start()
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
done.set()
watcher.join()
print(json.dumps({"first": seen[0], "seen": sorted(set(seen)), "last": blas.num_threads}))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == {"first": 3, "seen": [3], "last": 3}


@pytest.mark.parametrize("rows", [40, 300])  # fewer rows than inputs (the dual problem) and more
def test_ridge_regression_from_chunks_is_the_closed_form_solution(rows: int) -> None:
    """Summed chunk by chunk (memory independent of the rows), the fit is ridge regression's own solution."""
    rng = np.random.default_rng(rows)
    inputs, targets = rng.standard_normal((rows, 64)) + 0.5, rng.standard_normal((rows, 8)) - 0.2
    centred_x, centred_y = inputs - inputs.mean(axis=0), targets - targets.mean(axis=0)
    expected = centred_x.T @ np.linalg.solve(centred_x @ centred_x.T + 0.1 * np.eye(rows), centred_y)  # the dual form
    for chunk in (7, rows):
        parts = ((inputs[start:start + chunk], targets[start:start + chunk]) for start in range(0, rows, chunk))
        input_mean, weight, output_mean = ridge_regression(parts, 0.1)
        np.testing.assert_allclose(weight, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(input_mean, inputs.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(output_mean, targets.mean(axis=0), rtol=1e-6, atol=1e-7)
