"""What a render returns, shared by the compose path and the stream-copy path."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

# on_progress(frames_done, frames_total); an exception it raises aborts the render.
ProgressCallback = Callable[[int, int], None]


class RenderResult(msgspec.Struct, frozen=True):
    """What was written: duration in seconds, frame count, frame size and file size."""

    duration: float
    frames: int
    width: int
    height: int
    size_bytes: int
    # Whether video was stream-copied (fast path) rather than decoded and re-encoded.
    copied: bool = False
    # Whether the sound was stream-copied too (re-encoded only around joins).
    sound_copied: bool = False
