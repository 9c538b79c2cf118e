"""Session fixtures: a synthetic catalog, a tiny text model, a bundle built from them (all offline), the bundle
loaded, and the real app serving it on a local port (one server for every test file that calls the app)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The test models are tiny: extra OpenMP threads only add synchronisation, and on a busy 2-core
# machine their spin-waits made each torch call ~40x slower (350 ms instead of 10 ms per query).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from recommender.encoders.autoencoder import EncoderConfig  # noqa: E402

from .synthetic import write_catalog_parquet, write_tiny_text_model  # noqa: E402

if TYPE_CHECKING:
    from gradio_client import Client

    from recommender import Recommender

#: Small and fast, same architecture family as the default.
TEST_ENCODER = EncoderConfig(width=64, height=36, channels=(8, 16, 32), latent_channels=16,
                             decoder_channels=(16, 8, 4))


@pytest.fixture(scope="session", autouse=True)
def index_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Joined HNSW indexes of live bundles are cached on disk: the tests' in a folder of their own, not ~/.cache."""
    os.environ.setdefault("RECOMMENDER_INDEX_CACHE", str(tmp_path_factory.mktemp("index-cache")))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def catalog_parquet(data_dir: Path) -> Path:
    return write_catalog_parquet(data_dir / "catalog.parquet")


@pytest.fixture(scope="session")
def text_model(data_dir: Path) -> Path:
    return write_tiny_text_model(data_dir / "text-model")


@pytest.fixture(scope="session")
def bundle_dir(data_dir: Path, catalog_parquet: Path, text_model: Path) -> Path:
    """A complete bundle built by the real pipeline (2 quick epochs)."""
    from train.build import build_bundle
    from train.trainer import TrainingConfig

    output = data_dir / "bundle"
    build_bundle(catalog_parquet, output, text_model=str(text_model), encoder_config=TEST_ENCODER,
                 training=TrainingConfig(epochs=2, batch_size=8), show_progress_bar=False)
    return output


@pytest.fixture
def bundle(tmp_path: Path, bundle_dir: Path) -> Path:
    """A private copy of the session bundle, for a test that changes or damages it (``bundle_dir`` is shared)."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def recommender(bundle_dir: Path, text_model: Path) -> Recommender:
    """The session bundle loaded once; tests only query it (a test that changes settings loads its own)."""
    from recommender import Recommender

    return Recommender.load(bundle_dir, text_model=str(text_model))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(recommender: Recommender) -> Iterator[str]:
    """The real app on a free local port, closed afterwards."""
    from recommender.serving.ui import create_app, launch

    demo = create_app(recommender)
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="session")
def url(recommender: Recommender) -> Iterator[str]:
    """The app serving ``recommender``: one server for the API, controls and browser tests."""
    with serve(recommender) as address:
        yield address


@pytest.fixture(scope="session")
def client(url: str, tmp_path_factory: pytest.TempPathFactory) -> Client:
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@dataclass(frozen=True)
class HubCache:
    """A Hugging Face Hub cache holding ``bundle_dir`` as model repo ``repo_id`` at two commits:
    ``main_commit`` (what ``refs/main`` points to) and ``old_commit`` (reachable only by its hash,
    identical but for a default alpha of 0.2 in its manifest, so tests can tell which one loaded)."""

    cache_dir: Path
    repo_id: str
    main_commit: str
    old_commit: str


def write_hub_snapshot(cache_dir: Path, repo_id: str, folder: Path, commit: str, branch: str | None = None) -> Path:
    """Lay ``folder`` out as ``snapshot_download`` leaves a model repo commit in the cache (huggingface_hub 2.x):
    ``models--owner--name/blobs/<sha256>``, ``snapshots/<commit>/<file>`` symlinked to its blob,
    ``trees/<commit>.json`` listing the commit's files and, for a branch, ``refs/<branch>`` holding the hash."""
    storage = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    files = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        blob = storage / "blobs" / sha256
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        git_blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        files[relative] = {"size": len(data), "blob_id": git_blob, "lfs_sha256": sha256, "lfs_size": len(data)}
    (storage / "trees").mkdir(exist_ok=True)
    (storage / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": files}))
    if branch is not None:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / branch).write_text(commit)  # no trailing newline, like huggingface_hub writes it
    return snapshot


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> HubCache:
    """The session bundle published (offline) in a fresh Hub cache; point ``HF_HUB_CACHE`` at ``cache_dir``."""
    root = tmp_path_factory.mktemp("hub")
    cache = HubCache(root / "cache", "someuser/somebundle", "a" * 40, "0123456789abcdef" * 2 + "01234567")
    old = root / "old-bundle"
    shutil.copytree(bundle_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["search"]["alpha"] = 0.2
    (old / "manifest.json").write_text(json.dumps(manifest))
    write_hub_snapshot(cache.cache_dir, cache.repo_id, old, cache.old_commit)
    write_hub_snapshot(cache.cache_dir, cache.repo_id, bundle_dir, cache.main_commit, branch="main")
    return cache
