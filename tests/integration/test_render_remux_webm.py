"""The stream-copy path for WebM: VP9 sources cut into a WebM output, packets copied,
the frames between a mid-GOP cut and the next keyframe re-encoded with libvpx-vp9."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import numpy.typing as npt
import pytest

from rendermill.cli import synth
from rendermill.common import schemas
from rendermill.common.project import model
from rendermill.common.testing import clip, project, track
from rendermill.renderer import engine
from rendermill.renderer.engine import audio, probe, remux, remux_opus, remux_source

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
    # Each clip's tone on its side of a join.
    assert_tones_switch(tmp_path / "out.webm", [(1.3, 440.0, 1000.0), (2.5, 1000.0, 440.0)])


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


# The sound: Opus packets copied, re-encoded only around the joins.

RATE = 48000
# Half an Opus packet: the most a copied segment's sound may sit off its exact place.
HALF_PACKET = remux_opus.FRAME // 2
CUTS = project(
    track("na", clip(0.0, 1.3, trim_start=0.41), clip(2.5, 3.2, trim_start=2.11)),
    track("nb", clip(1.3, 2.5, trim_start=0.77)),
)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("remux-webm-sound")
    # Tones to tell the clips apart, noise to tell one moment from another.
    return {
        "na": synth.make_video(d / "na.webm", duration=3.0, tone_hz=440.0, noise=0.05),
        "nb": synth.make_video(
            d / "nb.webm", color=(0, 0, 255), duration=3.0, tone_hz=1000.0, noise=0.05
        ),
        "mono": synth.make_video(d / "mono.webm", duration=3.0, audio_layout="mono"),
        "music": synth.make_audio(d / "music.webm", tone_hz=660.0, duration=4.0),
    }


def lag(out: npt.NDArray[np.float64], ref: npt.NDArray[np.float64], at: int) -> int:
    """How many samples ``out`` runs ahead of ``ref`` around sample ``at``."""
    return synth.lag(out, ref, at, HALF_PACKET + 64)


def assert_tones_switch(path: Path, joins: list[tuple[float, float, float]]) -> None:
    """Each clip's tone right up to its join and right after it: (join, before, after)."""
    out = synth.Decoded(path, FPS)
    for join, before, after in joins:
        assert out.level_at(before, join - 0.2, join - 0.02) > 5 * out.level_at(
            after, join - 0.2, join - 0.02
        )
        assert out.level_at(after, join + 0.02, join + 0.2) > 5 * out.level_at(
            before, join + 0.02, join + 0.2
        )


def test_opus_sound_is_copied_in_sync_and_clean_at_every_join(
    noisy: dict[str, Path], tmp_path: Path
) -> None:
    result = remux.try_remux(CUTS, noisy, WEBM, tmp_path / "copy.webm")
    assert result is not None and result.copied and result.sound_copied
    out, out_packets, complaints = synth.decoded_sound(tmp_path / "copy.webm")
    assert complaints == []

    # Most packets are the sources' own, byte for byte.
    source_packets = {p for name in ("na", "nb") for p in synth.decoded_sound(noisy[name])[1]}
    copied = sum(p in source_packets for p in out_packets)
    assert copied >= 0.75 * len(out_packets), (copied, len(out_packets))

    # The compose path's sound, segment by segment: each within half a packet of its
    # exact place, the same all along the segment, and the same signal in it. Where
    # re-encoded and copied packets meet (a packet or two from a join) the decoder's
    # state differs from the source's for a few packets: up to -12 dB there, under
    # -20 dB from 100 ms after a join to 10 ms before the next.
    engine.render(CUTS, noisy, NEVER, tmp_path / "composed.webm")
    ref, _, _ = synth.decoded_sound(tmp_path / "composed.webm")
    assert abs(len(out) - len(ref)) <= remux_opus.FRAME
    joins = [0, round(1.3 * RATE), round(2.5 * RATE), round(3.2 * RATE)]
    for lo, hi in itertools.pairwise(joins):
        shifts = {lag(out, ref, at) for at in (lo + 4800, (lo + hi) // 2, hi - 6000)}
        assert len(shifts) == 1, shifts
        shift = shifts.pop()
        assert abs(shift) <= HALF_PACKET
        for at, db in synth.window_errors(out, ref, shift, lo + 480, hi - 480):
            near = at < lo + 4800 or at + 256 > hi - 4800
            assert db < (-12 if near else -20), (lo, at)

    # Each clip's tone right up to its join and right after it.
    assert_tones_switch(tmp_path / "copy.webm", [(1.3, 440.0, 1000.0), (2.5, 1000.0, 440.0)])


@pytest.mark.parametrize(
    ("proj", "why"),
    [
        # A music bed under the cuts: two tracks sound at once.
        (
            project(
                *CUTS.tracks, track("music", clip(0.0, 3.2), controller=model.Controller.AUDIO)
            ),
            "two",
        ),
        # Not at full volume.
        (
            project(track("na", clip(0.0, 2.0, volume=(model.VolumeStep(0.5, None, None),)))),
            "volume",
        ),
        # A mono source.
        (project(track("na", clip(0.0, 1.0)), track("mono", clip(1.0, 2.0))), "mono"),
    ],
    ids=["music-bed", "volume", "mono"],
)
def test_opus_sound_that_cannot_be_copied_is_mixed(
    proj: model.Project, why: str, noisy: dict[str, Path], tmp_path: Path
) -> None:
    result = remux.try_remux(proj, noisy, WEBM, tmp_path / "out.webm")
    assert result is not None and result.copied and not result.sound_copied, why
    engine.render(proj, noisy, NEVER, tmp_path / "c.webm")
    out, _, complaints = synth.decoded_sound(tmp_path / "out.webm")
    ref, _, _ = synth.decoded_sound(tmp_path / "c.webm")
    assert complaints == []
    assert out.shape == ref.shape
    assert np.max(np.abs(out - ref)) < 1e-3


def test_opus_is_read_on_its_packet_grid_after_a_seek(noisy: dict[str, Path]) -> None:
    # WebM's millisecond timestamps put an Opus frame up to 0.5 ms off, and 1 ms off for
    # the first frame after a seek (which loses its pre-skip): the reader puts every
    # frame where its packet really is, so a read after a seek is sample exact.
    path = noisy["na"]
    whole, _, _ = synth.decoded_sound(path)
    media = probe.probe(probe.Source(track=CUTS.tracks[0], path=path), picture=False, sound=True)
    for first in (0, 12345, 50000, 100003):
        reader = audio.AudioReader(media, seek_ahead=0)
        got = reader.read(first, 4800)[0].astype(np.float64)
        reader.close()
        assert np.max(np.abs(got - whole[first : first + 4800])) < 1e-3, first


def test_opus_packet_lengths_from_the_toc() -> None:
    assert remux_opus.toc_samples(bytes([31 << 3])) == 960  # CELT 20 ms
    assert remux_opus.toc_samples(bytes([(28 << 3) | 1])) == 240  # CELT 2.5 ms x 2
    assert remux_opus.toc_samples(bytes([(1 << 3) | 3, 3])) == 2880  # SILK 20 ms x 3
    assert remux_opus.toc_samples(bytes([(13 << 3) | 2])) == 1920  # hybrid 20 ms x 2
    assert remux_opus.toc_samples(b"") == 0


def test_vp9_keyframe_headers_are_read() -> None:
    assert remux_source.vp9_keyframe(b"\x00" * 16) is None  # not a frame marker
    assert remux_source.vp9_keyframe(b"\x82") is None  # cut short
