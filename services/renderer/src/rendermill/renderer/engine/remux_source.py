"""Sources for the stream-copy path: what their headers say, where their IDR frames are,
and reading them back as packets (to copy) or pictures (to re-encode).

A source is indexed by presentation index k: frame k is the k-th picture in
presentation order, at source time ``k / fps`` (the copy path only takes constant frame
rate sources, and checks the real timestamps against that grid).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.container
import av.stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from rendermill.renderer.engine import probe, still, video
from rendermill.renderer.engine import remux_h264 as h264
from rendermill.renderer.engine.threads import Threads

_COPYABLE_PROFILES = frozenset({"Baseline", "Constrained Baseline", "Main", "High"})
_IDENTITY_MATRIX = (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
# AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic / AVColorRange values
# (libavutil/pixfmt.h) of SDR video whose signalling every player reads the same way.
_UNSPECIFIED = 2
_MATRICES = frozenset({1, 5, 6})  # BT.709, BT.470BG, SMPTE 170M
_PRIMARIES = frozenset({1, 2, 5, 6})
_TRANSFERS = frozenset({1, 2, 6})
_LIMITED_RANGES = frozenset({0, 1})  # unspecified, MPEG
# A frame's timestamp may sit this far (in frames) off the k / fps grid; anything more
# is not a constant frame rate source.
_GRID_TOLERANCE = 0.1


class Ineligible(Exception):
    """The timeline or a source cannot be stream-copied; the caller composes instead."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """What a source's container headers say about its picture stream (nothing decoded)."""

    path: Path
    format: str
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    rate: Fraction | None
    profile: str | None
    sample_aspect: Fraction | None
    config: h264.AvcConfig | None
    sps: tuple[h264.Sps, ...]
    time_base: Fraction
    # Container timestamp of source time 0, as the compose path's probe defines it.
    start: int
    upright: bool
    # color_range, colorspace, color_primaries, color_trc: given to the re-encoder so
    # its pictures are signalled like the copied ones.
    color: tuple[int, int, int, int]
    # The picture carries alpha (WebM's alpha_mode): copying would drop it.
    alpha: bool = False

    def copy_problem(self, size: tuple[int, int], fps: int, output_format: str) -> str | None:
        """Why this source's packets cannot go into a ``size`` output at ``fps`` in
        ``output_format``; None if they can."""
        containers = self.format.split(",")
        if output_format == "webm":
            if "webm" not in containers:
                return f"container {self.format} is not WebM/Matroska"
            if self.codec != "vp9":
                return f"codec {self.codec} is not VP9"
            if self.profile != "Profile 0":
                return f"VP9 {self.profile} is not profile 0 (8-bit 4:2:0)"
            if self.alpha:
                return "the picture has an alpha channel"
            return self._common_problem(size, fps)
        if "mov" not in containers:
            return f"container {self.format} is not MP4/MOV"
        if self.codec != "h264":
            return f"codec {self.codec} is not H.264"
        if (problem := self._common_problem(size, fps)) is not None:
            return problem
        if self.profile not in _COPYABLE_PROFILES:
            return f"profile {self.profile} is not Baseline, Main or High"
        if self.config is None or not self.config.sps or not self.config.pps:
            return "no parameter sets in the sample description"
        if any(s.chroma_format != 1 or s.bit_depth_luma != 8 for s in self.sps):
            return "the SPS is not 8-bit 4:2:0"
        if not all(s.frame_mbs_only for s in self.sps):
            return "the stream is interlaced"
        return None

    def _common_problem(self, size: tuple[int, int], fps: int) -> str | None:
        if (self.width, self.height) != size:
            return f"frame size {self.width}x{self.height} is not the output size"
        if self.pix_fmt != "yuv420p":
            return f"pixel format {self.pix_fmt} is not yuv420p"
        if self.rate != fps:
            return f"frame rate {self.rate} is not the output's {fps}"
        if self.sample_aspect not in (None, 0, 1):
            return f"pixels are not square ({self.sample_aspect})"
        if not self.upright:
            return "the track has a display matrix (rotation)"
        return self._colour_problem()

    def _colour_problem(self) -> str | None:
        # Copied pictures keep the source's colour signalling, where the compose path
        # converts to BT.709 limited range. The two look the same wherever the signalling
        # is unambiguous SDR: a tagged matrix, or an untagged HD one (BT.709 for every
        # player). Untagged SD is BT.601 to some players and BT.709 to others.
        color_range, matrix, primaries, transfer = self.color
        hd = self.width >= 1280 or self.height > 576
        if color_range not in _LIMITED_RANGES:
            return "the picture is full range"
        if matrix not in _MATRICES and not (matrix == _UNSPECIFIED and hd):
            return f"colour matrix {matrix} (untagged SD, HDR or other)"
        if primaries not in _PRIMARIES or transfer not in _TRANSFERS:
            return f"colour primaries {primaries} / transfer {transfer} are not SDR"
        return None

    def frame_pts(self, k: int, fps: int) -> int:
        """The nominal container timestamp of frame ``k`` (used as a seek target)."""
        return self.start + round(Fraction(k, fps) / self.time_base)


def _header(path: Path, container: av.container.InputContainer, stream: VideoStream) -> Header:
    ctx = stream.codec_context
    tb = stream.time_base
    config: h264.AvcConfig | None = None
    sps: tuple[h264.Sps, ...] = ()
    extradata = ctx.extradata
    if ctx.name == "h264" and extradata:
        try:
            config = h264.parse_avcc(extradata)
            sps = tuple(h264.parse_sps(s) for s in config.sps)
        except h264.BitstreamError:
            config, sps = None, ()
    mp4 = "mov" in container.format.name.split(",")
    return Header(
        path=path,
        format=container.format.name,
        codec=ctx.name,
        width=ctx.width,
        height=ctx.height,
        pix_fmt=ctx.pix_fmt,
        rate=stream.average_rate,
        profile=ctx.profile,
        sample_aspect=ctx.sample_aspect_ratio,
        config=config,
        sps=sps,
        time_base=tb if tb is not None else Fraction(1, 90000),
        start=stream.start_time or 0,
        upright=_upright(path, stream.id) if mp4 else _upright_matroska(stream),
        color=(ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc),
        alpha=stream.metadata.get("alpha_mode") == "1",
    )


def _declared_header(
    path: Path, container: av.container.InputContainer, stream: VideoStream
) -> Header | None:
    """The header of an unprobed source, what the decoder would say taken from the
    bitstream's own headers (an H.264 MP4/MOV's SPS, a VP9 WebM's first keyframe); None
    when probing is needed to tell (see ``Reader``)."""
    ctx = stream.codec_context
    formats = container.format.name.split(",")
    if "webm" in formats and ctx.name == "vp9":
        return _declared_vp9_header(path, container, stream)
    if "mov" not in formats or ctx.name != "h264":
        return None
    header = _header(path, container, stream)
    if header.config is None or not header.sps or stream.start_time is None:
        return None
    first = header.sps[0]
    vui = first.vui
    if vui is None or any(s.vui != vui for s in header.sps):
        return None
    # What the decoder would report, and what the container's boxes ('colr', 'pasp')
    # say where it has them: they must agree.
    said = (
        0 if vui.full_range is None else 2 if vui.full_range else 1,
        vui.matrix,
        vui.primaries,
        vui.transfer,
    )
    unsaid = (0, _UNSPECIFIED, _UNSPECIFIED, _UNSPECIFIED)
    colour = []
    for boxed, coded, none in zip(header.color, said, unsaid, strict=True):
        if boxed != none and coded != none and boxed != coded:
            return None
        colour.append(coded if boxed == none else boxed)
    aspect = header.sample_aspect or None
    if aspect is not None and vui.sample_aspect is not None and aspect != vui.sample_aspect:
        return None
    return dataclasses.replace(
        header,
        pix_fmt=first.pix_fmt,
        profile=first.profile_name,
        color=(colour[0], colour[1], colour[2], colour[3]),
        sample_aspect=aspect or vui.sample_aspect,
    )


def _declared_vp9_header(
    path: Path, container: av.container.InputContainer, stream: VideoStream
) -> Header | None:
    if stream.start_time is None:
        return None
    try:
        packet = next((p for p in container.demux(stream) if p.size), None)
        container.seek(0, stream=stream, backward=True)
    except (av.FFmpegError, OSError):
        return None
    info = vp9_keyframe(bytes(packet)) if packet is not None else None
    if info is None:
        return None
    header = _header(path, container, stream)
    if header.width != info.width or header.height != info.height:
        return None
    _, _, primaries, transfer = header.color
    return dataclasses.replace(
        header,
        pix_fmt=info.pix_fmt,
        profile=f"Profile {info.profile}",
        # The colour space and range are the bitstream's; primaries and transfer only
        # the container can say.
        color=(info.color_range, info.matrix, primaries, transfer),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Vp9Keyframe:
    """What a VP9 keyframe's uncompressed header says about the picture format."""

    profile: int
    bit_depth: int
    # AVColorSpace and AVColorRange codes, as FFmpeg's decoder reports them.
    matrix: int
    color_range: int
    subsampling: tuple[int, int]
    width: int
    height: int

    @property
    def pix_fmt(self) -> str:
        """The pixel format FFmpeg's decoder gives (the common ones by name)."""
        if self.matrix == _VP9_RGB:
            base = "gbrp"
        else:
            base = {(1, 1): "yuv420p", (1, 0): "yuv422p", (0, 1): "yuv440p", (0, 0): "yuv444p"}[
                self.subsampling
            ]
        return f"{base}{self.bit_depth}le" if self.bit_depth > 8 else base


# VP9 color_space (0..7) as AVColorSpace: unknown, BT.601, BT.709, SMPTE 170M, SMPTE 240M,
# BT.2020, reserved, sRGB.
_VP9_MATRICES = (2, 5, 1, 6, 7, 9, 3, 0)
_VP9_RGB = 0


def vp9_keyframe(data: bytes) -> Vp9Keyframe | None:
    """Read a VP9 frame's uncompressed header (VP9 bitstream spec 6.2); None unless it is
    a shown keyframe that says its format (or the data is not VP9)."""
    bits = int.from_bytes(data[:16], "big")
    width = 8 * min(len(data), 16)
    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        pos += n
        if pos > width:
            raise ValueError
        return (bits >> (width - pos)) & ((1 << n) - 1)

    try:
        if take(2) != 2:  # frame_marker
            return None
        low, high = take(1), take(1)
        profile = (high << 1) | low
        if profile == 3:
            take(1)  # reserved_zero
        if take(1):  # show_existing_frame
            return None
        if take(1) != 0:  # frame_type: 0 is a keyframe
            return None
        take(2)  # show_frame, error_resilient_mode
        if take(24) != 0x498342:  # frame_sync_code
            return None
        bit_depth = 8
        if profile >= 2:
            bit_depth = 12 if take(1) else 10
        color_space = take(3)
        if color_space != 7:  # not sRGB
            color_range = 2 if take(1) else 1
            subsampling = (take(1), take(1)) if profile in (1, 3) else (1, 1)
            if profile in (1, 3):
                take(1)  # reserved_zero
        else:
            color_range, subsampling = 2, (0, 0)
            if profile in (1, 3):
                take(1)
        w, h = take(16) + 1, take(16) + 1
    except ValueError:
        return None
    return Vp9Keyframe(
        profile, bit_depth, _VP9_MATRICES[color_space], color_range, subsampling, w, h
    )


def _upright_matroska(stream: VideoStream) -> bool:
    # Matroska has no display matrix; FFmpeg reads a rotation from a "rotate" tag.
    return stream.metadata.get("rotate", "0") in ("0", "")


def _picture_stream(container: av.container.InputContainer) -> VideoStream | None:
    # The same choice as the compose path's probe: cover art is not a picture track.
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _upright(path: Path, track_id: int) -> bool:
    """Whether the MP4 track ``track_id`` has an identity display matrix.

    PyAV does not expose the display matrix of a stream without decoding, so the
    track header ('tkhd') is read directly. Unreadable structure counts as not upright.
    """
    try:
        with path.open("rb") as f:
            moov = _find_box(f, b"moov")
    except OSError:
        return False
    if moov is None:
        return False
    for trak in _boxes(moov, b"trak"):
        tkhd = next(_boxes(trak, b"tkhd"), None)
        if tkhd is None or len(tkhd) < 4:
            continue
        version = tkhd[0]
        id_at, matrix_at = (20, 52) if version == 1 else (12, 40)
        if len(tkhd) < matrix_at + 36:
            return False
        if int.from_bytes(tkhd[id_at : id_at + 4], "big") != track_id:
            continue
        matrix = struct.unpack(">9i", tkhd[matrix_at : matrix_at + 36])
        return matrix == _IDENTITY_MATRIX
    return False


def _find_box(f: BinaryIO, kind: bytes) -> bytes | None:
    """The payload of the top-level box ``kind``, skipping over the others (mdat)."""
    while True:
        head = f.read(8)
        if len(head) < 8:
            return None
        size, name = int.from_bytes(head[:4], "big"), head[4:]
        header = 8
        if size == 1:
            size = int.from_bytes(f.read(8), "big")
            header = 16
        if name == kind:
            body = f.read(size - header) if size else f.read()
            return body
        if size == 0:
            return None
        f.seek(size - header, 1)


def _boxes(data: bytes, kind: bytes) -> Iterator[bytes]:
    """Payloads of the child boxes ``kind`` directly inside ``data``."""
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        name = data[pos + 4 : pos + 8]
        header = 8
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            size = len(data) - pos
        if size < header:
            return
        if name == kind:
            yield data[pos + header : pos + size]
        pos += size


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One packet of a window, in decode order: which frame it is, and whether it is an
    IDR access unit (where a copy or a decode can start)."""

    k: int
    idr: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """Consecutive packets of a source in decode order, from an IDR frame up to (not
    including) the first IDR frame after ``last``, or to the end of the stream."""

    entries: tuple[Entry, ...]
    # Source time of each frame in the window, from its real timestamp, and the
    # timestamp itself (to seek to).
    times: dict[int, float]
    pts: dict[int, int]
    # The window runs to the end of the stream (its last frame is the media's last).
    end_of_stream: bool


class Reader:
    """One source file, opened once for everything the copy path reads from it.

    The header, the packet windows, the copied packets and the re-encoded pictures all
    come through one open container, seeking as needed. Use one iterator at a time.

    An H.264 MP4/MOV or VP9 WebM file is opened without avformat's stream probing
    (which decodes the first pictures, 20-25 ms at 1080p): what probing would learn from
    the decoder, the profile, pixel format, colour and sample aspect, is read from the
    sample description's SPS, or from the first VP9 keyframe's header, instead. Where
    the SPS and the container's own boxes ('colr', 'pasp') disagree, or anything is
    missing, the file is reopened and probed.
    """

    def __init__(self, path: Path, threads: Threads) -> None:
        """Open ``path``, to decode with the threads ``threads`` gives its pictures;
        raises av.FFmpegError/OSError when it cannot be opened (the compose path then
        words the error for the user)."""
        self.path = path
        with path.open("rb") as f:
            if still.is_picture(f.read(12)):
                # Never copied, and opening a PNG or WebP file probes it by decoding it.
                raise Ineligible(f"{path.name} is a still picture")
        self._container = av.open(
            str(path), "r", metadata_errors="ignore", container_options=probe.NO_PROBING
        )
        self.header: Header | None = None
        try:
            self._stream = _picture_stream(self._container)
            if self._stream is not None:
                self.header = _declared_header(path, self._container, self._stream)
            if self._stream is not None and self.header is None:
                self._container.close()
                self._container = av.open(str(path), "r", metadata_errors="ignore")
                self._stream = _picture_stream(self._container)
                if self._stream is not None:
                    self.header = _header(path, self._container, self._stream)
            if self._stream is not None:
                ctx = self._stream.codec_context
                probe.bounded(ctx, threads.decoder(ctx.width, ctx.height))
        except BaseException:
            self._container.close()
            raise

    @property
    def stream(self) -> VideoStream:
        """The picture stream (for describing an output stream like it)."""
        assert self._stream is not None
        return self._stream

    def close(self) -> None:
        self._container.close()

    def scan(self, first: int, last: int, fps: int) -> Window:
        """Index the packets covering frames ``first .. last`` (demuxing, no decoding).

        Raises Ineligible when the source has no usable header, the window does not
        start with an IDR frame, timestamps are off the frame grid, or packets are to be
        discarded (edit lists); av.FFmpegError or OSError when the file cannot be read.
        """
        header, stream = self.header, self._stream
        if header is None or stream is None:
            raise Ineligible(f"{self.path.name} has no picture stream")
        config = header.config
        if header.codec == "h264" and config is None:
            raise Ineligible(f"{self.path.name} has no H.264 sample description")
        tb = header.time_base
        entries: list[Entry] = []
        times: dict[int, float] = {}
        pts_of: dict[int, int] = {}
        end_of_stream = True
        self._container.seek(header.frame_pts(first, fps), stream=stream, backward=True)
        for packet in self._container.demux(stream):
            if packet.pts is None:
                if packet.size:
                    raise Ineligible("a packet has no timestamp")
                continue
            if packet.is_discard:
                raise Ineligible("the source has an edit list that drops packets")
            t = float((packet.pts - header.start) * tb)
            k = round(t * fps)
            if abs(t * fps - k) > _GRID_TOLERANCE or k < 0 or k in times:
                raise Ineligible("the source is not at a constant frame rate")
            # A VP9 keyframe resets every reference, as an H.264 IDR frame does.
            idr = packet.is_keyframe and (config is None or _is_idr(bytes(packet), config))
            if idr and k > last and entries:
                end_of_stream = False
                break
            if not entries and not idr:
                raise Ineligible("decoding cannot start at a keyframe that is not IDR")
            entries.append(Entry(k, idr))
            times[k] = t
            pts_of[k] = packet.pts
        if not entries or entries[0].k > first:
            raise Ineligible("no IDR frame at or before where the timeline needs the source")
        ks = sorted(times)
        if ks[-1] - ks[0] + 1 != len(ks) or ks[0] != entries[0].k:
            raise Ineligible("frames are missing or precede their IDR frame")
        return Window(tuple(entries), times, pts_of, end_of_stream)

    def packets(self, window: Window, start: int, count: int, fps: int) -> Iterator[bytes]:
        """The samples of ``count`` packets from the window's packet ``start`` (decode
        order), as NAL units behind 4-byte lengths.

        ``window.entries[start]`` must be an IDR frame. Raises Ineligible when the file
        cannot be read or no longer matches its index (the compose path then reports
        the problem).
        """
        header, stream = self.header, self._stream
        assert header is not None and stream is not None
        length_size = header.config.length_size if header.config is not None else 4
        expected = [e.k for e in window.entries[start : start + count]]
        got = 0
        try:
            self._container.seek(window.pts[expected[0]], stream=stream, backward=True)
            for packet in self._container.demux(stream):
                if packet.pts is None:
                    continue
                k = round(float((packet.pts - header.start) * header.time_base) * fps)
                if got == 0 and k != expected[0]:
                    continue
                if k != expected[got]:
                    raise Ineligible(f"{self.path.name}: packets changed order between reads")
                data = bytes(packet)
                if header.config is not None and length_size != 4:
                    nals = h264.split_length_prefixed(data, length_size)
                    data = h264.join_length_prefixed(nals)
                yield data
                got += 1
                if got == count:
                    return
        except (av.FFmpegError, OSError, h264.BitstreamError) as exc:
            raise Ineligible(f"{self.path.name} cannot be read ({exc})") from exc
        raise Ineligible(f"{self.path.name} ended before its indexed packets")

    def decode(self, window: Window, first: int, end: int, fps: int) -> Iterator[VideoFrame]:
        """Pictures ``first .. end - 1``, decoded from the window's IDR frame at or
        before ``first``.

        Raises Ineligible when the file cannot be decoded or a picture is missing or
        damaged (the compose path then reports the problem).
        """
        header, stream = self.header, self._stream
        assert header is not None and stream is not None
        config = header.config
        entry = max(e.k for e in window.entries if e.idr and e.k <= first)
        want = first
        damage = video.Damage()
        try:
            # Seeking also flushes the decoder of whatever an earlier piece left in it.
            self._container.seek(window.pts[entry], stream=stream, backward=True)
            for packet in self._container.demux(stream):
                if packet.pts is not None:
                    k = round(float((packet.pts - header.start) * header.time_base) * fps)
                    # A picture before the cut that no other picture refers to need not
                    # be decoded at all (B-frames, usually most of them).
                    if (
                        k < first
                        and config is not None
                        and not _is_reference(bytes(packet), config.length_size)
                    ):
                        continue
                for frame in packet.decode():
                    # Damaged pictures (and those carrying their damage) are not
                    # re-encoded.
                    damaged = damage.see(frame, want / fps) is not None
                    if frame.pts is None:
                        continue
                    k = round(float((frame.pts - header.start) * header.time_base) * fps)
                    if k < want:
                        continue
                    if k != want or damaged:
                        raise Ineligible(f"{self.path.name}: frame {want} did not decode")
                    yield frame
                    want += 1
                    if want == end:
                        return
        except (av.FFmpegError, OSError, h264.BitstreamError) as exc:
            raise Ineligible(f"{self.path.name} cannot be decoded ({exc})") from exc
        raise Ineligible(f"{self.path.name} ended before frame {want}")


def _is_reference(data: bytes, length_size: int) -> bool:
    """Whether the access unit's picture may be referred to (nal_ref_idc of its slices)."""
    for nal in h264.split_length_prefixed(data, length_size):
        if h264.nal_type(nal) in (h264.NAL_SLICE, h264.NAL_IDR):
            return bool(nal[0] & 0x60)
    return True


def _is_idr(data: bytes, config: h264.AvcConfig) -> bool:
    try:
        nals = h264.split_length_prefixed(data, config.length_size)
    except h264.BitstreamError as exc:
        raise Ineligible(f"a keyframe is not a valid H.264 sample ({exc})") from exc
    for nal in nals:
        kind = h264.nal_type(nal)
        # In-band parameter sets that differ from the sample description would change
        # the stream under a copied packet; only the compose path can take those.
        if kind == h264.NAL_SPS and nal not in config.sps:
            raise Ineligible("in-band SPS differs from the sample description")
        if kind == h264.NAL_PPS and nal not in config.pps:
            raise Ineligible("in-band PPS differs from the sample description")
    return any(h264.nal_type(n) == h264.NAL_IDR for n in nals)


class Readers:
    """The open sources of one remux, one reader per path; closed together on exit."""

    def __init__(self, threads: Threads) -> None:
        self._threads = threads
        self._open: dict[Path, Reader] = {}

    def __enter__(self) -> Readers:
        return self

    def __exit__(self, *exc: object) -> None:
        for reader in self._open.values():
            reader.close()
        self._open.clear()

    def get(self, path: Path) -> Reader:
        """The reader of ``path``; raises Ineligible when the file cannot be opened."""
        reader = self._open.get(path)
        if reader is None:
            try:
                reader = self._open[path] = Reader(path, self._threads)
            except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
                raise Ineligible(f"{path.name} cannot be opened ({exc})") from exc
        return reader
