"""rendermill against the ffmpeg command line on a cut-only timeline.

Four 1080p30 H.264 clips made alike (same codec parameters, a keyframe exactly every
``--gop`` seconds, 2 by default), each with its own colour and tone, cut back to back into
a 20 s timeline on a 1920x1080 canvas:

    segment  timeline   clip  trimStart  cut in the source
    A        0 - 6 s    red      0 s     on a keyframe
    B        6 - 11 s   green    4 s     on a keyframe
    C        11 - 16 s  blue     3 s     mid-GOP (1 s after a keyframe)
    D        16 - 20 s  yellow   5.5 s   mid-GOP (1.5 s after a keyframe)

Contenders (``--contenders`` picks some):

- ``rendermill``: ``rendermill render --copy auto``, its stream-copy fast path when the
  timeline qualifies (the summary line says whether it copied or composed);
- ``ffmpeg-copy``: the concat demuxer with inpoint/outpoint and ``-c copy``; it cuts on
  packets, so a cut inside a GOP starts at the keyframe before it: NOT frame exact;
- ``rendermill-compose``: ``rendermill render --copy never`` (decode and re-encode);
- ``ffmpeg-reencode``: input seeking plus trim/concat filters and the same x264/AAC
  settings as rendermill: frame exact.

Every clip carries its frame number in its bottom quarter (synth's counter), so each
output is decoded and every frame checked against the frame the timeline asks for.

    python3 dev.py bench cut
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import compose, harness
from rendermill.cli import synth

FPS = 30
CLIP_SECONDS = 12.0
CHECK_SIZE = (320, 180)


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    clip: str
    color: tuple[int, int, int]
    tone_hz: float
    start: float
    end: float
    trim: float


SEGMENTS = (
    Segment("cut-a", (255, 0, 0), 330.0, 0.0, 6.0, 0.0),
    Segment("cut-b", (0, 255, 0), 440.0, 6.0, 11.0, 4.0),
    Segment("cut-c", (0, 0, 255), 550.0, 11.0, 16.0, 3.0),
    Segment("cut-d", (255, 255, 0), 660.0, 16.0, 20.0, 5.5),
)
# --cuts keyframe: C and D cut on keyframes too (with 2 s GOPs), so nothing is re-encoded.
KEYFRAME_TRIMS = {"cut-c": 2.0, "cut-d": 6.0}
DURATION = SEGMENTS[-1].end
ALL = ("rendermill", "ffmpeg-copy", "rendermill-compose", "ffmpeg-reencode")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    harness.add_common_arguments(p)
    p.add_argument("--gop", type=float, default=2.0, help="source GOP in seconds (default 2)")
    p.add_argument(
        "--format",
        choices=("mp4", "webm"),
        default="mp4",
        help="mp4: H.264 + AAC sources and output (default); webm: VP9 + Opus",
    )
    p.add_argument(
        "--cuts",
        choices=("mixed", "keyframe"),
        default="mixed",
        help="mixed: two cuts on keyframes, two mid-GOP (default); keyframe: all four on "
        "keyframes (with --gop 2)",
    )
    p.add_argument(
        "--contenders",
        default=",".join(ALL),
        help=f"comma-separated subset of {','.join(ALL)} (default: all)",
    )
    args = p.parse_args(argv)
    if args.fps != FPS:
        p.error(f"the cut timeline is made for {FPS} fps output (a copy cannot change it)")
    chosen = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if unknown := set(chosen) - set(ALL):
        p.error(f"unknown contenders: {sorted(unknown)}")
    segments: tuple[Segment, ...] = SEGMENTS
    if args.cuts == "keyframe":
        segments = tuple(
            dataclasses.replace(s, trim=KEYFRAME_TRIMS.get(s.clip, s.trim)) for s in SEGMENTS
        )
        if any(s.trim % args.gop for s in segments):
            p.error("--cuts keyframe puts cuts on keyframes of 2 s GOPs: use --gop 1 or 2")
    return harness.guarded(lambda: run(args, chosen, segments))


def run(args: argparse.Namespace, chosen: list[str], segments: tuple[Segment, ...]) -> int:
    ffmpeg = harness.ffmpeg_exe(args.media_dir)
    machine = harness.machine_info(ffmpeg)
    gop_frames = round(args.gop * FPS)
    specs = [
        harness.ClipSpec(
            s.clip,
            s.color,
            CLIP_SECONDS,
            s.tone_hz,
            fps=FPS,
            counter=True,
            gop=gop_frames,
            ext=args.format,
        )
        for s in SEGMENTS
    ]
    ext = args.format
    clips = harness.ensure_clips(args.media_dir, specs)
    keyframes = {name: harness.keyframe_times(path) for name, path in clips.items()}
    for name, times in keyframes.items():
        want = [round(k * args.gop, 4) for k in range(math.ceil(CLIP_SECONDS / args.gop))]
        if times != want:
            raise harness.BenchError(f"{name}: keyframes at {times}, expected {want}")

    work = harness.WorkDir(args.keep)
    try:
        project = harness.write_project(work.path / "cut.json", _project(segments, ext))
        listing = work.path / "cut.ffconcat"
        listing.write_text(_concat_list(clips, segments))
        media = [
            arg for s in SEGMENTS for arg in ("--media", f"/bench/{s.clip}.{ext}={clips[s.clip]}")
        ]

        def rendermill(name: str, copy: str) -> harness.Contender:
            out = work.path / f"{name}.{ext}"
            argv = [
                *harness.rendermill_argv(),
                "render",
                str(project),
                "-o",
                str(out),
                *media,
                "--resolution",
                "1080p",
                "--fps",
                str(FPS),
                "--quality",
                "standard",
                "--copy",
                copy,
                "--quiet",
            ]
            return harness.Contender(name, argv, out, DURATION)

        ff_base = harness.ffmpeg_quiet(ffmpeg)
        available = {
            "rendermill": lambda: rendermill("rendermill", "auto"),
            "ffmpeg-copy": lambda: harness.Contender(
                "ffmpeg-copy",
                [
                    *ff_base,
                    "-f",
                    "concat",
                    "-safe",
                    "0",
                    "-i",
                    str(listing),
                    "-c",
                    "copy",
                    *(["-movflags", "+faststart"] if ext == "mp4" else []),
                    "-y",
                    str(work.path / f"ffmpeg-copy.{ext}"),
                ],
                work.path / f"ffmpeg-copy.{ext}",
                DURATION,
            ),
            "rendermill-compose": lambda: rendermill("rendermill-compose", "never"),
            "ffmpeg-reencode": lambda: harness.Contender(
                "ffmpeg-reencode",
                [
                    *ff_base,
                    *_seeking_inputs(clips, segments),
                    "-filter_complex",
                    _reencode_graph(segments),
                    "-map",
                    "[vout]",
                    "-map",
                    "[aout]",
                    *(
                        compose.encode_args(work.path / "ffmpeg-reencode.mp4")
                        if ext == "mp4"
                        else _webm_args(work.path / "ffmpeg-reencode.webm")
                    ),
                ],
                work.path / f"ffmpeg-reencode.{ext}",
                DURATION,
            ),
        }
        contenders = [available[name]() for name in ALL if name in chosen]
        print(
            f"cut ({ext}): {DURATION:g} s timeline of {len(SEGMENTS)} clips, "
            f"1920x1080 @ {FPS} fps, "
            f"GOP {args.gop:g} s, {args.runs} runs each after {args.warmup} warm-up, interleaved"
        )
        harness.run_interleaved(contenders, runs=args.runs, warmup=args.warmup)
        checks = _check(contenders, ffmpeg, segments)
        print()
        harness.print_table(contenders)
        by_name = {c.name: c for c in contenders}
        pairs = [
            harness.ratios(by_name[a], by_name[b])
            for a, b in (
                ("rendermill", "ffmpeg-copy"),
                ("rendermill-compose", "ffmpeg-reencode"),
                ("rendermill", "ffmpeg-reencode"),
            )
            if a in by_name and b in by_name
        ]
        harness.print_ratios(pairs)
        harness.print_render_times(contenders, DURATION)
        _print_checks(checks)
        harness.write_json(
            args,
            "cut",
            {
                "script": "cut",
                "machine": machine,
                "config": {
                    "duration_s": DURATION,
                    "format": args.format,
                    "fps": FPS,
                    "gop_s": args.gop,
                    "runs": args.runs,
                    "warmup": args.warmup,
                    "cuts": args.cuts,
                    "segments": [dataclasses.asdict(s) for s in segments],
                    "sources": {k: str(v) for k, v in clips.items()},
                    "source_keyframes": keyframes,
                    "ffconcat": listing.read_text(),
                    "ffmpeg_reencode_filter_complex": _reencode_graph(segments),
                },
                "contenders": {c.name: c.to_json() for c in contenders},
                "ratios": pairs,
                "checks": checks,
            },
        )
        return 1 if checks["problems"] else 0
    finally:
        work.close()


def _project(segments: tuple[Segment, ...], ext: str) -> harness.Json:
    # One track per clip (a track plays one media file); the cuts are where actions meet.
    return harness.project(
        "cut",
        "four clips cut back to back",
        [
            {
                "id": f"track-{s.clip}",
                "name": s.clip,
                "controllerName": "video",
                "url": f"/bench/{s.clip}.{ext}",
                "actions": [
                    {
                        "id": f"action-{s.clip}",
                        "name": s.clip,
                        "start": s.start,
                        "end": s.end,
                        "trimStart": s.trim,
                        "fit": "fill",
                    }
                ],
            }
            for s in segments
        ],
    )


def _webm_args(dest: Path) -> list[str]:
    """rendermill's standard webm recipe, spelled for the ffmpeg command line."""
    return [
        "-c:v",
        "libvpx-vp9",
        "-crf",
        "32",
        "-b:v",
        "0",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-row-mt",
        "1",
        "-lag-in-frames",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "libopus",
        "-b:a",
        "128k",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-y",
        str(dest),
    ]


def _concat_list(clips: dict[str, Path], segments: tuple[Segment, ...]) -> str:
    lines = ["ffconcat version 1.0"]
    for s in segments:
        path = str(clips[s.clip]).replace("'", "'\\''")
        lines += [f"file '{path}'", f"inpoint {s.trim:g}", f"outpoint {s.trim + s.end - s.start:g}"]
    return "\n".join(lines) + "\n"


def _seeking_inputs(clips: dict[str, Path], segments: tuple[Segment, ...]) -> list[str]:
    args: list[str] = []
    for s in segments:
        if s.trim:
            args += ["-ss", f"{s.trim:g}"]
        # No -t: it cuts sound on whole AAC frames; trim/atrim cut the ends exactly.
        args += ["-i", str(clips[s.clip])]
    return args


def _reencode_graph(segments: tuple[Segment, ...]) -> str:
    parts: list[str] = []
    labels = ""
    for i, s in enumerate(segments):
        length = s.end - s.start
        parts.append(f"[{i}:v]trim=end={length:g},setpts=PTS-STARTPTS[v{i}]")
        # Input seeking lands the sound on a whole AAC frame, up to one frame after the
        # cut, so a segment's sound can be short by as much: apad makes it exact.
        parts.append(
            f"[{i}:a]atrim=end={length:g},asetpts=PTS-STARTPTS,apad=whole_dur={length:g}[a{i}]"
        )
        labels += f"[v{i}][a{i}]"
    parts.append(f"{labels}concat=n={len(segments)}:v=1:a=1[vout][aout]")
    return ";".join(parts)


# --- checking what each output shows -------------------------------------------------


def expected_sequence(segments: tuple[Segment, ...]) -> list[tuple[str, int]]:
    """(clip, source frame) for every output frame of the timeline."""
    out: list[tuple[str, int]] = []
    for i in range(harness.expected_frames(DURATION, FPS)):
        t = i / FPS
        s = next(seg for seg in segments if seg.start <= t < seg.end)
        out.append((s.clip, math.floor((s.trim + t - s.start) * FPS + 1e-6)))
    return out


def shown_sequence(path: Path) -> list[tuple[str, int]]:
    """(clip, source frame) each frame of ``path`` shows: colour and burnt-in counter."""
    names = [s.clip for s in SEGMENTS]
    # synth's moving picture is colour x 0.6 + 50 under stripes that average out.
    means = np.array([[c * 0.6 + 50 for c in s.color] for s in SEGMENTS], np.float32)
    out: list[tuple[str, int]] = []
    for rgb in harness.decode_rgb(path, CHECK_SIZE):
        top: npt.NDArray[np.float32] = rgb[: CHECK_SIZE[1] // 2].reshape(-1, 3).mean(axis=0)
        clip = names[int(np.argmin(((means - top) ** 2).sum(axis=1)))]
        out.append((clip, synth.read_counter(rgb)))
    return out


def sound_check(path: Path, segments: tuple[Segment, ...]) -> harness.Json:
    """Which clip's tone sounds in each 100 ms window, against the timeline's segments
    (windows within 50 ms of a cut are skipped)."""
    rate, window = 48000, 4800
    samples = harness.decode_audio(path).mean(axis=0)
    tones = np.array([s.tone_hz for s in SEGMENTS])
    wrong: list[float] = []
    silent: list[float] = []
    for k in range(int(DURATION * 10)):
        lo, hi = k * window, (k + 1) * window
        t0, t1 = lo / rate, hi / rate
        if any(t0 - 0.05 < seg.start < t1 + 0.05 for seg in segments[1:]):
            continue
        block = samples[lo:hi]
        if len(block) < window or float(np.sqrt(np.mean(block**2))) < 0.01:
            silent.append(round(t0, 1))
            continue
        spectrum = np.abs(np.fft.rfft(block * np.hanning(window)))
        peak = float(np.fft.rfftfreq(window, 1 / rate)[int(np.argmax(spectrum))])
        heard = SEGMENTS[int(np.argmin(np.abs(tones - peak)))]
        want = next(seg for seg in segments if seg.start <= (t0 + t1) / 2 < seg.end)
        if heard.clip != want.clip:
            wrong.append(round(t0, 1))
    return {"wrong_windows_s": wrong, "silent_windows_s": silent}


def _describe(shown: list[tuple[str, int]], want: list[tuple[str, int]]) -> harness.Json:
    wrong = [i for i in range(min(len(shown), len(want))) if shown[i] != want[i]]
    runs: list[str] = []
    for r in _runs(wrong)[:6]:
        a, b = r
        runs.append(
            f"frames {a}-{b} show {_span(shown[a : b + 1])}, expected {_span(want[a : b + 1])}"
        )
    return {
        "frames": len(shown),
        "expected_frames": len(want),
        "wrong_frames": len(wrong) + abs(len(shown) - len(want)),
        "first_differences": runs,
        "frame_exact": not wrong and len(shown) == len(want),
    }


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def _span(frames: list[tuple[str, int]]) -> str:
    if not frames:
        return "nothing"
    first, last = frames[0], frames[-1]
    if first[0] == last[0]:
        return f"{first[0]}#{first[1]}-{last[1]}"
    return f"{first[0]}#{first[1]}..{last[0]}#{last[1]}"


def _check(
    contenders: list[harness.Contender], ffmpeg: str, segments: tuple[Segment, ...]
) -> harness.Json:
    want = expected_sequence(segments)
    problems: list[str] = []
    notes: list[str] = []
    outputs: dict[str, harness.Json] = {}
    for c in contenders:
        info = harness.inspect(c.output)
        content = _describe(shown_sequence(c.output), want)
        if c.name.startswith("rendermill"):
            info["mode"] = harness.rendermill_mode(c.runs[-1].stdout)
            info["summary"] = c.runs[-1].stdout.strip()
        info["content"] = content
        info["decode_errors"] = harness.decode_errors(ffmpeg, c.output)
        info["sound"] = sound_check(c.output, segments)
        if info["sound"]["wrong_windows_s"] or info["sound"]["silent_windows_s"]:
            (notes if c.name == "ffmpeg-copy" else problems).append(
                f"{c.name}: sound from the wrong clip at {info['sound']['wrong_windows_s']} s, "
                f"silent at {info['sound']['silent_windows_s']} s"
            )
        if info["decode_errors"]:
            # ffmpeg-copy's extra packets before a mid-GOP inpoint get clashing timestamps.
            (notes if c.name == "ffmpeg-copy" else problems).append(
                f"{c.name}: ffmpeg reports decode errors: {info['decode_errors'][0]}"
            )
        audio = info.get("audio", {}).get("stream_s")
        if not content["frame_exact"]:
            line = (
                f"{c.name}: {content['frames']} frames, {content['wrong_frames']} not what the "
                "timeline shows"
            )
            # The concat demuxer cuts on packets: inexact by design, a finding, not a fault
            # of the benchmark or of rendermill.
            (notes if c.name == "ffmpeg-copy" else problems).append(line)
        if audio is None or abs(audio - DURATION) > 0.05:
            problems.append(f"{c.name}: audio lasts {audio} s, expected {DURATION:g}")
        outputs[c.name] = info
    if "rendermill" in outputs and not outputs["rendermill"].get("mode", "").startswith(
        "stream copy"
    ):
        problems.append(
            "rendermill --copy auto composed instead of stream-copying "
            f"({outputs['rendermill'].get('mode')})"
        )
    return {"outputs": outputs, "notes": notes, "problems": problems}


def _print_checks(checks: harness.Json) -> None:
    for name, info in checks["outputs"].items():
        v, a, content = info.get("video", {}), info.get("audio", {}), info["content"]
        mode = f" [{info['mode']}]" if "mode" in info else ""
        exact = "frame exact" if content["frame_exact"] else f"{content['wrong_frames']} wrong"
        print(
            f"  {name:<19}{mode} {content['frames']}/{content['expected_frames']} frames, "
            f"{exact}; video {v.get('stream_s')} s, audio {a.get('stream_s')} s, "
            f"{info['size_mb']} MB"
        )
        for line in content["first_differences"]:
            print(f"      {line}")
        for line in info["decode_errors"]:
            print(f"      decode error: {line}")
    for note in checks["notes"]:
        print(f"  note: {note}")
    for problem in checks["problems"]:
        print(f"  PROBLEM: {problem}")


if __name__ == "__main__":
    sys.exit(main())
