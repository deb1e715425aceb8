"""Wire contracts shared by the services (msgspec Structs)."""

from __future__ import annotations

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


class QueueMessage(msgspec.Struct, frozen=True, kw_only=True):
    """What travels on the queue: a pointer, never the project."""

    job_id: uuid.UUID
    attempt: int
    traceparent: str | None = None


class JobEventHint(msgspec.Struct, frozen=True):
    """The NOTIFY payload: a wake-up hint. Consumers re-read the outbox."""

    job_id: uuid.UUID
    seq: int
