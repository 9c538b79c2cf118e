"""Catalog loading: sources, ids, metadata, and bad rows skipped by name without shifting ids."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from recommender.data.catalog import Catalog, load_catalog
from recommender.errors import CatalogError, InvalidQueryError

from .synthetic import catalog_records, jpeg_bytes, thumbnail, write_catalog_parquet


def test_parquet_catalog_keeps_ids_titles_metadata_and_original_bytes(catalog_parquet: Path) -> None:
    records = catalog_records()
    catalog, skipped = load_catalog(catalog_parquet)
    assert skipped == []
    assert catalog.item_ids == [record["video_id"] for record in records]
    assert catalog.titles == [record["title"] for record in records]
    assert catalog.metadata_columns == ["channel", "views"]
    for row, record in enumerate(records):
        assert catalog.metadata(row) == {"channel": record["channel"], "views": record["views"]}
        assert catalog.image_bytes(row) == record["image"]["bytes"]  # never re-encoded
        assert catalog.row_of(record["video_id"]) == row


def test_catalog_survives_save_and_load(tmp_path: Path, catalog_parquet: Path) -> None:
    catalog, _ = load_catalog(catalog_parquet)
    catalog.save(tmp_path / "catalog.parquet")
    again = Catalog.load(tmp_path / "catalog.parquet")
    assert again.item_ids == catalog.item_ids
    assert again.titles == catalog.titles
    assert [again.metadata(row) for row in range(len(again))] == [catalog.metadata(row) for row in range(len(catalog))]
    assert list(again.iter_image_bytes(batch_size=5)) == [catalog.image_bytes(row) for row in range(len(catalog))]


def bad_rows_records() -> list[dict]:
    """The synthetic catalog with one bad row of each kind slipped in between good ones."""
    records = catalog_records()[:10]
    truncated = jpeg_bytes(thumbnail((10, 10, 10), "ellipse", seed=9))[:2000]
    bad = [
        (2, {"video_id": "bad-image", "title": "a video", "image": {"bytes": b"not an image", "path": None}}),
        (4, {"video_id": "truncated", "title": "another video", "image": {"bytes": truncated, "path": None}}),
        (6, {"video_id": "blank-title", "title": "   ", "image": records[0]["image"]}),
        (8, {"video_id": "no-title", "title": None, "image": records[1]["image"]}),
        (10, {"video_id": "vid003", "title": "same id again", "image": records[2]["image"]}),
        (12, {"video_id": "no-image", "title": "missing image", "image": None}),
    ]
    for position, record in bad:
        records.insert(position, {"channel": "x", "views": 0, **record})
    return records


def test_bad_rows_are_skipped_named_and_counted(tmp_path: Path) -> None:
    records = bad_rows_records()
    path = write_catalog_parquet(tmp_path / "bad.parquet", records)
    with pytest.warns(UserWarning, match=r"Skipped 6 of 16 rows") as caught:
        catalog, skipped = load_catalog(path)
    message = str(caught[0].message)
    for name in ("bad-image", "truncated", "blank-title", "no-title", "vid003", "no-image"):
        assert name in message
    assert [(s.position, s.item_id) for s in skipped] == [
        (2, "bad-image"), (4, "truncated"), (6, "blank-title"), (8, "no-title"), (10, "vid003"), (12, "no-image")]
    assert "duplicate" in skipped[4].reason and "title" in skipped[2].reason and "image" in skipped[1].reason
    good = [r for i, r in enumerate(records) if i not in {s.position for s in skipped}]
    assert catalog.item_ids == [r["video_id"] for r in good]
    assert catalog.titles == [r["title"] for r in good]
    assert [catalog.image_bytes(row) for row in range(len(catalog))] == [r["image"]["bytes"] for r in good]


def test_without_an_id_column_ids_are_source_positions_even_after_skips(tmp_path: Path) -> None:
    import datasets

    records = bad_rows_records()
    columns = {"title": [r["title"] for r in records], "image": [r["image"] for r in records]}
    features = datasets.Features({"title": datasets.Value("string"), "image": datasets.Image()})
    path = tmp_path / "no-ids.parquet"
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    with pytest.warns(UserWarning):
        catalog, skipped = load_catalog(path)
    skipped_positions = {s.position for s in skipped}
    assert skipped_positions == {2, 4, 6, 8, 12}  # no id column, so no duplicate ids either
    expected = [position for position in range(len(records)) if position not in skipped_positions]
    assert catalog.item_ids == [str(position) for position in expected]
    for item_id, title in zip(catalog.item_ids, catalog.titles, strict=True):
        assert records[int(item_id)]["title"] == title


def test_named_id_column_and_renamed_columns(tmp_path: Path) -> None:
    import datasets

    records = catalog_records()[:6]
    features = datasets.Features({"key": datasets.Value("int64"), "name": datasets.Value("string"),
                                  "thumb": datasets.Image(), "video_id": datasets.Value("string")})
    columns = {"key": [100 + i for i in range(6)], "name": [r["title"] for r in records],
               "thumb": [r["image"] for r in records], "video_id": [r["video_id"] for r in records]}
    path = tmp_path / "renamed.parquet"
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    catalog, _ = load_catalog(path, image_column="thumb", title_column="name", id_column="key")
    assert catalog.item_ids == [str(100 + i) for i in range(6)]
    assert catalog.titles == [r["title"] for r in records]
    assert catalog.metadata(0) == {"video_id": records[0]["video_id"]}  # unused id candidates stay metadata
    with pytest.raises(CatalogError, match="title"):
        load_catalog(path, image_column="thumb")
    with pytest.raises(CatalogError, match="image"):
        load_catalog(path, title_column="name")
    with pytest.raises(CatalogError, match="nope"):
        load_catalog(path, image_column="thumb", title_column="name", id_column="nope")


def test_image_folder_with_metadata_csv(tmp_path: Path) -> None:
    records = catalog_records()[::5]
    folder = tmp_path / "images"
    folder.mkdir()
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "title", "video_id", "channel"])
        for record in records:
            (folder / f"{record['video_id']}.jpg").write_bytes(record["image"]["bytes"])
            writer.writerow([f"{record['video_id']}.jpg", record["title"], record["video_id"], record["channel"]])
    catalog, skipped = load_catalog(folder)
    assert skipped == []
    assert sorted(catalog.item_ids) == sorted(r["video_id"] for r in records)
    by_id = {r["video_id"]: r for r in records}
    for row, item_id in enumerate(catalog.item_ids):
        assert catalog.titles[row] == by_id[item_id]["title"]  # Sinhala and Tamil titles survive the CSV
        assert catalog.image_bytes(row) == by_id[item_id]["image"]["bytes"]
        assert catalog.metadata(row) == {"channel": by_id[item_id]["channel"]}


def test_unusable_sources_raise_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "missing.parquet")
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(CatalogError, match="metadata"):
        load_catalog(tmp_path / "empty-folder")
    all_bad = [r for r in bad_rows_records() if r["video_id"] in ("bad-image", "truncated")]
    with pytest.warns(UserWarning), pytest.raises(CatalogError, match="No usable rows"):
        load_catalog(write_catalog_parquet(tmp_path / "all-bad.parquet", all_bad))
    with pytest.raises(CatalogError, match="nobody/no-such-dataset"):
        load_catalog("nobody/no-such-dataset")  # offline in tests: it cannot be fetched


def test_limit_and_lookups(catalog_parquet: Path) -> None:
    catalog, _ = load_catalog(catalog_parquet, limit=5)
    assert len(catalog) == 5
    with pytest.raises(InvalidQueryError, match="Unknown item id"):
        catalog.row_of("vid999")
    assert catalog.row_of(f"  {catalog.item_ids[2]} ") == 2
    assert catalog.search("PHONE") == [row for row, title in enumerate(catalog.titles) if "phone" in title]
