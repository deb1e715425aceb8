"""The render engine against synthetic media: every rule is checked on decoded output."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from rendermill.cli import synth
from rendermill.common import errors, schemas
from rendermill.common.project import model
from rendermill.common.testing import clip, project, track
from rendermill.renderer import engine
from rendermill.renderer.engine import compose, encode, probe, video

FPS = 30
SMALL = schemas.OutputSpec(resolution="320x180", fps=FPS)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

Picture = npt.NDArray[np.uint8]


def colour(picture: Picture, x0: int = 0, y0: int = 0, x1: int = 320, y1: int = 180) -> Picture:
    region = picture[y0:y1, x0:x1].reshape(-1, 3)
    return region.mean(axis=0)  # type: ignore[no-any-return]


def near(actual: Picture, expected: tuple[int, int, int], tolerance: float = 16.0) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, np.float64) - expected) <= tolerance))


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., synth.Decoded]:
    def _run(
        proj: model.Project,
        sources: dict[str, Path],
        output: schemas.OutputSpec = SMALL,
        **kwargs: object,
    ) -> synth.Decoded:
        dest = tmp_path / f"out.{output.format}"
        result = engine.render(proj, sources, output, dest, **kwargs)  # type: ignore[arg-type]
        assert result.size_bytes == dest.stat().st_size > 0
        out = synth.Decoded(dest, FPS)
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


def test_cut_between_two_clips(run: Callable[..., synth.Decoded], media: dict[str, Path]) -> None:
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
    run: Callable[..., synth.Decoded], media: dict[str, Path]
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
    run: Callable[..., synth.Decoded], media: dict[str, Path]
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
    run: Callable[..., synth.Decoded], media: dict[str, Path]
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


def test_a_layer_wholly_past_the_canvas_is_not_converted(
    run: Callable[..., synth.Decoded], media: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[tuple[int, ...]] = []
    convert = compose.convert

    def sized(*args: Any, **kwargs: Any) -> compose.Layer:
        layer = convert(*args, **kwargs)
        sizes.append(layer.y.shape)
        return layer

    monkeypatch.setattr(compose, "convert", sized)
    away = model.Coord(400, "px")
    proj = project(
        track("red", clip(0.0, 1.0)),
        track("small_blue", clip(0.0, 1.0, fit=model.Fit.NONE, x=away)),
    )
    out = run(proj, {"red": media["red"], "small_blue": media["small_blue"]})
    assert near(colour(out.at(0.5)), RED)
    # The red clip fills the frame; the blue one (160x90) is never converted.
    assert (90, 160) not in sizes and (180, 320) in sizes


@pytest.mark.parametrize("y", [0, "50%"])
def test_a_layer_past_the_canvas_is_drawn_as_if_scaled_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, y: int | str
) -> None:
    # A portrait clip with the editor's contain (W x W/r) in a landscape frame: 320x568,
    # of which the top 180 rows show (y 0) or the middle ones (y "50%"). Only the source
    # rows they need are scaled; the frames must be those of scaling it whole (within a
    # level's rounding when the part starts past the top, see compose._window). They
    # are compared as handed to the encoder: x264 does not always encode the same
    # pictures into the same bytes in a process that has decoded other media before.
    portrait = synth.make_video(
        tmp_path / "portrait.mp4", size=(90, 160), duration=0.5, moving=True, tone_hz=None
    )
    position = model.Coord(50, "%") if y == "50%" else model.Coord(0, "px")
    proj = project(track("portrait", clip(0.0, 0.5, fit=model.Fit.CONTAIN, y=position)))
    composed = schemas.OutputSpec(resolution="320x180", fps=FPS, copy="never")
    handed: list[list[npt.NDArray[Any]]] = []
    encode_video = encode.Encoder.video
    converted: list[tuple[int, int]] = []
    convert = compose.convert

    def video(self: encode.Encoder, frame: av.VideoFrame, index: int) -> None:
        handed[-1].append(frame.to_ndarray())
        encode_video(self, frame, index)

    def sized(*args: Any, **kwargs: Any) -> compose.Layer:
        layer = convert(*args, **kwargs)
        converted.append(layer.y.shape)
        return layer

    monkeypatch.setattr(encode.Encoder, "video", video)
    monkeypatch.setattr(compose, "convert", sized)
    handed.append([])
    engine.render(proj, {"portrait": portrait}, composed, tmp_path / "cut.mp4")
    # Only a little more than the 180 rows that show was converted, not 568.
    assert 180 <= max(h for h, _ in converted) <= 300
    monkeypatch.setattr(compose, "_WORTH_CUTTING", 1.0)  # never cut
    handed.append([])
    engine.render(proj, {"portrait": portrait}, composed, tmp_path / "whole.mp4")
    assert converted[-1] == (568, 320)
    cut, whole = handed
    assert len(cut) == len(whole) == 15
    for a, b in zip(cut, whole, strict=True):
        diff = np.abs(a.astype(np.int16) - b)
        assert int(diff.max()) <= (0 if y == 0 else 1)
    # And the pictures are the clip's: its moving square moves.
    assert any(not np.array_equal(cut[0], c) for c in cut[1:])


def test_images_png_and_jpeg(run: Callable[..., synth.Decoded], media: dict[str, Path]) -> None:
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


def test_display_rotation_is_applied(run: Callable[..., synth.Decoded], tmp_path: Path) -> None:
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
    run: Callable[..., synth.Decoded], media: dict[str, Path]
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
    run: Callable[..., synth.Decoded], media: dict[str, Path]
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
    run: Callable[..., synth.Decoded], media: dict[str, Path]
) -> None:
    proj = project(track("counter", clip(0.0, 2.0)))
    out = run(proj, {"counter": media["counter"]})
    assert synth.read_counter(out.at(0.5)) == 15
    assert synth.read_counter(out.at(1.0)) == 29
    assert synth.read_counter(out.at(1.9)) == 29
    assert out.rms(0.1, 0.9) > 0.2
    assert out.rms(1.1, 1.9) < 0.01


def test_loop_wraps_picture_and_sound(
    run: Callable[..., synth.Decoded], media: dict[str, Path]
) -> None:
    proj = project(track("counter", clip(0.0, 2.5, loop=True)))
    out = run(proj, {"counter": media["counter"]})
    assert synth.read_counter(out.at(0.9)) == 27
    assert synth.read_counter(out.at(1.0)) == 0
    assert synth.read_counter(out.at(1.5)) == 15
    assert synth.read_counter(out.at(2.2)) == 6
    assert out.rms(1.1, 1.9) > 0.2
    assert out.rms(2.1, 2.4) > 0.2


def test_loop_wraps_a_recording_that_declares_no_duration(
    run: Callable[..., synth.Decoded], tmp_path: Path
) -> None:
    # A WebM written live (as MediaRecorder writes it): no duration, no cues anywhere.
    made = synth.make_video(tmp_path / "made.webm", duration=1.0, counter=True, tone_hz=1000.0)
    live = tmp_path / "live.webm"
    with av.open(str(made)) as src, av.open(str(live), "w", options={"live": "1"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    with av.open(str(live)) as check:
        assert check.duration is None and check.streams.video[0].duration is None
    out = run(project(track("live", clip(0.0, 2.5, loop=True))), {"live": live})
    # The media lasts as long as its longest stream, as a browser's duration says: the
    # sound's last Opus packet ends at 1.001 s, so the picture wraps there.
    assert synth.read_counter(out.at(0.9)) == 27
    assert synth.read_counter(out.at(1.1)) == 2
    assert synth.read_counter(out.at(2.2)) == 5
    assert out.rms(1.1, 1.9) > 0.2


def test_playback_rate_speeds_picture_and_sound(
    run: Callable[..., synth.Decoded], media: dict[str, Path]
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


def test_a_rate_no_browser_plays_shows_its_frames_and_is_silent(
    run: Callable[..., synth.Decoded], media: dict[str, Path]
) -> None:
    # At 1000.5x a looped 1 s clip wraps about 33 times a frame. Each frame still shows
    # the source frame the formula gives; the sound, which would have to be read 1000
    # times over to resample it, is silent, as no browser plays sound that fast.
    proj = project(track("counter", clip(0.0, 0.5, loop=True, playback_rate=1000.5)))
    out = run(proj, {"counter": media["counter"]})
    # Frame k at k/30 s shows source time k/30 * 1000.5 modulo 1 s.
    shown = [synth.read_counter(out.frames[k]) for k in range(1, 7)]
    assert shown == [10, 21, 1, 12, 22, 3]
    assert out.rms(0.0, 0.5) < 0.01


def test_freeze_holds_one_frame_and_is_silent(
    run: Callable[..., synth.Decoded], media: dict[str, Path]
) -> None:
    proj = project(track("counter", clip(0.0, 1.0, freeze=0.5)))
    out = run(proj, {"counter": media["counter"]})
    assert {synth.read_counter(out.at(t)) for t in (0.0, 0.3, 0.9)} == {15}
    assert out.rms(0.0, 1.0) < 0.01


def test_later_start_wins_on_one_track(
    run: Callable[..., synth.Decoded], media: dict[str, Path]
) -> None:
    proj = project(
        track("counter", clip(0.0, 1.0), clip(0.3, 0.6, trim_start=0.0)),
    )
    out = run(proj, {"counter": media["counter"]})
    assert synth.read_counter(out.at(0.2)) == 6
    assert synth.read_counter(out.at(0.4)) == 3
    # The first action shows again where the second ends, at its own source time.
    assert synth.read_counter(out.at(0.8)) == 24


def test_hidden_track_has_no_picture_and_no_sound(
    run: Callable[..., synth.Decoded], media: dict[str, Path]
) -> None:
    proj = project(
        track("blue", clip(0.0, 1.0)),
        track("red", clip(0.0, 1.0), hidden=True),
    )
    out = run(proj, {"red": media["red"], "blue": media["blue"]})
    assert near(colour(out.at(0.5)), BLUE)
    assert out.rms(0.0, 1.0) < 0.01


def test_muted_track_shows_but_is_silent(
    run: Callable[..., synth.Decoded], media: dict[str, Path]
) -> None:
    proj = project(track("red", clip(0.0, 1.0), muted=True))
    out = run(proj, {"red": media["red"]})
    assert near(colour(out.at(0.5)), RED)
    assert out.rms(0.0, 1.0) < 0.01


def test_volume_steps_follow_the_clock(
    run: Callable[..., synth.Decoded], media: dict[str, Path]
) -> None:
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
    run: Callable[..., synth.Decoded], media: dict[str, Path]
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
    run: Callable[..., synth.Decoded], media: dict[str, Path]
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
    run: Callable[..., synth.Decoded], media: dict[str, Path], fmt: schemas.OutputFormat
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


def test_a_damaged_picture_that_shows_is_a_media_error_naming_its_time(
    tmp_path: Path, media: dict[str, Path]
) -> None:
    source = synth.make_video(tmp_path / "clip.mp4", moving=True, duration=2.0, tone_hz=None)
    bad = synth.damage_picture(source, tmp_path / "damaged.mp4", 20)
    # Composed, not stream-copied: every picture shown is decoded.
    composed = schemas.OutputSpec(resolution="320x180", fps=FPS, copy="never")
    dest = tmp_path / "out.mp4"
    with pytest.raises(errors.MediaError) as caught:
        engine.render(project(track("bad", clip(0.0, 1.0))), {"bad": bad}, composed, dest)
    assert "track bad" in caught.value.message
    assert "its picture at 0.667 s is damaged" in caught.value.message
    assert caught.value.track == "t-bad"
    assert not dest.exists()
    # The pictures predicted from it carry the damage, unmarked by the decoder, up to
    # the next keyframe (synth writes one a second).
    after = project(track("bad", clip(0.0, 0.3, trim_start=0.7)))
    with pytest.raises(errors.MediaError, match=r"its picture at 0\.667 s is damaged"):
        engine.render(after, {"bad": bad}, composed, dest)
    # Damage where the timeline does not look is no error: before it, or from the
    # keyframe after it.
    for shown in (clip(0.0, 0.5), clip(0.0, 0.5, trim_start=1.0)):
        engine.render(project(track("bad", shown)), {"bad": bad}, composed, dest)
        assert dest.exists()


def test_a_video_larger_than_can_be_drawn_is_refused_and_no_decoder_allocates_one(
    tmp_path: Path, media: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound is 8192x8192; making a video that large would take the test minutes, so
    # the bound is lowered to just under the 320x180 test clip instead.
    proj = project(track("red", clip(0.0, 1.0)))
    composed = schemas.OutputSpec(resolution="320x180", fps=FPS, copy="never")
    monkeypatch.setattr(probe, "MAX_PIXELS", 320 * 180 - 1)
    with pytest.raises(errors.MediaError) as caught:
        engine.render(proj, {"red": media["red"]}, composed, tmp_path / "out.mp4")
    assert "is a video of 320x180 pixels" in caught.value.message
    assert "export it at a smaller size" in caught.value.message
    assert caught.value.track == "t-red"
    # A file whose header understates its pictures gets past the check; the decoders
    # then refuse a picture over the bound before allocating it.
    monkeypatch.setattr(probe, "MAX_PIXELS", 320 * 180)
    source = probe.Source(track=proj.tracks[0], path=media["red"])
    info = probe.probe(source, picture=True, sound=False)
    monkeypatch.setattr(probe, "MAX_PIXELS", 320 * 180 - 1)
    with pytest.raises(errors.MediaError, match="is corrupt: decoding failed"):
        video.VideoReader(info, 2).frame_at(0.0)


def test_source_missing_from_the_map_is_a_media_error(
    tmp_path: Path, media: dict[str, Path]
) -> None:
    proj = project(track("red", clip(0.0, 1.0)), track("other", clip(0.0, 1.0)))
    with pytest.raises(errors.MediaError, match="track other"):
        engine.render(proj, {"red": media["red"]}, SMALL, tmp_path / "out.mp4")


def test_empty_project_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidProject):
        engine.render(project(), {}, SMALL, tmp_path / "out.mp4")


# synth.Decoded options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quality", "crf", "subme"),
    [
        ("draft", b"crf=28.0", b"subme=1"),
        ("standard", b"crf=23.0", b"subme=2"),
        ("high", b"crf=18.0", b"subme=7"),
    ],
)
def test_quality_presets_pick_x264_effort(
    run: Callable[..., synth.Decoded],
    media: dict[str, Path],
    quality: schemas.Quality,
    crf: bytes,
    subme: bytes,
) -> None:
    # copy="never": a lone full-frame clip would otherwise be stream-copied, not encoded.
    output = schemas.OutputSpec(resolution="320x180", fps=FPS, quality=quality, copy="never")
    out = run(project(track("red", clip(0.0, 0.2))), {"red": media["red"]}, output)
    # x264 writes its settings into the stream; superfast, veryfast and medium differ in
    # their subpixel refinement level.
    data = out.path.read_bytes()
    assert crf in data
    assert subme + b" " in data


@pytest.mark.parametrize(("cpus", "x264_threads"), [(1, 1), (3, 4)])
def test_the_encoder_runs_the_threads_of_the_cpus_given(
    tmp_path: Path, media: dict[str, Path], cpus: int, x264_threads: int
) -> None:
    # Not x264's own count of this machine's cores: the render's.
    output = schemas.OutputSpec(resolution="320x180", fps=FPS, copy="never")
    dest = tmp_path / "out.mp4"
    proj = project(track("red", clip(0.0, 0.2)))
    engine.render(proj, {"red": media["red"]}, output, dest, threads=engine.Threads(cpus))
    found = re.search(rb"(?<![a-z_])threads=(\d+) ", dest.read_bytes())
    assert found is not None and int(found.group(1)) == x264_threads


def test_quality_presets_trade_size_for_quality_in_webm(tmp_path: Path) -> None:
    busy = synth.make_video(tmp_path / "busy.mp4", size=(160, 90), duration=0.4, moving=True)
    sizes = {}
    for quality in ("draft", "standard", "high"):
        output = schemas.OutputSpec(format="webm", resolution="160x90", fps=FPS, quality=quality)
        dest = tmp_path / f"{quality}.webm"
        engine.render(
            model.Project(width=160, height=90, tracks=(track("busy", clip(0.0, 0.4)),)),
            {"busy": busy},
            output,
            dest,
        )
        sizes[quality] = dest.stat().st_size
        assert len(synth.Decoded(dest, FPS).frames) == 12
    assert sizes["draft"] < sizes["standard"] < sizes["high"]


def test_high_quality_gif_keeps_colours_the_fixed_palette_cannot(
    run: Callable[..., synth.Decoded], tmp_path: Path
) -> None:
    # (200, 40, 90) is not in the 3-3-2 palette: standard dithers it, high finds it.
    rose = synth.make_video(tmp_path / "rose.mp4", color=(200, 40, 90), duration=0.2, tone_hz=None)
    spread = {}
    for quality in ("standard", "high"):
        output = schemas.OutputSpec(format="gif", resolution="320x180", fps=FPS, quality=quality)
        out = run(project(track("rose", clip(0.0, 0.2))), {"rose": rose}, output)
        region = out.at(0.1)[20:160, 20:300].reshape(-1, 3).astype(np.float64)
        assert near(region.mean(axis=0), (200, 40, 90), 12)
        spread[quality] = float(region.std(axis=0).max())
    assert spread["standard"] > 10
    assert spread["high"] < 3


def _decode_jpeg(path: Path) -> Picture:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)


@pytest.mark.parametrize(("poster", "count"), [(0.5, 15), (0.0, 0), (0.99, 29), (60.0, 29)])
def test_poster_is_the_frame_at_its_time_beside_the_output(
    run: Callable[..., synth.Decoded], media: dict[str, Path], poster: float, count: int
) -> None:
    output = schemas.OutputSpec(resolution="320x180", fps=FPS, poster=poster)
    out = run(project(track("counter", clip(0.0, 1.0))), {"counter": media["counter"]}, output)
    jpeg = out.path.with_suffix(".jpg")
    assert jpeg.read_bytes()[:2] == b"\xff\xd8"
    picture = _decode_jpeg(jpeg)
    assert picture.shape == (180, 320, 3)
    assert synth.read_counter(picture) == count
    # Same colours as the video frame (both from the same BT.709 picture).
    assert near(colour(picture, 0, 0, 320, 120), WHITE, 6)


def test_no_poster_unless_asked_and_none_left_after_a_failure(
    tmp_path: Path, media: dict[str, Path]
) -> None:
    dest = tmp_path / "out.mp4"
    engine.render(project(track("red", clip(0.0, 0.2))), {"red": media["red"]}, SMALL, dest)
    assert not dest.with_suffix(".jpg").exists()

    def stop(done: int, total: int) -> None:
        if done == 5:
            raise RuntimeError("cancelled")

    output = schemas.OutputSpec(resolution="320x180", fps=FPS, poster=0.0)
    with pytest.raises(RuntimeError):
        engine.render(
            project(track("red", clip(0.0, 0.5))),
            {"red": media["red"]},
            output,
            dest,
            on_progress=stop,
        )
    assert not dest.exists()
    assert not dest.with_suffix(".jpg").exists()


@pytest.mark.parametrize(
    ("clock", "video_step_at", "audio_step_at"),
    [("editor", 1.0, 0.5), ("timeline", 1.0, 1.0), ("source", 0.5, 0.5)],
)
def test_volume_clock_option(
    run: Callable[..., synth.Decoded],
    media: dict[str, Path],
    clock: schemas.VolumeClock,
    video_step_at: float,
    audio_step_at: float,
) -> None:
    # Both actions start at 0 with trimStart 0.5: a step at clock 1.0 is at t = 1.0 on
    # the timeline clock and at t = 0.5 on the source clock.
    steps = (model.VolumeStep(1.0, None, 1.0), model.VolumeStep(0.0, 1.0, None))
    output = schemas.OutputSpec(resolution="320x180", fps=FPS, volume_clock=clock)
    full = 0.5 / np.sqrt(2)
    for tr, step_at in (
        (track("red", clip(0.0, 1.5, trim_start=0.5, volume=steps)), video_step_at),
        (
            track(
                "tone",
                clip(0.0, 1.5, trim_start=0.5, volume=steps),
                controller=model.Controller.AUDIO,
            ),
            audio_step_at,
        ),
    ):
        out = run(project(tr), {tr.url: media[tr.url]}, output)
        assert out.rms(0.05, step_at - 0.05) == pytest.approx(full, rel=0.1)
        assert out.rms(step_at + 0.05, 1.45) < 0.01
    # The keyword argument overrides the output option.
    tr = track("red", clip(0.0, 1.5, trim_start=0.5, volume=steps))
    out = run(project(tr), {"red": media["red"]}, output, volume_clock="source")
    assert out.rms(0.55, 1.45) < 0.01


# Effects: CSS blend modes on 0..1 RGB, source over an opaque backdrop.
_BASE = (200, 120, 40)
_TOP = (60, 140, 220)


def _css_blend(mode: str, cb: float, cs: float) -> float:
    if mode == "multiply":
        return cb * cs
    if mode == "screen":
        return cb + cs - cb * cs
    if mode == "overlay":
        return cs * 2 * cb if cb <= 0.5 else 1 - (1 - cs) * (1 - (2 * cb - 1))
    if mode == "darken":
        return min(cb, cs)
    if mode == "lighten":
        return max(cb, cs)
    if mode == "difference":
        return abs(cb - cs)
    if mode in ("plus-lighter", "add"):
        return min(1.0, cb + cs)
    return cs


# The non-separable modes, written out from the spec for one colour.
RGB = tuple[float, float, float]


def _lum(c: RGB) -> float:
    return 0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2]


def _clip_color(c: RGB) -> RGB:
    lum, low, high = _lum(c), min(c), max(c)
    out = list(c)
    if low < 0:
        out = [lum + (x - lum) * lum / (lum - low) for x in out]
    if high > 1:
        out = [lum + (x - lum) * (1 - lum) / (high - lum) for x in out]
    return (out[0], out[1], out[2])


def _set_lum(c: RGB, lum: float) -> RGB:
    d = lum - _lum(c)
    return _clip_color((c[0] + d, c[1] + d, c[2] + d))


def _set_sat(c: RGB, sat: float) -> RGB:
    order = sorted(range(3), key=lambda i: c[i])
    lo, mid, hi = order
    out = [0.0, 0.0, 0.0]
    if c[hi] > c[lo]:
        out[mid] = (c[mid] - c[lo]) * sat / (c[hi] - c[lo])
        out[hi] = sat
    return (out[0], out[1], out[2])


def _css_blend_rgb(mode: str, cb: RGB, cs: RGB) -> RGB:
    sat = max(cb) - min(cb), max(cs) - min(cs)
    if mode == "hue":
        return _set_lum(_set_sat(cs, sat[0]), _lum(cb))
    if mode == "saturation":
        return _set_lum(_set_sat(cb, sat[1]), _lum(cb))
    if mode == "color":
        return _set_lum(cs, _lum(cb))
    if mode == "luminosity":
        return _set_lum(cb, _lum(cs))
    mixed = [_css_blend(mode, b, s) for b, s in zip(cb, cs, strict=True)]
    return (mixed[0], mixed[1], mixed[2])


def _expected(mode: str, opacity: float) -> tuple[int, int, int]:
    cb = (_BASE[0] / 255, _BASE[1] / 255, _BASE[2] / 255)
    cs = (_TOP[0] / 255, _TOP[1] / 255, _TOP[2] / 255)
    mixed = _css_blend_rgb(mode, cb, cs)
    out = [round(255 * (b + (m - b) * opacity)) for b, m in zip(cb, mixed, strict=True)]
    return (out[0], out[1], out[2])


_EFFECT_CASES = [
    ("normal", 0.5),
    ("multiply", 1.0),
    ("screen", 1.0),
    ("overlay", 1.0),
    ("darken", 1.0),
    ("lighten", 1.0),
    ("difference", 1.0),
    ("plus-lighter", 1.0),
    ("add", 0.5),
    ("multiply", 0.5),
    ("hue", 1.0),
    ("saturation", 1.0),
    ("color", 1.0),
    ("luminosity", 1.0),
    ("color", 0.5),
    ("no-such-mode", 0.0),
]


def _effect_actions(cases: list[tuple[str, float]]) -> list[model.Action]:
    """One 0.1 s action per (blend mode, opacity), drawn at its size at (80, 40)."""
    return [
        clip(
            k * 0.1,
            (k + 1) * 0.1,
            fit=model.Fit.NONE,
            x=model.Coord(80),
            y=model.Coord(40),
            blend_mode=mode,
            opacity=opacity,
        )
        for k, (mode, opacity) in enumerate(cases)
    ]


def test_effects_apply_opacity_and_blend_modes(
    run: Callable[..., synth.Decoded], tmp_path: Path
) -> None:
    base = synth.make_video(tmp_path / "base.mp4", color=_BASE, duration=0.2, tone_hz=None)
    top = synth.make_image(tmp_path / "top.png", color=_TOP, size=(160, 90))
    actions = _effect_actions(_EFFECT_CASES)
    end = len(_EFFECT_CASES) * 0.1
    proj = project(
        track("base", clip(0.0, end, loop=True)),
        track("top", *actions, controller=model.Controller.IMAGE),
    )
    sources = {"base": base, "top": top}
    on = run(proj, sources, schemas.OutputSpec(resolution="320x180", fps=FPS, effects=True))
    off = run(proj, sources, SMALL)
    for k, (mode, opacity) in enumerate(_EFFECT_CASES):
        t = k * 0.1 + 0.05
        inside = (90, 50, 230, 120)
        # Unknown modes fall back to normal.
        expected = _expected("normal" if mode == "no-such-mode" else mode, opacity)
        assert near(colour(on.at(t), *inside), expected, 6), (mode, opacity)
        assert near(colour(on.at(t), 0, 0, 70, 180), _BASE, 6)
        assert near(colour(off.at(t), *inside), _TOP, 6), (mode, opacity)


def test_non_separable_blend_modes_trade_hue_saturation_and_luminosity(
    run: Callable[..., synth.Decoded], tmp_path: Path
) -> None:
    # A saturated dark red backdrop under a paler, lighter blue: each mode gives a colour
    # that is neither of the two.
    base_rgb, top_rgb = (230, 40, 40), (100, 150, 200)
    modes = ("hue", "saturation", "color", "luminosity")
    base = synth.make_video(tmp_path / "base.mp4", color=base_rgb, duration=0.2, tone_hz=None)
    top = synth.make_image(tmp_path / "top.png", color=top_rgb, size=(160, 90))
    actions = _effect_actions([(mode, 1.0) for mode in modes])
    proj = project(
        track("base", clip(0.0, 0.4, loop=True)),
        track("top", *actions, controller=model.Controller.IMAGE),
    )
    out = run(
        proj,
        {"base": base, "top": top},
        schemas.OutputSpec(resolution="320x180", fps=FPS, effects=True),
    )
    cb = (base_rgb[0] / 255, base_rgb[1] / 255, base_rgb[2] / 255)
    cs = (top_rgb[0] / 255, top_rgb[1] / 255, top_rgb[2] / 255)
    for k, mode in enumerate(modes):
        mixed = _css_blend_rgb(mode, cb, cs)
        expected = (round(255 * mixed[0]), round(255 * mixed[1]), round(255 * mixed[2]))
        assert max(abs(e - b) for e, b in zip(expected, base_rgb, strict=True)) > 25, mode
        assert max(abs(e - t) for e, t in zip(expected, top_rgb, strict=True)) > 25, mode
        assert near(colour(out.at(k * 0.1 + 0.05), 90, 50, 230, 120), expected, 6), mode


def test_effects_combine_opacity_with_source_alpha(
    run: Callable[..., synth.Decoded], media: dict[str, Path]
) -> None:
    proj = project(
        track("red", clip(0.0, 0.2)),
        track(
            "half_green_png",
            clip(0.0, 0.1, opacity=0.5),
            clip(0.1, 0.2, blend_mode="screen", opacity=0.5),
            controller=model.Controller.IMAGE,
        ),
    )
    sources = {k: media[k] for k in ("red", "half_green_png")}
    out = run(proj, sources, schemas.OutputSpec(resolution="320x180", fps=FPS, effects=True))
    # Alpha 128 x opacity 0.5: a quarter green over red.
    assert near(colour(out.at(0.05)), (191, 64, 0), 8)
    # Screen of green over red is yellow; a quarter of the way there.
    assert near(colour(out.at(0.15)), (255, 64, 0), 8)


# Sources ------------------------------------------------------------------------------


def _encoder_available(name: str) -> bool:
    try:
        av.Codec(name, "w")
    except av.FFmpegError:
        return False
    return True


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("h264.mov", "libx264"),
        ("h264.mkv", "libx264"),
        ("hevc.mp4", "libx265"),
        ("vp8.webm", "libvpx"),
        ("vp9.webm", "libvpx-vp9"),
        ("av1.mp4", "libsvtav1"),
    ],
)
def test_codecs_and_containers(
    run: Callable[..., synth.Decoded], tmp_path: Path, name: str, codec: str
) -> None:
    if not _encoder_available(codec):
        pytest.skip(f"this PyAV build cannot encode {codec}, so there is no source to decode")
    source = synth.make_video(
        tmp_path / name, codec=codec, color=BLUE, duration=1.0, counter=True, tone_hz=1000.0
    )
    out = run(project(track("clip", clip(0.0, 0.6, trim_start=0.3))), {"clip": source})
    assert [synth.read_counter(out.at(t)) for t in (0.0, 0.2, 0.5)] == [9, 15, 24]
    assert near(colour(out.at(0.1), 0, 0, 320, 120), BLUE, 24)
    assert out.rms(0.05, 0.55) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_variable_frame_rate_source_shows_each_frame_at_its_time(
    run: Callable[..., synth.Decoded], tmp_path: Path
) -> None:
    times = [0.0, 0.05, 0.3, 0.31, 0.5, 0.9, 1.0, 1.4]
    vfr = synth.make_video(tmp_path / "vfr.mp4", frame_times=times, counter=True, tone_hz=None)
    out = run(project(track("vfr", clip(0.0, 1.6))), {"vfr": vfr})
    for i, picture in enumerate(out.frames):
        t = i / FPS
        shown = max(k for k, start in enumerate(times) if start <= t + 1e-6)
        assert synth.read_counter(picture) == shown, t


def test_odd_sized_source(run: Callable[..., synth.Decoded], tmp_path: Path) -> None:
    odd = synth.make_video(
        tmp_path / "odd.webm", size=(321, 181), color=BLUE, counter=True, tone_hz=None
    )
    proj = project(track("odd", clip(0.0, 0.5, x=model.Coord(-1), y=model.Coord(-1))))
    out = run(proj, {"odd": odd})
    picture = out.at(0.3)
    assert synth.read_counter(picture) == 9
    assert near(colour(picture, 0, 0, 320, 120), BLUE, 16)


@pytest.mark.parametrize("rotation", [180, 270])
def test_other_display_rotations(
    run: Callable[..., synth.Decoded], tmp_path: Path, rotation: int
) -> None:
    rotated = synth.make_video(
        tmp_path / "rotated.mp4", color=BLUE, size=(160, 90), counter=True, rotation=rotation
    )
    proj = project(track("rotated", clip(0.0, 0.2)), background_color="white")
    picture = run(proj, {"rotated": rotated}).at(0.0)
    if rotation == 180:
        # Upside down: the (black at frame 0) counter band is along the top.
        assert near(colour(picture, 4, 2, 156, 20), (0, 0, 0))
        assert near(colour(picture, 4, 28, 156, 88), BLUE)
        assert near(colour(picture, 164, 0, 320, 180), WHITE)
    else:
        # A quarter turn clockwise: 90x160 with the band on the left.
        assert near(colour(picture, 2, 4, 18, 156), (0, 0, 0))
        assert near(colour(picture, 28, 4, 86, 156), BLUE)
        assert near(colour(picture, 96, 0, 320, 180), WHITE)


@pytest.mark.parametrize(
    ("rate", "layout", "suffix"),
    [(22050, "mono", ".m4a"), (44100, "stereo", ".m4a"), (22050, "stereo", ".mp3")],
)
def test_sample_rates_and_layouts(
    run: Callable[..., synth.Decoded], tmp_path: Path, rate: int, layout: str, suffix: str
) -> None:
    tone = synth.make_audio(
        tmp_path / f"tone{suffix}",
        tone_hz=1000.0,
        duration=0.6,
        rate=rate,
        layout=layout,
        amplitude=0.4,
    )
    proj = project(
        track("blue", clip(0.0, 1.0)),
        track("tone", clip(0.2, 1.0), controller=model.Controller.AUDIO),
    )
    out = run(proj, {"blue": synth_blue(tmp_path), "tone": tone})
    assert out.rms(0.0, 0.18) < 0.01
    # Sounds for its 0.6 s from t = 0.2 at full level on both sides, then stops.
    for channel in (0, 1):
        window = out.audio[channel, round(0.3 * 48000) : round(0.7 * 48000)].astype(np.float64)
        assert float(np.sqrt(np.mean(window**2))) == pytest.approx(0.4 / np.sqrt(2), rel=0.1)
        spectrum = np.abs(np.fft.rfft(window))
        peak = np.fft.rfftfreq(len(window), 1 / 48000)[np.argmax(spectrum)]
        assert peak == pytest.approx(1000, abs=5)
    assert out.rms(0.85, 1.0) < 0.01


def synth_blue(directory: Path) -> Path:
    path = directory / "blue-silent.mp4"
    if not path.exists():
        synth.make_video(path, color=BLUE, duration=1.0, tone_hz=None)
    return path


@pytest.mark.parametrize(
    ("name", "lossless", "alpha"),
    [("still.webp", False, None), ("alpha.webp", True, 128)],
)
def test_webp_images(
    run: Callable[..., synth.Decoded],
    media: dict[str, Path],
    tmp_path: Path,
    name: str,
    lossless: bool,
    alpha: int | None,
) -> None:
    image = synth.make_image(
        tmp_path / name, color=GREEN, size=(160, 90), alpha=alpha, lossless=lossless
    )
    proj = project(
        track("red", clip(0.0, 0.2)),
        track(
            "image",
            clip(0.0, 0.2, x=model.Coord(40), y=model.Coord(20)),
            controller=model.Controller.IMAGE,
        ),
    )
    picture = run(proj, {"red": media["red"], "image": image}).at(0.1)
    expected = GREEN if alpha is None else (127, 128, 0)
    assert near(colour(picture, 44, 24, 196, 106), expected, 16)
    assert near(colour(picture, 210, 0, 320, 180), RED)


# Where the marked top-left quarter of a stored 160x80 picture shows, for each EXIF
# orientation, as (x0, y0, x1, y1) in the displayed picture (from the EXIF definitions
# of where the stored 0th row and 0th column go).
_EXIF_CORNER = {
    1: (0, 0, 80, 40),
    2: (80, 0, 160, 40),
    3: (80, 40, 160, 80),
    4: (0, 40, 80, 80),
    5: (0, 0, 40, 80),
    6: (40, 0, 80, 80),
    7: (40, 80, 80, 160),
    8: (0, 80, 40, 160),
}


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_jpeg_exif_orientation(
    run: Callable[..., synth.Decoded], tmp_path: Path, orientation: int
) -> None:
    image = synth.make_image(
        tmp_path / "photo.jpg",
        color=GREEN,
        corner=RED,
        size=(160, 80),
        exif_orientation=orientation,
    )
    proj = project(track("photo", clip(0.0, 0.1), controller=model.Controller.IMAGE))
    picture = run(proj, {"photo": image}).at(0.0)
    shown_width, shown_height = (160, 80) if orientation <= 4 else (80, 160)
    x0, y0, x1, y1 = _EXIF_CORNER[orientation]
    assert near(colour(picture, x0 + 4, y0 + 4, x1 - 4, y1 - 4), RED, 24)
    mark = np.zeros((shown_height, shown_width), bool)
    mark[y0:y1, x0:x1] = True
    rest = picture[:shown_height, :shown_width][~mark].reshape(-1, 3).mean(axis=0)
    assert near(rest, GREEN, 40)
    assert near(colour(picture, shown_width + 4, 0, 320, 180), (0, 0, 0), 8)


# Colour -------------------------------------------------------------------------------

ROSE = (200, 40, 90)


def test_output_is_tagged_bt709_limited_range(
    run: Callable[..., synth.Decoded], media: dict[str, Path]
) -> None:
    for fmt in ("mp4", "webm"):
        # Encoded output (a stream copy keeps the source's own tags).
        output = schemas.OutputSpec(format=fmt, resolution="320x180", fps=FPS, copy="never")
        out = run(project(track("red", clip(0.0, 0.1))), {"red": media["red"]}, output)
        with av.open(str(out.path)) as container:
            ctx = container.streams.video[0].codec_context
            tags = (ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range)
        # AVCOL_SPC_BT709, AVCOL_PRI_BT709, AVCOL_TRC_BT709, AVCOL_RANGE_MPEG.
        assert tags == (1, 1, 1, 1), fmt


def test_every_source_matrix_and_range_comes_out_the_same_colour(
    run: Callable[..., synth.Decoded], tmp_path: Path
) -> None:
    # The same RGB colour written in every way a source can carry it must render as that
    # colour once the output is decoded with its own (BT.709) tags.
    def video(
        name: str, size: tuple[int, int], matrix: synth.Matrix | None = None, tagged: bool = True
    ) -> Path:
        return synth.make_video(
            tmp_path / name,
            color=ROSE,
            size=size,
            duration=0.1,
            tone_hz=None,
            matrix=matrix,
            tagged=tagged,
        )

    sd, hd = (320, 180), (1280, 720)
    sources = {
        "sd-601-tagged": video("a.mp4", sd),
        "sd-709-tagged": video("b.mp4", sd, matrix="bt709"),
        "sd-untagged": video("c.mp4", sd, tagged=False),
        "hd-709-tagged": video("d.mp4", hd),
        "hd-601-tagged": video("e.mp4", hd, matrix="bt601"),
        "hd-untagged": video("f.mp4", hd, tagged=False),
        "vp9-untagged": video("g.webm", sd, tagged=False),
        "png": synth.make_image(tmp_path / "h.png", color=ROSE, size=sd),
        "jpeg": synth.make_image(tmp_path / "i.jpg", color=ROSE, size=sd),
        "webp-lossy": synth.make_image(tmp_path / "j.webp", color=ROSE, size=sd, lossless=False),
        "webp-lossless": synth.make_image(tmp_path / "k.webp", color=ROSE, size=sd),
        # Stored in Display P3 with its ICC profile, as macOS screenshots and iPhone
        # photos are: read as sRGB they would be 18 levels off.
        "png-p3": synth.make_image(tmp_path / "l.png", color=ROSE, size=sd, display_p3=True),
        "jpeg-p3": synth.make_image(tmp_path / "m.jpg", color=ROSE, size=sd, display_p3=True),
    }
    still = (".png", ".jpg", ".webp")
    tracks = [
        track(
            name,
            clip(k * 0.1, (k + 1) * 0.1, fit=model.Fit.FILL),
            controller=model.Controller.IMAGE if path.suffix in still else model.Controller.VIDEO,
        )
        for k, (name, path) in enumerate(sources.items())
    ]
    output = schemas.OutputSpec(resolution="320x180", fps=FPS, poster=0.05)
    out = run(project(*tracks), sources, output)
    for k, name in enumerate(sources):
        assert near(colour(out.at(k * 0.1 + 0.05), 20, 20, 300, 160), ROSE, 5), name
    # The poster (full-range BT.601, as JPEG is) shows the same colour.
    assert near(colour(_decode_jpeg(out.path.with_suffix(".jpg"))), ROSE, 5)


def test_hdr_and_wide_gamut_sources_are_mapped_into_bt709_sdr(
    run: Callable[..., synth.Decoded], tmp_path: Path
) -> None:
    # Phones record HDR (HLG, PQ) in BT.2020 primaries, screen recordings come in P3.
    # Each source carries these BT.709 colours in its own light, the way BT.2408 maps SDR
    # into HDR (SDR white at HDR reference white): mapped back they are the same colours.
    # Read as if they were BT.709 they are 40 to 110 levels off (HDR white shows as grey).
    colours = [(128, 128, 128), WHITE, ROSE, (51, 178, 76), (51, 76, 204)]
    lights: list[synth.Light] = ["hlg", "pq", "bt2020", "p3"]
    sources: dict[str, Path] = {
        light: synth.make_wide_video(tmp_path / f"{light}.mp4", colours, light) for light in lights
    }
    # Larger than it is shown: scaled down before its colour is mapped.
    sources["hlg-large"] = synth.make_wide_video(
        tmp_path / "large.mp4", colours, "hlg", size=(640, 360)
    )
    tracks = [
        track(name, clip(k * 0.1, (k + 1) * 0.1, fit=model.Fit.FILL))
        for k, name in enumerate(sources)
    ]
    for name, path in sources.items():
        source = probe.Source(track=track(name, clip(0.0, 0.1)), path=path)
        media = probe.probe(source, picture=True, sound=False)
        assert media.video is not None and media.video.light == name.split("-")[0]
    out = run(project(*tracks), sources)
    stripe = 320 // len(colours)
    for k, name in enumerate(sources):
        picture = out.at(k * 0.1 + 0.05)
        for i, expected in enumerate(colours):
            shown = colour(picture, i * stripe + 8, 20, (i + 1) * stripe - 8, 160)
            assert near(shown, expected, 12), (name, expected, shown)


def test_a_portrait_phone_hdr_video_is_turned_scaled_and_mapped(
    run: Callable[..., synth.Decoded], tmp_path: Path
) -> None:
    # Recorded with a quarter turn, as a phone held upright records: turned a quarter
    # counterclockwise, the stripes, left to right in the coded picture, show as bands
    # from bottom to top.
    colours = [(128, 128, 128), WHITE, ROSE, (51, 178, 76), (51, 76, 204)]
    path = synth.make_wide_video(
        tmp_path / "portrait.mp4", colours, "hlg", size=(640, 360), rotation=90
    )
    proj = project(track("portrait", clip(0.0, 0.1, fit=model.Fit.FILL)))
    picture = run(proj, {"portrait": path}).at(0.05)
    band = 180 // len(colours)
    for i, expected in enumerate(reversed(colours)):
        shown = colour(picture, 20, i * band + 6, 300, (i + 1) * band - 6)
        assert near(shown, expected, 12), (expected, shown)
