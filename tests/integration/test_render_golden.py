"""Golden checks of rendered output: exact frames, pixel positions and audio levels.

Projects are written the way the editor writes them (JSON with its field names) and
parsed, so that these tests pin the whole path from a project file to the pixels and
samples. Every expectation is computed here from TIMELINE.md, not from the engine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from rendermill.cli import synth
from rendermill.common import schemas
from rendermill.common.project import model, parse
from rendermill.renderer import engine

W, H = 320, 180
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
RATE = 48000

Picture = npt.NDArray[np.uint8]
Json = dict[str, Any]


def act(start: float, end: float, **fields: Any) -> Json:
    return {"id": f"a-{start}-{end}", "start": start, "end": end, **fields}


def trk(url: str, *actions: Json, controller: str = "video", **fields: Any) -> Json:
    return {
        "id": f"t-{url}",
        "name": url,
        "controllerName": controller,
        "url": url,
        "actions": list(actions),
        **fields,
    }


def editor_project(*tracks: Json, background: str = "#000", **fields: Any) -> model.Project:
    return parse.from_json(
        {"width": W, "height": H, "backgroundColor": background, "tracks": list(tracks), **fields}
    )


def render(
    tmp_path: Path,
    proj: model.Project,
    sources: dict[str, Path],
    *,
    fps: int = 30,
    resolution: str = f"{W}x{H}",
    **options: Any,
) -> synth.Decoded:
    output = schemas.OutputSpec(resolution=resolution, fps=fps, **options)
    dest = tmp_path / "out.mp4"
    result = engine.render(proj, sources, output, dest)
    out = synth.Decoded(dest, fps)
    assert len(out.frames) == result.frames == proj.frame_count(fps)
    return out


def mean(picture: Picture, x0: float, y0: float, x1: float, y1: float) -> Picture:
    region = picture[round(y0) : round(y1), round(x0) : round(x1)].reshape(-1, 3)
    assert len(region), (x0, y0, x1, y1)
    return region.mean(axis=0)  # type: ignore[no-any-return]


def near(actual: Picture, expected: tuple[float, float, float], tolerance: float = 16.0) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, np.float64) - expected) <= tolerance))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("golden-media")
    return {
        "a": synth.make_video(d / "a.mp4", color=RED, duration=2.0, counter=True, tone_hz=440.0),
        "b": synth.make_video(d / "b.mp4", color=BLUE, duration=2.0, counter=True, tone_hz=None),
        "wide": synth.make_image(d / "wide.png", color=BLUE, size=(160, 80)),
        "tall": synth.make_image(d / "tall.png", color=GREEN, size=(90, 160)),
        "tone1s": synth.make_video(
            d / "tone1s.mp4", color=WHITE, duration=1.0, counter=True, tone_hz=1000.0
        ),
        "tone2s": synth.make_audio(d / "tone2s.m4a", tone_hz=440.0, duration=2.0),
        "alpha_webm": synth.make_video(
            d / "alpha.webm", color=GREEN, size=(160, 90), alpha=True, tone_hz=None
        ),
        "quarter_png": synth.make_image(d / "quarter.png", color=WHITE, size=(160, 90), alpha=64),
    }


# Which clip and which frame ---------------------------------------------------------


@pytest.mark.parametrize(("fps", "cut"), [(30, 0.5), (24, 0.375), (25, 0.28), (30, 0.51)])
def test_a_cut_lands_on_its_frame(
    tmp_path: Path, media: dict[str, Path], fps: int, cut: float
) -> None:
    proj = editor_project(
        trk("a", act(0.0, cut)),
        trk("b", act(cut, 1.0, trimStart=0.5)),
    )
    out = render(tmp_path, proj, {"a": media["a"], "b": media["b"]}, fps=fps)
    first = math.ceil(cut * fps - 1e-9)
    before, at = (first - 1) / fps, first / fps
    # Both sources run at 30 fps: source time s shows source frame floor(30 s).
    assert synth.read_counter(out.frames[first - 1]) == math.floor(30 * before + 1e-6)
    assert near(mean(out.frames[first - 1], 0, 0, W, 120), RED)
    assert synth.read_counter(out.frames[first]) == math.floor(30 * (0.5 + at - cut) + 1e-6)
    assert near(mean(out.frames[first], 0, 0, W, 120), BLUE)


def test_trim_start_and_playback_rate_two(tmp_path: Path, media: dict[str, Path]) -> None:
    # A 1 s source from 0.2 s at double speed runs out at t = 0.4 s.
    proj = editor_project(trk("tone1s", act(0.0, 0.8, trimStart=0.2, playbackRate=2.0)))
    out = render(tmp_path, proj, {"tone1s": media["tone1s"]})
    counters = [synth.read_counter(f) for f in out.frames]
    assert counters[:12] == [6 + 2 * i for i in range(12)]
    # Then the last frame holds, silently.
    assert set(counters[12:]) == {29}
    # The sound is the picture's: 0.8 s of a 1 kHz tone squeezed into 0.4 s at 2 kHz.
    assert out.rms(0.02, 0.38) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    assert out.rms(0.42, 0.8) < 0.01
    window = out.audio[0, round(0.02 * RATE) : round(0.38 * RATE)].astype(np.float64)
    peak = np.fft.rfftfreq(len(window), 1 / RATE)[np.argmax(np.abs(np.fft.rfft(window)))]
    assert peak == pytest.approx(2000, abs=10)


# Where a layer sits ------------------------------------------------------------------

# (fit, source, x, y) -> on a 320x180 canvas; sources: wide 160x80 (r = 2, wider than the
# canvas), tall 90x160 (r = 0.5625). Positions push some layers past the edges.
_PLACEMENTS: list[tuple[str, str, Any, Any]] = [
    ("normal", "wide", 20, 30),
    ("none", "tall", -30, 40),
    ("none", "wide", 250, 150),
    ("none", "wide", "100%", "50%"),
    ("none", "wide", "12px", "8px"),
    ("fill", "tall", 0, 0),
    ("contain", "wide", -100, 0),
    ("contain", "wide", 0, 10),
    ("cover", "wide", -60, 0),
    ("cover", "wide", 0, 0),
    ("contain", "tall", 0, -500),
    ("contain", "tall", 100, 0),
    ("cover", "tall", 50, 0),
    ("cover", "tall", 0, -400),
    ("contain", "wide", "50%", "50%"),
]
_SIZES = {"wide": (160, 80), "tall": (90, 160)}


def _layer_rect(
    fit: str, mode: str, source: tuple[int, int], x: Any, y: Any
) -> tuple[float, float, float, float]:
    """TIMELINE.md's placement, or CSS object-fit sizes in css mode."""
    w, h = source
    r = w / h
    if fit == "fill":
        lw, lh = float(W), float(H)
    elif fit in ("contain", "cover") and mode == "css":
        k = min(W / w, H / h) if fit == "contain" else max(W / w, H / h)
        lw, lh = w * k, h * k
    elif fit == "contain":
        lw, lh = (H * r, float(H)) if r > 1 else (float(W), W / r)
    elif fit == "cover":
        lw, lh = (float(W), W / r) if r > 1 else (H * r, float(H))
    else:
        lw, lh = float(w), float(h)

    def resolve(value: Any, canvas: float, layer: float) -> float:
        if isinstance(value, str) and value.endswith("%"):
            return (canvas - layer) * float(value[:-1]) / 100
        if isinstance(value, str):
            return float(value.removesuffix("px"))
        return float(value)

    return resolve(x, W, lw), resolve(y, H, lh), lw, lh


def _assert_rect(
    picture: Picture,
    rect: tuple[float, float, float, float],
    inside: tuple[int, int, int],
    outside: tuple[int, int, int],
    label: object,
) -> None:
    x, y, w, h = rect
    # Even rounding moves an edge by at most 2 px; test 3 px either side of it.
    x0, y0, x1, y1 = max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h)
    if x0 >= x1 or y0 >= y1:
        # Entirely off the canvas.
        assert near(mean(picture, 0, 0, W, H), outside), label
        return
    assert near(mean(picture, x0 + 3, y0 + 3, x1 - 3, y1 - 3), inside), label
    bands = [
        (x0 - 6, y0 + 3, x0 - 3, y1 - 3) if x0 >= 6 else None,
        (x1 + 3, y0 + 3, x1 + 6, y1 - 3) if x1 <= W - 6 else None,
        (x0 + 3, y0 - 6, x1 - 3, y0 - 3) if y0 >= 6 else None,
        (x0 + 3, y1 + 3, x1 - 3, y1 + 6) if y1 <= H - 6 else None,
    ]
    for band in bands:
        if band is not None:
            assert near(mean(picture, *band), outside), (label, band)


@pytest.mark.parametrize("mode", ["editor", "css"])
def test_layer_positions_for_every_fit(
    tmp_path: Path, media: dict[str, Path], mode: schemas.FitMode
) -> None:
    step = 0.1
    tracks: dict[str, list[Json]] = {"wide": [], "tall": []}
    for k, (fit, source, x, y) in enumerate(_PLACEMENTS):
        tracks[source].append(act(k * step, (k + 1) * step, fit=fit, x=x, y=y))
    proj = editor_project(
        *(trk(name, *actions, controller="image") for name, actions in tracks.items()),
        background="white",
    )
    sources = {"wide": media["wide"], "tall": media["tall"]}
    out = render(tmp_path, proj, sources, fit_mode=mode)
    for k, (fit, source, x, y) in enumerate(_PLACEMENTS):
        rect = _layer_rect(fit, mode, _SIZES[source], x, y)
        colour = BLUE if source == "wide" else GREEN
        _assert_rect(out.at((k + 0.5) * step), rect, colour, WHITE, (mode, fit, source, x, y))


def test_editor_and_css_fit_differ_where_the_editor_formula_overflows(
    tmp_path: Path, media: dict[str, Path]
) -> None:
    # A 2:1 picture on a 16:9 canvas: the editor's contain is 360x180 (wider than the
    # canvas), CSS contain is 320x160 (letterboxed).
    proj = editor_project(trk("wide", act(0.0, 0.1, fit="contain"), controller="image"))
    editor = render(tmp_path, proj, {"wide": media["wide"]}).at(0.0)
    css = render(tmp_path, proj, {"wide": media["wide"]}, fit_mode="css").at(0.0)
    assert near(mean(editor, 0, 164, W, H), BLUE)
    assert near(mean(css, 0, 164, W, H), BLACK)


def test_clipping_at_canvas_edges_inside_a_letterboxed_output(
    tmp_path: Path, media: dict[str, Path]
) -> None:
    # Canvas 320x180 into 320x240: bars of 30 px above and below, which layers never
    # draw into even where they extend past the canvas.
    proj = editor_project(
        trk("wide", act(0.0, 0.1, x=-60, y=-40), act(0.1, 0.2, x=250, y=150), controller="image"),
        background="white",
    )
    out = render(tmp_path, proj, {"wide": media["wide"]}, resolution="320x240")
    top_left = out.at(0.05)
    assert near(mean(top_left, 0, 33, 97, 67), BLUE)
    assert near(mean(top_left, 0, 0, 100, 28), WHITE)
    assert near(mean(top_left, 103, 30, 320, 240), WHITE)
    bottom_right = out.at(0.15)
    assert near(mean(bottom_right, 253, 183, 320, 207), BLUE)
    assert near(mean(bottom_right, 250, 212, 320, 240), WHITE)
    assert near(mean(bottom_right, 0, 0, 247, 240), WHITE)


def test_scaled_output_scales_positions(tmp_path: Path, media: dict[str, Path]) -> None:
    # Output 640x360 is the canvas at scale 2: a layer at (20, 30) sized 160x80 covers
    # (40, 60)-(360, 220).
    proj = editor_project(trk("wide", act(0.0, 0.1, x=20, y=30), controller="image"))
    picture = render(tmp_path, proj, {"wide": media["wide"]}, resolution="640x360").at(0.0)
    assert near(mean(picture, 43, 63, 357, 217), BLUE)
    assert near(mean(picture, 0, 0, 37, 360), BLACK)
    assert near(mean(picture, 363, 0, 640, 360), BLACK)
    assert near(mean(picture, 0, 223, 640, 360), BLACK)


# Background and alpha ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("css", "rgb"),
    [
        ("#336699", (51, 102, 153)),
        ("rgb(10, 200, 30)", (10, 200, 30)),
        ("rgba(255, 0, 0, 0.5)", (127, 0, 0)),
        ("transparent", BLACK),
        ("white", WHITE),
    ],
)
def test_background_colour(
    tmp_path: Path, media: dict[str, Path], css: str, rgb: tuple[int, int, int]
) -> None:
    proj = editor_project(
        trk("wide", act(0.0, 0.1, x=80, y=50), controller="image"), background=css
    )
    picture = render(tmp_path, proj, {"wide": media["wide"]}).at(0.0)
    assert near(mean(picture, 0, 0, 76, H), rgb, 3)
    assert near(mean(picture, 84, 54, 236, 126), BLUE)


def test_alpha_sources_composite_with_their_alpha(tmp_path: Path, media: dict[str, Path]) -> None:
    proj = editor_project(
        trk("b", act(0.0, 0.2)),
        trk("alpha_webm", act(0.0, 0.1, x=40, y=40)),
        trk("quarter_png", act(0.1, 0.2, x=40, y=40), controller="image"),
    )
    sources = {k: media[k] for k in ("b", "alpha_webm", "quarter_png")}
    out = render(tmp_path, proj, sources)
    webm = out.at(0.05)
    # The webm's left half (80 px) is opaque green, its right half transparent.
    assert near(mean(webm, 44, 44, 116, 126), GREEN, 24)
    assert near(mean(webm, 124, 44, 196, 126), BLUE, 24)
    assert near(mean(webm, 204, 0, W, 120), BLUE, 24)
    png = out.at(0.15)
    # White at alpha 64 over blue: blue + (white - blue) * 64 / 255.
    quarter = 64 / 255
    expected = (255 * quarter, 255 * quarter, 255.0)
    assert near(mean(png, 44, 44, 196, 126), expected, 8)
    assert near(mean(png, 204, 0, W, 120), BLUE, 16)


# Sound ------------------------------------------------------------------------------


def test_audio_levels_per_window(tmp_path: Path, media: dict[str, Path]) -> None:
    full = 0.5 / np.sqrt(2)
    proj = editor_project(
        # 0-1.5: steps on the video clock (timeline time), with ramps between them.
        trk(
            "a",
            act(0.0, 1.5, volume=[[0.5, None, 0.5], [1.0, 0.5, 1.0], [0.0, 1.0]]),
        ),
        # 1.5-2.0: a muted track.
        trk("tone2s", act(1.5, 2.0), controller="audio", muted=True),
        # 2.0-4.5: a 1 s clip looping; 4.5-6.5: the same without loop (silent after 1 s);
        # 6.5-7.0: frozen (silent).
        trk(
            "tone1s",
            act(2.0, 4.5, loop=True),
            act(4.5, 6.5),
            act(6.5, 7.0, freeze=0.5),
        ),
    )
    sources = {k: media[k] for k in ("a", "tone2s", "tone1s")}
    out = render(tmp_path, proj, sources, fps=10, resolution="64x36")
    levels = {
        (0.02, 0.48): 0.5 * full,
        (0.51, 0.98): full,
        (1.01, 1.49): 0.0,
        (1.51, 1.99): 0.0,
        (2.02, 2.98): full,
        (3.02, 3.98): full,
        (4.02, 4.48): full,
        (4.52, 5.48): full,
        (5.52, 6.48): 0.0,
        (6.52, 6.98): 0.0,
    }
    for (start, end), level in levels.items():
        if level:
            assert out.rms(start, end) == pytest.approx(level, rel=0.1), (start, end)
        else:
            assert out.rms(start, end) < 0.01, (start, end)
    # Each volume step ramps over 5 ms: the gain envelope (peak per 1 ms of the 440 Hz
    # tone would be too coarse, so per half period) moves through intermediate values.
    period = round(RATE / 440)
    edge = out.audio[0, round(0.5 * RATE) - 2 * period : round(0.5 * RATE) + 6 * period]
    envelope = [
        float(np.max(np.abs(edge[k : k + period])))
        for k in range(0, len(edge) - period + 1, period // 2)
    ]
    assert envelope[0] == pytest.approx(0.25, rel=0.15)
    assert envelope[-1] == pytest.approx(0.5, rel=0.15)
    steps = np.diff(envelope)
    assert np.all(steps > -0.02)
    assert np.max(steps) < 0.2
