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
    ("source", "drawn", "visible", "exact"),
    [
        # A portrait picture with the editor's contain in a landscape frame: 3.2x as tall.
        ((90, 160), (320, 568), (0, 0, 320, 180), True),
        # Wider than the frame (fit none of a large picture), shrunk: past the right edge.
        ((1280, 360), (640, 180), (0, 0, 320, 180), True),
        # The portrait one centred (y "50%"): past the top and the bottom.
        ((90, 160), (320, 568), (0, 194, 320, 374), False),
        # Twice the frame, centred both ways: past every edge, exact starts (step 1/2).
        ((320, 180), (640, 360), (160, 90, 480, 270), True),
        # The same from another size: past every edge, starts within MAX_PHASE.
        ((360, 200), (640, 360), (160, 90, 480, 270), False),
        # A phone's portrait 1080x1920 drawn 1920x3414, centred in a 1080p frame.
        ((270, 480), (480, 854), (0, 292, 480, 562), False),
    ],
)
def test_only_the_visible_part_of_a_layer_is_converted_and_it_is_the_same(
    fmt: str,
    source: tuple[int, int],
    drawn: tuple[int, int],
    visible: tuple[int, int, int, int],
    exact: bool,
) -> None:
    frame = _picture(*source, fmt)
    alpha = fmt == "yuva420p"
    whole = compose.convert(frame, *drawn, alpha=alpha)
    part = compose.convert(frame, *drawn, alpha=alpha, visible=visible)
    assert whole.y.shape == (drawn[1], drawn[0]) and whole.origin == (0, 0)
    x0, y0, x1, y1 = visible
    ox, oy = part.origin
    # Smaller, but covering what shows, from an even origin (the halved chroma).
    assert part.y.shape[0] * part.y.shape[1] < whole.y.shape[0] * whole.y.shape[1]
    assert ox <= x0 and oy <= y0 and ox % 2 == oy % 2 == 0
    assert ox + part.y.shape[1] >= x1 and oy + part.y.shape[0] >= y1
    planes = [(whole.y, part.y, 1), (whole.u, part.u, 2), (whole.v, part.v, 2)]
    if alpha:
        assert whole.alpha is not None and part.alpha is not None
        planes.append((whole.alpha, part.alpha, 1))
    for a, b, sub in planes:
        shown = a[y0 // sub : y1 // sub, x0 // sub : x1 // sub]
        got = b[(y0 - oy) // sub : (y1 - oy) // sub, (x0 - ox) // sub : (x1 - ox) // sub]
        diff = np.abs(shown.astype(np.int32) - got)
        if exact:
            # Cuts with the whole's very steps and starts: identical where it shows.
            assert int(diff.max()) == 0, fmt
        else:
            # A start within MAX_PHASE of the whole's: a level's rounding at most.
            assert int(diff.max()) <= 1, fmt
            assert float(np.mean(diff > 0)) < 0.1, fmt


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
    layer = compose.convert(frame, 320, 200, alpha=False, visible=(0, 0, 320, 180))
    assert layer.y.shape == (200, 320)


def test_parts_past_the_left_or_top_start_where_the_whole_samples() -> None:
    """Wherever a part starts, swscale samples it within MAX_PHASE of the whole, and by
    the last shown sample within MAX_DRIFT; phone sizes in a 1080p frame find one."""
    rng = np.random.default_rng(11)
    started = 0
    for _ in range(300):
        source = int(rng.choice([360, 720, 1080, 1440, 1920, 3024, 4032]))
        drawn = 2 * int(rng.integers(source // 4, source * 2))
        first = 2 * int(rng.integers(1, drawn // 4))
        last = min(drawn, first + 2 * int(rng.integers(1, drawn * 7 // 20)))
        found = compose._window(source, drawn, first, last)
        if found is None:
            continue
        start, kept, origin, scaled = found
        assert start % 2 == kept % 2 == origin % 2 == scaled % 2 == 0
        assert origin <= first and origin + scaled >= last and start + kept <= source
        if start == 0:
            continue
        started += 1
        luma = compose._step(source, drawn)
        chroma = compose._step(-(-source // 2), -(-drawn // 2))
        phase = max(
            abs(start * 65536 - origin * luma), abs(start // 2 * 65536 - origin // 2 * chroma)
        )
        assert phase / 65536 <= compose.MAX_PHASE
        shown = last - origin
        steps = abs(compose._step(kept, scaled) - luma) * shown
        assert (phase + steps) / 65536 <= compose.MAX_DRIFT + 1e-9
    assert started > 200
    # A phone's 1080x1920 drawn 1920x3414 and centred: rows 1166 .. 2246 show.
    found = compose._window(1920, 3414, 1166, 2246)
    assert found is not None and found[0] > 0 and found[2] > 1000 and found[3] < 1300
