"""Thumbnails by reference: URLs (a local HTTP server, never the internet) and file paths instead of bytes."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest

from recommender import Recommender
from recommender.data.bundle import FILES, MANIFEST
from recommender.data.catalog import load_catalog
from recommender.data.images import MAX_IMAGE_BYTES
from recommender.data.references import read_reference
from recommender.errors import InvalidQueryError
from train.build import build_bundle

from .conftest import TEST_ENCODER
from .synthetic import catalog_records, write_catalog_parquet


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder of thumbnails: its base URL and the folder."""
    folder = tmp_path_factory.mktemp("served")
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def refused_url() -> str:
    """A URL on a local port nobody listens on: the connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/thumbnail.jpg"


def write_reference_catalog(path: Path, records: list[dict], references: list[str]) -> Path:
    features = datasets.Features({"video_id": datasets.Value("string"), "title": datasets.Value("string"),
                                  "image": datasets.Value("string"), "channel": datasets.Value("string")})
    columns = {"video_id": [r["video_id"] for r in records], "title": [r["title"] for r in records],
               "image": references, "channel": [r["channel"] for r in records]}
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


@pytest.fixture(scope="module")
def referenced(server: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], dict]:
    """The synthetic catalog with every even thumbnail served over HTTP, every odd one a file path, and
    four broken references in between (404, refused connection, missing file, not an image)."""
    base, served = server
    files = tmp_path_factory.mktemp("files")
    records, references = catalog_records(), []
    for position, record in enumerate(records):
        name = f"{record['video_id']}.jpg"
        if position % 2 == 0:
            (served / name).write_bytes(record["image"]["bytes"])
            references.append(f"{base}/{name}")
        else:
            (files / name).write_bytes(record["image"]["bytes"])
            references.append(str(files / name))
    (served / "not-an-image.jpg").write_bytes(b"<html>hello</html>")
    broken = {"gone": f"{base}/missing.jpg", "refused": refused_url(), "no-file": str(files / "nothing.jpg"),
              "garbage": f"{base}/not-an-image.jpg"}
    rows, refs = list(records), list(references)
    for offset, (item_id, reference) in enumerate(broken.items()):
        rows.insert(3 + 5 * offset, {"video_id": item_id, "title": f"broken {item_id}", "channel": "x"})
        refs.insert(3 + 5 * offset, reference)
    path = write_reference_catalog(tmp_path_factory.mktemp("catalog") / "catalog.parquet", rows, refs)
    return path, records, broken


def test_unreachable_references_are_skipped_by_name(referenced) -> None:
    path, records, broken = referenced
    with pytest.warns(UserWarning, match=r"Skipped 4 of 36 rows") as caught:
        catalog, skipped = load_catalog(path)
    message = str(caught[0].message)
    for reference in broken.values():
        assert reference in message
    assert "HTTP 404" in message and "unreachable" in message and "not found" in message
    assert {row.item_id for row in skipped} == set(broken)
    assert catalog.by_reference and catalog.item_ids == [r["video_id"] for r in records]
    for row, record in enumerate(records):
        assert catalog.image_bytes(row) == record["image"]["bytes"]  # fetched, byte for byte


def test_gallery_shows_urls_and_serves_files(referenced) -> None:
    path, records, _ = referenced
    with pytest.warns(UserWarning):
        catalog, _ = load_catalog(path)
    url = catalog.image_path(0)
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:") and url.endswith("/vid000.jpg")
    local = catalog.image_path(1)  # a file reference: copied into the private thumbnail folder
    assert isinstance(local, Path) and local.read_bytes() == records[1]["image"]["bytes"]


def test_bundle_of_references_holds_no_bytes_and_embeds_like_bytes(tmp_path: Path, referenced, bundle_dir: Path,
                                                                 text_model: Path) -> None:
    path, records, _ = referenced
    common = {"text_model": str(text_model), "encoder_config": TEST_ENCODER, "show_progress_bar": False,
              "encoder_weights": bundle_dir / FILES["encoder_weights"]}
    with pytest.warns(UserWarning, match="Skipped 4"):
        manifest = build_bundle(path, tmp_path / "by-reference", **common)
    assert manifest["count"] == len(records) and manifest["source"]["skipped_rows"] == 4
    table = pq.read_table(tmp_path / "by-reference" / FILES["catalog"])
    assert str(table.schema.field("image").type) == "string"  # references, not bytes
    assert (tmp_path / "by-reference" / FILES["catalog"]).stat().st_size < 20_000
    build_bundle(write_catalog_parquet(tmp_path / "bytes.parquet", records), tmp_path / "by-bytes", **common)
    by_reference, by_bytes = Recommender.load(tmp_path / "by-reference"), Recommender.load(tmp_path / "by-bytes")
    np.testing.assert_allclose(np.asarray(by_reference.image_vectors), np.asarray(by_bytes.image_vectors), atol=1e-6)
    query = {"image": records[5]["image"]["bytes"], "mode": "image", "k": 3}
    assert [r.item_id for r in by_reference.recommend(**query)] == [r.item_id for r in by_bytes.recommend(**query)]
    assert json.loads((tmp_path / "by-reference" / MANIFEST).read_text())["count"] == len(records)


def test_reference_size_is_capped(tmp_path: Path, server: tuple[str, Path]) -> None:
    base, served = server
    (served / "huge.jpg").write_bytes(b"\xff" * (MAX_IMAGE_BYTES + 1))
    with pytest.raises(InvalidQueryError, match="over 20 MiB"):
        read_reference(f"{base}/huge.jpg")
    with pytest.raises(InvalidQueryError, match="over 20 MiB"):
        read_reference(str(served / "huge.jpg"))
