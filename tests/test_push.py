"""``train push`` sends only what changed: checked against an in-memory Hub repo (tests have no network).

The fake answers the three ``HfApi`` calls a push makes with the Hub's own data types: the repo's
files with their git blob ids and LFS SHA-256s, and commits of ``CommitOperationAdd`` / ``Delete``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.hf_api import RepoFile

from recommender.data.bundle import push_bundle
from recommender.data.hub_sync import local_files
from train.__main__ import main as train_main
from train.live import add_items, compact_bundle, remove_items

from .synthetic import new_records, write_catalog_parquet

REPO = "someone/live-bundle"


class FakeHub:
    """One Hub model repo in memory: what ``list_repo_tree`` reports and what ``create_commit`` receives."""

    def __init__(self) -> None:
        self.files = {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}
        self.commits: list[list] = []

    def create_repo(self, repo_id: str, **options: object) -> None:
        assert repo_id == REPO

    def list_repo_tree(self, repo_id: str, recursive: bool = False, revision: str | None = None,
                       repo_type: str | None = None) -> list[RepoFile]:
        assert recursive and repo_type == "model"
        entries = []
        for path, data in self.files.items():
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            lfs = None if path.endswith((".json", ".md", ".gitattributes")) else {
                "size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            # An LFS file's git blob is its pointer, not its content: only the LFS SHA-256 tells content.
            entries.append(RepoFile(path=path, size=len(data), oid=blob if lfs is None else "0" * 40, lfs=lfs))
        return entries

    def create_commit(self, repo_id: str, operations: list, **options: object) -> str:
        self.commits.append(list(operations))
        for operation in operations:
            if isinstance(operation, CommitOperationAdd):
                self.files[operation.path_in_repo] = Path(operation.path_or_fileobj).read_bytes()
            else:
                assert isinstance(operation, CommitOperationDelete)
                del self.files[operation.path_in_repo]
        return f"https://huggingface.co/{REPO}/commit/{len(self.commits)}"

    def uploaded(self) -> set[str]:
        """Paths the last commit uploaded."""
        return {op.path_in_repo for op in self.commits[-1] if isinstance(op, CommitOperationAdd)}

    def deleted(self) -> set[str]:
        return {op.path_in_repo for op in self.commits[-1] if isinstance(op, CommitOperationDelete)}


def same_as_local(hub: FakeHub, folder: Path) -> bool:
    return {path: data for path, data in hub.files.items() if path != ".gitattributes"} == {
        path: file.read_bytes() for path, file in local_files(folder).items()}


def test_push_sends_only_what_changed(bundle: Path, tmp_path: Path) -> None:
    hub = FakeHub()
    url, plan = push_bundle(bundle, REPO, api=hub)
    assert url and plan.upload_bytes == plan.bundle_bytes and same_as_local(hub, bundle)
    url, plan = push_bundle(bundle, REPO, api=hub)
    assert url is None and not plan.upload and not plan.delete and len(hub.commits) == 1  # unchanged: no commit

    add_items(bundle, write_catalog_parquet(tmp_path / "new.parquet", new_records(8)), show_progress_bar=False)
    _, plan = push_bundle(bundle, REPO, api=hub)
    segment = {f"segments/000001/{name}" for name in ("catalog.parquet", "image_vectors.npy", "text_vectors.npy",
                                                       "image.faiss", "text.faiss", "title_folds.npy")}
    assert hub.uploaded() == segment | {"manifest.json", "README.md"} and not hub.deleted()
    assert plan.upload_bytes == sum((bundle / name).stat().st_size for name in hub.uploaded())
    assert plan.upload_bytes < plan.bundle_bytes / 2 and same_as_local(hub, bundle)

    remove_items(bundle, ["vid000", "new002"])
    push_bundle(bundle, REPO, api=hub)
    assert hub.uploaded() == {"tombstones-000002.json", "manifest.json", "README.md"} and not hub.deleted()

    changed = {**new_records(1, start=30)[0], "video_id": "new003"}
    add_items(bundle, write_catalog_parquet(tmp_path / "changed.parquet", [changed]), update=True,
              show_progress_bar=False)
    push_bundle(bundle, REPO, api=hub)
    assert hub.deleted() == {"tombstones-000002.json"} and "tombstones-000003.json" in hub.uploaded()
    assert same_as_local(hub, bundle)

    compact_bundle(bundle)
    push_bundle(bundle, REPO, api=hub)
    assert {path for path in hub.deleted() if not path.startswith("segments/")} == {"tombstones-000003.json"}
    assert "thumbnail_encoder.safetensors" not in hub.uploaded() and "catalog.parquet" in hub.uploaded()
    assert same_as_local(hub, bundle)


def test_push_command_reports_the_bytes(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    hub = FakeHub()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: hub)
    assert train_main(["push", REPO, "--bundle", str(bundle)]) == 0
    assert f"Pushed {bundle} to {REPO}: " in capsys.readouterr().out
    add_items(bundle, write_catalog_parquet(tmp_path / "new.parquet", new_records(8)), show_progress_bar=False)
    assert train_main(["push", REPO, "--bundle", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "8 changed files (" in out and " MB of " in out
    assert train_main(["push", REPO, "--bundle", str(bundle)]) == 0
    assert "already holds" in capsys.readouterr().out
