"""Entry point of the app and of the Hugging Face Space (Spaces run ``python app.py``).

The page comes up at once; the bundle loads (or, at a first start with no bundle, is built)
in the background while the page shows progress. Importing this module does nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from recommender.data.catalog import DEFAULT_DATASET
from recommender.encoders.query_cache import DEFAULT_QUERY_CACHE_SIZE
from recommender.serving.startup import (
    ENV_BUNDLE,
    ENV_REVISION,
    ENV_TEXT_MODEL,
    Startup,
    plan_bundle,
)
from recommender.serving.watch import ENV_WATCH, BundleWatcher

#: Training budget for a bundle built at first start, so a Space comes up within minutes, not hours.
STARTUP_BUILD_SECONDS = 900
#: Epochs of that build (the offline default is longer): short enough for the one-cycle learning-rate
#: schedule to run to its end within the time budget on a 2-core CPU, instead of being cut mid-cycle.
STARTUP_BUILD_EPOCHS = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve the video recommender as a Gradio app.",
        epilog=f"Bundle order: --bundle, then ${ENV_BUNDLE}, then ./bundle, then build ./bundle from --dataset.",
    )
    parser.add_argument("--bundle", help=f"local bundle folder or Hub repo id (default: ${ENV_BUNDLE}, then ./bundle)")
    parser.add_argument("--revision", help=f"Hub revision of the bundle repo (default: ${ENV_REVISION})")
    parser.add_argument("--text-model", default=os.environ.get(ENV_TEXT_MODEL),
                        help=f"override the bundle's text model, e.g. a local copy for offline use (${ENV_TEXT_MODEL})")
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help=f"dataset to build ./bundle from when there is no bundle (default: {DEFAULT_DATASET})")
    parser.add_argument("--build-seconds", type=float, default=STARTUP_BUILD_SECONDS,
                        help="training time budget when building at startup (default: %(default)s)")
    parser.add_argument("--pytorch-titles", action="store_true",
                        help="keep title queries on PyTorch: no ONNX export after startup (saves its memory)")
    parser.add_argument("--query-cache", type=int, default=DEFAULT_QUERY_CACHE_SIZE, metavar="N",
                        help="keep the vectors of the last N uploaded thumbnails and titles, so that More and "
                             "paging encode nothing again (default: %(default)s; 0: encode every query)")
    parser.add_argument("--watch", type=float, default=os.environ.get(ENV_WATCH) or "0", metavar="SECONDS",
                        help="check the bundle for a new revision every SECONDS and swap it in without a restart "
                             f"(local folder: its manifest; Hub repo: its latest commit) (default: ${ENV_WATCH}, else off)")
    parser.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    args = parser.parse_args(argv)
    if args.query_cache < 0:
        parser.error(f"--query-cache must be 0 or more, got {args.query_cache}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from recommender.serving.ui import (  # gradio import is slow: only once arguments are valid
        create_app,
        launch,
    )
    from train.trainer import TrainingConfig

    plan = plan_bundle(args.bundle, args.revision, os.environ, dataset=args.dataset)
    print(f"Bundle: {plan.describe()}", flush=True)
    startup = Startup(plan, text_model=args.text_model,
                      build_options={"training": TrainingConfig(epochs=STARTUP_BUILD_EPOCHS,
                                                               time_budget_s=args.build_seconds)},
                      onnx_titles=not args.pytorch_titles, query_cache_size=args.query_cache).start()
    if args.watch > 0:
        BundleWatcher(startup, args.watch).start()
    launch(create_app(startup), server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    sys.exit(main())
