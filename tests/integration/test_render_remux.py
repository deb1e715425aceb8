"""The stream-copy fast path: which timelines take it, and that what it writes is exactly
what the compose path writes, frame for frame, with the sound in place."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.logging
import numpy as np
import numpy.typing as npt
import pytest

from rendermill.cli import synth
from rendermill.common import errors, schemas
from rendermill.common.project import model
from rendermill.common.testing import clip, project, track
from rendermill.renderer import engine
from rendermill.renderer.engine import probe, remux, remux_h264, remux_plan, remux_source
from rendermill.renderer.engine.result import RenderResult
from rendermill.renderer.engine.threads import Threads

FPS = 30
SIZE = (320, 180)
TWO_CPUS = Threads(2)
OUT = schemas.OutputSpec(resolution="320x180", fps=FPS)
WHITE = (255, 255, 255)
# The compose path's rule for which source frame shows at source time s.
EPSILON = 1e-4


def spec(**fields: object) -> schemas.OutputSpec:
    return schemas.OutputSpec(**({"resolution": "320x180", "fps": FPS} | fields))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("remux-media")
    return {
        # B-frame sources: the same encoder settings give the same SPS/PPS.
        "a": synth.make_bframe_video(d / "a.mp4", tone_hz=440.0),
        "b": synth.make_bframe_video(d / "b.mp4", tone_hz=1000.0),
        "other_crf": synth.make_bframe_video(d / "c.mp4", tone_hz=440.0, crf=30, duration=2.0),
        # synth's own clips: no B-frames, an IDR frame every second.
        "plain_a": synth.make_video(d / "pa.mp4", color=WHITE, counter=True, duration=3.0),
        "plain_b": synth.make_video(d / "pb.mp4", color=WHITE, counter=True, duration=3.0),
        # CAVLC with other parameter sets than plain_a's.
        "plain_crf30": synth.make_video(
            d / "pc.mp4", color=WHITE, counter=True, duration=3.0, crf=30
        ),
        "small": synth.make_video(d / "small.mp4", size=(160, 90), tone_hz=None),
        "untagged": synth.make_video(d / "untagged.mp4", tagged=False, duration=1.0),
        "mpeg4": synth.make_video(d / "mpeg4.mp4", codec="mpeg4", tone_hz=None),
        "vp9": synth.make_video(d / "vp9.webm", tone_hz=None),
        "png": synth.make_image(d / "logo.png", size=(64, 36)),
        "music": synth.make_audio(d / "music.m4a", tone_hz=3000.0, duration=4.0, amplitude=0.2),
    }


class Decoded:
    """A written file decoded: counter per frame, 48 kHz stereo sound, decoder messages."""

    def __init__(self, path: Path) -> None:
        level = av.logging.get_level()
        av.logging.set_level(av.logging.WARNING)
        try:
            with av.logging.Capture() as logs, av.open(str(path)) as container:
                self.avcc = remux_h264.parse_avcc(
                    container.streams.video[0].codec_context.extradata or b""
                )
                self.pictures = [
                    np.asarray(f.to_ndarray(format="rgb24"), np.uint8)
                    for f in container.decode(video=0)
                ]
            with av.logging.Capture() as more, av.open(str(path)) as container:
                chunks = [f.to_ndarray() for f in container.decode(audio=0)]
        finally:
            av.logging.set_level(level)
        self.messages = [*logs, *more]
        self.counters = [synth.read_counter(p) for p in self.pictures]
        self.audio: npt.NDArray[np.float32] = np.concatenate(chunks, axis=1).astype(np.float32)

    def peak_hz(self, start: float, end: float) -> float:
        window = self.audio[0, round(start * 48000) : round(end * 48000)].astype(np.float64)
        spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
        return float(np.fft.rfftfreq(len(window), 1 / 48000)[np.argmax(spectrum)])


def expected_counters(proj: model.Project) -> list[int]:
    """The source frame every output frame shows, by TIMELINE.md (one track visible at a
    time, later tracks on top)."""
    counters = []
    for i in range(proj.frame_count(FPS)):
        t = i / FPS
        action = next(a for tr in reversed(proj.tracks) for a in tr.actions if a.start <= t < a.end)
        s = action.source_time(t)
        counters.append(int(np.floor((s + EPSILON) * FPS)))
    return counters


Remux = Callable[..., tuple[RenderResult | None, Path]]


@pytest.fixture
def run(tmp_path: Path) -> Remux:
    def _run(
        proj: model.Project, sources: dict[str, Path], output: schemas.OutputSpec = OUT
    ) -> tuple[RenderResult | None, Path]:
        dest = tmp_path / f"remux.{output.format}"
        return remux.try_remux(proj, sources, output, dest), dest

    return _run


def compose(proj: model.Project, sources: dict[str, Path], tmp_path: Path) -> Decoded:
    dest = tmp_path / "composed.mp4"
    engine.render(proj, sources, spec(copy="never"), dest)
    return Decoded(dest)


def test_keyframe_aligned_cuts_copy_every_packet(run: Remux, media: dict[str, Path]) -> None:
    proj = project(
        track("plain_a", clip(0.0, 1.0), clip(2.0, 3.0, trim_start=2.0)),
        track("plain_b", clip(1.0, 2.0, trim_start=1.0)),
    )
    sources = {"plain_a": media["plain_a"], "plain_b": media["plain_b"]}
    result, dest = run(proj, sources)
    assert result is not None and result.copied
    assert (result.frames, result.width, result.height) == (90, 320, 180)
    assert result.size_bytes == dest.stat().st_size
    out = Decoded(dest)
    assert out.counters == list(range(90))
    assert out.messages == []
    # Nothing was re-encoded: the only parameter sets are the sources' own...
    with av.open(str(media["plain_a"])) as src:
        source_avcc = remux_h264.parse_avcc(src.streams.video[0].codec_context.extradata or b"")
        # ...and the pictures are the sources' decoded pictures, bit for bit.
        originals = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    assert (out.avcc.sps, out.avcc.pps) == (source_avcc.sps, source_avcc.pps)
    for i in (0, 29, 60, 89):
        assert np.array_equal(out.pictures[i], originals[i])


def test_mid_gop_cuts_land_on_the_exact_frames(
    run: Remux, media: dict[str, Path], tmp_path: Path
) -> None:
    # Every join falls inside a GOP of B-frames: a head before the next IDR frame and,
    # where a cut ends inside a group of B-frames, a tail are re-encoded.
    proj = project(
        track("a", clip(0.0, 1.3, trim_start=0.41), clip(2.5, 3.2, trim_start=2.11)),
        track("b", clip(1.3, 2.5, trim_start=0.77)),
    )
    sources = {"a": media["a"], "b": media["b"]}
    result, dest = run(proj, sources)
    assert result is not None and result.copied
    assert result.frames == proj.frame_count(FPS) == 96
    out = Decoded(dest)
    assert out.messages == []
    assert len(out.counters) == 96
    assert out.counters == expected_counters(proj)
    # Both kinds of pieces are there: the re-encoder's parameter sets sit beside the
    # sources' ones, under their own id.
    ids = [remux_h264.parse_sps(s).id for s in out.avcc.sps]
    assert len(ids) == 2 and len(set(ids)) == 2
    # Exactly what the compose path shows.
    assert out.counters == compose(proj, sources, tmp_path).counters


def test_a_damaged_picture_to_reencode_leaves_the_fast_path(
    run: Remux, media: dict[str, Path], tmp_path: Path
) -> None:
    # Output frames 0-14 are source frames 15-29, re-encoded up to the IDR frame at 30:
    # decoded from the IDR frame at 0, past the damaged frame 10 (before the cut; the
    # frames after it carry its damage) or through the damaged frame 20.
    for damaged in (10, 20):
        bad = synth.damage_picture(media["plain_a"], tmp_path / f"damaged-{damaged}.mp4", damaged)
        proj = project(track("bad", clip(0.0, 1.0, trim_start=0.5)))
        result, dest = run(proj, {"bad": bad})
        assert result is None and not dest.exists()
        # The compose path then says what is wrong with the file.
        with pytest.raises(errors.MediaError, match=rf"picture at {damaged / 30:.3f} s is damaged"):
            engine.render(proj, {"bad": bad}, OUT, tmp_path / "out.mp4")


def test_cut_inside_a_group_of_b_frames_reencodes_only_the_tail(
    run: Remux, media: dict[str, Path]
) -> None:
    # Frames 0..31 of "a", whose second GOP is decoded 30, 33, 31, 32...: frame 31 is a
    # B-frame that refers to P-frame 33, which must not show. 30 is copied, 31 re-encoded.
    proj = project(track("a", clip(0.0, 32 / FPS)), track("b", clip(32 / FPS, 2.0)))
    result, dest = run(proj, {"a": media["a"], "b": media["b"]})
    assert result is not None
    out = Decoded(dest)
    assert out.messages == []
    assert out.counters == expected_counters(proj)
    assert out.counters[31:33] == [31, 0]


def test_sound_is_mixed_like_the_compose_path_and_in_sync(
    run: Remux, media: dict[str, Path], tmp_path: Path
) -> None:
    proj = project(
        track("a", clip(0.0, 1.3, trim_start=0.41), clip(2.5, 3.2, trim_start=2.11)),
        track("b", clip(1.3, 2.5, trim_start=0.77)),
        track(
            "music",
            clip(0.0, 3.2, volume=(model.VolumeStep(0.0, 2.0, 2.2),)),
            controller=model.Controller.AUDIO,
        ),
    )
    sources = {"a": media["a"], "b": media["b"], "music": media["music"]}
    result, dest = run(proj, sources)
    assert result is not None
    out = Decoded(dest)
    # Each clip's tone right up to its join and right after it, over the music bed.
    for join, before, after in ((1.3, 440.0, 1000.0), (2.5, 1000.0, 440.0)):
        assert out.peak_hz(join - 0.09, join - 0.01) == pytest.approx(before, abs=15)
        assert out.peak_hz(join + 0.01, join + 0.09) == pytest.approx(after, abs=15)
    music = out.audio[:, round(2.05 * 48000) : round(2.15 * 48000)]
    spectrum = np.abs(np.fft.rfft(music[0].astype(np.float64)))
    assert spectrum[300] < spectrum[100] / 100  # the music step mutes 3 kHz (bin 300)
    composed = compose(proj, sources, tmp_path)
    assert out.audio.shape == composed.audio.shape
    assert np.max(np.abs(out.audio - composed.audio)) < 1e-3


@pytest.mark.parametrize(
    ("first", "other", "entropy"),
    [("a", "other_crf", "CABAC"), ("plain_a", "plain_crf30", "CAVLC")],
)
def test_sources_with_other_parameter_sets_are_renumbered(
    first: str, other: str, entropy: str, run: Remux, media: dict[str, Path], tmp_path: Path
) -> None:
    # Same profile and size, other parameter sets under the same ids (0): the second
    # source's sets get ids of their own and its slices are rewritten to name them.
    proj = project(
        track(first, clip(0.0, 0.9, trim_start=0.4), clip(1.7, 2.4, trim_start=1.5)),
        track(other, clip(0.9, 1.7, trim_start=0.3)),
    )
    sources = {first: media[first], other: media[other]}
    with av.open(str(media[first])) as a, av.open(str(media[other])) as b:
        mine = remux_h264.parse_avcc(a.streams.video[0].codec_context.extradata or b"")
        theirs = remux_h264.parse_avcc(b.streams.video[0].codec_context.extradata or b"")
    assert mine.pps != theirs.pps
    assert {remux_h264.pps_id(p) for p in mine.pps} == {remux_h264.pps_id(p) for p in theirs.pps}
    result, dest = run(proj, sources)
    assert result is not None and result.copied, entropy
    out = Decoded(dest)
    assert out.messages == []
    assert out.counters == expected_counters(proj) == compose(proj, sources, tmp_path).counters
    pps_ids = [remux_h264.pps_id(p) for p in out.avcc.pps]
    assert len(pps_ids) == len(set(pps_ids)) >= 2
    # One PPS is the other source's with new ids: given its old ids back, byte for byte.
    original = theirs.pps[0]
    old_ids = [remux_h264.pps_id(original), remux_h264.parse_sps(theirs.sps[0]).id]
    renumbered = [
        p
        for p in out.avcc.pps
        if remux_h264.pps_id(p) not in {remux_h264.pps_id(q) for q in mine.pps}
        and remux_h264.pps_id(p) >= 15  # x264's own id is the lowest free one
    ]
    assert [remux_h264.rewrite_ue(p, 0, old_ids) for p in renumbered] == [original]


def test_sources_of_nesting_profiles_are_copied_into_one_high_profile_stream(
    run: Remux, media: dict[str, Path], tmp_path: Path
) -> None:
    # A High profile clip (B-frames, CABAC) between two cuts of a Constrained Baseline one.
    proj = project(
        track("plain_a", clip(0.0, 1.0), clip(2.0, 3.0, trim_start=2.0)),
        track("a", clip(1.0, 2.0, trim_start=0.5)),
    )
    sources = {"plain_a": media["plain_a"], "a": media["a"]}
    result, dest = run(proj, sources)
    assert result is not None and result.copied
    out = Decoded(dest)
    assert out.messages == []
    assert out.counters == expected_counters(proj) == compose(proj, sources, tmp_path).counters
    # Both sources' own SPSs, the record declaring High and listing High's SPS first.
    assert remux_h264.parse_sps(out.avcc.sps[0]).profile == 100
    assert {remux_h264.parse_sps(s).profile for s in out.avcc.sps} >= {66, 100}
    with av.open(str(dest)) as container:
        extradata = container.streams.video[0].codec_context.extradata or b""
    assert extradata[1] == 100  # AVCProfileIndication


def test_layers_under_the_visible_clip_do_not_matter(run: Remux, media: dict[str, Path]) -> None:
    proj = project(
        track("png", clip(0.0, 2.0), controller=model.Controller.IMAGE),
        track("small", clip(0.5, 1.5)),
        track("plain_a", clip(0.0, 2.0, fit=model.Fit.COVER, x=model.Coord(50, "%"))),
    )
    sources = {k: media[k] for k in ("png", "small", "plain_a")}
    result, dest = run(proj, sources, spec(format="mov"))
    assert result is not None and result.copied
    assert Decoded(dest).counters == list(range(60))


def test_untagged_hd_is_copied(tmp_path: Path) -> None:
    # Untagged HD video is BT.709 to every player (and to the compose path).
    hd = synth.make_video(
        tmp_path / "hd.mp4", size=(1280, 720), tagged=False, counter=True, duration=0.5
    )
    proj = model.Project(width=1280, height=720, tracks=(track("hd", clip(0.0, 0.5)),))
    dest = tmp_path / "out.mp4"
    result = remux.try_remux(proj, {"hd": hd}, spec(resolution="720p"), dest)
    assert result is not None and result.copied
    assert Decoded(dest).counters == list(range(15))


def test_progress_is_reported_frame_by_frame(tmp_path: Path, media: dict[str, Path]) -> None:
    seen: list[tuple[int, int]] = []
    proj = project(track("plain_a", clip(0.0, 1.5)))
    result = remux.try_remux(
        proj,
        {"plain_a": media["plain_a"]},
        OUT,
        tmp_path / "out.mp4",
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert result is not None
    assert seen[-1] == (45, 45)
    assert [d for d, _ in seen] == list(range(1, 46))


def test_failing_progress_callback_removes_the_file(tmp_path: Path, media: dict[str, Path]) -> None:
    def stop(done: int, total: int) -> None:
        if done == 10:
            raise RuntimeError("cancelled")

    dest = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="cancelled"):
        remux.try_remux(
            project(track("a", clip(0.0, 2.0, trim_start=0.5))),
            {"a": media["a"]},
            OUT,
            dest,
            on_progress=stop,
        )
    assert not dest.exists()


def test_poster_is_written_like_the_compose_path(
    run: Remux, media: dict[str, Path], tmp_path: Path
) -> None:
    proj = project(track("a", clip(0.0, 1.0, trim_start=0.5)))
    result, dest = run(proj, {"a": media["a"]}, spec(poster=0.51))
    assert result is not None
    with av.open(str(dest.with_suffix(".jpg"))) as jpeg:
        picture = next(jpeg.decode(video=0)).to_ndarray(format="rgb24")
    # 0.51 s is frame 15, which shows source frame 30.
    assert synth.read_counter(picture) == 30


ABOVE = model.Controller.IMAGE


@pytest.mark.parametrize(
    ("tracks", "output", "reason"),
    [
        ([track("a", clip(0, 1))], spec(copy="never"), "copy is 'never'"),
        ([track("a", clip(0, 1))], spec(format="gif"), "format gif"),
        ([track("a", clip(0, 1))], spec(format="webm"), "is not WebM/Matroska"),
        ([track("a", clip(0, 1, fit=model.Fit.FILL))], spec(resolution="640x360"), "frame size"),
        (
            [track("a", clip(0, 1)), track("png", clip(0.5, 0.8), controller=ABOVE)],
            OUT,
            "is a still picture",
        ),
        ([track("a", clip(0, 1), clip(1.2, 2))], OUT, "nothing covers the canvas at 1.000 s"),
        (
            [track("a", clip(0, 1)), track("small", clip(1, 2, fit=model.Fit.FILL))],
            OUT,
            "frame size 160x90",
        ),
        ([track("a", clip(0, 1)), track("mpeg4", clip(1, 2))], OUT, "codec mpeg4"),
        ([track("a", clip(0, 1)), track("vp9", clip(1, 2))], OUT, "matroska,webm"),
        ([track("untagged", clip(0, 1))], OUT, "untagged SD"),
        ([track("a", clip(0, 1, playback_rate=2.0))], OUT, "playback rate"),
        ([track("a", clip(0, 1, freeze=0.5))], OUT, "freeze"),
        ([track("a", clip(0, 5))], OUT, "past its media's end"),
        ([track("a", clip(0, 2, trim_start=3.0, loop=True))], OUT, "past its media's end"),
        ([track("a", clip(0, 1, x=model.Coord(2)))], OUT, "position"),
        ([track("a", clip(0, 1, opacity=0.5))], spec(effects=True), "opacity"),
    ],
)
def test_not_a_cut_returns_none_and_writes_nothing(
    tracks: list[model.Track],
    output: schemas.OutputSpec,
    reason: str,
    media: dict[str, Path],
    tmp_path: Path,
) -> None:
    proj = project(*tracks)
    dest = tmp_path / "out.mp4"
    sources = {t.url: media[t.url] for t in proj.tracks}
    assert remux.try_remux(proj, sources, output, dest) is None
    assert not dest.exists()
    with (
        remux_source.Readers(TWO_CPUS) as readers,
        pytest.raises(remux_source.Ineligible, match=reason),
    ):
        remux_plan.plan(proj, sources, output, readers)


def test_fit_none_needs_the_canvas_at_the_output_size(media: dict[str, Path]) -> None:
    # The 320x180 picture is a quarter of a 640x360 canvas, whatever the output size.
    proj = model.Project(width=640, height=360, tracks=(track("a", clip(0, 1)),))
    with (
        remux_source.Readers(TWO_CPUS) as readers,
        pytest.raises(remux_source.Ineligible, match="fit none"),
    ):
        remux_plan.plan(proj, {"a": media["a"]}, OUT, readers)


def test_render_takes_the_fast_path_unless_told_not_to(
    media: dict[str, Path], tmp_path: Path
) -> None:
    proj = project(
        track("a", clip(0.0, 1.3, trim_start=0.41)),
        track("b", clip(1.3, 2.5, trim_start=0.77)),
    )
    sources = {"a": media["a"], "b": media["b"]}
    fast = engine.render(proj, sources, spec(), tmp_path / "fast.mp4")
    slow = engine.render(proj, sources, spec(copy="never"), tmp_path / "slow.mp4")
    assert fast.copied and not slow.copied
    assert fast.frames == slow.frames == proj.frame_count(FPS)
    assert Decoded(tmp_path / "fast.mp4").counters == Decoded(tmp_path / "slow.mp4").counters


def h264_file(
    path: Path,
    *,
    colour: tuple[int, int, int, int] | None = None,
    x264: str = "",
    colr: bool = True,
    sample_aspect: Fraction | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    """An H.264 MP4 whose SPS says ``colour`` (range, matrix, primaries, transfer), with
    or without the container's 'colr' box."""
    options = {"x264-params": x264} if x264 else {}
    synth.make_coded_clip(
        path,
        "libx264",
        pix_fmt=pix_fmt,
        colour=colour,
        sample_aspect=sample_aspect,
        options=options,
    )
    if not colr:
        # The muxer always writes one; as a 'free' box it is skipped by readers.
        data = path.read_bytes()
        assert data.count(b"colr") == 1
        path.write_bytes(data.replace(b"colr", b"free"))
    return path


def vp9_clip(path: Path, **kwargs: Any) -> Path:
    return synth.make_coded_clip(path, "libvpx-vp9", options={"deadline": "realtime"}, **kwargs)


@pytest.mark.parametrize(
    ("make", "declared"),
    [
        (lambda d: synth.make_video(d / "tagged.mp4", duration=0.5), True),
        (lambda d: synth.make_video(d / "untagged.mp4", duration=0.5, tagged=False), True),
        (lambda d: synth.make_bframe_video(d / "bframes.mp4", tone_hz=440.0), True),
        (lambda d: synth.make_video(d / "turned.mp4", duration=0.5, rotation=90), True),
        (lambda d: h264_file(d / "vui.mp4", colour=(1, 1, 1, 1), colr=False), True),
        (
            lambda d: h264_file(
                d / "full.mp4", colour=(2, 1, 1, 1), x264="fullrange=on", colr=False
            ),
            True,
        ),
        (lambda d: h264_file(d / "sar.mp4", sample_aspect=Fraction(4, 3)), True),
        # The 'colr' box says BT.470BG, the SPS BT.709: probed.
        (
            lambda d: h264_file(d / "clash.mp4", colour=(1, 5, 5, 6), x264="colormatrix=bt709"),
            False,
        ),
        (lambda d: h264_file(d / "ten.mp4", pix_fmt="yuv420p10le"), True),
        (lambda d: h264_file(d / "422.mp4", pix_fmt="yuv422p"), True),
        (lambda d: synth.make_video(d / "tagged.webm", duration=0.5), True),
        (lambda d: synth.make_video(d / "untagged.webm", duration=0.5, tagged=False), True),
        (
            lambda d: synth.make_video(d / "alpha.webm", duration=0.5, alpha=True, tone_hz=None),
            True,
        ),
        (lambda d: vp9_clip(d / "bt709.webm", colour=(1, 1, 1, 1)), True),
        (lambda d: vp9_clip(d / "full.webm", colour=(2, 1, 1, 1)), True),
        (lambda d: vp9_clip(d / "444.webm", pix_fmt="yuv444p"), True),
    ],
    ids=[
        "tagged",
        "untagged",
        "b-frames",
        "rotated",
        "vui-only",
        "full-range",
        "sar",
        "clash",
        "10-bit",
        "4:2:2",
        "vp9-tagged",
        "vp9-untagged",
        "vp9-alpha",
        "vp9-bt709",
        "vp9-full-range",
        "vp9-4:4:4",
    ],
)
def test_unprobed_sources_are_described_as_probing_would(
    make: Callable[[Path], Path], declared: bool, tmp_path: Path
) -> None:
    # The copy path opens H.264 MP4s and VP9 WebMs without avformat's probing (which
    # decodes pictures) and reads what the decoder would have said from the bitstream's
    # own headers (the SPS, the first keyframe); where the container's boxes contradict
    # them it probes. Either way, the same header.
    path = make(tmp_path)
    with av.open(str(path)) as container:
        stream = remux_source._picture_stream(container)
        assert stream is not None
        probed = remux_source._header(path, container, stream)
    with av.open(str(path), container_options=probe.NO_PROBING) as container:
        stream = remux_source._picture_stream(container)
        assert stream is not None
        assert (remux_source._declared_header(path, container, stream) is not None) == declared
    reader = remux_source.Reader(path, TWO_CPUS)
    try:
        assert reader.header == probed
    finally:
        reader.close()
