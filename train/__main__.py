"""``python -m train``: the offline pipeline (build a bundle, update it live, push it to the Hub)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from recommender.data.catalog import DEFAULT_DATASET
from recommender.data.vectors import VECTOR_DTYPES
from recommender.encoders.autoencoder import BASELINE_CONFIG, EncoderConfig
from recommender.encoders.title_head import TitleHeadConfig
from recommender.encoders.titles import DEFAULT_TEXT_MODEL
from recommender.errors import RecommenderError
from recommender.search.config import FUSION_METHODS, SearchConfig

from .embedding import EmbeddingConfig
from .evaluation.never_seen import DEFAULT_FRACTION as DEFAULT_HOLDOUT_FRACTION
from .live_commands import LIVE_COMMANDS
from .trainer import DEFAULT_TRAIN_SAMPLE, TrainingConfig

ENCODERS = {"dae": EncoderConfig(), "baseline": BASELINE_CONFIG}


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help=f"Hub dataset id, parquet file/folder or image folder (default: {DEFAULT_DATASET})")
    parser.add_argument("--dataset-revision", help="Hub revision of the dataset (pin it for reproducibility)")
    parser.add_argument("--output", default="bundle", help="bundle folder to write (default: ./bundle)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder (refused for a folder without a bundle's "
                             "manifest.json, unless it is empty)")
    parser.add_argument("--image-column", default="image", help="image column name (default: image)")
    parser.add_argument("--title-column", default="title", help="title column name (default: title)")
    parser.add_argument("--id-column", help="id column (default: item_id, id or video_id if present, else position)")
    parser.add_argument("--limit", type=int, help="use only the first N rows (quick trials)")
    parser.add_argument("--text-model", default=DEFAULT_TEXT_MODEL,
                        help=f"sentence-transformers model id or local path (default: {DEFAULT_TEXT_MODEL})")
    parser.add_argument("--text-revision", help="Hub revision of the text model")
    parser.add_argument("--text-prefix", help="prefix added to every title (default: 'query: ' for an e5 model given as a Hub id; "
                             "a local copy of one needs it given)")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="dae",
                        help="thumbnail encoder architecture; 'baseline' is the original design (default: dae)")
    parser.add_argument("--encoder-weights", type=Path,
                        help="reuse trained weights (.safetensors with its .json config beside) instead of training")
    parser.add_argument("--epochs", type=int, default=TrainingConfig.epochs, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size, help="training batch size")
    parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate, help="peak learning rate")
    parser.add_argument("--no-denoising", action="store_true", help="train a plain autoencoder (no corruption)")
    parser.add_argument("--time-budget", type=float, help="stop training at the first batch that ends past this many seconds")
    parser.add_argument("--seed", type=int, default=TrainingConfig.seed, help="random seed (default: 0)")
    parser.add_argument("--no-title-head", action="store_true",
                        help="do not fit the title head (thumbnail features -> predicted title) that image vectors "
                             "join; the baseline encoder never has one")
    parser.add_argument("--index-key", help="FAISS factory string for both indexes (default: chosen from catalog size)")
    parser.add_argument("--index-shards", type=int, default=1,
                        help="split each index into this many files searched together (default: 1)")
    scale = parser.add_argument_group("large catalogs (memory stays bounded; the vectors do not change)")
    scale.add_argument("--train-sample", type=int, default=DEFAULT_TRAIN_SAMPLE,
                       help=f"train the autoencoder on a random sample of at most N items, 0 for all "
                            f"(default: {DEFAULT_TRAIN_SAMPLE:,})")
    scale.add_argument("--vector-dtype", choices=VECTOR_DTYPES, default="float32",
                       help="stored vectors used for re-scoring; float16 halves them (default: float32)")
    scale.add_argument("--embed-batch-size", type=int, default=EmbeddingConfig.batch_size,
                       help=f"thumbnails and titles per embedding batch (default: {EmbeddingConfig.batch_size})")
    scale.add_argument("--shard-rows", type=int, default=EmbeddingConfig.shard_rows,
                       help=f"rows per vector shard file (default: {EmbeddingConfig.shard_rows:,})")
    scale.add_argument("--ray", action="store_true",
                       help="embed on Ray Data: actors holding the encoders, a GPU each where the cluster has them "
                            "(needs `pip install .[scale]`)")
    scale.add_argument("--ray-address", help="Ray cluster to use with --ray (default: RAY_ADDRESS, else a local Ray)")
    scale.add_argument("--ray-concurrency", type=int,
                       help="encoder actors with --ray (default: one per 4 CPUs, or one per GPU on a GPU cluster)")
    search = parser.add_argument_group("search settings recorded in the manifest (see SearchConfig)")
    search.add_argument("--alpha", type=float, default=SearchConfig.alpha,
                        help=f"default hybrid text weight (default: {SearchConfig.alpha}; `train evaluate` tunes it)")
    search.add_argument("--fusion", choices=FUSION_METHODS, default=SearchConfig.fusion,
                        help=f"default hybrid fusion (default: {SearchConfig.fusion})")
    search.add_argument("--hnsw-ef-search", type=int, default=SearchConfig.hnsw_ef_search,
                        help=f"HNSW search breadth (default: {SearchConfig.hnsw_ef_search})")
    search.add_argument("--ivf-nprobe", type=int,
                        help="inverted lists an IVF index visits (default: tuned at build time to recall@10 >= 0.95 "
                             "for large catalogs, else max(8, nlist / 32))")
    search.add_argument("--refine-k-factor", type=int,
                        help="candidates per result a re-ranking index re-scores exactly (default: tuned with nprobe)")


def run_build(args: argparse.Namespace) -> None:
    from .build import build_bundle

    try:
        search = SearchConfig(alpha=args.alpha, fusion=args.fusion, hnsw_ef_search=args.hnsw_ef_search,
                              ivf_nprobe=args.ivf_nprobe, refine_k_factor=args.refine_k_factor)
    except ValueError as error:
        raise RecommenderError(f"Bad search settings: {error}") from None
    try:
        training = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                  seed=args.seed, denoising=not args.no_denoising and args.encoder != "baseline",
                                  time_budget_s=args.time_budget, sample_size=args.train_sample or None)
        embedding = EmbeddingConfig(ray=args.ray or args.ray_address is not None, ray_address=args.ray_address,
                                    ray_concurrency=args.ray_concurrency, batch_size=args.embed_batch_size,
                                    vector_dtype=args.vector_dtype, shard_rows=args.shard_rows)
    except ValueError as error:
        raise RecommenderError(f"Bad build settings: {error}") from None
    manifest = build_bundle(
        args.dataset, args.output, image_column=args.image_column, title_column=args.title_column,
        id_column=args.id_column, dataset_revision=args.dataset_revision, limit=args.limit,
        text_model=args.text_model, text_revision=args.text_revision, text_prefix=args.text_prefix,
        encoder_config=ENCODERS[args.encoder], training=training, encoder_weights=args.encoder_weights,
        title_head=None if args.no_title_head or args.encoder == "baseline" else TitleHeadConfig(),
        index_key=args.index_key, search=search, index_shards=args.index_shards, overwrite=args.overwrite,
        embedding=embedding,
    )
    print(f"Built {args.output}: {manifest['count']} items, skipped {manifest['source']['skipped_rows']} rows, "
          f"image dim {manifest['indexes']['image']['dimension']}"
          f"{' (with title head)' if manifest['title_head'] else ''}, text dim {manifest['text_model']['dimension']}.")


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo_id", help="Hub model repo to create or update, e.g. you/video-recommender-bundle")
    parser.add_argument("--bundle", default="bundle", help="bundle folder to upload (default: ./bundle)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="branch to push to (default: main)")
    parser.add_argument("--token", help="Hub token (default: the one saved by `hf auth login`)")


def run_push(args: argparse.Namespace) -> None:
    from recommender.data.bundle import push_bundle

    url, plan = push_bundle(Path(args.bundle), args.repo_id, private=args.private, token=args.token,
                            revision=args.revision)
    sent = (f"{len(plan.upload)} changed files ({plan.upload_bytes / 1e6:,.1f} MB of {plan.bundle_bytes / 1e6:,.1f} MB)"
            f"{f', {len(plan.delete)} obsolete deleted' if plan.delete else ''}")
    print(f"Pushed {args.bundle} to {args.repo_id}: {sent}: {url}" if url else
          f"{args.repo_id} already holds {args.bundle}: nothing to push.")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", default="bundle", help="bundle folder to evaluate (default: ./bundle)")
    parser.add_argument("--label", default="channel",
                        help="catalog column that defines relevance: same value = relevant (default: channel)")
    parser.add_argument("--text-model", help="override the bundle's text model, e.g. a local copy for offline use")
    parser.add_argument("--baseline-bundle", help="a bundle of the same catalog built with --encoder baseline, "
                                                  "scored as the original design served it")
    parser.add_argument("--output", help="report folder (default: <bundle>/evaluation)")
    parser.add_argument("--reupload-items", type=int, default=250, help="thumbnails re-uploaded as queries (default: 250)")
    parser.add_argument("--verify-queries", type=int, default=30,
                        help="queries per mode checked against Recommender.recommend (default: 30)")
    parser.add_argument("--examples", type=int, default=3, help="example queries drawn in examples.png (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for samples and crops (default: 0)")
    parser.add_argument("--no-set-alpha", action="store_true",
                        help="do not write the tuned alpha, dedupe threshold and session fusion, and the summary, "
                             "into the bundle's manifest")
    never_seen = parser.add_argument_group(
        "never-seen uploads", "part of the catalog held out, a bundle built on the rest with this bundle's settings, "
                              "the held-out videos asked as uploads (costs a build of that share of the catalog)")
    never_seen.add_argument("--holdout-fraction", type=float, default=DEFAULT_HOLDOUT_FRACTION,
                            help=f"share of the catalog held out (default: {DEFAULT_HOLDOUT_FRACTION})")
    never_seen.add_argument("--holdout-epochs", type=int,
                            help="training epochs of the held-out bundle (default: the bundle's recorded epochs)")
    never_seen.add_argument("--no-holdout", action="store_true", help="skip the never-seen uploads")


def run_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate
    from .evaluation.report import summary_markdown

    report = evaluate(args.bundle, text_model=args.text_model, label=args.label,
                      baseline_bundle=args.baseline_bundle, output_dir=args.output,
                      reupload_items=args.reupload_items, verify_queries=args.verify_queries,
                      examples=args.examples, seed=args.seed, set_alpha=not args.no_set_alpha,
                      holdout=not args.no_holdout, holdout_fraction=args.holdout_fraction,
                      holdout_epochs=args.holdout_epochs)
    print(summary_markdown(report))
    where = Path(args.output) if args.output else Path(args.bundle) / "evaluation"
    written = [f"alpha {report.alpha:.2f}"]
    if report.dedupe is not None:
        written.append(f"dedupe threshold {report.dedupe.threshold}")
    if report.sessions is not None:
        written.append(f"session fusion {report.sessions.recommended}")
    print(f"\nReport: {where / 'report.md'}" + ("" if args.no_set_alpha else
                                                 f"; defaults written to the manifest: {', '.join(written)}."))


COMMANDS = {
    "build": ("Build a bundle from a dataset: train the encoder, embed, index.", add_build_arguments, run_build),
    "push": ("Upload a bundle to a Hugging Face Hub model repo with a model card: only the files that changed.",
             add_push_arguments, run_push),
    "evaluate": ("Quality report of a bundle: precision/nDCG per mode, never-seen uploads, re-upload robustness, "
                 "alpha sweep.",
                 add_evaluate_arguments, run_evaluate),
}
COMMANDS.update(LIVE_COMMANDS)  # add, remove, compact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description="Offline pipeline of the video recommender.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(subparsers.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        COMMANDS[args.command][2](args)
    except (RecommenderError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
