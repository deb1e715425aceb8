"""Find out what a source file holds before rendering starts.

Probing opens each file once, reads its stream headers and decodes the first picture
and audio frame, so a corrupt or unsupported file fails before any encoding happens,
and the render plan knows each source's real size, alpha and duration.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import av
import av.container
import av.stream
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from rendermill.common import errors
from rendermill.common.project import model
from rendermill.renderer.engine import icc, still

# Demuxers that read a single picture from a file (PNG, JPEG, WebP, BMP...).
_STILL_DEMUXERS = ("image2", "_pipe")
# VP8/VP9 carry alpha in side data that only libvpx decodes; FFmpeg's native decoders
# drop it silently.
_ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}
_DURATION_TAG = re.compile(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
# EXIF sits in an APP1 segment (at most 64 KiB) right after SOI and maybe APP0.
_JPEG_HEAD = 1 << 17
_EXIF_ORIENTATION = 0x0112
# A stream that ends this much earlier than its own index says is a truncated file.
TRUNCATION_TOLERANCE = 1.0
# MP4/MOV declare every stream's parameters, times and duration in the movie header, so
# avformat's stream probing, which decodes the first pictures (20-30 ms for a 1080p
# file), can be skipped: the readers decode what they need themselves.
_MOV = "mov,mp4,m4a,3gp,3g2,mj2"
# Matroska/WebM declare the tracks' parameters in their headers too; the streams' start
# times come from their first packets, which the least probing still reads when they
# are near the start of the file.
_MATROSKA = "matroska,webm"
# Container options that skip the probing (the least that avformat still reads).
NO_PROBING = {"probesize": "32", "analyzeduration": "0"}
# Decoder options for the probing avformat still does: a picture of more than one pixel
# is not decoded.
_NO_DECODING = {"max_pixels": "1"}
# The largest picture any source is decoded at: 8192 x 8192 (about 67 megapixels; 268 MB
# as RGBA, 100 MB as 4:2:0). Phone photos (up to 50 megapixels) and 8K video (33) fit. A
# file of a few kilobytes can declare a picture far larger, which the decoder would
# allocate (several times over, with frame threads) before finding out it is garbage.
MAX_PIXELS = 8192 * 8192


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """Which track and file a reader serves; used to word every error."""

    track: model.Track
    path: Path

    def error(self, problem: str) -> errors.MediaError:
        """A MediaError naming the track and the file, for the caller to raise."""
        name = self.track.name or self.track.id
        return errors.MediaError(
            f"track {name!r}: the media file {self.track.url!r} {problem}",
            track=self.track.id,
            url=self.track.url,
        )

    def open(self) -> av.container.InputContainer:
        """Open the file for reading; raises MediaError when it cannot be opened.

        An MP4/MOV file, or a Matroska/WebM file whose streams' start times show without
        it, is opened without probing its streams, and so is a PNG or WebP still (other
        files are probed as always): every reader decodes the first frames it needs
        itself.
        """
        try:
            if _header_only(self.path):
                # avformat would decode a whole PNG or WebP picture only to learn its
                # size and format (2.5 s for 144 megapixels); the probe decodes it
                # itself, once, after checking the size its header says. (PyAV's stub
                # types stream_options as strings; they are one dict per stream.)
                unprobed: av.container.InputContainer = av.open(  # type: ignore[call-overload]
                    str(self.path),
                    "r",
                    metadata_errors="ignore",
                    container_options=NO_PROBING,
                    stream_options=[_NO_DECODING],
                )
                if _is_still(unprobed):
                    return unprobed
                unprobed.close()
            container = av.open(
                str(self.path), "r", metadata_errors="ignore", container_options=NO_PROBING
            )
            if _declared(container):
                return container
            container.close()
            return av.open(str(self.path), "r", metadata_errors="ignore")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise self.error(f"cannot be read ({reason(exc)})") from exc


def _header_only(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return still.header_only(f.read(12))
    except OSError:
        return False


def _is_still(container: av.container.InputContainer) -> bool:
    return bool(container.streams.video) and any(
        p in container.format.name for p in _STILL_DEMUXERS
    )


def _declared(container: av.container.InputContainer) -> bool:
    """Whether an unprobed container already says what a sound reader needs."""
    if not all(
        s.codec_context.sample_rate and s.codec_context.channels for s in container.streams.audio
    ):
        return False
    if container.format.name == _MOV:
        return True
    return container.format.name == _MATROSKA and all(
        s.start_time is not None for s in container.streams
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class VideoInfo:
    width: int
    height: int
    alpha: bool
    # The decoder to use instead of the stream's default one (alpha in VP8/VP9), if any.
    decoder: str | None
    # Where the picture stream's index says it ends, in source seconds; None if unknown.
    declared_end: float | None
    # Seconds per timestamp tick of the picture stream: how exact its frame times are
    # (WebM/Matroska counts milliseconds, so a 30 fps frame is up to 0.5 ms off).
    tick: float = 0.0
    # The first picture's light (see icc.light_name): anything but "sdr" is mapped.
    light: str = "sdr"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AudioInfo:
    rate: int
    channels: int
    declared_end: float | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Media:
    """What a source holds. Source time 0 is the file's first picture (or sample)."""

    source: Source
    # Container time of source time 0, in seconds.
    origin: float
    # Media duration in source seconds; None when unknown (no loop wrap possible).
    duration: float | None
    video: VideoInfo | None
    audio: AudioInfo | None
    # A still image (PNG, JPEG, WebP), shown for the whole action; None for video.
    still: Still | None
    # A JPEG still's EXIF orientation (1..8), which also says whether it is mirrored;
    # None when the file has none (then only the frame's display matrix applies).
    orientation: int | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Still:
    """A still image, decoded by :meth:`picture` whenever a track starts showing it
    rather than held for the whole render: a slideshow's photos are not all in memory
    at once."""

    source: Source
    # Its size as stored (before any EXIF orientation), which placement uses; the
    # decoded picture is smaller when a JPEG is decoded at a smaller scale.
    width: int
    height: int
    # Decoder options: the JPEG scale, and the largest picture decoded at all.
    options: dict[str, str]
    # The primaries and transfer its ICC profile says, where the decoder finds none
    # (read from the file once, by the probe).
    profile_light: tuple[int, int] | None = None

    def picture(self) -> VideoFrame:
        """The decoded picture; raises MediaError when it cannot be decoded."""
        with self.source.open() as container:
            stream = _first_picture(container)
            if stream is None:
                raise self.source.error("has no picture stream")
            stream.codec_context.options = dict(self.options)
            try:
                frame, _ = _first_frames(container, stream, None, None)
            except (av.FFmpegError, OSError) as exc:
                raise self.source.error(f"cannot be decoded ({reason(exc)})") from exc
        if frame is None:
            raise self.source.error("has a picture stream with no decodable picture")
        if self.profile_light is not None and frame.color_primaries == icc.PRIMARIES_UNSPECIFIED:
            frame.color_primaries, frame.color_trc = self.profile_light
        return frame


# The largest size (width, height) a picture of the given size, as shown (after its
# orientation), is drawn at anywhere in its track.
Drawn = Callable[[tuple[int, int]], tuple[int, int]]


def probe(source: Source, *, picture: bool, sound: bool, drawn: Drawn | None = None) -> Media:
    """Probe ``source`` for what its track needs: a picture, sound, or both.

    Returns the source's streams, size, alpha and duration. Raises MediaError when the
    file cannot be opened or decoded, or holds neither of the streams its track needs,
    or is a still picture too large to draw. ``drawn`` says how large the track draws a
    picture, so that a JPEG photo can be decoded at a smaller scale (see ``still``);
    without it a JPEG is decoded whole.
    """
    with source.open() as container:
        try:
            return _probe(source, container, picture=picture, sound=sound, drawn=drawn)
        except (av.FFmpegError, OSError) as exc:
            raise source.error(f"cannot be decoded ({reason(exc)})") from exc


def _probe(
    source: Source,
    container: av.container.InputContainer,
    *,
    picture: bool,
    sound: bool,
    drawn: Drawn | None,
) -> Media:
    vstream = _first_picture(container)
    astream = container.streams.audio[0] if container.streams.audio else None
    kind = source.track.controller
    if kind == model.Controller.IMAGE and vstream is None:
        raise source.error("has no picture (an image track needs a PNG, JPEG or WebP image)")
    if kind == model.Controller.AUDIO and astream is None:
        raise source.error("has no audio stream")
    if kind == model.Controller.VIDEO and vstream is None and astream is None:
        raise source.error("has neither a picture nor an audio stream")

    origin_stream: av.stream.Stream | None = vstream if vstream is not None else astream
    origin = _seconds(origin_stream, origin_stream.start_time) if origin_stream else None
    origin = origin or 0.0

    is_still = vstream is not None and any(p in container.format.name for p in _STILL_DEMUXERS)
    want_video = vstream is not None and (picture or kind == model.Controller.IMAGE)
    want_audio = astream is not None and sound and not is_still
    decoder = None
    if vstream is not None and vstream.metadata.get("alpha_mode") == "1":
        decoder = _ALPHA_DECODERS.get(vstream.codec_context.name)
    orientation = None
    picture_still = None
    if not is_still and want_video and vstream is not None:
        # The size avformat read off the stream's header (an H.264 or HEVC parameter set).
        declared = (vstream.codec_context.width, vstream.codec_context.height)
        if declared[0] * declared[1] > MAX_PIXELS:
            raise _too_large(source, "video", declared, "export it at a smaller size")
        vstream.codec_context.options = {"max_pixels": str(MAX_PIXELS)}
    if is_still and want_video and vstream is not None:
        if vstream.codec_context.name == "mjpeg":
            orientation = exif_orientation(source.path)
        picture_still = _still(source, vstream, orientation, drawn)
        options = dict(picture_still.options)
        if vstream.codec_context.name == "mjpeg" and picture_still.width:
            # The probe only learns that the picture decodes, and its format: at 1/8 of
            # its size every coefficient is still read, in a third of the time.
            options["lowres"] = "3"
        vstream.codec_context.options = options
    first, first_audio = _first_frames(
        container,
        vstream if want_video else None,
        astream if want_audio else None,
        decoder,
    )
    if picture_still is not None and first is not None:
        light = _profile_light(source, first)
        # A header that does not say the size leaves it to the decoder.
        stored = (picture_still.width, picture_still.height)
        width, height = stored if all(stored) else (first.width, first.height)
        picture_still = dataclasses.replace(
            picture_still, width=width, height=height, profile_light=light
        )
        if light is not None:
            first.color_primaries, first.color_trc = light

    video = None
    if want_video:
        if first is None:
            raise source.error("has a picture stream with no decodable picture")
        video = VideoInfo(
            width=first.width if picture_still is None else picture_still.width,
            height=first.height if picture_still is None else picture_still.height,
            alpha=any(c.is_alpha for c in first.format.components),
            decoder=decoder,
            declared_end=None if is_still or vstream is None else _stream_end(vstream, origin),
            tick=float(vstream.time_base) if vstream and vstream.time_base else 0.0,
            light=icc.light_name(first.color_trc, first.color_primaries),
        )
    audio = None
    if want_audio and astream is not None:
        if first_audio is None:
            raise source.error("has an audio stream with no decodable sound")
        audio = AudioInfo(
            rate=first_audio.sample_rate,
            channels=first_audio.layout.nb_channels,
            declared_end=_stream_end(astream, origin),
        )
    duration = None if picture_still is not None else _duration(container, origin)
    if duration is None and picture_still is None and any(a.loop for a in source.track.actions):
        # A recording written as it was made (MediaRecorder's WebM) says nowhere how long
        # it is; a browser learns it at the end and loops there. Looping needs it, so it
        # is read off the packets (a demux, nothing decoded).
        duration = _scanned_duration(container, origin)
    return Media(
        source=source,
        origin=origin,
        duration=duration,
        video=video,
        audio=audio,
        still=picture_still,
        orientation=orientation,
    )


def _still(
    source: Source, stream: VideoStream, orientation: int | None, drawn: Drawn | None
) -> Still:
    """How to decode a still: nothing stored larger than MAX_PIXELS (a JPEG decoded at
    a smaller scale included: a progressive JPEG's decoder holds every coefficient of
    the whole picture, 3 bytes a pixel, whatever the scale), and a JPEG at the smallest
    scale that is still as large as it is drawn."""
    ctx = stream.codec_context
    stored = still.stored_size(source.path) or (ctx.width, ctx.height)
    if stored[0] * stored[1] > MAX_PIXELS:
        raise _too_large(source, "picture", stored, "scale it down and upload it again")
    options = {"max_pixels": str(MAX_PIXELS)}
    if ctx.name == "mjpeg" and drawn is not None and all(stored):
        # EXIF orientations 5 to 8 turn the picture a quarter: it shows sideways.
        sideways = orientation in (5, 6, 7, 8)
        need = drawn(stored[::-1] if sideways else stored)
        k = still.lowres(stored, need[::-1] if sideways else need)
        if k:
            options["lowres"] = str(k)
    return Still(source=source, width=stored[0], height=stored[1], options=options)


def _too_large(source: Source, kind: str, size: tuple[int, int], advice: str) -> errors.MediaError:
    width, height = size
    return source.error(
        f"is a {kind} of {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), "
        f"larger than can be drawn ({MAX_PIXELS / 1e6:.0f} megapixels, such as 8192x8192): "
        f"{advice}"
    )


def bounded(ctx: VideoCodecContext, threads: int) -> VideoCodecContext:
    """``ctx`` refusing to decode a picture larger than MAX_PIXELS (before allocating
    it), with ``threads`` frame or slice threads as the codec allows (see
    ``threads.Threads.decoder``); every picture decoder is set up so."""
    ctx.thread_type = "AUTO"
    ctx.thread_count = threads
    ctx.options = {**ctx.options, "max_pixels": str(MAX_PIXELS)}
    return ctx


def _profile_light(source: Source, frame: VideoFrame) -> tuple[int, int] | None:
    """A still whose decoder found no primaries (no cICP, cHRM or sRGB chunk in a PNG)
    may say them in an ICC profile: the primaries and transfer it says, if any."""
    if frame.color_primaries != icc.PRIMARIES_UNSPECIFIED:
        return None
    profile = icc.read_profile(source.path)
    return icc.light(profile) if profile is not None else None


def exif_orientation(path: Path) -> int | None:
    """The EXIF orientation (1..8) of the JPEG file at ``path``; None when it has none or
    the file cannot be read (the decoder then reports what is wrong with it)."""
    try:
        with path.open("rb") as f:
            head = f.read(_JPEG_HEAD)
    except OSError:
        return None
    if not head.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD9, 0xDA):
            # End of image or start of scan: the metadata segments are all before it.
            return None
        length = int.from_bytes(head[pos + 2 : pos + 4], "big")
        segment = head[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\0\0"):
            return _tiff_orientation(segment[6:])
        pos += 2 + length
    return None


def _tiff_orientation(tiff: bytes) -> int | None:
    order: Literal["little", "big"]
    if tiff[:2] == b"II":
        order = "little"
    elif tiff[:2] == b"MM":
        order = "big"
    else:
        return None
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) < 12:
            return None
        if int.from_bytes(entry[:2], order) == _EXIF_ORIENTATION:
            # A SHORT stored left-justified in the 4-byte value field.
            value = int.from_bytes(entry[8:10], order)
            return value if 1 <= value <= 8 else None
    return None


def _first_picture(container: av.container.InputContainer) -> VideoStream | None:
    for stream in container.streams.video:
        # Cover art in an MP3/M4A is a "video" stream of one picture; it is not a picture
        # track, so a video track playing such a file shows nothing (as in a browser).
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _first_frames(
    container: av.container.InputContainer,
    vstream: VideoStream | None,
    astream: AudioStream | None,
    decoder: str | None,
) -> tuple[VideoFrame | None, AudioFrame | None]:
    """Decode the first picture and the first audio frame, in one pass over the file."""
    streams = [s for s in (vstream, astream) if s is not None]
    if not streams:
        return None, None
    # One thread: frame threads would take as many packets before the first picture.
    vctx = open_decoder(decoder, 1) if decoder is not None else None
    picture: VideoFrame | None = None
    sound: AudioFrame | None = None
    for packet in container.demux(streams):
        if vstream is not None and packet.stream.index == vstream.index and picture is None:
            frames = vctx.decode(packet) if vctx is not None else packet.decode()
            picture = next((f for f in frames if isinstance(f, VideoFrame)), None)
        elif astream is not None and packet.stream.index == astream.index and sound is None:
            sound = next((f for f in packet.decode() if isinstance(f, AudioFrame)), None)
        if (picture is not None or vstream is None) and (sound is not None or astream is None):
            break
    return picture, sound


def open_decoder(name: str, threads: int) -> VideoCodecContext:
    """A decoder by name with ``threads`` threads (see :func:`bounded`), used instead of
    a stream's default decoder."""
    ctx = av.CodecContext.create(name, "r")
    assert isinstance(ctx, VideoCodecContext)
    return bounded(ctx, threads)


def _duration(container: av.container.InputContainer, origin: float) -> float | None:
    ends = []
    if container.duration is not None and container.duration > 0:
        start = (container.start_time or 0) / av.time_base
        ends.append(start + container.duration / av.time_base)
    for stream in container.streams:
        end = _stream_end(stream, 0.0)
        if end is not None:
            ends.append(end)
    if not ends:
        return None
    duration = max(ends) - origin
    return duration if duration > 0 else None


def _scanned_duration(container: av.container.InputContainer, origin: float) -> float | None:
    """Where the last packet of any stream ends, in source seconds (reads the whole file)."""
    end: float | None = None
    for packet in container.demux():
        tb = packet.time_base
        if packet.pts is None or tb is None:
            continue
        t = float((packet.pts + (packet.duration or 0)) * tb)
        end = t if end is None else max(end, t)
    if end is None or end - origin <= 0:
        return None
    return end - origin


def _stream_end(stream: av.stream.Stream, origin: float) -> float | None:
    start = _seconds(stream, stream.start_time) or 0.0
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return start + float(stream.duration * stream.time_base) - origin
    # Matroska/WebM keep each stream's length in a DURATION tag instead.
    tag = _DURATION_TAG.fullmatch(stream.metadata.get("DURATION", ""))
    if tag is None:
        return None
    hours, minutes, seconds = tag.groups()
    return start + int(hours) * 3600 + int(minutes) * 60 + float(seconds) - origin


def _seconds(stream: av.stream.Stream, ts: int | None) -> float | None:
    if ts is None or stream.time_base is None:
        return None
    return float(ts * stream.time_base)


def reason(exc: BaseException) -> str:
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__
