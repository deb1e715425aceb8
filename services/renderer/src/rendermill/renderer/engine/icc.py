"""The light an image's embedded ICC profile describes, in FFmpeg's colour codes.

Browsers colour-manage images: a Display P3 PNG (every macOS screenshot) or JPEG (an
iPhone photo) shows its colours as the profile says, not as if they were sRGB. FFmpeg
reads such profiles only when built with lcms2, which PyAV's build is not, so the
profile is read here from the file itself: PNG's iCCP chunk, JPEG's ICC_PROFILE APP2
segments, WebP's ICCP chunk. An RGB matrix profile is recognised by its colorants (the
primaries adapted to the D50 connection space with Bradford's transform, as ICC asks),
and the frame is tagged with those primaries, which ``compose`` then maps into BT.709.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

# AVColorPrimaries / AVColorTransferCharacteristic values (libavutil/pixfmt.h).
PRIMARIES_BT709 = 1
PRIMARIES_UNSPECIFIED = 2
PRIMARIES_BT2020 = 9
PRIMARIES_DCI_P3 = 11
PRIMARIES_DISPLAY_P3 = 12
TRANSFER_BT709 = 1
TRANSFER_UNSPECIFIED = 2
TRANSFER_SRGB = 13
TRANSFER_BT2020_10 = 14
TRANSFER_PQ = 16  # SMPTE ST 2084
TRANSFER_HLG = 18  # ARIB STD-B67

# Chromaticities (x, y) of the red, green and blue primaries; every one here has a D65
# white.
_GAMUTS: dict[int, tuple[tuple[float, float], ...]] = {
    PRIMARIES_BT709: ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)),
    PRIMARIES_DISPLAY_P3: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)),
    PRIMARIES_BT2020: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)),
}
# The transfer each gamut's profiles use: sRGB's curve for sRGB and Display P3.
_TRANSFERS = {
    PRIMARIES_BT709: TRANSFER_SRGB,
    PRIMARIES_DISPLAY_P3: TRANSFER_SRGB,
    PRIMARIES_BT2020: TRANSFER_BT2020_10,
}
_D65 = (0.3127, 0.3290)
_D50_XYZ = np.array([0.9642, 1.0, 0.8249])
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)
# Colorants are stored as s15Fixed16 numbers and rounded by the tools that write them
# (Apple's Display P3: 0.5151 0.2412 -0.0011 for red); real gamuts differ by 0.02+.
_TOLERANCE = 0.003
# How much of a file is searched for the profile: it sits before the picture data.
_HEAD = 1 << 20
# The most a compressed (PNG) profile is inflated to: matrix profiles are a few hundred
# bytes to a few kilobytes, and the tags read here sit at their start. A crafted chunk
# inflating to gigabytes stops here.
_MAX_PROFILE = 1 << 20


def light_name(transfer: int, primaries: int) -> str:
    """A picture's light in a word, for spans and logs: "pq" or "hlg" (HDR), "bt2020" or
    "p3" (wide-gamut SDR), otherwise "sdr"."""
    if transfer == TRANSFER_PQ:
        return "pq"
    if transfer == TRANSFER_HLG:
        return "hlg"
    if primaries == PRIMARIES_BT2020:
        return "bt2020"
    if primaries in (PRIMARIES_DCI_P3, PRIMARIES_DISPLAY_P3):
        return "p3"
    return "sdr"


def colorants(primaries: int) -> npt.NDArray[np.float64]:
    """The rXYZ, gXYZ, bXYZ colorants (columns) an ICC profile of ``primaries`` holds."""
    columns = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in _GAMUTS[primaries]]).T
    wx, wy = _D65
    white = np.array([wx / wy, 1.0, (1 - wx - wy) / wy])
    to_xyz = columns * np.linalg.solve(columns, white)
    scale = (_BRADFORD @ _D50_XYZ) / (_BRADFORD @ white)
    adapted: npt.NDArray[np.float64] = (
        np.linalg.inv(_BRADFORD) @ np.diag(scale) @ _BRADFORD @ to_xyz
    )
    return adapted


def light(profile: bytes) -> tuple[int, int] | None:
    """(primaries, transfer) of an RGB matrix profile with known primaries; None for any
    other profile (grey, CMYK, LUT-based, unknown primaries) or bytes that do not parse."""
    if len(profile) < 132 or profile[36:40] != b"acsp" or profile[16:20] != b"RGB ":
        return None
    (count,) = struct.unpack_from(">I", profile, 128)
    tags: dict[bytes, tuple[int, int]] = {}
    for i in range(min(count, 256)):
        at = 132 + 12 * i
        if at + 12 > len(profile):
            return None
        signature = profile[at : at + 4]
        offset, size = struct.unpack_from(">II", profile, at + 4)
        tags[signature] = (offset, size)
    found = []
    for signature in (b"rXYZ", b"gXYZ", b"bXYZ"):
        if signature not in tags:
            return None
        offset, size = tags[signature]
        if size < 20 or offset + 20 > len(profile) or profile[offset : offset + 4] != b"XYZ ":
            return None
        found.append([v / 65536 for v in struct.unpack_from(">3i", profile, offset + 8)])
    measured = np.array(found).T
    for primaries in _GAMUTS:
        if np.all(np.abs(measured - colorants(primaries)) <= _TOLERANCE):
            return primaries, _TRANSFERS[primaries]
    return None


def read_profile(path: Path) -> bytes | None:
    """The ICC profile embedded in the PNG, JPEG or WebP file at ``path``; None when it
    has none or the file cannot be read (the decoder reports what is wrong with it)."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
    except OSError:
        return None
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(head)
        if head.startswith(b"\xff\xd8"):
            return _jpeg(head)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp(head)
    except (struct.error, zlib.error, ValueError):
        return None
    return None


def _png(data: bytes) -> bytes | None:
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"iCCP":
            body = data[pos + 8 : pos + 8 + length]
            name_end = body.index(b"\0")
            # A profile name, a NUL, compression method 0 (zlib), the compressed profile.
            return zlib.decompressobj().decompress(body[name_end + 2 :], _MAX_PROFILE)
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _jpeg(data: bytes) -> bytes | None:
    # APP2 segments "ICC_PROFILE\0", sequence number, count, then a piece of the profile.
    pieces: dict[int, bytes] = {}
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE2 and segment.startswith(b"ICC_PROFILE\0") and len(segment) > 14:
            pieces[segment[12]] = segment[14:]
        pos += 2 + length
    if not pieces:
        return None
    return b"".join(pieces[k] for k in sorted(pieces))


def _webp(data: bytes) -> bytes | None:
    pos = 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        if kind == b"ICCP":
            return data[pos + 8 : pos + 8 + length]
        pos += 8 + length + (length & 1)
    return None
