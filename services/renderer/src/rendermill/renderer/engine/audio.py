"""Sound: reading sources as 48 kHz stereo, and mixing each track's actions.

Everything is counted in samples at :data:`RATE`. A track's mixer turns a block of
output samples into source sample positions with the same source-time rules as the
picture, reads them from a forward-only reader, applies the volume steps through a
short ramp, and adds the result into the mix.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import av
import av.container
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream

from rendermill.common import schemas
from rendermill.common.project import model
from rendermill.renderer.engine import probe

RATE = 48000
CHANNELS = 2
# Volume changes ramp linearly over this many samples (5 ms) so that steps do not click.
RAMP = RATE * 5 // 1000
# Samples kept behind the read position, for interpolation across block edges.
HISTORY = 64
# Decoded and dropped before the first sample wanted after a seek (100 ms): a packet
# decoded without the one before it (AAC's overlapping transforms, MP3's bit reservoir)
# comes out wrong. An Opus decoder started mid-stream is still some -30 dB off a steady
# tone 100 ms in, and under -60 dB after 300 ms: Opus gets OPUS_PREROLL.
PREROLL = RATE // 10
OPUS_PREROLL = 3 * RATE // 10
# Decoding forward this far is cheaper than a seek.
SEEK_AHEAD = 5 * RATE
# The fastest playback rate that sounds. No browser plays a media element faster (Chrome
# refuses a rate above 16), and sound resampled from, say, a thousand times the source
# is noise that would cost a thousand times the source to decode.
MAX_SOUNDING_RATE = 16.0

Samples = npt.NDArray[np.float32]
VolumeClock = schemas.VolumeClock


class AudioReader:
    """One action's source as 48 kHz stereo float samples, read at increasing positions."""

    def __init__(self, media: probe.Media, *, seek_ahead: int = SEEK_AHEAD) -> None:
        assert media.audio is not None
        self._seek_ahead = seek_ahead
        self._media = media
        self._info = media.audio
        self._container: av.container.InputContainer | None = None
        self._stream: AudioStream | None = None
        self._chunks: Iterator[Samples] = iter(())
        self._buf: Samples = np.zeros((CHANNELS, 0), np.float32)
        # Source sample index of the first sample in _buf.
        self._start = 0
        self._eof = False
        self._fresh = False

    @property
    def _end(self) -> int:
        return self._start + int(self._buf.shape[1])

    def read(self, first: int, count: int) -> Samples:
        """Samples ``first .. first + count`` (source sample indices); silence past the end.

        Raises MediaError when the file cannot be decoded or turns out truncated.
        """
        if self._container is None:
            self._open()
            self._seek(first)
        elif first < self._start or first > self._end + self._seek_ahead:
            self._seek(first)
        while self._end < first + count and not self._eof:
            self._pull()
        out = np.zeros((CHANNELS, count), np.float32)
        lo, hi = max(first, self._start), min(first + count, self._end)
        if lo < hi:
            out[:, lo - first : hi - first] = self._buf[:, lo - self._start : hi - self._start]
        keep_from = max(self._start, min(first + count, self._end) - HISTORY)
        if keep_from > self._start:
            self._buf = self._buf[:, keep_from - self._start :]
            self._start = keep_from
        return out

    def close(self) -> None:
        """Release the file; a later read reopens it."""
        if self._container is not None:
            self._container.close()
        self._container = None
        self._stream = None
        self._chunks = iter(())

    def _open(self) -> None:
        container = self._media.source.open()
        if not container.streams.audio:
            container.close()
            raise self._media.source.error("has no audio stream")
        self._container = container
        self._stream = container.streams.audio[0]
        self._stream.codec_context.thread_type = "AUTO"
        self._fresh = True

    def _seek(self, first: int) -> None:
        assert self._container is not None and self._stream is not None
        if not (self._fresh and first <= 0):
            tb = self._stream.time_base
            assert tb is not None
            # Start decoding a little early (see PREROLL).
            preroll = OPUS_PREROLL if self._stream.codec_context.name == "opus" else PREROLL
            target = int(((first - preroll) / RATE + self._media.origin) / tb)
            try:
                self._container.seek(max(0, target), stream=self._stream, backward=True)
            except (av.FFmpegError, OSError) as exc:
                raise self._media.source.error(
                    f"cannot be read at {first / RATE:.3f} s ({probe.reason(exc)})"
                ) from exc
        self._fresh = False
        self._eof = False
        self._buf = np.zeros((CHANNELS, 0), np.float32)
        self._start = first
        self._chunks = self._decode()

    def _decode(self) -> Iterator[Samples]:
        assert self._container is not None and self._stream is not None
        stream = self._stream
        # Browsers play mono on both speakers at full level; FFmpeg's default upmix would
        # put it 3 dB down, so mono is resampled as mono and duplicated.
        mono = self._info.channels == 1
        resampler = AudioResampler(format="fltp", layout="mono" if mono else "stereo", rate=RATE)
        placed = False
        for packet in self._container.demux(stream):
            for frame in packet.decode():
                if not isinstance(frame, AudioFrame):
                    continue
                if not placed and frame.pts is not None and stream.time_base is not None:
                    # The resampler's output is contiguous from here on; only the first
                    # frame after a seek says where in the source we are.
                    at = _placed(stream, frame)
                    self._start = round(at - self._media.origin * RATE)
                    placed = True
                for out in resampler.resample(frame):
                    yield _stereo(out)
        for out in resampler.resample(None):
            yield _stereo(out)

    def _pull(self) -> None:
        try:
            chunk = next(self._chunks, None)
        except (av.FFmpegError, OSError) as exc:
            raise self._media.source.error(
                f"is corrupt: decoding its sound failed after {self._end / RATE:.3f} s "
                f"({probe.reason(exc)})"
            ) from exc
        if chunk is None:
            self._eof = True
            end = self._info.declared_end
            if end is not None and self._end / RATE < end - probe.TRUNCATION_TOLERANCE:
                raise self._media.source.error(
                    f"is truncated: its sound stops at {self._end / RATE:.2f} s but the "
                    f"file says it lasts {end:.2f} s"
                )
            return
        self._buf = chunk if self._buf.shape[1] == 0 else np.concatenate((self._buf, chunk), 1)


def opus_pre_skip(head: bytes | None) -> int | None:
    """The pre-skip (samples at 48 kHz) an OpusHead says; None when ``head`` is not one."""
    if head is None or len(head) < 19 or head[:8] != b"OpusHead":
        return None
    return int.from_bytes(head[10:12], "little")


def _placed(stream: AudioStream, frame: AudioFrame) -> float:
    """The container sample (at RATE) where a decoded frame starts.

    WebM stores timestamps in milliseconds, so an Opus frame's is off by up to half a
    millisecond, and by up to a whole one when the decoder dropped the pre-skip from the
    first frame after a seek (moving its timestamp by a rounded 6.5 ms). Opus packets of
    20 ms sit on a grid from the stream's pre-skip (packet k starts at ``k * 960 -
    pre_skip``), and every decoded frame ends where its packet ends: the grid point
    within a millisecond of the frame's end is where it really ends.
    """
    tb = stream.time_base
    assert tb is not None and frame.pts is not None
    at = float(frame.pts * tb) * RATE
    tick = float(tb) * RATE
    ctx = stream.codec_context
    pre_skip = opus_pre_skip(ctx.extradata) if tick > 1 and ctx.name == "opus" else None
    if pre_skip is None or frame.sample_rate != RATE:
        return at
    end = at + frame.samples
    grid = round((end + pre_skip) / _OPUS_PACKET) * _OPUS_PACKET - pre_skip
    return float(grid - frame.samples) if abs(grid - end) <= tick + 0.5 else at


# The Opus packet length the grid above assumes: 20 ms, every encoder's default.
_OPUS_PACKET = 960


def _stereo(frame: AudioFrame) -> Samples:
    data = frame.to_ndarray().astype(np.float32, copy=False)
    if data.shape[0] == 1:
        data = np.repeat(data, CHANNELS, axis=0)
    return data


class Span:
    """One action of a track, in output samples: sounding for ``first <= n < last``."""

    def __init__(self, index: int, action: model.Action) -> None:
        self.index = index
        self.action = action
        # Tiny tolerance so that start = k / fps lands on the sample it names.
        self.first = math.ceil(action.start * RATE - 1e-6)
        self.last = math.ceil(action.end * RATE - 1e-6)


def spans(track: model.Track) -> list[Span]:
    """The track's actions that can sound, in output samples."""
    return [Span(i, a) for i, a in enumerate(track.actions) if not a.disabled and a.end > a.start]


def active(spans: list[Span], n: int) -> Span | None:
    """The span sounding at output sample ``n``: later start wins, then the later one in
    the array (TIMELINE.md's rule for overlaps on one track)."""
    best = None
    for span in spans:
        if span.first <= n < span.last and (best is None or span.action.start >= best.action.start):
            best = span
    return best


class TrackMixer:
    """Adds one track's sound to the mix, block by block, in timeline order."""

    def __init__(
        self,
        track: model.Track,
        media: probe.Media,
        *,
        clock: VolumeClock,
        seek_ahead: int = SEEK_AHEAD,
    ) -> None:
        """``seek_ahead``: how far ahead (samples) a read decodes forward rather than
        seeks; callers that read only short windows far apart lower it."""
        self.track = track
        self._seek_ahead = seek_ahead
        self._media = media
        # The editor's clock: timeline time on video tracks, source time on audio tracks.
        if clock == "editor":
            clock = "source" if track.controller == model.Controller.AUDIO else "timeline"
        self._clock: Literal["timeline", "source"] = clock
        self._spans = spans(track)
        self._readers: dict[int, AudioReader] = {}
        # The last RAMP - 1 target gains, continuing the ramp across blocks.
        self._gain_history = np.zeros(RAMP - 1, np.float64)
        duration = media.duration
        self._length = round(duration * RATE) if duration is not None else None

    def mix_into(self, mix: Samples, first: int) -> None:
        """Add this track's samples for output samples ``first .. first + len(mix)``."""
        count = mix.shape[1]
        end = first + count
        cuts = {first, end}
        for span in self._spans:
            for edge in (span.first, span.last):
                if first < edge < end:
                    cuts.add(edge)
        edges = sorted(cuts)
        target = np.zeros(count, np.float64)
        sound = np.zeros((CHANNELS, count), np.float32)
        for lo, hi in itertools.pairwise(edges):
            active = self._active(lo)
            if active is None:
                continue
            self._render(active, lo, hi, sound[:, lo - first : hi - first], target[lo - first :])
        gain = self._ramp(target)
        mix += sound * gain.astype(np.float32)
        self._close_finished(end)

    def checkpoint(self) -> npt.NDArray[np.float64]:
        """The volume ramp's state, for ``rewind``."""
        return self._gain_history.copy()

    def rewind(self, state: npt.NDArray[np.float64]) -> None:
        """Mix again from an earlier sample: the ramp continues from ``state`` (taken by
        ``checkpoint`` where the gains were the same as where mixing resumes); readers
        seek back by themselves."""
        self._gain_history = state.copy()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def _active(self, n: int) -> Span | None:
        return active(self._spans, n)

    def _render(
        self, span: Span, lo: int, hi: int, out: Samples, target: npt.NDArray[np.float64]
    ) -> None:
        action = span.action
        if action.freeze is not None or action.rate > MAX_SOUNDING_RATE:
            return
        n = np.arange(lo, hi, dtype=np.float64)
        # Source position in samples: s = trimStart + (t - start) * rate.
        pos = action.trim_start * RATE + (n - action.start * RATE) * action.rate
        if action.rate == 1.0:
            pos = np.round(pos)
        pos = np.maximum(pos, 0.0)
        if self._length:
            if action.loop:
                pos = np.mod(pos, self._length)
            else:
                inside = pos < self._length
                if not inside.any():
                    return
                # Past the media end the action is silent; its tail is cut off here.
                hi = lo + int(np.count_nonzero(inside))
                pos = pos[inside]
                n = n[: len(pos)]
        clock = n / RATE if self._clock == "timeline" else pos / RATE
        target[: hi - lo] = _gains(action.volume, clock)
        reader = self._readers.get(span.index)
        if reader is None:
            reader = self._readers[span.index] = AudioReader(
                self._media, seek_ahead=self._seek_ahead
            )
        # Loop wraps make the positions jump back; read each monotonic run on its own.
        breaks = np.flatnonzero(np.diff(pos) < 0) + 1
        for run in np.split(np.arange(len(pos)), breaks):
            if len(run) == 0:
                continue
            p = pos[run]
            out[:, run] = _read_at(reader, p)

    def _ramp(self, target: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # A causal moving average over RAMP samples turns every step of the target gain
        # into a linear ramp of exactly RAMP samples, without any per-step bookkeeping.
        extended = np.concatenate((self._gain_history, target))
        self._gain_history = extended[len(extended) - (RAMP - 1) :]
        sums = np.concatenate(([0.0], np.cumsum(extended)))
        smoothed: npt.NDArray[np.float64] = (sums[RAMP:] - sums[:-RAMP]) / RAMP
        return smoothed

    def _close_finished(self, now: int) -> None:
        for span in self._spans:
            if span.last <= now and span.index in self._readers:
                self._readers.pop(span.index).close()


def _read_at(reader: AudioReader, positions: npt.NDArray[np.float64]) -> Samples:
    """Samples at (possibly fractional) source ``positions``, which only increase."""
    lo = math.floor(positions[0])
    hi = math.floor(positions[-1]) + 2
    block = reader.read(lo, hi - lo)
    offsets = positions - lo
    if np.all(offsets == np.arange(len(offsets))):
        return block[:, : len(offsets)]
    # Playback rates other than 1 resample by linear interpolation, so pitch follows
    # the speed like a media element with preservesPitch off.
    grid = np.arange(hi - lo, dtype=np.float64)
    return np.stack([np.interp(offsets, grid, block[c]) for c in range(CHANNELS)]).astype(
        np.float32
    )


def _gains(
    steps: Sequence[model.VolumeStep], clock: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    gains = np.ones_like(clock)
    # The first covering step wins: apply them last to first so earlier ones overwrite.
    for step in reversed(steps):
        mask = np.ones(clock.shape, bool)
        if step.start is not None:
            mask &= clock >= step.start
        if step.end is not None:
            mask &= clock < step.end
        gains[mask] = min(1.0, max(0.0, step.gain))
    return gains


def sounds(track: model.Track) -> bool:
    """Whether any of the track's actions can be heard (hidden, muted, image and frozen
    actions are silent, as are those faster than MAX_SOUNDING_RATE)."""
    return track.has_sound and any(
        not a.disabled and a.end > a.start and a.freeze is None and a.rate <= MAX_SOUNDING_RATE
        for a in track.actions
    )


class Mixdown:
    """The mix of every sounding track, made ahead in blocks and taken frame by frame.

    Mixing costs mostly per call (small numpy arrays), so it runs on blocks of BLOCK
    samples; callers take exactly their encoder's frame size.
    """

    BLOCK = 8192

    def __init__(self, mixers: list[TrackMixer], total: int) -> None:
        self._mixers = mixers
        self.total = total
        self.sent = 0
        self._mixed: Samples = np.zeros((CHANNELS, 0), np.float32)

    def take(self, n: int) -> Samples:
        """The next ``n`` samples (fewer at the end), clipped to [-1, 1]."""
        n = min(n, self.total - self.sent)
        while self._mixed.shape[1] < n:
            first = self.sent + int(self._mixed.shape[1])
            count = min(self.BLOCK, self.total - first)
            mix = np.zeros((CHANNELS, count), np.float32)
            for mixer in self._mixers:
                mixer.mix_into(mix, first)
            np.clip(mix, -1.0, 1.0, out=mix)
            self._mixed = np.concatenate((self._mixed, mix), axis=1)
        out, self._mixed = self._mixed[:, :n], self._mixed[:, n:]
        self.sent += n
        return out
