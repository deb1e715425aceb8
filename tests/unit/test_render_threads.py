"""How many CPUs a process may use (affinity and cgroup quotas) and the thread counts a
render takes from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rendermill.common import cpus
from rendermill.renderer.engine.threads import Threads


def _cgroups(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    member = tmp_path / "self-cgroup"
    member.write_text(membership)
    return root, member


def test_cgroup_v2_quota_of_the_process_or_any_cgroup_above_it(tmp_path: Path) -> None:
    root, member = _cgroups(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {
            "cpu.max": "max 100000\n",
            "kubepods/pod1/cpu.max": "250000 100000\n",
            "kubepods/pod1/ctr/cpu.max": "max 100000\n",
        },
    )
    assert cpus.quota(root=root, membership=member) == 2.5


def test_cgroup_v1_quota_and_the_mount_root_of_a_container(tmp_path: Path) -> None:
    # Without a cgroup namespace the container's own cgroup is the mount's root, while
    # /proc/self/cgroup names the host's path, which is not there.
    root, member = _cgroups(
        tmp_path,
        "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n",
        {"cpu,cpuacct/cpu.cfs_quota_us": "150000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
    )
    assert cpus.quota(root=root, membership=member) == 1.5


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"cpu.max": "max 100000\n"},
        {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
        {"cpu.max": "garbage\n"},
    ],
)
def test_no_quota(tmp_path: Path, files: dict[str, str]) -> None:
    root, member = _cgroups(tmp_path, "1:cpu:/\n0::/\n", files)
    assert cpus.quota(root=root, membership=member) is None
    assert cpus.usable(root=root, membership=member) == len(os.sched_getaffinity(0))


def test_usable_cpus_are_the_affinity_within_the_quota_rounded_up(tmp_path: Path) -> None:
    root, member = _cgroups(tmp_path, "0::/\n", {"cpu.max": "50000 100000\n"})
    assert cpus.usable(root=root, membership=member) == 1
    root, member = _cgroups(tmp_path / "big", "0::/\n", {"cpu.max": "6400000 100000\n"})
    assert cpus.usable(root=root, membership=member) == len(os.sched_getaffinity(0))
    assert cpus.usable(membership=tmp_path / "missing") == len(os.sched_getaffinity(0))


def test_threads_of_a_number_of_cpus() -> None:
    assert Threads.of(2).cpus == 2
    assert Threads.of(1.5).cpus == 2
    assert Threads.of(0.25).cpus == 1
    assert Threads.of(0).cpus == cpus.usable()
    with pytest.raises(ValueError, match="cpus"):
        Threads.of(-1)


def test_encoder_and_scaler_threads_are_ffmpegs_own_counts_for_the_cpus() -> None:
    assert [Threads(n).x264 for n in (1, 2, 3, 16)] == [1, 3, 4, 24]
    assert [Threads(n).per_cpu for n in (1, 2, 16)] == [1, 2, 16]


def test_decoder_threads_keep_few_large_pictures_in_flight_per_cpu() -> None:
    hd, uhd, sd = (1920, 1080), (3840, 2160), (854, 480)
    # As FFmpeg's automatic count on 2 CPUs (3), except for 4K pictures.
    assert Threads(2).decoder(*hd) == 3
    assert Threads(2).decoder(*uhd) == 2
    assert Threads(1).decoder(*uhd) == 1
    assert Threads(2).decoder(8192, 8192) == 2
    # More CPUs may hold more pictures, up to FFmpeg's 16 threads.
    assert Threads(4).decoder(*uhd) == 2
    assert Threads(8).decoder(*uhd) == 3
    assert Threads(16).decoder(*uhd) == 6
    assert Threads(16).decoder(*hd) == 16
    assert Threads(16).decoder(*sd) == 16
    assert Threads(4).decoder(0, 0) == 5
