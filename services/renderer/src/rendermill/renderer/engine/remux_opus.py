"""Copying a cut-only WebM timeline's sound: the sources' Opus packets, re-encoded only
around the joins.

The plan is ``remux_audio``'s (one action at a time sounds, at rate 1 and full volume,
inside its media; each segment shifted by at most half a packet, 10 ms, so its packets
land on the output's grid), with these sources: WebM/Matroska files whose first audio
stream is Opus, stereo, channel mapping family 0, no output gain, in packets of 20 ms
whose timestamps sit on the grid that the stream's pre-skip sets (packet k holds samples
``k * 960 - pre_skip`` onwards; WebM's millisecond timestamps are read to the nearest
point of that grid), with the same pre-skip as libopus (whose packets the output's
re-encoded runs are).

Opus decoders carry state from packet to packet (CELT predicts each band's energy from
the packet before, and overlaps consecutive packets; SILK predicts from past samples),
so a copied packet decodes exactly only after the packets that preceded it in its
source. Around every join (and at the start and the end) the packets are re-encoded
with libopus from the compose path's own mixers, run on the shifted actions, from a few
packets early so that the encoder has settled. Where a run meets copied packets, both
sides are decoded as a player will decode them and compared with how they decode in
their own stream:

- the run's first packets, after the copied ones before it, against the run decoded
  on its own; if they differ by more than the coding noise allows, the run starts a
  packet earlier;
- the first copied packets after the run against the same packets decoded in their
  source; if they differ by more, the run ends a packet later.

"More than the coding noise allows" is more than -18 dB of the sound's level in any
20 ms packet (the error of a 1 dB level change), and more than twice the run's own
deviation from the mix. Where encoders differ the decoder's state does too: after a
5 ms fade-in, libopus may settle on a pitch post-filter gain a step away from the
source's, which the first copied packets carry for some 60 ms at about -20 dB; a join
shows no more than that, next to the cut itself. Runs that cannot be made to fit within
16 packets keep the sound off this path (it is then mixed whole).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.packet import Packet, PacketSideData

from rendermill.renderer.engine import audio, remux_audio
from rendermill.renderer.engine.remux_source import Ineligible

# Samples per packet the copy path takes (20 ms, what every encoder writes by default).
FRAME = 960
# Packets encoded before a run so that the encoder has settled (80 ms).
_LEAD = 4
# Packets decoded before a compared one so that the decoder has settled. Opus's
# recommended seek pre-roll (80 ms) leaves a tone some -20 dB off; 300 ms, under -60 dB.
_WARM = 15
# Packets compared on each side of a boundary between copied and re-encoded packets.
_CHECK = 3
# A compared packet may differ by this fraction of its level (-18 dB)...
_RELATIVE = 0.125
# ... or by this multiple of the run's own deviation from the mix, or by this much.
_NOISE = 2.0
_FLOOR = 1e-4


class OpusFile(remux_audio.File):
    """A sounding WebM source's first audio stream (Opus), opened for its packets."""

    CONTAINER, CODEC, KIND = "matroska", "opus", ("WebM/Matroska", "Opus")

    def __init__(self, path: Path, origin: float) -> None:
        super().__init__(path, origin)
        head = self._stream.codec_context.extradata if self._stream is not None else None
        pre_skip = audio.opus_pre_skip(head)
        self._pre_skip = pre_skip
        self.grid = remux_audio.Grid(FRAME, -(pre_skip or 0), 0)
        self._bytes = 0
        self._count = 0

    @property
    def key(self) -> bytes:
        # OpusHead: channel count, pre-skip, output gain, mapping family (the input
        # rate it also records is only informative).
        head = self.config
        return head[9:12] + head[16:19]

    @property
    def bit_rate(self) -> int | None:
        """The source's bit rate, from the packets scanned so far."""
        if not self._count:
            return None
        return round(self._bytes * 8 * audio.RATE / (self._count * FRAME))

    def _coding_problem(self, stream: AudioStream) -> str | None:
        head = self.config
        if self._pre_skip is None:
            return "no OpusHead in the track header"
        if head[9] != audio.CHANNELS or head[18] != 0:
            return f"sound has {head[9]} channel(s) in mapping family {head[18]}, not stereo"
        if head[16:18] != b"\0\0":
            return "the OpusHead asks for an output gain"
        return None

    def _sample_of(self, packet: Packet[AudioStream]) -> int:
        tb = self.stream.time_base
        assert tb is not None and packet.pts is not None
        at = float(packet.pts * tb) * audio.RATE
        k = round((at - self.grid.offset) / FRAME)
        start = self.grid.start(k)
        if abs(start - at) > float(tb) * audio.RATE / 2 + 0.5:
            raise Ineligible(f"{self.path.name}: sound packets are off the Opus packet grid")
        return start

    def _samples(self, packet: Packet[AudioStream]) -> int:
        data = bytes(packet)
        self._bytes += len(data)
        self._count += 1
        return toc_samples(data)


def toc_samples(data: bytes) -> int:
    """Samples at 48 kHz in an Opus packet, from its TOC byte (RFC 6716, 3.1); 0 for a
    packet that is not valid."""
    if not data:
        return 0
    toc = data[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        size = (480, 960, 1920, 2880)[config % 4]
    elif config < 16:  # hybrid: 10, 20 ms
        size = (480, 960)[config % 2]
    else:  # CELT: 2.5, 5, 10, 20 ms
        size = (120, 240, 480, 960)[config % 4]
    code = toc & 3
    if code == 0:
        return size
    if code in (1, 2):
        return 2 * size
    return size * (data[1] & 0x3F) if len(data) > 1 else 0


def encode_joins(
    sound: remux_audio.SoundPlan, mixers: list[audio.TrackMixer]
) -> remux_audio.SoundPlan:
    """Re-encode the packets around the joins from ``mixers`` (the mixers of
    ``sound.shifted``), choosing each run's ends so that its packets fit their copied
    neighbours (see the module docstring); returns the plan with the runs, their packets
    and the last packet's side data.

    Raises Ineligible when a run cannot be made to fit or re-encoding would cover too
    much of the output to be worth it; MediaError when a sound source cannot be decoded.
    """
    return _Joiner(sound, mixers).run()


@dataclasses.dataclass(slots=True)
class _Run:
    """One run being encoded: its packets by output packet, the mix it was fed (from
    output sample ``first * FRAME``), and the last packet's side data."""

    first: int
    packets: dict[int, bytes]
    mix: list[audio.Samples]
    tail: PacketSideData | None = None


class _Joiner(remux_audio.Joiner):
    CODEC = "Opus"

    def __init__(self, sound: remux_audio.SoundPlan, mixers: list[audio.TrackMixer]) -> None:
        super().__init__(sound, mixers)
        self._pre_skip = -sound.grid.offset
        self._head = sound.template.config

    def _lead_start(self, a: int) -> int:
        # A run at the start has nothing before it to lead in from: its encoder starts
        # where the output does, as the compose path's.
        return max(self._grid.first, a - _LEAD)

    def _encode(
        self, a: int, runs: list[tuple[int, int]], k: int
    ) -> tuple[int, int, int, dict[int, bytes]]:
        # Up to the first packet b' >= its b after which the copied packets decode as in
        # their source (see ``_fits_right``).
        b = runs[k][1]
        k += 1
        encoder = self._opus_encoder()
        run = _Run(self._lead_start(a), {}, [])
        limit = b + remux_audio.REACH
        checked = a == self._grid.first  # nothing before the first packet
        while True:
            while k < len(runs) and runs[k][0] - b <= _LEAD:
                b = max(b, runs[k][1])
                limit = b + remux_audio.REACH
                k += 1
            if b >= self._last:
                self._feed(encoder, run, self._last, flush=True)
                b = self._last
            else:
                self._feed(encoder, run, b, flush=False)
            if not checked:
                self._check_left(a, run)
                checked = True
            if b == self._last or self._fits_right(a, b, run):
                break
            b += 1
            if b > limit:
                raise Ineligible(f"re-encoded Opus packets do not fit before packet {b}")
        missing = [n for n in range(a, b) if n not in run.packets]
        if missing:
            raise Ineligible(f"libopus gave no packet {missing[0]}")
        if b == self._last:
            if run.tail is None and (self._plan.total + self._pre_skip) % FRAME:
                raise Ineligible("libopus gave no end padding for the last packet")
            self._tail = run.tail
        self._mixed_to = run.first + len(run.mix)
        return a, b, k, {n: run.packets[n] for n in range(a, b)}

    def _opus_encoder(self) -> AudioCodecContext:
        ctx = self._encoder("libopus", "flt")  # (libopus takes interleaved samples)
        ctx.open()
        if audio.opus_pre_skip(ctx.extradata) != self._pre_skip:
            raise Ineligible("libopus's pre-skip is not the sources'")
        return ctx

    def _feed(self, encoder: AudioCodecContext, run: _Run, upto: int, *, flush: bool) -> None:
        """Feed the encoder until packet ``upto - 1`` is out (or, with ``flush``, the
        whole timeline). Input frame n is output samples ``n * FRAME`` onwards: packet n
        decodes to them ``pre_skip`` samples earlier."""
        n = run.first + len(run.mix)
        while n < upto:
            lo = n * FRAME
            hi = min(lo + FRAME, self._plan.total) if flush else lo + FRAME
            if hi <= lo:
                break
            block = self._mix(lo, hi)
            run.mix.append(block)
            frame = AudioFrame.from_ndarray(
                np.ascontiguousarray(block.T).reshape(1, -1), format="flt", layout="stereo"
            )
            frame.sample_rate = audio.RATE
            frame.pts = lo
            frame.time_base = Fraction(1, audio.RATE)
            self._keep(encoder.encode(frame), run)
            n += 1
        if flush:
            self._keep(encoder.encode(None), run)

    def _keep(self, packets: list[Packet[AudioStream]], run: _Run) -> None:
        for packet in packets:
            if packet.pts is None or (packet.pts + self._pre_skip) % FRAME:
                raise Ineligible(f"libopus put a packet at {packet.pts}")
            n = (packet.pts + self._pre_skip) // FRAME
            run.packets[n] = bytes(packet)
            if n == self._last - 1:
                side = packet.get_sidedata("skip_samples")
                run.tail = side if side else None

    def _check_left(self, a: int, run: _Run) -> None:
        """Whether the run's first packets decode after the copied ones before it as they
        do after the run's own lead-in; raises LeftMismatch if not."""
        count = min(_CHECK, len(run.packets) - (a - run.first))
        ours = [run.packets[n] for n in range(a, a + count)]
        before = [self._output_packet(n) for n in range(max(self._grid.first, a - _WARM), a)]
        got = self._decode(before + ours)
        alone = self._decode([run.packets[n] for n in range(run.first, a + count)])
        if not self._close(got, alone, count, self._noise(run, a)):
            raise remux_audio.LeftMismatch

    def _fits_right(self, a: int, b: int, run: _Run) -> bool:
        """Whether the first copied packets after packet ``b - 1`` decode there as they
        do in their source."""
        count = min(_CHECK, self._last - b)
        after = [self._packet(n) for n in range(b, b + count)]
        before = [self._output_packet(n) for n in range(max(self._grid.first, a - _WARM), a)]
        got = self._decode(before + [run.packets[n] for n in range(a, b)] + after)
        own = self._decode(self._source_run(b, count))
        return self._close(got, own, count, self._noise(run, a))

    def _close(self, got: audio.Samples, want: audio.Samples, count: int, noise: float) -> bool:
        """Whether the last ``count`` packets of two decodes are alike."""
        n = min(count * FRAME, got.shape[1], want.shape[1])
        if n == 0:
            return False
        x, y = got[:, -n:], want[:, -n:]
        for lo in range(n % FRAME, n, FRAME):
            ref = y[:, lo : lo + FRAME]
            error = float(np.sqrt(np.mean((x[:, lo : lo + FRAME] - ref) ** 2)))
            level = float(np.sqrt(np.mean(ref**2)))
            if error > max(_RELATIVE * level, _NOISE * noise, _FLOOR):
                return False
        return True

    def _noise(self, run: _Run, a: int) -> float:
        """How far the run's own packets from ``a`` decode from the mix it was fed (RMS)."""
        decoded = self._decode([run.packets[n] for n in range(run.first, max(run.packets) + 1)])
        mix = np.concatenate(run.mix, axis=1)
        # The decode starts at output sample first * FRAME (a fresh decoder drops the
        # pre-skip), as the mix does.
        lo = max(0, a * FRAME - self._pre_skip - run.first * FRAME)
        hi = min(decoded.shape[1], mix.shape[1])
        if hi <= lo:
            return 0.0
        return float(np.sqrt(np.mean((decoded[:, lo:hi] - mix[:, lo:hi]) ** 2)))

    def _decode(self, packets: list[bytes]) -> audio.Samples:
        """Packets decoded in order by a fresh decoder (which drops the pre-skip)."""
        ctx = av.CodecContext.create("opus", "r")
        assert isinstance(ctx, AudioCodecContext)
        ctx.extradata = self._head
        out: list[audio.Samples] = []
        try:
            for i, data in enumerate(packets):
                packet = Packet(data)
                packet.pts = i * FRAME
                packet.time_base = Fraction(1, audio.RATE)
                for frame in ctx.decode(packet):
                    out.append(frame.to_ndarray().astype(np.float32, copy=False))
        except av.FFmpegError as exc:
            raise Ineligible(f"an Opus packet does not decode ({exc})") from exc
        if not out:
            return np.zeros((audio.CHANNELS, 0), np.float32)
        return np.concatenate(out, axis=1)

    def _output_packet(self, n: int) -> bytes:
        """Output packet ``n`` as written: re-encoded by an earlier run, or copied."""
        return self._joins.get(n) or self._packet(n)

    def _source_run(self, b: int, count: int) -> list[bytes]:
        """The packets output packets ``b .. b + count - 1`` copy, with the ones that
        precede them in their source (up to _WARM)."""
        segment = self._segment(b)
        first = self._grid.start(b) + segment.shift
        for lead in range(_WARM, 0, -1):
            try:  # (fewer where the source begins)
                return list(segment.file.packets(first - lead * FRAME, lead + count))
            except Ineligible:
                continue
        return list(segment.file.packets(first, count))
