"""rendermill against the ffmpeg command line on the reference composed timeline.

The timeline (20 s by default, 1920x1080 canvas):

- clip A (1080p H.264, moving picture, 440 Hz tone) from 0 to 10 s, trimStart 0;
- clip B (same, 660 Hz) from 10 to 20 s, trimStart 2: a hard cut at 10 s;
- a 480x270 PNG with alpha (uniform 70 % opacity, so every covered pixel blends) at
  x=1380, y=60 from 4 to 12 s: an image track, fit "none", i.e. drawn at its own size;
- a music bed (220 Hz) on an audio track for the whole timeline at volume 0.5, mixed
  under the clips' own sound.

Equal work: the PNG is made at 480x270 so that neither side scales it per frame
(rendermill converts a still once; ffmpeg reads it as one frame that ``overlay`` repeats,
and its ``scale`` to 480x270 runs once). Both blend in YUV 4:2:0 on every frame from 4
to 12 s; both seek into clip B rather than decode its first 2 s; both encode libx264
veryfast crf 23 yuv420p with AAC 128 kb/s 48 kHz stereo into mp4 with +faststart.

With ``--hdr`` both clips are HEVC Main 10 in HLG (BT.2020), as phones record, and both
sides map them into BT.709 SDR with swscale's colour management (ffmpeg: ``scale`` with
``out_transfer``/``out_primaries``/``out_color_matrix`` bt709 on each clip).

With ``--moviepy``, MoviePy 2.x renders the same timeline as a third contender
(bench/moviepy_compose.py, a child process like the others; off by default: it is
several times slower). Its ffmpeg children's CPU and RSS are in its wait4 figures; the
script also reports its own Python process apart from them.

    python3 dev.py bench compose
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

# Run as a script (python bench/compose.py), the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness

# Name, colour and tone of the two clips.
CLIP_A = ("compose-a", (200, 40, 40), 440.0)
CLIP_B = ("compose-b", (40, 80, 200), 660.0)
OVERLAY = (480, 270)
OVERLAY_AT = (1380, 60)
OVERLAY_ALPHA = 178  # about 70 % opaque
BED_VOLUME = 0.5
TRIM_B = 2.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    harness.add_common_arguments(p)
    p.add_argument("--duration", type=float, default=20.0, help="timeline seconds (default 20)")
    p.add_argument("--resolution", default="1080p", help="output size (default 1080p)")
    p.add_argument(
        "--hdr",
        action="store_true",
        help="clips in HEVC Main 10 HLG (generated once), mapped to BT.709 SDR by both sides",
    )
    p.add_argument(
        "--moviepy",
        action="store_true",
        help="add MoviePy as a third contender (slow; needs the bench group, 1080p only)",
    )
    args = p.parse_args(argv)
    if args.moviepy and harness.output_size(args.resolution) != harness.CANVAS:
        raise SystemExit("--moviepy renders at the canvas size: use --resolution 1080p")
    return harness.guarded(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    duration: float = args.duration
    fps: int = args.fps
    out_size = harness.output_size(args.resolution)
    cut = duration / 2
    ffmpeg = harness.ffmpeg_exe(args.media_dir)
    machine = harness.machine_info(ffmpeg)

    # Each clip a little longer than it shows, as a real edit would be.
    clip_len = cut + TRIM_B
    specs = [
        harness.ClipSpec(name, rgb, clip_len, hz, hlg=args.hdr)
        for name, rgb, hz in (CLIP_A, CLIP_B)
    ]
    clips = harness.ensure_clips(args.media_dir, specs)
    clip_a, clip_b = clips[CLIP_A[0]], clips[CLIP_B[0]]
    png = harness.ensure_png(args.media_dir, "overlay", size=OVERLAY, alpha=OVERLAY_ALPHA)
    music = harness.ensure_audio(args.media_dir, "music", tone_hz=220.0, duration=duration)
    ov_start, ov_end = 0.2 * duration, 0.6 * duration

    work = harness.WorkDir(args.keep)
    try:
        project = harness.write_project(
            work.path / "compose.json",
            _project(duration, cut, ov_start, ov_end),
        )
        rendermill = harness.Contender(
            "rendermill",
            [
                *harness.rendermill_argv(),
                "render",
                str(project),
                "-o",
                str(work.path / "rendermill.mp4"),
                "--media",
                f"/bench/clip-a.mp4={clip_a}",
                "--media",
                f"/bench/clip-b.mp4={clip_b}",
                "--media",
                f"/bench/overlay.png={png}",
                "--media",
                f"/bench/music.m4a={music}",
                "--resolution",
                args.resolution,
                "--fps",
                str(fps),
                "--quality",
                "standard",
                "--quiet",
            ],
            work.path / "rendermill.mp4",
            duration,
        )
        graph = _filter_graph(duration, cut, ov_start, ov_end, out_size, fps, hdr=args.hdr)
        ff = harness.Contender(
            "ffmpeg",
            [
                *harness.ffmpeg_quiet(ffmpeg),
                "-i",
                str(clip_a),
                # Input seeking, like rendermill's reader: decoding starts at the
                # keyframe before trimStart, and ffmpeg drops what precedes it. (No -t:
                # it cuts sound on whole AAC frames; trim/atrim below cut exactly.)
                "-ss",
                f"{TRIM_B:g}",
                "-i",
                str(clip_b),
                "-i",
                str(png),
                "-i",
                str(music),
                "-filter_complex",
                graph,
                "-map",
                "[vout]",
                "-map",
                "[aout]",
                *encode_args(work.path / "ffmpeg.mp4"),
            ],
            work.path / "ffmpeg.mp4",
            duration,
        )
        contenders = [rendermill, ff]
        if args.moviepy:
            contenders.append(
                _moviepy_contender(
                    work.path / "moviepy.mp4",
                    (clip_a, clip_b, png, music),
                    ffmpeg,
                    duration,
                    cut,
                    (ov_start, ov_end),
                    fps,
                )
            )
        print(
            f"compose: {duration:g} s timeline, {out_size[0]}x{out_size[1]} @ {fps} fps, "
            f"{args.runs} runs each after {args.warmup} warm-up, interleaved"
        )
        harness.run_interleaved(contenders, runs=args.runs, warmup=args.warmup)
        checks = _check(contenders, duration, fps, out_size)
        print()
        harness.print_table(contenders)
        pairs = [harness.ratios(rendermill, ff)]
        if args.moviepy:
            pairs += [harness.ratios(rendermill, contenders[2]), harness.ratios(ff, contenders[2])]
        harness.print_ratios(pairs)
        harness.print_render_times(contenders, args.duration)
        _print_checks(checks)
        harness.write_json(
            args,
            "compose",
            {
                "script": "compose",
                "machine": machine,
                "config": {
                    "duration_s": duration,
                    "resolution": list(out_size),
                    "fps": fps,
                    "runs": args.runs,
                    "warmup": args.warmup,
                    "hdr": args.hdr,
                    "sources": {k: str(v) for k, v in clips.items()}
                    | {"overlay": str(png), "music": str(music)},
                    "ffmpeg_filter_complex": graph,
                },
                "contenders": {c.name: c.to_json() for c in contenders},
                "ratios": pairs,
                "checks": checks,
            },
        )
        return 1 if checks["problems"] else 0
    finally:
        work.close()


def _moviepy_contender(
    dest: Path,
    sources: tuple[Path, Path, Path, Path],
    ffmpeg: str,
    duration: float,
    cut: float,
    overlay: tuple[float, float],
    fps: int,
) -> harness.Contender:
    if importlib.util.find_spec("moviepy") is None:
        raise harness.BenchError(
            "moviepy is not installed: it is in the bench dependency group "
            "(python3 dev.py bench compose --moviepy installs it)"
        )
    x, y = OVERLAY_AT
    return harness.Contender(
        "moviepy",
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "moviepy_compose.py"),
            *(str(path) for path in sources),
            str(dest),
            "--ffmpeg",
            ffmpeg,
            "--duration",
            f"{duration:g}",
            "--cut",
            f"{cut:g}",
            "--trim-b",
            f"{TRIM_B:g}",
            "--overlay-start",
            f"{overlay[0]:g}",
            "--overlay-end",
            f"{overlay[1]:g}",
            "--overlay-x",
            str(x),
            "--overlay-y",
            str(y),
            "--bed-volume",
            f"{BED_VOLUME:g}",
            "--fps",
            str(fps),
            "--size",
            f"{harness.CANVAS[0]}x{harness.CANVAS[1]}",
        ],
        dest,
        duration,
    )


def _moviepy_usage(contender: harness.Contender) -> harness.Json:
    """The split moviepy_compose.py prints: its Python process against its ffmpeg
    children, per run and as medians."""
    runs: list[harness.Json] = []
    for m in contender.runs:
        for line in m.stdout.splitlines():
            if line.startswith("moviepy-usage: "):
                runs.append(json.loads(line.removeprefix("moviepy-usage: ")))
    keys = list(runs[0]) if runs else []
    return {
        "median": {k: round(statistics.median(r[k] for r in runs), 1) for k in keys},
        "runs": runs,
    }


def encode_args(dest: Path) -> list[str]:
    """rendermill's mp4 recipe, spelled for the ffmpeg command line."""
    return [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-movflags",
        "+faststart",
        "-y",
        str(dest),
    ]


def _project(duration: float, cut: float, ov_start: float, ov_end: float) -> harness.Json:
    x, y = OVERLAY_AT
    return harness.project(
        "compose",
        "two clips cut back to back, a PNG overlay and a music bed",
        [
            harness.track(
                "clip-a", "video", [harness.action("a", 0, cut, trimStart=0, fit="fill")]
            ),
            harness.track(
                "clip-b",
                "video",
                [harness.action("b", cut, duration, trimStart=TRIM_B, fit="fill")],
            ),
            harness.track(
                "overlay", "image", [harness.action("logo", ov_start, ov_end, fit="none", x=x, y=y)]
            ),
            harness.track(
                "music",
                "audio",
                [harness.action("bed", 0, duration, volume=[[BED_VOLUME]])],
                ext="m4a",
            ),
        ],
    )


def _filter_graph(
    duration: float,
    cut: float,
    ov_start: float,
    ov_end: float,
    out_size: tuple[int, int],
    fps: int,
    *,
    hdr: bool = False,
) -> str:
    place = harness.Placement.of(out_size)
    # Clips fill the canvas; the canvas lands in the frame as rendermill places it.
    cx, cy, cw, ch = place.rect(0, 0, *harness.CANVAS)
    ox, oy, ow, oh = place.rect(*OVERLAY_AT, *OVERLAY)
    ow_, oh_ = out_size
    options = [] if (cw, ch) == harness.CANVAS else [f"{cw}:{ch}:flags=bilinear"]
    if hdr:
        # swscale's colour management, as rendermill asks it for HDR sources.
        options.append("out_color_matrix=bt709:out_primaries=bt709:out_transfer=bt709")
    scale = f",scale={':'.join(options)}" if options else ""
    scale += ",format=yuv420p" if hdr else ""
    pad = "" if (cw, ch) == out_size else f",pad={ow_}:{oh_}:{cx}:{cy}:black"
    # overlay's enable is inclusive at both ends; rendermill shows an action while
    # start <= t < end.
    return ";".join(
        [
            # Clip B starts at trimStart already (-ss); trim and atrim cut the ends exactly.
            f"[0:v]trim=end={cut:g},setpts=PTS-STARTPTS{scale}[v0]",
            f"[1:v]trim=end={duration - cut:g},setpts=PTS-STARTPTS{scale}[v1]",
            f"[0:a]atrim=end={cut:g},asetpts=PTS-STARTPTS[a0]",
            f"[1:a]atrim=end={duration - cut:g},asetpts=PTS-STARTPTS[a1]",
            "[v0][a0][v1][a1]concat=n=2:v=1:a=1[vcat][acat]",
            f"[vcat]fps={fps}{pad}[base]",
            f"[2:v]scale={ow}:{oh}:flags=bilinear,format=yuva420p[logo]",
            f"[base][logo]overlay=x={ox}:y={oy}:format=yuv420:eof_action=repeat"
            f":enable='gte(t,{ov_start:g})*lt(t,{ov_end:g})'[vout]",
            f"[3:a]atrim=end={duration:g},volume={BED_VOLUME:g}[bed]",
            "[acat][bed]amix=inputs=2:duration=first:normalize=0[aout]",
        ]
    )


def _check(
    contenders: list[harness.Contender], duration: float, fps: int, size: tuple[int, int]
) -> harness.Json:
    """Both outputs inspected and compared; ``problems`` lists what looks wrong."""
    problems: list[str] = []
    want = harness.expected_frames(duration, fps)
    infos = {c.name: harness.inspect(c.output) for c in contenders}
    for name, info in infos.items():
        video = info.get("video", {})
        if video.get("packets") != want:
            problems.append(f"{name}: {video.get('packets')} frames, expected {want}")
        if video.get("size") != f"{size[0]}x{size[1]}":
            problems.append(f"{name}: picture is {video.get('size')}, expected {size}")
        audio = info.get("audio")
        if audio is None:
            problems.append(f"{name}: no audio stream")
        elif audio.get("stream_s") is not None and abs(audio["stream_s"] - duration) > 0.05:
            problems.append(f"{name}: audio lasts {audio['stream_s']} s, expected {duration:g}")
    problems += harness.compare_settings(infos)
    rendermill, ff = contenders[:2]
    mode = harness.rendermill_mode(rendermill.runs[-1].stdout)
    ff_luma = harness.decode_luma(ff.output)
    pictures = harness.compare_pictures(harness.decode_luma(rendermill.output), ff_luma)
    if pictures["misaligned_frames"]:
        problems.append(f"frames that match a neighbour better: {pictures['misaligned_frames']}")
    ff_audio = harness.decode_audio(ff.output)
    sound = harness.compare_sound(harness.decode_audio(rendermill.output), ff_audio, 48000)
    if sound["max_level_diff_db"] is not None and sound["max_level_diff_db"] > 1.0:
        problems.append(
            f"sound levels differ by {sound['max_level_diff_db']} dB at "
            f"{sound['max_level_diff_at_s']} s"
        )
    checks: harness.Json = {
        "expected_frames": want,
        "rendermill_mode": mode,
        "rendermill_summary": rendermill.runs[-1].stdout.strip(),
        "outputs": infos,
        "pictures_rendermill_vs_ffmpeg": pictures,
        "sound_rendermill_vs_ffmpeg": sound,
    }
    for other in contenders[2:]:
        # MoviePy's output against ffmpeg's, the reference the other two are held to.
        pics = harness.compare_pictures(harness.decode_luma(other.output), ff_luma)
        if pics["misaligned_frames"]:
            problems.append(
                f"{other.name}: frames that match a neighbour better: {pics['misaligned_frames']}"
            )
        snd = harness.compare_sound(harness.decode_audio(other.output), ff_audio, 48000)
        if snd["max_level_diff_db"] is not None and snd["max_level_diff_db"] > 1.0:
            problems.append(
                f"{other.name}: sound levels differ from ffmpeg's by {snd['max_level_diff_db']} "
                f"dB at {snd['max_level_diff_at_s']} s"
            )
        checks[f"pictures_{other.name}_vs_ffmpeg"] = pics
        checks[f"sound_{other.name}_vs_ffmpeg"] = snd
        checks[f"{other.name}_usage"] = _moviepy_usage(other)
    checks["problems"] = problems
    return checks


def _print_checks(checks: harness.Json) -> None:
    print(f"rendermill path: {checks['rendermill_mode']}")
    for name, info in checks["outputs"].items():
        v, a = info.get("video", {}), info.get("audio", {})
        print(
            f"  {name:<11} {v.get('packets')} frames {v.get('size')} {v.get('stream_s')} s video, "
            f"{a.get('stream_s')} s audio, {info['size_mb']} MB, x264 {info.get('x264', {})}"
        )
    pic = checks["pictures_rendermill_vs_ffmpeg"]
    print(
        f"  pictures: PSNR median {pic['psnr_median_db']} dB, min {pic['psnr_min_db']} dB "
        f"(frame {pic['psnr_min_frame']}), misaligned {pic['misaligned_frames'] or 'none'}"
    )
    snd = checks["sound_rendermill_vs_ffmpeg"]
    print(
        f"  sound: RMS {snd['rms']}, largest level difference {snd['max_level_diff_db']} dB "
        f"at {snd['max_level_diff_at_s']} s"
    )
    if "pictures_moviepy_vs_ffmpeg" in checks:
        pic, snd = checks["pictures_moviepy_vs_ffmpeg"], checks["sound_moviepy_vs_ffmpeg"]
        print(
            f"  moviepy vs ffmpeg: PSNR median {pic['psnr_median_db']} dB, min "
            f"{pic['psnr_min_db']} dB (frame {pic['psnr_min_frame']}), misaligned "
            f"{pic['misaligned_frames'] or 'none'}; largest sound level difference "
            f"{snd['max_level_diff_db']} dB at {snd['max_level_diff_at_s']} s"
        )
        use = checks["moviepy_usage"]["median"]
        if use:
            print(
                f"  moviepy split (medians): Python process {use['python_cpu_s']} CPU s, "
                f"peak RSS {use['python_peak_rss_mb']} MB; ffmpeg children "
                f"{use['ffmpeg_children_cpu_s']} CPU s, largest peak RSS "
                f"{use['ffmpeg_children_max_rss_mb']} MB; all processes together peak "
                f"{use['tree_peak_pss_mb']} MB PSS ({use['tree_peak_processes']:g} processes)"
            )
    for problem in checks["problems"]:
        print(f"  PROBLEM: {problem}")


if __name__ == "__main__":
    sys.exit(main())
