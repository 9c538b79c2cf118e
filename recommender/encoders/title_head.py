"""The title head: predicts a video's title embedding from its thumbnail's autoencoder features.

The autoencoder learns what thumbnails look like, not what they are about. The catalog pairs
every thumbnail with a title, so a regression from thumbnail features to title vectors learns
which visual patterns go with which topics, with no labels. It is kernel ridge regression with
a Gaussian kernel, made linear by random Fourier features (Rahimi & Recht, 2007) so it costs the
same for any catalog size. Image vectors join the autoencoder features with the prediction, so
a thumbnail-only query is compared on looks and on predicted topic.

The head is *cross-fitted*: the catalog is split into folds and fold k's regression is fitted
on the other folds only, so no image vector carries its own item's title. An uploaded thumbnail
is predicted by the fold of the catalog item it looks most like: a re-upload then gets the
prediction its original got, and a new picture gets a regression that never saw its neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from ..errors import BundleError
from ..search.index import normalize


@dataclass(frozen=True)
class TitleHeadConfig:
    """How a title head is fitted; ``train build`` records it in the manifest's ``title_head`` section.

    - ``folds``: cross-fitting folds (no item's vector is predicted by a regression that saw its title).
    - ``random_features``, ``kernel_gamma``: the Gaussian kernel ``exp(-gamma / 2 * |x - y|^2)`` on unit
      features, approximated by this many random Fourier features.
    - ``ridge``: the regression's ridge strength.
    - ``feature_share``: share of an image vector's squared norm given to the autoencoder features
      (the rest goes to the predicted title).
    - ``max_fit_items``: larger catalogs fit each fold on a random sample of this many items (the
      regression has ``random_features`` inputs, so more items add little but memory and time).
    - ``seed``: folds, sample and random features.

    The defaults were chosen on the real benchmark catalog: docs/results.md.
    """

    folds: int = 5
    random_features: int = 4096
    kernel_gamma: float = 10.0
    ridge: float = 0.1
    feature_share: float = 0.5
    max_fit_items: int = 50_000
    seed: int = 0

    @property
    def min_items(self) -> int:
        """Smallest catalog a head can be fitted on: two items per fold."""
        return 2 * self.folds

    def to_dict(self) -> dict:
        return asdict(self)


#: Items mapped to random features at a time when predicting (4096 float32 features each).
#: BLAS threads are left as the process set them: serving sets one per query once, at start
#: (:func:`recommender.serving.startup.use_one_thread_per_query`); a limit entered and left per
#: call is process-wide, so calls overlapping in threads would restore each other's in the wrong order.
PREDICT_BATCH = 8192
#: Rows whose random features a fit makes at once (with float64 copies, about 80 MiB at 4,096 features).
FIT_CHUNK = 2048


def ridge_regression(chunks: Iterable[tuple[np.ndarray, np.ndarray]],
                     ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(input_mean, weight, output_mean)`` of ridge regression on centred data, from ``(inputs, targets)``
    chunks of rows: the float64 normal equations are summed chunk by chunk, so memory is one chunk plus an
    inputs x inputs matrix however many rows there are."""
    rows, gram, cross, input_sum, output_sum = 0, None, None, None, None
    for inputs, targets in chunks:
        x = np.asarray(inputs, dtype=np.float64)
        y = np.asarray(targets, dtype=np.float64)
        if gram is None:
            gram, cross = np.zeros((x.shape[1], x.shape[1])), np.zeros((x.shape[1], y.shape[1]))
            input_sum, output_sum = np.zeros(x.shape[1]), np.zeros(y.shape[1])
        rows += len(x)
        gram += x.T @ x
        cross += x.T @ y
        input_sum += x.sum(axis=0)
        output_sum += y.sum(axis=0)
    input_mean, output_mean = input_sum / rows, output_sum / rows
    gram -= rows * np.outer(input_mean, input_mean)  # centred: sum (x - mean)^T (x - mean)
    cross -= rows * np.outer(input_mean, output_mean)
    gram[np.diag_indices_from(gram)] += ridge
    weight = np.linalg.solve(gram, cross)
    return input_mean.astype(np.float32), weight.astype(np.float32), output_mean.astype(np.float32)


def random_fourier_projection(feature_dimension: int, count: int, gamma: float,
                              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(projection, phase)`` whose features' inner products approximate ``exp(-gamma / 2 * |x - y|^2)``."""
    rng = np.random.default_rng(seed)
    projection = rng.normal(scale=math.sqrt(gamma), size=(feature_dimension, count)).astype(np.float32)
    return projection, rng.uniform(0.0, 2 * math.pi, size=count).astype(np.float32)


def random_fourier_features(features: np.ndarray, projection: np.ndarray, phase: np.ndarray) -> np.ndarray:
    return math.sqrt(2.0 / len(phase)) * np.cos(np.asarray(features, dtype=np.float32) @ projection + phase)


@dataclass(frozen=True)
class TitleHead:
    """Random Fourier features, one ridge regression on them per fold (stacked), and every catalog item's fold."""

    projection: np.ndarray    # feature_dimension x random features
    phase: np.ndarray         # random features
    input_means: np.ndarray   # folds x random features
    weights: np.ndarray       # folds x random features x title_dimension
    output_means: np.ndarray  # folds x title_dimension
    folds: np.ndarray         # catalog items, int32 in [0, folds)
    ridge: float
    feature_share: float = TitleHeadConfig.feature_share

    @property
    def feature_dimension(self) -> int:
        return int(self.projection.shape[0])

    @property
    def title_dimension(self) -> int:
        return int(self.weights.shape[2])

    @property
    def dimension(self) -> int:
        """Dimension of the joined image vector."""
        return self.feature_dimension + self.title_dimension

    @classmethod
    def fit(cls, features: np.ndarray, titles: np.ndarray, folds: np.ndarray,
            config: TitleHeadConfig = TitleHeadConfig()) -> "TitleHead":
        """Fit every fold's regression on (at most ``config.max_fit_items`` of) the items of the other folds."""
        projection, phase = random_fourier_projection(features.shape[1], config.random_features, config.kernel_gamma,
                                                      config.seed)
        sample = np.zeros(len(features), dtype=bool)
        sample[np.random.default_rng(config.seed).permutation(len(features))[:config.max_fit_items]] = True
        fits = []
        for fold in range(int(folds.max()) + 1):
            rows = np.flatnonzero(sample & (folds != fold))
            chunks = ((random_fourier_features(features[part], projection, phase), titles[part])
                      for part in np.array_split(rows, max(1, -(-len(rows) // FIT_CHUNK))))
            fits.append(ridge_regression(chunks, config.ridge))
        input_means, weights, output_means = (np.stack(part) for part in zip(*fits))
        return cls(projection, phase, input_means, weights, output_means, folds.astype(np.int32), float(config.ridge),
                   float(config.feature_share))

    def predict(self, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Unit title predictions for ``features``, each by the fold of the catalog item in ``rows``."""
        predicted = np.empty((len(features), self.title_dimension), dtype=np.float32)
        self._predict_into(predicted, features, self.folds[np.asarray(rows)])
        return normalize(predicted)

    def _predict_into(self, predicted: np.ndarray, features: np.ndarray, fold_of: np.ndarray) -> None:
        for start in range(0, len(features), PREDICT_BATCH):
            batch = slice(start, start + PREDICT_BATCH)
            mapped = random_fourier_features(features[batch], self.projection, self.phase)
            for fold in np.unique(fold_of[batch]):
                chosen = fold_of[batch] == fold
                centred = mapped[chosen] - self.input_means[fold]
                predicted[batch][chosen] = centred @ self.weights[fold] + self.output_means[fold]

    def join(self, features: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Image vectors: cosine of two = ``share * feature cosine + (1 - share) * predicted-title cosine``."""
        joined = np.hstack([math.sqrt(self.feature_share) * normalize(features),
                            math.sqrt(1.0 - self.feature_share) * normalize(predicted)])
        return normalize(joined)

    def looks_query(self, features: np.ndarray) -> np.ndarray:
        """Query vectors that rank joined image vectors by their feature cosine alone (prediction part zero)."""
        return np.hstack([normalize(features), np.zeros((len(features), self.title_dimension), dtype=np.float32)])

    def features_of(self, vectors: np.ndarray) -> np.ndarray:
        """The autoencoder part of joined image vectors, as unit vectors."""
        return normalize(np.asarray(vectors)[:, :self.feature_dimension])

    def save(self, path: Path) -> None:
        save_file({"projection": self.projection, "phase": self.phase, "input_means": self.input_means,
                   "weights": self.weights, "output_means": self.output_means, "folds": self.folds}, str(path),
                  metadata={"ridge": repr(self.ridge), "feature_share": repr(self.feature_share)})

    @classmethod
    def load(cls, path: Path, count: int, feature_dimension: int) -> "TitleHead":
        """Read and check a head for a catalog of ``count`` items and features of ``feature_dimension``."""
        if not Path(path).is_file():
            raise BundleError(f"Title head {path} is missing. Rebuild the bundle with `python -m train build`.")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
            head = cls(tensors["projection"], tensors["phase"], tensors["input_means"], tensors["weights"],
                       tensors["output_means"], tensors["folds"], float(metadata["ridge"]),
                       float(metadata["feature_share"]))
        except (SafetensorError, KeyError, ValueError, OSError) as error:
            raise BundleError(f"Title head {path} cannot be read ({error!r}). Rebuild the bundle.") from None
        k, m, t = head.weights.shape if head.weights.ndim == 3 else (0, 0, 0)
        consistent = (k > 0 and head.projection.ndim == 2 and head.projection.shape[1] == m
                      and head.phase.shape == (m,) and head.input_means.shape == (k, m)
                      and head.output_means.shape == (k, t) and head.folds.shape == (count,)
                      and 0 <= head.folds.min() and head.folds.max() < k and 0 < head.feature_share < 1)
        if not consistent or head.feature_dimension != feature_dimension:
            raise BundleError(f"Title head {path} does not fit this bundle: it maps {head.projection.shape[0]}-d "
                              f"features for {head.folds.shape[0]} items; the catalog has {count} items and the "
                              f"thumbnail encoder gives {feature_dimension}-d features. Rebuild the bundle.")
        return head


def fold_assignment(count: int, folds: int = TitleHeadConfig.folds, seed: int = 0) -> np.ndarray:
    """Balanced random fold of every item (sizes differ by at most one)."""
    return np.random.default_rng(seed).permutation(np.arange(count) % folds)


def fit_title_head(features: np.ndarray, titles: np.ndarray,
                   config: TitleHeadConfig = TitleHeadConfig()) -> tuple[TitleHead, np.ndarray]:
    """The cross-fitted head of a catalog and the catalog's image vectors it gives.

    ``features``: the catalog's autoencoder vectors; ``titles``: its title vectors (row-aligned).
    """
    count = len(features)
    if count < config.min_items:
        raise ValueError(f"A title head needs at least {config.min_items} catalog items ({count} given).")
    if titles.shape[0] != count:
        raise ValueError(f"{count} thumbnail vectors but {titles.shape[0]} title vectors.")
    head = TitleHead.fit(features, titles, fold_assignment(count, config.folds, config.seed), config)
    return head, head.join(features, head.predict(features, np.arange(count)))
