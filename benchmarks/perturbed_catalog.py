"""``python -m benchmarks.perturbed_catalog``: an N-item catalog made from real thumbnails by real perturbations.

The scale benchmark needs a catalog far larger than the 2,013 dev videos, with images a real decoder,
encoder and index have to work through (not random noise, not 100 copies of one file). Each item
takes one dev thumbnail and applies a random crop, colour / brightness / contrast jitter, a text
overlay and a re-encode at a random JPEG quality; its title is the source title with words dropped
or swapped and a suffix ("part 2", "#17", ...); the source channel and video id stay as metadata.

The catalog is written once, as parquet shards of ``--shard-size`` rows, under ``--output`` (default
``/tmp/scale-catalog``); ``catalog.json`` beside the shards records the parameters, and a later call
with the same ones reuses the shards. Items are a pure function of (seed, item number), so shards are
made independently by ``--workers`` processes and never all held in RAM. With ``--by-reference`` each
JPEG is also written as a file and a second set of shards (``by-reference/``) gives its path instead
of its bytes, for catalogs that give thumbnails by reference.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageEnhance, ImageFont
from tqdm.auto import tqdm

DEFAULT_SOURCE = Path("/work/shared/data/real_thumbnails_dev.parquet")
DEFAULT_OUTPUT = Path("/tmp/scale-catalog")
PARAMETERS_FILE = "catalog.json"
BYTES_DIR = "shards"
REFERENCE_DIR = "by-reference"
IMAGES_DIR = "images"
SUFFIXES = ("part 2", "part 3", "(full video)", "2024", "live", "- remastered", "official", "HD", "reaction")
OVERLAYS = ("NEW!", "LIVE", "PART 2", "WOW", "4K", "TOP 10", "FULL", "EP. 3", "SHOCKING", "WATCH")

SCHEMA = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                    ("title", pa.string()), ("channel", pa.string()), ("video_id", pa.string()),
                    ("source_video_id", pa.string())])
REFERENCE_SCHEMA = pa.schema([("image", pa.string()), ("title", pa.string()), ("channel", pa.string()),
                              ("video_id", pa.string()), ("source_video_id", pa.string())])


@dataclass(frozen=True)
class CatalogSpec:
    """What makes a generated catalog: equal specs give byte-identical shards."""

    items: int
    source: str
    seed: int = 0
    shard_size: int = 10_000
    by_reference: bool = False

    @property
    def shards(self) -> int:
        return -(-self.items // self.shard_size)


@dataclass(frozen=True)
class SourceRow:
    jpeg: bytes
    title: str
    channel: str
    video_id: str


def perturb_title(title: str, rng: random.Random) -> str:
    """Drop a word, swap two, and append a suffix: near-duplicate titles, as re-uploads and series have."""
    words = title.split()
    if len(words) > 3 and rng.random() < 0.5:
        del words[rng.randrange(len(words))]
    if len(words) > 2 and rng.random() < 0.4:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    suffix = rng.choice(SUFFIXES) if rng.random() < 0.5 else f"#{rng.randint(1, 500)}"
    return " ".join(words + [suffix])


def perturb_image(jpeg: bytes, rng: random.Random, font: ImageFont.ImageFont) -> bytes:
    """Crop, jitter colour / brightness / contrast, overlay a caption, re-encode at a random quality."""
    with Image.open(io.BytesIO(jpeg)) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    scale = rng.uniform(0.7, 1.0)
    crop_w, crop_h = max(1, int(width * scale)), max(1, int(height * scale))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    image = image.crop((left, top, left + crop_w, top + crop_h))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.75, 1.25))
    if rng.random() < 0.6:
        draw = ImageDraw.Draw(image)
        x, y = rng.randint(0, max(0, crop_w - 120)), rng.randint(0, max(0, crop_h - 40))
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        draw.text((x, y), rng.choice(OVERLAYS), fill=colour, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=rng.randint(35, 92))
    return out.getvalue()


def read_source(path: str | Path) -> list[SourceRow]:
    """The source catalog's JPEG bytes and text: ~40 MB for the 2,013 dev videos, decoded per item later."""
    table = pq.read_table(path, columns=["image", "title", "channel", "video_id"])
    return [SourceRow(row["image"]["bytes"], row["title"] or "", row["channel"] or "", str(row["video_id"]))
            for row in table.to_pylist()]


_SOURCE: list[SourceRow] = []


def _init_worker(source: str) -> None:
    global _SOURCE
    _SOURCE = read_source(source)


def make_shard(spec: CatalogSpec, shard: int, folder: Path) -> int:
    """Write shard ``shard`` (and its by-reference twin); the number of rows written."""
    font = ImageFont.load_default(size=28)
    first = shard * spec.shard_size
    rows = {name: [] for name in SCHEMA.names}
    paths: list[str] = []
    for item in range(first, min(first + spec.shard_size, spec.items)):
        rng = random.Random(spec.seed * 1_000_003 + item)
        source = _SOURCE[item % len(_SOURCE)]
        jpeg = perturb_image(source.jpeg, rng, font)
        video_id = f"s{item:09d}"
        rows["image"].append({"bytes": jpeg, "path": f"{video_id}.jpg"})
        rows["title"].append(perturb_title(source.title, rng))
        rows["channel"].append(source.channel)
        rows["video_id"].append(video_id)
        rows["source_video_id"].append(source.video_id)
        if spec.by_reference:
            path = folder / IMAGES_DIR / f"{shard:05d}" / f"{video_id}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg)
            paths.append(str(path))
    name = f"part-{shard:05d}.parquet"
    table = pa.Table.from_pydict(rows, schema=SCHEMA)
    _write_atomically(table, folder / BYTES_DIR / name)
    if spec.by_reference:
        _write_atomically(table.drop_columns("image").add_column(0, "image", pa.array(paths, pa.string())),
                          folder / REFERENCE_DIR / name)
    return table.num_rows


def _write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    pq.write_table(table, partial, row_group_size=1000)
    partial.replace(path)


def _shard_done(spec: CatalogSpec, shard: int, folder: Path) -> bool:
    name = f"part-{shard:05d}.parquet"
    return (folder / BYTES_DIR / name).is_file() and (not spec.by_reference or (folder / REFERENCE_DIR / name).is_file())


def recorded_spec(folder: Path) -> CatalogSpec | None:
    """The spec of the catalog under ``folder``, if one was started there."""
    recorded = Path(folder) / PARAMETERS_FILE
    return CatalogSpec(**json.loads(recorded.read_text())) if recorded.is_file() else None


def generate(spec: CatalogSpec, folder: Path = DEFAULT_OUTPUT, workers: int = 2, upto: int | None = None) -> Path:
    """Make (or reuse) the catalog of ``spec`` under ``folder``; the folder of its parquet shards.

    A folder made with other parameters is refused rather than mixed; one interrupted half-way is
    completed, since each shard is written atomically and depends only on the spec. ``upto`` makes
    only the shards holding the first ``upto`` items (a small run from a large catalog still being made).
    """
    folder = Path(folder)
    recorded = folder / PARAMETERS_FILE
    if recorded.is_file() and json.loads(recorded.read_text()) != asdict(spec):
        raise FileExistsError(f"{folder} holds a catalog made with {recorded.read_text().strip()}; "
                              f"choose another --output or delete it")
    folder.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(asdict(spec), indent=2))
    needed = spec.shards if upto is None else -(-min(upto, spec.items) // spec.shard_size)
    todo = [shard for shard in range(needed) if not _shard_done(spec, shard, folder)]
    if todo:
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(todo))), initializer=_init_worker,
                                 initargs=(spec.source,)) as pool:
            jobs = [pool.submit(make_shard, spec, shard, folder) for shard in todo]
            total = sum(_rows_in(spec, shard) for shard in range(needed))
            with tqdm(total=total, desc="perturbed catalog", unit="item",
                      initial=total - sum(_rows_in(spec, shard) for shard in todo)) as bar:
                for job in jobs:
                    bar.update(job.result())
    return folder / BYTES_DIR


def _rows_in(spec: CatalogSpec, shard: int) -> int:
    return min(spec.shard_size, spec.items - shard * spec.shard_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perturbed_catalog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000, help="catalog size (default: %(default)s)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="parquet of real thumbnails (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="scratch folder (default: %(default)s)")
    parser.add_argument("--shard-size", type=int, default=10_000, help="rows per parquet shard (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes (default: %(default)s)")
    parser.add_argument("--by-reference", action="store_true", help="also write JPEG files and shards of their paths")
    args = parser.parse_args(argv)
    spec = CatalogSpec(args.items, str(args.source.resolve()), args.seed, args.shard_size, args.by_reference)
    try:
        shards = generate(spec, args.output, args.workers)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{spec.items} items in {spec.shards} shards under {shards}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
