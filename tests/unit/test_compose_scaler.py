"""swscale contexts are kept per kind of conversion and shared, within a bound."""

from __future__ import annotations

import numpy as np
from av.video.frame import VideoFrame

from rendermill.renderer.engine import compose


def test_one_context_per_kind_of_conversion_most_recent_kept() -> None:
    scaler = compose.Scaler()
    first = scaler.context(("convert", 1))
    assert scaler.context(("convert", 1)) is first
    assert scaler.context(("convert", 2)) is not first
    for k in range(2, compose.Scaler.LIMIT + 2):
        scaler.context(("convert", k))
    # ("convert", 1) was used least recently of LIMIT + 1 kinds: it was let go.
    assert scaler.context(("convert", 1)) is not first


def test_tracks_converting_alike_share_a_context() -> None:
    # Two tracks of HLG pictures of one size: one colour mapping is set up, not two.
    scaler = compose.Scaler()
    frames = []
    for _ in range(2):
        frame = VideoFrame(64, 36, "yuv420p10le")
        for plane in frame.planes:
            np.frombuffer(memoryview(plane), np.uint8)[:] = 100
        frame.colorspace, frame.color_primaries, frame.color_trc, frame.color_range = 9, 9, 18, 1
        frames.append(frame)
    for frame in frames:
        compose.convert(frame, 32, 18, alpha=False, scaler=scaler)
    assert len(scaler) == 2  # the shrink and the mapping, once each
