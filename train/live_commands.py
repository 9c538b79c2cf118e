"""``python -m train add | remove | compact``: the command lines of :mod:`train.live`."""

from __future__ import annotations

import argparse
from pathlib import Path

from recommender.errors import CatalogError

from .live import DRIFT_WARNING_SHARE, LiveUpdate


def add_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", default="bundle", help="bundle folder to append to (default: ./bundle)")
    parser.add_argument("--dataset", required=True,
                        help="the new videos: Hub dataset id, parquet file/folder or image folder (as for build)")
    parser.add_argument("--dataset-revision", help="Hub revision of the dataset")
    parser.add_argument("--image-column", default="image", help="image column name (default: image)")
    parser.add_argument("--title-column", default="title", help="title column name (default: title)")
    parser.add_argument("--id-column", help="id column (default: item_id, id or video_id if present, else position)")
    parser.add_argument("--limit", type=int, help="add only the first N rows")
    parser.add_argument("--update", action="store_true",
                        help="a video whose id the bundle already has replaces it (default: skipped, with a warning)")
    parser.add_argument("--text-model", help="a local copy of the bundle's text model, for offline use")


def run_add(args: argparse.Namespace) -> None:
    from .live import add_items

    update = add_items(args.bundle, args.dataset, image_column=args.image_column, title_column=args.title_column,
                       id_column=args.id_column, dataset_revision=args.dataset_revision, limit=args.limit,
                       update=args.update, text_model=args.text_model)
    replaced = f" ({update.replaced} replaced an older version)" if update.replaced else ""
    print(f"Added {update.rows} videos to {args.bundle}{replaced}, skipped {len(update.skipped)}: {_summary(update)}")


def add_remove_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", default="bundle", help="bundle folder (default: ./bundle)")
    parser.add_argument("--ids", nargs="+", default=[], help="item ids to remove")
    parser.add_argument("--ids-file", type=Path, help="a text file with one item id per line")


def run_remove(args: argparse.Namespace) -> None:
    from .live import remove_items

    ids = list(args.ids)
    if args.ids_file:
        try:
            ids += args.ids_file.read_text().split("\n")
        except OSError as error:
            raise CatalogError(f"Cannot read {args.ids_file}: {error.strerror}.") from None
    update = remove_items(args.bundle, ids)
    print(f"Removed {update.rows} videos from {args.bundle}: {_summary(update)} "
          "`python -m train compact` rewrites the bundle without them.")


def add_compact_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", default="bundle", help="bundle folder to rewrite (default: ./bundle)")


def run_compact(args: argparse.Namespace) -> None:
    from .live import compact_bundle

    update = compact_bundle(args.bundle)
    print(f"Compacted {args.bundle}: dropped {update.rows} removed rows; {_summary(update)}")


def _summary(update: LiveUpdate) -> str:
    return (f"revision {update.revision}, {update.items:,} videos, {update.added_since_training:,} "
            f"({update.drift_share:.0%}) added since training (rebuild above {DRIFT_WARNING_SHARE:.0%}), "
            f"{update.seconds:.1f} s.")


LIVE_COMMANDS = {
    "add": ("Append videos to a bundle, embedded with its own models: no retraining.", add_add_arguments, run_add),
    "remove": ("Remove videos from a bundle: no query finds them from then on.", add_remove_arguments, run_remove),
    "compact": ("Rewrite a bundle without its removed videos, appended segments folded in.", add_compact_arguments,
                run_compact),
}
