"""The render loop: a project and its local source files in, one encoded file out."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from av.video.frame import VideoFrame
from opentelemetry import trace

from rendermill.common import errors, schemas
from rendermill.common.project import color, model
from rendermill.renderer.engine import audio, compose, encode, lut, probe, remux, video
from rendermill.renderer.engine.result import ProgressCallback, RenderResult
from rendermill.renderer.engine.threads import Threads

_tracer = trace.get_tracer(__name__)


def render(
    project: model.Project,
    sources: Mapping[str, Path],
    output: schemas.OutputSpec,
    dest: Path,
    *,
    on_progress: ProgressCallback | None = None,
    volume_clock: audio.VolumeClock | None = None,
    threads: Threads | None = None,
    cache_dir: Path | None = None,
) -> RenderResult:
    """Render ``project`` into ``dest`` as ``output`` says, following TIMELINE.md.

    ``sources`` maps each track ``url`` (exactly as in the project) to a local file;
    only tracks that can be seen or heard need one. ``on_progress(done, total)`` is
    called after every frame; an exception it raises aborts the render. ``volume_clock``
    picks the clock volume steps follow: ``"editor"`` (timeline time for video tracks,
    source time for audio tracks, as the editor does), ``"timeline"`` or ``"source"``;
    None means ``output.volume_clock``. ``threads`` sizes the decoders, scalers and
    encoder (see ``threads``); None gives them the CPUs this process may keep busy.
    ``cache_dir`` keeps what is worth keeping between renders on this machine: the
    tables HDR and wide-gamut pictures are mapped through (see ``lut.Tables``); None
    makes them again in every process.

    Cut-only timelines whose clips share codec parameters are stream-copied (see
    ``remux``; ``output.copy == "never"`` turns that off), with frame-exact cuts.

    ``output`` also decides the encoder effort (``quality``), whether contain/cover
    follow the editor's formulas or CSS object-fit (``fit_mode``) and whether actions'
    opacity and blend modes apply (``effects``). With ``output.poster`` set, the frame
    showing at that time (clamped to the last frame) is also written as a JPEG to
    ``dest.with_suffix(".jpg")``, replacing any file there; it is written only once the
    video is complete.

    Returns what was written. Raises MediaError when a needed source is missing,
    unreadable, corrupt, truncated or of an unsupported kind (naming the track and the
    file), InvalidProject when the project has nothing to render or an unusable
    background colour, and InvalidInput for an unknown output resolution. On any error
    ``dest`` (and the poster) are removed. Encoder and disk failures propagate as raised
    by PyAV/the OS.
    """
    size = output.size()
    fps = output.fps
    total = project.frame_count(fps)
    if total <= 0:
        raise errors.InvalidProject(
            [errors.Problem("tracks", "nothing to render: no action ends after 0 s")]
        )
    background = _background(project.background_color)
    threads = threads or Threads.of()
    # A cut-only timeline whose clips can be copied never decodes a frame it need not.
    with _tracer.start_as_current_span("remux", attributes={"frames": total}) as span:
        copied = remux.try_remux(
            project,
            sources,
            output,
            dest,
            on_progress=on_progress,
            volume_clock=volume_clock,
            threads=threads,
        )
        span.set_attribute("fast_path", copied is not None)
        span.set_attribute("sound_copied", copied is not None and copied.sound_copied)
    if copied is not None:
        return copied
    viewport = compose.Viewport.fit(
        (project.width, project.height), size, css_fit=output.fit_mode == "css"
    )
    tables = lut.Tables(cache_dir)
    with _tracer.start_as_current_span("plan") as span:
        pictures, mixers = _plan(
            project,
            sources,
            viewport,
            volume_clock or output.volume_clock,
            effects=output.effects,
            threads=threads,
            tables=tables,
        )
        span.set_attribute("picture_tracks", len(pictures))
        span.set_attribute("sound_tracks", len(mixers))
    canvas = compose.Canvas(viewport, background)
    poster_path = dest.with_suffix(".jpg")
    poster_index = None
    if output.poster is not None:
        # The frame showing at that time: i / fps <= poster < (i + 1) / fps.
        poster_index = min(total - 1, math.floor(round(output.poster * fps, 6)))
        poster_path.unlink(missing_ok=True)
    poster: bytes | None = None

    dest.unlink(missing_ok=True)
    encoder = encode.Encoder(dest, output, size, threads)
    span = _tracer.start_span(
        "compose",
        attributes={
            "frames": total,
            "width": size[0],
            "height": size[1],
            "format": output.format,
            "cpus": threads.cpus,
        },
    )
    try:
        feed = _AudioFeed(mixers, encoder, round(total * audio.RATE / fps))
        for i in range(total):
            t = i / fps
            # Close what ended first, so an ended clip's decoder never overlaps the next.
            for picture in pictures:
                picture.release_before(t)
            frame = _frame_at(t, pictures, canvas)
            if i == poster_index:
                poster = encode.jpeg(frame)
            encoder.video(frame, i)
            # Keep the sound level with the picture so the muxer interleaves as it goes.
            feed.advance(round((i + 1) * audio.RATE / fps))
            if on_progress is not None:
                on_progress(i + 1, total)
        # HDR and wide-gamut tables this render had to make (see lut.Tables).
        span.set_attribute("lut_tables_made", tables.made)
        span.end()
        with _tracer.start_as_current_span("mux"):
            encoder.finish()
        if poster is not None:
            poster_path.write_bytes(poster)
    except BaseException:
        if span.is_recording():
            span.end()
        encoder.abort()
        dest.unlink(missing_ok=True)
        if poster_index is not None:
            poster_path.unlink(missing_ok=True)
        raise
    finally:
        for picture in pictures:
            picture.close()
        for mixer in mixers:
            mixer.close()
    return RenderResult(
        duration=total / fps,
        frames=total,
        width=size[0],
        height=size[1],
        size_bytes=dest.stat().st_size,
    )


class _PictureTrack:
    """One visible track: which action shows at t, and its picture converted for drawing."""

    def __init__(
        self,
        track: model.Track,
        media: probe.Media,
        viewport: compose.Viewport,
        scaler: compose.Scaler,
        *,
        effects: bool,
        decoder_threads: int,
    ):
        assert media.video is not None
        self.track = track
        self._media = media
        self._decoder_threads = decoder_threads
        self._alpha = media.video.alpha
        self._viewport = viewport
        self._actions = _showable(track)
        self._effects = {i: compose.Effect.of(a) for i, a in self._actions} if effects else {}
        self._readers: dict[int, video.VideoReader] = {}
        self._scaler = scaler
        # Per action, the last picture drawn and its conversion: held, frozen and still
        # pictures (and sources slower than the output) are converted once.
        self._converted: dict[int, tuple[VideoFrame, compose.Rect, compose.Layer]] = {}
        # A still's decoded picture, from the first action that shows it to the end of
        # an action.
        self._still: VideoFrame | None = None

    def layer_at(self, t: float) -> compose.Placed | None:
        active = _active(self._actions, t)
        if active is None:
            return None
        index, action = active
        frame = self._picture(index, action, t)
        if frame is None:
            return None
        effect = self._effects.get(index)
        exif = self._media.orientation
        if exif is not None:
            # EXIF also says "mirrored", which the display matrix angle cannot.
            turns, mirror = compose.orientation(exif)
        else:
            turns, mirror = compose.quarter_turns(frame), False
        # A still is placed by the size it is stored at; a JPEG may decode smaller.
        still = self._media.still
        w, h = (still.width, still.height) if still is not None else (frame.width, frame.height)
        rect = self._viewport.place(action, (h, w) if turns % 2 else (w, h))
        cached = self._converted.get(index)
        if cached is not None and cached[0] is frame and cached[1] == rect:
            return cached[2], rect, effect
        clip = self._viewport.canvas
        if not rect.meets(clip):
            return None  # wholly past the canvas's edges: not even converted
        layer = compose.convert(
            frame,
            rect.width,
            rect.height,
            alpha=self._alpha,
            turns=turns,
            mirror=mirror,
            still=self._media.still is not None,
            scaler=self._scaler,
            # Past the canvas's edges nothing shows.
            visible=(clip.x - rect.x, clip.y - rect.y, clip.right - rect.x, clip.bottom - rect.y),
        )
        self._converted[index] = (frame, rect, layer)
        return layer, rect, effect

    def _picture(self, index: int, action: model.Action, t: float) -> VideoFrame | None:
        media = self._media
        if media.still is not None:
            if self._still is None:
                self._still = media.still.picture()
            return self._still
        s = action.freeze if action.freeze is not None else action.source_time(t)
        s = max(0.0, s)
        end = media.duration
        if end is not None and s >= end:
            s = math.fmod(s, end) if action.loop and action.freeze is None else end
        reader = self._readers.get(index)
        if reader is None:
            reader = self._readers[index] = video.VideoReader(media, self._decoder_threads)
        return reader.frame_at(s)

    def release_before(self, t: float) -> None:
        """Close what actions that ended by ``t`` held: they never show again."""
        for index, action in self._actions:
            if action.end <= t:
                if index in self._readers:
                    self._readers.pop(index).close()
                if self._converted.pop(index, None) is not None:
                    # The next action showing the still decodes it again.
                    self._still = None

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._converted.clear()
        self._still = None


def _frame_at(t: float, pictures: list[_PictureTrack], canvas: compose.Canvas) -> VideoFrame:
    viewport = canvas.viewport
    top_down: list[compose.Placed] = []
    for picture in reversed(pictures):
        item = picture.layer_at(t)
        if item is None or item[0].empty or (item[2] is not None and item[2].invisible):
            continue
        top_down.append(item)
        if compose.hides_below(item, viewport):
            # Everything below is hidden; it is not even decoded until it shows again.
            break
    if len(top_down) == 1:
        layer, rect, effect = top_down[0]
        if effect is None and layer.opaque and layer.direct and rect == viewport.frame:
            # One opaque picture filling the frame exactly is already the output frame.
            return layer.frame
    return canvas.compose(top_down[::-1])


class _AudioFeed:
    """Hands the mix to the encoder in frames of exactly the encoder's size."""

    def __init__(self, mixers: list[audio.TrackMixer], encoder: encode.Encoder, total: int) -> None:
        self._mix = audio.Mixdown(mixers, total)
        self._encoder = encoder
        self._frame = encoder.audio_block

    def advance(self, due: int) -> None:
        """Encode the sound up to output sample ``due`` (all of it at the last frame)."""
        if self._frame is None:
            return
        due = min(due, self._mix.total)
        while self._mix.sent < due:
            first = self._mix.sent
            self._encoder.audio(self._mix.take(self._frame), first)


def _plan(
    project: model.Project,
    sources: Mapping[str, Path],
    viewport: compose.Viewport,
    volume_clock: audio.VolumeClock,
    *,
    effects: bool,
    threads: Threads,
    tables: lut.Tables,
) -> tuple[list[_PictureTrack], list[audio.TrackMixer]]:
    pictures: list[_PictureTrack] = []
    mixers: list[audio.TrackMixer] = []
    scaler = compose.Scaler(threads.per_cpu, tables)
    for track in project.tracks:
        actions = [a for _, a in _showable(track)]
        picture = track.has_picture and bool(actions)
        sound = audio.sounds(track)
        if not picture and not sound:
            continue
        path = sources.get(track.url)
        if path is None:
            name = track.name or track.id
            raise errors.MediaError(
                f"track {name!r}: no local file was provided for its media {track.url!r}",
                track=track.id,
                url=track.url,
            )
        with _tracer.start_as_current_span("probe", attributes={"track": track.id}) as span:
            media = probe.probe(
                probe.Source(track=track, path=Path(path)),
                picture=picture,
                sound=sound,
                drawn=_largest_drawn(actions, viewport),
            )
            span.set_attribute("bytes", Path(path).stat().st_size)
            if media.duration is not None:
                span.set_attribute("duration", media.duration)
            decoder_threads = 1
            if media.video is not None:
                decoder_threads = threads.decoder(media.video.width, media.video.height)
                span.set_attribute("size", f"{media.video.width}x{media.video.height}")
                span.set_attribute("decoder_threads", decoder_threads)
                span.set_attribute("alpha", media.video.alpha)
                span.set_attribute("light", media.video.light)
            if media.still is not None and "lowres" in media.still.options:
                # A JPEG decoded at 1/2, 1/4 or 1/8 of its size: drawn no larger.
                span.set_attribute("decode_scale", 0.5 ** int(media.still.options["lowres"]))
            if media.audio is not None:
                span.set_attribute("sample_rate", media.audio.rate)
                span.set_attribute("channels", media.audio.channels)
        if picture and media.video is not None:
            pictures.append(
                _PictureTrack(
                    track,
                    media,
                    viewport,
                    scaler,
                    effects=effects,
                    decoder_threads=decoder_threads,
                )
            )
        if sound and media.audio is not None:
            mixers.append(audio.TrackMixer(track, media, clock=volume_clock))
    return pictures, mixers


def _largest_drawn(actions: list[model.Action], viewport: compose.Viewport) -> probe.Drawn:
    """How large ``actions`` draw a picture of a given (shown) size, at the most."""

    def largest(shown: tuple[int, int]) -> tuple[int, int]:
        rects = [viewport.place(a, shown) for a in actions]
        return max((r.width for r in rects), default=0), max((r.height for r in rects), default=0)

    return largest


def _showable(track: model.Track) -> list[tuple[int, model.Action]]:
    return [(i, a) for i, a in enumerate(track.actions) if not a.disabled and a.end > a.start]


def _active(actions: list[tuple[int, model.Action]], t: float) -> tuple[int, model.Action] | None:
    best: tuple[int, model.Action] | None = None
    for item in actions:
        action = item[1]
        # Later start wins; on a tie the later one in the array (iteration order).
        if action.start <= t < action.end and (best is None or action.start >= best[1].start):
            best = item
    return best


def _background(css: str) -> tuple[int, int, int]:
    try:
        r, g, b, a = color.parse_color(css)
    except ValueError as exc:
        raise errors.InvalidProject([errors.Problem("backgroundColor", str(exc))]) from exc
    # No output format here carries alpha: a translucent background is seen over black.
    return (r * a // 255, g * a // 255, b * a // 255)
