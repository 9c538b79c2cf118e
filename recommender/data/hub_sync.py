"""What ``train push`` must send: the bundle files whose content the Hub repo does not already have.

After ``train add`` only the new segment, the manifest (and a new tombstone file, the model card)
differ from what the repo holds; everything else is the same bytes. The repo's file listing gives
each file's SHA-256 (LFS files) or git blob id (small files), so comparing them with the local
files needs no download. Files ``train add`` / ``remove`` / ``compact`` made obsolete (old tombstone
files, folded-in segments) are deleted from the repo in the same commit, so a download of the
repo is exactly the bundle. A push to a branch the repo does not have yet creates it from ``main``.

A Hub call that fails (an HTTP error, no connection, offline mode, a file not in the cache) becomes
one :class:`~recommender.errors.BundleError` line that says what went wrong (:func:`hub_error`): the
command line and the app show it instead of a traceback.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError
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


def ensure_branch(api, repo_id: str, revision: str | None) -> None:
    """Create branch ``revision`` (from ``main``) if the repo lacks it: the Hub refuses a commit to a branch
    that does not exist. ``main``, ``None`` and pull-request refs (``refs/pr/N``) are left alone."""
    if revision and revision != "main" and not revision.startswith("refs/"):
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)


def hub_errors() -> tuple[type[BaseException], ...]:
    """What a Hub call raises when the Hub cannot serve it: an HTTP error answer or no connection at all
    (both ``huggingface_hub.errors.HTTPError``), offline mode or a cache miss (``OSError`` kinds)."""
    from huggingface_hub.errors import HTTPError

    return (HTTPError, OSError)


def hub_error(error: BaseException, repo_id: str, revision: str | None, doing: str) -> BundleError:
    """``error`` from a Hub call made to ``doing`` (e.g. "push to") ``repo_id`` at ``revision``, as one clear
    line: which repo, what the Hub said, and what to do about it."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    if isinstance(error, GatedRepoError):
        return BundleError(f"Hub repo {repo_id} is gated: accept its conditions on the Hub and log in "
                           f"(`hf auth login`) to {doing} it.")
    if isinstance(error, RepositoryNotFoundError):
        return BundleError(f"Hub repo {repo_id} does not exist or is private, so you cannot {doing} it "
                           "(log in with `hf auth login`, or pass a token that can read it).")
    if isinstance(error, RevisionNotFoundError):
        return BundleError(f"Hub repo {repo_id} has no revision {revision or 'main'!r} (a branch, tag or commit): cannot "
                           f"{doing} it.")
    if isinstance(error, RemoteEntryNotFoundError):
        return BundleError(f"Hub repo {where} lacks a file needed to {doing} it: {_one_line(error)}")
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code
        said = _one_line(error.server_message or error.response.reason_phrase or error)
        hint = " Check your token (`hf auth login`, or pass one)." if status in (401, 403) else ""
        return BundleError(f"The Hub answered HTTP {status} when asked to {doing} {where}: {said}.{hint}")
    if isinstance(error, OfflineModeIsEnabled):
        return BundleError(f"Cannot {doing} {where}: offline mode is on (HF_HUB_OFFLINE); unset it to reach the Hub.")
    if isinstance(error, IncompleteSnapshotError):  # "... is incomplete: 1 file(s) are missing (text.faiss). ..."
        missing = _one_line(error).split(" is incomplete: ")[-1].split(". ")[0]
        return BundleError(f"Cannot {doing} {where}: the local Hub cache holds only part of it ({missing}) and the "
                           "Hub cannot be reached to fetch the rest.")
    if isinstance(error, LocalEntryNotFoundError):
        if isinstance(error.__cause__, HTTPError):  # the Hub failed (an answer or none), and the cache cannot stand in
            return BundleError(f"{hub_error(error.__cause__, repo_id, revision, doing)} It is not in the local Hub "
                               "cache either.")
        return BundleError(f"Cannot {doing} {where}: it is not in the local Hub cache and the Hub cannot be reached "
                           "(offline, or no network).")
    if isinstance(error, HTTPError):  # no answer at all: refused, timed out, DNS
        return BundleError(f"Cannot reach the Hub at {constants.ENDPOINT} to {doing} {where}: {_one_line(error)}.")
    return BundleError(f"Cannot {doing} {where}: {_one_line(error)}.")


def _one_line(message: object) -> str:
    """``message`` with its lines joined and the trailing full stop dropped, for a one-line error."""
    return " ".join(str(message).split()).rstrip(".") or "no details"
