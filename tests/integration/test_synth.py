"""The synthetic media generator writes what it says it writes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from rendermill.cli import synth


def test_video_has_colour_size_duration_tone_and_counter(tmp_path: Path) -> None:
    path = synth.make_video(
        tmp_path / "v.mp4", color=(0, 0, 255), size=(160, 90), duration=1.0, counter=True
    )
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (160, 90)
        assert container.duration == pytest.approx(1_000_000, rel=0.05)
        assert container.streams.audio[0].codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 30
    assert [synth.read_counter(f) for f in frames] == list(range(30))
    top = frames[0][:60].reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(top - (0, 0, 255)) < 12)


def test_alpha_video_is_vp9_with_a_transparent_right_half(tmp_path: Path) -> None:
    path = synth.make_video(tmp_path / "a.webm", alpha=True, duration=0.5, tone_hz=None)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.metadata.get("alpha_mode") == "1"
        assert not container.streams.audio
        decoder = av.CodecContext.create("libvpx-vp9", "r")
        packet = next(container.demux(stream))
        frame = decoder.decode(packet)[0]
    rgba = frame.to_ndarray(format="rgba")
    assert rgba[:, :150, 3].min() > 240
    assert rgba[:, 170:, 3].max() < 16


@pytest.mark.parametrize(
    ("name", "codec", "rate", "layout"),
    [
        ("t.m4a", "aac", 48000, "stereo"),
        ("t.mp3", "mp3float", 44100, "mono"),
        ("t.wav", "pcm_s16le", 48000, "5.1"),
        ("t.ogg", "opus", 48000, "stereo"),
    ],
)
def test_audio_formats(tmp_path: Path, name: str, codec: str, rate: int, layout: str) -> None:
    path = synth.make_audio(tmp_path / name, duration=0.5, rate=rate, layout=layout)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == codec
        assert stream.codec_context.sample_rate == rate
        assert stream.codec_context.layout.name == layout
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    peak = float(np.max(np.abs(samples.astype(np.float64))))
    if codec == "pcm_s16le":
        peak /= 32768
    assert peak == pytest.approx(0.5, rel=0.1)


@pytest.mark.parametrize(("name", "alpha"), [("i.png", None), ("i.png", 128), ("i.jpg", None)])
def test_images(tmp_path: Path, name: str, alpha: int | None) -> None:
    path = synth.make_image(tmp_path / name, color=(0, 255, 0), size=(64, 48), alpha=alpha)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (64, 48)
    rgba = frame.to_ndarray(format="rgba")
    assert abs(float(rgba[..., 1].mean()) - 255) < 6
    assert abs(float(rgba[..., 3].mean()) - (255 if alpha is None else alpha)) < 2


def test_unknown_suffixes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="suffix"):
        synth.make_audio(tmp_path / "t.xyz")
    with pytest.raises(ValueError, match="suffix"):
        synth.make_image(tmp_path / "i.gif")
