"""HDR and wide-gamut pictures mapped into BT.709 SDR through a 3D LUT.

swscale's colour management maps every pixel on its own: about 37 ms of CPU for a 1080p
frame here, and a context of about 40 MB. The mapping depends on a pixel's R'G'B' alone,
so it is sampled once, on a grid of SIZE^3 points of the source's R'G'B', by swscale
itself (its intent and gamut mapping are kept as they are), and applied with libavfilter:
the picture to 16-bit R'G'B', ``lut3d`` with tetrahedral interpolation, and back to
BT.709 yuv420p. That takes about 20 ms and 22 MB, and comes within 55 dB (PSNR of luma;
at most 6 levels apart) of swscale's own mapping of HLG phone video.

The table is shared by every picture in one light, whatever its size, while swscale
sets a mapping up again for every size: a slideshow of wide-gamut screenshots of six
sizes took 1.5 s for each. Making a table takes swscale about 3.3 CPU seconds (1.8 s on
two cores), so ``Tables`` keeps each one as a .cube file in a cache directory, for every
later render on the machine. RGB pictures (PNG) go through it too, and pictures with alpha
with their alpha (dithered from 16 bits back to 8, as swscale's mapping does it). A YUV
picture in a matrix libavfilter's scale cannot read keeps swscale's own mapping.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
import numpy.typing as npt
from av.video.frame import VideoFrame
from av.video.plane import VideoPlane
from av.video.reformatter import Interpolation, VideoReformatter

from rendermill.common import logging as rlog

log = rlog.get(__name__)

# Points on each axis of the grid: the finest .cube files commonly carry. With 33 points
# the mapping came within 47 dB of swscale's, with 65 within 52.6 dB (float R'G'B').
SIZE = 65
# The scale filter's names for the matrices it reads, by AVColorSpace.
_MATRICES = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020"}
# As compose converts: bilinear, exact rounding.
_FLAGS = "bilinear+accurate_rnd"
# The grid is sampled in float; pictures go through the table in 16-bit R'G'B', which
# holds half the memory of float for the same speed, and came closer to swscale's own
# mapping (55.5 dB against 52.6 dB).
_GRID = "gbrpf32le"
_RGB, _RGBA = "gbrp16le", "gbrap16le"
# AVColorSpace / AVColorRange / AVColorTransferCharacteristic / AVColorPrimaries.
_SPC_RGB, _SPC_BT709 = 0, 1
_RANGE_MPEG, _RANGE_JPEG = 1, 2
_BT709 = 1


def matrix_name(colorspace: int) -> str | None:
    """The scale filter's name for the matrix of AVColorSpace ``colorspace``, or None
    when it has none (a picture so tagged keeps swscale's own mapping)."""
    return _MATRICES.get(colorspace)


@functools.lru_cache(maxsize=8)
def table(trc: int, primaries: int, dst_trc: int, dst_primaries: int) -> str:
    """The .cube text of swscale's mapping of R'G'B' in transfer ``trc`` and
    ``primaries`` to ``dst_trc`` and ``dst_primaries``, sampled on SIZE^3 points (red
    varying fastest), clipped to [0, 1]. Made once per process for each light (about
    1.8 s, most of it swscale setting its mapping up); see sample."""
    return sample(trc, primaries, dst_trc, dst_primaries)


def sample(trc: int, primaries: int, dst_trc: int, dst_primaries: int) -> str:
    """``table``'s text, made anew (7.4 MB, not kept in memory)."""
    axis = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)
    blue, green, red = np.meshgrid(axis, axis, axis, indexing="ij")
    grid = VideoFrame(SIZE, SIZE * SIZE, _GRID)
    # gbrp planes: green, blue, red.
    for plane, values in zip(grid.planes, (green, blue, red), strict=True):
        _floats(plane)[:] = values.reshape(SIZE * SIZE, SIZE)
    grid.colorspace, grid.color_range = _SPC_RGB, _RANGE_JPEG
    grid.color_trc, grid.color_primaries = trc, primaries
    mapped = VideoReformatter().reformat(
        grid,
        SIZE,
        SIZE * SIZE,
        _GRID,
        dst_color_trc=dst_trc,
        dst_color_primaries=dst_primaries,
        interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND,
        # On more threads, swscale maps the first four points of each slice but the
        # first to grey (0.51, whatever their colour; swscale 9.5).
        threads=1,
    )
    g, b, r = (np.clip(_floats(p), 0.0, 1.0).reshape(-1) for p in mapped.planes)
    # (+ 0.0 turns a clipped -0.0 into 0.0: every value prints in eight characters.)
    values = (np.stack((r, g, b), axis=1).reshape(-1) + np.float32(0.0)).tolist()
    return _HEADER + ("%.6f %.6f %.6f\n" * (SIZE**3)) % tuple(values)


_HEADER = f"LUT_3D_SIZE {SIZE}\n"
# Every value is in [0, 1] with six decimals, so every row is as long: a kept file of
# another length was cut short.
_CUBE_BYTES = len(_HEADER) + SIZE**3 * len("0.000000 0.000000 0.000000\n")
# What a kept table depends on: how it is sampled (this file's format) and swscale.
_KEY = "v1-sws{}.{}.{}".format(*av.library_versions["libswscale"])

Light = tuple[int, int, int, int]


class Tables:
    """Where the tables' .cube files come from (lut3d reads only files).

    With a ``directory``, each table is kept there, named by its light and what made it
    (swscale's version), and later mappings of that light, in this process or any other,
    read it: none makes it again. Without one, or when the directory cannot be written,
    a table is made once per process and written to a temporary file for each mapping.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        # Tables this object had swscale make (about 3.3 CPU seconds each).
        self.made = 0
        self._unwritable = False

    def mapper(self, light: Light, make: Callable[[Path], Mapper]) -> Mapper:
        """``make`` given a .cube file of ``light``'s table (trc, primaries, target trc,
        target primaries), which it reads before it returns. When ``make`` cannot read a
        kept file but can read a fresh one, the kept file is removed (to be made again).
        Raises OSError when no file can be written, and what ``make`` raises."""
        kept = self.keep(light)
        if kept is not None:
            try:
                return make(kept)
            except av.FFmpegError as exc:
                refused: av.FFmpegError | None = exc
        else:
            refused = None
        fd, name = tempfile.mkstemp(prefix="rendermill-", suffix=".cube")
        path = Path(name)
        try:
            misses = table.cache_info().misses
            with os.fdopen(fd, "w") as f:
                f.write(table(*light))
            self.made += table.cache_info().misses - misses
            mapper = make(path)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        if kept is not None and refused is not None:
            log.warning("lut_table_unreadable", path=str(kept), error=str(refused))
            with contextlib.suppress(OSError):
                kept.unlink()
        return mapper

    def path(self, light: Light) -> Path | None:
        """Where ``light``'s table is kept; None without a directory."""
        if self.directory is None:
            return None
        return self.directory / f"rendermill-{_KEY}-{SIZE}-{'-'.join(map(str, light))}.cube"

    def keep(self, light: Light) -> Path | None:
        """``light``'s kept table, made and written first if need be; None without a
        directory or when it cannot be written (and the kept table is not there)."""
        path = self.path(light)
        if path is None:
            return None
        with contextlib.suppress(OSError):
            if path.stat().st_size == _CUBE_BYTES:
                # Its time says when it was last used (see _sweep), where it may be set:
                # a cache others write is read all the same.
                with contextlib.suppress(OSError):
                    os.utime(path)
                return path
        if self._unwritable:
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _sweep(path.parent)
            # Written aside and renamed: a render reading it never sees half a table.
            fd, name = tempfile.mkstemp(prefix=".table-", suffix=".tmp", dir=path.parent)
            aside = Path(name)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(sample(*light))
                self.made += 1
                # Readable by whoever else renders with this cache.
                aside.chmod(0o644)
                aside.replace(path)
            except BaseException:
                with contextlib.suppress(OSError):
                    aside.unlink()
                raise
        except OSError as exc:
            log.warning("lut_cache_unwritable", directory=str(path.parent), error=str(exc))
            self._unwritable = True
            return None
        log.info("lut_table_kept", path=str(path))
        return path


# Kept tables unused this long (those of another swscale, or of a light no longer
# rendered) and tables half written this long ago (by a render that was killed) go.
UNUSED_FOR = 30 * 86400.0
HALF_WRITTEN_FOR = 3600.0


def _sweep(directory: Path) -> None:
    """Remove what a cache directory holds that no render will read (see UNUSED_FOR)."""
    now = time.time()
    for pattern, age in (("rendermill-*.cube", UNUSED_FOR), (".table-*.tmp", HALF_WRITTEN_FOR)):
        for found in directory.glob(pattern):
            with contextlib.suppress(OSError):
                if now - found.stat().st_mtime > age:
                    found.unlink()
                    log.info("lut_table_removed", path=str(found))


class Mapper:
    """Maps pictures of one kind (format, size, matrix, range) through one table into
    BT.709 yuv420p (yuva420p, their alpha kept, with ``alpha``) in limited range at the
    same size, on ``threads`` threads. ``matrix`` is the scale filter's name for a YUV
    picture's matrix (see matrix_name), None for RGB pictures; ``cube`` is the table's
    file (see Tables), read while the mapper is set up."""

    def __init__(
        self,
        fmt: str,
        width: int,
        height: int,
        matrix: str | None,
        full_range: bool,
        alpha: bool,
        cube: Path,
        threads: int,
    ) -> None:
        graph = av.filter.Graph()
        graph.threads = threads
        in_range = "pc" if full_range or matrix is None else "tv"
        source = graph.add(
            "buffer",
            video_size=f"{width}x{height}",
            pix_fmt=fmt,
            time_base=str(Fraction(1, 1000)),
            pixel_aspect="1/1",
            colorspace="gbr" if matrix is None else _COLORSPACE_NAMES[matrix],
            range=in_range,
        )
        to_rgb = f"out_range=pc:flags={_FLAGS}"
        if matrix is not None:
            to_rgb = f"in_color_matrix={matrix}:in_range={in_range}:{to_rgb}"
        chain = [
            source,
            graph.add("scale", to_rgb),
            graph.add("format", _RGBA if alpha else _RGB),
            # lut3d reads the file when the graph is set up, not later.
            graph.add("lut3d", f"file={_escape(str(cube))}:interp=tetrahedral"),
            graph.add("scale", f"out_color_matrix=bt709:in_range=pc:out_range=tv:flags={_FLAGS}"),
            graph.add("format", "yuva420p" if alpha else "yuv420p"),
            graph.add("buffersink"),
        ]
        for a, b in itertools.pairwise(chain):
            a.link_to(b)
        graph.configure()
        # The graph's filters keep pointers into it: it lives as long as the mapper.
        self._graph = graph

    def map(self, frame: VideoFrame) -> VideoFrame:
        """``frame`` in BT.709 SDR, tagged so."""
        self._graph.push(frame)
        out = self._graph.pull()
        assert isinstance(out, VideoFrame)
        out.colorspace, out.color_range = _SPC_BT709, _RANGE_MPEG
        out.color_trc, out.color_primaries = _BT709, _BT709
        return out


# The buffer source's names for the matrices (AVColorSpace names).
_COLORSPACE_NAMES = {
    "bt709": "bt709",
    "fcc": "fcc",
    "bt601": "smpte170m",
    "smpte240m": "smpte240m",
    "bt2020": "bt2020nc",
}


def _escape(path: str) -> str:
    # Filter arguments treat ':' and '\\' specially.
    return path.replace("\\", "\\\\").replace(":", "\\:").replace("'", "\\'")


def _floats(plane: VideoPlane) -> npt.NDArray[np.float32]:
    row = plane.line_size // 4
    data = np.frombuffer(memoryview(plane), np.float32, count=row * plane.height)
    view: npt.NDArray[np.float32] = data.reshape(plane.height, row)[:, : plane.width]
    return view
