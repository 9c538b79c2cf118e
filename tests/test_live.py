"""A live catalog: ``train add`` / ``remove`` / ``compact`` on a real bundle, checked through real queries.

Row i of the catalog must stay vector i of every index through every update; removed items must
never come back in any mode, with any control; a crash midway must leave the previous revision
answering exactly as before.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest

from recommender import BundleError, InvalidQueryError, Recommender
from recommender.data import live as live_parts
from recommender.data.bundle import (
    FILES,
    MANIFEST,
    OPTIONAL_FILES,
    read_manifest,
    sha256_of,
)
from recommender.data.index_cache import ENV_INDEX_CACHE
from recommender.data.live import SEGMENT_FILES
from recommender.engine import MAX_K
from recommender.errors import CatalogError
from recommender.search.index import append_index
from train import live
from train.__main__ import main as train_main
from train.build import build_bundle
from train.live import add_items, compact_bundle, remove_items

from .synthetic import catalog_records, new_records, write_catalog_parquet

NEW = new_records(8)
#: Every control a query can take: modes, fusions, alphas, the largest k.
CONTROLS = [{"mode": "image"}, {"mode": "text"}, {"mode": "hybrid"}, {"mode": "hybrid", "fusion": "rrf"},
            {"mode": "hybrid", "alpha": 0.0}, {"mode": "hybrid", "alpha": 1.0}, {"mode": "hybrid", "alpha": 0.3,
                                                                                 "fusion": "rrf"}]


@pytest.fixture(scope="module")
def new_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog_parquet(tmp_path_factory.mktemp("new") / "new.parquet", NEW)


@pytest.fixture(scope="module")
def added(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, new_parquet: Path) -> Path:
    """The session bundle with the eight new videos added (one revision later)."""
    folder = Path(shutil.copytree(bundle_dir, tmp_path_factory.mktemp("added") / "bundle"))
    add_items(folder, new_parquet, show_progress_bar=False)
    return folder


def answers(recommender: Recommender, queries: list[dict]) -> list[list[tuple]]:
    return [[(r.item_id, r.title, r.score, r.image_score, r.text_score) for r in recommender.recommend(**query)]
            for query in queries]


def every_query(recommender: Recommender) -> list[dict]:
    """Every live item asked by id, and every thumbnail and title re-uploaded, under every control."""
    catalog = recommender.catalog
    queries = []
    for row in catalog.live_rows().tolist():
        for control in CONTROLS:
            queries.append({"item_id": catalog.item_ids[row], "k": MAX_K, **control})
    for record in [*catalog_records(), *NEW]:
        queries.append({"image": record["image"]["bytes"], "mode": "image", "k": MAX_K})
        queries.append({"title": record["title"], "mode": "text", "k": MAX_K})
        queries.append({"image": record["image"]["bytes"], "title": record["title"], "mode": "hybrid", "k": MAX_K})
    return queries


# ---- add ------------------------------------------------------------------------------------------

def test_each_added_video_is_found_by_its_own_thumbnail(added: Path) -> None:
    recommender = Recommender.load(added)
    for record in NEW:
        for mode in ("image", "hybrid"):
            title = record["title"] if mode == "hybrid" else None
            top = recommender.recommend(image=record["image"]["bytes"], title=title, mode=mode, k=3)[0]
            assert (top.item_id, top.title) == (record["video_id"], record["title"]), mode
            assert top.metadata == {"channel": record["channel"], "views": record["views"]}


def test_appended_rows_vectors_and_index_entries_line_up(bundle_dir: Path, added: Path) -> None:
    before, after = Recommender.load(bundle_dir), Recommender.load(added)
    old = len(before.catalog)
    assert len(after.catalog) == old + len(NEW) == after.image_index.ntotal == after.text_index.ntotal
    assert after.catalog.item_ids == before.catalog.item_ids + [r["video_id"] for r in NEW]
    assert np.array_equal(after.image_vectors[:old], before.image_vectors)
    assert np.array_equal(after.text_vectors[:old], before.text_vectors)
    for offset, record in enumerate(NEW):
        row = old + offset
        # The stored vectors are what the bundle's own models compute for the video, as for an upload.
        np.testing.assert_allclose(after.image_vectors[row], after.encode_image(record["image"]["bytes"])[0], atol=1e-5)
        np.testing.assert_allclose(after.text_vectors[row], after.encode_title(record["title"])[0], atol=1e-5)
        for index, vectors in ((after.image_index, after.image_vectors), (after.text_index, after.text_vectors)):
            np.testing.assert_array_equal(index.reconstruct(row), vectors[row])
    # Each new video's title-head fold is the fold of the catalog item it looks most like.
    _, nearest = before.image_index.search(before.title_head.looks_query(after.title_head.features_of(
        after.image_vectors[old:])), 1)
    assert np.array_equal(after.title_head.folds[old:], before.title_head.folds[nearest[:, 0]])


def test_add_writes_a_new_revision_and_leaves_every_old_file_alone(bundle_dir: Path, added: Path) -> None:
    old = read_manifest(bundle_dir)
    new = read_manifest(added, verify=True)  # every checksum, old and new files
    assert new["format_version"] == 2 and new["count"] == old["count"] + len(NEW)
    assert new["live"]["revision"] == 1 and new["live"]["trained_rows"] == old["count"]
    assert new["live"]["added_since_training"] == len(NEW) and new["live"]["tombstones"] is None
    [segment] = new["live"]["segments"]
    assert segment["count"] == len(NEW) and set(segment["files"]) == set(SEGMENT_FILES)
    for name, checksum in old["files"].items():
        assert new["files"][name] == checksum == sha256_of(added / name)
    assert {k: v for k, v in new.items() if k not in ("format_version", "count", "live", "files", "updated")} == \
           {k: v for k, v in old.items() if k not in ("format_version", "count", "files")}


def test_a_second_add_appends_a_second_segment(bundle: Path, tmp_path: Path) -> None:
    add_items(bundle, write_catalog_parquet(tmp_path / "a.parquet", new_records(4)), show_progress_bar=False)
    update = add_items(bundle, write_catalog_parquet(tmp_path / "b.parquet", new_records(4, start=4)),
                       show_progress_bar=False)
    assert (update.revision, update.rows, update.added_since_training) == (2, 4, 8)
    recommender = Recommender.load(bundle)
    assert len(read_manifest(bundle)["live"]["segments"]) == 2
    for record in NEW:
        assert recommender.recommend(image=record["image"]["bytes"], mode="image", k=1)[0].item_id == record["video_id"]


def test_duplicate_ids_are_skipped_with_a_warning(added: Path, new_parquet: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(added, tmp_path / "bundle"))
    both = write_catalog_parquet(tmp_path / "both.parquet", [*NEW[:2], *new_records(1, start=50),
                                                             catalog_records()[0]])
    with pytest.warns(UserWarning, match=r"Skipped 3 video\(s\) the bundle already has: new000, new001, vid000"):
        update = add_items(folder, both, show_progress_bar=False)
    assert update.rows == 1 and [s.item_id for s in update.skipped] == ["new000", "new001", "vid000"]
    assert Recommender.load(folder).catalog.item_ids[-1] == "new050"
    manifest = (folder / MANIFEST).read_bytes()
    with pytest.warns(UserWarning, match="Skipped 8"):
        nothing = add_items(folder, new_parquet, show_progress_bar=False)
    assert nothing.rows == 0 and nothing.revision == update.revision  # nothing to add: no new revision
    assert (folder / MANIFEST).read_bytes() == manifest


def test_update_replaces_the_old_row(added: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(added, tmp_path / "bundle"))
    changed = {**new_records(1, start=40)[0], "video_id": "new003", "title": "a brand new title"}
    update = add_items(folder, write_catalog_parquet(tmp_path / "changed.parquet", [changed]), update=True,
                       show_progress_bar=False)
    assert (update.rows, update.replaced) == (1, 1)
    recommender = Recommender.load(folder)
    rows = [row for row, item in enumerate(recommender.catalog.item_ids) if item == "new003"]
    assert len(rows) == 2 and rows[0] in recommender.catalog.removed and rows[1] not in recommender.catalog.removed
    assert recommender.catalog.row_of("new003") == rows[1]
    top = recommender.recommend(image=changed["image"]["bytes"], mode="image", k=MAX_K)
    assert top[0].title == "a brand new title" and [r.item_id for r in top].count("new003") == 1
    for control in CONTROLS:  # the old version never comes back
        results = recommender.recommend(item_id="new002", k=MAX_K, **control)
        assert [(r.item_id, r.title) for r in results if r.item_id == "new003"] == [("new003", "a brand new title")]


def test_new_videos_fit_the_bundle_catalog_columns(bundle: Path, tmp_path: Path) -> None:
    """A source with other metadata columns: missing ones are left empty, extra ones dropped, both said."""
    import datasets

    record = new_records(1, start=60)[0]
    table = datasets.Dataset.from_dict({"video_id": [record["video_id"]], "title": [record["title"]],
                                        "image": [record["image"]], "colour": ["red"]},
                                       features=datasets.Features({"video_id": datasets.Value("string"),
                                                                   "title": datasets.Value("string"),
                                                                   "image": datasets.Image(),
                                                                   "colour": datasets.Value("string")}))
    table.to_parquet(str(tmp_path / "other.parquet"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_items(bundle, tmp_path / "other.parquet", show_progress_bar=False)
    messages = " ".join(str(w.message) for w in caught)
    assert "no channel, views column(s): left empty" in messages and "no colour column(s): not added" in messages
    recommender = Recommender.load(bundle)
    assert recommender.catalog.metadata(len(recommender.catalog) - 1) == {"channel": None, "views": None}


def test_drift_is_counted_and_warned_about(bundle: Path, new_parquet: Path, caplog: pytest.LogCaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "DRIFT_WARNING_SHARE", 0.25)
    with caplog.at_level(logging.WARNING, logger="train.live"):
        add_items(bundle, new_parquet, show_progress_bar=False)
    assert not caplog.records  # 8 of 40 = 20%
    more = write_catalog_parquet(bundle.parent / "more.parquet", new_records(4, start=8))
    with caplog.at_level(logging.WARNING, logger="train.live"):
        update = add_items(bundle, more, show_progress_bar=False)
    assert update.added_since_training == 12 and update.drift_share == pytest.approx(12 / 44)
    assert "27% of the catalog (12 of 44 items) was added after" in caplog.text and "train build" in caplog.text
    assert read_manifest(bundle)["live"]["added_since_training"] == 12


@pytest.mark.parametrize("step", ["save_index", "_write_tombstones", "write_manifest"])
def test_a_crash_midway_leaves_the_previous_bundle_answering_identically(
        added: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    folder = Path(shutil.copytree(added, tmp_path / "bundle"))
    remove_items(folder, ["vid101"])  # so that --update writes a tombstone file too
    before = Recommender.load(folder)
    queries = every_query(before)[::7]
    expected, manifest, files = answers(before, queries), (folder / MANIFEST).read_bytes(), sorted(folder.rglob("*"))
    calls = []

    def crash(*args, **kwargs):
        calls.append(step)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(live, step, crash)
    replacing = write_catalog_parquet(tmp_path / "more.parquet", [*new_records(3, start=20),
                                                                    {**NEW[0], "title": "replaced"}])
    with pytest.raises(RuntimeError, match="simulated crash"):
        add_items(folder, replacing, update=True, show_progress_bar=False)
    assert calls and (folder / MANIFEST).read_bytes() == manifest
    assert sorted(folder.rglob("*")) == files  # what the failed add wrote is gone
    assert answers(Recommender.load(folder), queries) == expected
    monkeypatch.undo()
    update = add_items(folder, replacing, update=True, show_progress_bar=False)  # and the next add works
    assert (update.revision, update.rows, update.replaced) == (3, 4, 1)


def test_leftovers_of_a_killed_update_are_cleared_by_the_next(added: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(added, tmp_path / "bundle"))
    (folder / "segments" / "000002.partial").mkdir()  # killed while writing revision 2's segment
    shutil.copytree(folder / "segments" / "000001", folder / "segments" / "000002")  # or before the manifest
    (folder / "tombstones-000002.json").write_text("{}")
    remove_items(folder, ["vid000"])
    assert sorted(p.name for p in (folder / "segments").iterdir()) == ["000001"]
    assert sorted(p.name for p in folder.glob("tombstones-*")) == ["tombstones-000002.json"]
    assert json.loads((folder / "tombstones-000002.json").read_text())["item_ids"] == ["vid000"]


def test_one_update_at_a_time(bundle: Path, new_parquet: Path) -> None:
    import fcntl

    with open(bundle / live.LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(BundleError, match="Another live update"):
            add_items(bundle, new_parquet, show_progress_bar=False)


# ---- remove -----------------------------------------------------------------------------------------

GONE = ["vid001", "vid102", "new004", "vid307"]


@pytest.fixture(scope="module")
def removed(tmp_path_factory: pytest.TempPathFactory, added: Path) -> Path:
    folder = Path(shutil.copytree(added, tmp_path_factory.mktemp("removed") / "bundle"))
    update = remove_items(folder, GONE)
    assert (update.rows, update.items) == (4, 36)
    return folder


def test_removed_videos_never_come_back(removed: Path) -> None:
    recommender = Recommender.load(removed)
    assert recommender.info()["items"] == 36 and len(recommender.catalog) == 40
    for query in every_query(recommender):
        found = [r.item_id for r in recommender.recommend(**query)]
        assert not set(found) & set(GONE), query
        assert len(found) == min(MAX_K, 36 - ("item_id" in query))  # every other live item, nothing short
    for item in GONE:
        with pytest.raises(InvalidQueryError, match=f"Item '{item}' was removed from the catalog"):
            recommender.recommend(item_id=item, mode="hybrid")
    assert not set(GONE) & {recommender.catalog.item_ids[row] for row in recommender.catalog.search("", limit=100)}
    assert recommender.catalog.search("craft ideas with paper") == []  # vid102's title, and no other's
    assert [recommender.catalog.item_ids[row] for row in recommender.catalog.search("diy paper flowers")] == \
           ["vid101", "new001"]


def test_tombstoned_search_is_exactly_the_top_k_of_live_items(removed: Path, tmp_path: Path) -> None:
    """Single modes against brute force over the live vectors; hybrid against a bundle built without them."""
    recommender = Recommender.load(removed)
    live = recommender.catalog.live_rows()
    for row in live.tolist():
        item = recommender.catalog.item_ids[row]
        for mode, vectors in (("image", recommender.image_vectors), ("text", recommender.text_vectors)):
            others = live[live != row]
            scores = vectors[others] @ vectors[row]
            best = np.argsort(-scores, kind="stable")[:10]
            got = recommender.recommend(item_id=item, mode=mode, k=10)
            np.testing.assert_allclose([r.score for r in got], scores[best], atol=1e-5)
            clear = scores[best] > np.sort(scores)[-11] + 1e-5  # not tied with the first item left out
            assert [r.item_id for r, keep in zip(got, clear) if keep] == \
                   [recommender.catalog.item_ids[r] for r, keep in zip(others[best], clear) if keep]
    compacted = Path(shutil.copytree(removed, tmp_path / "compacted"))
    compact_bundle(compacted)
    queries = every_query(recommender)
    assert answers(Recommender.load(compacted), queries) == answers(recommender, queries)


def test_remove_refuses_unknown_ids_and_changes_nothing(removed: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(removed, tmp_path / "bundle"))
    manifest = (folder / MANIFEST).read_bytes()
    with pytest.raises(CatalogError, match=r"1 id\(s\) are not in .*'nope'.*Nothing was removed"):
        remove_items(folder, ["vid000", "nope"])
    assert (folder / MANIFEST).read_bytes() == manifest
    with pytest.warns(UserWarning, match="Already removed, skipped: vid001"):
        update = remove_items(folder, ["vid001", "vid000"])
    assert update.rows == 1 and update.items == 35


def test_catalog_pages_of_the_app_skip_removed_videos(removed: Path) -> None:
    from recommender.serving.endpoints import Endpoints
    from recommender.serving.startup import Startup

    api = Endpoints(Startup.loaded(Recommender.load(removed)))
    for _ in range(10):
        _, page = api.shuffle_catalog()
        assert page["matches"] == 36 and not set(GONE) & {item["item_id"] for item in page["items"]}
    _, page = api.search_catalog("")
    assert page["matches"] == 36
    assert api.info()["items"] == 36


# ---- compact --------------------------------------------------------------------------------------

def test_compact_rewrites_the_bundle_without_removed_rows(removed: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(removed, tmp_path / "bundle"))
    before = Recommender.load(folder)
    update = compact_bundle(folder)
    assert (update.rows, update.items, update.revision) == (4, 36, 3)
    manifest = read_manifest(folder, verify=True)
    assert manifest["format_version"] == 1 and manifest["count"] == 36
    assert manifest["live"]["segments"] == [] and manifest["live"]["tombstones"] is None
    assert (manifest["live"]["trained_rows"], manifest["live"]["added_since_training"]) == (29, 7)
    assert not (folder / "segments").exists() and not list(folder.glob("tombstones-*"))
    after = Recommender.load(folder)
    live = before.catalog.live_rows()
    assert after.catalog.item_ids == [before.catalog.item_ids[row] for row in live]
    assert np.array_equal(after.image_vectors, before.image_vectors[live])
    assert np.array_equal(after.text_vectors, before.text_vectors[live])
    assert np.array_equal(after.title_head.folds, before.title_head.folds[live])
    for row in range(len(after.catalog)):
        np.testing.assert_array_equal(after.image_index.reconstruct(row), after.image_vectors[row])
    assert not folder.with_name("bundle.partial").exists() and not folder.with_name("bundle.old").exists()


def test_compact_crash_leaves_the_bundle(removed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = Path(shutil.copytree(removed, tmp_path / "bundle"))
    manifest = (folder / MANIFEST).read_bytes()
    monkeypatch.setattr(live, "save_index", lambda *args: (_ for _ in ()).throw(RuntimeError("simulated crash")))
    with pytest.raises(RuntimeError, match="simulated crash"):
        compact_bundle(folder)
    assert (folder / MANIFEST).read_bytes() == manifest and not folder.with_name("bundle.partial").exists()
    assert Recommender.load(folder).catalog.live_count == 36


# ---- every index type the build makes ---------------------------------------------------------------

@pytest.mark.parametrize("key", ["HNSW8,Flat", "IVF4,Flat", "L2norm,IVF2,SQ8"])
def test_add_remove_and_compact_with_large_catalog_indexes(tmp_path: Path, bundle_dir: Path, catalog_parquet: Path,
                                                          text_model: Path, new_parquet: Path, key: str) -> None:
    folder = tmp_path / "bundle"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_bundle(catalog_parquet, folder, text_model=str(text_model), index_key=key, show_progress_bar=False,
                     encoder_weights=bundle_dir / FILES["encoder_weights"])
    kind = read_manifest(folder)["indexes"]["image"]["type"]
    add_items(folder, new_parquet, show_progress_bar=False)
    remove_items(folder, GONE)
    recommender = Recommender.load(folder, search={"ivf_nprobe": 4})
    assert recommender.info()["image_index"] == kind and recommender.image_index.ntotal == 40
    for record in NEW:
        found = [r.item_id for r in recommender.recommend(image=record["image"]["bytes"], mode="image", k=5)]
        assert not set(found) & set(GONE)
        if record["video_id"] not in GONE:  # SQ8 codes lose a little: top 5 is enough there
            assert record["video_id"] == found[0] if "Flat" in key else record["video_id"] in found
    for query in every_query(recommender)[::3]:
        assert not {r.item_id for r in recommender.recommend(**query)} & set(GONE)
    compact_bundle(folder)
    compacted = Recommender.load(folder, search={"ivf_nprobe": 4})
    assert compacted.info()["image_index"] == kind and compacted.image_index.ntotal == 36
    assert faiss.downcast_index(compacted.image_index).__class__ is faiss.downcast_index(
        recommender.image_index).__class__


def test_a_joined_hnsw_index_is_cached_not_inserted_at_every_load(
        tmp_path: Path, bundle_dir: Path, catalog_parquet: Path, text_model: Path, new_parquet: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An HNSW graph takes a segment only by inserting its vectors: the first load after an ``add`` keeps
    the joined index in the local cache, later loads read it, and a load after a second ``add`` inserts
    only the new segment."""
    cache = tmp_path / "index-cache"
    monkeypatch.setenv(ENV_INDEX_CACHE, str(cache))
    folder = tmp_path / "bundle"
    build_bundle(catalog_parquet, folder, text_model=str(text_model), index_key="HNSW8,Flat", show_progress_bar=False,
                 encoder_weights=bundle_dir / FILES["encoder_weights"])
    add_items(folder, new_parquet, show_progress_bar=False)
    inserted = []

    def counting_append(index, segment, vectors):
        inserted.append(len(vectors))
        return append_index(index, segment, vectors)

    monkeypatch.setattr(live_parts, "append_index", counting_append)
    first = Recommender.load(folder)
    assert inserted == [8, 8] and len(list(cache.glob("*.faiss"))) == 2  # image and text, joined once
    second = Recommender.load(folder)
    assert inserted == [8, 8]  # read back: nothing inserted again
    for modality in ("image", "text"):
        index = f"{modality}_index"
        assert faiss.serialize_index(getattr(second, index)).tobytes() == \
            faiss.serialize_index(getattr(first, index)).tobytes()  # the same graph
    more = write_catalog_parquet(tmp_path / "more.parquet", new_records(4, start=8))
    add_items(folder, more, show_progress_bar=False)  # its own load found the first join cached
    inserted.clear()
    third = Recommender.load(folder)
    assert inserted == [4, 4] and len(list(cache.glob("*.faiss"))) == 2  # only the new segment; the old join replaced
    assert third.image_index.ntotal == len(third.catalog) == 44
    for row in range(44):  # row i is still vector i of both indexes
        np.testing.assert_array_equal(third.image_index.reconstruct(row), third.image_vectors[row])
        np.testing.assert_array_equal(third.text_index.reconstruct(row), third.text_vectors[row])
    for path in cache.glob("*.faiss"):
        path.write_bytes(b"not an index")
    inserted.clear()
    assert Recommender.load(folder).image_index.ntotal == 44 and inserted == [8, 4, 8, 4]  # a broken cache: rebuilt


# ---- the command line ---------------------------------------------------------------------------------

def test_add_remove_compact_commands(bundle: Path, new_parquet: Path, capsys: pytest.CaptureFixture) -> None:
    assert train_main(["add", "--bundle", str(bundle), "--dataset", str(new_parquet)]) == 0
    out = capsys.readouterr().out
    assert "Added 8 videos" in out and "revision 1, 40 videos, 8 (20%) added since training" in out
    assert train_main(["remove", "--bundle", str(bundle), "--ids", "new001", "vid000"]) == 0
    assert "Removed 2 videos" in capsys.readouterr().out
    assert train_main(["remove", "--bundle", str(bundle), "--ids", "missing"]) == 2
    assert f"error: 1 id(s) are not in {bundle}: 'missing'. Nothing was removed.\n" in capsys.readouterr().err
    assert train_main(["compact", "--bundle", str(bundle)]) == 0
    assert "dropped 2 removed rows; revision 3, 38 videos" in capsys.readouterr().out
    assert train_main(["add", "--bundle", str(bundle.parent / "nowhere"), "--dataset", str(new_parquet)]) == 2
    assert "is not a bundle" in capsys.readouterr().err


def test_live_files_must_stay_inside_the_bundle(added: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(added, tmp_path / "bundle"))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["live"]["segments"][0]["files"]["catalog"] = "../../elsewhere/catalog.parquet"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="declares a file outside the bundle folder"):
        Recommender.load(folder)


def test_tombstones_must_match_the_catalog(removed: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(removed, tmp_path / "bundle"))
    manifest = json.loads((folder / MANIFEST).read_text())
    name = manifest["live"]["tombstones"]["file"]
    data = json.loads((folder / name).read_text())
    data["item_ids"][0] = "someone-else"
    (folder / name).write_text(json.dumps(data))
    manifest["files"][name] = sha256_of(folder / name)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="belongs to another revision"):
        Recommender.load(folder)


def test_bundle_files_of_a_live_bundle(removed: Path) -> None:
    manifest = read_manifest(removed)
    declared = set(manifest["files"])
    base = {name for role, name in FILES.items() if role not in ("image_vectors", "text_vectors")}
    shards = {"vectors/image-00000.npy", "vectors/text-00000.npy"}  # the base's vectors (see vectors.py)
    assert {*base, *shards, OPTIONAL_FILES["title_head"], manifest["live"]["tombstones"]["file"]} <= declared
    assert {f"segments/000001/{name}" for name in SEGMENT_FILES.values()} <= declared
