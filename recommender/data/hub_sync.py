"""What ``train push`` must send: the bundle files whose content the Hub repo does not already have.

After ``train add`` only the new segment, the manifest (and a new tombstone file, the model card)
differ from what the repo holds; everything else is the same bytes. The repo's file listing gives
each file's SHA-256 (LFS files) or git blob id (small files), so comparing them with the local
files needs no download. Files ``train add`` / ``remove`` / ``compact`` made obsolete (old tombstone
files, folded-in segments) are deleted from the repo in the same commit, so a download of the
repo is exactly the bundle.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .bundle import sha256_of

#: Remote paths a push may delete when they are no longer in the local bundle: live-update leftovers.
OBSOLETE = re.compile(r"^(segments/.+|tombstones-\d+\.json)$")


@dataclass(frozen=True)
class PushPlan:
    """Files to upload (with sizes), remote files to delete, and files already on the Hub."""

    upload: dict[str, int]
    delete: list[str]
    unchanged: dict[str, int]

    @property
    def upload_bytes(self) -> int:
        return sum(self.upload.values())

    @property
    def bundle_bytes(self) -> int:
        """Size of the whole local bundle: what uploading everything would send."""
        return self.upload_bytes + sum(self.unchanged.values())


def local_files(folder: Path) -> dict[str, Path]:
    """The bundle's files by repo path, without hidden files and unfinished ``.partial`` work."""
    folder = Path(folder)
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") or part.endswith(".partial") for part in relative.parts):
            files[relative.as_posix()] = path
    return files


def git_blob_id(path: Path) -> str:
    """The git object id of a file, as the Hub reports it for files not stored in LFS."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def remote_files(api, repo_id: str, revision: str | None = None) -> dict:
    """The repo's files (``RepoFile`` by path); empty for a repo or branch with no commit yet."""
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        entries = api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="model")
        return {entry.path: entry for entry in entries if hasattr(entry, "blob_id")}
    except (RevisionNotFoundError, EntryNotFoundError):
        return {}


def same_content(path: Path, remote) -> bool:
    """Whether the remote file (a ``RepoFile``) holds exactly the local file's bytes."""
    if remote.size != path.stat().st_size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == sha256_of(path)
    return remote.blob_id == git_blob_id(path)


def plan_push(api, folder: Path, repo_id: str, revision: str | None = None) -> PushPlan:
    """Compare the local bundle with the repo: what to upload, what to delete, what is there already."""
    local, remote = local_files(folder), remote_files(api, repo_id, revision)
    upload, unchanged = {}, {}
    for name, path in local.items():
        (unchanged if name in remote and same_content(path, remote[name]) else upload)[name] = path.stat().st_size
    delete = sorted(name for name in remote if name not in local and OBSOLETE.match(name))
    return PushPlan(upload, delete, unchanged)
