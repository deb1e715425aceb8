"""The stream-copy path's sound: AAC packets copied from the sources, re-encoded only
around the joins, in sync with the picture, and free of glitches where copied and
re-encoded packets meet."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame

from rendermill.cli import synth
from rendermill.common import schemas
from rendermill.common.project import model
from rendermill.common.testing import clip, project, track
from rendermill.renderer import engine
from rendermill.renderer.engine import remux, remux_audio
from rendermill.renderer.engine.result import RenderResult

RATE = 48000
OUT = schemas.OutputSpec(resolution="320x180", fps=30)
NEVER = schemas.OutputSpec(resolution="320x180", fps=30, copy="never")
# Half an AAC frame: the most a copied segment's sound may sit off its exact place.
HALF_FRAME = remux_audio.FRAME // 2


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("remux-sound-media")
    return {
        # Tones to tell the clips apart, noise to tell one moment from another.
        "a": synth.make_bframe_video(d / "a.mp4", tone_hz=440.0, noise=0.05),
        "b": synth.make_bframe_video(d / "b.mp4", tone_hz=1000.0, noise=0.05),
        # Same picture parameters as a and b (synth's own clips share them), other sound.
        "khz44": synth.make_video(d / "khz44.mp4", counter=True, audio_rate=44100),
        "mono": synth.make_video(d / "mono.mp4", counter=True, audio_layout="mono"),
        "plain": synth.make_video(d / "plain.mp4", counter=True),
        "music": synth.make_audio(d / "music.m4a", tone_hz=660.0, duration=4.0, noise=0.05),
    }


def sound(path: Path) -> tuple[npt.NDArray[np.float64], list[bytes], list[str]]:
    return synth.decoded_sound(path)


def render(
    proj: model.Project, sources: dict[str, Path], dest: Path, output: schemas.OutputSpec = OUT
) -> RenderResult:
    result = remux.try_remux(proj, sources, output, dest)
    assert result is not None and result.copied
    return result


def lag(out: npt.NDArray[np.float64], ref: npt.NDArray[np.float64], at: int) -> int:
    """How many samples ``out`` runs ahead of ``ref`` around sample ``at``."""
    return synth.lag(out, ref, at, HALF_FRAME + 64)


# Clip a from its very start, whose sound begins with a transient (short AAC windows in
# its first packets), then joins at arbitrary samples.
CUTS = project(
    track("a", clip(0.0, 1.3), clip(2.5, 3.2, trim_start=2.11)),
    track("b", clip(1.3, 2.5, trim_start=0.77)),
)


def test_sound_is_copied_in_sync_and_clean_at_every_join(
    media: dict[str, Path], tmp_path: Path
) -> None:
    sources = {"a": media["a"], "b": media["b"]}
    result = render(CUTS, sources, tmp_path / "copy.mp4")
    assert result.sound_copied
    out, out_packets, complaints = sound(tmp_path / "copy.mp4")
    assert complaints == []

    # Most packets are the sources' own, byte for byte.
    source_packets = {p for name in ("a", "b") for p in sound(media[name])[1]}
    copied = sum(p in source_packets for p in out_packets)
    assert copied >= 0.75 * len(out_packets), (copied, len(out_packets))

    # The compose path's sound, segment by segment: each within half an AAC frame of its
    # exact place, the same all along the segment, and the same signal everywhere in it,
    # including where re-encoded packets meet copied ones (a mismatch there is a click
    # several times louder than the coding noise).
    engine.render(CUTS, sources, NEVER, tmp_path / "composed.mp4")
    ref, _, _ = sound(tmp_path / "composed.mp4")
    assert abs(len(out) - len(ref)) <= remux_audio.FRAME
    joins = [0, round(1.3 * RATE), round(2.5 * RATE), round(3.2 * RATE)]
    for lo, hi in itertools.pairwise(joins):
        shifts = {lag(out, ref, at) for at in (lo + 1200, (lo + hi) // 2, hi - 6000)}
        assert len(shifts) == 1, shifts
        shift = shifts.pop()
        assert abs(shift) <= HALF_FRAME
        # Windows of 256 samples from 10 ms after the join to 10 ms before the next.
        for at, db in synth.window_errors(out, ref, shift, lo + 480, hi - 480):
            assert db < -20, (lo, at)

    # Each clip's tone right up to its join and right after it.
    def peak_hz(start: float, end: float) -> float:
        window = out[round(start * RATE) : round(end * RATE)]
        spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
        return float(np.fft.rfftfreq(len(window), 1 / RATE)[np.argmax(spectrum)])

    for join, before, after in ((1.3, 440.0, 1000.0), (2.5, 1000.0, 440.0)):
        assert peak_hz(join - 0.09, join - 0.01) == pytest.approx(before, abs=15)
        assert peak_hz(join + 0.01, join + 0.09) == pytest.approx(after, abs=15)


@pytest.mark.parametrize(
    "proj",
    [
        # Two tracks sound at once.
        project(
            track("a", clip(0.0, 2.0)),
            track("b", clip(0.0, 2.0), controller=model.Controller.AUDIO),
        ),
        # Not at full volume.
        project(track("a", clip(0.0, 2.0, volume=(model.VolumeStep(0.5, None, None),)))),
        # Silence: a muted clip.
        project(track("a", clip(0.0, 1.0)), track("b", clip(1.0, 2.0), muted=True)),
    ],
    ids=["two-tracks", "volume", "muted"],
)
def test_sound_that_is_not_one_clip_at_a_time_is_mixed(
    proj: model.Project, media: dict[str, Path], tmp_path: Path
) -> None:
    result = render(proj, {"a": media["a"], "b": media["b"]}, tmp_path / "out.mp4")
    assert not result.sound_copied
    engine.render(proj, {"a": media["a"], "b": media["b"]}, NEVER, tmp_path / "c.mp4")
    out, _, _ = sound(tmp_path / "out.mp4")
    ref, _, _ = sound(tmp_path / "c.mp4")
    assert out.shape == ref.shape
    assert np.max(np.abs(out - ref)) < 1e-3


def test_a_music_track_under_muted_cuts_is_copied(media: dict[str, Path], tmp_path: Path) -> None:
    # B-roll cut to music: the clips are muted, the music alone sounds, so it is copied
    # whole (no join at all: only the start and the end are re-encoded).
    proj = project(
        *CUTS.tracks[:2],
        track("music", clip(0.0, 3.2), controller=model.Controller.AUDIO),
    )
    proj = project(
        *(msgspec.structs.replace(t, muted=True) for t in proj.tracks[:2]),
        proj.tracks[2],
    )
    sources = {"a": media["a"], "b": media["b"], "music": media["music"]}
    result = render(proj, sources, tmp_path / "out.mp4")
    assert result.sound_copied
    out, packets, complaints = sound(tmp_path / "out.mp4")
    assert complaints == []
    music = set(sound(media["music"])[1])
    assert sum(p in music for p in packets) >= len(packets) - 8
    engine.render(proj, sources, NEVER, tmp_path / "c.mp4")
    ref, _, _ = sound(tmp_path / "c.mp4")
    assert lag(out, ref, 48000) == 0  # the music starts at its own start: nothing to shift
    error = np.sqrt(np.mean((out[4800:-4800] - ref[4800 : len(out) - 4800]) ** 2))
    assert 20 * np.log10(error / np.sqrt(np.mean(ref**2))) < -20


@pytest.mark.parametrize("other", ["khz44", "mono"])
def test_sound_in_another_format_is_mixed(
    other: str, media: dict[str, Path], tmp_path: Path
) -> None:
    # The picture is copied; a source at 44.1 kHz or in mono has no packets the 48 kHz
    # stereo output could take, so the whole sound is mixed and encoded.
    proj = project(track("plain", clip(0.0, 1.0)), track(other, clip(1.0, 2.0)))
    sources = {"plain": media["plain"], other: media[other]}
    result = render(proj, sources, tmp_path / "out.mp4")
    assert not result.sound_copied
    out, _, _ = sound(tmp_path / "out.mp4")
    engine.render(proj, sources, NEVER, tmp_path / "c.mp4")
    ref, _, _ = sound(tmp_path / "c.mp4")
    assert out.shape == ref.shape
    assert np.max(np.abs(out - ref)) < 1e-3


def short_config_copy(src: Path, dest: Path) -> Path:
    """``src`` remuxed with its AudioSpecificConfig cut to the 2 bytes other encoders
    write (FFmpeg's own adds a sync extension saying "no SBR")."""
    with av.open(str(src)) as inp, av.open(str(dest), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        audio_out = streams[inp.streams.audio[0].index]
        extradata = audio_out.codec_context.extradata or b""
        assert len(extradata) > 2
        audio_out.codec_context.extradata = extradata[:2]
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dest


def test_sources_whose_configs_differ_only_past_lc_are_copied(
    media: dict[str, Path], tmp_path: Path
) -> None:
    sources = {"a": media["a"], "b": short_config_copy(media["b"], tmp_path / "b.mp4")}
    result = render(CUTS, sources, tmp_path / "out.mp4")
    assert result.sound_copied
    assert sound(tmp_path / "out.mp4")[2] == []


def test_sbr_signalled_in_the_config_is_not_lc() -> None:
    assert not remux_audio._sbr_present(bytes.fromhex("1190"))
    assert not remux_audio._sbr_present(bytes.fromhex("119056e500"))  # explicitly no SBR
    assert remux_audio._sbr_present(bytes.fromhex("119056e580"))


def test_encoded_runs_cover_every_join_and_merge_when_close() -> None:
    total = 10 * remux_audio.FRAME + 100
    runs = remux_audio._encoded_runs([3000, 3500, 8000], total)
    last = -(-total // remux_audio.FRAME)
    assert runs[0][0] == -1 and runs[-1][1] == last
    for j in (3000, 3500, 8000):
        # The packet before the join's packet up to the one after the fade-in.
        assert any(a <= j // remux_audio.FRAME - 1 and b * remux_audio.FRAME >= j for a, b in runs)
    # Sorted, apart, and never closer than the encoder's lead-in.
    for (_, b), (a, _) in itertools.pairwise(runs):
        assert a - b > remux_audio._LEAD


def test_window_sequences_read_from_encoded_packets_chain() -> None:
    # A tone that starts suddenly after silence makes the encoder switch to short windows
    # and back: ONLY_LONG, LONG_START, EIGHT_SHORT, LONG_STOP. Read right, each packet
    # starts with the window its predecessor ended with.
    ctx = av.CodecContext.create("aac", "w")
    assert isinstance(ctx, AudioCodecContext)
    ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = RATE, "stereo", "fltp", 128000
    t = np.arange(RATE) / RATE
    signal = np.where(t > 0.5, 0.8 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
    packets: list[bytes] = []
    for at in range(0, RATE - remux_audio.FRAME, remux_audio.FRAME):
        block = np.stack([signal[at : at + remux_audio.FRAME]] * 2)
        frame = AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = RATE, at, Fraction(1, RATE)
        packets += [bytes(p) for p in ctx.encode(frame)]
    windows = [remux_audio._window(p) for p in packets]
    assert all(w is not None for w in windows)
    sequences = [w[0] for w in windows if w is not None]
    assert {0, 2} <= set(sequences)
    for before, after in itertools.pairwise(sequences):
        assert (before in remux_audio._ENDS_LONG) == (after in remux_audio._STARTS_LONG)
