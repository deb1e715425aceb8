"""Writing a planned stream copy: copied and re-encoded H.264 packets, and the mixed sound
(see the ``remux`` module for how the pieces fit together)."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import math
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import av
import av.container
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame
from av.video.stream import VideoStream

from rendermill.common import schemas
from rendermill.common.project import model
from rendermill.renderer.engine import audio, compose, encode, remux_audio
from rendermill.renderer.engine import remux_h264 as h264
from rendermill.renderer.engine.remux_plan import Copy, Encode, Piece, Plan
from rendermill.renderer.engine.remux_source import Ineligible
from rendermill.renderer.engine.result import ProgressCallback
from rendermill.renderer.engine.threads import Threads

# libx264 preset and CRF for re-encoded pieces. They sit between copied frames of the
# source, so they aim to look like the source rather than to save bytes.
_QUALITY: dict[schemas.Quality, tuple[str, str]] = {
    "draft": ("ultrafast", "21"),
    "standard": ("superfast", "18"),
    "high": ("medium", "16"),
}
_X264_PROFILES = {
    "Baseline": "baseline",
    "Constrained Baseline": "baseline",
    "Main": "main",
    "High": "high",
}


def mixers(
    project: model.Project,
    sources: Mapping[str, Path],
    clock: audio.VolumeClock,
    copied_sound: remux_audio.SoundPlan | None = None,
) -> list[audio.TrackMixer]:
    """One mixer per sounding track, chosen by the compose path's rules; for
    ``copied_sound``, the mixers of its shifted project, which only play the joins.

    Raises MediaError when a sounding track's file is missing or unusable.
    """
    made: list[audio.TrackMixer] = []
    if copied_sound is not None:
        project = copied_sound.shifted
    try:
        for track in project.tracks:
            if not audio.sounds(track):
                continue
            media = copied_sound.medias.get(track.id) if copied_sound is not None else None
            if media is None:
                media = remux_audio.sound_media(track, sources)
            if media.audio is None:
                continue
            if copied_sound is not None:
                # Joins are a few packets each and seconds apart: seek to each.
                made.append(audio.TrackMixer(track, media, clock=clock, seek_ahead=audio.RATE))
            else:
                made.append(audio.TrackMixer(track, media, clock=clock))
    except BaseException:
        for mixer in made:
            mixer.close()
        raise
    return made


def write(
    plan: Plan,
    mixers: list[audio.TrackMixer],
    output: schemas.OutputSpec,
    dest: Path,
    on_progress: ProgressCallback | None,
    threads: Threads,
    copied_sound: remux_audio.SoundPlan | None = None,
) -> None:
    """Write ``plan`` into ``dest`` with the sound of ``mixers``, encoded as ``output``
    says, or copied as ``copied_sound`` plans (then ``mixers`` are not used), pieces
    re-encoded with the threads ``threads`` gives.

    Raises Ineligible when a source no longer reads as it was indexed or cannot be
    decoded, or libx264's parameter sets turn out unusable (the caller composes
    instead); MediaError when a sound source cannot be decoded; PyAV/OS errors for
    encoder or disk failures; whatever ``on_progress`` raises. Leaves a partial ``dest``
    behind on error.
    """
    vp9 = plan.header.codec == "vp9"
    reencoder: _Reencoder | _Vp9Reencoder | None = None
    extradata: bytes | None
    if vp9:
        # VP9 keyframes carry everything a decoder needs: nothing to describe, and a
        # re-encoded piece (which starts with a keyframe) just sits between copied ones.
        extradata = plan.template.stream.codec_context.extradata
        if any(isinstance(p, Encode) for p in plan.pieces):
            reencoder = _Vp9Reencoder(plan, threads.per_cpu)
    else:
        sps, pps = plan.sps, plan.pps
        if any(isinstance(p, Encode) for p in plan.pieces):
            x264 = _Reencoder(plan, _free_id(sps, pps), threads.per_cpu)
            sps += x264.sps
            pps += x264.pps
            reencoder = x264
        extradata = h264.build_avcc(sps, pps)
    # Decode timestamps count packets, trailing the presentation timestamps by the
    # largest reordering of any piece so that no frame shows before it is decoded.
    shift = max((p.delay for p in plan.pieces if isinstance(p, Copy)), default=0)

    options = {} if vp9 else {"movflags": "+faststart"}
    container = av.open(str(dest), "w", format=plan.format, options=options)
    sound: _Sound | remux_audio.CopiedSound | None = None
    try:
        vstream = _video_stream(container, plan, extradata)
        if copied_sound is not None:
            sound = remux_audio.CopiedSound(container, copied_sound)
        else:
            # The compose path's own codec and bit rate, so that both paths sound the same.
            recipe = encode.recipe_for(output)
            assert recipe.audio_codec is not None
            sound = _Sound(
                container, mixers, total_samples(plan), recipe.audio_codec, recipe.audio_bit_rate
            )
        time_base = Fraction(1, plan.fps)
        done = 0
        first_frame = 0
        for piece in plan.pieces:
            for offset, data, key in _samples(piece, plan, reencoder):
                packet = Packet(data)
                packet.stream = vstream
                packet.time_base = time_base
                packet.pts = first_frame + offset
                packet.dts = done - shift
                packet.duration = 1
                packet.is_keyframe = key
                container.mux(packet)
                done += 1
                # Keep the sound level with the picture so the muxer interleaves.
                sound.advance(round(done * audio.RATE / plan.fps))
                if on_progress is not None:
                    on_progress(done, plan.total)
            first_frame += len(piece)
        if done != plan.total:
            raise RuntimeError(f"wrote {done} video packets for {plan.total} frames")
        sound.finish()
        container.close()
    except BaseException:
        if sound is not None:
            sound.abort()
        with contextlib.suppress(av.FFmpegError, OSError):
            container.close()
        raise


def total_samples(plan: Plan) -> int:
    """The output's length in sound samples."""
    return round(plan.total * audio.RATE / plan.fps)


def poster(dest: Path, plan: Plan, at: float) -> bytes:
    """The JPEG the compose path writes for ``output.poster == at``: the frame of
    ``dest`` showing at ``at`` seconds (the last one past the end), in BT.709.

    Raises av.FFmpegError when ``dest`` cannot be decoded (it was just written).
    """
    index = min(plan.total - 1, math.floor(round(at * plan.fps, 6)))
    with av.open(str(dest)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        assert tb is not None
        container.seek(int(Fraction(index, plan.fps) / tb), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.pts is not None and round(float(frame.pts * tb) * plan.fps) >= index:
                break
        else:
            raise RuntimeError(f"{dest}: frame {index} did not decode")
    # Copied pictures keep the source's matrix; the poster is made from BT.709 as the
    # compose path makes its frames.
    converted = compose.convert(frame, frame.width, frame.height, alpha=False)
    return encode.jpeg(converted.frame)


def _video_stream(
    container: av.container.OutputContainer, plan: Plan, extradata: bytes | None
) -> VideoStream:
    # Described like the template source (it is never encoded into), with (H.264) the
    # avcC that holds every parameter set the packets use.
    stream = container.add_stream_from_template(plan.template.stream)
    assert isinstance(stream, VideoStream)
    stream.codec_context.extradata = extradata
    stream.time_base = Fraction(1, plan.fps)
    stream.codec_context.time_base = Fraction(1, plan.fps)
    return stream


def _samples(
    piece: Piece, plan: Plan, reencoder: _Reencoder | _Vp9Reencoder | None
) -> Iterator[tuple[int, bytes, bool]]:
    """(output frame offset in the piece, sample, keyframe), decode order. H.264 samples
    are NAL units behind 4-byte lengths."""
    if isinstance(piece, Copy):
        sets = plan.sets.get(piece.reader.path)
        packets = piece.reader.packets(piece.window, piece.start, piece.count, plan.fps)
        for n, data in enumerate(packets):
            entry = piece.window.entries[piece.start + n]
            if sets is not None and (n == 0 or sets.renumbering is not None):
                nals = h264.split_length_prefixed(data)
                if sets.renumbering is not None:
                    try:
                        nals = [sets.renumbering.unit(nal) for nal in nals]
                    except h264.BitstreamError as exc:
                        raise Ineligible(f"{piece.reader.path.name}: {exc}") from exc
                if n == 0:
                    # The IDR frame a piece starts with carries its parameter sets in
                    # band too, for decoders that switch to whatever came last.
                    nals = h264.with_parameter_sets(nals, list(sets.sps), list(sets.pps))
                data = h264.join_length_prefixed(nals)
            yield entry.k - piece.first, data, entry.idr
        return
    assert reencoder is not None
    yield from reencoder.encode(piece.reader.decode(piece.window, piece.first, piece.end, plan.fps))


def _free_id(sps: list[bytes], pps: list[bytes]) -> int:
    """An id that no SPS and no PPS of the sources uses (libx264 gives both the same)."""
    used = {h264.parse_sps(s).id for s in sps} | {h264.pps_id(p) for p in pps}
    free = next((i for i in range(32) if i not in used), None)
    if free is None:
        raise Ineligible("every parameter set id is taken")
    return free


def _piece_encoder(
    codec: str,
    size: tuple[int, int],
    fps: int,
    color: tuple[int, int, int, int],
    options: dict[str, str],
    threads: int,
) -> VideoCodecContext:
    """An encoder for re-encoded pieces: yuv420p at ``size`` and ``fps``, tagged with the
    copied source's colour (range, matrix, primaries, transfer), on ``threads`` threads."""
    ctx = av.CodecContext.create(codec, "w")
    assert isinstance(ctx, VideoCodecContext)
    ctx.thread_count = threads
    ctx.width, ctx.height = size
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps)
    ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc = color
    ctx.options = dict(options)
    return ctx


class _Reencoder:
    """libx264 set up to make pieces that sit between copied packets of the sources."""

    def __init__(self, plan: Plan, sps_id: int, threads: int) -> None:
        header = plan.header
        self._threads = threads
        preset, crf = _QUALITY[plan.quality]
        self._size = plan.size
        self._fps = plan.fps
        self._color = header.color
        self._options = {
            "preset": preset,
            "crf": crf,
            "profile": _X264_PROFILES[plan.profile],
            "level": str(max(h264.parse_sps(s).level for s in plan.sps)),
            # No B-frames: pieces are short, and without reordering they need no decode
            # delay. sps-id numbers its SPS and PPS apart from the sources' ones.
            "x264-params": f"sps-id={sps_id}:bframes=0",
        }
        self.sps: tuple[bytes, ...] = ()
        self.pps: tuple[bytes, ...] = ()
        self._learn_parameter_sets()

    def encode(self, frames: Iterator[VideoFrame]) -> Iterator[tuple[int, bytes, bool]]:
        """(frame index in the piece, 4-byte-length sample, keyframe) per packet, for a
        piece that starts with an IDR frame of its own."""
        ctx = self._open()
        for index, frame in enumerate(frames):
            frame.pts = index
            frame.time_base = ctx.time_base
            # The source's picture types would make x264 copy its GOP structure.
            frame.pict_type = PictureType.NONE
            for packet in ctx.encode(frame):
                yield self._sample(packet)
        for packet in ctx.encode(None):
            yield self._sample(packet)

    def _open(self) -> VideoCodecContext:
        ctx = _piece_encoder(
            "libx264", self._size, self._fps, self._color, self._options, self._threads
        )
        # Slice threads: pieces are a few dozen frames, too short for frame threads to
        # pay off; measured as fast, and 40 MB less peak memory than frame threads.
        ctx.thread_type = "SLICE"
        return ctx

    def _learn_parameter_sets(self) -> None:
        # The parameter sets depend on the settings only, not on the pictures: one grey
        # picture tells what every piece will carry, before the output's avcC is written.
        ctx = self._open()
        w, h = self._size
        grey = np.full((h * 3 // 2, w), 128, np.uint8)
        frame = VideoFrame.from_numpy_buffer(grey, format="yuv420p", width=w)
        frame.pts = 0
        packets = [*ctx.encode(frame), *ctx.encode(None)]
        nals = h264.split_annexb(bytes(packets[0]))
        self.sps = tuple(n for n in nals if h264.nal_type(n) == h264.NAL_SPS)
        self.pps = tuple(n for n in nals if h264.nal_type(n) == h264.NAL_PPS)
        if not self.sps or not self.pps:
            raise Ineligible("libx264 wrote no parameter sets in band")

    def _sample(self, packet: Packet[VideoStream]) -> tuple[int, bytes, bool]:
        nals = h264.split_annexb(bytes(packet))
        for nal in nals:
            kind = h264.nal_type(nal)
            if (kind == h264.NAL_SPS and nal not in self.sps) or (
                kind == h264.NAL_PPS and nal not in self.pps
            ):
                raise Ineligible("libx264 changed its parameter sets between pieces")
        assert packet.pts is not None
        return packet.pts, h264.join_length_prefixed(nals), packet.is_keyframe


# libvpx-vp9 CRF for re-encoded pieces, per output.quality: like the x264 pieces, they
# aim to look like the copied source around them.
_VP9_CRF: dict[schemas.Quality, str] = {"draft": "36", "standard": "28", "high": "20"}


class _Vp9Reencoder:
    """libvpx-vp9 set up to make pieces that sit between copied VP9 packets: profile 0
    (8-bit 4:2:0), the source's colour tags, one packet per frame (no lag, so no hidden
    alt-ref frames), every piece opening with a keyframe of its own."""

    def __init__(self, plan: Plan, threads: int) -> None:
        self._threads = threads
        self._size = plan.size
        self._fps = plan.fps
        self._color = plan.header.color
        self._options = {
            "deadline": "realtime",
            "cpu-used": "8",
            "row-mt": "1",
            "b": "0",
            "crf": _VP9_CRF[plan.quality],
            "lag-in-frames": "0",
        }

    def encode(self, frames: Iterator[VideoFrame]) -> Iterator[tuple[int, bytes, bool]]:
        """(frame index in the piece, packet, keyframe) per frame."""
        ctx = _piece_encoder(
            "libvpx-vp9", self._size, self._fps, self._color, self._options, self._threads
        )
        for index, frame in enumerate(frames):
            frame.pts = index
            frame.time_base = ctx.time_base
            frame.pict_type = PictureType.I if index == 0 else PictureType.NONE
            for packet in ctx.encode(frame):
                yield self._sample(packet)
        for packet in ctx.encode(None):
            yield self._sample(packet)

    @staticmethod
    def _sample(packet: Packet[VideoStream]) -> tuple[int, bytes, bool]:
        assert packet.pts is not None
        if packet.pts == 0 and not packet.is_keyframe:
            raise Ineligible("libvpx-vp9 did not open a piece with a keyframe")
        return packet.pts, bytes(packet), packet.is_keyframe


class _Sound:
    """The mix of every sounding track, encoded (AAC or Opus) as the picture advances.

    Mixing runs here, in step with the picture. The AAC encoder, the slowest part of a
    stream copy and free of the GIL, runs on a worker thread; its packets are muxed here
    as they complete, in order (a container is not thread-safe).
    """

    # AAC frames in flight (about 5 s): bounds how far the sound trails the picture, so
    # the muxer can keep interleaving.
    BACKLOG = 256

    def __init__(
        self,
        container: av.container.OutputContainer,
        mixers: list[audio.TrackMixer],
        total: int,
        codec: str,
        bit_rate: int,
    ) -> None:
        stream = container.add_stream(codec, rate=audio.RATE)
        assert isinstance(stream, AudioStream)
        stream.layout = "stereo"
        stream.bit_rate = bit_rate
        # Opened here, not lazily on the worker, so that writing the header (on this
        # thread) never races with opening the encoder.
        stream.codec_context.open()
        self._container = container
        self._stream = stream
        self._frame = encode.audio_frame_size(codec)
        self._mix = audio.Mixdown(mixers, total)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="remux-aac")
        self._pending: collections.deque[concurrent.futures.Future[list[Packet[AudioStream]]]] = (
            collections.deque()
        )

    def advance(self, due: int) -> None:
        """Mix and queue the sound up to output sample ``due``; mux what is encoded."""
        due = min(due, self._mix.total)
        while self._mix.sent < due:
            first = self._mix.sent
            samples = self._mix.take(self._frame)
            frame = AudioFrame.from_ndarray(
                np.ascontiguousarray(samples), format="fltp", layout="stereo"
            )
            frame.sample_rate = audio.RATE
            frame.pts = first
            frame.time_base = Fraction(1, audio.RATE)
            self._pending.append(self._pool.submit(self._stream.encode, frame))
        self._mux(wait=False)

    def finish(self) -> None:
        """Encode the rest, flush the encoder and mux everything."""
        self.advance(self._mix.total)
        self._pending.append(self._pool.submit(self._stream.encode, None))
        self._mux(wait=True)
        self._pool.shutdown()

    def abort(self) -> None:
        """Stop the worker without muxing what it still holds."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def _mux(self, *, wait: bool) -> None:
        while self._pending and (
            wait or self._pending[0].done() or len(self._pending) > self.BACKLOG
        ):
            self._container.mux(self._pending.popleft().result())
