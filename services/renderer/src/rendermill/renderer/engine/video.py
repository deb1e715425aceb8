"""Pictures from a source at a requested source time, decoding forward only.

A reader opens its file on first use, seeks once to where it is asked to start, and then
decodes forward as the requested time advances, so no frame is decoded twice and only
the current and the next frame are held. It seeks again only when asked to go back (a
loop wrapping round) or far ahead (an action that was covered for a while).
"""

from __future__ import annotations

from collections.abc import Iterator

import av
import av.container
import av.stream
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from rendermill.renderer.engine import probe

# Frame times are exact in the source's time base but source times are float sums; a
# frame due within this much after the requested time counts as already showing.
EPSILON = 1e-4


def tolerance(tick: float) -> float:
    """How far after the requested time a frame may be due and count as showing, for a
    stream whose timestamps count ticks of ``tick`` seconds: EPSILON plus half a tick,
    since a frame's timestamp is its time rounded to a tick (a 30 fps WebM frame at
    66.667 ms is stored as 67 ms, and must show at 2 / 30 s). Ticks coarser than a
    millisecond are frame-exact time bases (1/fps: AVI, some MP4s), not rounded clocks:
    they get no more than a millisecond's half."""
    return EPSILON + min(tick, _ROUNDED_TICK) / 2


# The coarsest tick that rounds frame times rather than counting frames (Matroska, FLV).
_ROUNDED_TICK = 0.001


# Decoding forward this far is cheaper than a seek plus a decode from the keyframe.
SEEK_AHEAD = 5.0

_Decoded = tuple[VideoFrame, float, float | None]


class Damage:
    """Where the last damaged picture decoded since a keyframe was. FFmpeg's decoders
    conceal a picture whose data does not decode and mark it corrupt, but not the
    pictures predicted from it, which carry its damage up to the next keyframe."""

    def __init__(self) -> None:
        self.at: float | None = None

    def see(self, frame: VideoFrame, time: float) -> float | None:
        """Take the next decoded ``frame`` (at ``time``, in decode order); return the
        time of the damaged picture it may carry damage from, or None."""
        if frame.is_corrupt:
            if self.at is None:
                self.at = time
        elif frame.key_frame:
            self.at = None
        return self.at


class VideoReader:
    """The picture of one action's source at increasing source times, decoded with
    ``threads`` threads (see ``threads.Threads.decoder``)."""

    def __init__(self, media: probe.Media, threads: int) -> None:
        assert media.video is not None
        self._media = media
        self._threads = threads
        self._info = media.video
        self._eps = tolerance(media.video.tick)
        self._container: av.container.InputContainer | None = None
        self._stream: VideoStream | None = None
        self._ctx: VideoCodecContext | None = None
        self._frames: Iterator[VideoFrame] = iter(())
        # (frame, source time, time of the damaged picture it may be predicted from).
        self._current: _Decoded | None = None
        self._pending: _Decoded | None = None
        self._damage = Damage()
        # Source time of the last seek, and whether the current frame is the first one
        # decoded after it.
        self._floor = 0.0
        self._at_first = False
        self._eof = False
        self._last_time = 0.0
        self._fresh = False

    def frame_at(self, s: float) -> VideoFrame | None:
        """The frame showing at source time ``s`` (the last frame once past the end).

        Returns None only when the stream yields no frame at all. Raises MediaError when
        the file cannot be decoded, turns out truncated, or the frame showing is damaged.
        """
        if self._container is None:
            self._open()
            self._seek(s)
        elif self._current is not None and s < self._current[1] - self._eps:
            # Going back (a loop wrapping round) needs a seek, unless the last seek
            # already landed after ``s`` and this is the earliest frame there is.
            if s < self._floor - self._eps or not self._at_first:
                self._seek(s)
        elif self._pending is not None and s - self._pending[1] > SEEK_AHEAD:
            self._seek(s)
        while self._pending is not None and (
            self._current is None or self._pending[1] <= s + self._eps
        ):
            self._at_first = self._current is None
            self._current = self._pending
            self._pending = self._next()
        if self._current is None:
            return None
        frame, _, damaged = self._current
        if damaged is not None:
            # The decoder hid damage it could not decode (FFmpeg conceals it and goes
            # on), which would show as smeared blocks. Only what is shown counts: damage
            # outside the timeline, or before a keyframe the shown picture follows, does
            # not fail the render. (FFmpeg drops, rather than marks, the pictures an open
            # GOP leads with after a seek.)
            raise self._media.source.error(
                f"is corrupt: its picture at {damaged:.3f} s is damaged (part of its data "
                "does not decode); export or encode the file again"
            )
        return frame

    def close(self) -> None:
        """Release the file and the decoder; the reader can be used again (it reopens)."""
        if self._container is not None:
            self._container.close()
        self._container = None
        self._stream = None
        self._ctx = None
        self._frames = iter(())
        self._current = self._pending = None

    def _open(self) -> None:
        container = self._media.source.open()
        stream = next(
            (
                s
                for s in container.streams.video
                if not s.disposition & av.stream.Disposition.attached_pic
            ),
            None,
        )
        if stream is None:
            container.close()
            raise self._media.source.error("has no picture stream")
        if self._info.decoder is not None:
            self._ctx = probe.open_decoder(self._info.decoder, self._threads)
        else:
            probe.bounded(stream.codec_context, self._threads)
        self._container = container
        self._stream = stream
        self._fresh = True

    def _seek(self, s: float) -> None:
        assert self._container is not None and self._stream is not None
        s = max(0.0, s)
        self._floor = s
        self._eof = False
        self._current = None
        self._damage = Damage()
        # A freshly opened file already stands at its start.
        if not (self._fresh and s <= self._eps):
            tb = self._stream.time_base
            assert tb is not None
            target = int((s + self._media.origin) / tb)
            try:
                self._container.seek(target, stream=self._stream, backward=True)
            except (av.FFmpegError, OSError) as exc:
                raise self._media.source.error(
                    f"cannot be read at {s:.3f} s ({probe.reason(exc)})"
                ) from exc
            if self._ctx is not None:
                self._ctx.flush_buffers()
        self._fresh = False
        self._frames = self._decode()
        self._pending = self._next()

    def _decode(self) -> Iterator[VideoFrame]:
        assert self._container is not None and self._stream is not None
        ctx = self._ctx
        for packet in self._container.demux(self._stream):
            frames = ctx.decode(packet) if ctx is not None else packet.decode()
            for frame in frames:
                if isinstance(frame, VideoFrame):
                    yield frame

    def _next(self) -> _Decoded | None:
        if self._eof:
            return None
        try:
            frame = next(self._frames, None)
        except (av.FFmpegError, OSError) as exc:
            raise self._media.source.error(
                f"is corrupt: decoding failed after {self._last_time:.3f} s ({probe.reason(exc)})"
            ) from exc
        if frame is None:
            self._eof = True
            self._check_complete()
            return None
        assert self._stream is not None and self._stream.time_base is not None
        if frame.pts is not None:
            time = float(frame.pts * self._stream.time_base) - self._media.origin
        else:
            time = self._last_time
        self._last_time = time
        return frame, time, self._damage.see(frame, time)

    def _check_complete(self) -> None:
        end = self._info.declared_end
        if end is not None and self._last_time < end - probe.TRUNCATION_TOLERANCE:
            raise self._media.source.error(
                f"is truncated: its picture stops at {self._last_time:.2f} s but the file "
                f"says it lasts {end:.2f} s"
            )
