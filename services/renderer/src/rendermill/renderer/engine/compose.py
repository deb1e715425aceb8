"""Placing layers on the output frame and compositing them in YUV 4:2:0.

Every layer is converted once, straight from its decoded frame to the size it is drawn
at (one swscale pass, which also brings it to the output's colour matrix), and then
copied or alpha-blended into the output planes with numpy. Sizes and positions are
rounded to even pixels so each 2x2 block of luma maps onto exactly one chroma sample and
no chroma resampling is ever needed.

Colour: the output is BT.709 YUV in limited range at every size, and ``encode`` tags
it so. A YUV source is read with the matrix it is tagged with; untagged video with what
players assume (BT.709 when HD-sized, BT.601 below) and untagged still images as BT.601
(JPEG and WebP define it); full-range sources are brought to limited range; RGB sources
(PNG, the background) are converted with BT.709. An HD video that is untagged or tagged
BT.709 therefore needs no colour conversion at all, only scaling. HDR video (PQ or HLG,
as phones record) and wide-gamut sources (BT.2020, P3) are mapped into BT.709 SDR as
swscale's colour management maps them, as ``ffmpeg -vf
scale=out_transfer=bt709:out_primaries=bt709`` does: HDR reference white (203 cd/m², 75 %
HLG) becomes SDR white, colours outside BT.709 are brought into it (relative
colorimetric), through a 3D LUT sampled from that mapping (see ``lut``). Still images
in P3 say so in an ICC profile, which ``probe`` reads into the frame's tags (see
``icc``).

Effects (an output option): opacity folds into the alpha blend, which stays in YUV and
is exact there because YUV is an affine function of RGB. Blend modes other than normal
are computed in RGB (the CSS compositing formulas), on the layer's region only.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from av.video.frame import VideoFrame
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from rendermill.common import logging as rlog
from rendermill.common.project import model
from rendermill.renderer.engine import icc, lut

log = rlog.get(__name__)

Plane = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

# A layer is never converted larger than this; beyond it only a sliver would be visible
# anyway and the memory would be wasted.
MAX_LAYER_SIDE = 16384

# The matrix of every output frame (and of the tags ``encode`` writes).
OUTPUT_COLORSPACE = Colorspace.ITU709
# BT.709 luma weights, for the RGB maths of blend modes.
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB
# AVColorSpace / AVColorRange values as frames report them (libavutil/pixfmt.h).
_SPC_BT709 = 1
_SPC_UNSPECIFIED = 2
_SPC_BT470BG = 5
_SPC_SMPTE170M = 6
_RANGE_JPEG = 2
_ACCURATE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
_TRC_HDR = frozenset({icc.TRANSFER_PQ, icc.TRANSFER_HLG})
_PRI_WIDE = frozenset({icc.PRIMARIES_BT2020, icc.PRIMARIES_DCI_P3, icc.PRIMARIES_DISPLAY_P3})


def _even(value: float) -> int:
    return 2 * round(value / 2)


@dataclasses.dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in output pixels; all four numbers are even."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    def covers(self, other: Rect) -> bool:
        return (
            self.x <= other.x
            and self.y <= other.y
            and self.right >= other.right
            and self.bottom >= other.bottom
        )

    def meets(self, other: Rect) -> bool:
        """Whether the two share any pixel."""
        return (
            self.x < other.right
            and other.x < self.right
            and self.y < other.bottom
            and other.y < self.bottom
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Viewport:
    """The project canvas scaled into the output frame, centred, keeping its aspect."""

    width: int
    height: int
    canvas_width: int
    canvas_height: int
    scale: float
    # Where the canvas lands in the output frame; layers are clipped to it.
    canvas: Rect
    # contain/cover follow CSS object-fit instead of the editor's formulas.
    css_fit: bool = False

    @classmethod
    def fit(
        cls, canvas: tuple[int, int], output: tuple[int, int], *, css_fit: bool = False
    ) -> Viewport:
        cw, ch = canvas
        ow, oh = output
        scale = min(ow / cw, oh / ch)
        w = min(ow, max(2, _even(cw * scale)))
        h = min(oh, max(2, _even(ch * scale)))
        rect = Rect(_even((ow - w) / 2), _even((oh - h) / 2), w, h)
        return cls(ow, oh, cw, ch, scale, rect, css_fit)

    @property
    def frame(self) -> Rect:
        return Rect(0, 0, self.width, self.height)

    def place(self, action: model.Action, source: tuple[int, int]) -> Rect:
        """Where ``action`` draws a ``source``-sized picture, in output pixels.

        Uses the editor's fit formulas (TIMELINE.md), or CSS object-fit for contain and
        cover when the viewport says so, with the position resolved on the canvas and
        then scaled like the canvas.
        """
        w, h = source
        cw, ch = self.canvas_width, self.canvas_height
        r = w / h
        if action.fit == model.Fit.FILL:
            lw, lh = float(cw), float(ch)
        elif action.fit in (model.Fit.CONTAIN, model.Fit.COVER) and self.css_fit:
            pick = min if action.fit == model.Fit.CONTAIN else max
            k = pick(cw / w, ch / h)
            lw, lh = w * k, h * k
        elif action.fit == model.Fit.CONTAIN:
            lw, lh = (ch * r, float(ch)) if r > 1 else (float(cw), cw / r)
        elif action.fit == model.Fit.COVER:
            lw, lh = (float(cw), cw / r) if r > 1 else (ch * r, float(ch))
        else:
            lw, lh = float(w), float(h)
        x = action.x.resolve(cw, lw)
        y = action.y.resolve(ch, lh)
        s = self.scale
        return Rect(
            self.canvas.x + _even(x * s),
            self.canvas.y + _even(y * s),
            min(MAX_LAYER_SIDE, max(2, _even(lw * s))),
            min(MAX_LAYER_SIDE, max(2, _even(lh * s))),
        )


class Blend(enum.Enum):
    """CSS mix-blend-mode values the compositor knows."""

    NORMAL = "normal"
    MULTIPLY = "multiply"
    SCREEN = "screen"
    OVERLAY = "overlay"
    DARKEN = "darken"
    LIGHTEN = "lighten"
    COLOR_DODGE = "color-dodge"
    COLOR_BURN = "color-burn"
    HARD_LIGHT = "hard-light"
    SOFT_LIGHT = "soft-light"
    DIFFERENCE = "difference"
    EXCLUSION = "exclusion"
    PLUS_LIGHTER = "plus-lighter"
    HUE = "hue"
    SATURATION = "saturation"
    COLOR = "color"
    LUMINOSITY = "luminosity"


_BLEND_NAMES: dict[str, Blend] = {b.value: b for b in Blend} | {
    "add": Blend.PLUS_LIGHTER,
    "lighter": Blend.PLUS_LIGHTER,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Effect:
    """How one layer is drawn when it is not a plain source-over at full opacity."""

    opacity: float
    blend: Blend

    @classmethod
    def of(cls, action: model.Action) -> Effect | None:
        """The action's opacity and blend mode; None when they change nothing.

        Unknown blend modes draw as normal.
        """
        blend = _BLEND_NAMES.get(action.blend_mode.strip().lower(), Blend.NORMAL)
        opacity = min(1.0, max(0.0, action.opacity))
        if blend is Blend.NORMAL and opacity >= 1.0:
            return None
        return cls(opacity, blend)

    @property
    def invisible(self) -> bool:
        return self.opacity <= 0.0


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Layer:
    """A picture converted to its drawn size: YUV 4:2:0 planes and, if any, alpha."""

    frame: VideoFrame
    y: Plane
    u: Plane
    v: Plane
    # Alpha at luma resolution and averaged to chroma resolution; None when opaque.
    alpha: Plane | None
    alpha_chroma: Plane | None
    # Fully transparent: drawing it changes nothing.
    empty: bool
    # ``frame`` is exactly the drawn picture (not rotated or mirrored afterwards).
    direct: bool
    # Where the planes start in the drawn picture: (0, 0) but for a layer converted
    # only from where it shows past the canvas's left or top edge (see convert).
    origin: tuple[int, int] = (0, 0)
    # The blend's per-pixel terms for the window last drawn, by plane (see ``weights``):
    # a still picture is drawn with the same ones on every frame.
    _weights: dict[int, tuple[object, _Weights]] = dataclasses.field(
        default_factory=dict, repr=False
    )

    @property
    def opaque(self) -> bool:
        return self.alpha is None

    def weights(self, plane: int, key: object, src: Plane, alpha: Plane | np.uint16) -> _Weights:
        """``src * alpha + 128`` and ``255 - alpha`` (16-bit) for a window of plane
        ``plane`` (0 y, 1 u, 2 v) that ``key`` names, computed once while the window stays."""
        cached = self._weights.get(plane)
        if cached is not None and cached[0] == key:
            return cached[1]
        a = np.asarray(alpha).astype(np.uint16)
        ahead: npt.NDArray[Any] = src * a + np.uint16(128)
        behind: npt.NDArray[Any] = np.uint16(255) - a
        weights = (ahead, behind)
        self._weights[plane] = (key, weights)
        return weights


_Weights = tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint16]]


def quarter_turns(frame: VideoFrame) -> int:
    """Counterclockwise quarter turns the frame's display matrix asks for (phone videos)."""
    return round(frame.rotation / 90) % 4


# EXIF orientation (1..8) as (counterclockwise quarter turns, mirrored first).
_ORIENTATIONS: dict[int, tuple[int, bool]] = {
    1: (0, False),
    2: (0, True),
    3: (2, False),
    4: (2, True),
    5: (1, True),
    6: (3, False),
    7: (3, True),
    8: (1, False),
}


def orientation(exif: int) -> tuple[int, bool]:
    """An EXIF orientation as (counterclockwise quarter turns, mirror left-right first);
    values outside 1..8 mean no change."""
    return _ORIENTATIONS.get(exif, (0, False))


def source_colorspace(frame: VideoFrame, *, still: bool = False) -> Colorspace | None:
    """The matrix ``frame`` was encoded with, for swscale; None for RGB frames and for
    tags swscale reads from the frame itself (BT.2020...). ``still``: the frame is a
    still image, whose untagged YUV is BT.601 (JPEG and WebP say so)."""
    if frame.format.is_rgb:
        return None
    tag = frame.colorspace
    if tag == _SPC_BT709:
        return Colorspace.ITU709
    if tag in (_SPC_BT470BG, _SPC_SMPTE170M):
        return Colorspace.ITU601
    if tag == _SPC_UNSPECIFIED:
        # What players assume for untagged video (mpv's rule).
        hd = not still and (frame.width >= 1280 or frame.height > 576)
        return Colorspace.ITU709 if hd else Colorspace.ITU601
    return None


def colour_mapping(frame: VideoFrame) -> dict[str, int] | None:
    """The transfer and primaries to have swscale map ``frame``'s light to (keyword
    arguments of ``reformat``), or None when its light is already BT.709 SDR's.

    HDR (PQ, HLG) is mapped to the BT.709 transfer and primaries; wide-gamut SDR (BT.2020,
    P3) to BT.709 primaries in its own transfer. HDR without primaries is BT.2020 (BT.2100
    knows no other), and wide-gamut SDR without a transfer is taken as BT.709's: the
    frame's tags are completed so.
    """
    trc, primaries = frame.color_trc, frame.color_primaries
    hdr = trc in _TRC_HDR
    if not hdr and primaries not in _PRI_WIDE:
        return None
    if hdr and primaries == icc.PRIMARIES_UNSPECIFIED:
        frame.color_primaries = icc.PRIMARIES_BT2020
    if not hdr and trc == icc.TRANSFER_UNSPECIFIED:
        frame.color_trc = icc.TRANSFER_BT709
    trc, primaries = _target_light(frame)
    return {"dst_color_trc": trc, "dst_color_primaries": primaries}


def _matrix_tag(matrix: Colorspace | None, frame: VideoFrame) -> int:
    """The AVColorSpace a picture is read with: ``matrix`` (see source_colorspace), or
    when that is None the picture's own tag."""
    if matrix == Colorspace.ITU709:
        return _SPC_BT709
    if matrix == Colorspace.ITU601:
        return _SPC_SMPTE170M
    return int(frame.colorspace)


def _target_light(frame: VideoFrame) -> tuple[int, int]:
    """(transfer, primaries) a picture in another light is mapped to: BT.709's, or for
    SDR its own transfer in BT.709 primaries."""
    hdr = frame.color_trc in _TRC_HDR
    return (icc.TRANSFER_BT709 if hdr else frame.color_trc), icc.PRIMARIES_BT709


class Scaler:
    """swscale contexts and 3D LUT mappings kept between conversions, one per kind of
    conversion (input format and size, output size, colour), so that none is set up
    again on every frame. One is shared by every track of a render: a colour mapping
    takes about 1.6 s to set up (a LUT's table, made once per light, about 1.8 s), so
    ten HDR clips from one phone pay it once, not once per track, and a track whose
    actions alternate between two sizes does not pay it at every switch. The LIMIT most
    recently used are kept: a 1080p swscale mapping holds about 40 MB (its tables and
    float pictures), a LUT mapping about 22 MB, and no timeline shows more kinds at
    once. Each conversion runs on ``threads`` threads; the LUT mappings' tables come
    from ``tables`` (by default made once per process, not kept on disk)."""

    LIMIT = 8

    def __init__(self, threads: int = 1, tables: lut.Tables | None = None) -> None:
        # swscale's threads for each conversion (its own default is one per core).
        self.threads = threads
        self.tables = tables or lut.Tables()
        self._contexts: collections.OrderedDict[Hashable, VideoReformatter | lut.Mapper] = (
            collections.OrderedDict()
        )
        # The 3D LUT mappings that could not be set up.
        self._unmappable: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._contexts)

    def kinds(self) -> list[str]:
        """What each kept conversion is, least recently used first: "sws" (a swscale
        context) or "lut" (a 3D LUT mapping, see lut)."""
        return [str(key[0]) for key in self._contexts if isinstance(key, tuple)]

    def context(self, key: Hashable) -> VideoReformatter:
        """The context for conversions described by ``key``."""
        found = self._kept(("sws", key), VideoReformatter)
        assert isinstance(found, VideoReformatter)
        return found

    def mapper(
        self, frame: VideoFrame, matrix: str | None, full_range: bool, alpha: bool
    ) -> lut.Mapper | None:
        """The 3D LUT mapping of pictures like ``frame`` (its format, size and light, read
        with ``matrix`` in ``full_range`` or not, None for RGB) into BT.709 SDR, with its
        alpha if ``alpha`` (one table serves every size of pictures in one light, see
        lut.Tables). None when it cannot be set up (nowhere to write the table, a filter
        refusing the pictures): swscale then maps them itself, as for stills."""
        light = (frame.color_trc, frame.color_primaries, *_target_light(frame))
        size = (frame.format.name, frame.width, frame.height)
        key = ("lut", *size, matrix, full_range, alpha, light)
        if key in self._unmappable:
            return None

        def make() -> lut.Mapper:
            return self.tables.mapper(
                light,
                lambda cube: lut.Mapper(*size, matrix, full_range, alpha, cube, self.threads),
            )

        try:
            found = self._kept(key, make)
        except (OSError, av.FFmpegError) as exc:
            log.warning("lut_mapping_unavailable", size=f"{size[1]}x{size[2]}", error=str(exc))
            self._unmappable.add(key)
            return None
        assert isinstance(found, lut.Mapper)
        return found

    def _kept(
        self, key: Hashable, make: Callable[[], VideoReformatter | lut.Mapper]
    ) -> VideoReformatter | lut.Mapper:
        found = self._contexts.get(key)
        if found is not None:
            self._contexts.move_to_end(key)
            return found
        made = self._contexts[key] = make()
        if len(self._contexts) > self.LIMIT:
            self._contexts.popitem(last=False)
        return made


def convert(
    frame: VideoFrame,
    width: int,
    height: int,
    *,
    alpha: bool,
    turns: int = 0,
    mirror: bool = False,
    still: bool = False,
    scaler: Scaler | None = None,
    visible: tuple[int, int, int, int] | None = None,
) -> Layer:
    """``frame`` scaled to ``width`` x ``height`` in BT.709 yuv420p (yuva420p with
    ``alpha``), after mirroring left-right if asked and ``turns`` counterclockwise
    quarter turns.

    ``still`` says ``frame`` is a still image (see :func:`source_colorspace`);
    ``scaler`` keeps swscale's contexts between calls (see Scaler). The result may share
    memory with ``frame`` when no conversion is needed; it is only ever read.
    ``visible`` (x0, y0, x1, y1): only that window of the layer can show, the rest lying
    past the canvas's edges; the layer may then cover only that much, from its
    ``origin`` (see :func:`_visible_part`).
    """
    if scaler is None:
        scaler = Scaler()
    full_range = frame.color_range == _RANGE_JPEG
    matrix = source_colorspace(frame, still=still)
    mapping = colour_mapping(frame)
    origin = (0, 0)
    if visible is not None and not (turns or mirror):
        # After the matrix is known: an untagged picture's is guessed from its size.
        frame, width, height, origin = _visible_part(frame, width, height, visible)
    scaled = (height, width) if turns % 2 else (width, height)
    source = (frame.format.name, frame.width, frame.height)
    if mapping is not None and frame.width * frame.height > scaled[0] * scaled[1]:
        # swscale maps colour at the input's size, about 25 ns a pixel: a 4K phone
        # video shown at 1080p is scaled down first, in its own format (4x cheaper).
        shrunk = scaler.context(("shrink", *source, scaled, matrix)).reformat(
            frame,
            *scaled,
            src_colorspace=matrix,
            dst_colorspace=matrix,
            threads=scaler.threads,
        )
        # A plain reformat leaves the transfer and primaries untagged.
        shrunk.color_trc, shrunk.color_primaries = frame.color_trc, frame.color_primaries
        frame = shrunk
    if mapping is not None:
        rgb = frame.format.is_rgb
        name = None if rgb else lut.matrix_name(_matrix_tag(matrix, frame))
        mapper = scaler.mapper(frame, name, full_range, alpha) if rgb or name else None
        if mapper is not None:
            # Mapped at its own size (see lut); what follows is a plain scale, if any.
            frame = mapper.map(frame)
            mapping, matrix, full_range = None, OUTPUT_COLORSPACE, False
    light = (frame.color_range, frame.color_trc, frame.color_primaries, matrix)
    key = ("convert", frame.format.name, frame.width, frame.height, scaled, alpha, light)
    converted = scaler.context(key).reformat(
        frame,
        *scaled,
        "yuva420p" if alpha else "yuv420p",
        src_colorspace=matrix,
        dst_colorspace=OUTPUT_COLORSPACE,
        dst_color_range=ColorRange.MPEG if full_range else None,
        # With swscale's fast rounding a matrix or range conversion is off by up to 6
        # levels in RGB; exact rounding costs ~40% more, so a plain scale (the common
        # case of HD video) keeps the fast path.
        interpolation=(_ACCURATE if full_range or matrix != OUTPUT_COLORSPACE or mapping else None),
        threads=scaler.threads,
        **(mapping or {}),
    )
    planes = [_plane(converted, i) for i in range(len(converted.planes))]
    if mirror:
        planes = [np.fliplr(p) for p in planes]
    if turns:
        # Views with reversed strides: the rotation happens in the copy into the output.
        planes = [np.rot90(p, turns) for p in planes]
    y, u, v = planes[:3]
    a = a_chroma = None
    empty = False
    if alpha:
        a = planes[3]
        if int(a.min()) == 255:
            a = None
        elif int(a.max()) == 0:
            empty = True
        else:
            quad = (
                a[0::2, 0::2].astype(np.uint16) + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2
            )
            a_chroma = (quad >> 2).astype(np.uint8)
    direct = not (turns or mirror) and origin == (0, 0)
    return Layer(converted, y, u, v, a, a_chroma, empty, direct, origin)


# 4:2:0 formats whose rows and columns can be cut off, by bytes a sample.
_CUTTABLE = {"yuv420p": 1, "yuvj420p": 1, "yuva420p": 1, "yuv420p10le": 2}
# Scaling is skipped for less than this much of a layer past the canvas.
_WORTH_CUTTING = 0.2


def _visible_part(
    frame: VideoFrame, width: int, height: int, visible: tuple[int, int, int, int]
) -> tuple[VideoFrame, int, int, tuple[int, int]]:
    """The part of ``frame`` that the ``visible`` window (x0, y0, x1, y1) of its
    ``width`` x ``height`` layer comes from, the size to scale that part to, and where
    in the layer the scaled part starts.

    A portrait phone video in a landscape frame, drawn with the editor's ``contain``
    (W x W/r), is three times as tall as the frame: scaling all of it took three times
    as long as the part that shows, and its layer took 10 MB instead of 3. Only the
    source rows and columns the visible part needs are kept, with a margin for the
    scaler's filter, and scaled to a size that swscale steps through exactly as it
    would the whole (see :func:`_same_steps`), so the picture is the same where it
    shows. Past the left or top edge the part must also start where swscale samples
    the whole: it starts at the drawn sample nearest the window (by the filter's reach)
    whose source position comes within MAX_PHASE of a source sample (see
    :func:`_window`). A frame of another format, one barely past the canvas, or one for
    which no such part exists is returned whole.
    """
    sample_bytes = _CUTTABLE.get(frame.format.name)
    fw, fh = frame.width, frame.height
    x0, y0 = max(0, visible[0]), max(0, visible[1])
    x1, y1 = min(width, visible[2]), min(height, visible[3])
    whole = frame, width, height, (0, 0)
    keep = 1 - _WORTH_CUTTING
    if sample_bytes is None or x0 >= x1 or y0 >= y1:
        return whole
    if x1 - x0 >= width * keep and y1 - y0 >= height * keep:
        return whole
    columns = _window(fw, width, x0, x1)
    rows = _window(fh, height, y0, y1)
    if columns is None or rows is None:
        return whole
    (cx, cw, ox, width), (cy, ch, oy, height) = columns, rows
    if (cx, cy, cw, ch) == (0, 0, fw, fh):
        return whole
    part = VideoFrame(cw, ch, frame.format.name)
    for index, (src, dst) in enumerate(zip(frame.planes, part.planes, strict=True)):
        sub = 2 if index in (1, 2) else 1
        count, span = -(-ch // sub), -(-cw // sub) * sample_bytes
        top, left = cy // sub, cx // sub * sample_bytes
        a = np.frombuffer(memoryview(src), np.uint8, count=src.line_size * src.height)
        b = np.frombuffer(memoryview(dst), np.uint8, count=dst.line_size * dst.height)
        b.reshape(dst.height, dst.line_size)[:count, :span] = a.reshape(src.height, src.line_size)[
            top : top + count, left : left + span
        ]
    part.colorspace, part.color_range = frame.colorspace, frame.color_range
    part.color_trc, part.color_primaries = frame.color_trc, frame.color_primaries
    return part, width, height, (ox, oy)


def _reach(ratio: float) -> int:
    """Source samples swscale's filter reaches from a sample's position, with room."""
    # 2 each way, more when shrinking.
    return 2 * math.ceil(2 * max(1.0, ratio)) + 2


def _window(source: int, drawn: int, first: int, last: int) -> tuple[int, int, int, int] | None:
    """(start, kept, origin, scaled): source samples start .. start + kept, scaled to
    ``scaled`` samples, stand for drawn samples origin .. origin + scaled of ``source``
    scaled to ``drawn`` (within MAX_DRIFT of where the whole samples, by ``last``), and
    cover the shown first .. last. None when no part does.

    swscale samples output sample i of the whole at source position (i + 1/2) * step -
    1/2 (step in 1/65536 of a sample, see _step). A part starting at source sample c
    and drawn sample o samples the same positions only if o * step is c samples.
    Going back from ``first`` (less the filter's reach), the first even o whose
    position comes within MAX_PHASE / 4 of an even source sample is taken, else the
    closest of _PHASE_TRIES if within MAX_PHASE, for luma and the halved chroma alike.
    Those phases rarely agree exactly, so a picture cut at its left or top differs from
    the whole's by rounding: a level at most, on a few per cent of the pixels of
    detailed test pictures.
    """
    luma, chroma = _step(source, drawn), _step(-(-source // 2), -(-drawn // 2))
    ratio = source / drawn
    top = first - math.ceil(_reach(ratio) / ratio) - 2
    top -= top % 2
    best: tuple[float, int, int] | None = None
    for o in range(top, max(0, top - 2 * _PHASE_TRIES), -2):
        c = 2 * round(o * luma / 131072)
        off = max(abs(c * 65536 - o * luma), abs(c // 2 * 65536 - o // 2 * chroma)) / 65536
        if best is None or off < best[0]:
            best = (off, o, c)
        if off <= MAX_PHASE / 4:
            break
    if best is not None and best[0] <= MAX_PHASE and best[2] > 0:
        error, origin, start = best
        rest = _same_steps(
            source - start,
            drawn - origin,
            last - origin,
            whole=(luma, chroma),
            budget=MAX_DRIFT - error,
        )
        if rest is not None:
            return start, rest[0], origin, rest[1]
    rest = _same_steps(source, drawn, last)
    return None if rest is None else (0, rest[0], 0, rest[1])


def _step(source: int, drawn: int) -> int:
    """swscale's step through the source per output sample, in 1/65536 of a sample."""
    return ((source << 16) + (drawn >> 1)) // drawn


def _same_steps(
    source: int,
    drawn: int,
    shown: int,
    *,
    whole: tuple[int, int] | None = None,
    budget: float | None = None,
) -> tuple[int, int] | None:
    """(source samples kept, size to scale them to) for the first ``shown`` of
    ``drawn`` samples scaled from ``source``, or (source, drawn) when nothing worth
    cutting is left.

    swscale steps through the source by a fixed-point step, source / drawn in 1/65536
    of a sample, for luma and for the halved chroma. A cut scaled to a smaller size has
    steps of its own; the cut whose steps are nearest the whole's (the same, when the
    sizes allow) is taken, unless by the last shown sample they would sample more than
    ``budget`` (MAX_DRIFT) of a source sample away from where the whole is sampled: then
    None. ``whole``: the (luma, chroma) steps to match, when ``source`` and ``drawn``
    are themselves what is left of a larger picture past a cut (see _window); then
    (source, drawn) must match them too.
    """
    luma, chroma = whole or (_step(source, drawn), _step(-(-source // 2), -(-drawn // 2)))
    budget = MAX_DRIFT if budget is None else budget
    ratio = source / drawn

    def drift(cut: int, out: int) -> float:
        luma_off = abs(_step(cut, out) - luma) * shown
        chroma_off = abs(_step(-(-cut // 2), -(-out // 2)) - chroma) * shown / 2
        return max(luma_off, chroma_off) / 65536

    least = math.ceil(shown * ratio) + _reach(ratio)
    least += least % 2
    best: tuple[float, int, int] | None = None
    # Even cuts scaled to even sizes, as every layer is (for the halved chroma, and the
    # alpha averaged over 2x2 samples); among the first 64 cuts, the one whose steps
    # come nearest the whole's.
    for cut in range(least, min(source, least + 128), 2):
        nearest = 2 * round(cut / ratio / 2)
        for out in (nearest - 2, nearest, nearest + 2):
            if out <= shown or out >= drawn:
                continue
            off = drift(cut, out)
            if best is None or off < best[0]:
                best = (off, cut, out)
        if best is not None and best[0] == 0:
            break
    if best is not None and best[0] <= budget:
        return best[1], best[2]
    if whole is None:
        return (source, drawn) if best is None else None
    # What is left past a cut stands on its own only if its steps are the whole's too.
    return (source, drawn) if drift(source, drawn) <= budget else None


# How far (in source samples, by the last sample shown) a cut may sample from where the
# whole would. Most sizes (a phone's 1080x1920 or 3024x4032 in a 1080p frame) have cuts
# with the very same steps; of a thousand random ones, 2 % had none this close.
MAX_DRIFT = 0.05
# How far (in source samples) a part cut at the left or top may start from where the
# whole samples: within it, the picture differs from the whole's by a level at most.
MAX_PHASE = 0.01
# Starts tried, going back from the first shown sample.
_PHASE_TRIES = 512


def _plane(frame: VideoFrame, index: int) -> Plane:
    plane = frame.planes[index]
    rows = np.frombuffer(memoryview(plane), np.uint8, count=plane.line_size * plane.height)
    view: Plane = rows.reshape(plane.height, plane.line_size)[:, : plane.width]
    return view


Placed = tuple[Layer, Rect, Effect | None]


def hides_below(placed: Placed, viewport: Viewport) -> bool:
    """Whether drawing ``placed`` leaves nothing of the layers under it visible."""
    layer, rect, effect = placed
    return effect is None and layer.opaque and rect.covers(viewport.canvas)


class Canvas:
    """Builds output frames: the background, then layers bottom to top."""

    def __init__(self, viewport: Viewport, background: tuple[int, int, int]) -> None:
        self.viewport = viewport
        w, h = viewport.width, viewport.height
        self._template = np.empty((h * 3 // 2, w), np.uint8)
        y, u, v = self._planes(self._template)
        bg = convert(_solid(background), 2, 2, alpha=False)
        y[...] = bg.y[0, 0]
        u[...] = bg.u[0, 0]
        v[...] = bg.v[0, 0]

    def _planes(self, buf: npt.NDArray[np.uint8]) -> tuple[Plane, Plane, Plane]:
        w, h = self.viewport.width, self.viewport.height
        flat = buf.reshape(-1)
        luma = w * h
        y = flat[:luma].reshape(h, w)
        u = flat[luma : luma * 5 // 4].reshape(h // 2, w // 2)
        v = flat[luma * 5 // 4 :].reshape(h // 2, w // 2)
        return y, u, v

    def compose(self, layers: Sequence[Placed]) -> VideoFrame:
        """A new BT.709 output frame with ``layers`` (bottom first) drawn over the
        background, each with its effect if it has one."""
        # A fresh buffer per frame: the encoder may still hold the previous one. When the
        # canvas is the whole frame (no padding) and the bottom layer covers it opaquely,
        # the background would be overwritten whole: it is not copied in first.
        viewport = self.viewport
        if layers and viewport.canvas == viewport.frame and hides_below(layers[0], viewport):
            buf = np.empty_like(self._template)
        else:
            buf = self._template.copy()
        y, u, v = self._planes(buf)
        clip = self.viewport.canvas
        for layer, rect, effect in layers:
            if layer.empty or (effect is not None and effect.invisible):
                continue
            x0, y0 = max(rect.x, clip.x), max(rect.y, clip.y)
            x1, y1 = min(rect.right, clip.right), min(rect.bottom, clip.bottom)
            if x0 >= x1 or y0 >= y1:
                continue
            # Source window inside the layer's planes, luma and (halved) chroma.
            sx0, sy0 = x0 - rect.x - layer.origin[0], y0 - rect.y - layer.origin[1]
            sx1, sy1 = sx0 + (x1 - x0), sy0 + (y1 - y0)
            full = (slice(y0, y1), slice(x0, x1))
            half = (slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2))
            src_full = (slice(sy0, sy1), slice(sx0, sx1))
            src_half = (slice(sy0 // 2, sy1 // 2), slice(sx0 // 2, sx1 // 2))
            alpha = layer.alpha[src_full] if layer.alpha is not None else None
            if effect is not None and effect.blend is not Blend.NORMAL:
                _blend_rgb(
                    (y[full], u[half], v[half]),
                    (layer.y[src_full], layer.u[src_half], layer.v[src_half]),
                    alpha,
                    effect,
                )
                continue
            opacity = 255 if effect is None else round(effect.opacity * 255)
            if alpha is None or layer.alpha_chroma is None:
                if opacity == 255:
                    y[full] = layer.y[src_full]
                    u[half] = layer.u[src_half]
                    v[half] = layer.v[src_half]
                    continue
                a: Plane | np.uint16 = np.uint16(opacity)
                ac: Plane | np.uint16 = a
            else:
                a = alpha
                ac = layer.alpha_chroma[src_half]
                if opacity < 255:
                    a, ac = _scaled(a, opacity), _scaled(ac, opacity)
            key = (sx0, sy0, sx1, sy1, opacity)
            _blend(y[full], layer.weights(0, key, layer.y[src_full], a))
            _blend(u[half], layer.weights(1, key, layer.u[src_half], ac))
            _blend(v[half], layer.weights(2, key, layer.v[src_half], ac))
        frame = VideoFrame.from_numpy_buffer(buf, format="yuv420p", width=self.viewport.width)
        frame.colorspace = _SPC_BT709
        return frame


def _blend(dst: Plane, weights: _Weights) -> None:
    """``dst`` = (src * a + dst * (255 - a)) / 255, rounded, with the weights of src
    and a."""
    ahead, behind = weights
    mixed: npt.NDArray[Any] = dst * behind
    mixed += ahead
    # Exact rounded division by 255 in 16 bits: (x + 128 + ((x + 128) >> 8)) >> 8.
    mixed += mixed >> 8
    mixed >>= 8
    dst[...] = mixed


def _scaled(alpha: Plane, opacity: int) -> Plane:
    mixed: npt.NDArray[Any] = alpha.astype(np.uint16) * np.uint16(opacity) + 128
    mixed += mixed >> 8
    mixed >>= 8
    return mixed.astype(np.uint8)


def _blend_rgb(
    dst: tuple[Plane, Plane, Plane],
    src: tuple[Plane, Plane, Plane],
    alpha: Plane | None,
    effect: Effect,
) -> None:
    """Draw ``src`` over ``dst`` (same-sized windows) with a CSS blend mode, in RGB."""
    cb = _to_rgb(*dst)
    cs = _to_rgb(*src)
    if alpha is None:
        a: Floats | np.float32 = np.float32(effect.opacity)
    else:
        a = alpha.astype(np.float32) * np.float32(effect.opacity / 255.0)
    if effect.blend is Blend.PLUS_LIGHTER:
        # A Porter-Duff operator rather than a blend function: source and backdrop add.
        out = np.minimum(cb + cs * a, np.float32(1.0))
    else:
        mixed = _BLENDS[effect.blend](cb, cs)
        out = cb + (mixed - cb) * a
    _from_rgb(out, *dst)


def _to_rgb(y: Plane, u: Plane, v: Plane) -> Floats:
    """Limited-range BT.709 YUV 4:2:0 as (3, h, w) RGB in 0..1."""
    luma = (y.astype(np.float32) - 16.0) * np.float32(1 / 219)
    pb = (_upsample(u) - 128.0) * np.float32(1 / 224)
    pr = (_upsample(v) - 128.0) * np.float32(1 / 224)
    r = luma + np.float32(2 * (1 - _KR)) * pr
    b = luma + np.float32(2 * (1 - _KB)) * pb
    g = (luma - np.float32(_KR) * r - np.float32(_KB) * b) * np.float32(1 / _KG)
    rgb = np.stack((r, g, b))
    np.clip(rgb, 0.0, 1.0, out=rgb)
    return rgb


def _from_rgb(rgb: Floats, y: Plane, u: Plane, v: Plane) -> None:
    r, g, b = rgb
    luma = np.float32(_KR) * r + np.float32(_KG) * g + np.float32(_KB) * b
    y[...] = np.clip(luma * 219.0 + 16.5, 0, 255).astype(np.uint8)
    # Chroma from the mean colour of each 2x2 block (the maths is linear, so this is the
    # mean of the four pixels' chroma).
    rq, gq, bq = (_downsample(c) for c in (r, g, b))
    lq = np.float32(_KR) * rq + np.float32(_KG) * gq + np.float32(_KB) * bq
    u[...] = np.clip((bq - lq) * np.float32(224 / (2 * (1 - _KB))) + 128.5, 0, 255).astype(np.uint8)
    v[...] = np.clip((rq - lq) * np.float32(224 / (2 * (1 - _KR))) + 128.5, 0, 255).astype(np.uint8)


def _upsample(plane: Plane) -> Floats:
    wide = np.repeat(np.repeat(plane, 2, axis=0), 2, axis=1)
    return wide.astype(np.float32)


def _downsample(plane: Floats) -> Floats:
    quad = plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2]
    return quad * np.float32(0.25)


# Separable blend functions B(backdrop, source) on 0..1 RGB, from the CSS Compositing
# and Blending spec.


def _multiply(cb: Floats, cs: Floats) -> Floats:
    return cb * cs


def _screen(cb: Floats, cs: Floats) -> Floats:
    return cb + cs - cb * cs


def _hard_light(cb: Floats, cs: Floats) -> Floats:
    return np.where(cs <= 0.5, cb * (2 * cs), _screen(cb, 2 * cs - 1))


def _overlay(cb: Floats, cs: Floats) -> Floats:
    return _hard_light(cs, cb)


def _darken(cb: Floats, cs: Floats) -> Floats:
    return np.minimum(cb, cs)


def _lighten(cb: Floats, cs: Floats) -> Floats:
    return np.maximum(cb, cs)


def _color_dodge(cb: Floats, cs: Floats) -> Floats:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.minimum(1.0, cb / (1.0 - cs))
    return np.where(cb <= 0.0, 0.0, np.where(cs >= 1.0, 1.0, out)).astype(np.float32)


def _color_burn(cb: Floats, cs: Floats) -> Floats:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 1.0 - np.minimum(1.0, (1.0 - cb) / cs)
    return np.where(cb >= 1.0, 1.0, np.where(cs <= 0.0, 0.0, out)).astype(np.float32)


def _soft_light(cb: Floats, cs: Floats) -> Floats:
    d = np.where(cb <= 0.25, ((16 * cb - 12) * cb + 4) * cb, np.sqrt(cb))
    darker = cb - (1 - 2 * cs) * cb * (1 - cb)
    lighter = cb + (2 * cs - 1) * (d - cb)
    out: Floats = np.where(cs <= 0.5, darker, lighter)
    return out


def _difference(cb: Floats, cs: Floats) -> Floats:
    out: Floats = np.abs(cb - cs)
    return out


def _exclusion(cb: Floats, cs: Floats) -> Floats:
    return cb + cs - 2 * cb * cs


# Non-separable blend functions (same spec, section 10.3): they trade hue, saturation
# and luminosity between source and backdrop, with the spec's own luminosity weights.


def _lum(c: Floats) -> Floats:
    out: Floats = np.float32(0.3) * c[0] + np.float32(0.59) * c[1] + np.float32(0.11) * c[2]
    return out


def _clip_color(c: Floats) -> Floats:
    lum = _lum(c)
    low, high = c.min(axis=0), c.max(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = lum + (c - lum) * lum / (lum - low)
        down = lum + (c - lum) * (1 - lum) / (high - lum)
    c = np.where(low < 0.0, up, c)
    c = np.where(high > 1.0, down, c)
    out: Floats = np.nan_to_num(c).astype(np.float32)
    return out


def _set_lum(c: Floats, lum: Floats) -> Floats:
    return _clip_color(c + (lum - _lum(c)))


def _sat(c: Floats) -> Floats:
    out: Floats = c.max(axis=0) - c.min(axis=0)
    return out


def _set_sat(c: Floats, sat: Floats) -> Floats:
    # The largest component becomes sat, the smallest 0, the middle one in proportion;
    # a grey colour stays black.
    low = c.min(axis=0)
    span = c.max(axis=0) - low
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(span > 0.0, (c - low) * (sat / span), 0.0)
    result: Floats = out.astype(np.float32)
    return result


def _hue(cb: Floats, cs: Floats) -> Floats:
    return _set_lum(_set_sat(cs, _sat(cb)), _lum(cb))


def _saturation(cb: Floats, cs: Floats) -> Floats:
    return _set_lum(_set_sat(cb, _sat(cs)), _lum(cb))


def _color(cb: Floats, cs: Floats) -> Floats:
    return _set_lum(cs, _lum(cb))


def _luminosity(cb: Floats, cs: Floats) -> Floats:
    return _set_lum(cb, _lum(cs))


_BLENDS: dict[Blend, Callable[[Floats, Floats], Floats]] = {
    Blend.MULTIPLY: _multiply,
    Blend.SCREEN: _screen,
    Blend.OVERLAY: _overlay,
    Blend.DARKEN: _darken,
    Blend.LIGHTEN: _lighten,
    Blend.COLOR_DODGE: _color_dodge,
    Blend.COLOR_BURN: _color_burn,
    Blend.HARD_LIGHT: _hard_light,
    Blend.SOFT_LIGHT: _soft_light,
    Blend.DIFFERENCE: _difference,
    Blend.EXCLUSION: _exclusion,
    Blend.HUE: _hue,
    Blend.SATURATION: _saturation,
    Blend.COLOR: _color,
    Blend.LUMINOSITY: _luminosity,
}


def _solid(rgb: tuple[int, int, int]) -> VideoFrame:
    pixels = np.empty((2, 2, 3), np.uint8)
    pixels[...] = rgb
    return VideoFrame.from_ndarray(pixels, format="rgb24")
