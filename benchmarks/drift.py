"""Drift of a live catalog: build on part of a catalog, ``add`` the rest, compare with a full rebuild.

    python -m benchmarks.drift --data real_thumbnails_dev.parquet --epochs 3 --shares 0.3,0.5,0.7,0.9

For each share ``s`` of the catalog (a random subset, seeded) a bundle is built on ``s`` of the
videos (its encoder and title head never see the rest), the rest is appended with ``train add``,
and every video is asked as a query: precision@10 with the label (``channel``) as relevance, per
mode, next to a full rebuild of the whole catalog with the same settings. A second full rebuild
with another training seed shows how much P@10 moves by chance alone. Prints a table; ``--plot``
draws the curve. The share of items added since training is ``1 - s``.

A build on part of the catalog with the same epochs also takes fewer training steps. Shares in
``--equal-steps-shares`` are built a second way, with ``epochs / s`` epochs (as many steps as the
full build), which separates "the encoder never saw these videos" from "it trained less".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

MODES = ("image", "text", "hybrid")
K = 10


def split_catalog(data: Path, share: float, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """``base.parquet`` with a random ``share`` of ``data``'s rows (in their original order) and
    ``rest.parquet`` with the others."""
    import datasets

    table = datasets.Dataset.from_parquet(str(data))
    order = np.random.default_rng(seed).permutation(len(table))
    cut = round(share * len(table))
    folder.mkdir(parents=True, exist_ok=True)
    base, rest = folder / "base.parquet", folder / "rest.parquet"
    table.select(np.sort(order[:cut])).to_parquet(str(base))
    table.select(np.sort(order[cut:])).to_parquet(str(rest))
    return base, rest


def build(data: Path, output: Path, text_model: str, epochs: int, seed: int = 0) -> float:
    """Build ``output`` unless a previous run left it complete; the build's wall time (0 when reused)."""
    from train.build import build_bundle
    from train.trainer import TrainingConfig

    if (output / "manifest.json").is_file():
        return 0.0
    started = time.perf_counter()
    build_bundle(data, output, text_model=text_model, training=TrainingConfig(epochs=epochs, seed=seed),
                 overwrite=True, show_progress_bar=False)
    return time.perf_counter() - started


def precision_at_10(bundle: Path, text_model: str, label: str, alpha: float) -> dict[str, float]:
    """Mean P@10 per mode with every live catalog item as a query (it never counts itself)."""
    from recommender import Recommender
    from recommender.search.ranking import (
        fuse_candidates,
        hybrid_candidates,
        search_excluding,
    )
    from train.evaluation.metrics import encode_labels, ranking_report

    recommender = Recommender.load(bundle, text_model=text_model)
    catalog = recommender.catalog
    rows = catalog.live_rows()
    labels, _ = encode_labels([catalog.metadata(row).get(label) for row in range(len(catalog))])
    removed = catalog.removed
    image, text = recommender.image_vectors, recommender.text_vectors
    rankings = {
        "image": search_excluding(recommender.image_index, image[rows], K, rows, removed)[0],
        "text": search_excluding(recommender.text_index, text[rows], K, rows, removed)[0],
        "hybrid": fuse_candidates(
            hybrid_candidates(recommender.image_index, recommender.text_index, image, text, image[rows], text[rows],
                              recommender.search.candidate_depth(K, len(catalog)), rows, removed),
            alpha, K)[0],
    }
    return {mode: float(np.mean(ranking_report(ranked, labels, rows, ks=(K,))[f"P@{K}"]))
            for mode, ranked in rankings.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from .__main__ import default_text_model

    parser = argparse.ArgumentParser(prog="python -m benchmarks.drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="catalog parquet, e.g. real_thumbnails_dev.parquet")
    parser.add_argument("--work", type=Path, default=Path("/tmp/video-recommender-drift"),
                        help="folder for the bundles; complete ones from a previous run are reused")
    parser.add_argument("--text-model", default=default_text_model(), help="sentence-transformers model path")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of every build (default: 3)")
    parser.add_argument("--shares", default="0.3,0.5,0.7,0.9",
                        help="shares of the catalog the partial builds train on (default: 0.3,0.5,0.7,0.9)")
    parser.add_argument("--equal-steps-shares", default="",
                        help="shares also built with epochs / share epochs, e.g. 0.5,0.75 (default: none)")
    parser.add_argument("--label", default="channel", help="relevance label column (default: channel)")
    parser.add_argument("--alpha", type=float, default=0.65, help="hybrid text weight for every bundle (default: 0.65)")
    parser.add_argument("--builds-only", action="store_true", help="build the bundles, measure nothing")
    parser.add_argument("--plot", type=Path, help="draw P@10 against the added share into this PNG")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    partial = [(float(share), args.epochs) for share in args.shares.split(",")]
    partial += [(float(share), round(args.epochs / float(share))) for share in args.equal_steps_shares.split(",") if share]
    work = args.work
    seconds = {"full": build(args.data, work / "full", args.text_model, args.epochs),
               "full seed 1": build(args.data, work / "full-seed1", args.text_model, args.epochs, seed=1)}
    for share, epochs in partial:
        base, _ = split_catalog(args.data, share, work / f"split-{share:.2f}")
        seconds[_name(share, epochs, args.epochs)] = build(base, work / f"base-{_name(share, epochs, args.epochs)}",
                                                            args.text_model, epochs)
    print(json.dumps({"build_seconds": seconds}), flush=True)
    if args.builds_only:
        return 0

    from train.live import add_items

    results = [{"bundle": "full rebuild", "added_share": 0.0,
                **precision_at_10(work / "full", args.text_model, args.label, args.alpha)},
               {"bundle": "full rebuild, training seed 1", "added_share": 0.0,
                **precision_at_10(work / "full-seed1", args.text_model, args.label, args.alpha)}]
    for share, epochs in partial:
        name = _name(share, epochs, args.epochs)
        live = work / f"live-{name}"
        if not (live / "manifest.json").is_file():
            shutil.rmtree(live, ignore_errors=True)
            shutil.copytree(work / f"base-{name}", live)
            started = time.perf_counter()
            add_items(live, work / f"split-{share:.2f}" / "rest.parquet", text_model=args.text_model,
                      show_progress_bar=False)
            seconds[f"add {name}"] = time.perf_counter() - started
        steps = "" if epochs == args.epochs else f" ({epochs} epochs: the full build's training steps)"
        results.append({"bundle": f"built on {share:.0%}{steps}, rest added", "added_share": round(1 - share, 4),
                        "equal_steps": epochs != args.epochs,
                        **precision_at_10(live, args.text_model, args.label, args.alpha)})
    full = results[0]
    print(f"| bundle | added since training | {' | '.join(f'{m} P@10' for m in MODES)} | "
          f"{' | '.join(f'Δ {m}' for m in MODES)} |")
    print("|---|---:|" + "---:|" * (2 * len(MODES)))
    for row in results:
        deltas = " | ".join(f"{row[m] - full[m]:+.4f}" for m in MODES)
        print(f"| {row['bundle']} | {row['added_share']:.0%} | {' | '.join(f'{row[m]:.4f}' for m in MODES)} | {deltas} |")
    if args.plot:
        plot(results, args.plot)
    if args.output:
        args.output.write_text(json.dumps({"results": results, "seconds": seconds, "epochs": args.epochs}, indent=2))
    return 0


def _name(share: float, epochs: int, full_epochs: int) -> str:
    """Folder name part of a partial build: its share, and its epochs when they differ from the full build's."""
    return f"{share:.2f}" if epochs == full_epochs else f"{share:.2f}-{epochs}ep"


def plot(results: list[dict], path: Path) -> None:
    """P@10 minus the full rebuild's, per mode whose vectors depend on training (text vectors do not),
    against the share added; the grey band is how far two full rebuilds differ by training seed alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    from train.live import DRIFT_WARNING_SHARE

    full, noise = results[0], results[1]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharex=True)
    for axis, mode in zip(axes, ("image", "hybrid")):
        spread = abs(noise[mode] - full[mode])
        axis.axhspan(-spread, spread, color="0.85", label="two full rebuilds (seeds 0, 1)")
        for equal_steps, style, how in ((False, "-o", "same epochs as the full build"),
                                        (True, "--s", "same training steps")):
            partial = sorted((row for row in results if row.get("equal_steps") is equal_steps
                              and row["bundle"].startswith("built on")), key=lambda row: row["added_share"])
            if partial:
                axis.plot([0.0] + [row["added_share"] for row in partial],
                          [0.0] + [row[mode] - full[mode] for row in partial], style, label=f"built on part, {how}")
        axis.axvline(DRIFT_WARNING_SHARE, color="tab:red", linestyle=":", label="`train add` warns above")
        axis.set(title=f"{mode} mode", xlabel="share of the catalog added since training")
        axis.xaxis.set_major_formatter(PercentFormatter(1.0))
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("P@10 minus the full rebuild's")
    axes[1].legend(fontsize=7, loc="lower left")
    figure.suptitle("Built on part of the dev catalog, the rest added with `train add`", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
