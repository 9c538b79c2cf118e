"""Thumbnail encoder: size and CPU encode speed, ours next to the baseline's."""

from __future__ import annotations

import numpy as np
import torch

from recommender.data.bundle import FILES
from recommender.engine import Recommender

from .common import Results, Row, median_rate, percentiles, time_each


def measure(recommender: Recommender, images: list[bytes], batch_size: int = 64, repeats: int = 3) -> dict:
    encoder = recommender.thumbnail_encoder
    prepared = np.stack([encoder.prepare(image) for image in images])

    def end_to_end() -> int:
        return len(encoder.encode(images, batch_size=batch_size))

    def model_only() -> int:
        for start in range(0, len(prepared), batch_size):
            encoder.embed_arrays(prepared[start:start + batch_size])
        return len(prepared)

    def decode_only() -> int:
        for image in images:
            encoder.prepare(image)
        return len(images)

    single = time_each(recommender.encode_image, images[:min(len(images), 40)])
    return {
        "parameters": int(encoder.parameters),
        "encoder_mib": encoder.parameters * 4 / 2**20,
        "dimension": int(encoder.dimension),
        "input": f"{encoder.config.in_channels}x{encoder.config.height}x{encoder.config.width}",
        "end_to_end_img_s": median_rate(end_to_end, repeats),
        "model_only_img_s": median_rate(model_only, repeats),
        "decode_preprocess_img_s": median_rate(decode_only, repeats),
        "single_image_ms": percentiles(single),
        "images": len(images),
        "torch_threads": torch.get_num_threads(),
    }


def run(ours: Recommender, baseline: Recommender | None, bundle_files: dict, results: Results,
        count: int = 128, baseline_count: int = 32) -> None:
    """``baseline_count`` (fewer) images for the baseline: its encoder is two orders of magnitude slower."""
    images = [ours.catalog.image_bytes(row) for row in range(min(count, len(ours)))]
    measured = {"ours": measure(ours, images)}
    if baseline is not None:
        measured["baseline"] = measure(baseline, images[:baseline_count], batch_size=min(64, baseline_count), repeats=1)
    get = lambda name, key: measured[name][key] if name in measured else None  # noqa: E731
    sizes = {name: path.stat().st_size / 2**20 for name, path in bundle_files.items() if path}
    results.add(
        Row("encoder", "input", get("ours", "input"), get("baseline", "input")),
        Row("encoder", "encoder parameters", get("ours", "parameters"), get("baseline", "parameters"), "",
            "used by embed(); the decoder only trains", "lower"),
        Row("encoder", "encoder weights (float32)", get("ours", "encoder_mib"), get("baseline", "encoder_mib"), "MiB",
            f"{FILES['encoder_weights']} with decoder: ours {sizes.get('ours', 0):.1f} MiB"
            + (f", baseline {sizes['baseline']:.1f} MiB" if "baseline" in sizes else ""), "lower"),
        Row("encoder", "embedding dimension", get("ours", "dimension"), get("baseline", "dimension")),
        Row("encoder", "CPU encode throughput, JPEG bytes -> vector", get("ours", "end_to_end_img_s"),
            get("baseline", "end_to_end_img_s"), "img/s",
            f"batches of 64, {len(images)} real thumbnails (baseline {min(baseline_count, len(images))}), "
            f"{measured['ours']['torch_threads']} torch threads", "higher"),
        Row("encoder", "CPU encode throughput, model only", get("ours", "model_only_img_s"),
            get("baseline", "model_only_img_s"), "img/s", "preprocessed arrays, batches of 64", "higher"),
        Row("encoder", "decode + preprocess only", get("ours", "decode_preprocess_img_s"),
            get("baseline", "decode_preprocess_img_s"), "img/s", "", "higher"),
        Row("encoder", "one thumbnail, p50", measured["ours"]["single_image_ms"]["p50_ms"],
            measured["baseline"]["single_image_ms"]["p50_ms"] if baseline is not None else None, "ms",
            "Recommender.encode_image (an upload)", "lower"),
    )
    results.raw["encoder"] = measured
