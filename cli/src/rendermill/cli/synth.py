"""Synthetic test media written with PyAV: solid-colour clips, tones and still images.

Used by the tests, the demo command and the benchmarks, so that none of them needs media
files checked into the repository. Everything is small and quick to write (a 2 s
320x180 clip takes a few tens of milliseconds).

A clip made with ``counter=True`` carries its frame index in its pixels: the bottom
quarter of the picture is a row of :data:`COUNTER_BITS` black/white cells, least
significant bit on the left. :func:`read_counter` reads it back from a decoded RGB
picture of the clip at any scale, which lets a test tell exactly which source frame a
rendered frame shows.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.container
import av.logging
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.video.frame import PictureType
from av.video.reformatter import Colorspace
from av.video.stream import VideoStream

RGB = tuple[int, int, int]
Matrix = Literal["bt709", "bt601"]

COUNTER_BITS = 10

_AUDIO_CHUNK = 8192


def make_video(
    path: str | Path,
    *,
    color: RGB = (255, 0, 0),
    size: tuple[int, int] = (320, 180),
    duration: float = 2.0,
    fps: int = 30,
    tone_hz: float | None = 440.0,
    codec: str | None = None,
    alpha: bool = False,
    counter: bool = False,
    moving: bool = False,
    rotation: int = 0,
    amplitude: float = 0.5,
    noise: float = 0.0,
    audio_rate: int = 48000,
    audio_layout: str = "stereo",
    frame_times: Sequence[float] | None = None,
    matrix: Matrix | None = None,
    tagged: bool = True,
    crf: int = 18,
) -> Path:
    """Write a solid ``color`` clip of ``size`` and ``duration`` to ``path`` and return it.

    The container follows the suffix (mp4, mov, mkv, webm...). ``codec`` picks the video
    encoder (libx264, libx265, libvpx, libvpx-vp9, libsvtav1...); by default VP9 for
    ``.webm`` (and for ``alpha``) and H.264 otherwise. With ``tone_hz`` the clip also has a
    sine tone at ``amplitude`` (AAC, or Opus in webm) at ``audio_rate`` in ``audio_layout``,
    plus seeded white noise at ``noise`` (so that the sound tells one moment from another a
    tone period later); with ``None`` it has no audio stream at all. With ``alpha`` the clip
    is in yuva420p (VP8 or VP9, ``path`` should end in ``.webm``) and its left half is
    opaque and right half fully transparent. With ``counter`` the bottom quarter carries the
    frame index (see :func:`read_counter`). With ``moving`` the colour is overlaid with
    moving stripes, so that encoders work about as hard as on camera footage (for
    benchmarks). ``rotation`` (degrees counterclockwise) is written as a display matrix, the
    way phones record portrait video. ``frame_times`` (seconds, increasing) writes one frame
    at each of those times instead of ``duration * fps`` evenly spaced ones: a
    variable-frame-rate clip.

    The picture is converted from RGB with ``matrix`` (default: BT.709 when HD-sized,
    BT.601 below, which is what players assume for untagged video) and, with
    ``tagged``, the stream says so. ``crf`` is libx264's (ultrafast: CAVLC, no
    B-frames); clips with other values carry other parameter sets. Raises
    ``av.error.FFmpegError`` when the codec or container is not available (H.264 needs
    even sizes; VP9 takes odd ones).
    """
    path = Path(path)
    width, height = size
    webm = path.suffix.lower() == ".webm"
    video_codec = codec or ("libvpx-vp9" if webm or alpha else "libx264")
    times = list(frame_times) if frame_times is not None else None
    frames = len(times) if times is not None else max(1, round(duration * fps))
    time_base = Fraction(1, 1000) if times is not None else Fraction(1, fps)
    hd = width >= 1280 or height > 576
    matrix = matrix or ("bt709" if hd else "bt601")
    colorspace = Colorspace.ITU709 if matrix == "bt709" else Colorspace.ITU601
    with av.open(str(path), "w") as out:
        vstream = out.add_stream(video_codec, rate=fps)
        assert isinstance(vstream, VideoStream)
        vstream.width = width
        vstream.height = height
        vstream.pix_fmt = "yuva420p" if alpha else "yuv420p"
        vstream.codec_context.time_base = time_base
        if tagged:
            # AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic values.
            vstream.codec_context.colorspace = 1 if matrix == "bt709" else 6
            vstream.codec_context.color_primaries = 1
            vstream.codec_context.color_trc = 1
        # A one-second GOP keeps seeks in tests cheap and close to what cameras write.
        options: dict[str, object] = {"g": str(fps)}
        if video_codec == "libx264":
            options |= {"preset": "ultrafast", "crf": str(crf)}
        elif video_codec == "libx265":
            options |= {"preset": "ultrafast", "crf": "18", "x265-params": "log-level=error"}
        elif video_codec.startswith("libvpx"):
            options |= {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}
            if alpha and video_codec == "libvpx":
                # libvpx refuses VP8 transparency with alternate reference frames.
                options["auto-alt-ref"] = "0"
        elif video_codec == "libsvtav1":
            # Presets above 9 write streams that dav1d rejects after a few frames.
            options |= {"preset": "8", "crf": "30"}
        vstream.options = options
        vstream.codec_context.thread_type = "FRAME"
        if rotation:
            vstream.set_display_rotation(rotation)
        astream = None
        if tone_hz is not None:
            astream = out.add_stream("libopus" if webm else "aac", rate=audio_rate)
            assert isinstance(astream, AudioStream)
            astream.layout = audio_layout
        base = np.empty((height, width, 4 if alpha else 3), np.uint8)
        base[..., :3] = color
        if alpha:
            base[..., 3] = 255
            base[:, width // 2 :, 3] = 0
        still = None
        for i in range(frames):
            if still is not None:
                frame = still
            else:
                rgb = _draw_moving(base, i) if moving else base
                rgb = _draw_counter(rgb, i) if counter else rgb
                frame = av.VideoFrame.from_ndarray(rgb, format="rgba" if alpha else "rgb24")
                frame = frame.reformat(format=vstream.pix_fmt, dst_colorspace=colorspace)
                if not (moving or counter):
                    # A solid clip is one picture: convert it once.
                    still = frame
            frame.pts = round(times[i] * 1000) if times is not None else i
            frame.time_base = time_base
            out.mux(vstream.encode(frame))
        out.mux(vstream.encode(None))
        if astream is not None and tone_hz is not None:
            channels = av.AudioLayout(audio_layout).nb_channels
            length = times[-1] + 1 / fps if times is not None else frames / fps
            _write_tone(out, astream, tone_hz, length, audio_rate, channels, amplitude, noise)
    return path


Light = Literal["hlg", "pq", "bt2020", "p3"]

# Chromaticities (x, y) of the red, green and blue primaries and the white point.
_D65 = (0.3127, 0.3290)
_PRIMARIES = {
    "bt709": ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)),
    "bt2020": ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)),
    "p3": ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)),
}
# Per light: its primaries, its Y'CbCr matrix (Kr, Kb) and FFmpeg's codes for the
# matrix, the primaries and the transfer.
_LIGHTS: dict[Light, tuple[str, tuple[float, float], tuple[int, int, int]]] = {
    "hlg": ("bt2020", (0.2627, 0.0593), (9, 9, 18)),
    "pq": ("bt2020", (0.2627, 0.0593), (9, 9, 16)),
    "bt2020": ("bt2020", (0.2627, 0.0593), (9, 9, 14)),
    "p3": ("p3", (0.2126, 0.0722), (1, 12, 13)),
}
# HLG's OETF constants (BT.2100).
_HLG_A, _HLG_B, _HLG_C = 0.17883277, 0.28466892, 0.55991073
# The luminance of HDR reference white (BT.2408), cd/m².
_PQ_WHITE = 203.0


def make_wide_video(
    path: str | Path,
    colors: Sequence[RGB],
    light: Light,
    *,
    size: tuple[int, int] = (320, 180),
    duration: float = 0.2,
    fps: int = 30,
    codec: str = "libx265",
    rotation: int = 0,
) -> Path:
    """Write a 10-bit clip showing ``colors`` (BT.709 SDR values) as equal vertical
    stripes, left to right, in another light, tagged so in the bitstream and the
    container, as phones and cameras write them (``rotation``: a display matrix, as in
    :func:`make_video`):

    - ``hlg`` and ``pq``: BT.2100 HDR (BT.2020 primaries), the SDR display's light
      (BT.1886: gamma 2.4) with its white at HDR reference white, 203 cd/m² (BT.2408's
      display-light mapping; HLG for a 1000 cd/m² display, where that white is 75 %);
    - ``bt2020``: BT.2020 primaries in BT.709's transfer (SDR), converted in display light;
    - ``p3``: Display P3 primaries in the sRGB transfer, BT.709 matrix.

    A renderer that maps them back into BT.709 SDR shows ``colors`` again. No sound.
    """
    path = Path(path)
    width, height = size
    gamut, (kr, kb), (matrix, primaries, transfer) = _LIGHTS[light]
    sdr = np.asarray(colors, np.float64) / 255.0
    convert = np.linalg.inv(_rgb_to_xyz(gamut)) @ _rgb_to_xyz("bt709")
    if light == "p3":
        signal = _in_p3(sdr)
    else:
        display = np.clip(np.power(sdr, 2.4) @ convert.T, 0.0, 1.0)
        if light == "pq":
            signal = _pq_inverse_eotf(display * _PQ_WHITE)
        elif light == "hlg":
            signal = _hlg_oetf(_hlg_inverse_ootf(display * _PQ_WHITE, kr, kb))
        else:
            signal = np.power(display, 1 / 2.4)
    luma = signal @ np.array([kr, 1.0 - kr - kb, kb])
    cb = (signal[:, 2] - luma) / (2 * (1 - kb))
    cr = (signal[:, 0] - luma) / (2 * (1 - kr))
    # 10-bit limited range.
    codes = np.round(np.stack([64 + 876 * luma, 512 + 896 * cb, 512 + 896 * cr], 1))
    stripe = np.minimum(np.arange(width) * len(colors) // width, len(colors) - 1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p10le"
        ctx = stream.codec_context
        ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc = (
            1,
            matrix,
            primaries,
            transfer,
        )
        if codec == "libx265":
            stream.options = {"preset": "ultrafast", "x265-params": "log-level=error"}
        if rotation:
            stream.set_display_rotation(rotation)
        frame = av.VideoFrame(width, height, "yuv420p10le")
        for index, plane in enumerate(frame.planes):
            rows = np.frombuffer(memoryview(plane), np.uint16).reshape(plane.height, -1)
            step = width // plane.width
            rows[:, : plane.width] = codes[stripe[::step], index].astype(np.uint16)
        frame.colorspace, frame.color_primaries, frame.color_trc = matrix, primaries, transfer
        frame.color_range = 1
        for i in range(max(1, round(duration * fps))):
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _rgb_to_xyz(gamut: str) -> npt.NDArray[np.float64]:
    """The matrix from linear RGB in ``gamut`` to CIE XYZ (D65 white at Y = 1)."""
    columns = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in _PRIMARIES[gamut]]).T
    wx, wy = _D65
    white = np.array([wx / wy, 1.0, (1 - wx - wy) / wy])
    return columns * np.linalg.solve(columns, white)


def _in_p3(srgb: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """sRGB values (0-1) as Display P3 values of the same colours."""
    convert = np.linalg.inv(_rgb_to_xyz("p3")) @ _rgb_to_xyz("bt709")
    return _srgb_oetf(np.clip(_srgb_eotf(srgb) @ convert.T, 0.0, 1.0))


# The ICC profile connection space's white (D50) and Bradford's cone response matrix.
_D50_XYZ = (0.9642, 1.0, 0.8249)
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)


def icc_profile(gamut: Literal["p3", "bt709"]) -> bytes:
    """A version 2 ICC display profile for RGB in ``gamut`` with the sRGB curve, as
    Apple's Display P3 and the common sRGB profiles are: colorants adapted to D50 with
    Bradford's transform, the curve as a parametric one (type 3)."""
    to_xyz = _rgb_to_xyz(gamut)
    scale = (_BRADFORD @ np.array(_D50_XYZ)) / (_BRADFORD @ to_xyz.sum(axis=1))
    adapted = np.linalg.inv(_BRADFORD) @ np.diag(scale) @ _BRADFORD @ to_xyz

    def s15(*values: float) -> bytes:
        return b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    def xyz(column: Sequence[float]) -> bytes:
        return b"XYZ \0\0\0\0" + s15(*column)

    text = f"rendermill test {gamut}".encode()
    curve = b"para\0\0\0\0" + struct.pack(">HH", 3, 0)
    curve += s15(2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + bytes(80)),
        (b"wtpt", xyz(_D50_XYZ)),
        (b"rXYZ", xyz(adapted[:, 0])),
        (b"gXYZ", xyz(adapted[:, 1])),
        (b"bXYZ", xyz(adapted[:, 2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table, data = b"", b""
    start = 128 + 4 + 12 * len(tags)
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body
    header = struct.pack(">I", start + len(data)) + b"none" + bytes([2, 0x40, 0, 0])
    header += b"mntrRGB XYZ " + bytes(12) + b"acsp" + bytes(28) + s15(*_D50_XYZ) + bytes(48)
    return header + struct.pack(">I", len(tags)) + table + data


def _with_profile(data: bytes, suffix: str, profile: bytes) -> bytes:
    """An encoded PNG or JPEG file with ``profile`` embedded (an iCCP chunk after IHDR,
    or an ICC_PROFILE APP2 segment after SOI)."""
    if suffix == ".png":
        (ihdr,) = struct.unpack_from(">I", data, 8)
        at = 8 + 12 + ihdr
        body = b"icc\0\0" + zlib.compress(profile)
        chunk = struct.pack(">I", len(body)) + b"iCCP" + body
        chunk += struct.pack(">I", zlib.crc32(b"iCCP" + body))
        return data[:at] + chunk + data[at:]
    payload = b"ICC_PROFILE\0\x01\x01" + profile
    return data[:2] + b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def _srgb_eotf(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where(v <= 0.04045, v / 12.92, np.power((v + 0.055) / 1.055, 2.4))


def _srgb_oetf(e: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where(e <= 0.0031308, 12.92 * e, 1.055 * np.power(e, 1 / 2.4) - 0.055)


def _hlg_inverse_ootf(
    nits: npt.NDArray[np.float64], kr: float, kb: float
) -> npt.NDArray[np.float64]:
    """Scene light (0-1) that HLG's OOTF shows as ``nits`` on a 1000 cd/m² display
    (BT.2100: F = 1000 * Ys ** (gamma - 1) * E, gamma 1.2)."""
    display = nits / 1000.0
    luminance = display @ np.array([kr, 1.0 - kr - kb, kb])
    scene_luminance = np.power(np.maximum(luminance, 1e-12), 1 / 1.2)
    return display / np.power(scene_luminance, 0.2)[:, None]  # type: ignore[no-any-return]


def _hlg_oetf(e: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    log = _HLG_A * np.log(np.maximum(12 * e - _HLG_B, 1e-12)) + _HLG_C
    return np.where(e <= 1 / 12, np.sqrt(3 * e), log)


def _pq_inverse_eotf(nits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = np.power(nits / 10000.0, m1)
    return np.power((c1 + c2 * y) / (1 + c3 * y), m2)


def make_bframe_video(
    dest: Path,
    *,
    tone_hz: float,
    noise: float = 0.0,
    crf: int = 18,
    duration: float = 4.0,
    size: tuple[int, int] = (320, 180),
    fps: int = 30,
) -> Path:
    """A white counter clip with a one-second GOP and two B-frames between P-frames (x264
    veryfast, closed GOPs of IDR frames), and a stereo 48 kHz AAC tone (with ``noise``
    as :func:`make_video` has it): what a camera or an export preset writes. Clips made
    with the same settings share their SPS and PPS.
    """
    raw = make_video(
        dest.with_suffix(".raw.mp4"),
        color=(255, 255, 255),
        size=size,
        fps=fps,
        duration=duration,
        counter=True,
        tone_hz=tone_hz,
        noise=noise,
    )
    with av.open(str(raw)) as src, av.open(str(dest), "w") as out:
        vstream = out.add_stream("libx264", rate=fps)
        assert isinstance(vstream, VideoStream)
        vstream.width, vstream.height = size
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"preset": "veryfast", "crf": str(crf), "g": str(fps), "bf": "2"}
        # Tagged like the source (BT.601 for SD clips): players read untagged SD video
        # differently.
        tags = src.streams.video[0].codec_context
        ctx = vstream.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = (
            tags.colorspace,
            tags.color_primaries,
            tags.color_trc,
        )
        astream = out.add_stream("aac", rate=48000)
        assert isinstance(astream, AudioStream)
        astream.layout = "stereo"
        for i, frame in enumerate(src.decode(video=0)):
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            frame.pict_type = PictureType.NONE
            out.mux(vstream.encode(frame))
        out.mux(vstream.encode(None))
        with av.open(str(raw)) as sound:
            for audio_frame in sound.decode(audio=0):
                out.mux(astream.encode(audio_frame))
        out.mux(astream.encode(None))
    raw.unlink()
    return dest


def make_audio(
    path: str | Path,
    *,
    tone_hz: float = 440.0,
    duration: float = 2.0,
    rate: int = 48000,
    layout: str = "stereo",
    amplitude: float = 0.5,
    noise: float = 0.0,
) -> Path:
    """Write a sine tone (plus seeded white noise at ``noise``, as :func:`make_video`
    has it) to ``path`` and return it; the format follows the suffix.

    ``.m4a``/``.mp4``/``.aac`` give AAC, ``.mp3`` MP3, ``.wav`` 16-bit PCM, ``.ogg``/``.opus``
    /``.webm`` Opus. ``layout`` is any FFmpeg layout name (``mono``, ``stereo``, ``5.1``);
    every channel carries the same tone. Raises ``ValueError`` for an unknown suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    codecs = {
        ".m4a": ("aac", "mp4"),
        ".mp4": ("aac", "mp4"),
        ".aac": ("aac", "adts"),
        ".mp3": ("libmp3lame", "mp3"),
        ".wav": ("pcm_s16le", "wav"),
        ".ogg": ("libopus", "ogg"),
        ".opus": ("libopus", "ogg"),
        ".webm": ("libopus", "webm"),
    }
    if suffix not in codecs:
        raise ValueError(f"make_audio: unsupported suffix {suffix!r}; use one of {list(codecs)}")
    codec, container_format = codecs[suffix]
    channels = av.AudioLayout(layout).nb_channels
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate)
        assert isinstance(stream, AudioStream)
        stream.layout = layout
        _write_tone(out, stream, tone_hz, duration, rate, channels, amplitude, noise)
    return path


def make_image(
    path: str | Path,
    *,
    color: RGB = (0, 255, 0),
    size: tuple[int, int] = (320, 180),
    alpha: int | None = None,
    corner: RGB | None = None,
    exif_orientation: int | None = None,
    lossless: bool = True,
    display_p3: bool = False,
) -> Path:
    """Write a solid ``color`` still of ``size`` to ``path`` (``.png``, ``.jpg``, ``.webp``).

    With ``alpha`` (0..255) the image has an alpha channel of that uniform value (PNG
    and WebP only). With ``corner`` the top-left quarter is that colour instead, so
    that a test can see which way up the picture is drawn. ``exif_orientation`` (1..8,
    JPEG only) adds an EXIF block with that orientation. WebP is lossless (RGB) unless
    ``lossless`` is False (then it is BT.601 YUV, as lossy WebP always is). With
    ``display_p3`` (PNG and JPEG) the pixels hold ``color`` (and ``corner``) in Display P3
    and the file embeds a Display P3 ICC profile, as macOS screenshots and iPhone photos
    do: a colour-managed viewer shows ``color``. Returns ``path``; raises
    ``ValueError`` for an unknown suffix, alpha in a JPEG, EXIF in anything else, or a
    Display P3 WebP.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    width, height = size
    jpeg = suffix in (".jpg", ".jpeg")
    if exif_orientation is not None and not jpeg:
        raise ValueError("make_image: only JPEG files get an EXIF orientation here")
    if jpeg:
        if alpha is not None:
            raise ValueError("make_image: JPEG has no alpha channel")
        codec, pix_fmt = "mjpeg", "yuvj420p"
    elif suffix == ".png":
        codec, pix_fmt = "png", "rgb24" if alpha is None else "rgba"
    elif suffix == ".webp":
        codec = "libwebp"
        pix_fmt = "yuv420p" if alpha is None else "yuva420p"
    else:
        raise ValueError(f"make_image: unsupported suffix {suffix!r}; use .png, .jpg or .webp")
    if display_p3 and suffix == ".webp":
        raise ValueError("make_image: Display P3 is written into PNG and JPEG files only")

    def stored(rgb: RGB) -> npt.NDArray[np.float64]:
        value = np.asarray([rgb], np.float64) / 255.0
        if display_p3:
            value = _in_p3(value)
        rounded: npt.NDArray[np.float64] = np.round(value[0] * 255.0)
        return rounded

    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., :3] = stored(color)
    if corner is not None:
        rgba[: height // 2, : width // 2, :3] = stored(corner)
    rgba[..., 3] = 255 if alpha is None else alpha
    frame = av.VideoFrame.from_ndarray(rgba, format="rgba")
    muxer = "webp" if suffix == ".webp" else "image2"
    with av.open(str(path), "w", format=muxer) as out:
        stream = out.add_stream(codec, rate=1)
        assert isinstance(stream, VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        if codec == "libwebp":
            stream.options = {"lossless": "1" if lossless else "0"}
        # JPEG and WebP YUV are BT.601 by definition.
        picture = frame.reformat(format=pix_fmt, dst_colorspace=Colorspace.ITU601)
        picture.pts = 0
        out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    if display_p3:
        path.write_bytes(_with_profile(path.read_bytes(), suffix, icc_profile("p3")))
    if exif_orientation is not None:
        data = path.read_bytes()
        path.write_bytes(data[:2] + _exif_segment(exif_orientation) + data[2:])
    return path


def _exif_segment(orientation: int) -> bytes:
    """A JPEG APP1 segment holding an EXIF block with only the orientation tag."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def read_counter(rgb: npt.NDArray[Any]) -> int:
    """The frame index burnt into a ``counter=True`` clip, read from its decoded picture.

    ``rgb`` is an (H, W, 3) array showing exactly the clip's picture (crop the layer out
    of a rendered frame first); any scale works as long as each cell stays a few pixels
    wide.
    """
    height, width = rgb.shape[:2]
    row = min(height - 1, height - max(1, height // 8))
    luma = rgb[row, :, :].astype(np.float32).mean(axis=1)
    value = 0
    for bit in range(COUNTER_BITS):
        lo, hi = _cell(bit, width)
        centre = luma[lo + (hi - lo) // 4 : hi - (hi - lo) // 4]
        if centre.mean() > 128:
            value |= 1 << bit
    return value


def _cell(bit: int, width: int) -> tuple[int, int]:
    return bit * width // COUNTER_BITS, (bit + 1) * width // COUNTER_BITS


def _draw_moving(base: npt.NDArray[np.uint8], index: int) -> npt.NDArray[np.uint8]:
    height, width = base.shape[:2]
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    phase = index * 0.15
    stripes = 48.0 * np.sin(x / 9.0 + y / 23.0 + phase) + 32.0 * np.sin(y / 5.0 - phase * 2.0)
    picture = base.copy()
    for c in range(3):
        picture[..., c] = np.clip(base[..., c].astype(np.float32) * 0.6 + 50.0 + stripes, 0, 255)
    return picture


def _draw_counter(base: npt.NDArray[np.uint8], index: int) -> npt.NDArray[np.uint8]:
    picture = base.copy()
    height, width = picture.shape[:2]
    band = picture[height - height // 4 :]
    for bit in range(COUNTER_BITS):
        lo, hi = _cell(bit, width)
        band[:, lo:hi, :3] = 255 if index >> bit & 1 else 0
    return picture


def _write_tone(
    out: av.container.OutputContainer,
    stream: AudioStream,
    tone_hz: float,
    duration: float,
    rate: int,
    channels: int,
    amplitude: float,
    noise: float = 0.0,
) -> None:
    total = round(duration * rate)
    rng = np.random.default_rng(round(tone_hz))
    layout = stream.layout.name
    for start in range(0, total, _AUDIO_CHUNK):
        n = min(_AUDIO_CHUNK, total - start)
        t = (np.arange(start, start + n, dtype=np.float64)) / rate
        wave = amplitude * np.sin(2.0 * math.pi * tone_hz * t)
        if noise:
            wave = wave + rng.uniform(-noise, noise, n)
        wave = wave.astype(np.float32)
        samples = np.ascontiguousarray(np.broadcast_to(wave, (channels, n)))
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


class Decoded:
    """A rendered file decoded whole, for checking it: RGB pictures and the sound as
    float samples (channels x samples). Meant for the small files tests write."""

    def __init__(self, path: str | Path, fps: int) -> None:
        self.path = Path(path)
        self.fps = fps
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            self.width = video.codec_context.width
            self.height = video.codec_context.height
            self.duration = (container.duration or 0) / av.time_base
            self.frames: list[npt.NDArray[np.uint8]] = [
                np.asarray(f.to_ndarray(format="rgb24"), np.uint8)
                for f in container.decode(video=0)
            ]
        with av.open(str(path)) as container:
            chunks = (
                [f.to_ndarray() for f in container.decode(audio=0)]
                if container.streams.audio
                else []
            )
        self.rate = 48000
        self.audio = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), np.float32)

    def at(self, t: float) -> npt.NDArray[np.uint8]:
        """The picture showing at time ``t`` (frame i shows from i / fps)."""
        return self.frames[math.floor(t * self.fps + 1e-6)]

    def window(self, start: float, end: float) -> npt.NDArray[np.float64]:
        return np.asarray(
            self.audio[:, round(start * self.rate) : round(end * self.rate)], np.float64
        )

    def rms(self, start: float, end: float) -> float:
        """Root mean square level of the sound between ``start`` and ``end`` seconds."""
        return float(np.sqrt(np.mean(np.square(self.window(start, end)))))

    def level_at(self, hz: float, start: float, end: float) -> float:
        """Amplitude of the ``hz`` component of the left channel over the window."""
        left = self.window(start, end)[0]
        spectrum = np.abs(np.fft.rfft(left)) / len(left) * 2
        freqs = np.fft.rfftfreq(len(left), 1 / self.rate)
        return float(spectrum[np.argmin(np.abs(freqs - hz))])


def make_coded_clip(
    path: str | Path,
    codec: str,
    *,
    pix_fmt: str = "yuv420p",
    colour: tuple[int, int, int, int] | None = None,
    sample_aspect: Fraction | None = None,
    options: dict[str, str] | None = None,
    frames: int = 10,
) -> Path:
    """Write ``frames`` grey 320x180 pictures at 30 fps with ``codec`` in ``pix_fmt``,
    the encoder told ``colour`` (range, matrix, primaries, transfer: FFmpeg's codes) and
    ``sample_aspect``, so that the bitstream's own headers say them. No sound."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=30)
        assert isinstance(stream, VideoStream)
        stream.width, stream.height, stream.pix_fmt = 320, 180, pix_fmt
        stream.codec_context.options = options or {}
        ctx = stream.codec_context
        if colour is not None:
            ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc = colour
        if sample_aspect is not None:
            ctx.sample_aspect_ratio = sample_aspect
        for i in range(frames):
            grey = np.full((180, 320, 3), 20 * i % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(grey, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def damage_picture(src: str | Path, dest: str | Path, index: int) -> Path:
    """Copy ``src`` to ``dest`` with the coded data of its picture ``index`` (presentation
    order, counted at the stream's frame rate) overwritten by seeded noise, as a bad disk
    or a broken upload leaves it. The container stays intact; FFmpeg's decoder conceals
    the damage and marks the picture corrupt."""
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None and stream.average_rate is not None
        rate = stream.average_rate
        found = next(
            (p.pos, p.size)
            for p in container.demux(stream)
            if p.pts is not None
            and p.pos is not None
            and round(p.pts * stream.time_base * rate) == index
        )
    data = bytearray(Path(src).read_bytes())
    pos, size = found
    if size <= 16:
        raise ValueError(f"picture {index} is coded in {size} bytes: too few to damage")
    noise = np.random.default_rng(index).integers(0, 256, size, np.uint8)
    # The first bytes (the NAL unit's length and header, the slice header's start) stay,
    # so that the decoder takes the rest as this picture's damaged data.
    data[pos + 12 : pos + size] = noise[12:].tobytes()
    Path(dest).write_bytes(bytes(data))
    return Path(dest)


def decoded_sound(path: str | Path) -> tuple[npt.NDArray[np.float64], list[bytes], list[str]]:
    """A file's first audio stream: its first channel decoded, its packets as stored,
    and what the decoder complained about (warnings and worse)."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs, av.open(str(path)) as container:
            stream = container.streams.audio[0]
            packets = [bytes(p) for p in container.demux(stream) if p.size]
        with av.open(str(path)) as container:
            decoded = [f.to_ndarray()[0] for f in container.decode(audio=0)]
    finally:
        av.logging.set_level(level)
    return np.concatenate(decoded).astype(np.float64), packets, [m[2] for m in logs]


def lag(out: npt.NDArray[np.float64], ref: npt.NDArray[np.float64], at: int, reach: int) -> int:
    """How many samples ``out`` runs ahead of ``ref`` around sample ``at`` (100 ms
    compared), looking ``reach`` samples either way."""
    window = out[at : at + 4800]
    errors = {
        shift: float(np.sum((window - ref[at + shift : at + shift + 4800]) ** 2))
        for shift in range(-reach, reach + 1)
    }
    return min(errors, key=errors.__getitem__)


def window_errors(
    out: npt.NDArray[np.float64],
    ref: npt.NDArray[np.float64],
    shift: int,
    lo: int,
    hi: int,
    size: int = 256,
) -> list[tuple[int, float]]:
    """(sample, dB) for windows of ``size`` samples of ``out`` from ``lo`` to ``hi``: how
    far each is from ``ref`` (read ``shift`` samples later), relative to ``ref``'s
    level in that window."""
    found = []
    for at in range(lo, hi - size, size):
        expected = ref[at + shift : at + shift + size]
        error = np.sqrt(np.mean((out[at : at + size] - expected) ** 2))
        level = np.sqrt(np.mean(expected**2))
        found.append((at, float(20 * np.log10(error / level))))
    return found
