"""Peak memory of a 1080p render against the timeline's length: is it flat in duration?

The timeline, ``--short`` (10 s) and ``--long`` (120 s) long, on a 1920x1080 canvas:

- a 20 s 1080p H.264 clip (moving picture, 440 Hz tone) covering the whole timeline,
  either as one action with ``loop`` (``loop`` layout: the reader wraps round and seeks
  back every 20 s) or as back-to-back actions of the same file, 20 s each by default
  (``actions`` layout: a reader is opened and released per action; with
  ``--action-seconds`` shorter than the clip each action starts at another point);
- a 480x270 PNG at 70 % opacity over the whole timeline (a blend on every frame);
- a 220 Hz music bed as long as the timeline at volume 0.5.

Decoded 1080p frames are 3 MB each, so a renderer that kept its sources' frames would
grow by about 90 MB per second of timeline; a streaming one stays flat. The target is a
120 s peak within 10 % of the 10 s peak, and no more than 350 MB. ffmpeg renders the
same timeline (``-stream_loop``) for reference. Each render's RSS is also sampled from
/proc twice a second to show how memory evolves during the render.

    python3 dev.py bench memory
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import compose, harness

CLIP = harness.ClipSpec("memory-loop", (60, 160, 90), 20.0, 440.0)
TARGET_GROWTH = 0.10
TARGET_PEAK_MB = 350.0
LAYOUTS = ("loop", "actions")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    harness.add_common_arguments(p, runs=1)
    p.set_defaults(warmup=0)
    p.add_argument("--short", type=float, default=10.0, help="short timeline (default 10 s)")
    p.add_argument("--long", type=float, default=120.0, help="long timeline (default 120 s)")
    p.add_argument(
        "--layout",
        choices=(*LAYOUTS, "both"),
        default="both",
        help="how the long timeline uses the clip (default both)",
    )
    p.add_argument(
        "--action-seconds",
        type=float,
        default=CLIP.duration,
        help="length of each action in the actions layout (default 20: the whole clip)",
    )
    p.add_argument("--no-ffmpeg", action="store_true", help="skip the ffmpeg reference renders")
    args = p.parse_args(argv)
    return harness.guarded(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    ffmpeg = harness.ffmpeg_exe(args.media_dir)
    machine = harness.machine_info(ffmpeg)
    fps: int = args.fps
    short: float = args.short
    long: float = args.long
    layouts = list(LAYOUTS) if args.layout == "both" else [args.layout]
    clip = harness.ensure_clips(args.media_dir, [CLIP])[CLIP.name]
    png = harness.ensure_png(
        args.media_dir, "overlay", size=compose.OVERLAY, alpha=compose.OVERLAY_ALPHA
    )
    music = harness.ensure_audio(args.media_dir, "music", tone_hz=220.0, duration=long)

    work = harness.WorkDir(args.keep)
    try:

        def rendermill(duration: float, layout: str) -> harness.Contender:
            name = f"rendermill {duration:g}s {layout}"
            slug = name.replace(" ", "-")
            spec = _project(duration, layout, args.action_seconds)
            project = harness.write_project(work.path / f"{slug}.json", spec)
            out = work.path / f"{slug}.mp4"
            argv = [
                *harness.rendermill_argv(),
                "render",
                str(project),
                "-o",
                str(out),
                "--media",
                f"/bench/clip.mp4={clip}",
                "--media",
                f"/bench/overlay.png={png}",
                "--media",
                f"/bench/music.m4a={music}",
                "--resolution",
                "1080p",
                "--fps",
                str(fps),
                "--quiet",
            ]
            return harness.Contender(name, argv, out, duration)

        def ffmpeg_ref(duration: float) -> harness.Contender:
            out = work.path / f"ffmpeg-{duration:g}s.mp4"
            argv = [
                *harness.ffmpeg_quiet(ffmpeg),
                "-stream_loop",
                "-1",
                "-t",
                f"{duration:g}",
                "-i",
                str(clip),
                "-i",
                str(png),
                "-t",
                f"{duration:g}",
                "-i",
                str(music),
                "-filter_complex",
                _filter_graph(duration, fps),
                "-map",
                "[vout]",
                "-map",
                "[aout]",
                *compose.encode_args(out),
            ]
            return harness.Contender(f"ffmpeg {duration:g}s", argv, out, duration)

        contenders = [rendermill(short, "loop")]
        contenders += [rendermill(long, layout) for layout in layouts]
        if not args.no_ffmpeg:
            contenders += [ffmpeg_ref(short), ffmpeg_ref(long)]
        print(
            f"memory: {short:g} s and {long:g} s timelines ({', '.join(layouts)}), 1080p @ "
            f"{fps} fps, {args.runs} run(s) each, RSS sampled every 0.5 s"
        )
        harness.run_interleaved(contenders, runs=args.runs, warmup=args.warmup, sample_every=0.5)
        print()
        harness.print_table(contenders)
        verdicts = _verdicts(contenders, short, long, fps)
        _print_memory(contenders, verdicts)
        harness.write_json(
            args,
            "memory",
            {
                "script": "memory",
                "machine": machine,
                "config": {
                    "short_s": short,
                    "long_s": long,
                    "layouts": layouts,
                    "fps": fps,
                    "runs": args.runs,
                    "sources": {"clip": str(clip), "overlay": str(png), "music": str(music)},
                    "target": {"growth": TARGET_GROWTH, "peak_mb": TARGET_PEAK_MB},
                },
                "contenders": {c.name: c.to_json() for c in contenders},
                "verdicts": verdicts,
            },
        )
        return 0 if all(v["ok"] for v in verdicts) else 1
    finally:
        work.close()


def _project(duration: float, layout: str, length: float) -> harness.Json:
    if layout == "loop":
        clips = [{"start": 0, "end": duration, "trimStart": 0, "loop": True}]
    else:
        clips = [
            # Each action plays the clip from a different point, so that each one seeks.
            {
                "start": k * length,
                "end": min((k + 1) * length, duration),
                "trimStart": (k * length) % max(CLIP.duration - length, 1.0),
            }
            for k in range(math.ceil(duration / length))
        ]
    x, y = compose.OVERLAY_AT
    return harness.project(
        f"memory-{layout}",
        f"{duration:g} s of a 20 s clip ({layout}), overlay and music",
        [
            {
                "id": "track-clip",
                "name": "clip",
                "controllerName": "video",
                "url": "/bench/clip.mp4",
                "actions": [
                    {"id": f"action-clip-{i}", "name": f"clip {i}", "fit": "fill", **a}
                    for i, a in enumerate(clips)
                ],
            },
            {
                "id": "track-overlay",
                "name": "overlay",
                "controllerName": "image",
                "url": "/bench/overlay.png",
                "actions": [
                    {
                        "id": "action-logo",
                        "name": "logo",
                        "start": 0,
                        "end": duration,
                        "fit": "none",
                        "x": x,
                        "y": y,
                    }
                ],
            },
            {
                "id": "track-music",
                "name": "music",
                "controllerName": "audio",
                "url": "/bench/music.m4a",
                "actions": [
                    {
                        "id": "action-bed",
                        "name": "bed",
                        "start": 0,
                        "end": duration,
                        "volume": [[compose.BED_VOLUME]],
                    }
                ],
            },
        ],
    )


def _filter_graph(duration: float, fps: int) -> str:
    x, y = compose.OVERLAY_AT
    w, h = compose.OVERLAY
    return ";".join(
        [
            f"[0:v]trim=end={duration:g},setpts=PTS-STARTPTS,fps={fps}[base]",
            f"[1:v]scale={w}:{h}:flags=bilinear,format=yuva420p[logo]",
            f"[base][logo]overlay=x={x}:y={y}:format=yuv420:eof_action=repeat[vout]",
            f"[0:a]atrim=end={duration:g},asetpts=PTS-STARTPTS[a0]",
            f"[2:a]volume={compose.BED_VOLUME:g}[bed]",
            "[a0][bed]amix=inputs=2:duration=first:normalize=0[aout]",
        ]
    )


def _verdicts(
    contenders: list[harness.Contender], short: float, long: float, fps: int
) -> list[harness.Json]:
    """Per long rendermill render: growth over the short one, against the targets; and
    whether every output has the frames and the sound it should."""
    base = contenders[0]
    out: list[harness.Json] = []
    for c in contenders:
        info = harness.inspect(c.output)
        want = harness.expected_frames(c.duration, fps)
        frames = info.get("video", {}).get("packets")
        audio = info.get("audio", {}).get("stream_s")
        problems: list[str] = []
        if frames != want:
            problems.append(f"{frames} frames, expected {want}")
        if audio is None or abs(audio - c.duration) > 0.05:
            problems.append(f"audio lasts {audio} s, expected {c.duration:g}")
        verdict: harness.Json = {
            "name": c.name,
            "peak_rss_mb": round(c.rss, 1),
            "frames": frames,
            "audio_s": audio,
            "rss_trend_mb_per_min": _trend(c),
            "problems": problems,
        }
        if c.name.startswith("rendermill") and c.duration == long:
            growth = c.rss / base.rss - 1
            verdict["growth_vs_short"] = round(growth, 3)
            if growth > TARGET_GROWTH:
                problems.append(
                    f"peak {c.rss:.0f} MB is {growth:.0%} above the {short:g} s render's "
                    f"{base.rss:.0f} MB (target {TARGET_GROWTH:.0%})"
                )
            if c.rss > TARGET_PEAK_MB:
                problems.append(f"peak {c.rss:.0f} MB is above {TARGET_PEAK_MB:.0f} MB")
        verdict["ok"] = not problems
        out.append(verdict)
    return out


def _trend(c: harness.Contender) -> float | None:
    """RSS slope from a quarter to nine tenths of the last run's wall time (past start-up,
    before the final flush and teardown), in MB per minute."""
    last = c.runs[-1]
    half = [s for s in last.rss_samples if 0.25 * last.wall <= s[0] <= 0.9 * last.wall]
    if len(half) < 4:
        return None
    t = np.array([s[0] for s in half])
    mb = np.array([s[1] for s in half])
    slope = float(np.polyfit(t, mb, 1)[0]) * 60
    return round(slope, 2)


def _print_memory(contenders: list[harness.Contender], verdicts: list[harness.Json]) -> None:
    print("\nRSS during the last run (MB at 10/25/50/75/100 % of its wall time):")
    for c, v in zip(contenders, verdicts, strict=True):
        samples = c.runs[-1].rss_samples
        points = []
        for q in (0.1, 0.25, 0.5, 0.75, 1.0):
            at = [mb for t, mb in samples if t <= q * c.runs[-1].wall]
            points.append(f"{at[-1]:5.0f}" if at else "    -")
        growth = f", {v['growth_vs_short']:+.1%} vs short" if "growth_vs_short" in v else ""
        print(
            f"  {c.name:<26} {' '.join(points)}   peak {v['peak_rss_mb']:.0f}{growth}, "
            f"trend {v['rss_trend_mb_per_min']} MB/min"
        )
        for problem in v["problems"]:
            print(f"    PROBLEM: {problem}")


if __name__ == "__main__":
    sys.exit(main())
