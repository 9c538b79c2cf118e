"""Build (or reuse) the two bundles compared: ours (default encoder) and the original design's baseline."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import Results, Row

logger = logging.getLogger(__name__)


@dataclass
class Bundles:
    ours: Path
    baseline: Path | None
    built_seconds: dict[str, float]  # wall time of builds done in this run


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def build_pair(data: str, work: Path, text_model: str, epochs: int | None, time_budget: float | None,
               baseline_epochs: int, limit: int | None, with_baseline: bool = True) -> Bundles:
    """Build ours, then the baseline with the same training time budget as ours took (at most ``baseline_epochs``)."""
    from recommender.encoders.autoencoder import BASELINE_CONFIG, EncoderConfig
    from train.build import build_bundle
    from train.trainer import TrainingConfig

    work.mkdir(parents=True, exist_ok=True)
    built = {}
    ours = work / "ours"
    training = TrainingConfig(**({"epochs": epochs} if epochs else {}), time_budget_s=time_budget)
    logger.info("Building our bundle in %s (%s)", ours, training)
    started = time.perf_counter()
    build_bundle(data, ours, text_model=text_model, encoder_config=EncoderConfig(), training=training, limit=limit,
                 overwrite=True, show_progress_bar=False)
    built["ours"] = time.perf_counter() - started
    baseline = None
    if with_baseline:
        budget = float(sum(_manifest(ours)["image_encoder"]["training"]["epoch_seconds"]))
        baseline = work / "baseline"
        logger.info("Building the baseline bundle in %s (time budget %.0f s, at most %d epochs)", baseline, budget,
                    baseline_epochs)
        started = time.perf_counter()
        build_bundle(data, baseline, text_model=text_model, encoder_config=BASELINE_CONFIG, title_head=None,
                     limit=limit, training=TrainingConfig(epochs=baseline_epochs, denoising=False, time_budget_s=budget),
                     overwrite=True, show_progress_bar=False)
        built["baseline"] = time.perf_counter() - started
    return Bundles(ours, baseline, built)


def describe(bundles: Bundles, results: Results) -> None:
    """Rows from the manifests: build time per stage, training time per epoch, epochs trained."""
    manifests = {"ours": _manifest(bundles.ours)}
    if bundles.baseline:
        manifests["baseline"] = _manifest(bundles.baseline)

    def value(name: str, getter) -> float | None:
        manifest = manifests.get(name)
        try:
            return getter(manifest) if manifest else None
        except (KeyError, TypeError):
            return None

    def trained_on(manifest: dict) -> dict:
        """The manifest of the bundle whose build trained this encoder (itself, or the one its weights came from)."""
        encoder = manifest["image_encoder"]
        if encoder.get("training") is None and encoder.get("weights_reused_from"):
            return _manifest(Path(encoder["weights_reused_from"]).parent)
        return manifest

    def training(manifest: dict) -> dict:
        return trained_on(manifest)["image_encoder"]["training"]

    def per_thousand(manifest: dict) -> float:
        """Training seconds per 1,000 thumbnails seen (epochs x training split), comparable across catalog sizes."""
        record = training(manifest)
        seen = len(record["epoch_seconds"]) * trained_on(manifest)["count"] * (1 - record["validation_fraction"])
        return sum(record["epoch_seconds"]) / seen * 1000

    rows = [
        Row("build", "catalog items", value("ours", lambda m: m["count"]), value("baseline", lambda m: m["count"])),
        Row("build", "bundle build time (sum of stages)", value("ours", lambda m: sum(m["build"]["timings"].values())),
            value("baseline", lambda m: sum(m["build"]["timings"].values())), "s", "catalog + training + embedding + "
            "indexes", "lower"),
        Row("build", "training time per epoch (median)",
            value("ours", lambda m: float(np.median(training(m)["epoch_seconds"]))),
            value("baseline", lambda m: float(np.median(training(m)["epoch_seconds"]))), "s",
            "one pass over its training items (90% split)", "lower"),
        Row("build", "training time per 1,000 thumbnails", value("ours", per_thousand),
            value("baseline", per_thousand), "s", "forward + backward, batch 32", "lower"),
        Row("build", "epochs trained", value("ours", lambda m: len(training(m)["epoch_seconds"])),
            value("baseline", lambda m: len(training(m)["epoch_seconds"])), "",
            "baseline: same training time budget as ours"),
        Row("build", "items the encoder was trained on", value("ours", lambda m: trained_on(m)["count"]),
            value("baseline", lambda m: trained_on(m)["count"])),
        Row("build", "training time", value("ours", lambda m: sum(training(m)["epoch_seconds"])),
            value("baseline", lambda m: sum(training(m)["epoch_seconds"])), "s"),
        Row("build", "embedding stage (thumbnails + titles)", value("ours", lambda m: m["build"]["timings"]["embedding_s"]),
            value("baseline", lambda m: m["build"]["timings"]["embedding_s"]), "s", "", "lower"),
        Row("build", "index stage", value("ours", lambda m: m["build"]["timings"]["index_s"]),
            value("baseline", lambda m: m["build"]["timings"]["index_s"]), "s"),
    ]
    if bundles.built_seconds:
        rows.append(Row("build", "wall time of this run's build", bundles.built_seconds.get("ours"),
                        bundles.built_seconds.get("baseline"), "s", "includes loading the text model", "lower"))
    results.add(*rows)
    results.raw["build"] = {name: {"count": m.get("count"), "timings": m.get("build", {}).get("timings"),
                                   "training": m.get("image_encoder", {}).get("training")}
                            for name, m in manifests.items()}
