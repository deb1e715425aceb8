"""A 4K phone clip rendered at 1080p, by rendermill given a few CPU counts and by ffmpeg.

    python bench/phone.py [--hdr] [--cpus 2,16] [--duration 10] [--runs 3]

The timeline: one 3840x2160 30 fps clip (H.264, or with ``--hdr`` HEVC Main 10 in HLG,
as phones record), filling a 1080p30 frame with its own sound; libx264 veryfast crf 23 +
AAC 128k. ffmpeg scales it with ``scale=1920:1080:flags=bilinear`` (and with ``--hdr``
maps it into BT.709 SDR as rendermill does).

The question is memory: every decoder and encoder thread holds pictures, and 4K
pictures are four times 1080p ones. rendermill runs once per ``--cpus`` value (its
``--cpus`` option, ``RENDERMILL_CPUS`` in the service), which sizes its threads: the
first value is held to ffmpeg (same x264 settings, threads included, when it is this
machine's CPU count); larger values show, on this machine, the threads a render would
run on a machine or in a container that counts that many cores.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import compose, harness

SIZE = (3840, 2160)
CLIP = ("phone", (60, 140, 90), 523.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    harness.add_common_arguments(p)
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--hdr", action="store_true", help="HEVC Main 10 HLG instead of H.264")
    p.add_argument(
        "--cpus",
        default=f"{len(os.sched_getaffinity(0))},16",
        help="rendermill's --cpus values, comma-separated (default: this machine's, 16)",
    )
    args = p.parse_args(argv)
    return harness.guarded(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    duration: float = args.duration
    fps: int = args.fps
    cpus = [int(c) for c in args.cpus.split(",") if c]
    ffmpeg = harness.ffmpeg_exe(args.media_dir)
    machine = harness.machine_info(ffmpeg)
    name, rgb, hz = CLIP
    spec = harness.ClipSpec(name, rgb, duration, hz, fps=fps, hlg=args.hdr, size=SIZE)
    clip = harness.ensure_clips(args.media_dir, [spec])[name]
    out_size = harness.CANVAS

    work = harness.WorkDir(args.keep)
    try:
        project = harness.write_project(work.path / "phone.json", _project(duration))
        contenders = []
        for n in cpus:
            out = work.path / f"rendermill-{n}.mp4"
            argv = [*harness.rendermill_argv(), "render", str(project), "-o", str(out)]
            argv += ["--media", f"/bench/phone.mp4={clip}", "--fps", str(fps)]
            argv += ["--cpus", str(n), "--copy", "never", "--quiet"]
            contenders.append(harness.Contender(f"rendermill --cpus {n}", argv, out, duration))
        scale = f"scale={out_size[0]}:{out_size[1]}:flags=bilinear"
        if args.hdr:
            # swscale's colour management, as rendermill asks it for HDR sources.
            scale += ",scale=out_color_matrix=bt709:out_primaries=bt709:out_transfer=bt709"
            scale += ",format=yuv420p"
        ff_out = work.path / "ffmpeg.mp4"
        ff_argv = [*harness.ffmpeg_quiet(ffmpeg), "-i", str(clip), "-vf", f"{scale},fps={fps}"]
        ff_argv += ["-t", f"{duration:g}", *compose.encode_args(ff_out)]
        ff = harness.Contender("ffmpeg", ff_argv, ff_out, duration)
        contenders.append(ff)
        kind = "HEVC Main 10 HLG" if args.hdr else "H.264"
        print(
            f"phone: {duration:g} s {SIZE[0]}x{SIZE[1]} {kind} clip at {out_size[0]}x"
            f"{out_size[1]} @ {fps} fps, {args.runs} runs each after {args.warmup} warm-up"
        )
        harness.run_interleaved(contenders, runs=args.runs, warmup=args.warmup)
        checks = _check(contenders, duration, fps)
        print()
        harness.print_table(contenders)
        harness.print_ratios([harness.ratios(c, ff) for c in contenders[:-1]])
        for name_, info in checks["outputs"].items():
            v = info.get("video", {})
            print(f"  {name_:<22} {v.get('packets')} frames {v.get('size')}, {info['size_mb']} MB")
        pic = checks["pictures"]
        print(
            f"  pictures ({contenders[0].name} vs ffmpeg): {pic['identical_frames']} of "
            f"{min(pic['frames'])} identical, PSNR of the others median {pic['psnr_median_db']}"
            f" dB, min {pic['psnr_min_db']} dB, misaligned {pic['misaligned_frames'] or 'none'}"
        )
        harness.write_json(
            args,
            "phone",
            {
                "script": "phone",
                "machine": machine,
                "config": {
                    "duration_s": duration,
                    "source": {"size": list(SIZE), "hdr": args.hdr, "path": str(clip)},
                    "output": list(out_size),
                    "fps": fps,
                    "cpus": cpus,
                    "runs": args.runs,
                    "warmup": args.warmup,
                },
                "contenders": [c.to_json() for c in contenders],
                "ratios": [harness.ratios(c, ff) for c in contenders[:-1]],
                "checks": checks,
            },
        )
        for problem in checks["problems"]:
            print(f"PROBLEM: {problem}")
        return 1 if checks["problems"] else 0
    finally:
        work.close()


def _project(duration: float) -> harness.Json:
    clip = harness.action("phone", 0, duration, fit="fill")
    return harness.project(
        "phone", "a 4K phone clip at 1080p", [harness.track("phone", "video", [clip])]
    )


def _check(contenders: list[harness.Contender], duration: float, fps: int) -> harness.Json:
    problems: list[str] = []
    want = harness.expected_frames(duration, fps)
    infos = {c.name: harness.inspect(c.output) for c in contenders}
    for name, info in infos.items():
        video = info.get("video", {})
        if video.get("packets") != want:
            problems.append(f"{name}: {video.get('packets')} frames, expected {want}")
        if info.get("audio") is None:
            problems.append(f"{name}: no audio stream")
    # The first rendermill and ffmpeg: the same x264 settings (threads included when
    # rendermill was given this machine's CPUs).
    first, ff = contenders[0], contenders[-1]
    problems += harness.compare_settings({first.name: infos[first.name], ff.name: infos[ff.name]})
    pictures = harness.compare_pictures(
        harness.decode_luma(first.output), harness.decode_luma(ff.output)
    )
    if pictures["misaligned_frames"]:
        problems.append(f"frames that match a neighbour better: {pictures['misaligned_frames']}")
    return {"expected_frames": want, "outputs": infos, "pictures": pictures, "problems": problems}


if __name__ == "__main__":
    raise SystemExit(main())
