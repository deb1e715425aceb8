"""A photo slideshow at 1080p: time and peak memory against the number of photos.

``--photos`` phone photos (4032x3024 JPEG, 12 megapixels, full-range BT.601 as cameras
write them; generated once), each filling the 1920x1080 canvas for ``--seconds`` (2 by
default), one image track each, over a 220 Hz music bed at volume 0.5. rendermill renders
it with ``--photos`` photos and with four times as many (``--more``); ffmpeg renders the
first with one filter graph: each photo decoded once, scaled, and repeated with ``loop``
(``-loop 1`` on the input would decode the JPEG again for every frame).

A decoded 12-megapixel photo takes 18 MB. A renderer that held its photos from the
start would grow by that much per photo; one that decodes a photo when it starts
showing, at the scale it is drawn, stays flat. The target: peak RSS with four times the
photos within 10 % of the first, and no more than 350 MB.

    python3 dev.py bench slideshow
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing as mp
import os
import sys
from pathlib import Path

import av
import numpy as np
from av.video.stream import VideoStream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import compose, harness

PHOTO = (4032, 3024)
TARGET_GROWTH = 0.10
TARGET_PEAK_MB = 350.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    harness.add_common_arguments(p, runs=3)
    p.add_argument("--photos", type=int, default=10, help="photos in the slideshow (default 10)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds each (default 2)")
    p.add_argument(
        "--more", type=int, default=4, help="rendermill also renders this many times the photos"
    )
    args = p.parse_args(argv)
    return harness.guarded(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    ffmpeg = harness.ffmpeg_exe(args.media_dir)
    machine = harness.machine_info(ffmpeg)
    fps: int = args.fps
    count: int = args.photos
    more = count * args.more
    seconds: float = args.seconds
    # Made in a process of its own: a child's peak RSS as wait4 reports it starts from
    # this process's peak, which making 12-megapixel pictures would raise to 0.5 GB.
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        photos = list(pool.map(_ensure_photo, [args.media_dir] * more, range(more)))
    music = harness.ensure_audio(args.media_dir, "music", tone_hz=220.0, duration=more * seconds)

    work = harness.WorkDir(args.keep)
    try:

        def rendermill(n: int) -> harness.Contender:
            name = f"rendermill {n} photos"
            spec = _project(n, seconds)
            project = harness.write_project(work.path / f"slideshow-{n}.json", spec)
            out = work.path / f"rendermill-{n}.mp4"
            media = [a for k in range(n) for a in ("--media", f"/bench/photo-{k}.jpg={photos[k]}")]
            argv = [
                *harness.rendermill_argv(),
                "render",
                str(project),
                "-o",
                str(out),
                *media,
                "--media",
                f"/bench/music.m4a={music}",
                "--resolution",
                "1080p",
                "--fps",
                str(fps),
                "--quiet",
            ]
            return harness.Contender(name, argv, out, n * seconds)

        out = work.path / f"ffmpeg-{count}.mp4"
        inputs = [a for k in range(count) for a in ("-i", str(photos[k]))]
        ffmpeg_argv = [
            *harness.ffmpeg_quiet(ffmpeg),
            *inputs,
            "-i",
            str(music),
            "-filter_complex",
            _filter_graph(count, seconds, fps),
            "-map",
            "[vout]",
            "-map",
            "[aout]",
            # The photos' frames are timed at the output rate, which their inputs (25
            # fps by default) would otherwise set.
            "-r",
            str(fps),
            *compose.encode_args(out),
        ]
        reference = harness.Contender(f"ffmpeg {count} photos", ffmpeg_argv, out, count * seconds)
        few, many = rendermill(count), rendermill(more)
        contenders = [few, reference, many]
        print(
            f"slideshow: {count} and {more} photos of {PHOTO[0]}x{PHOTO[1]}, {seconds:g} s "
            f"each, 1080p @ {fps} fps, {args.runs} run(s) each after {args.warmup} warm-up"
        )
        harness.run_interleaved(contenders, runs=args.runs, warmup=args.warmup, sample_every=0.5)
        print()
        harness.print_table(contenders)
        pair = harness.ratios(few, reference)
        harness.print_ratios([pair])
        growth = many.rss / few.rss - 1
        ok = growth <= TARGET_GROWTH and max(few.rss, many.rss) <= TARGET_PEAK_MB
        print(
            f"peak RSS with {more} photos against {count}: {growth * 100:+.1f} % "
            f"(target within {TARGET_GROWTH * 100:.0f} %, at most {TARGET_PEAK_MB:.0f} MB): "
            + ("ok" if ok else "MISSED")
        )
        infos = {c.name: harness.inspect(c.output) for c in contenders}
        problems = harness.compare_settings(infos)
        for c in contenders:
            video = infos[c.name]["video"]
            print(f"  {c.name:<24} {video['packets']} frames, {video['stream_s']} s video")
            if video["packets"] != round(c.duration * fps):
                problems.append(f"{c.name}: {video['packets']} frames, not {c.duration * fps:g}")
        pictures = harness.compare_pictures(
            harness.decode_luma(few.output), harness.decode_luma(reference.output)
        )
        print(
            f"  pictures: PSNR median {pictures['psnr_median_db']} dB, min "
            f"{pictures['psnr_min_db']} dB (frame {pictures['psnr_min_frame']}), misaligned "
            f"{', '.join(pictures['misaligned_frames']) or 'none'}"
        )
        if pictures["frames_below_30db"] or pictures["misaligned_frames"]:
            problems.append("the two renders of the slideshow do not show the same pictures")
        for problem in problems:
            print(f"  CHECK FAILED: {problem}")
        harness.write_json(
            args,
            "slideshow",
            {
                "script": "slideshow",
                "machine": machine,
                "config": {
                    "photos": count,
                    "more": more,
                    "seconds": seconds,
                    "fps": fps,
                    "runs": args.runs,
                    "photo_size": PHOTO,
                    "ffmpeg_filter_complex": _filter_graph(count, seconds, fps),
                },
                "contenders": {c.name: c.to_json() for c in contenders},
                "ratios": pair,
                "memory": {"growth": round(growth, 4), "ok": ok},
                "outputs": infos,
                "pictures": pictures,
                "checks": problems,
            },
        )
        return 0 if ok and not problems else 1
    finally:
        work.close()


def _ensure_photo(media_dir: Path, index: int) -> Path:
    """A 12-megapixel JPEG with the detail of a photo (blocks of colour at several
    scales), different for each index."""
    media_dir.mkdir(parents=True, exist_ok=True)
    dest = media_dir / f"photo-{PHOTO[0]}x{PHOTO[1]}-{index}.jpg"
    if dest.exists():
        return dest
    w, h = PHOTO
    rng = np.random.default_rng(index)
    picture = np.zeros((h, w, 3), np.float32)
    for cell in (504, 126, 18):
        blocks = rng.uniform(-1.0, 1.0, (h // cell + 1, w // cell + 1, 3)).astype(np.float32)
        picture += np.repeat(np.repeat(blocks, cell, 0), cell, 1)[:h, :w] * (cell**0.5)
    picture = (picture - picture.min()) / (picture.max() - picture.min()) * 255.0
    rgb = picture.astype(np.uint8)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp.jpg")
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    with av.open(str(tmp), "w", format="image2") as out:
        stream = out.add_stream("mjpeg", rate=1)
        assert isinstance(stream, VideoStream)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuvj420p"
        stream.options = {"qscale": "3"}
        picture_frame = frame.reformat(format="yuvj420p")
        picture_frame.pts = 0
        out.mux(stream.encode(picture_frame))
        out.mux(stream.encode(None))
    tmp.replace(dest)
    return dest


def _project(count: int, seconds: float) -> harness.Json:
    tracks: list[harness.Json] = [
        {
            "id": f"track-photo-{k}",
            "name": f"photo {k}",
            "controllerName": "image",
            "url": f"/bench/photo-{k}.jpg",
            "actions": [
                {
                    "id": f"action-photo-{k}",
                    "name": f"photo {k}",
                    "start": k * seconds,
                    "end": (k + 1) * seconds,
                    "fit": "fill",
                }
            ],
        }
        for k in range(count)
    ]
    tracks.append(
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
                    "end": count * seconds,
                    "volume": [[compose.BED_VOLUME]],
                }
            ],
        }
    )
    return harness.project(
        f"slideshow-{count}",
        f"{count} photos, {seconds:g} s each, over a music bed",
        tracks,
    )


def _filter_graph(count: int, seconds: float, fps: int) -> str:
    w, h = harness.CANVAS
    frames = round(seconds * fps)
    parts = [
        # Decoded once, brought to BT.709 limited range at the canvas size as rendermill
        # does, then repeated for the photo's frames.
        f"[{k}:v]scale={w}:{h}:flags=bicubic:out_color_matrix=bt709:out_range=tv,"
        f"format=yuv420p,setsar=1,loop=loop={frames - 1}:size=1:start=0,"
        f"settb=1/{fps},setpts=N[v{k}]"
        for k in range(count)
    ]
    parts.append("".join(f"[v{k}]" for k in range(count)) + f"concat=n={count}:v=1:a=0[vout]")
    parts.append(f"[{count}:a]atrim=end={count * seconds:g},volume={compose.BED_VOLUME}[aout]")
    return ";".join(parts)


if __name__ == "__main__":
    sys.exit(main())
