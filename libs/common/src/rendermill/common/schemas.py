"""Wire contracts shared by the services (msgspec Structs)."""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from typing import Annotated, Literal

import msgspec

from rendermill.common import errors


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class Stage(enum.StrEnum):
    QUEUED = "queued"
    FETCHING = "fetching"
    RENDERING = "rendering"
    UPLOADING = "uploading"
    DONE = "done"


OutputFormat = Literal["mp4", "webm", "mov", "gif"]
Quality = Literal["draft", "standard", "high"]
VolumeClock = Literal["editor", "timeline", "source"]
FitMode = Literal["editor", "css"]
CopyMode = Literal["auto", "never"]

RESOLUTION_PRESETS: dict[str, tuple[int, int]] = {
    "2160p": (3840, 2160),
    "1080p": (1920, 1080),
    "720p": (1280, 720),
    "480p": (854, 480),
}
MAX_DIMENSION = 4096
_EXPLICIT = re.compile(r"^(\d{2,5})x(\d{2,5})$")


class OutputSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the caller wants out: container/codecs, frame size and rate."""

    format: OutputFormat = "mp4"
    resolution: str = "1080p"
    fps: Annotated[int, msgspec.Meta(ge=1, le=60)] = 30
    # Encoder effort/size trade-off: draft (fast, larger), standard, high (slow, best).
    quality: Quality = "standard"
    # Also write a JPEG poster of the frame at this time (seconds), beside the video.
    poster: Annotated[float, msgspec.Meta(ge=0)] | None = None
    # Which clock volume steps follow: "editor" (timeline time on video tracks, source
    # time on audio tracks, as the editor does today), "timeline" or "source".
    volume_clock: VolumeClock = "editor"
    # "editor": the editor's contain/cover formulas (TIMELINE.md); "css": CSS object-fit.
    fit_mode: FitMode = "editor"
    # Honour each action's blendMode and style.opacity (the editor preview ignores them).
    effects: bool = False
    # "auto": stream-copy cut-only timelines whose clips share codec parameters;
    # "never": always decode and re-encode.
    copy: CopyMode = "auto"

    def size(self) -> tuple[int, int]:
        """The output frame size in pixels; raises InvalidInput for an unknown resolution."""
        return parse_resolution(self.resolution)


def parse_resolution(value: str) -> tuple[int, int]:
    if value in RESOLUTION_PRESETS:
        return RESOLUTION_PRESETS[value]
    m = _EXPLICIT.match(value)
    if m:
        w, h = int(m.group(1)), int(m.group(2))
        if w % 2 == 0 and h % 2 == 0 and 16 <= w <= MAX_DIMENSION and 16 <= h <= MAX_DIMENSION:
            return w, h
    presets = ", ".join(RESOLUTION_PRESETS)
    raise errors.InvalidInput(
        f"output.resolution {value!r} is not supported: use one of {presets} or WIDTHxHEIGHT "
        f"with even numbers between 16 and {MAX_DIMENSION}",
        detail={"path": "output.resolution"},
    )


class Tier(enum.StrEnum):
    """A job's priority tier. Higher tiers are launched first; time spent waiting counts
    too, so a lower tier is delayed by later work above it, never starved."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """1, 0 or -1: the tier as stored (``jobs.priority``, ``queue_messages.priority``)."""
        return _RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> Tier:
        """The tier of a stored rank; an integer priority from before tiers counts by its
        sign (above 0 high, 0 normal, below 0 low)."""
        return cls.HIGH if rank > 0 else cls.LOW if rank < 0 else cls.NORMAL


_RANK = {Tier.HIGH: 1, Tier.NORMAL: 0, Tier.LOW: -1}
_BY_NAME = {t.value: t for t in Tier}
# Integer priorities (the API's form before tiers) are accepted in -LIMIT..LIMIT.
PRIORITY_LIMIT = 100
PRIORITY_HELP = (
    'use "high", "normal" or "low", or an integer from '
    f"-{PRIORITY_LIMIT} to {PRIORITY_LIMIT} (above 0: high, 0: normal, below 0: low)"
)


def parse_priority(value: object, *, path: str = "priority") -> Tier:
    """The tier a request's ``priority`` names: a tier name, or an integer in
    -PRIORITY_LIMIT..PRIORITY_LIMIT counted by its sign. Raises InvalidInput naming
    ``path`` and the allowed values otherwise."""
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    if isinstance(value, int) and not isinstance(value, bool):
        if -PRIORITY_LIMIT <= value <= PRIORITY_LIMIT:
            return Tier.from_rank(value)
        problem = "is out of range"
    else:
        problem = "is not a priority tier"
    raise errors.InvalidInput(
        f"{path} {msgspec.json.encode(value).decode()} {problem}: {PRIORITY_HELP}",
        detail={"path": path, "allowed": [t.value for t in Tier]},
    )


class QueueMessage(msgspec.Struct, frozen=True, kw_only=True):
    """What travels on the queue: a pointer, never the project."""

    job_id: uuid.UUID
    attempt: int
    traceparent: str | None = None
    # The job's tier (messages sent before tiers existed carry none: normal).
    tier: Tier = Tier.NORMAL
    # When this attempt joined the queue: set by the queue when the message is first sent
    # (None until then) and kept when the message is sent again (a tenant-cap deferral),
    # so that it keeps its place in line.
    queued_at: dt.datetime | None = None


class JobEventHint(msgspec.Struct, frozen=True):
    """The NOTIFY payload: a wake-up hint. Consumers re-read the outbox."""

    job_id: uuid.UUID
    seq: int
