"""Editor project JSON to the normalised model, with validation (TIMELINE.md).

Parsing collects every problem before giving up, so a user fixes a file in one round
trip. Problem paths use the editor's field names as written in the file
(``tracks[2].actions[0].trimStart``). Unknown fields, of either file generation, are
ignored, as are the editor's runtime fields (``volumeIndex``, ``z``, action
``width``/``height``, ``backgroundImage*``).
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping

import msgspec

from rendermill.common import errors
from rendermill.common.project import color, container, model

MAX_CANVAS = 8192
# Far beyond any editor project; keeps a typo such as 1e9 from becoming a month-long job.
MAX_SECONDS = 24 * 3600.0
MAX_OFFSET_PX = 1_000_000.0
# A day of media in under a tenth of a second; beyond it a rate is a typo, and its source
# times would overflow.
MAX_RATE = 1_000_000.0

_CONTROLLERS = ", ".join(c.value for c in model.Controller)
_FITS = {f.value: f for f in model.Fit}
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):")
_COORD = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*(px|%)\s*", re.IGNORECASE)

Problems = list[errors.Problem]


def load(data: bytes) -> tuple[model.Project, list[model.EmbeddedFile]]:
    """Parse a project file in either form: plain JSON or a ``.sue`` container.

    The caller gets the project and the container's embedded files (empty for plain
    JSON). Each track whose ``url`` contains an embedded file's name without its
    extension has ``embedded`` set to that file's name; ``Project.files`` holds the
    files. Raises ``errors.InvalidProject`` for a malformed container, JSON that does
    not decode, or any validation problem (see ``from_json``).
    """
    json_bytes, files = container.split(data)
    try:
        document = msgspec.json.decode(json_bytes)
    except msgspec.DecodeError as exc:
        raise errors.InvalidProject(
            [errors.Problem("", f"the project is not valid JSON: {exc}")]
        ) from exc
    project = from_json(document)
    if not files:
        return project, files
    tracks = tuple(
        msgspec.structs.replace(track, embedded=_embedded_for(track.url, files))
        for track in project.tracks
    )
    return msgspec.structs.replace(project, tracks=tracks, files=tuple(files)), files


def from_json(obj: object) -> model.Project:
    """Validate a decoded project JSON value and return the normalised project.

    Raises ``errors.InvalidProject`` listing every problem found, each at a JSON path
    such as ``tracks[0].actions[1].start`` with a message saying what to change.
    """
    if not isinstance(obj, dict):
        raise errors.InvalidProject(
            [errors.Problem("", f"a project must be a JSON object, got {_describe(obj)}")]
        )
    problems: Problems = []
    ident = _text(obj.get("id"), "id", problems)
    name = _text(obj.get("name"), "name", problems)
    width = _dimension(obj.get("width"), "width", problems, default=1920)
    height = _dimension(obj.get("height"), "height", problems, default=1080)
    background = _background(obj.get("backgroundColor"), problems)
    tracks: list[model.Track] = []
    raw_tracks = obj.get("tracks")
    if raw_tracks is None:
        problems.append(errors.Problem("tracks", "is required: a list of tracks (may be empty)"))
    elif not isinstance(raw_tracks, list):
        problems.append(
            errors.Problem("tracks", f"must be a list of tracks, got {_describe(raw_tracks)}")
        )
    else:
        for i, raw in enumerate(raw_tracks):
            track = _track(raw, i, problems)
            if track is not None:
                tracks.append(track)
    if problems:
        raise errors.InvalidProject(problems)
    return model.Project(
        id=ident,
        name=name,
        width=width,
        height=height,
        background_color=background,
        tracks=tuple(tracks),
    )


def unresolved(
    project: model.Project, media: Mapping[str, str], *, root_relative_ok: bool = False
) -> list[errors.Problem]:
    """Problems for the tracks whose media the server cannot get, in track order.

    A url resolves when the track has an embedded file, when it is a key of ``media``
    (the caller's map of url as written to uploaded asset id), when it is an http(s)
    URL, or, with ``root_relative_ok`` (a media base URL is configured), when it is a
    root-relative path. Tracks that can never produce picture or sound (no action that
    is enabled with ``end > start``, or hidden, or an audio track that is muted) need no
    media and are skipped. Each problem is at ``tracks[i].url``. Raises nothing.
    """
    problems: Problems = []
    for i, track in enumerate(project.tracks):
        if not track.renders:
            continue
        url = track.url
        if track.embedded is not None or url in media:
            continue
        # Not urlsplit: it raises on some malformed URLs, and only the scheme matters here.
        m = _SCHEME.match(url)
        scheme = m.group(1).lower() if m else ""
        if scheme in ("http", "https"):
            continue
        if root_relative_ok and url.startswith("/") and not url.startswith("//"):
            continue
        where = f"track {_label(track.name or track.id)} plays {_quote(url, 120)}"
        if scheme == "blob":
            why = (
                "a blob: URL, which only exists inside the browser that created it; upload "
                "the file and pass it in the media map under this exact url"
            )
        elif scheme == "file":
            why = (
                "a file on the machine that made the project, which the server cannot "
                "read; upload the file and map this exact url to it in the media map"
            )
        else:
            why = (
                "which the server cannot fetch; upload the file and map this exact url "
                "to the uploaded asset in the media map"
            )
        problems.append(errors.Problem(f"tracks[{i}].url", f"{where}, {why}"))
    return problems


def _embedded_for(url: str, files: list[model.EmbeddedFile]) -> str | None:
    """The embedded file whose name, without its extension, the url contains.

    Several can match ("stoked-ui" is in ".../stoked-ui-reverse.webm"): the full name
    appearing beats only the stem appearing, then the longest stem wins, then the first.
    """
    candidates = (url, urllib.parse.unquote(url))
    best: str | None = None
    best_rank = (False, 0)
    for file in files:
        stem = file.name.rsplit(".", 1)[0] if "." in file.name else file.name
        if not stem or not any(stem in c for c in candidates):
            continue
        rank = (any(file.name in c for c in candidates), len(stem))
        if best is None or rank > best_rank:
            best, best_rank = file.name, rank
    return best


def _track(raw: object, i: int, problems: Problems) -> model.Track | None:
    path = f"tracks[{i}]"
    if not isinstance(raw, dict):
        problems.append(errors.Problem(path, f"must be a track object, got {_describe(raw)}"))
        return None
    before = len(problems)
    ident = _text(raw.get("id"), f"{path}.id", problems) or f"track-{i}"
    name = _text(raw.get("name"), f"{path}.name", problems)
    label = _label(name or ident)
    controller = _controller(raw.get("controllerName"), f"{path}.controllerName", label, problems)
    url = raw.get("url")
    if url is None:
        problems.append(
            errors.Problem(
                f"{path}.url",
                f"is required on track {label}: the address of the track's media file",
            )
        )
    elif not isinstance(url, str) or not url.strip():
        problems.append(
            errors.Problem(
                f"{path}.url",
                f"must be the address of the track's media file, got {_describe(url)}",
            )
        )
    hidden = _flag(raw.get("hidden"), f"{path}.hidden", problems)
    disabled = _flag(raw.get("disabled"), f"{path}.disabled", problems)
    muted = _flag(raw.get("muted"), f"{path}.muted", problems)
    actions: list[model.Action] = []
    raw_actions = raw.get("actions")
    if raw_actions is not None and not isinstance(raw_actions, list):
        problems.append(
            errors.Problem(
                f"{path}.actions", f"must be a list of actions, got {_describe(raw_actions)}"
            )
        )
    elif raw_actions is not None:
        for j, raw_action in enumerate(raw_actions):
            action = _action(raw_action, i, j, problems)
            if action is not None:
                actions.append(action)
    if len(problems) > before or controller is None or not isinstance(url, str):
        return None
    return model.Track(
        id=ident,
        name=name,
        controller=controller,
        url=url,
        hidden=hidden or disabled,
        muted=muted,
        actions=tuple(actions),
    )


def _controller(
    value: object, path: str, track: str, problems: Problems
) -> model.Controller | None:
    if value is None:
        problems.append(
            errors.Problem(path, f"missing controllerName on track {track}: use {_CONTROLLERS}")
        )
        return None
    if isinstance(value, str):
        try:
            return model.Controller(value)
        except ValueError:
            pass
    problems.append(
        errors.Problem(
            path,
            f"unknown controller {_describe(value)} on track {track}: use video, audio or image",
        )
    )
    return None


def _action(raw: object, i: int, j: int, problems: Problems) -> model.Action | None:
    path = f"tracks[{i}].actions[{j}]"
    if not isinstance(raw, dict):
        problems.append(errors.Problem(path, f"must be an action object, got {_describe(raw)}"))
        return None
    before = len(problems)
    ident = _text(raw.get("id"), f"{path}.id", problems) or f"action-{i}-{j}"
    name = _text(raw.get("name"), f"{path}.name", problems)
    label = _label(name or ident)
    start = _seconds(raw.get("start"), f"{path}.start", problems, required=True)
    end = _seconds(raw.get("end"), f"{path}.end", problems, required=True, minimum=None)
    trim_start = _seconds(raw.get("trimStart"), f"{path}.trimStart", problems)
    freeze = _seconds(raw.get("freeze"), f"{path}.freeze", problems)
    rate = _rate(raw.get("playbackRate"), f"{path}.playbackRate", problems)
    loop = _flag(raw.get("loop"), f"{path}.loop", problems)
    disabled = _flag(raw.get("disabled"), f"{path}.disabled", problems)
    volume = _volume(raw.get("volume"), f"{path}.volume", problems)
    x = _coord(raw.get("x"), f"{path}.x", "x", label, problems)
    y = _coord(raw.get("y"), f"{path}.y", "y", label, problems)
    blend_mode = _text(raw.get("blendMode"), f"{path}.blendMode", problems) or "normal"
    opacity = _opacity(raw.get("style"), f"{path}.style", problems)
    fit = raw.get("fit")
    if len(problems) > before or start is None or end is None:
        return None
    return model.Action(
        id=ident,
        name=name,
        start=start,
        end=end,
        trim_start=trim_start or 0.0,
        playback_rate=1.0 if rate is None else rate,
        loop=loop,
        freeze=freeze,
        disabled=disabled,
        volume=volume,
        # The editor lays out anything else (it writes "normal") at the intrinsic size.
        fit=_FITS.get(fit, model.Fit.NONE) if isinstance(fit, str) else model.Fit.NONE,
        x=x,
        y=y,
        blend_mode=blend_mode,
        opacity=opacity,
        duration_hint=_duration_hint(raw.get("duration")),
    )


def _volume(value: object, path: str, problems: Problems) -> tuple[model.VolumeStep, ...]:
    if value is None:
        return ()
    shape = "[gain, start?, end?] with numbers (start and end in seconds, or null)"
    if not isinstance(value, list):
        problems.append(
            errors.Problem(path, f"must be a list of {shape} steps, got {_describe(value)}")
        )
        return ()
    steps: list[model.VolumeStep] = []
    for k, step in enumerate(value):
        step_path = f"{path}[{k}]"
        if not isinstance(step, list) or not 1 <= len(step) <= 3:
            problems.append(errors.Problem(step_path, f"must be {shape}, got {_describe(step)}"))
            continue
        gain = _finite(step[0])
        wrong: list[str] = []
        if gain is None:
            wrong.append(f"gain must be a number, got {_describe(step[0])}")
        bounds: list[float | None] = []
        for what, raw in zip(("start", "end"), step[1:], strict=False):
            bound = None if raw is None else _finite(raw)
            if raw is not None and bound is None:
                wrong.append(f"{what} must be a number of seconds or null, got {_describe(raw)}")
            bounds.append(bound)
        if gain is None or wrong:
            problems.append(errors.Problem(step_path, "; ".join(wrong)))
            continue
        steps.append(model.VolumeStep(gain, *bounds))
    return tuple(steps)


def _coord(value: object, path: str, axis: str, action: str, problems: Problems) -> model.Coord:
    if value is None:
        return model.Coord()
    expected = f"{axis} of action {action} must be a number of pixels, or a string 'Npx' or 'P%'"
    if isinstance(value, str):
        m = _COORD.fullmatch(value)
        if m is None:
            problems.append(errors.Problem(path, f"{expected}, got {_describe(value)}"))
            return model.Coord()
        number = float(m.group(1))
        unit: str = m.group(2).lower()
    else:
        parsed = _finite(value)
        if parsed is None:
            problems.append(errors.Problem(path, f"{expected}, got {_describe(value)}"))
            return model.Coord()
        number, unit = parsed, "px"
    if not -MAX_OFFSET_PX <= number <= MAX_OFFSET_PX:
        problems.append(
            errors.Problem(
                path,
                f"{axis} of action {action} must be between {-MAX_OFFSET_PX:g} and "
                f"{MAX_OFFSET_PX:g}, got {_describe(value)}",
            )
        )
        return model.Coord()
    return model.Coord(number, "%") if unit == "%" else model.Coord(number, "px")


def _opacity(style: object, path: str, problems: Problems) -> float:
    if style is None:
        return 1.0
    if not isinstance(style, dict):
        problems.append(
            errors.Problem(path, f"must be an object of CSS properties, got {_describe(style)}")
        )
        return 1.0
    raw = style.get("opacity")
    if raw is None:
        return 1.0
    value = _finite(raw)
    if value is None or not 0.0 <= value <= 1.0:
        problems.append(
            errors.Problem(f"{path}.opacity", f"must be a number from 0 to 1, got {_describe(raw)}")
        )
        return 1.0
    return value


def _duration_hint(value: object) -> float | None:
    # Informative only (the probe decides the media length), so a bad value is dropped
    # rather than failing a project the editor itself would play.
    parsed = _finite(value)
    return parsed if parsed is not None and parsed >= 0 else None


def _background(value: object, problems: Problems) -> str:
    if value is None:
        return "transparent"
    if not isinstance(value, str):
        problems.append(
            errors.Problem(
                "backgroundColor", f"must be a CSS colour string, got {_describe(value)}"
            )
        )
        return "transparent"
    try:
        color.parse_color(value)
    except ValueError as exc:
        problems.append(errors.Problem("backgroundColor", str(exc)))
        return "transparent"
    return value.strip()


def _dimension(value: object, path: str, problems: Problems, *, default: int) -> int:
    if value is None:
        return default
    number = _finite(value)
    if number is None or not number.is_integer() or not 1 <= number <= MAX_CANVAS:
        problems.append(
            errors.Problem(
                path,
                f"must be a whole number of pixels from 1 to {MAX_CANVAS}, got {_describe(value)}",
            )
        )
        return default
    return int(number)


def _seconds(
    value: object,
    path: str,
    problems: Problems,
    *,
    required: bool = False,
    minimum: float | None = 0.0,
) -> float | None:
    if value is None:
        if required:
            problems.append(errors.Problem(path, "is required: a number of seconds"))
        return None
    number = _number(value, path, problems, "a number of seconds")
    if number is None:
        return None
    if minimum is not None and number < minimum:
        problems.append(
            errors.Problem(path, f"must not be negative, got {_describe(value)} seconds")
        )
        return None
    if abs(number) > MAX_SECONDS:
        problems.append(
            errors.Problem(
                path,
                f"must be at most {MAX_SECONDS:g} seconds (24 hours), got {_describe(value)}",
            )
        )
        return None
    return number


def _rate(value: object, path: str, problems: Problems) -> float | None:
    rate = _number(value, path, problems, "a number")
    if rate is not None and rate > MAX_RATE:
        problems.append(
            errors.Problem(
                path,
                f"must be at most {MAX_RATE:.0f} (a day of media in under a tenth of a "
                f"second), got {_describe(value)}",
            )
        )
        return None
    return rate


def _number(value: object, path: str, problems: Problems, what: str) -> float | None:
    """A finite number, or None after recording a problem (None in is None out)."""
    if value is None:
        return None
    number = _finite(value)
    if number is None:
        problems.append(errors.Problem(path, f"must be {what}, got {_describe(value)}"))
    return number


def _finite(value: object) -> float | None:
    """``value`` as a float if it is a finite JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


def _flag(value: object, path: str, problems: Problems) -> bool:
    # The editor writes both true/false and 1/0; strings are refused because JavaScript
    # would read "false" as true.
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    number = _finite(value)
    if number is None:
        problems.append(
            errors.Problem(path, f"must be true or false (or 1 or 0), got {_describe(value)}")
        )
        return False
    return number != 0


def _text(value: object, path: str, problems: Problems) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(errors.Problem(path, f"must be a string, got {_describe(value)}"))
        return ""
    return value


def _label(name: str) -> str:
    return _quote(name, 60)


def _quote(text: str, limit: int) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _describe(value: object) -> str:
    """A short rendering of a JSON value for messages, in JSON's own words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value, 40)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, float):
        return f"{value:.15g}"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**20 else "a number too large to use"
    return type(value).__name__
