"""Copying a cut-only timeline's sound: the sources' AAC packets, re-encoded only at joins.

The stream-copy path (``remux``) mixes and encodes the whole sound unless this module
finds it can be copied. It can when:

- at every output sample exactly one action sounds (no silence, no two tracks at once:
  a music bed, a voice-over or a gap is mixed), by the mixer's rules (``audio.sounds``,
  ``audio.active``: hidden, muted and frozen actions are silent);
- that action plays at rate 1 at full volume (every volume step, clamped, is 1) and its
  sound stays inside its media (no loop wrap, no silence past the end);
- its file is MP4/MOV and its first audio stream AAC LC without SBR, 48 kHz stereo (the
  compose path's output format), in packets of 1024 samples at a 1/48000 time base, with
  the same LC configuration (the AudioSpecificConfig's first 16 bits) in every file the
  timeline copies from.

How the sound is put together. AAC packets sit on a grid of 1024 samples: output packet
n plays output samples ``n * 1024 .. (n + 1) * 1024`` (packet -1 is the encoder delay that
an edit list skips, as in the compose path's files). A source's packets sit on a grid of
their own, so a segment's packets are copied whole onto the output grid with the segment
shifted by d samples, ``-512 < d <= 512`` (at most 10.7 ms, a third of a frame at 30 fps),
the same d all along the segment: sound and picture never drift apart. Each AAC packet
overlaps its neighbours by 1024 samples (MDCT), so a copied packet decodes right only
after the packet that preceded it in its source; around every join (and at the start and
the end of the timeline) the packets from the one before the join's packet to the one
after the 5 ms fade-in are re-encoded from the compose path's own mixers, run on the
actions shifted by their d. The re-encoded run begins and ends with the signal its copied
neighbours carry, so their overlap cancels as it did in the source; inside the run the
join lands on its exact sample, with the compose path's fade. The overlap also needs the
same window on both sides: a copied packet before a run must end with a long window
(ONLY_LONG or LONG_STOP) and one after it start with one, and the run's own first and
last packets must match them in window sequence and shape. A run's ends move outwards
until they do (the encoder switches to short windows where it sees a transient coming).

``plan`` decides from headers and a demux of the packet windows the timeline uses;
``encode_joins`` then mixes and encodes the runs, a few packets each, before anything is
written. Whatever keeps the sound off this path raises ``Ineligible`` with the reason
(the caller then mixes the whole sound).

The plan and the writer serve Opus in WebM too (``remux_opus``: its files, on a grid
of 960 samples from the pre-skip, and its own way of fitting the runs).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections.abc import Callable, Generator, Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import av
import av.container
import msgspec
import numpy as np
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.packet import Packet, PacketSideData

from rendermill.common import errors
from rendermill.common.project import model
from rendermill.renderer.engine import audio, probe
from rendermill.renderer.engine.remux_source import Ineligible

# Samples per AAC frame (and per packet).
FRAME = 1024
# Frames mixed and encoded before a re-encoded run, so that the encoder has settled by
# the run's first packet.
_LEAD = 4
# Frames mixed per call while re-encoding.
_BLOCK = 8
_AAC_LC = 2
_48_KHZ = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Grid:
    """Where a sound codec's packets sit: packet n holds samples ``n * frame + offset``
    up to ``(n + 1) * frame + offset``, in a source as in the output, and the output's
    first packet is ``first``."""

    frame: int
    offset: int
    first: int

    def start(self, n: int) -> int:
        """The first sample of packet n."""
        return n * self.frame + self.offset

    def after(self, sample: int) -> int:
        """The first packet that starts at or after ``sample``."""
        return -(-(sample - self.offset) // self.frame)

    def holding(self, sample: int) -> int:
        """The packet that holds ``sample``."""
        return (sample - self.offset) // self.frame


# AAC in MP4: packet -1 is the encoder delay that the edit list skips.
AAC = Grid(FRAME, 0, -1)


class File:
    """A sounding source's first audio stream, opened for its packets: AAC in MP4/MOV
    (``OpusFile`` in ``remux_opus`` is the WebM kind)."""

    grid = AAC
    # The container (by FFmpeg's demuxer name) and codec copied from, and how to say so.
    CONTAINER, CODEC, KIND = "mov", "aac", ("MP4/MOV", "AAC")

    def __init__(self, path: Path, origin: float) -> None:
        """Open ``path``; raises Ineligible when it cannot be opened (the compose path's
        mixers then word the error for the user). ``origin`` is the container time of
        source time 0 (``probe.Media.origin``)."""
        self.path = path
        try:
            # Only the sample descriptions are needed: no probing by decoding.
            self._container = av.open(
                str(path),
                "r",
                metadata_errors="ignore",
                container_options=probe.NO_PROBING,
            )
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise Ineligible(f"{path.name} cannot be opened ({exc})") from exc
        audio_streams = self._container.streams.audio
        self._stream: AudioStream | None = audio_streams[0] if audio_streams else None
        # The picture's packets (most of the file) are skipped, not read, when the sound's
        # are demuxed.
        for other in self._container.streams:
            if other is not self._stream:
                other.discard = av.stream.Discard.all
        # Source sample index of container timestamp 0 (the time base is 1 / RATE).
        self._origin = round(origin * audio.RATE)
        self._origin_exact = abs(origin * audio.RATE - self._origin) < 1e-6

    @property
    def stream(self) -> AudioStream:
        assert self._stream is not None
        return self._stream

    @property
    def config(self) -> bytes:
        """The AudioSpecificConfig (from the sample description)."""
        return bytes(self.stream.codec_context.extradata or b"")

    @property
    def key(self) -> bytes:
        """What must be the same in every file the timeline copies from."""
        # LC's whole configuration is in the first 16 bits (object type, rate, channels,
        # GASpecificConfig); what may follow only says "no SBR", which changes nothing.
        return self.config[:2]

    @property
    def bit_rate(self) -> int | None:
        return self.stream.codec_context.bit_rate or self.stream.bit_rate or None

    def problem(self) -> str | None:
        """Why this file's sound cannot be copied into the output; None if it can."""
        if self.CONTAINER not in self._container.format.name.split(","):
            return f"container {self._container.format.name} is not {self.KIND[0]}"
        if self._stream is None:
            return "no audio stream"
        if self._stream.codec_context.name != self.CODEC:
            return f"sound codec {self._stream.codec_context.name} is not {self.KIND[1]}"
        if (problem := self._coding_problem(self._stream)) is not None:
            return problem
        if not self._origin_exact:
            return "the picture starts between two sound samples"
        return None

    def _coding_problem(self, stream: AudioStream) -> str | None:
        """Why the stream's coding does not fit the output's; None if it does."""
        ctx = stream.codec_context
        config = self.config
        # AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1): audioObjectType (5 bits; 2 is
        # LC), samplingFrequencyIndex (4 bits; 3 is 48 kHz), channelConfiguration (4).
        if len(config) < 2:
            return "no AudioSpecificConfig in the sample description"
        head = int.from_bytes(config[:2], "big")
        kind, frequency, channels = head >> 11, (head >> 7) & 0xF, (head >> 3) & 0xF
        if kind != _AAC_LC:
            return f"AAC object type {kind} is not LC (2)"
        if _sbr_present(config):
            return "the sound is HE-AAC (SBR signalled in the AudioSpecificConfig)"
        if frequency != _48_KHZ or channels != audio.CHANNELS:
            return f"sound is {ctx.sample_rate} Hz x {ctx.channels}, not 48000 Hz stereo"
        if stream.time_base != Fraction(1, audio.RATE):
            return f"sound time base {stream.time_base} is not 1/{audio.RATE}"
        return None

    def scan(self, first: int, last: int) -> tuple[int, int]:
        """Check the packets holding source samples ``first .. last - 1``: contiguous,
        FRAME samples each, on one grid. Returns the source sample of the first and the
        last packet start found (packets past the file's ends are not there).

        Raises Ineligible when they are not, or the file cannot be read.
        """
        found: tuple[int, int] | None = None
        short = False
        frame = self.grid.frame
        for x, packet in self._from(first):
            if found is not None and (x != found[1] + frame or short):
                # (Only the stream's last packet may be short.)
                raise Ineligible(f"{self.path.name}: sound packets are not contiguous")
            short = self._samples(packet) != frame
            found = (x, x) if found is None else (found[0], x)
            if x >= last:
                break
        if found is None:
            raise Ineligible(f"{self.path.name}: no sound where the timeline needs it")
        return found

    def packets(self, first: int, count: int) -> Iterator[bytes]:
        """The ``count`` packets starting at source samples ``first``, ``first + FRAME``,
        ...; raises Ineligible when the file no longer reads as scanned."""
        want = first
        frame = self.grid.frame
        end = first + count * frame
        for x, packet in self._from(first):
            if x < want:
                continue
            if x != want:
                break
            yield bytes(packet)
            want += frame
            if want >= end:
                return
        raise Ineligible(f"{self.path.name}: sound packet at sample {want} is missing")

    def _from(self, first: int) -> Iterator[tuple[int, Packet[AudioStream]]]:
        """(source sample, packet) from the packet holding sample ``first`` on."""
        stream = self.stream
        tb = stream.time_base
        assert tb is not None
        try:
            target = int(Fraction(first + self._origin, audio.RATE) / tb)
            self._container.seek(max(0, target), stream=stream, backward=True)
            for packet in self._container.demux(stream):
                if packet.pts is not None:
                    yield self._sample_of(packet) - self._origin, packet
        except (av.FFmpegError, OSError) as exc:
            raise Ineligible(f"{self.path.name} cannot be read ({exc})") from exc

    def _sample_of(self, packet: Packet[AudioStream]) -> int:
        """The container sample where a packet starts (the time base is 1 / RATE)."""
        assert packet.pts is not None
        return packet.pts

    def _samples(self, packet: Packet[AudioStream]) -> int:
        """How many samples a packet holds."""
        return packet.duration or 0

    def close(self) -> None:
        self._container.close()


class Files:
    """The open sound sources of one remux, one per path; closed together on exit.
    ``kind`` opens them (``File`` for AAC in MP4, ``remux_opus.OpusFile`` for WebM)."""

    def __init__(self, kind: Callable[[Path, float], File] = File) -> None:
        self._kind = kind
        self._open: dict[Path, File] = {}

    def __enter__(self) -> Files:
        return self

    def __exit__(self, *exc: object) -> None:
        for file in self._open.values():
            file.close()
        self._open.clear()

    def get(self, path: Path, origin: float) -> File:
        file = self._open.get(path)
        if file is None:
            file = self._open[path] = self._kind(path, origin)
        return file


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """Output samples ``lo .. hi - 1`` sound ``action`` from ``file``: output sample n
    plays source sample ``n + shift`` (the exact position plus the segment's d)."""

    lo: int
    hi: int
    action: model.Action
    file: File
    shift: int


@dataclasses.dataclass(frozen=True, slots=True)
class SoundPlan:
    total: int
    segments: tuple[Segment, ...]
    # Runs of output packets [a, b) that are re-encoded; every other packet is copied.
    encoded: tuple[tuple[int, int], ...]
    template: File
    bit_rate: int
    # The project with every sounding action shifted by its d: what the mixers of the
    # re-encoded runs play.
    shifted: model.Project
    # What the sounding tracks' files hold, by track id (probed once).
    medias: Mapping[str, probe.Media]
    # The re-encoded packets by output packet (``encode_joins`` fills it in).
    joins: Mapping[int, bytes] = dataclasses.field(default_factory=dict)
    # The last packet's skip_samples side data (Opus: the samples after the end).
    tail: PacketSideData | None = None

    @property
    def grid(self) -> Grid:
        return self.template.grid

    @property
    def end(self) -> int:
        """One past the last output packet."""
        return self.grid.after(self.total)

    @property
    def packets(self) -> int:
        """How many output packets there are."""
        return self.end - self.grid.first

    @property
    def copied(self) -> int:
        return self.packets - sum(b - a for a, b in self.encoded)

    @property
    def largest_shift(self) -> int:
        return max(abs(s.shift - _exact(s.action, s.lo)) for s in self.segments)


def sound_media(track: model.Track, sources: Mapping[str, Path]) -> probe.Media:
    """What a sounding track's file holds, its sound only probed (the copy plan checked
    the picture). Raises Ineligible when no file was given, MediaError when it is
    unusable."""
    path = sources.get(track.url)
    if path is None:
        raise Ineligible(f"no local file for {track.url!r}")
    return probe.probe(probe.Source(track=track, path=Path(path)), picture=False, sound=True)


def plan(
    project: model.Project,
    sources: Mapping[str, Path],
    total: int,
    files: Files,
    default_bit_rate: int,
) -> SoundPlan:
    """Plan copying the sound of ``project``'s first ``total`` output samples; raises
    Ineligible when it cannot be copied (see the module docstring)."""
    sounding: list[tuple[model.Track, list[audio.Span], File, probe.Media]] = []
    medias: dict[str, probe.Media] = {}
    for track in project.tracks:
        if not audio.sounds(track):
            continue
        try:
            media = sound_media(track, sources)
        except errors.MediaError as exc:  # the mixers raise it again for the user
            raise Ineligible(f"{track.url!r}: {exc}") from exc
        medias[track.id] = media
        if media.audio is None:
            continue  # silent, as the mixers treat it
        sounding.append(
            (track, audio.spans(track), files.get(media.source.path, media.origin), media)
        )

    raw = _segments(sounding, total)
    template = raw[0].file
    grid = template.grid
    scanned: list[tuple[Segment, int, int]] = []
    shifts: dict[int, int] = {}
    for piece in raw:
        file, action = piece.file, piece.action
        if (problem := file.problem()) is not None:
            raise Ineligible(f"sound of {file.path.name}: {problem}")
        if file.key != template.key or file.grid != grid:
            raise Ineligible("the sources' sound is coded with different configurations")
        if (problem := _action_problem(action)) is not None:
            raise Ineligible(f"sound of action {action.id!r}: {problem}")
        exact = _exact(action, piece.lo)
        if piece.lo + exact < 0 or (piece.length is not None and piece.hi + exact > piece.length):
            raise Ineligible(f"sound of action {action.id!r} runs outside its media")
        first, last = file.scan(
            piece.lo + exact - 2 * grid.frame, piece.hi + exact + 2 * grid.frame
        )
        # Move the segment by d so that its packets land on the output grid.
        d = (first - grid.offset - exact) % grid.frame
        if d > grid.frame // 2:
            d -= grid.frame
        if shifts.setdefault(id(action), d) != d:
            raise Ineligible(f"sound of action {action.id!r} would need two shifts")
        scanned.append((Segment(piece.lo, piece.hi, action, file, exact + d), first, last))

    segments = [segment for segment, _, _ in scanned]
    encoded = _encoded_runs([s.lo for s in segments[1:]], total, grid)
    for segment, first, last in scanned:
        for a, b in _copied_runs(segment, encoded, grid):
            if grid.start(a) + segment.shift < first or grid.start(b - 1) + segment.shift > last:
                raise Ineligible(f"{segment.file.path.name}: sound packets missing")
    return SoundPlan(
        total=total,
        segments=tuple(segments),
        encoded=tuple(encoded),
        template=template,
        bit_rate=template.bit_rate or default_bit_rate,
        shifted=_shifted(project, shifts),
        medias=medias,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Piece:
    lo: int
    hi: int
    file: File
    action: model.Action
    # The media's length in samples, past which the mixer is silent; None if unknown.
    length: int | None


def _segments(
    sounding: list[tuple[model.Track, list[audio.Span], File, probe.Media]], total: int
) -> list[_Piece]:
    """The output samples cut where the sounding action changes; exactly one must sound
    everywhere."""
    edges = {0, total}
    for _, spans, _, _ in sounding:
        for span in spans:
            edges.update(e for e in (span.first, span.last) if 0 < e < total)
    pieces: list[_Piece] = []
    for lo, hi in itertools.pairwise(sorted(edges)):
        heard = []
        for _, spans, file, media in sounding:
            playing = audio.active(spans, lo)
            if playing is not None and playing.action.freeze is None:
                heard.append((playing.action, file, media))
        if len(heard) != 1:
            what = "silence" if not heard else f"{len(heard)} actions sound together"
            raise Ineligible(f"{what} at {lo / audio.RATE:.3f} s")
        action, file, media = heard[0]
        if pieces and pieces[-1].action is action and pieces[-1].hi == lo:
            pieces[-1] = dataclasses.replace(pieces[-1], hi=hi)
            continue
        length = round(media.duration * audio.RATE) if media.duration is not None else None
        pieces.append(_Piece(lo, hi, file, action, length))
    return pieces


def _sbr_present(config: bytes) -> bool:
    """Whether an AAC LC AudioSpecificConfig carries a sync extension that turns SBR on
    (explicit HE-AAC signalling: 0x2b7, object type 5, sbrPresentFlag 1)."""
    if len(config) < 5:
        return False
    tail = int.from_bytes(config[2:5], "big")
    return tail >> 13 == 0x2B7 and (tail >> 8) & 0x1F == 5 and bool((tail >> 7) & 1)


def _action_problem(action: model.Action) -> str | None:
    if action.rate != 1.0:
        return "playback rate is not 1"
    if any(min(1.0, max(0.0, step.gain)) != 1.0 for step in action.volume):
        return "volume is not 1"
    return None


def _exact(action: model.Action, n: int) -> int:
    """Source sample minus output sample, by the mixer's formula at rate 1."""
    return round(action.trim_start * audio.RATE + (n - action.start * audio.RATE)) - n


def _encoded_runs(joins: list[int], total: int, grid: Grid = AAC) -> list[tuple[int, int]]:
    """Runs of output packets [a, b) to re-encode: around every join, and at the start and
    the end. Around a join at sample j, from the packet before j's packet (whose overlap
    reaches back into the sound before j only) to the first packet after the fade-in
    (``audio.RAMP`` samples from j), so that copied packets never straddle a join."""
    last = grid.after(total)
    runs = [(grid.first, grid.after(audio.RAMP))]
    for j in joins:
        runs.append((grid.holding(j) - 1, min(last, grid.after(j + audio.RAMP))))
    runs.append((max(grid.first, grid.holding(total) - 1), last))
    merged: list[tuple[int, int]] = []
    for a, b in runs:
        # Runs whose mixing windows would overlap are joined.
        if merged and a - merged[-1][1] <= _LEAD:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _copied_runs(
    segment: Segment, encoded: list[tuple[int, int]], grid: Grid
) -> list[tuple[int, int]]:
    """Runs of output packets [a, b) copied from ``segment``: those starting inside it
    that are not re-encoded."""
    lo, hi = grid.after(segment.lo), grid.after(segment.hi)
    runs: list[tuple[int, int]] = []
    for a, b in encoded:
        if b <= lo or a >= hi:
            continue
        if a > lo:
            runs.append((lo, a))
        lo = max(lo, b)
    if lo < hi:
        runs.append((lo, hi))
    return runs


def _shifted(project: model.Project, shifts: dict[int, int]) -> model.Project:
    """``project`` with every sounding action's trimStart moved by its d samples."""
    tracks = []
    for track in project.tracks:
        actions = tuple(
            msgspec.structs.replace(a, trim_start=a.trim_start + shifts[id(a)] / audio.RATE)
            if id(a) in shifts
            else a
            for a in track.actions
        )
        tracks.append(msgspec.structs.replace(track, actions=actions))
    return msgspec.structs.replace(project, tracks=tuple(tracks))


def encode_joins(sound: SoundPlan, mixers: list[audio.TrackMixer]) -> SoundPlan:
    """Re-encode the packets around the joins from ``mixers`` (the mixers of
    ``sound.shifted``), choosing each run's ends so that its packets fit their copied
    neighbours; returns the plan with the runs and their packets.

    Raises Ineligible when a run cannot be made to fit (the sound is then mixed whole),
    or re-encoding would cover too much of the output to be worth it; MediaError when a
    sound source cannot be decoded.
    """
    return _AacJoiner(sound, mixers).run()


class LeftMismatch(Exception):
    """A run's first re-encoded packets do not fit the copied packet before it."""


# How far a run's ends may move for its packets to fit their neighbours, in packets.
REACH = 16


class Joiner:
    """Fits the re-encoded runs of a sound copy between its copied packets, one run at
    a time, in order; a codec's kind says how a run is encoded and when its ends fit
    (``_encode``), and may first move the runs' ends (``_prepare``)."""

    CODEC = "AAC"

    def __init__(self, sound: SoundPlan, mixers: list[audio.TrackMixer]) -> None:
        self._plan = sound
        self._mixers = mixers
        self._grid = sound.grid
        self._last = sound.end
        self._starts = [s.lo for s in sound.segments]
        self._source: dict[int, bytes] = {}
        # Every packet re-encoded so far, by output packet; the first packet that no run
        # has mixed yet (the mixers read forward only); the last packet's side data.
        self._joins: dict[int, bytes] = {}
        self._mixed_to = self._lead_start(self._grid.first)
        self._tail: PacketSideData | None = None

    def run(self) -> SoundPlan:
        runs = self._prepare(list(self._plan.encoded))
        done: list[tuple[int, int]] = []
        budget = max(64, self._plan.packets // 4)
        k = 0
        while k < len(runs):
            # The mixers' ramps as they stand between two runs: steady until the next
            # join, so every attempt at this run can start from here.
            saved = [mixer.checkpoint() for mixer in self._mixers]
            floor = self._mixed_to  # no run may mix what an earlier one did
            a = runs[k][0]
            for _ in range(REACH):
                if self._lead_start(a) < floor:
                    raise Ineligible(f"re-encoded {self.CODEC} packets do not fit after packet {a}")
                try:
                    a, b, k, encoded = self._encode(a, runs, k)
                    break
                except LeftMismatch:
                    # The first packets do not fit the copied one before them (the
                    # encoder saw a transient coming): start the run a packet earlier.
                    for mixer, state in zip(self._mixers, saved, strict=True):
                        mixer.rewind(state)
                    a -= 1
            else:
                raise Ineligible(f"re-encoded {self.CODEC} packets do not fit after packet {a}")
            self._joins.update(encoded)
            done.append((a, b))
            if len(self._joins) > budget:
                raise Ineligible("joins too close together: re-encoding most of the sound")
        return dataclasses.replace(
            self._plan, encoded=tuple(done), joins=self._joins, tail=self._tail
        )

    def _lead_start(self, a: int) -> int:
        """The first packet a run from ``a`` mixes: _LEAD packets before it."""
        return a - _LEAD

    def _prepare(self, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The runs to fit, their ends moved where they must be."""
        return runs

    def _encode(
        self, a: int, runs: list[tuple[int, int]], k: int
    ) -> tuple[int, int, int, dict[int, bytes]]:
        """Encode run ``k`` from packet ``a`` up to where its last packet fits the copied
        ones after it, taking over the runs it reaches towards (their mixing windows
        must not overlap); set ``_mixed_to``. Returns the run's ends, the index of the
        next run and its packets; raises LeftMismatch when the first packets do not fit
        the copied ones before them, Ineligible when the run cannot be made to fit."""
        raise NotImplementedError

    def _encoder(self, codec: str, sample_format: str) -> AudioCodecContext:
        """A stereo 48 kHz encoder at the plan's bit rate, for one run."""
        ctx = av.CodecContext.create(codec, "w")
        assert isinstance(ctx, AudioCodecContext)
        ctx.sample_rate = audio.RATE
        ctx.layout = "stereo"
        ctx.format = sample_format
        ctx.bit_rate = self._plan.bit_rate
        ctx.time_base = Fraction(1, audio.RATE)
        return ctx

    def _packet(self, n: int) -> bytes:
        """The source packet that output packet ``n`` would copy."""
        data = self._source.get(n)
        if data is None:
            segment = self._segment(n)
            data = next(segment.file.packets(self._grid.start(n) + segment.shift, 1))
            self._source[n] = data
        return data

    def _segment(self, n: int) -> Segment:
        """The segment output packet ``n`` starts in."""
        index = max(0, bisect.bisect_right(self._starts, self._grid.start(n)) - 1)
        return self._plan.segments[index]

    def _mix(self, lo: int, hi: int) -> audio.Samples:
        """Output samples lo .. hi - 1 of the shifted mix (silence outside the timeline)."""
        mix = np.zeros((audio.CHANNELS, hi - lo), np.float32)
        a, b = max(lo, 0), min(hi, self._plan.total)
        if a < b:
            for mixer in self._mixers:
                mixer.mix_into(mix[:, a - lo : b - lo], a)
            np.clip(mix, -1.0, 1.0, out=mix)
        return mix


class _AacJoiner(Joiner):
    def _prepare(self, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        # Move each run's ends off the source packets they cannot meet: a copied packet
        # before a run must end a long window, one after it start a long window.
        return [self._widen(a, b) for a, b in runs]

    def _widen(self, a: int, b: int) -> tuple[int, int]:
        if a > -1:
            for _ in range(REACH):
                window = _window(self._packet(a - 1))
                if window is not None and window[0] in _ENDS_LONG:
                    break
                a -= 1
            else:
                raise Ineligible(f"no long AAC window before packet {a}")
        if b < self._last:
            for _ in range(REACH):
                if b >= self._last:
                    break
                window = _window(self._packet(b))
                if window is not None and window[0] in _STARTS_LONG:
                    break
                b += 1
            else:
                raise Ineligible(f"no long AAC window after packet {b}")
        return a, b

    def _encode(
        self, a: int, runs: list[tuple[int, int]], k: int
    ) -> tuple[int, int, int, dict[int, bytes]]:
        # Up to the first packet b' >= its b at which the last one fits the copied packet
        # after it (see ``_fits``).
        b = runs[k][1]
        k += 1
        ctx = self._encoder("aac", "fltp")
        out: dict[int, bytes] = {}
        limit = b + REACH
        at = (a - _LEAD) * FRAME
        checked = a <= -1
        while True:
            while k < len(runs) and runs[k][0] - b <= _LEAD:
                b = max(b, runs[k][1])
                limit = b + REACH
                k += 1
            # Feed frames until packet b - 1 is out (the encoder holds a frame or two).
            end = self._last * FRAME if b >= self._last else (b + 1) * FRAME
            while at < end or (b < self._last and b - 1 not in out and at < (b + 8) * FRAME):
                step = _BLOCK * FRAME if at < end else FRAME
                block = self._mix(at, min(max(end, at + FRAME), at + step))
                for packet in _encode_block(ctx, at, block):
                    self._keep(packet, a, out)
                at += block.shape[1]
                if not checked and a in out:
                    self._check_left(a, out)
                    checked = True
            if b >= self._last:
                for packet in ctx.encode(None):
                    self._keep(packet, a, out)
                b = self._last
                break
            if self._fits(out.get(b - 1), b):
                break
            b += 1
            if b > limit:
                raise Ineligible(f"re-encoded AAC packets do not fit before packet {b}")
        missing = [n for n in range(a, b) if n not in out]
        if missing:
            raise Ineligible(f"the AAC encoder gave no packet {missing[0]}")
        if not checked:
            self._check_left(a, out)
        self._mixed_to = -(-at // FRAME)
        return a, b, k, {n: out[n] for n in range(a, b)}

    def _fits(self, ours: bytes | None, b: int) -> bool:
        """Whether our packet b - 1 fits the copied packet b: the window it ends with is
        the one b starts with, and its window shape is the one b's own predecessor had
        (the decoder windows b's first half with its predecessor's shape)."""
        if ours is None:
            return False
        mine, original, after = (
            _window(ours),
            _window(self._packet(b - 1)),
            _window(self._packet(b)),
        )
        if mine is None or original is None or after is None:
            return False
        return (mine[0] in _ENDS_LONG) == (after[0] in _STARTS_LONG) and mine[1] == original[1]

    def _check_left(self, a: int, out: dict[int, bytes]) -> None:
        before, first, ours_before = (
            _window(self._packet(a - 1)),
            _window(out[a]),
            _window(out[a - 1]) if a - 1 in out else None,
        )
        if before is None or first is None or ours_before is None:
            raise Ineligible(f"AAC windows unreadable around packet {a}")
        if (before[0] in _ENDS_LONG) != (first[0] in _STARTS_LONG) or before[1] != ours_before[1]:
            raise LeftMismatch

    @staticmethod
    def _keep(packet: Packet[AudioStream], a: int, out: dict[int, bytes]) -> None:
        if packet.pts is None or packet.pts % FRAME:
            raise Ineligible(f"the AAC encoder put a packet at {packet.pts}")
        n = packet.pts // FRAME
        if n >= a - 1:
            out[n] = bytes(packet)


def _encode_block(
    ctx: AudioCodecContext, at: int, block: audio.Samples
) -> Iterator[Packet[AudioStream]]:
    for k in range(0, block.shape[1], FRAME):
        frame = AudioFrame.from_ndarray(
            np.ascontiguousarray(block[:, k : k + FRAME]), format="fltp", layout="stereo"
        )
        frame.sample_rate = audio.RATE
        frame.pts = at + k
        frame.time_base = Fraction(1, audio.RATE)
        yield from ctx.encode(frame)


# AAC window sequences (ISO/IEC 14496-3, ics_info): ONLY_LONG 0, LONG_START 1,
# EIGHT_SHORT 2, LONG_STOP 3, by the window they start and end with.
_STARTS_LONG = frozenset({0, 1})
_ENDS_LONG = frozenset({0, 3})
_ID_SCE, _ID_CPE, _ID_LFE, _ID_FIL = 0, 1, 3, 6


def _window(data: bytes) -> tuple[int, int] | None:
    """(window_sequence, window_shape) of an AAC LC raw data block's first channel
    element, or None when it does not start with one that tells (a channel pair with a
    window per channel tells nothing for the second channel)."""
    pos = 0
    # Fill elements (at most 270 bytes) may come first.
    head = data[:300]
    width = 8 * len(head)
    bits = int.from_bytes(head, "big")

    def take(n: int) -> int:
        nonlocal pos
        value = (bits >> (width - pos - n)) & ((1 << n) - 1)
        pos += n
        return value

    if width < 32:
        return None
    element = take(3)
    while element == _ID_FIL:
        count = take(4)
        if count == 15:
            count += take(8) - 1
        pos += 8 * count
        if pos + 32 > width:
            return None
        element = take(3)
    if element in (_ID_SCE, _ID_LFE):
        take(4 + 8 + 1)  # element_instance_tag, global_gain, ics_reserved_bit
    elif element == _ID_CPE:
        take(4)
        if not take(1):  # common_window
            return None
        take(1)
    else:
        return None
    return take(2), take(1)


class CopiedSound:
    """Writes a planned sound copy into an output container, in step with the picture:
    ``advance`` muxes the packets up to a sample, ``finish`` the rest."""

    def __init__(self, container: av.container.OutputContainer, sound: SoundPlan) -> None:
        stream = container.add_stream_from_template(sound.template.stream)
        assert isinstance(stream, AudioStream)
        stream.time_base = Fraction(1, audio.RATE)
        self._container = container
        self._stream = stream
        self._plan = sound
        self._grid = sound.grid
        self._next = sound.grid.first
        self._source: Generator[bytes] = self._packets()

    def advance(self, due: int) -> None:
        """Mux every packet that ends at or before output sample ``due``."""
        while self._next < self._plan.end and self._grid.start(self._next + 1) <= due:
            self._mux(next(self._source))

    def finish(self) -> None:
        while self._next < self._plan.end:
            self._mux(next(self._source))

    def abort(self) -> None:
        self._source.close()

    def _mux(self, data: bytes) -> None:
        packet = Packet(data)
        packet.stream = self._stream
        packet.time_base = Fraction(1, audio.RATE)
        start = self._grid.start(self._next)
        packet.pts = packet.dts = start
        # The last packet lasts to the end of the timeline, as the compose path's does.
        packet.duration = min(self._grid.frame, self._plan.total - start)
        if self._next == self._plan.end - 1 and self._plan.tail is not None:
            self._plan.tail.to_packet(packet)
        self._container.mux(packet)
        self._next += 1

    def _packets(self) -> Generator[bytes]:
        """Every output packet from the grid's first on, in order."""
        starts = [s.lo for s in self._plan.segments]
        joins = self._plan.joins
        grid = self._grid
        n = grid.first
        for a, b in self._plan.encoded:
            while n < a:
                segment = self._plan.segments[
                    max(0, bisect.bisect_right(starts, grid.start(n)) - 1)
                ]
                count = min(a, grid.after(segment.hi)) - n
                yield from segment.file.packets(grid.start(n) + segment.shift, count)
                n += count
            for n in range(a, b):
                yield joins[n]
            n = b
