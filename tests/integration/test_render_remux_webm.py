"""The stream-copy path for WebM: VP9 sources cut into a WebM output, packets copied,
the frames between a mid-GOP cut and the next keyframe re-encoded with libvpx-vp9."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import av.logging
import pytest

from rendermill.cli import synth
from rendermill.common import schemas
from rendermill.common.project import model
from rendermill.common.testing import clip, project, track
from rendermill.renderer import engine
from rendermill.renderer.engine import remux

FPS = 30
WEBM = schemas.OutputSpec(resolution="320x180", fps=FPS, format="webm")
NEVER = schemas.OutputSpec(resolution="320x180", fps=FPS, format="webm", copy="never")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("remux-webm-media")
    # synth's WebM: VP9 profile 0 with a keyframe every second, Opus, millisecond
    # timestamps (so a frame's time is off its 1/30 s grid by up to half a millisecond).
    return {
        "a": synth.make_video(d / "a.webm", duration=3.0, counter=True, tone_hz=440.0),
        "b": synth.make_video(
            d / "b.webm", color=(0, 0, 255), duration=3.0, counter=True, tone_hz=1000.0
        ),
        "alpha": synth.make_video(d / "alpha.webm", duration=1.0, alpha=True, tone_hz=None),
        "h264": synth.make_video(d / "h264.mp4", duration=1.0, counter=True),
    }


def counters(path: Path) -> tuple[list[int], list[str]]:
    """The frame counter each picture shows, and what the decoder complained about."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs, av.open(str(path)) as container:
            shown = [
                synth.read_counter(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)
            ]
    finally:
        av.logging.set_level(level)
    return shown, [m[2] for m in logs]


def packets(path: Path) -> list[tuple[bytes, bool]]:
    with av.open(str(path)) as container:
        return [(bytes(p), p.is_keyframe) for p in container.demux(video=0) if p.size]


def test_keyframe_aligned_cuts_copy_every_packet(media: dict[str, Path], tmp_path: Path) -> None:
    proj = project(
        track("a", clip(0.0, 1.0), clip(2.0, 3.0, trim_start=2.0)),
        track("b", clip(1.0, 2.0, trim_start=1.0)),
    )
    result = remux.try_remux(proj, media, WEBM, tmp_path / "out.webm")
    assert result is not None and result.copied and result.frames == 90
    shown, complaints = counters(tmp_path / "out.webm")
    assert shown == list(range(90))
    assert complaints == []
    source = {data for name in ("a", "b") for data, _ in packets(media[name])}
    assert all(data in source for data, _ in packets(tmp_path / "out.webm"))


def test_mid_gop_cuts_land_on_the_exact_frames(media: dict[str, Path], tmp_path: Path) -> None:
    proj = project(
        track("a", clip(0.0, 1.3, trim_start=0.41), clip(2.5, 3.2, trim_start=2.11)),
        track("b", clip(1.3, 2.5, trim_start=0.77)),
    )
    result = remux.try_remux(proj, media, WEBM, tmp_path / "out.webm")
    assert result is not None and result.copied and result.frames == 96
    shown, complaints = counters(tmp_path / "out.webm")
    assert complaints == []
    expected = [
        round((a.trim_start + i / FPS - a.start) * FPS)
        for i in range(96)
        for a in [next(a for t in proj.tracks for a in t.actions if a.start <= i / FPS < a.end)]
    ]
    assert shown == expected
    engine.render(proj, media, NEVER, tmp_path / "composed.webm")
    assert shown == counters(tmp_path / "composed.webm")[0]
    # Re-encoded pieces open with keyframes of their own: one at each mid-GOP cut (0.41 s,
    # 0.77 s and 2.11 s into their sources) besides the sources' own.
    keys = [i for i, (_, key) in enumerate(packets(tmp_path / "out.webm")) if key]
    assert {0, 39, 75} <= set(keys)
    # The sound is mixed like the compose path's: each clip's tone on its side of a join.
    out = synth.Decoded(tmp_path / "out.webm", FPS)
    for join, before, after in ((1.3, 440.0, 1000.0), (2.5, 1000.0, 440.0)):
        assert out.level_at(before, join - 0.2, join - 0.02) > 5 * out.level_at(
            after, join - 0.2, join - 0.02
        )
        assert out.level_at(after, join + 0.02, join + 0.2) > 5 * out.level_at(
            before, join + 0.02, join + 0.2
        )


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("a", schemas.OutputSpec(resolution="320x180", fps=FPS)),  # VP9 into MP4
        ("h264", WEBM),  # H.264 into WebM
        ("alpha", WEBM),  # copying would drop the alpha channel
    ],
)
def test_sources_that_do_not_fit_the_output_are_composed(
    name: str, output: schemas.OutputSpec, media: dict[str, Path], tmp_path: Path
) -> None:
    proj = project(track(name, clip(0.0, 1.0)))
    assert remux.try_remux(proj, media, output, tmp_path / f"out.{output.format}") is None


def test_compose_shows_every_frame_of_a_millisecond_timestamped_source(
    media: dict[str, Path], tmp_path: Path
) -> None:
    # Frame 2 of a 30 fps WebM is stored at 67 ms, after 2 / 30 s: it must still show
    # there, not frame 1 twice (and frame 3 skip 2).
    proj = project(track("a", clip(0.0, 2.0, fit=model.Fit.FILL)))
    engine.render(proj, media, NEVER, tmp_path / "out.webm")
    assert counters(tmp_path / "out.webm")[0] == list(range(60))


def test_a_frame_exact_time_base_keeps_the_strict_rule(tmp_path: Path) -> None:
    # AVI counts frames (time base 1/30): its timestamps are exact, so frame k shows from
    # k / 30 s and not half a tick earlier. At 1.5x, output frame 1 (source 0.05 s) still
    # shows frame 1, which frame 2 (due at 0.0667 s) must not displace.
    avi = synth.make_video(
        tmp_path / "c.avi", duration=2.0, counter=True, tone_hz=None, codec="mpeg4"
    )
    with av.open(str(avi)) as container:
        assert container.streams.video[0].time_base == Fraction(1, 30)
    proj = project(track("c", clip(0.0, 1.0, playback_rate=1.5, fit=model.Fit.FILL)))
    engine.render(proj, {"c": avi}, NEVER, tmp_path / "out.webm")
    shown = counters(tmp_path / "out.webm")[0]
    assert shown == [int(1.5 * i + 1e-9) for i in range(30)]
