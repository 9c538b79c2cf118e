"""The bundle: one folder with everything serving needs, and its manifest.

Layout (names fixed by :data:`FILES`)::

    manifest.json                  format version, models, dimensions, index types, counts, checksums
    catalog.parquet                item_id, title, image bytes (or a URL / path: see catalog.py), metadata
    thumbnail_encoder.safetensors  autoencoder weights (+ thumbnail_encoder.json, its architecture)
    vectors/image-00000.npy, ...   unit vectors in shards, row i = catalog row i (see vectors.py);
                                   bundles from before shards hold image_vectors.npy / text_vectors.npy
    image.faiss / text.faiss       FAISS indexes over those vectors
    title_head.safetensors         optional: thumbnail features -> predicted title (see title_head.py)

A bundle lives in a local folder or a Hugging Face Hub model repo (pulled with
``snapshot_download``, pushed with one ``create_commit`` of the files that changed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BundleError
from ..search.config import SearchConfig
from .vectors import shard_files

if TYPE_CHECKING:
    from .hub_sync import PushPlan

FORMAT_VERSION = 1
#: A bundle changed by ``train add`` / ``remove`` (appended segments, tombstones: see live.py) is
#: version 2, so code that would ignore those parts refuses it instead of serving removed items.
LIVE_FORMAT_VERSION = 2
READABLE_VERSIONS = (FORMAT_VERSION, LIVE_FORMAT_VERSION)
MANIFEST = "manifest.json"
FILES = {
    "catalog": "catalog.parquet",
    "encoder_weights": "thumbnail_encoder.safetensors",
    "encoder_config": "thumbnail_encoder.json",
    "image_vectors": "image_vectors.npy",
    "text_vectors": "text_vectors.npy",
    "image_index": "image.faiss",
    "text_index": "text.faiss",
}
#: Files a bundle holds when its manifest has a section of the same name.
OPTIONAL_FILES = {
    "title_head": "title_head.safetensors",
}
DEFAULT_BUNDLE_DIR = Path("bundle")
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files(manifest: dict) -> list[str]:
    """Every file this bundle must hold: the fixed ones, the optional parts its manifest declares, the
    vector shards of its ``vectors`` section (which replace the single vector files), the shard files of
    sharded indexes, and the files of its ``live`` section (appended segments and tombstones)."""
    sharded = {FILES["image_vectors"], FILES["text_vectors"]} if manifest.get("vectors") else set()
    return [*(name for name in FILES.values() if name not in sharded),
            *(name for part, name in OPTIONAL_FILES.items() if manifest.get(part)),
            *shard_files(manifest.get("vectors")), *index_shard_files(manifest), *live_files(manifest)]


def index_shard_files(manifest: dict) -> list[str]:
    """The files a sharded index is split into (``train build --index-shards``), named in ``indexes``."""
    return [name for entry in (manifest.get("indexes") or {}).values() for name in entry.get("shard_files") or []]


def live_files(manifest: dict) -> list[str]:
    """Paths (relative to the bundle) that ``train add`` and ``train remove`` declared: see :mod:`.live`."""
    live = manifest.get("live") or {}
    files = [name for segment in live.get("segments", []) for name in segment.get("files", {}).values()]
    return files + ([live["tombstones"]["file"]] if live.get("tombstones") else [])


def write_manifest(folder: Path, manifest: dict, known: dict[str, str] | None = None) -> dict:
    """Add format version and checksums of every bundle file, then write ``manifest.json`` atomically
    (a new file renamed over the old one). ``known`` checksums are taken as given (files a live update
    did not touch) rather than hashed again."""
    folder = Path(folder)
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    known = known or {}
    manifest["files"] = {name: known.get(name) or sha256_of(folder / name) for name in bundle_files(manifest)}
    partial = folder / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=_jsonable))
    os.replace(partial, folder / MANIFEST)
    return manifest


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_manifest(folder: Path, verify: bool = True) -> dict:
    """Read and check a bundle's manifest: version, presence and (with ``verify``) checksums of all files."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder} is not a bundle: {MANIFEST} is missing. Build one with `python -m train build`.")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not valid JSON ({error}). Rebuild the bundle.") from None
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise BundleError(f"{path} has format version {version}; this code reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))}. Rebuild the bundle with this version.")
    for name in bundle_files(manifest):
        if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{path} declares a file outside the bundle folder: {name!r}. Rebuild the bundle.")
        file = folder / name
        if not file.is_file():
            raise BundleError(f"Bundle file {file} is missing. Rebuild the bundle with `python -m train build`.")
        expected = manifest.get("files", {}).get(name)
        if verify and not expected:
            raise BundleError(f"{path} has no checksum for {name}, so {file} cannot be verified. Rebuild the "
                              "bundle (or load it with verify=False if you trust the files).")
        if verify and sha256_of(file) != expected:
            raise BundleError(f"Bundle file {file} is corrupted: its checksum does not match {MANIFEST}. "
                              "Download or rebuild the bundle again.")
    return manifest


def read_search_config(manifest: dict, folder: Path | None = None) -> SearchConfig:
    """The bundle's :class:`SearchConfig` (its ``search`` section), checked.

    Bundles written before that section existed kept hybrid's defaults in ``fusion``
    (``alpha``, ``method``); they are read from there.
    """
    where = Path(folder) / MANIFEST if folder is not None else MANIFEST
    if "search" in manifest:
        values = manifest["search"]
    else:
        legacy = manifest.get("fusion") or {}
        values = {key: legacy[old] for key, old in (("alpha", "alpha"), ("fusion", "method")) if old in legacy}
    if not isinstance(values, dict):
        raise BundleError(f"{where}: 'search' must be an object of settings, got {values!r}. Rebuild the bundle.")
    try:
        return SearchConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise BundleError(f"{where} has bad search settings: {error} Fix the file or rebuild the bundle.") from None


def is_repo_id(source: str | Path) -> bool:
    """``owner/name`` that is not an existing local path."""
    return not Path(source).exists() and bool(_REPO_ID.match(str(source)))


def resolve_bundle(source: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """A local folder as is, or a Hub model repo id downloaded (or found in the local cache)."""
    if Path(source).is_dir():
        return Path(source)
    if not is_repo_id(source):
        raise BundleError(f"Bundle {source} is neither a local folder nor a Hub repo id (owner/name).")
    from huggingface_hub import snapshot_download

    from .hub_sync import hub_error, hub_errors

    try:
        return Path(snapshot_download(repo_id=str(source), revision=revision, repo_type="model", cache_dir=cache_dir))
    except hub_errors() as error:
        raise hub_error(error, str(source), revision, "download the bundle from") from None


def model_card(manifest: dict, repo_id: str) -> str:
    """README.md for the Hub repo: what is inside, how to load it, and its evaluation summary."""
    text_model = manifest.get("text_model", {})
    source = manifest.get("source", {})
    lines = [
        "---",
        "library_name: faiss",
        "tags: [video-recommendation, autoencoder, sentence-transformers, faiss]",
        # Hub metadata may only name Hub repos: a local dataset or model path is left out.
        f"datasets: [{source.get('dataset')}]" if is_repo_id(source.get("dataset", "")) else "datasets: []",
        f"base_model: {text_model.get('name')}" if is_repo_id(text_model.get("name", "")) else "",
        "---",
        "",
        f"# {repo_id}",
        "",
        "A recommendation bundle for the content-based video recommender: a catalog of "
        f"{_live_items(manifest)} videos, a thumbnail encoder (denoising autoencoder trained from "
        "scratch on this catalog), title and thumbnail vectors, and their FAISS indexes.",
        "",
        "| part | value |",
        "|---|---|",
        f"| source dataset | `{source.get('dataset')}` |",
        f"| text model | `{text_model.get('name')}` (dim {text_model.get('dimension')}) |",
        f"| image encoder | {manifest.get('image_encoder', {}).get('architecture')} "
        f"(dim {manifest.get('image_encoder', {}).get('dimension')}, "
        f"{manifest.get('image_encoder', {}).get('parameters', 0):,} parameters) |",
        *([f"| title head | predicts titles from thumbnail features: kernel ridge, "
            f"{manifest['title_head'].get('random_features', 0):,} random features, cross-fitted over "
            f"{manifest['title_head'].get('folds')} folds (image vectors {manifest['title_head'].get('dimension')}-d) |"]
          if manifest.get("title_head") else []),
        f"| indexes | text: {manifest.get('indexes', {}).get('text', {}).get('type')}, "
        f"image: {manifest.get('indexes', {}).get('image', {}).get('type')} |",
        f"| hybrid weight alpha | {read_search_config(manifest).alpha} |",
        "",
        "## Use",
        "",
        "```python",
        "from recommender import Recommender",
        "",
        f'recommender = Recommender.load("{repo_id}")',
        'print(recommender.recommend(title="how to make a paper plane", mode="hybrid", k=5))',
        "```",
    ]
    evaluation = manifest.get("evaluation")
    if evaluation and evaluation.get("summary"):
        lines += ["", "## Evaluation", "", evaluation["summary"]]
    return "\n".join(lines) + "\n"


def push_bundle(folder: Path, repo_id: str, private: bool = False, token: str | None = None,
                revision: str | None = None, api=None) -> tuple[str | None, PushPlan]:
    """Upload a bundle to a Hub model repo with a generated model card, in one commit: only the files
    the repo does not already hold (see :mod:`.hub_sync`), and deleting the ones live updates made
    obsolete. Returns the commit URL (``None`` when the repo already held this bundle) and the plan.
    ``api`` replaces ``HfApi(token=token)`` (tests have no Hub)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    from .hub_sync import ensure_branch, hub_error, hub_errors, plan_push

    manifest = read_manifest(folder, verify=True)
    (Path(folder) / "README.md").write_text(model_card(manifest, repo_id))
    api = api or HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        ensure_branch(api, repo_id, revision)
        plan = plan_push(api, Path(folder), repo_id, revision)
        if not plan.upload and not plan.delete:
            return None, plan
        operations = [*(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(folder) / name))
                        for name in plan.upload), *(CommitOperationDelete(path_in_repo=name) for name in plan.delete)]
        commit = api.create_commit(repo_id, operations, repo_type="model", revision=revision,
                                   commit_message=f"Upload recommendation bundle ({_live_items(manifest)} items, "
                                                  f"{len(plan.upload)} files changed)")
    except hub_errors() as error:
        raise hub_error(error, repo_id, revision, "push to") from None
    return str(commit), plan


def _live_items(manifest: dict) -> object:
    """Items a query can find: the manifest's rows minus its tombstoned ones."""
    removed = ((manifest.get("live") or {}).get("tombstones") or {}).get("count", 0)
    return manifest["count"] - removed if isinstance(manifest.get("count"), int) else "?"
