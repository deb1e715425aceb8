"""The render engine against synthetic media: every rule is checked on decoded output."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from rendermill.cli import synth
from rendermill.common import errors, schemas
from rendermill.common.project import model
from rendermill.renderer import engine

FPS = 30
SMALL = schemas.OutputSpec(resolution="320x180", fps=FPS)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

Picture = npt.NDArray[np.uint8]


def clip(start: float, end: float, **fields: object) -> model.Action:
    return model.Action(id=f"a{start}-{end}", start=start, end=end, **fields)  # type: ignore[arg-type]


def track(
    url: str,
    *actions: model.Action,
    controller: model.Controller = model.Controller.VIDEO,
    **fields: object,
) -> model.Track:
    return model.Track(
        id=f"t-{url}",
        name=f"track {url}",
        controller=controller,
        url=url,
        actions=actions,
        **fields,  # type: ignore[arg-type]
    )


def project(*tracks: model.Track, **fields: object) -> model.Project:
    return model.Project(width=320, height=180, tracks=tracks, **fields)  # type: ignore[arg-type]


class Output:
    """A rendered file, decoded: RGB pictures and 48 kHz stereo samples."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            self.width = video.codec_context.width
            self.height = video.codec_context.height
            self.duration = (container.duration or 0) / av.time_base
            self.frames: list[Picture] = [
                np.asarray(f.to_ndarray(format="rgb24"), np.uint8)
                for f in container.decode(video=0)
            ]
        with av.open(str(path)) as container:
            chunks = (
                [f.to_ndarray() for f in container.decode(audio=0)]
                if container.streams.audio
                else []
            )
        self.audio = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), np.float32)

    def at(self, t: float) -> Picture:
        return self.frames[round(t * FPS)]

    def rms(self, start: float, end: float) -> float:
        window = self.audio[:, round(start * 48000) : round(end * 48000)]
        return float(np.sqrt(np.mean(np.square(window, dtype=np.float64))))


def colour(picture: Picture, x0: int = 0, y0: int = 0, x1: int = 320, y1: int = 180) -> Picture:
    region = picture[y0:y1, x0:x1].reshape(-1, 3)
    return region.mean(axis=0)  # type: ignore[no-any-return]


def near(actual: Picture, expected: tuple[int, int, int], tolerance: float = 16.0) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, np.float64) - expected) <= tolerance))


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., Output]:
    def _run(
        proj: model.Project,
        sources: dict[str, Path],
        output: schemas.OutputSpec = SMALL,
        **kwargs: object,
    ) -> Output:
        dest = tmp_path / f"out.{output.format}"
        result = engine.render(proj, sources, output, dest, **kwargs)  # type: ignore[arg-type]
        assert result.size_bytes == dest.stat().st_size > 0
        out = Output(dest)
        assert result.frames == len(out.frames)
        return out

    return _run


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sources shared by the tests (writing them once keeps the suite quick)."""
    d = tmp_path_factory.mktemp("media")
    return {
        "red": synth.make_video(d / "red.mp4", color=RED, tone_hz=440.0),
        "blue": synth.make_video(d / "blue.mp4", color=BLUE, tone_hz=None),
        "small_blue": synth.make_video(d / "small.mp4", color=BLUE, size=(160, 90), tone_hz=None),
        "counter": synth.make_video(
            d / "counter.mp4", color=WHITE, duration=1.0, counter=True, tone_hz=1000.0
        ),
        "long_counter": synth.make_video(
            d / "long.mp4", color=WHITE, duration=5.0, counter=True, tone_hz=None
        ),
        "alpha": synth.make_video(d / "alpha.webm", color=BLUE, alpha=True, tone_hz=None),
        "tone": synth.make_audio(d / "tone.m4a", tone_hz=440.0, duration=3.0),
        "mono_mp3": synth.make_audio(
            d / "mono.mp3", tone_hz=2000.0, duration=2.0, rate=44100, layout="mono", amplitude=0.3
        ),
        "surround": synth.make_audio(
            d / "surround.wav", tone_hz=440.0, layout="5.1", amplitude=0.1
        ),
        "green_png": synth.make_image(d / "green.png", color=GREEN, size=(160, 90)),
        "half_green_png": synth.make_image(d / "half.png", color=GREEN, alpha=128),
        "green_jpg": synth.make_image(d / "green.jpg", color=GREEN, size=(80, 60)),
    }


def test_cut_between_two_clips(run: Callable[..., Output], media: dict[str, Path]) -> None:
    proj = project(
        track("red", clip(0.0, 1.0)),
        track("blue", clip(1.0, 2.0)),
    )
    out = run(proj, {"red": media["red"], "blue": media["blue"]})
    assert (out.width, out.height) == (320, 180)
    assert abs(out.duration - 2.0) <= 1 / FPS
    assert len(out.frames) == 60
    assert near(colour(out.at(0.0)), RED)
    assert near(colour(out.at(29 / FPS)), RED)
    assert near(colour(out.at(1.0)), BLUE)
    assert near(colour(out.at(1.9)), BLUE)
    # The red clip's tone plays during its action only.
    assert out.rms(0.1, 0.9) > 0.2
    assert out.rms(1.1, 1.9) < 0.01


def test_output_size_scales_canvas_and_pads_with_background(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    proj = project(track("red", clip(0.0, 0.5)), background_color="#00ff00")
    out = run(proj, {"red": media["red"]}, schemas.OutputSpec(resolution="160x180", fps=FPS))
    assert (out.width, out.height) == (160, 180)
    picture = out.at(0.2)
    # 320x180 into 160x180 is 160x90, centred: green bars above and below.
    assert near(colour(picture, 0, 0, 160, 40), GREEN)
    assert near(colour(picture, 0, 50, 160, 130), RED)
    assert near(colour(picture, 0, 140, 160, 180), GREEN)


def test_top_track_wins_where_it_covers_and_xy_places_it(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    proj = project(
        track("red", clip(0.0, 1.0)),
        track("small_blue", clip(0.0, 1.0, x=model.Coord(100), y=model.Coord(40))),
    )
    out = run(proj, {"red": media["red"], "small_blue": media["small_blue"]})
    picture = out.at(0.5)
    assert near(colour(picture, 104, 44, 256, 126), BLUE)
    assert near(colour(picture, 0, 0, 96, 180), RED)
    assert near(colour(picture, 264, 0, 320, 180), RED)
    assert near(colour(picture, 0, 134, 320, 180), RED)


def test_fit_fill_none_and_percent_position(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    percent = model.Coord(100, "%")
    proj = project(
        track("red", clip(0.0, 2.0)),
        track(
            "small_blue",
            clip(0.0, 1.0, fit=model.Fit.FILL),
            clip(1.0, 2.0, fit=model.Fit.NONE, x=percent, y=percent),
        ),
    )
    out = run(proj, {"red": media["red"], "small_blue": media["small_blue"]})
    assert near(colour(out.at(0.5)), BLUE)
    # fit none at 100%/100%: the 160x90 picture sits in the bottom-right corner.
    later = out.at(1.5)
    assert near(colour(later, 164, 94, 320, 180), BLUE)
    assert near(colour(later, 0, 0, 156, 180), RED)
    assert near(colour(later, 0, 0, 320, 86), RED)


def test_images_png_and_jpeg(run: Callable[..., Output], media: dict[str, Path]) -> None:
    image = model.Controller.IMAGE
    proj = project(
        track("red", clip(0.0, 1.0)),
        track("green_png", clip(0.0, 0.5, fit=model.Fit.FILL), controller=image),
        track("green_jpg", clip(0.5, 1.0, x=model.Coord(20), y=model.Coord(20)), controller=image),
    )
    sources = {k: media[k] for k in ("red", "green_png", "green_jpg")}
    out = run(proj, sources)
    assert near(colour(out.at(0.2)), GREEN)
    later = out.at(0.7)
    assert near(colour(later, 24, 24, 96, 76), GREEN)
    assert near(colour(later, 120, 0, 320, 180), RED)
    # An image is silent; the red clip's own sound still plays.
    assert out.rms(0.1, 0.9) > 0.2


def test_display_rotation_is_applied(run: Callable[..., Output], tmp_path: Path) -> None:
    # A 160x90 clip recorded with a quarter turn shows as 90x160; the counter band at the
    # bottom of its picture (all black at frame 0) ends up on the right.
    rotated = synth.make_video(
        tmp_path / "rotated.mp4", color=BLUE, size=(160, 90), counter=True, rotation=90
    )
    proj = project(track("rotated", clip(0.0, 0.2)), background_color="white")
    picture = run(proj, {"rotated": rotated}).at(0.0)
    assert near(colour(picture, 4, 4, 60, 156), BLUE)
    assert near(colour(picture, 72, 4, 88, 156), (0, 0, 0))
    assert near(colour(picture, 96, 0, 320, 180), WHITE)
    assert near(colour(picture, 0, 166, 90, 180), WHITE)


def test_alpha_sources_composite_with_their_alpha(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    proj = project(
        track("red", clip(0.0, 1.0)),
        track("alpha", clip(0.0, 0.5)),
        track("half_green_png", clip(0.5, 1.0), controller=model.Controller.IMAGE),
    )
    sources = {k: media[k] for k in ("red", "alpha", "half_green_png")}
    out = run(proj, sources)
    early = out.at(0.2)
    # The alpha clip is opaque blue on its left half and transparent on its right.
    assert near(colour(early, 8, 0, 150, 180), BLUE, 24)
    assert near(colour(early, 170, 0, 312, 180), RED, 24)
    # Green at alpha 128 over red.
    assert near(colour(out.at(0.7)), (128, 128, 0), 24)


def test_trim_start_seeks_into_the_source(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    proj = project(
        track("counter", clip(0.0, 0.5, trim_start=0.5)),
        track("long_counter", clip(0.5, 1.0, trim_start=3.5)),
    )
    out = run(proj, {"counter": media["counter"], "long_counter": media["long_counter"]})
    assert synth.read_counter(out.at(0.0)) == 15
    assert synth.read_counter(out.at(0.2)) == 21
    assert synth.read_counter(out.at(0.5)) == 105
    assert synth.read_counter(out.at(0.9)) == 117


def test_past_the_media_end_holds_the_last_frame_silently(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    proj = project(track("counter", clip(0.0, 2.0)))
    out = run(proj, {"counter": media["counter"]})
    assert synth.read_counter(out.at(0.5)) == 15
    assert synth.read_counter(out.at(1.0)) == 29
    assert synth.read_counter(out.at(1.9)) == 29
    assert out.rms(0.1, 0.9) > 0.2
    assert out.rms(1.1, 1.9) < 0.01


def test_loop_wraps_picture_and_sound(run: Callable[..., Output], media: dict[str, Path]) -> None:
    proj = project(track("counter", clip(0.0, 2.5, loop=True)))
    out = run(proj, {"counter": media["counter"]})
    assert synth.read_counter(out.at(0.9)) == 27
    assert synth.read_counter(out.at(1.0)) == 0
    assert synth.read_counter(out.at(1.5)) == 15
    assert synth.read_counter(out.at(2.2)) == 6
    assert out.rms(1.1, 1.9) > 0.2
    assert out.rms(2.1, 2.4) > 0.2


def test_playback_rate_speeds_picture_and_sound(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    proj = project(track("counter", clip(0.0, 0.5, playback_rate=2.0)))
    out = run(proj, {"counter": media["counter"]})
    assert synth.read_counter(out.at(0.1)) == 6
    assert synth.read_counter(out.at(0.4)) == 24
    # Sound is resampled with the picture: the 1 kHz tone plays at 2 kHz.
    window = out.audio[0, 2400:21600].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(window))
    peak = np.fft.rfftfreq(len(window), 1 / 48000)[np.argmax(spectrum)]
    assert peak == pytest.approx(2000, abs=10)


def test_freeze_holds_one_frame_and_is_silent(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    proj = project(track("counter", clip(0.0, 1.0, freeze=0.5)))
    out = run(proj, {"counter": media["counter"]})
    assert {synth.read_counter(out.at(t)) for t in (0.0, 0.3, 0.9)} == {15}
    assert out.rms(0.0, 1.0) < 0.01


def test_later_start_wins_on_one_track(run: Callable[..., Output], media: dict[str, Path]) -> None:
    proj = project(
        track("counter", clip(0.0, 1.0), clip(0.3, 0.6, trim_start=0.0)),
    )
    out = run(proj, {"counter": media["counter"]})
    assert synth.read_counter(out.at(0.2)) == 6
    assert synth.read_counter(out.at(0.4)) == 3
    # The first action shows again where the second ends, at its own source time.
    assert synth.read_counter(out.at(0.8)) == 24


def test_hidden_track_has_no_picture_and_no_sound(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    proj = project(
        track("blue", clip(0.0, 1.0)),
        track("red", clip(0.0, 1.0), hidden=True),
    )
    out = run(proj, {"red": media["red"], "blue": media["blue"]})
    assert near(colour(out.at(0.5)), BLUE)
    assert out.rms(0.0, 1.0) < 0.01


def test_muted_track_shows_but_is_silent(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    proj = project(track("red", clip(0.0, 1.0), muted=True))
    out = run(proj, {"red": media["red"]})
    assert near(colour(out.at(0.5)), RED)
    assert out.rms(0.0, 1.0) < 0.01


def test_volume_steps_follow_the_clock(run: Callable[..., Output], media: dict[str, Path]) -> None:
    steps = (model.VolumeStep(1.0, None, 1.0), model.VolumeStep(0.25, 1.0, None))
    audio_track = track(
        "tone",
        # Audio tracks step on source time: trimStart 0.5 moves the step to t = 0.5.
        clip(0.0, 2.0, trim_start=0.5, volume=steps),
        controller=model.Controller.AUDIO,
    )
    proj = project(track("blue", clip(0.0, 2.0)), audio_track)
    out = run(proj, {"blue": media["blue"], "tone": media["tone"]})
    full = 0.5 / np.sqrt(2)
    assert out.rms(0.05, 0.45) == pytest.approx(full, rel=0.1)
    assert out.rms(0.55, 1.95) == pytest.approx(full * 0.25, rel=0.1)
    # The step ramps instead of jumping: no sample-to-sample leap beyond the tone's own.
    edge = out.audio[0, round(0.49 * 48000) : round(0.51 * 48000)]
    assert np.max(np.abs(np.diff(edge))) < 0.5 * 2 * np.pi * 440 / 48000 * 1.5

    video_steps = project(track("red", clip(0.0, 2.0, trim_start=0.5, volume=steps)))
    out = run(video_steps, {"red": media["red"]})
    # Video tracks step on timeline time: the step stays at t = 1.
    assert out.rms(0.05, 0.95) == pytest.approx(full, rel=0.1)
    assert out.rms(1.05, 1.45) == pytest.approx(full * 0.25, rel=0.1)


def test_mix_of_video_sound_and_audio_tracks(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    audio = model.Controller.AUDIO
    proj = project(
        track("red", clip(0.0, 1.0)),
        track("mono_mp3", clip(0.0, 1.0), controller=audio),
        track("surround", clip(0.0, 1.0, trim_start=0.5), controller=audio),
    )
    sources = {k: media[k] for k in ("red", "mono_mp3", "surround")}
    out = run(proj, sources)
    window = out.audio[:, 4800:43200].astype(np.float64)
    assert np.max(np.abs(window)) < 1.0
    for channel in window:
        spectrum = np.abs(np.fft.rfft(channel)) / len(channel) * 2
        freqs = np.fft.rfftfreq(len(channel), 1 / 48000)
        at_440 = spectrum[np.argmin(np.abs(freqs - 440))]
        at_2000 = spectrum[np.argmin(np.abs(freqs - 2000))]
        # The mono mp3 plays at full level on both sides (as in a browser).
        assert at_2000 == pytest.approx(0.3, rel=0.15)
        # 440 Hz from the video's own sound plus the downmixed 5.1 file.
        assert at_440 > 0.55


def test_progress_is_reported_up_to_the_total(
    run: Callable[..., Output], media: dict[str, Path]
) -> None:
    seen: list[tuple[int, int]] = []
    run(
        project(track("red", clip(0.0, 0.5))),
        {"red": media["red"]},
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (15, 15)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize("fmt", ["webm", "mov", "gif"])
def test_other_formats(
    run: Callable[..., Output], media: dict[str, Path], fmt: schemas.OutputFormat
) -> None:
    output = schemas.OutputSpec(format=fmt, resolution="320x180", fps=FPS)
    out = run(project(track("red", clip(0.0, 0.5))), {"red": media["red"]}, output)
    assert len(out.frames) == 15
    assert near(colour(out.at(0.2)), RED, 40)
    if fmt != "gif":
        assert out.rms(0.1, 0.4) > 0.2


def _corrupt(tmp_path: Path, media: dict[str, Path], kind: str) -> Path:
    bad = tmp_path / f"bad-{kind}.mp4"
    if kind == "random":
        bad.write_bytes(os.urandom(50_000))
    elif kind == "truncated":
        data = media["red"].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        bad.write_bytes(b"")
    return bad


@pytest.mark.parametrize("kind", ["random", "truncated", "empty", "missing"])
def test_unreadable_source_is_a_media_error_naming_the_track(
    tmp_path: Path, media: dict[str, Path], kind: str
) -> None:
    bad = _corrupt(tmp_path, media, kind) if kind != "missing" else tmp_path / "nowhere.mp4"
    proj = project(track("red", clip(0.0, 1.0)), track("bad", clip(0.0, 1.0)))
    dest = tmp_path / "out.mp4"
    with pytest.raises(errors.MediaError) as caught:
        engine.render(proj, {"red": media["red"], "bad": bad}, SMALL, dest)
    assert "track bad" in caught.value.message
    assert caught.value.track == "t-bad"
    assert caught.value.url == "bad"
    assert not dest.exists()


def test_source_missing_from_the_map_is_a_media_error(
    tmp_path: Path, media: dict[str, Path]
) -> None:
    proj = project(track("red", clip(0.0, 1.0)), track("other", clip(0.0, 1.0)))
    with pytest.raises(errors.MediaError, match="track other"):
        engine.render(proj, {"red": media["red"]}, SMALL, tmp_path / "out.mp4")


def test_empty_project_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidProject):
        engine.render(project(), {}, SMALL, tmp_path / "out.mp4")
