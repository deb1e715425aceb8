"""What the benchmarks share: cached synthetic media, timing child processes, reporting.

Each contender runs as a child process; :func:`measure` takes its wall time with
``perf_counter`` and its CPU seconds (user + system) and peak RSS from ``os.wait4``, so
the figures cover the whole command (interpreter start, imports, probing, muxing) and
nothing of the benchmark itself. :func:`run_interleaved` runs the contenders in turn
(A B A B ...) so that load from other work on the machine falls on all of them alike,
and reports medians.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import av.container
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.reformatter import Colorspace, VideoReformatter
from av.video.stream import VideoStream

from rendermill.cli import synth

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MEDIA_DIR = Path(tempfile.gettempdir()) / "rendermill-bench-media"
DEFAULT_RESULTS_DIR = Path(tempfile.gettempdir()) / "rendermill-bench-results"

# The project canvas every benchmark timeline uses; sources are made at this size.
CANVAS = (1920, 1080)
RESOLUTIONS = {
    "2160p": (3840, 2160),
    "1080p": (1920, 1080),
    "720p": (1280, 720),
    "480p": (854, 480),
}

Json = dict[str, Any]


class BenchError(RuntimeError):
    """A contender failed or a tool is missing; the message says which and why."""


# --- command line ------------------------------------------------------------------


def guarded(run: Callable[[], int]) -> int:
    """``run()``'s exit status, or 1 with the reason when the benchmark fails
    (BenchError: a contender failed, or an output is not what both should write)."""
    try:
        return run()
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1


def add_common_arguments(p: argparse.ArgumentParser, *, runs: int = 3) -> None:
    p.add_argument("--runs", type=int, default=runs, help=f"measured runs each (default {runs})")
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unmeasured runs of each contender first: page cache, bytecode (default 1)",
    )
    p.add_argument("--fps", type=int, default=30, help="output frame rate (default 30)")
    p.add_argument(
        "--media-dir",
        type=Path,
        default=DEFAULT_MEDIA_DIR,
        help=f"cache of generated sources, reused across runs (default {DEFAULT_MEDIA_DIR})",
    )
    p.add_argument(
        "--out",
        type=Path,
        help=f"JSON results file (default {DEFAULT_RESULTS_DIR}/<script>-<timestamp>.json)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the rendered outputs and the project file (their folder is printed)",
    )


def output_size(resolution: str) -> tuple[int, int]:
    """``1080p``-style presets or ``WxH``; raises SystemExit with a usage message."""
    if resolution in RESOLUTIONS:
        return RESOLUTIONS[resolution]
    m = re.fullmatch(r"(\d+)x(\d+)", resolution)
    if m is None or int(m.group(1)) % 2 or int(m.group(2)) % 2:
        raise SystemExit(f"--resolution {resolution!r}: use one of {list(RESOLUTIONS)} or WxH")
    return int(m.group(1)), int(m.group(2))


def even(value: float) -> int:
    """Rounded to an even number, as rendermill rounds layer sizes and positions."""
    return 2 * round(value / 2)


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    """How the 1920x1080 canvas lands in the output frame (rendermill's viewport)."""

    scale: float
    x: int
    y: int
    width: int
    height: int

    @classmethod
    def of(cls, out: tuple[int, int]) -> Placement:
        ow, oh = out
        scale = min(ow / CANVAS[0], oh / CANVAS[1])
        w = min(ow, max(2, even(CANVAS[0] * scale)))
        h = min(oh, max(2, even(CANVAS[1] * scale)))
        return cls(scale, even((ow - w) / 2), even((oh - h) / 2), w, h)

    def rect(self, x: float, y: float, w: float, h: float) -> tuple[int, int, int, int]:
        """A canvas rectangle in output pixels, rounded like rendermill rounds it."""
        s = self.scale
        return (
            self.x + even(x * s),
            self.y + even(y * s),
            max(2, even(w * s)),
            max(2, even(h * s)),
        )


# --- tools -------------------------------------------------------------------------


def ffmpeg_exe(media_dir: Path) -> str:
    """The ffmpeg binary of the ``bench`` dependency group (imageio-ffmpeg's static build),
    copied into ``media_dir`` first: a sync of the environment elsewhere must not pull
    the binary away mid-benchmark."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise BenchError(
            "imageio-ffmpeg is not installed: run the benchmark with `python3 dev.py bench "
            "NAME` (see bench/README.md)"
        ) from exc
    source = Path(imageio_ffmpeg.get_ffmpeg_exe())
    pinned = media_dir / "bin" / source.name
    if not pinned.exists() or pinned.stat().st_size != source.stat().st_size:
        pinned.parent.mkdir(parents=True, exist_ok=True)
        tmp = pinned.with_name(f".{pinned.name}.{os.getpid()}")
        shutil.copy2(source, tmp)
        tmp.replace(pinned)
    return str(pinned)


def ffmpeg_quiet(ffmpeg: str) -> list[str]:
    """The start of every ffmpeg contender's command: no prompts, errors only."""
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]


def rendermill_argv() -> list[str]:
    """How to start the rendermill command of this environment."""
    script = Path(sys.executable).parent / "rendermill"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "rendermill.cli.main"]


def machine_info(ffmpeg: str) -> Json:
    version = subprocess.run(
        [ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "pyav_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "ffmpeg": version[0] if version else "?",
        "loadavg_start": os.getloadavg(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# --- synthetic media, cached --------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ClipSpec:
    """A clip with a tone, 1080p unless ``size`` says otherwise: H.264 + AAC in MP4, or
    (``ext="webm"``) VP9 + Opus in WebM. ``gop`` in frames: None keeps synth's (1 s).
    ``hlg``: HEVC Main 10 in HLG (BT.2100), as phones record HDR, instead of H.264."""

    name: str
    color: tuple[int, int, int]
    duration: float
    tone_hz: float
    fps: int = 30
    moving: bool = True
    counter: bool = False
    gop: int | None = None
    ext: str = "mp4"
    hlg: bool = False
    size: tuple[int, int] = CANVAS

    @property
    def filename(self) -> str:
        w, h = self.size
        tags = ("-moving" if self.moving else "") + ("-counter" if self.counter else "")
        tags += "-hlg" if self.hlg else ""
        gop = f"-g{self.gop}" if self.gop else ""
        rgb = "".join(f"{c:02x}" for c in self.color)
        return (
            f"{self.name}-{w}x{h}-{self.fps}fps-{self.duration:g}s-{rgb}-{self.tone_hz:g}hz"
            f"{tags}{gop}.{self.ext}"
        )


def ensure_clips(media_dir: Path, specs: Sequence[ClipSpec]) -> dict[str, Path]:
    """Each clip's file in ``media_dir``, generating the missing ones on two processes."""
    media_dir.mkdir(parents=True, exist_ok=True)
    paths = {spec.name: media_dir / spec.filename for spec in specs}
    missing = [spec for spec in specs if not paths[spec.name].exists()]
    if missing:
        started = time.perf_counter()
        print(f"generating {len(missing)} clip(s) in {media_dir} (cached for later runs) ...")
        workers = max(1, min(len(missing), os.cpu_count() or 1))
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_make_clip, spec, paths[spec.name]) for spec in missing]
            for future in futures:
                future.result()
        print(f"  done in {time.perf_counter() - started:.0f} s")
    return paths


def _make_clip(spec: ClipSpec, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp.{spec.ext}")
    try:
        synth.make_video(
            tmp,
            color=spec.color,
            size=spec.size,
            duration=spec.duration,
            fps=spec.fps,
            tone_hz=spec.tone_hz,
            moving=spec.moving,
            counter=spec.counter,
        )
        if spec.gop is not None:
            regop = dest.with_name(f".{dest.name}.{os.getpid()}.gop.{spec.ext}")
            set_gop(tmp, regop, spec.gop)
            tmp.unlink()
            tmp = regop
        if spec.hlg:
            hdr = dest.with_name(f".{dest.name}.{os.getpid()}.hlg.{spec.ext}")
            to_hlg(tmp, hdr)
            tmp.unlink()
            tmp = hdr
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def set_gop(src: Path, dest: Path, gop: int) -> None:
    """Re-encode ``src``'s picture with a keyframe exactly every ``gop`` frames (and no
    others), in its own codec (H.264 or VP9); the sound is copied. synth writes
    one-second GOPs; cuts need a choice."""
    with av.open(str(src)) as inp:
        vp9 = inp.streams.video[0].codec_context.name == "vp9"
    if vp9:
        options = {
            "deadline": "realtime",
            "cpu-used": "8",
            "row-mt": "1",
            "crf": "20",
            "b": "0",
            "g": str(gop),
            "keyint_min": str(gop),
            "lag-in-frames": "0",
        }
        _transcode(src, dest, "libvpx-vp9", "yuv420p", options)
    else:
        options = {
            "preset": "ultrafast",
            "crf": "18",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
        }
        _transcode(src, dest, "libx264", "yuv420p", options)


def to_hlg(src: Path, dest: Path) -> None:
    """Re-encode ``src``'s picture as HEVC Main 10 in HLG with BT.2020 primaries and
    matrix (swscale maps the SDR picture into it); the sound is copied."""
    scaler = VideoReformatter()

    def convert(frame: VideoFrame) -> VideoFrame:
        return scaler.reformat(
            frame,
            format="yuv420p10le",
            dst_colorspace=Colorspace.BT2020,
            dst_color_trc=18,
            dst_color_primaries=9,
        )

    options = {"preset": "ultrafast", "crf": "18", "x265-params": "log-level=error"}
    # AVColorRange / AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic.
    colour = (1, 9, 9, 18)
    _transcode(src, dest, "libx265", "yuv420p10le", options, colour=colour, convert=convert)


def _transcode(
    src: Path,
    dest: Path,
    codec: str,
    pix_fmt: str,
    options: dict[str, str],
    *,
    colour: tuple[int, int, int, int] | None = None,
    convert: Callable[[VideoFrame], VideoFrame] | None = None,
) -> None:
    """``src``'s picture re-encoded with ``codec`` (each frame through ``convert``
    first; ``colour``: range, matrix, primaries, transfer to tag), its sound copied."""
    with av.open(str(src)) as inp, av.open(str(dest), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream(codec, rate=vin.average_rate)
        assert isinstance(vout, VideoStream)
        vout.width = vin.codec_context.width
        vout.height = vin.codec_context.height
        vout.pix_fmt = pix_fmt
        if colour is not None:
            ctx = vout.codec_context
            ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc = colour
        vout.options = dict(options)
        ain = inp.streams.audio[0] if inp.streams.audio else None
        aout = out.add_stream_from_template(ain) if ain is not None else None
        streams = [vin] if ain is None else [vin, ain]
        for packet in inp.demux(streams):
            if packet.stream is ain:
                if packet.dts is not None and aout is not None:
                    packet.stream = aout
                    out.mux(packet)
                continue
            for frame in packet.decode():
                assert isinstance(frame, VideoFrame)
                picture = convert(frame) if convert is not None else frame
                picture.pts, picture.time_base = frame.pts, frame.time_base
                picture.pict_type = av.video.frame.PictureType.NONE
                out.mux(vout.encode(picture))
        out.mux(vout.encode(None))


def ensure_audio(media_dir: Path, name: str, *, tone_hz: float, duration: float) -> Path:
    media_dir.mkdir(parents=True, exist_ok=True)
    dest = media_dir / f"{name}-{tone_hz:g}hz-{duration:g}s.m4a"
    if not dest.exists():
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp.m4a")
        synth.make_audio(tmp, tone_hz=tone_hz, duration=duration)
        tmp.replace(dest)
    return dest


def ensure_png(media_dir: Path, name: str, *, size: tuple[int, int], alpha: int) -> Path:
    """A solid PNG with a uniform ``alpha``: it blends on every pixel it covers."""
    media_dir.mkdir(parents=True, exist_ok=True)
    dest = media_dir / f"{name}-{size[0]}x{size[1]}-a{alpha}.png"
    if not dest.exists():
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp.png")
        synth.make_image(tmp, color=(255, 200, 0), size=size, alpha=alpha)
        tmp.replace(dest)
    return dest


def keyframe_times(path: Path) -> list[float]:
    """Presentation times of the keyframes of ``path``'s picture stream."""
    times: list[float] = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.time_base is not None
        for packet in c.demux(stream):
            if packet.is_keyframe and packet.pts is not None:
                times.append(round(float(packet.pts * stream.time_base), 4))
    return sorted(times)


# --- measuring ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    """One run of one contender."""

    wall: float
    user: float
    system: float
    peak_rss_mb: float
    stdout: str
    # (seconds since start, RSS MB), when sampling was asked for.
    rss_samples: tuple[tuple[float, float], ...] = ()

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def to_json(self) -> Json:
        out: Json = {
            "wall_s": round(self.wall, 3),
            "cpu_s": round(self.cpu, 3),
            "user_s": round(self.user, 3),
            "sys_s": round(self.system, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }
        if self.rss_samples:
            out["rss_samples"] = [[round(t, 2), round(mb, 1)] for t, mb in self.rss_samples]
        return out


def measure(
    argv: Sequence[str], *, sample_every: float | None = None, cwd: Path | None = None
) -> Measurement:
    """Run ``argv`` to completion; raises BenchError with its stderr if it fails.

    CPU time and peak RSS come from ``wait4`` on this very child, so concurrent work of
    the benchmark process itself does not count. With ``sample_every`` the child's RSS is
    also read from /proc that often, to show how memory evolves over the run.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd
        )
        sampler = _RssSampler(proc.pid, sample_every, started) if sample_every else None
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        samples = sampler.stop() if sampler is not None else ()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        raise BenchError(f"exit status {proc.returncode}: {_shell(argv)}\n{tail}")
    return Measurement(
        wall=wall,
        user=usage.ru_utime,
        system=usage.ru_stime,
        # Linux reports ru_maxrss in KiB.
        peak_rss_mb=usage.ru_maxrss / 1024,
        stdout=stdout,
        rss_samples=samples,
    )


class _RssSampler:
    def __init__(self, pid: int, every: float, started: float) -> None:
        self._path = Path(f"/proc/{pid}/status")
        self._every = every
        self._started = started
        self._done = threading.Event()
        self._samples: list[tuple[float, float]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                text = self._path.read_text()
            except OSError:
                return
            m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
            if m is None:  # a zombie: it has exited
                return
            self._samples.append((time.perf_counter() - self._started, int(m.group(1)) / 1024))
            self._done.wait(self._every)

    def stop(self) -> tuple[tuple[float, float], ...]:
        self._done.set()
        self._thread.join()
        return tuple(self._samples)


def _shell(argv: Sequence[str]) -> str:
    return " ".join(a if re.fullmatch(r"[\w@%+=:,./-]+", a) else repr(a) for a in argv)


@dataclasses.dataclass(slots=True)
class Contender:
    """One way of producing ``output``; ``duration`` is the timeline's length in seconds."""

    name: str
    argv: list[str]
    output: Path
    duration: float
    runs: list[Measurement] = dataclasses.field(default_factory=list)

    def median(self, key: Callable[[Measurement], float]) -> float:
        return statistics.median(key(m) for m in self.runs)

    @property
    def wall(self) -> float:
        return self.median(lambda m: m.wall)

    @property
    def cpu(self) -> float:
        return self.median(lambda m: m.cpu)

    @property
    def rss(self) -> float:
        return self.median(lambda m: m.peak_rss_mb)

    @property
    def realtime(self) -> float:
        return self.duration / self.wall

    def to_json(self) -> Json:
        return {
            "argv": self.argv,
            "timeline_s": self.duration,
            "median": {
                "wall_s": round(self.wall, 3),
                "realtime_x": round(self.realtime, 3),
                "cpu_s": round(self.cpu, 3),
                "peak_rss_mb": round(self.rss, 1),
            },
            "runs": [m.to_json() for m in self.runs],
        }


def run_interleaved(
    contenders: Sequence[Contender], *, runs: int, warmup: int, sample_every: float | None = None
) -> None:
    """Run every contender ``warmup`` times unmeasured, then ``runs`` rounds of one run
    each, in turn, appending the measurements to each contender's ``runs``."""
    total = warmup + runs
    for round_ in range(total):
        label = (
            f"warm-up {round_ + 1}/{warmup}"
            if round_ < warmup
            else f"run {round_ - warmup + 1}/{runs}"
        )
        for c in contenders:
            c.output.unlink(missing_ok=True)
            m = measure(c.argv, sample_every=sample_every)
            if not c.output.exists():
                raise BenchError(f"{c.name}: exited 0 but wrote no {c.output}")
            print(
                f"  {label:>12}  {c.name:<24} {m.wall:7.2f} s wall {m.cpu:7.2f} s CPU "
                f"{m.peak_rss_mb:7.0f} MB",
                flush=True,
            )
            if round_ >= warmup:
                c.runs.append(m)


def rendermill_mode(stdout: str) -> str:
    """``compose``, ``stream copy, sound mixed`` or ``stream copy, sound copied``, from
    the summary line ``rendermill render`` prints."""
    m = re.search(r"CPU s, ([^)]+)\)", stdout)
    return m.group(1) if m else "?"


def rendermill_render_seconds(stdout: str) -> float | None:
    """The render's own wall time inside the command (without interpreter start-up,
    imports and reading the project), from the summary line ``rendermill render``
    prints."""
    m = re.search(r" in ([0-9.]+) s \(", stdout)
    return float(m.group(1)) if m else None


# --- reporting ---------------------------------------------------------------------


def print_render_times(contenders: Sequence[Contender], duration: float) -> None:
    """rendermill's own render time, without interpreter start-up and imports (the
    summary line's figure), next to the whole command's."""
    for c in contenders:
        if not c.name.startswith("rendermill"):
            continue
        inside = [rendermill_render_seconds(m.stdout) for m in c.runs]
        times = sorted(t for t in inside if t is not None)
        if not times:
            continue
        median = times[len(times) // 2]
        print(
            f"{c.name}: the render itself {median:.2f} s ({duration / median:.1f}x realtime; "
            f"min {times[0]:.2f} s, {duration / times[0]:.1f}x); the rest of the command is "
            "interpreter start-up, imports and reading the project"
        )


def print_table(contenders: Sequence[Contender]) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"medians; load average now {load} on {os.cpu_count()} CPUs")
    head = (
        f"{'contender':<24} {'wall s':>8} {'(min-max)':>13} {'realtime':>9} {'CPU s':>8} "
        f"{'cores':>6} {'peak RSS MB':>12}"
    )
    print(head)
    print("-" * len(head))
    for c in contenders:
        walls = [m.wall for m in c.runs]
        spread = f"{min(walls):.2f}-{max(walls):.2f}"
        print(
            f"{c.name:<24} {c.wall:8.2f} {spread:>13} {c.realtime:8.2f}x {c.cpu:8.2f} "
            f"{c.cpu / c.wall:6.2f} {c.rss:12.0f}"
        )


def ratios(a: Contender, b: Contender) -> Json:
    """``a`` relative to ``b``: above 1 means ``a`` takes more.

    ``wall`` divides the medians; ``wall_paired`` is the median of the per-round ratios,
    which holds up better when other work on the machine comes and goes, since the two
    runs of a round ran back to back.
    """
    paired = [x.wall / y.wall for x, y in zip(a.runs, b.runs, strict=False)]
    return {
        "pair": f"{a.name} / {b.name}",
        "wall": round(a.wall / b.wall, 3),
        "wall_paired": round(statistics.median(paired), 3) if paired else None,
        "cpu": round(a.cpu / b.cpu, 3),
        "peak_rss": round(a.rss / b.rss, 3),
    }


def print_ratios(pairs: Sequence[Json]) -> None:
    for r in pairs:
        print(
            f"{r['pair']:<40} wall x{r['wall']:.2f} (paired x{r['wall_paired']:.2f})   "
            f"CPU x{r['cpu']:.2f}   peak RSS x{r['peak_rss']:.2f}"
        )


def write_json(args: argparse.Namespace, script: str, payload: Json) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path: Path = args.out or DEFAULT_RESULTS_DIR / f"{script}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload.setdefault("machine", {})["loadavg_end"] = os.getloadavg()
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"results: {path}")
    return path


@dataclasses.dataclass(slots=True)
class WorkDir:
    """Where outputs go: a temporary folder, kept with ``--keep``."""

    keep: bool
    path: Path = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="rendermill-bench-"))

    def close(self) -> None:
        if self.keep:
            print(f"outputs kept in {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


# --- looking at outputs ------------------------------------------------------------


def inspect(path: Path) -> Json:
    """What a file holds, from its headers and packets (no decoding)."""
    info: Json = {"size_mb": round(path.stat().st_size / 1e6, 2)}
    with av.open(str(path)) as c:
        info["container_s"] = None if c.duration is None else round(c.duration / 1e6, 3)
        if c.streams.video:
            v = c.streams.video[0]
            assert v.time_base is not None
            packets = [p for p in c.demux(v) if p.size]
            pts = sorted(p.pts for p in packets if p.pts is not None)
            info["video"] = {
                "codec": v.codec_context.name,
                "size": f"{v.codec_context.width}x{v.codec_context.height}",
                "pix_fmt": v.codec_context.pix_fmt,
                "rate": str(v.average_rate),
                "packets": len(packets),
                "keyframes": sum(1 for p in packets if p.is_keyframe),
                "first_pts_s": round(float(pts[0] * v.time_base), 4) if pts else None,
                "stream_s": _stream_seconds(v, packets),
            }
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            info["audio"] = {
                "codec": a.codec_context.name,
                "rate": a.codec_context.sample_rate,
                "channels": a.codec_context.channels,
                "bit_rate": a.codec_context.bit_rate,
                "stream_s": _stream_seconds(a, [p for p in c.demux(a) if p.size]),
            }
    settings = x264_settings(path)
    if settings:
        info["x264"] = settings
    return info


def _stream_seconds(stream: av.stream.Stream, packets: Sequence[Packet[Any]]) -> float | None:
    """How long a stream lasts: its header's duration (MP4), else where its last packet
    ends (WebM stores no per-stream duration)."""
    tb = stream.time_base
    if tb is None:
        return None
    if stream.duration is not None:
        return round(float(stream.duration * tb), 4)
    ends = [p.pts + (p.duration or 0) for p in packets if p.pts is not None]
    start = stream.start_time or 0
    return round(float((max(ends) - start) * tb), 4) if ends else None


_X264_KEYS = ("crf", "subme", "me", "ref", "bframes", "rc_lookahead", "threads", "trellis")


def x264_settings(path: Path) -> dict[str, str]:
    """The options x264 wrote into the stream's SEI (version and the settings that show
    the preset and rate control), so two encodes can be checked for equal settings."""
    with path.open("rb") as f:
        data = f.read(8 << 20)
    start = data.find(b"x264 - core ")
    if start < 0:
        return {}
    text = data[start : data.find(b"\x00", start)].decode("ascii", "replace")
    out = {"version": text.split(" - ")[1]}
    options = dict(
        item.split("=", 1) for item in text.partition("options: ")[2].split() if "=" in item
    )
    out |= {k: options[k] for k in _X264_KEYS if k in options}
    return out


def compare_settings(infos: dict[str, Json]) -> list[str]:
    """Differences between the outputs' x264 settings, as lines for the report."""
    names = list(infos)
    lines: list[str] = []
    for key in ("version", *_X264_KEYS):
        values = {n: infos[n].get("x264", {}).get(key) for n in names}
        if len(set(values.values())) > 1:
            lines.append(f"x264 {key} differs: " + ", ".join(f"{n}={v}" for n, v in values.items()))
    return lines


def decode_errors(ffmpeg: str, path: Path) -> list[str]:
    """What ffmpeg's own decoder complains about while decoding all of ``path`` (a
    spliced stream can decode in PyAV and still carry errors); empty when clean."""
    proc = subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stderr.strip().splitlines()
    if proc.returncode:
        lines.append(f"ffmpeg exit status {proc.returncode}")
    return lines[:20]


def decode_luma(path: Path, size: tuple[int, int] = (240, 136)) -> npt.NDArray[np.uint8]:
    """Every picture of ``path``, scaled down to ``size``, as (frames, h, w) luma."""
    frames = [f.to_ndarray() for f in _frames(path, size, "gray")]
    return np.stack(frames) if frames else np.zeros((0, size[1], size[0]), np.uint8)


def decode_rgb(path: Path, size: tuple[int, int]) -> Iterator[npt.NDArray[np.uint8]]:
    for frame in _frames(path, size, "rgb24"):
        yield np.asarray(frame.to_ndarray(), np.uint8)


def _frames(path: Path, size: tuple[int, int], fmt: str) -> Iterator[VideoFrame]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in c.decode(stream):
            yield frame.reformat(size[0], size[1], fmt)


def decode_audio(path: Path) -> npt.NDArray[np.float32]:
    """The whole sound of ``path`` as (2, samples) float32 at its own rate."""
    blocks: list[npt.NDArray[np.float32]] = []
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return np.zeros((2, 0), np.float32)
        resampler = av.AudioResampler(format="fltp", layout="stereo")
        for frame in c.decode(c.streams.audio[0]):
            assert isinstance(frame, AudioFrame)
            for out in resampler.resample(frame):
                blocks.append(out.to_ndarray().astype(np.float32))
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((2, 0), np.float32)


def psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def compare_pictures(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> Json:
    """How well two renders of one timeline agree, frame by frame.

    Both are lossy encodes of the same pictures, so they never match exactly; what
    matters is that frame i of one is closer to frame i of the other than to i-1 or i+1
    (a cut or an overlay a frame early or late shows up as a misaligned frame).
    """
    n = min(len(a), len(b))
    values = [psnr(a[i], b[i]) for i in range(n)]
    misaligned = [
        i
        for i in range(n)
        if any(psnr(a[i], b[j]) > values[i] + 0.5 for j in (i - 1, i + 1) if 0 <= j < n)
    ]
    low = [i for i in range(n) if values[i] < 30.0]
    finite = [v for v in values if math.isfinite(v)]
    return {
        "frames": [len(a), len(b)],
        "identical_frames": n - len(finite),
        "psnr_median_db": round(statistics.median(finite), 2) if finite else None,
        "psnr_min_db": round(min(finite), 2) if finite else None,
        "psnr_min_frame": values.index(min(finite)) if finite else None,
        "frames_below_30db": _ranges(low),
        "misaligned_frames": _ranges(misaligned),
    }


def compare_sound(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], rate: int) -> Json:
    """Level of two renders' sound per 100 ms window, and how far apart the levels get."""
    window = rate // 10
    n = min(a.shape[1], b.shape[1]) // window

    def levels(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        blocks = x[:, : n * window].reshape(2, n, window).astype(np.float64)
        rms: npt.NDArray[np.float64] = np.sqrt(np.mean(blocks**2, axis=(0, 2)))
        return rms

    la, lb = levels(a), levels(b)
    with np.errstate(divide="ignore"):
        db = 20 * np.log10(np.maximum(la, 1e-6) / np.maximum(lb, 1e-6))
    worst = int(np.argmax(np.abs(db))) if n else 0
    return {
        "seconds": [round(a.shape[1] / rate, 3), round(b.shape[1] / rate, 3)],
        "rms": [round(float(np.sqrt(np.mean(a**2))), 4), round(float(np.sqrt(np.mean(b**2))), 4)],
        "max_level_diff_db": round(float(abs(db[worst])), 2) if n else None,
        "max_level_diff_at_s": round(worst * 0.1, 1) if n else None,
    }


def _ranges(indices: Sequence[int]) -> list[str]:
    """[3, 4, 5, 9] -> ["3-5", "9"]."""
    out: list[str] = []
    for i in indices:
        if out and int(out[-1].split("-")[-1]) == i - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return out


def expected_frames(duration: float, fps: int) -> int:
    """How many frames rendermill writes for a timeline: ceil(duration x fps)."""
    return math.ceil(round(duration * fps, 6))


def project(slug: str, name: str, tracks: list[Json]) -> Json:
    """A project on the bench canvas (1080p, black) holding ``tracks``."""
    return {
        "id": f"bench-{slug}",
        "name": f"bench: {name}",
        "width": CANVAS[0],
        "height": CANVAS[1],
        "backgroundColor": "#000000",
        "tracks": tracks,
    }


def track(name: str, controller: str, actions: list[Json], ext: str = "") -> Json:
    """A track playing ``/bench/<name>.<ext>`` (mp4 for video, png for images)."""
    ext = ext or {"video": "mp4", "image": "png"}[controller]
    return {
        "id": f"track-{name}",
        "name": name,
        "controllerName": controller,
        "url": f"/bench/{name}.{ext}",
        "actions": actions,
    }


def action(name: str, start: float, end: float, **extra: object) -> Json:
    return {"id": f"action-{name}", "name": name, "start": start, "end": end, **extra}


def write_project(path: Path, project: Json) -> Path:
    path.write_text(json.dumps(project, indent=2) + "\n")
    return path
