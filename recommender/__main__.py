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
    controls = parser.add_argument_group("controls")
    controls.add_argument("--where", action="append", type=_where, metavar="COLUMN=VALUE[,VALUE]",
                          help="keep items whose metadata COLUMN has one of these values; COLUMN!=VALUE[,VALUE] "
                               "leaves them out; repeat for more columns (all must hold)")
    controls.add_argument("--diversity", type=float, default=0.0,
                          help="MMR re-ranking weight from 0 (relevance only, the default) to 1 (maximal spread)")
    controls.add_argument("--max-per", action="append", type=_cap, metavar="COLUMN=N",
                          help="at most N results per value of metadata COLUMN, e.g. channel=2")
    controls.add_argument("--no-dedupe", action="store_true",
                          help="show near-identical thumbnails (by default they fold into the higher-ranked one)")
    controls.add_argument("--offset", type=int, default=0,
                          help="skip this many results of the ranking: the next page starts at offset + k (default: 0)")
    controls.add_argument("--items", nargs="+", metavar="ID",
                          help="a session: several catalog item ids ranked as one query (none is returned)")
    controls.add_argument("--exclude", nargs="+", metavar="ID", help="item ids never to return")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    args.where = _merged(args.where or [])
    args.max_per = dict(args.max_per) if args.max_per else None
    return args


def _where(text: str) -> tuple[str, list[str], bool]:
    """``channel=A,B`` or ``channel!=A,B`` as ``(column, values, negated)``."""
    negated = "!=" in text
    column, _, values = text.partition("!=" if negated else "=")
    if not column or not values or not _:
        raise argparse.ArgumentTypeError(f"expected COLUMN=VALUE[,VALUE] or COLUMN!=VALUE[,VALUE], got {text!r}")
    return column.strip(), [value.strip() for value in values.split(",")], negated


def _merged(conditions: list[tuple[str, list[str], bool]]) -> dict | None:
    """``--where`` options as ``recommend(where=...)``: one entry per column, values of repeats joined."""
    where: dict[str, object] = {}
    for column, values, negated in conditions:
        earlier = where.get(column)
        if earlier is not None and isinstance(earlier, dict) != negated:
            raise SystemExit(f"error: --where gives both {column}= and {column}!=; use one.")
        if negated:
            where[column] = {"not": [*(earlier or {"not": []})["not"], *values]}
        else:
            where[column] = [*(earlier or []), *values]
    return where or None


def _cap(text: str) -> tuple[str, int]:
    column, _, count = text.partition("=")
    try:
        return column.strip(), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected COLUMN=N, e.g. channel=2, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        recommender = Recommender.load(args.bundle, revision=args.revision, text_model=args.text_model)
        results = recommender.recommend(image=args.image, title=args.title, item_id=args.item_id, mode=args.mode,
                                        k=args.k, alpha=args.alpha, fusion=args.fusion, where=args.where,
                                        diversity=args.diversity, max_per=args.max_per, dedupe=not args.no_dedupe,
                                        offset=args.offset, items=args.items, exclude=args.exclude)
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
        hidden = f"  (+{len(r.duplicates)} near-identical: {', '.join(r.duplicates)})" if r.duplicates else ""
        print(f"{r.rank:>4}  {r.score:6.3f}  {fmt(r.image_score)}  {fmt(r.text_score)}  {r.item_id:<14} {r.title}{hidden}")
    if results.more:
        print(f"more: --offset {results.offset + len(results)}", file=sys.stderr)  # the table stays the table
    return 0


if __name__ == "__main__":
    sys.exit(main())
