"""Encoding and muxing the rendered frames and samples into the output file."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.filter
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.video.codeccontext import VideoCodecContext
from av.video.format import VideoFormat
from av.video.frame import PictureType, VideoFrame
from av.video.reformatter import ColorRange, Colorspace, Interpolation
from av.video.stream import VideoStream

from rendermill.common import schemas
from rendermill.renderer.engine.audio import RATE, Samples
from rendermill.renderer.engine.compose import OUTPUT_COLORSPACE
from rendermill.renderer.engine.threads import Threads


@dataclasses.dataclass(frozen=True, slots=True)
class Recipe:
    muxer: str
    video_codec: str
    pix_fmt: str
    video_options: dict[str, str]
    audio_codec: str | None
    audio_bit_rate: int
    container_options: dict[str, str]
    # Each GIF frame gets its own palette (palettegen + paletteuse) instead of rgb8.
    adaptive_palette: bool = False


_MP4_MUX = {"movflags": "+faststart"}
_VP9 = {"b": "0", "row-mt": "1"}
# Per quality, "standard" being the long-standing defaults. Draft trades quality for
# speed (x264 superfast is ~1.5x faster than veryfast); high spends ~3-4x the encode
# time of standard for visibly fewer artefacts.
_H264: dict[schemas.Quality, dict[str, str]] = {
    "draft": {"preset": "superfast", "crf": "28"},
    "standard": {"preset": "veryfast", "crf": "23"},
    "high": {"preset": "medium", "crf": "18"},
}
# At the realtime deadline libvpx makes no alt-ref frames, so its default 25 frames of
# lag only hold pictures: 108 MB at 1080p for the same PSNR (45.9 against 45.7 dB) and 2 %
# more bytes measured without it. The high quality's good deadline uses them.
_VP9_QUALITY: dict[schemas.Quality, dict[str, str]] = {
    "draft": {"crf": "40", "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
    # Constant-quality VP9 at realtime speed: close to x264 veryfast in encode cost.
    "standard": {"crf": "32", "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
    "high": {"crf": "24", "deadline": "good", "cpu-used": "4"},
}
_AAC_RATE: dict[schemas.Quality, int] = {"draft": 96_000, "standard": 128_000, "high": 192_000}
_OPUS_RATE: dict[schemas.Quality, int] = {"draft": 64_000, "standard": 128_000, "high": 160_000}


def recipe_for(output: schemas.OutputSpec) -> Recipe:
    q = output.quality
    if output.format in ("mp4", "mov"):
        return Recipe(output.format, "libx264", "yuv420p", _H264[q], "aac", _AAC_RATE[q], _MP4_MUX)
    if output.format == "webm":
        options = _VP9 | _VP9_QUALITY[q]
        return Recipe("webm", "libvpx-vp9", "yuv420p", options, "libopus", _OPUS_RATE[q], {})
    # GIF has no sound. rgb8 is a fixed palette that swscale dithers to directly (draft
    # and standard); high computes a palette per frame, which is slower but keeps
    # gradients and skin tones.
    if q == "high":
        return Recipe("gif", "gif", "pal8", {}, None, 0, {}, adaptive_palette=True)
    return Recipe("gif", "gif", "rgb8", {}, None, 0, {})


# Samples per encoded audio frame; feeding exactly these keeps PyAV from re-chunking.
_AUDIO_FRAME = {"aac": 1024, "libopus": 960}


def audio_frame_size(codec: str) -> int:
    """Samples per frame the audio encoder ``codec`` takes."""
    return _AUDIO_FRAME.get(codec, 1024)


# AVColorPrimaries / AVColorTransferCharacteristic / AVColorSpace / AVColorRange values
# (libavutil/pixfmt.h): BT.709 everywhere, limited range, matching compose's matrix.
_BT709 = 1
_RANGE_MPEG = 1


class Encoder:
    """An open output file taking video frames and audio blocks in timeline order.

    Encoding and muxing run on a worker thread, in the order they were handed in, so the
    caller decodes and composes the next frames while the encoders work (the encoders
    release the GIL; x264's own threads stay busy). At most BACKLOG jobs wait; an error
    on the worker is raised by the next call.
    """

    BACKLOG = 4

    def __init__(
        self, dest: Path, output: schemas.OutputSpec, size: tuple[int, int], threads: Threads
    ) -> None:
        recipe = recipe_for(output)
        self._threads = threads
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="encode")
        self._pending: collections.deque[concurrent.futures.Future[None]] = collections.deque()
        self._recipe = recipe
        self._fps = output.fps
        self._palette: _AdaptivePalette | None = None
        self._container: av.container.OutputContainer = av.open(
            str(dest), "w", format=recipe.muxer, options=recipe.container_options
        )
        try:
            video = self._container.add_stream(recipe.video_codec, rate=output.fps)
            assert isinstance(video, VideoStream)
            video.width, video.height = size
            video.pix_fmt = recipe.pix_fmt
            ctx = video.codec_context
            ctx.time_base = Fraction(1, output.fps)
            if recipe.pix_fmt == "yuv420p":
                # Players guess the matrix of untagged video from its size; say it.
                ctx.colorspace = ctx.color_primaries = ctx.color_trc = _BT709
                ctx.color_range = _RANGE_MPEG
            video.options = dict(recipe.video_options)
            # PyAV defaults to slice threads; frame threads are ~30% faster for x264.
            ctx.thread_type = "FRAME"
            # x264 and libvpx would count every core the process may run on.
            ctx.thread_count = threads.x264 if recipe.video_codec == "libx264" else threads.per_cpu
            self._video = video
            if recipe.adaptive_palette:
                self._palette = _AdaptivePalette(size, output.fps, threads.per_cpu)
            self._audio: AudioStream | None = None
            if recipe.audio_codec is not None:
                audio = self._container.add_stream(recipe.audio_codec, rate=RATE)
                assert isinstance(audio, AudioStream)
                audio.layout = "stereo"
                audio.bit_rate = recipe.audio_bit_rate
                self._audio = audio
        except BaseException:
            self._container.close()
            self._pool.shutdown()
            raise

    @property
    def audio_block(self) -> int | None:
        """How many samples each audio block should hold; None when there is no audio."""
        if self._audio is None:
            return None
        return audio_frame_size(self._audio.codec_context.name)

    def video(self, frame: VideoFrame, index: int) -> None:
        """Encode ``frame`` (BT.709 YUV, as compose makes it) as output frame ``index``.

        The frame's pixels must not change afterwards (the worker reads them later).
        """
        self._submit(self._encode_video, frame, index)

    def audio(self, samples: Samples, first: int) -> None:
        """Encode stereo ``samples`` (2 x n float32) starting at output sample ``first``."""
        if self._audio is None:
            return
        self._submit(self._encode_audio, np.ascontiguousarray(samples), first)

    def finish(self) -> None:
        """Flush the encoders and write the trailer; the file is complete afterwards."""
        self._submit(self._flush)
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown()

    def abort(self) -> None:
        """Close the file without finishing it (the caller deletes it)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        with contextlib.suppress(av.FFmpegError, OSError):
            self._container.close()

    def _submit(self, job: Callable[..., None], *args: object) -> None:
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.BACKLOG):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(job, *args))

    def _encode_video(self, frame: VideoFrame, index: int) -> None:
        frame.pts = index
        frame.time_base = Fraction(1, self._fps)
        # A decoded frame remembers its own picture type, which would force the encoder
        # to copy the source's GOP structure.
        frame.pict_type = PictureType.NONE
        if self._palette is not None:
            for paletted in self._palette.convert(frame):
                self._container.mux(self._video.encode(paletted))
            return
        if frame.format.name != self._recipe.pix_fmt:
            # A frame passed straight from a decoder may be untagged: name its matrix.
            frame = frame.reformat(
                format=self._recipe.pix_fmt,
                src_colorspace=OUTPUT_COLORSPACE,
                threads=self._threads.per_cpu,
            )
        self._container.mux(self._video.encode(frame))

    def _encode_audio(self, samples: Samples, first: int) -> None:
        assert self._audio is not None
        frame = AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = first
        frame.time_base = Fraction(1, RATE)
        self._container.mux(self._audio.encode(frame))

    def _flush(self) -> None:
        if self._palette is not None:
            for paletted in self._palette.convert(None):
                self._container.mux(self._video.encode(paletted))
        self._container.mux(self._video.encode(None))
        if self._audio is not None:
            self._container.mux(self._audio.encode(None))
        self._container.close()


class _AdaptivePalette:
    """RGB frames in, pal8 frames with a palette made for each frame out."""

    def __init__(self, size: tuple[int, int], fps: int, threads: int) -> None:
        self._threads = threads
        graph = av.filter.Graph()
        # Frames go in as RGB (converted with the known matrix), so that no filter has
        # to guess how to read YUV.
        source = graph.add_buffer(
            width=size[0],
            height=size[1],
            format=VideoFormat("rgb24"),
            time_base=Fraction(1, fps),
        )
        split = graph.add("split")
        palettegen = graph.add("palettegen", "stats_mode=single:reserve_transparent=0")
        paletteuse = graph.add("paletteuse", "new=1:dither=sierra2_4a")
        sink = graph.add("buffersink")
        source.link_to(split)
        split.link_to(paletteuse, 0, 0)
        split.link_to(palettegen, 1, 0)
        palettegen.link_to(paletteuse, 0, 1)
        paletteuse.link_to(sink)
        graph.configure()
        self._graph = graph

    def convert(self, frame: VideoFrame | None) -> list[VideoFrame]:
        """Push ``frame`` (None at the end) and return the frames that came out."""
        if frame is None:
            self._graph.push(None)
        else:
            rgb = frame.reformat(
                format="rgb24", src_colorspace=OUTPUT_COLORSPACE, threads=self._threads
            )
            rgb.pts, rgb.time_base = frame.pts, frame.time_base
            self._graph.push(rgb)
        out: list[VideoFrame] = []
        while True:
            try:
                pulled = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return out
            assert isinstance(pulled, VideoFrame)
            pulled.pict_type = PictureType.NONE
            out.append(pulled)


def jpeg(frame: VideoFrame) -> bytes:
    """The bytes of a JPEG file showing ``frame`` (BT.709 YUV, as compose makes it).

    Raises av.FFmpegError if the encoder fails (it does not for a valid frame).
    """
    ctx = av.CodecContext.create("mjpeg", "w")
    assert isinstance(ctx, VideoCodecContext)
    ctx.width, ctx.height = frame.width, frame.height
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 1)
    # Fixed quantiser at the finest the encoder allows by default: one frame, so size
    # hardly matters, and a bitrate target would be meaningless.
    ctx.qscale = True
    ctx.global_quality = 2 * 118
    # JPEG (JFIF) is full-range BT.601.
    picture = frame.reformat(
        format="yuvj420p",
        src_colorspace=OUTPUT_COLORSPACE,
        dst_colorspace=Colorspace.ITU601,
        dst_color_range=ColorRange.JPEG,
        # One frame: exact rounding is free here and keeps colours within a level.
        interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND,
    )
    picture.pts = 0
    picture.pict_type = PictureType.NONE
    packets = ctx.encode(picture) + ctx.encode(None)
    return b"".join(bytes(p) for p in packets)
