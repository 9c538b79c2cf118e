"""The scale benchmark's parts: the perturbed catalog, the process-tree memory probe, the build harness, the cost model."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from benchmarks import memory_cgroup as mc
from benchmarks import perturbed_catalog as pc
from benchmarks import scale_build as sb


@pytest.fixture(scope="module")
def spec(catalog_parquet: Path) -> pc.CatalogSpec:
    return pc.CatalogSpec(items=45, source=str(catalog_parquet), seed=3, shard_size=20, by_reference=True)


@pytest.fixture(scope="module")
def generated(spec: pc.CatalogSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("perturbed")
    pc.generate(spec, folder, workers=2)
    return folder


def test_catalog_is_sharded_perturbed_and_keeps_the_source_channel(generated: Path, catalog_parquet: Path) -> None:
    shards = sorted((generated / pc.BYTES_DIR).glob("*.parquet"))
    assert [pq.ParquetFile(s).metadata.num_rows for s in shards] == [20, 20, 5]
    table = pq.read_table(generated / pc.BYTES_DIR)
    source = {row["video_id"]: row for row in pq.read_table(catalog_parquet).to_pylist()}
    rows = table.to_pylist()
    assert len({row["video_id"] for row in rows}) == 45
    for row in rows:
        original = source[row["source_video_id"]]
        assert row["channel"] == original["channel"]
        assert row["title"] != original["title"]  # a suffix at least
        assert row["image"]["bytes"] != original["image"]["bytes"]
        with Image.open(io.BytesIO(row["image"]["bytes"])) as image:
            assert image.format == "JPEG"
            assert image.width <= 480 and image.height <= 360  # a crop of the 480x360 source
    # the same source video made into several items gives several different images
    repeats = [row["image"]["bytes"] for row in rows if row["source_video_id"] == rows[0]["source_video_id"]]
    assert len(repeats) >= 2 and len(set(repeats)) == len(repeats)


def test_by_reference_shards_name_files_holding_the_same_bytes(generated: Path) -> None:
    by_bytes = pq.read_table(generated / pc.BYTES_DIR).to_pylist()
    by_reference = pq.read_table(generated / pc.REFERENCE_DIR).to_pylist()
    assert [row["video_id"] for row in by_reference] == [row["video_id"] for row in by_bytes]
    for reference, held in zip(by_reference, by_bytes):
        assert isinstance(reference["image"], str)
        assert Path(reference["image"]).read_bytes() == held["image"]["bytes"]


def test_catalog_is_deterministic_reused_and_never_mixed(spec: pc.CatalogSpec, generated: Path,
                                                         tmp_path: Path) -> None:
    again = tmp_path / "again"
    pc.generate(spec, again, workers=1, upto=20)  # only the first shard
    assert [s.name for s in (again / pc.BYTES_DIR).glob("*.parquet")] == ["part-00000.parquet"]
    first = "part-00000.parquet"
    assert (again / pc.BYTES_DIR / first).read_bytes() == (generated / pc.BYTES_DIR / first).read_bytes()
    written = (again / pc.BYTES_DIR / first).stat().st_mtime_ns
    pc.generate(spec, again, workers=1)  # completes the catalog, keeps what was there
    assert (again / pc.BYTES_DIR / first).stat().st_mtime_ns == written
    assert pq.read_table(again / pc.BYTES_DIR).num_rows == 45
    assert pc.recorded_spec(again) == spec
    with pytest.raises(FileExistsError, match="choose another"):
        pc.generate(pc.CatalogSpec(items=45, source=spec.source, seed=4, shard_size=20), again)


def test_catalog_subset_takes_the_first_rows(generated: Path, tmp_path: Path) -> None:
    subset = sb.catalog_subset(generated / pc.BYTES_DIR, 27, tmp_path / "subset")
    full = pq.read_table(generated / pc.BYTES_DIR).column("video_id").to_pylist()
    assert pq.read_table(subset).column("video_id").to_pylist() == full[:27]
    with pytest.raises(ValueError, match="fewer"):
        sb.catalog_subset(generated / pc.BYTES_DIR, 46, tmp_path / "too-many")


def test_tree_memory_counts_grandchildren(tmp_path: Path) -> None:
    """A parent that allocates nothing, whose grandchild holds 300 MB and spins 1 CPU second: the tree counts both."""
    grandchild = ("import time; block = bytearray(300 * 2**20); block[::4096] = b'x' * len(block[::4096]); "
                  "start = time.process_time()\nwhile time.process_time() - start < 1: pass\ntime.sleep(3)")
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    process = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {parent!r}])"])
    watcher = sb.TreeMemoryPeak(process.pid, interval_s=0.1)
    watcher.start()
    process.wait()
    watcher.stop()
    assert watcher.peak_processes >= 3
    assert watcher.peak_rss_mib >= 300
    assert 300 <= watcher.peak_pss_mib <= watcher.peak_rss_mib
    assert 300 <= watcher.peak_anonymous_mib <= watcher.peak_rss_mib  # the bytearray is anonymous memory
    assert watcher.cpu_s >= 0.9


def _limited_child(code: str, limit_mib: int) -> tuple[int, mc.CgroupReport]:
    try:
        group = mc.MemoryCgroup("test-scale-benchmarks", limit_mib * 2**20)
    except mc.CgroupUnavailable as error:
        pytest.skip(str(error))
    with group:
        returncode = subprocess.run(group.command([sys.executable, "-c", code]), check=False).returncode
        return returncode, group.report()


def test_memory_cgroup_kills_what_holds_too_much_and_spares_mapped_files(tmp_path: Path) -> None:
    """Under a 200 MiB limit: 400 MiB of anonymous memory is OOM-killed, reading a 400 MiB mapped file is not."""
    hog = "block = bytearray(400 * 2**20); block[::4096] = b'x' * len(block[::4096])"
    returncode, report = _limited_child(hog, 200)
    assert returncode != 0 and report.oom_kills >= 1
    assert report.limit_mib == 200 and report.peak_charged_mib <= 200
    big = tmp_path / "big.bin"
    with big.open("wb") as sink:
        for _ in range(40):
            sink.write(os.urandom(10 * 2**20))
    reader = f"import mmap; f = open({str(big)!r}, 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); " \
             "total = sum(m[i] for i in range(0, len(m), 4096))"
    returncode, report = _limited_child(reader, 200)
    assert returncode == 0 and report.oom_kills == 0


def test_memory_cgroup_samples_what_it_cannot_reclaim(tmp_path: Path) -> None:
    """Anonymous memory and a /dev/shm file (as Ray's object store) count as unreclaimable; a mapped file's
    pages count in the charge only."""
    shm = Path("/dev/shm") / f"test-scale-benchmarks-{os.getpid()}"
    holder = (f"import sys; block = bytearray(120 * 2**20); block[::4096] = b'x' * len(block[::4096]); "
              f"open({str(shm)!r}, 'wb').write(b'y' * 60 * 2**20); print('ready', flush=True); sys.stdin.read()")
    big = tmp_path / "big.bin"
    with big.open("wb") as sink:  # written, then dropped from the page cache: the child's reads charge its group
        sink.write(os.urandom(150 * 2**20))
        sink.flush()
        os.fsync(sink.fileno())
        os.posix_fadvise(sink.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    reader = (f"import mmap, sys; f = open({str(big)!r}, 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); "
              "total = sum(m[i] for i in range(0, len(m), 4096)); print('ready', flush=True); sys.stdin.read()")
    try:
        holding, reading = (_sampled_child(code, 400) for code in (holder, reader))
    finally:
        shm.unlink(missing_ok=True)
    assert 180 <= holding.peak_unreclaimable_mib <= holding.peak_charged_mib
    assert reading.peak_unreclaimable_mib < 60 and reading.peak_charged_mib >= 150


def _sampled_child(code: str, limit_mib: int) -> mc.CgroupReport:
    """Run ``code`` in a group, sample the group once the child prints ``ready``, then let it exit."""
    try:
        group = mc.MemoryCgroup("test-scale-benchmarks", limit_mib * 2**20)
    except mc.CgroupUnavailable as error:
        pytest.skip(str(error))
    with group:
        child = subprocess.Popen(group.command([sys.executable, "-c", code]), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        group.sample()
        child.communicate("")
        assert child.returncode == 0
        return group.report()


@pytest.mark.parametrize("text, expected", [("3GiB", 3 * 2**30), ("512MiB", 512 * 2**20), ("2g", 2 * 2**30),
                                            ("1.5G", int(1.5 * 2**30)), ("10485760", 10 * 2**20)])
def test_memory_sizes_parse(text: str, expected: int) -> None:
    assert mc.parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "3 GB of RAM", "12", ""])
def test_bad_memory_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        mc.parse_size(text)


def _run(path: str, items: int, timings: dict[str, float]) -> sb.BuildRun:
    return sb.BuildRun(path, items, wall_s=sum(timings.values()), returncode=0, peak_rss_mib=1.0, peak_pss_mib=1.0,
                       peak_processes=1, timings=timings, count=items)


def test_per_item_costs_leave_fixed_costs_out() -> None:
    """Stage = 20 s start-up + 2 ms per item: two sizes recover the 2 ms; training and index are not per item."""
    runs = [_run("ray", n, {"catalog_s": 0.5e-3 * n, "embedding_s": 20 + 2e-3 * n, "encoder_s": 60.0, "index_s": 1.0})
            for n in (1000, 5000)]
    costs = sb.per_item_costs(runs)
    assert set(costs) == {"catalog_s", "embedding_s"}
    assert costs["embedding_s"] == pytest.approx(2e-3)
    assert costs["catalog_s"] == pytest.approx(0.5e-3)
    assert sb.per_item_costs(runs[:1])["embedding_s"] == pytest.approx(22e-3)  # one size: start-up included


def test_build_hours_scale_with_workers_and_gpus() -> None:
    per_item = {"catalog_s": 1e-3, "embedding_s": 9e-3}
    none = sb.CostAssumptions(index_train_s=0.0, index_add_us_per_vector=0.0, efficiency=1.0)
    one = sb.build_hours(1_000_000, 1, False, per_item, 0.0, none)
    assert one == pytest.approx(1_000_000 * 10e-3 / 3600)
    assert sb.build_hours(1_000_000, 10, False, per_item, 0.0, none) == pytest.approx(one / 10)
    gpu = sb.build_hours(1_000_000, 1, True, per_item, 0.0, none)
    expected = 1_000_000 * (1e-3 / (none.gpu_node_vcpus / none.measured_vcpus) + 9e-3 / none.gpu_speedup) / 3600
    assert gpu == pytest.approx(expected)
    with_index = sb.build_hours(1_000_000, 10, False, per_item, 0.0, sb.CostAssumptions(efficiency=1.0))
    assert with_index > one / 10  # the index is built on one machine whatever the cluster


def test_cost_model_recomputes_from_a_saved_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = [_run("in-process", n, {"embedding_s": 5 + 4e-3 * n, "encoder_s": 30.0}) for n in (100, 300)]
    saved = tmp_path / "runs.json"
    saved.write_text(json.dumps([asdict(r) for r in runs]))
    assert sb.main(["--costs-from", str(saved)]) == 0
    printed = capsys.readouterr().out
    assert "10M | 10 CPU" in printed and "100M | 100 GPU" in printed
    assert "embedding (thumbnails + titles) 4.00 ms" in printed


def test_index_cost_comes_from_the_scale_index_benchmark(tmp_path: Path) -> None:
    measured = tmp_path / "scale_index.json"
    measured.write_text(json.dumps({"vectors": 1_000_000, "text": {"build_s": 30.0}, "image": {"build_s": 50.0}}))
    assumptions = sb.index_assumptions(measured)
    assert assumptions.index_add_us_per_vector == pytest.approx(80.0)
    hours = sb.build_hours(10_000_000, 1, False, {}, 0.0, assumptions)
    assert hours == pytest.approx(800 / 3600)  # 10x the measured index build, nothing else


@pytest.mark.timeout(1800)  # two whole builds in child processes, one starting a local Ray, on 2 shared cores
def test_end_to_end_build_at_a_tiny_size(catalog_parquet: Path, text_model: Path, tmp_path: Path) -> None:
    """The real harness on 24 items: every path this checkout has builds, stages and memory are reported."""
    paths = tuple(p for p in sb.PATHS if p != "ray" or "--ray" in sb.build_flags())
    runs, tables = sb.run([24], str(text_model), tmp_path / "work", tmp_path / "catalog", catalog_parquet, paths,
                          epochs=1, time_budget_s=5.0, workers=1)
    assert [run.path for run in runs] == list(paths)
    for run in runs:
        assert run.ok, Path(run.log).read_text()[-3000:]
        assert run.count == 24
        assert {"catalog_s", "encoder_s", "index_s"} <= set(run.timings)
        assert run.peak_rss_mib > 100  # python + torch at least
    if "ray" in paths:
        ray = next(run for run in runs if run.path == "ray")
        assert ray.peak_processes > 3  # the driver, GCS, raylet and workers were all counted
    table = "\n".join(tables["Scale: end-to-end build of 24 perturbed items"])
    assert "catalog read" in table and "peak RSS of process tree" in table and "failed" not in table
    assert any(title.startswith("Scale: cost model") for title in tables)


def test_a_build_killed_at_its_memory_limit_is_a_failure() -> None:
    within = replace(_run("ray", 1000, {"catalog_s": 1.0}), memory_limit_mib=3072.0, peak_charged_mib=3000.0,
                     oom_kills=0)
    killed = replace(within, oom_kills=2)
    assert within.ok and not killed.ok
    table = "\n".join(sb.stage_table([within, killed]))
    assert "no OOM kill under the 3,072 MiB limit" in table and "2 OOM kill(s) under the 3,072 MiB limit" in table
