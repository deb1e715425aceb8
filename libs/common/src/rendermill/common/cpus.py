"""How many CPUs this process may keep busy.

FFmpeg and x264 size their thread pools by the cores the process may run on (its CPU
affinity). In a container that is every core of the node, whatever the container's
share: a CPU limit is a cgroup quota, which no affinity shows. A render sized so on a
16-core node runs 24 encoder threads and 16 decoder threads, and each holds pictures of
its own. The renderer therefore sizes its threads by :func:`usable`, or by what it is
told (``RENDERMILL_CPUS``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

# Where cgroup file systems are mounted, and which cgroups this process belongs to.
CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMBERSHIP = Path("/proc/self/cgroup")

_Reader = Callable[[Path], float | None]


def usable(*, root: Path = CGROUP_ROOT, membership: Path = MEMBERSHIP) -> int:
    """The CPUs this process may keep busy: those it may run on, no more than a cgroup
    CPU quota grants (rounded up: 1.5 CPUs is 2 threads' worth). At least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity, no cgroups
        return os.cpu_count() or 1
    granted = quota(root=root, membership=membership)
    if granted is not None:
        count = min(count, math.ceil(granted))
    return max(1, count)


def quota(*, root: Path = CGROUP_ROOT, membership: Path = MEMBERSHIP) -> float | None:
    """The CPUs granted by the tightest cgroup CPU quota over this process (cgroup v2's
    ``cpu.max``, v1's ``cpu.cfs_quota_us``), in this cgroup or any above it; None
    when there is none or the files cannot be read."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    found: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            # v2, mounted at the root (unified) or beside v1's (hybrid).
            for mount in (root, root / "unified"):
                found += _quotas(mount, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in (root / controllers, root / "cpu"):
                found += _quotas(mount, path, _v1_quota)
    return min(found) if found else None


def _quotas(mount: Path, path: str, read: _Reader) -> list[float]:
    """The quotas set on ``path`` and each cgroup above it inside ``mount``. A container
    whose cgroup is the mount's root (no cgroup namespace, the host's path in
    /proc/self/cgroup) is covered by the mount itself."""
    out: list[float] = []
    seen: set[Path] = set()
    here = mount / path.lstrip("/")
    for directory in (here, *here.parents, mount):
        if directory in seen or not directory.is_relative_to(mount):
            continue
        seen.add(directory)
        value = read(directory)
        if value is not None:
            out.append(value)
    return out


def _v2_quota(directory: Path) -> float | None:
    # "max 100000" (no quota) or "200000 100000": microseconds of CPU per period.
    text = _read(directory / "cpu.max")
    if text is None:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_quota(directory: Path) -> float | None:
    limit = _read(directory / "cpu.cfs_quota_us")
    period = _read(directory / "cpu.cfs_period_us")
    if limit is None or period is None:
        return None
    return _ratio(limit, period)  # -1: no quota


def _ratio(limit: str, period: str) -> float | None:
    try:
        a, b = int(limit), int(period)
    except ValueError:
        return None
    return a / b if a > 0 and b > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
