"""compose.py's timeline rendered with MoviePy 2.x: the optional third contender.

    python bench/moviepy_compose.py CLIP_A CLIP_B OVERLAY_PNG MUSIC OUT.mp4 --ffmpeg FFMPEG

The same timeline as compose.py's other contenders: clip A from 0 to ``--cut`` s, clip B
(from its ``--trim-b`` s) from ``--cut`` to ``--duration`` s, the PNG with its alpha as
mask at ``--overlay-x``/``--overlay-y`` from ``--overlay-start`` to ``--overlay-end`` s,
and the music bed at ``--bed-volume`` under the clips' own sound; written with
libx264 veryfast crf 23, AAC 128 kb/s at 48 kHz, 30 fps (``--fps``) and +faststart.

MoviePy decodes each source through an ``ffmpeg`` child (raw RGB on a pipe), composes in
numpy and pipes raw RGB to another ``ffmpeg`` child that encodes; it writes the sound to
a temporary AAC file first and then muxes it in. ``--ffmpeg`` points MoviePy at the same
ffmpeg binary the ffmpeg contender uses.

On exit it prints one JSON line (``moviepy-usage: {...}``) splitting the resources of
this Python process (``RUSAGE_SELF``) from those of the ffmpeg children it waited for
(``RUSAGE_CHILDREN``), and the peak of the summed RSS of this process and its live
children (PSS, from /proc/PID/smaps_rollup every 0.25 s): ``ru_maxrss`` is a
per-process maximum, so it cannot show processes running side by side.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import resource
import threading
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    for name in ("clip_a", "clip_b", "overlay", "music", "out"):
        p.add_argument(name, type=Path)
    p.add_argument("--ffmpeg", help="the ffmpeg binary MoviePy runs (FFMPEG_BINARY)")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--cut", type=float, default=10.0)
    p.add_argument("--trim-b", type=float, default=2.0)
    p.add_argument("--overlay-start", type=float, default=4.0)
    p.add_argument("--overlay-end", type=float, default=12.0)
    p.add_argument("--overlay-x", type=int, default=1380)
    p.add_argument("--overlay-y", type=int, default=60)
    p.add_argument("--bed-volume", type=float, default=0.5)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--size", default="1920x1080", help="output WxH (the canvas)")
    args = p.parse_args(argv)
    if args.ffmpeg:
        # Read by moviepy.config when it is first imported.
        os.environ["FFMPEG_BINARY"] = args.ffmpeg
    sampler = _TreeRss(0.25)
    try:
        render(args)
    finally:
        peak = sampler.stop()
    _report_usage(peak)
    return 0


def render(args: argparse.Namespace) -> None:
    mp: Any = importlib.import_module("moviepy")
    width, height = (int(v) for v in args.size.split("x"))
    cut: float = args.cut
    duration: float = args.duration

    a = mp.VideoFileClip(str(args.clip_a)).subclipped(0, cut)
    b = mp.VideoFileClip(str(args.clip_b)).subclipped(args.trim_b, args.trim_b + duration - cut)
    logo = (
        mp.ImageClip(str(args.overlay))  # an RGBA PNG: its alpha becomes the mask
        .with_start(args.overlay_start)
        .with_duration(args.overlay_end - args.overlay_start)
        .with_position((args.overlay_x, args.overlay_y))
    )
    video = mp.CompositeVideoClip(
        [a.with_start(0), b.with_start(cut), logo], size=(width, height), bg_color=(0, 0, 0)
    ).with_duration(duration)
    music = mp.AudioFileClip(str(args.music)).subclipped(0, duration)
    music = music.with_effects([mp.afx.MultiplyVolume(args.bed_volume)])
    sound = mp.CompositeAudioClip([video.audio, music]).with_duration(duration)
    final = video.with_audio(sound)

    out: Path = args.out
    final.write_videofile(
        str(out),
        fps=args.fps,
        codec="libx264",
        preset="veryfast",
        ffmpeg_params=["-crf", "23", "-movflags", "+faststart"],
        audio_codec="aac",
        audio_bitrate="128k",
        audio_fps=48000,
        temp_audiofile_path=str(out.parent),
        logger=None,
    )
    for clip in (final, a, b, music):
        clip.close()


class _TreeRss:
    """Peak of the summed PSS of this process and its direct children (MoviePy's ffmpeg
    readers and writer), sampled from /proc."""

    def __init__(self, every: float) -> None:
        self._every = every
        self._done = threading.Event()
        self.peak_mb = 0.0
        self.peak_procs = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            pids = [os.getpid(), *_children()]
            total = sum(_pss_mb(pid) for pid in pids)
            if total > self.peak_mb:
                self.peak_mb, self.peak_procs = total, len(pids)
            self._done.wait(self._every)

    def stop(self) -> tuple[float, int]:
        self._done.set()
        self._thread.join()
        return self.peak_mb, self.peak_procs


def _children() -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def _pss_mb(pid: int) -> float:
    """Proportional set size: shared pages (the ffmpeg binary's, mapped by every child)
    are split between the processes that map them, so the sum does not count them twice."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    m = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else 0.0


def _report_usage(peak: tuple[float, int]) -> None:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage = {
        "python_cpu_s": round(own.ru_utime + own.ru_stime, 3),
        "python_peak_rss_mb": round(own.ru_maxrss / 1024, 1),
        "ffmpeg_children_cpu_s": round(kids.ru_utime + kids.ru_stime, 3),
        "ffmpeg_children_max_rss_mb": round(kids.ru_maxrss / 1024, 1),
        "tree_peak_pss_mb": round(peak[0], 1),
        "tree_peak_processes": peak[1],
    }
    print(f"moviepy-usage: {json.dumps(usage)}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
