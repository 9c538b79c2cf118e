"""``python -m recommender``: print recommendations for a title, an image file or a catalog item."""

from __future__ import annotations

import argparse
import json
import sys

from .engine import MAX_K, MODES, Recommender
from .errors import RecommenderError
from .search.config import FUSION_METHODS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recommender",
        description="Recommend catalog videos for a thumbnail, a title, both, or a catalog item.",
        epilog='Example: python -m recommender --bundle bundle --title "best budget phone 2025" --mode text -k 5',
    )
    parser.add_argument("--bundle", default="bundle", help="local bundle folder or Hub repo id (default: ./bundle)")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of the bundle repo")
    parser.add_argument("--text-model", help="override the bundle's text model, e.g. a local copy for offline use")
    query = parser.add_argument_group("query (an image and/or a title, or an item id)")
    query.add_argument("--image", help="path of a thumbnail image")
    query.add_argument("--title", help="a video title")
    query.add_argument("--item-id", help="id of a catalog item (the item itself is excluded)")
    parser.add_argument("--mode", choices=MODES, default="hybrid", help="which modality ranks (default: hybrid)")
    parser.add_argument("-k", type=int, default=8, help=f"number of recommendations, 1-{MAX_K} (default: 8)")
    parser.add_argument("--alpha", type=float, help="hybrid text weight in [0, 1] (default: the bundle's tuned value)")
    parser.add_argument("--fusion", choices=FUSION_METHODS,
                        help="hybrid fusion: min-max weighted scores or reciprocal rank fusion (default: the bundle's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        recommender = Recommender.load(args.bundle, revision=args.revision, text_model=args.text_model)
        results = recommender.recommend(image=args.image, title=args.title, item_id=args.item_id, mode=args.mode,
                                        k=args.k, alpha=args.alpha, fusion=args.fusion)
    except RecommenderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results.to_dict(), ensure_ascii=False, indent=2, default=str))
        return 0
    for note in results.notes:
        print(f"note: {note}")
    print(f"{'rank':>4}  {'score':>6}  {'image':>6}  {'text':>6}  {'item_id':<14} title")
    for r in results:
        fmt = lambda value: f"{value:6.3f}" if value is not None else "     -"  # noqa: E731
        print(f"{r.rank:>4}  {r.score:6.3f}  {fmt(r.image_score)}  {fmt(r.text_score)}  {r.item_id:<14} {r.title}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
