"""swscale contexts are kept per kind of conversion and shared, within a bound."""

from __future__ import annotations

import numpy as np
import pytest
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
    # The shrink, the mapping and the last conversion (here none: the mapping gives
    # BT.709 yuv420p at the size drawn), once each.
    assert len(scaler) == 3


def _picture(width: int, height: int, fmt: str) -> VideoFrame:
    """Detail down to a few pixels across, as in a photo: a shift in where the scaler
    samples of a tenth of a pixel would show as several levels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., 0] = (np.sin(x / 2.0) * np.cos(y / 3.0) * 100 + 128).astype(np.uint8)
    rgba[..., 1] = ((np.sin(x / 5.0) + np.cos(y / 4.0)) * 60 + 128).astype(np.uint8)
    rgba[..., 2] = (np.cos((x + y) / 3.0) * 100 + 128).astype(np.uint8)
    rgba[..., 3] = (np.sin(y / 6.0) * 120 + 128).astype(np.uint8)
    return VideoFrame.from_ndarray(rgba, format="rgba").reformat(format=fmt)


@pytest.mark.parametrize("fmt", ["yuv420p", "yuvj420p", "yuva420p", "yuv420p10le"])
@pytest.mark.parametrize(
    ("source", "drawn", "visible"),
    [
        # A portrait picture with the editor's contain in a landscape frame: 3.2x as tall.
        ((90, 160), (320, 568), (320, 180)),
        # Wider than the frame (fit none of a large picture), shrunk: past the right edge.
        ((1280, 360), (640, 180), (320, 180)),
    ],
)
def test_only_the_visible_part_of_a_layer_is_converted_and_it_is_the_same(
    fmt: str, source: tuple[int, int], drawn: tuple[int, int], visible: tuple[int, int]
) -> None:
    frame = _picture(*source, fmt)
    alpha = fmt == "yuva420p"
    whole = compose.convert(frame, *drawn, alpha=alpha)
    part = compose.convert(frame, *drawn, alpha=alpha, visible=visible)
    assert whole.y.shape == (drawn[1], drawn[0])
    # Smaller, but covering what shows.
    assert part.y.shape[0] * part.y.shape[1] < whole.y.shape[0] * whole.y.shape[1]
    assert part.y.shape[0] >= visible[1] and part.y.shape[1] >= visible[0]
    w, h = visible
    planes = [(whole.y, part.y, 1), (whole.u, part.u, 2), (whole.v, part.v, 2)]
    if alpha:
        assert whole.alpha is not None and part.alpha is not None
        planes.append((whole.alpha, part.alpha, 1))
    # These sizes have cuts with the whole's very steps: identical where it shows.
    for a, b, sub in planes:
        shown = (slice(0, h // sub), slice(0, w // sub))
        assert np.array_equal(a[shown], b[shown]), fmt


def _drift(source: int, drawn: int, shown: int, kept: int, scaled: int) -> float:
    luma = abs(compose._step(kept, scaled) - compose._step(source, drawn))
    whole_chroma = compose._step(-(-source // 2), -(-drawn // 2))
    chroma = abs(compose._step(kept // 2, -(-scaled // 2)) - whole_chroma)
    return max(luma * shown, chroma * shown / 2) / 65536


@pytest.mark.parametrize(
    ("source", "drawn", "shown"),
    # Phone pictures in a 1080p frame (drawn sizes are even), and a shrink.
    [(1920, 3414, 1080), (1920, 3412, 1080), (4032, 2560, 1080), (1280, 640, 320)],
)
def test_common_cuts_are_stepped_through_exactly_as_the_whole(
    source: int, drawn: int, shown: int
) -> None:
    cut = compose._same_steps(source, drawn, shown)
    assert cut is not None
    kept, scaled = cut
    assert kept < source and shown < scaled < drawn and kept % 2 == 0
    assert _drift(source, drawn, shown, kept, scaled) == 0


def test_no_cut_samples_further_than_the_bound_from_the_whole() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        source = int(rng.choice([360, 720, 1080, 1440, 1920, 3024, 4032]))
        drawn = 2 * int(rng.integers(source // 4, source * 2))
        shown = 2 * int(rng.integers(1, drawn * 7 // 20))
        cut = compose._same_steps(source, drawn, shown)
        if cut is not None and cut != (source, drawn):
            assert _drift(source, drawn, shown, *cut) <= compose.MAX_DRIFT
            # Even, like every layer: the chroma is halved, the alpha averaged 2x2.
            assert cut[0] % 2 == cut[1] % 2 == 0


def test_a_layer_barely_past_the_canvas_is_converted_whole() -> None:
    frame = _picture(90, 160, "yuv420p")
    layer = compose.convert(frame, 320, 200, alpha=False, visible=(320, 180))
    assert layer.y.shape == (200, 320)
