"""Planning a stream copy: which source frame every output frame shows, and which of
them are copied as packets or re-encoded (see the ``remux`` module for the rules).

Everything here reads container headers and demuxes packet windows; nothing is decoded.
Whatever keeps a timeline off the fast path raises ``Ineligible`` with the reason.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from rendermill.common import errors, schemas
from rendermill.common.project import color, model
from rendermill.renderer.engine import compose, video
from rendermill.renderer.engine import remux_h264 as h264
from rendermill.renderer.engine.remux_source import Header, Ineligible, Reader, Readers, Window

# Output formats with a copy path, and the picture codec each copies.
FORMATS = {"mp4": "h264", "mov": "h264", "webm": "vp9"}
# H.264 profiles that nest, lowest first: a stream of any is decoded by a decoder of a
# later one, so sources of several can be copied into one stream declared as the highest.
NESTED_PROFILES = ("Constrained Baseline", "Main", "High")


@dataclasses.dataclass(frozen=True, slots=True)
class Copy:
    """Copy ``count`` packets from the window's packet ``start`` (decode order)."""

    reader: Reader
    window: Window
    start: int
    count: int
    # The IDR frame the first packet is; the packets are frames first .. first + count -
    # 1, in decode order.
    first: int
    # The most packets a frame comes after its place in presentation order: how far
    # decode timestamps must trail presentation timestamps.
    delay: int

    def __len__(self) -> int:
        return self.count


@dataclasses.dataclass(frozen=True, slots=True)
class Encode:
    """Re-encode source frames ``first .. end - 1``."""

    reader: Reader
    window: Window
    first: int
    end: int

    def __len__(self) -> int:
        return self.end - self.first


Piece = Copy | Encode


@dataclasses.dataclass(frozen=True, slots=True)
class ParameterSets:
    """A source's SPS and PPS as the output carries them, and how its slices are
    rewritten to name them (None: they keep their ids)."""

    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    renumbering: h264.Renumbering | None


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """The output, piece by piece: each piece covers the next ``len(piece)`` frames."""

    fps: int
    total: int
    size: tuple[int, int]
    quality: schemas.Quality
    format: str
    pieces: tuple[Piece, ...]
    # The source whose stream parameters describe the output's.
    template: Reader
    # Per source file (H.264): the parameter sets its copied packets use in the output,
    # renumbered where another source's sets would clash; empty for VP9.
    sets: Mapping[Path, ParameterSets] = dataclasses.field(default_factory=dict)

    @property
    def sps(self) -> list[bytes]:
        """Every SPS the copied packets use, once each."""
        return list(dict.fromkeys(s for sets in self.sets.values() for s in sets.sps))

    @property
    def pps(self) -> list[bytes]:
        return list(dict.fromkeys(p for sets in self.sets.values() for p in sets.pps))

    @property
    def header(self) -> Header:
        assert self.template.header is not None
        return self.template.header

    @property
    def profile(self) -> str:
        """The H.264 profile every copied source fits in: the highest of theirs."""
        shown = {p.reader.header.profile for p in self.pieces if p.reader.header is not None}
        return max((p for p in shown if p is not None), key=NESTED_PROFILES.index, default="High")


def plan(
    project: model.Project,
    sources: Mapping[str, Path],
    output: schemas.OutputSpec,
    readers: Readers,
) -> Plan:
    """Plan ``project`` as a stream copy; raises Ineligible when it is not a cut-only
    timeline of compatible sources."""
    if output.copy != "auto":
        raise Ineligible("copy is 'never'")
    if output.format not in FORMATS:
        raise Ineligible(f"format {output.format} has no copy path")
    try:
        size = output.size()
    except errors.InvalidInput as exc:
        raise Ineligible(str(exc)) from exc  # the compose path raises it for the caller
    fps = output.fps
    total = project.frame_count(fps)
    if total <= 0:
        raise Ineligible("nothing to render")
    if project.width * size[1] != project.height * size[0]:
        raise Ineligible("the canvas aspect ratio differs from the output's")
    try:
        color.parse_color(project.background_color)
    except ValueError as exc:
        # Never seen in a cut, but the compose path rejects the project for it.
        raise Ineligible(f"background colour: {exc}") from exc

    layers = _picture_tracks(project, sources, readers)
    intervals = _intervals(project, layers, output, size, total)
    shown = list({id(iv.reader): iv.reader for iv in intervals}.values())
    first = _header(shown[0])
    profiles = {_header(reader).profile for reader in shown}
    if len(profiles) > 1 and not profiles <= set(NESTED_PROFILES):
        # Constrained Baseline, Main and High nest (a High decoder plays the others); a
        # plain Baseline stream may use tools Main lacks.
        raise Ineligible(f"the sources' H.264 profiles do not nest: {sorted(map(str, profiles))}")
    # VP9 keyframes carry everything a decoder needs; H.264 slices name parameter sets.
    sets = _parameter_sets(shown) if first.config is not None else {}

    windows = _windows(intervals, fps)
    pieces: list[Piece] = []
    for reader, window, a, b in _runs(intervals, windows, fps):
        pieces.extend(_pieces(reader, window, a, b))
    assert sum(len(p) for p in pieces) == total
    return Plan(
        fps=fps,
        total=total,
        size=size,
        quality=output.quality,
        format=output.format,
        pieces=tuple(pieces),
        template=shown[0],
        sets=sets,
    )


def _parameter_sets(shown: list[Reader]) -> dict[Path, ParameterSets]:
    """Each source's parameter sets in the output. Sources whose sets are the first
    source's byte for byte share them; others get ids no earlier source uses, and their
    slices are rewritten to name them (see ``remux_h264.Renumbering``)."""
    used_sps: set[int] = set()
    used_pps: set[int] = set()
    by_sets: dict[tuple[tuple[bytes, ...], tuple[bytes, ...]], ParameterSets] = {}
    out: dict[Path, ParameterSets] = {}
    for reader in shown:
        config = _header(reader).config
        assert config is not None
        key = (config.sps, config.pps)
        if key not in by_sets:
            try:
                if not by_sets:
                    used_sps.update(h264.parse_sps(s).id for s in config.sps)
                    used_pps.update(h264.pps_id(p) for p in config.pps)
                    by_sets[key] = ParameterSets(config.sps, config.pps, None)
                else:
                    renumbering = h264.renumber(config.sps, config.pps, used_sps, used_pps)
                    by_sets[key] = ParameterSets(
                        tuple(renumbering.unit(s) for s in config.sps),
                        tuple(renumbering.unit(p) for p in config.pps),
                        renumbering,
                    )
            except h264.BitstreamError as exc:
                raise Ineligible(f"{reader.path.name}: parameter sets: {exc}") from exc
        out[reader.path] = by_sets[key]
    return out


def _header(reader: Reader) -> Header:
    assert reader.header is not None
    return reader.header


@dataclasses.dataclass(frozen=True, slots=True)
class _Layer:
    """A picture track: its showable actions and its source file (opened only once an
    interval shows it, so that a timeline that is not a cut opens nothing)."""

    actions: tuple[model.Action, ...]
    path: Path
    readers: Readers

    @property
    def reader(self) -> Reader:
        reader = self.readers.get(self.path)
        if reader.header is None:
            raise Ineligible(f"{self.path.name} has no picture stream")
        return reader


@dataclasses.dataclass(frozen=True, slots=True)
class _Interval:
    """Output frames ``lo .. hi - 1`` show ``action`` of the source ``reader`` reads."""

    lo: int
    hi: int
    action: model.Action
    reader: Reader


def _picture_tracks(
    project: model.Project, sources: Mapping[str, Path], readers: Readers
) -> list[_Layer]:
    """Picture tracks bottom to top, as the compose path's plan finds them."""
    layers: list[_Layer] = []
    for track in project.tracks:
        actions = tuple(a for a in track.actions if not a.disabled and a.end > a.start)
        if not (track.has_picture and actions):
            continue
        path = sources.get(track.url)
        if path is None:
            raise Ineligible(f"no local file for {track.url!r}")
        layers.append(_Layer(actions, Path(path), readers))
    return layers


def _frame_at_or_after(t: float, fps: int) -> int:
    """The first frame i with i / fps >= t, compared exactly as the frame loop does."""
    i = max(0, math.ceil(t * fps))
    while i > 0 and (i - 1) / fps >= t:
        i -= 1
    while i / fps < t:
        i += 1
    return i


def _intervals(
    project: model.Project,
    layers: list[_Layer],
    output: schemas.OutputSpec,
    size: tuple[int, int],
    total: int,
) -> list[_Interval]:
    """The output frames cut into intervals that each show one action.

    Between two action edges the set of active actions does not change, so the
    top-most picture is found once per interval, by the compose path's rules.
    """
    fps = output.fps
    cuts = {0, total}
    for layer in layers:
        for action in layer.actions:
            for edge in (action.start, action.end):
                cuts.add(min(total, _frame_at_or_after(edge, fps)))
    tops: list[tuple[int, int, _Layer, model.Action]] = []
    for lo, hi in itertools.pairwise(sorted(cuts)):
        t = lo / fps
        top: tuple[_Layer, model.Action] | None = None
        for layer in reversed(layers):
            active = _active(layer.actions, t)
            if active is not None:
                top = (layer, active)
                break
        if top is None:
            raise Ineligible(f"nothing covers the canvas at {t:.3f} s")
        layer, action = top
        # Every action first: they need no file opened, and most timelines that are not
        # cuts (an overlay, a title) fail here before any source is opened.
        problem = _action_problem(action, project, output, size)
        if problem is not None:
            raise Ineligible(f"action {action.id!r} at {t:.3f} s: {problem}")
        tops.append((lo, hi, layer, action))
    intervals: list[_Interval] = []
    for lo, hi, layer, action in tops:
        t = lo / fps
        problem = _header(layer.reader).copy_problem(size, fps, output.format)
        if problem is not None:
            raise Ineligible(f"action {action.id!r} at {t:.3f} s: {problem}")
        if intervals and intervals[-1].action is action and intervals[-1].hi == lo:
            intervals[-1] = dataclasses.replace(intervals[-1], hi=hi)
        else:
            intervals.append(_Interval(lo, hi, action, layer.reader))
    return intervals


def _active(actions: tuple[model.Action, ...], t: float) -> model.Action | None:
    best: model.Action | None = None
    for action in actions:
        # Later start wins; on a tie the later one in the array (iteration order).
        if action.start <= t < action.end and (best is None or action.start >= best.start):
            best = action
    return best


def _action_problem(
    action: model.Action,
    project: model.Project,
    output: schemas.OutputSpec,
    size: tuple[int, int],
) -> str | None:
    """Why ``action`` does not show its source 1:1 over the whole output; None if it does.

    The caller checks that the source's frame size is the output size, and has checked
    that the canvas has the output's aspect ratio.
    """
    if action.rate != 1.0:
        return "playback rate is not 1"
    if action.freeze is not None:
        return "freeze"
    if output.effects and compose.Effect.of(action) is not None:
        return "opacity or blend mode"
    cw, ch = project.width, project.height
    # fill is the canvas; contain and cover are the canvas too, by the editor's formulas
    # and by CSS's, for a source with the canvas's aspect ratio; none is the source size.
    if action.fit == model.Fit.NONE and (cw, ch) != size:
        return "fit none on a canvas of another size than the output"
    # The layer is the canvas, so a percentage resolves to 0 whatever its value.
    if action.x.resolve(cw, cw) != 0 or action.y.resolve(ch, ch) != 0:
        return "position is not (0, 0)"
    return None


def _nominal(s: float, fps: int) -> int:
    """The frame a source time falls on, by the nominal grid (before real timestamps)."""
    return math.floor(s * fps + video.EPSILON * fps) if s >= 0 else -1


def _windows(intervals: list[_Interval], fps: int) -> dict[tuple[int, int], Window]:
    """Index the packets the intervals need; the needs of one source that touch share a
    window. Keyed by (id of the reader, first frame needed)."""
    needs: dict[int, list[tuple[int, int]]] = {}
    readers: dict[int, Reader] = {}
    for iv in intervals:
        first = _nominal(iv.action.source_time(iv.lo / fps), fps)
        last = _nominal(iv.action.source_time((iv.hi - 1) / fps), fps)
        if first < 0:
            raise Ineligible(f"action {iv.action.id!r} starts before its media")
        # One frame past the last one shown: the mapping checks where that one starts.
        needs.setdefault(id(iv.reader), []).append((first, last + 1))
        readers[id(iv.reader)] = iv.reader
    windows: dict[tuple[int, int], Window] = {}
    for key, ranges in needs.items():
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        for lo, hi in merged:
            try:
                windows[(key, lo)] = readers[key].scan(lo, hi, fps)
            except (av.FFmpegError, OSError) as exc:
                raise Ineligible(f"{readers[key].path.name} cannot be read: {exc}") from exc
    return windows


def _window_for(windows: dict[tuple[int, int], Window], iv: _Interval, fps: int) -> Window:
    first = _nominal(iv.action.source_time(iv.lo / fps), fps)
    starts = sorted(lo for key, lo in windows if key == id(iv.reader))
    return windows[(id(iv.reader), starts[bisect.bisect_right(starts, first) - 1])]


def _runs(
    intervals: list[_Interval], windows: dict[tuple[int, int], Window], fps: int
) -> list[tuple[Reader, Window, int, int]]:
    """Runs of output frames showing consecutive frames ``a .. b - 1`` of one source.

    Each output frame's source frame is found as the compose path's reader finds it:
    the last frame whose real timestamp is at most the source time plus the reader's
    tolerance (``video.tolerance``).
    Anything but consecutive frames (a hold, a wrap, a skip) is not a cut.
    """
    runs: list[tuple[Reader, Window, int, int]] = []
    grids: dict[int, tuple[list[int], npt.NDArray[np.float64]]] = {}
    for iv in intervals:
        window = _window_for(windows, iv, fps)
        if id(window) not in grids:
            frames = sorted(window.times)
            grids[id(window)] = frames, np.array([window.times[k] for k in frames])
        ks, times = grids[id(window)]
        i = np.arange(iv.lo, iv.hi, dtype=np.float64)
        action = iv.action
        # The float operations of Action.source_time, element by element.
        s = np.maximum(0.0, action.trim_start + (i / fps - action.start) * action.rate)
        eps = video.tolerance(float(_header(iv.reader).time_base))
        at = np.searchsorted(times, s + eps, side="right") - 1
        if at[0] < 0:
            raise Ineligible(f"action {action.id!r} starts before its media")
        if window.end_of_stream and s[-1] >= times[-1] + 1.0 / fps - eps:
            raise Ineligible(f"action {action.id!r} runs past its media's end (hold or loop)")
        if int(at[-1]) == len(ks) - 1 and not window.end_of_stream:
            # The next frame is outside the window: the window was planned too short.
            raise Ineligible(f"action {action.id!r} needs frames past its packet window")
        steps = np.diff(at)
        if np.any(steps != 1):
            raise Ineligible(f"action {action.id!r} repeats or skips source frames")
        a = ks[int(at[0])]
        b = a + (iv.hi - iv.lo)
        if runs and runs[-1][1] is window and runs[-1][3] == a:
            runs[-1] = (iv.reader, window, runs[-1][2], b)
        else:
            runs.append((iv.reader, window, a, b))
    return runs


def _pieces(reader: Reader, window: Window, a: int, b: int) -> list[Piece]:
    """Copy what can be copied of source frames ``a .. b - 1``; re-encode the rest."""
    entries = window.entries
    idr = min((e.k for e in entries if e.idr and e.k >= a), default=None)
    if idr is None or idr >= b:
        return [Encode(reader, window, a, b)]
    pieces: list[Piece] = []
    if a < idr:
        pieces.append(Encode(reader, window, a, idr))
    start = next(p for p, e in enumerate(entries) if e.k == idr)
    # The longest decode-order prefix from the IDR frame that holds exactly the frames
    # idr .. idr + count - 1, up to b: nothing in it can refer to a later packet, so all
    # of it decodes and nothing after the cut shows.
    count = 0
    highest = -1
    for seen, entry in enumerate(entries[start:], 1):
        if entry.k < idr:
            raise Ineligible("a frame after an IDR frame is shown before it")
        highest = max(highest, entry.k)
        if highest - idr + 1 == seen:
            if idr + seen > b:
                break
            count = seen
    delay = max(p - (entries[start + p].k - idr) for p in range(count))
    pieces.append(Copy(reader, window, start, count, idr, max(0, delay)))
    if idr + count < b:
        pieces.append(Encode(reader, window, idr + count, b))
    return pieces
