"""The normalised project model: what every service works with after parsing.

The editor writes two generations of JSON with many runtime fields; ``parse`` turns
either into these Structs (see TIMELINE.md), and everything downstream reads only these.
Times are seconds, sizes pixels. Field names here are ours (snake_case); the parser maps
the editor's names onto them.
"""

from __future__ import annotations

import enum
import math
from typing import Literal

import msgspec


class Controller(enum.StrEnum):
    VIDEO = "video"
    AUDIO = "audio"
    IMAGE = "image"


class Fit(enum.StrEnum):
    NONE = "none"
    FILL = "fill"
    CONTAIN = "contain"
    COVER = "cover"


class Coord(msgspec.Struct, frozen=True):
    """A position on one axis: ``px`` is absolute, ``%`` is (canvas - layer) * value / 100."""

    value: float = 0.0
    unit: Literal["px", "%"] = "px"

    def resolve(self, canvas: float, layer: float) -> float:
        return self.value if self.unit == "px" else (canvas - layer) * self.value / 100.0


class VolumeStep(msgspec.Struct, frozen=True, array_like=True):
    """Gain (clamped to 0..1) over the clock range ``start <= x < end`` (open when None)."""

    gain: float
    start: float | None = None
    end: float | None = None

    def covers(self, x: float) -> bool:
        return (self.start is None or x >= self.start) and (self.end is None or x < self.end)


class Action(msgspec.Struct, frozen=True, kw_only=True):
    """One clip on a track, active for ``start <= t < end``."""

    id: str
    name: str = ""
    start: float
    end: float
    trim_start: float = 0.0
    playback_rate: float = 1.0
    loop: bool = False
    freeze: float | None = None
    disabled: bool = False
    volume: tuple[VolumeStep, ...] = ()
    fit: Fit = Fit.NONE
    x: Coord = Coord()
    y: Coord = Coord()
    blend_mode: str = "normal"
    opacity: float = 1.0
    # The editor's own idea of the media length; informative only (the probe decides).
    duration_hint: float | None = None

    @property
    def rate(self) -> float:
        return self.playback_rate if self.playback_rate > 0 else 1.0

    def active(self, t: float) -> bool:
        return not self.disabled and self.start <= t < self.end

    def source_time(self, t: float) -> float:
        """Source time for timeline time ``t``, before loop/hold handling."""
        return self.trim_start + (t - self.start) * self.rate

    def gain_at(self, x: float) -> float:
        """Volume at clock ``x``: the first covering step, else 1.0, clamped to 0..1."""
        for step in self.volume:
            if step.covers(x):
                return min(1.0, max(0.0, step.gain))
        return 1.0


class Track(msgspec.Struct, frozen=True, kw_only=True):
    """One layer. ``tracks[0]`` is the bottom layer."""

    id: str
    name: str = ""
    controller: Controller
    url: str
    hidden: bool = False
    muted: bool = False
    actions: tuple[Action, ...] = ()
    # Name of the embedded container file this track plays, when the project came in a .sue
    # container whose filesMeta matched the url (see TIMELINE.md).
    embedded: str | None = None

    @property
    def has_picture(self) -> bool:
        return not self.hidden and self.controller in (Controller.VIDEO, Controller.IMAGE)

    @property
    def has_sound(self) -> bool:
        return not self.hidden and not self.muted and self.controller != Controller.IMAGE

    @property
    def renders(self) -> bool:
        """Whether any picture or sound of this track can reach the output (so its media
        is needed at all)."""
        if not (self.has_picture or self.has_sound):
            return False
        return any(not a.disabled and a.end > a.start for a in self.actions)


class EmbeddedFile(msgspec.Struct, frozen=True, kw_only=True):
    """A media file carried inside a ``.sue`` container, at ``offset`` for ``size`` bytes."""

    name: str
    size: int
    type: str = ""
    offset: int = 0


class Project(msgspec.Struct, frozen=True, kw_only=True):
    id: str = ""
    name: str = ""
    width: int = 1920
    height: int = 1080
    background_color: str = "transparent"
    tracks: tuple[Track, ...] = ()
    files: tuple[EmbeddedFile, ...] = ()

    @property
    def duration(self) -> float:
        """Max ``end`` over every action of every track (hidden and disabled included)."""
        return max(0.0, max((a.end for tr in self.tracks for a in tr.actions), default=0.0))

    def frame_count(self, fps: int) -> int:
        # Round before ceil so 10.0 * 30 = 300.00000000000006 is 300 frames, not 301.
        return math.ceil(round(self.duration * fps, 6))

    def urls(self) -> list[str]:
        """Distinct track URLs in track order."""
        return list(dict.fromkeys(t.url for t in self.tracks))
