"""How many threads a render's decoders, scalers and encoder run.

Left to themselves, FFmpeg's decoders take a thread per core plus one (up to 16), x264
one and a half per core and swscale one per core, counting every core the process may
run on; in a container without a CPU limit, every core of the node. Each decoder and
encoder thread holds pictures of its own, so a render's memory grew with the machine it
ran on, not with its work: a 1080p render of a 4K H.264 phone clip peaked at about 400
MB with the threads of 2 cores and 1.16 GB with those of 16 (bench/phone.py, README).

A render is given a number of CPUs instead (``Threads.of``): the setting, or those the
process may keep busy (its affinity within its cgroup quota, ``rendermill.common.cpus``).
Its encoder and scalers get FFmpeg's and x264's own counts for that many cores; each
decoder also no more threads than keep DECODE_PIXELS_PER_CPU of pictures in flight per
CPU, which leaves 1080p sources as FFmpeg would on 2 cores (3 threads) and gives a 4K
source 2. A render's memory so grows with the CPUs it is given, not with the machine.

Imported before numpy: the engine does no linear algebra, so numpy's OpenBLAS gets one
thread instead of one per core, which would only spin (0.5% of a render's CPU) and hold
buffers. An explicit OPENBLAS_NUM_THREADS is left alone.
"""

from __future__ import annotations

import dataclasses
import math
import os

from rendermill.common import cpus as cpu_count

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Pictures a decoder's frame threads may hold in flight, per CPU the render is given, in
# pixels: one and a half 1080p pictures (1920 x 1088 as coded). On 2 CPUs 1080p sources
# get FFmpeg's own 3 threads and a 4K source 2, which against FFmpeg's 3 saved 22 MB
# (H.264) and 45 MB (HEVC Main 10) and was as fast; a render given more CPUs may hold
# more, as its encoder does.
DECODE_PIXELS_PER_CPU = 3 * 1920 * 1088 // 2
# FFmpeg's own ceiling for an automatic decoder thread count.
MAX_DECODER_THREADS = 16


@dataclasses.dataclass(frozen=True, slots=True)
class Threads:
    """The thread counts of a render given ``cpus`` CPUs."""

    cpus: int

    @classmethod
    def of(cls, cpus: float = 0) -> Threads:
        """For ``cpus`` CPUs (a fraction counts as a whole one), or those this process
        may keep busy when ``cpus`` is 0."""
        if cpus < 0:
            raise ValueError(f"cpus must be 0 (all usable) or more, not {cpus}")
        return cls(max(1, math.ceil(cpus)) if cpus else cpu_count.usable())

    def decoder(self, width: int, height: int) -> int:
        """Threads for decoding pictures of ``width`` x ``height``: FFmpeg's automatic
        count (one more than the CPUs, one on a single CPU), no more than keep
        DECODE_PIXELS_PER_CPU of pictures per CPU in flight, and at least 2 on more
        than one CPU."""
        if self.cpus == 1:
            return 1
        fit = self.cpus * DECODE_PIXELS_PER_CPU // max(1, width * height)
        return max(2, min(self.cpus + 1, MAX_DECODER_THREADS, fit))

    @property
    def x264(self) -> int:
        """x264's frame threads: its automatic count, one and a half per CPU."""
        return max(1, self.cpus * 3 // 2)

    @property
    def per_cpu(self) -> int:
        """One thread per CPU: swscale, libvpx and x264's slice threads."""
        return self.cpus
