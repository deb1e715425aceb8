"""Still pictures: their stored size, read from the file's header before anything is
decoded, and the scale a JPEG is decoded at.

A PNG or WebP file of a few hundred kilobytes can hold a picture of hundreds of
megapixels (one colour compresses to almost nothing), and decoding one takes 4 bytes a
pixel. Its size is therefore read from the header, so that a picture too large to draw
(``probe.MAX_PIXELS``) is refused before it is decoded. A JPEG photo is decoded at the
largest of 1/1, 1/2, 1/4 or 1/8 of its size that is still no smaller than it is drawn
(FFmpeg's JPEG decoder scales in its inverse DCT, as libjpeg's does): a 48-megapixel
photo shown at 1080p is decoded at 2016x1512, 16 times fewer pixels to decode, convert
and hold.
"""

from __future__ import annotations

from pathlib import Path

# FFmpeg's JPEG decoder scales by 2 ** -lowres, lowres at most 3.
_MAX_LOWRES = 3

_PNG = b"\x89PNG\r\n\x1a\n"


def header_only(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a PNG or WebP picture, whose stream
    parameters avformat would find only by decoding the whole picture (for a JPEG it
    reads them off the header)."""
    return head.startswith(_PNG) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def is_picture(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a PNG, WebP or JPEG picture."""
    return header_only(head) or head.startswith(b"\xff\xd8\xff")


def stored_size(path: Path) -> tuple[int, int] | None:
    """The width and height a PNG or WebP file's header says; None for other files, or
    when the header is cut short (the decoder then says what is wrong)."""
    try:
        with path.open("rb") as f:
            head = f.read(32)
    except OSError:
        return None
    if head.startswith(_PNG) and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP" or len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        # The canvas: 24-bit width - 1 and height - 1, little-endian.
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8L" and head[20] == 0x2F:
        # Lossless: 14-bit width - 1 and height - 1 packed after the signature byte.
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        # Lossy: a key frame's 14-bit width and height (the top two bits scale).
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(
            head[28:30], "little"
        ) & 0x3FFF
    return None


def lowres(stored: tuple[int, int], drawn: tuple[int, int]) -> int:
    """The largest JPEG decoding scale 2 ** -k (k <= 3) at which a picture of ``stored``
    size is still at least ``drawn`` in both dimensions (the decoder rounds up)."""
    k = 0
    while k < _MAX_LOWRES:
        w, h = scaled(stored, k + 1)
        if w < drawn[0] or h < drawn[1]:
            break
        k += 1
    return k


def scaled(stored: tuple[int, int], k: int) -> tuple[int, int]:
    """The size a picture of ``stored`` size decodes at with JPEG scale 2 ** -k."""
    return -(-stored[0] // 2**k), -(-stored[1] // 2**k)
