"""Catalog thumbnails on disk, which the app serves as they are: keyed on the catalog's checksum,
written whole by every concurrent first request, and kept in a folder only this process can open."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import threading
import uuid
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from recommender import Recommender
from recommender.data.bundle import FILES, MANIFEST, sha256_of
from recommender.data.catalog import Catalog, load_catalog

from .synthetic import catalog_records, jpeg_bytes, thumbnail, write_catalog_parquet


def test_a_rebuilt_bundle_with_the_same_ids_serves_its_own_pictures(tmp_path: Path, bundle_dir: Path) -> None:
    records = catalog_records()
    repainted = [{**record, "image": {"bytes": jpeg_bytes(thumbnail((250, 250, 250), "stripes", seed=row + 500)),
                                      "path": None}} for row, record in enumerate(records)]
    rebuilt = Path(shutil.copytree(bundle_dir, tmp_path / "rebuilt"))
    load_catalog(write_catalog_parquet(tmp_path / "repainted.parquet", repainted))[0].save(rebuilt / FILES["catalog"])
    manifest = json.loads((rebuilt / MANIFEST).read_text())
    manifest["files"][FILES["catalog"]] = sha256_of(rebuilt / FILES["catalog"])
    (rebuilt / MANIFEST).write_text(json.dumps(manifest))

    old, new = Recommender.load(bundle_dir), Recommender.load(rebuilt)
    assert old.catalog.item_ids == new.catalog.item_ids
    for row in (0, 5, 31):
        assert old.catalog.image_path(row).read_bytes() == records[row]["image"]["bytes"]
        assert new.catalog.image_path(row).read_bytes() == repainted[row]["image"]["bytes"]
        assert old.catalog.image_path(row) != new.catalog.image_path(row)


def noisy_catalog(count: int = 6) -> Catalog:
    """Never-seen ids and large pictures (noise PNGs of about 1 MB), so every first request writes."""
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)).save(buffer, "PNG", compress_level=0)
        images.append({"bytes": buffer.getvalue(), "path": None})
    table = datasets.Dataset.from_dict(
        {"item_id": [uuid.uuid4().hex for _ in images], "title": [f"video {i}" for i in range(count)],
         "image": images},
        features=datasets.Features({"item_id": datasets.Value("string"), "title": datasets.Value("string"),
                                    "image": datasets.Image()}))
    return Catalog(table)


def test_concurrent_first_requests_all_get_the_whole_file() -> None:
    catalog = noisy_catalog()
    start = threading.Barrier(12)
    failures: list[str] = []

    def request(caller: int) -> None:
        start.wait()
        for step in range(len(catalog)):
            row = (caller + step) % len(catalog)
            try:
                served = catalog.image_path(row).read_bytes()
                if served != catalog.image_bytes(row):
                    failures.append(f"row {row}: {len(served):,} of {len(catalog.image_bytes(row)):,} bytes")
            except Exception as error:  # noqa: BLE001 - every failure is reported
                failures.append(f"row {row}: {type(error).__name__}: {error}")

    callers = [threading.Thread(target=request, args=(caller,)) for caller in range(12)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert failures == []
    folder = catalog.image_path(0).parent
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{row}.png" for row in range(len(catalog)))


def test_thumbnails_live_in_a_private_folder(bundle_dir: Path) -> None:
    """Gradio serves the folder as it is: nobody else on the machine may put files into it (or read them)."""
    path = Catalog.load(bundle_dir / FILES["catalog"]).image_path(3)
    for folder in (path.parent, path.parent.parent):
        mode = folder.stat()
        assert mode.st_uid == os.getuid() and stat.S_IMODE(mode.st_mode) & 0o077 == 0, (folder, oct(mode.st_mode))
    assert path.read_bytes() == catalog_records()[3]["image"]["bytes"]
