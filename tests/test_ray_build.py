"""The Ray Data build path gives the in-process path's vectors; serving never imports Ray."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender.data.bundle import FILES, MANIFEST
from recommender.data.live import BundleParts
from train.build import build_bundle
from train.embedding import EmbeddingConfig
from train.trainer import TrainingConfig

from .conftest import TEST_ENCODER
from .synthetic import catalog_records, new_records, write_catalog_parquet

ROWS = 300


@pytest.fixture(scope="module")
def larger_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred rows: the synthetic catalog and more videos in its channels' styles."""
    return write_catalog_parquet(tmp_path_factory.mktemp("ray") / "catalog.parquet",
                                 catalog_records() + new_records(ROWS - 32))


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def vectors(folder: Path, modality: str) -> np.ndarray:
    manifest = json.loads((folder / MANIFEST).read_text())
    return np.asarray(BundleParts(folder, manifest).vectors(modality, manifest["count"]))


def _live_title_models() -> int:
    from sentence_transformers import SentenceTransformer

    gc.collect()
    return sum(isinstance(thing, SentenceTransformer) for thing in gc.get_objects())


def test_ray_build_gives_the_in_process_vectors(tmp_path: Path, larger_catalog: Path, text_model: Path,
                                                 local_ray, monkeypatch: pytest.MonkeyPatch) -> None:
    import train.distributed

    common = {"text_model": str(text_model), "encoder_config": TEST_ENCODER, "show_progress_bar": False}
    embed_on_ray, models_held_while_on_ray = train.distributed.embed_on_ray, []

    def counting_embed_on_ray(*args, **kwargs):
        models_held_while_on_ray.append(_live_title_models())
        return embed_on_ray(*args, **kwargs)

    monkeypatch.setattr(train.distributed, "embed_on_ray", counting_embed_on_ray)
    models_before = _live_title_models()
    in_process = tmp_path / "in-process"
    build_bundle(larger_catalog, in_process, training=TrainingConfig(epochs=1, batch_size=32), **common)
    weights = tmp_path / "encoder.safetensors"  # the same trained encoder for both builds
    weights.write_bytes((in_process / FILES["encoder_weights"]).read_bytes())
    weights.with_suffix(".json").write_text((in_process / FILES["encoder_config"]).read_text())
    on_ray = tmp_path / "ray"
    manifest = build_bundle(larger_catalog, on_ray, encoder_weights=weights,
                            embedding=EmbeddingConfig(ray=True, batch_size=64, shard_rows=128), **common)
    assert models_held_while_on_ray == [models_before]  # the driver let go of its title model; the actors load theirs
    assert manifest["build"]["embedded_on"] == "ray"
    assert [shard["count"] for shard in manifest["vectors"]["text"]["shards"]] == [128, 128, 44]
    assert not (on_ray / ".ray-input").exists()  # the parquet shards Ray read are gone
    assert local_ray.is_initialized()  # a Ray the caller started is left running for the caller
    for modality in ("image", "text"):
        expected, got = vectors(in_process, modality), vectors(on_ray, modality)
        assert got.shape == expected.shape == (ROWS, got.shape[1])
        assert np.abs(got - expected).max() <= 1e-5, modality


class _Rows:
    """An actor pool stage like the encoders': rows in, rows out."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"row": batch["row"]}


def test_shards_stream_to_the_actors_one_at_a_time(tmp_path: Path, local_ray) -> None:
    """Each parquet shard reaches the driver as its own batch, in order. Fused into the actors' operator,
    one task took every shard and nothing came back before the whole catalog was embedded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from train.distributed import shard_rows

    paths = []
    for number in range(6):
        paths.append(tmp_path / f"part-{number:05d}.parquet")
        pq.write_table(pa.table({"row": np.arange(number * 256, (number + 1) * 256)}), paths[-1])
    local_ray.data.DataContext.get_current().execution_options.preserve_order = True
    dataset = shard_rows(paths, readers=1).map_batches(_Rows, batch_size=64, batch_format="numpy", num_cpus=1,
                                                       compute=local_ray.data.ActorPoolStrategy(size=1))
    batches = [batch["row"] for batch in dataset.iter_batches(batch_size=None, batch_format="numpy")]
    assert [len(batch) for batch in batches] == [256] * 6
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(6 * 256))


LOCAL_RAY = """
import os
import time
from pathlib import Path
import ray
from train.distributed import ray_session

def idle_workers():
    # Idle workers of this session's Ray (the raylet is this process's child), not of any other Ray here
    parents, titles = {}, {}
    for folder in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(folder.name)] = int((folder / "stat").read_text().rsplit(")", 1)[1].split()[1])
            titles[int(folder.name)] = (folder / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            pass

    def ours(pid):
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return sum(title.startswith(b"ray::IDLE") and ours(pid) for pid, title in titles.items())

with ray_session():
    print("OBJECT STORE", int(ray.cluster_resources()["object_store_memory"]))
    seen = 0  # ray.init returns before the raylet's first-driver prestart: poll a while, any one seen counts
    for _ in range(20):
        seen = max(seen, idle_workers())
        time.sleep(0.5)
    print("IDLE WORKERS", seen)
print("STILL UP", ray.is_initialized())
"""


def test_a_local_ray_gets_a_small_object_store_no_idle_workers_and_is_shut_down() -> None:
    """Ray would size the object store from the machine's memory and Ray Data would read ahead into it:
    600 MiB of queued shards OOM-killed a 200,000-item build in a 3 GiB memory cgroup. It would also start
    an idle worker per CPU that the build's runtime environment can never use."""
    from train.distributed import LOCAL_OBJECT_STORE_BYTES

    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", LOCAL_RAY], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1], env=environment, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"OBJECT STORE {LOCAL_OBJECT_STORE_BYTES}" in result.stdout
    assert "IDLE WORKERS 0" in result.stdout
    assert "STILL UP False" in result.stdout


SERVE_WITHOUT_RAY = """
import socket
import sys

import app  # the Space's entry point
from recommender import Recommender
from recommender.serving.ui import create_app, launch

recommender = Recommender.load(sys.argv[1])
recommender.recommend(item_id=recommender.catalog.item_ids[0], mode="hybrid", k=3)
demo = create_app(recommender)
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
demo.close()
loaded = sorted(name for name in sys.modules if name == "ray" or name.startswith("ray."))
print("RAY MODULES:", loaded)
assert not loaded, loaded
"""


def test_actors_are_few_and_wide_on_cpus_one_per_gpu() -> None:
    """Every actor holds both models: on CPUs one actor per 4 CPUs runs that many threads, and one CPU
    stays unclaimed for the parquet reads (actors holding every CPU would deadlock them)."""
    from train.distributed import actor_plan

    assert actor_plan(cpus=2, gpus=0) == (1, 2, 1.0)  # this machine: one actor, both cores
    assert actor_plan(cpus=16, gpus=0) == (4, 4, 3.75)
    assert actor_plan(cpus=64, gpus=4) == (4, 1, 1.0)
    assert actor_plan(cpus=2, gpus=0, requested=2) == (2, 1, 0.5)


def test_serving_never_imports_ray(bundle_dir: Path) -> None:
    result = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_RAY, str(bundle_dir)], capture_output=True,
                            text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RAY MODULES: []" in result.stdout
