"""Shared helpers: timing statistics, result rows, tables, peak memory of processes."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 / p95 / mean in milliseconds of a list of durations in seconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1000
    if len(values) == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "mean_ms": float("nan"), "n": 0}
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
            "mean_ms": float(values.mean()), "n": int(len(values))}


def time_each(function: Callable[[object], object], inputs: list, warmup: int = 3) -> list[float]:
    """Call ``function`` on each input (after ``warmup`` untimed calls); the duration of each call."""
    for item in inputs[:warmup]:
        function(item)
    durations = []
    for item in inputs:
        started = time.perf_counter()
        function(item)
        durations.append(time.perf_counter() - started)
    return durations


def median_rate(function: Callable[[], int], repeats: int = 3, min_seconds: float = 0.0) -> float:
    """Median items/second of ``function`` (which returns how many items it processed) over ``repeats`` runs."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = function()
        while time.perf_counter() - started < min_seconds:
            done += function()
        rates.append(done / (time.perf_counter() - started))
    return float(np.median(rates))


def peak_rss_mib(pid: int | None = None) -> float | None:
    """Peak resident memory (VmHWM) of a live process, in MiB (Linux); ``None`` where unknown."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    try:
        for line in path.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Row:
    """One line of the main table: a measurement of ours, of the baseline where it has one, and their ratio."""

    section: str
    metric: str
    ours: float | str | None
    baseline: float | str | None = None
    unit: str = ""
    note: str = ""
    better: str = ""  # "lower" or "higher": how the ratio is read

    def ratio(self) -> str:
        if not isinstance(self.ours, (int, float)) or not isinstance(self.baseline, (int, float)):
            return ""
        if self.ours == 0 or self.baseline == 0:
            return ""
        if self.better == "lower":
            return f"{self.baseline / self.ours:.1f}x less" if self.baseline >= self.ours else \
                f"{self.ours / self.baseline:.1f}x more"
        if self.better == "higher":
            return f"{self.ours / self.baseline:.1f}x more" if self.ours >= self.baseline else \
                f"{self.baseline / self.ours:.1f}x less"
        return f"{self.ours / self.baseline:.2f}"


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    tables: dict[str, list[str]] = field(default_factory=dict)  # extra Markdown tables, by title
    raw: dict[str, object] = field(default_factory=dict)  # everything measured, for the JSON file

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)


def fmt(value: float | str | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) or (abs(value) >= 1000 and float(value).is_integer()):
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return f"{text} {unit}".strip()


def markdown_table(rows: list[Row]) -> list[str]:
    lines = ["| section | metric | ours | baseline | ratio | note |", "|---|---|---:|---:|---|---|"]
    for row in rows:
        lines.append(f"| {row.section} | {row.metric} | {fmt(row.ours, row.unit)} | {fmt(row.baseline, row.unit)} | "
                     f"{row.ratio()} | {row.note} |")
    return lines


def free_port() -> int:
    """A loopback port nobody listens on right now (for a server this benchmark starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, grace: float = 20.0) -> None:
    """Terminate a server this benchmark started; kill it if it has not exited after ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
