"""Placing layers on the output frame and compositing them in YUV 4:2:0.

Every layer is converted once, straight from its decoded frame to the size it is drawn
at (one swscale pass), and then copied or alpha-blended into the output planes with
numpy. Sizes and positions are rounded to even pixels so each 2x2 block of luma maps onto
exactly one chroma sample and no chroma resampling is ever needed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
from av.video.frame import VideoFrame

from rendermill.common.project import model

Plane = npt.NDArray[np.uint8]

# A layer is never converted larger than this; beyond it only a sliver would be visible
# anyway and the memory would be wasted.
MAX_LAYER_SIDE = 16384


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

    @classmethod
    def fit(cls, canvas: tuple[int, int], output: tuple[int, int]) -> Viewport:
        cw, ch = canvas
        ow, oh = output
        scale = min(ow / cw, oh / ch)
        w = min(ow, max(2, _even(cw * scale)))
        h = min(oh, max(2, _even(ch * scale)))
        rect = Rect(_even((ow - w) / 2), _even((oh - h) / 2), w, h)
        return cls(ow, oh, cw, ch, scale, rect)

    @property
    def frame(self) -> Rect:
        return Rect(0, 0, self.width, self.height)

    def place(self, action: model.Action, source: tuple[int, int]) -> Rect:
        """Where ``action`` draws a ``source``-sized picture, in output pixels.

        Uses the editor's fit formulas (TIMELINE.md), with the position resolved on the
        canvas and then scaled like the canvas.
        """
        w, h = source
        cw, ch = self.canvas_width, self.canvas_height
        r = w / h
        if action.fit == model.Fit.FILL:
            lw, lh = float(cw), float(ch)
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
    # ``frame`` is exactly the drawn picture (not rotated afterwards).
    direct: bool

    @property
    def opaque(self) -> bool:
        return self.alpha is None


def quarter_turns(frame: VideoFrame) -> int:
    """Counterclockwise quarter turns the frame's display matrix asks for (phone videos)."""
    return round(frame.rotation / 90) % 4


def convert(frame: VideoFrame, width: int, height: int, *, alpha: bool, turns: int = 0) -> Layer:
    """``frame`` scaled to ``width`` x ``height`` in yuv420p (yuva420p with ``alpha``),
    after ``turns`` counterclockwise quarter turns.

    The result may share memory with ``frame`` when no conversion is needed; it is only
    ever read.
    """
    scaled = (height, width) if turns % 2 else (width, height)
    converted = frame.reformat(*scaled, "yuva420p" if alpha else "yuv420p")
    planes = [_plane(converted, i) for i in range(len(converted.planes))]
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
    return Layer(converted, y, u, v, a, a_chroma, empty, direct=not turns)


def _plane(frame: VideoFrame, index: int) -> Plane:
    plane = frame.planes[index]
    rows = np.frombuffer(memoryview(plane), np.uint8, count=plane.line_size * plane.height)
    view: Plane = rows.reshape(plane.height, plane.line_size)[:, : plane.width]
    return view


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

    def compose(self, layers: list[tuple[Layer, Rect]]) -> VideoFrame:
        """A new output frame with ``layers`` (bottom first) drawn over the background."""
        # A fresh buffer per frame: the encoder may still hold the previous one.
        buf = self._template.copy()
        y, u, v = self._planes(buf)
        clip = self.viewport.canvas
        for layer, rect in layers:
            if layer.empty:
                continue
            x0, y0 = max(rect.x, clip.x), max(rect.y, clip.y)
            x1, y1 = min(rect.right, clip.right), min(rect.bottom, clip.bottom)
            if x0 >= x1 or y0 >= y1:
                continue
            # Source window inside the layer, luma and (halved) chroma.
            sx0, sy0 = x0 - rect.x, y0 - rect.y
            sx1, sy1 = sx0 + (x1 - x0), sy0 + (y1 - y0)
            full = (slice(y0, y1), slice(x0, x1))
            half = (slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2))
            src_full = (slice(sy0, sy1), slice(sx0, sx1))
            src_half = (slice(sy0 // 2, sy1 // 2), slice(sx0 // 2, sx1 // 2))
            if layer.alpha is None or layer.alpha_chroma is None:
                y[full] = layer.y[src_full]
                u[half] = layer.u[src_half]
                v[half] = layer.v[src_half]
            else:
                _blend(y[full], layer.y[src_full], layer.alpha[src_full])
                ac = layer.alpha_chroma[src_half]
                _blend(u[half], layer.u[src_half], ac)
                _blend(v[half], layer.v[src_half], ac)
        return VideoFrame.from_numpy_buffer(buf, format="yuv420p", width=self.viewport.width)


def _blend(dst: Plane, src: Plane, alpha: Plane) -> None:
    a = alpha.astype(np.uint16)
    mixed: npt.NDArray[Any] = src * a + dst * (255 - a)
    # Exact rounded division by 255 in 16 bits: (x + 128 + ((x + 128) >> 8)) >> 8.
    mixed += 128
    mixed += mixed >> 8
    mixed >>= 8
    dst[...] = mixed


def _solid(rgb: tuple[int, int, int]) -> VideoFrame:
    pixels = np.empty((2, 2, 3), np.uint8)
    pixels[...] = rgb
    return VideoFrame.from_ndarray(pixels, format="rgb24")
