"""A hard memory limit on a child process tree, enforced by the kernel's memory cgroup (v1 or v2).

Peak RSS overstates what a build needs: the pages of memory-mapped files (a catalog's Arrow cache,
vector shards) count in it, yet the kernel drops them whenever memory runs short. The honest test of
"fits in N GiB" is to run the build in a memory cgroup of N GiB: page cache is reclaimed at the limit,
and only memory that cannot be reclaimed (anonymous, shared memory such as Ray's object store) gets
the tree OOM-killed. The build passes if it finishes with no OOM kill.

Creating a cgroup needs write access to the memory controller (root, or a delegated subtree).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

CGROUP_ROOT = Path("/sys/fs/cgroup")


class CgroupUnavailable(RuntimeError):
    """No writable memory cgroup controller on this machine."""


@dataclass(frozen=True)
class CgroupReport:
    """What the kernel recorded for one limited run."""

    limit_mib: float
    peak_charged_mib: float  # everything charged to the group at its peak, reclaimable page cache included
    oom_kills: int
    peak_unreclaimable_mib: float = 0.0  # anonymous + shared memory at its highest sample (see :meth:`MemoryCgroup.sample`)


def parse_size(text: str) -> int:
    """Bytes from ``3GiB``, ``512MiB``, ``3G`` or a plain byte count."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    stripped = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if stripped and stripped[-1] in units:
            value = float(stripped[:-1]) * units[stripped[-1]]
        else:
            value = float(stripped)
    except ValueError:
        raise ValueError(f"not a memory size: {text!r} (try 3GiB or 512MiB)") from None
    if value < 2**20:
        raise ValueError(f"memory limit {text!r} is under 1 MiB")
    return int(value)


def _controller() -> tuple[Path, int]:
    """(folder new groups go under, cgroup version) of a writable memory controller."""
    v1 = CGROUP_ROOT / "memory"
    if (v1 / "memory.limit_in_bytes").is_file() and os.access(v1, os.W_OK):
        return v1, 1
    v2_controllers = CGROUP_ROOT / "cgroup.controllers"
    if v2_controllers.is_file() and "memory" in v2_controllers.read_text().split() and os.access(CGROUP_ROOT, os.W_OK):
        return CGROUP_ROOT, 2
    raise CgroupUnavailable("no writable memory cgroup controller under /sys/fs/cgroup (run as root, or drop "
                            "--memory-limit)")


class MemoryCgroup:
    """A fresh memory cgroup with a hard limit; :meth:`command` runs a command inside it.

    The command joins the group before it runs a line of its own, and everything it starts (Ray's
    GCS, raylet and workers) inherits the group.
    """

    def __init__(self, name: str, limit_bytes: int) -> None:
        parent, self.version = _controller()
        self.path = parent / f"{name}-{os.getpid()}"
        self.limit_bytes = limit_bytes
        self.peak_unreclaimable_bytes = 0

    def __enter__(self) -> Self:
        self.path.mkdir()
        if self.version == 1:
            (self.path / "memory.limit_in_bytes").write_text(str(self.limit_bytes))
        else:
            (self.path / "memory.max").write_text(str(self.limit_bytes))
            if (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0")  # swap would hide what the tree needs
        return self

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` behind a shell that moves itself into the group, then ``exec``s it (no ``preexec_fn``,
        which is unsafe in a process with threads)."""
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path), *argv]

    def unreclaimable_bytes(self) -> int:
        """Anonymous + shared memory (tmpfs, ``/dev/shm``: Ray's object store) charged to the group now.

        This is what the limit really bounds: the rest of the charge is page cache the kernel reclaims
        at the limit, so the peak charge says only that the group was full at some point.
        """
        stat = dict(line.split() for line in (self.path / "memory.stat").read_text().splitlines() if line.strip())
        keys = ("total_rss", "total_shmem") if self.version == 1 else ("anon", "shmem")
        return sum(int(stat.get(key, 0)) for key in keys)

    def sample(self) -> None:
        """Record :meth:`unreclaimable_bytes` (the kernel keeps no peak of it: poll while the command runs)."""
        try:
            self.peak_unreclaimable_bytes = max(self.peak_unreclaimable_bytes, self.unreclaimable_bytes())
        except OSError:  # the group is being removed
            pass

    def report(self) -> CgroupReport:
        if self.version == 1:
            peak = int((self.path / "memory.max_usage_in_bytes").read_text())
            events = (self.path / "memory.oom_control").read_text()
        else:
            peak_file = self.path / "memory.peak"  # Linux 5.19+
            peak = int(peak_file.read_text()) if peak_file.exists() else int((self.path / "memory.current").read_text())
            events = (self.path / "memory.events").read_text()
        kills = dict(line.split() for line in events.splitlines() if line.strip()).get("oom_kill", "0")
        return CgroupReport(self.limit_bytes / 2**20, peak / 2**20, int(kills), self.peak_unreclaimable_bytes / 2**20)

    def __exit__(self, *exc: object) -> None:
        """Kill what is left in the group (an orphaned Ray daemon, say), then remove it."""
        for _ in range(50):
            pids = [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.path.rmdir()
