"""``rendermill render``: render a project file on this machine, no server needed.

It runs the same engine the renderer service runs. Media come from the container itself
(``.sue`` with embedded files), from ``--media URL=PATH`` bindings, or from ``--base DIR``
for root-relative and relative urls.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
import time
import urllib.parse
from pathlib import Path

import msgspec

from rendermill.common import errors, schemas, settings
from rendermill.common.project import model, parse
from rendermill.renderer import engine

FORMATS = ("mp4", "webm", "mov", "gif")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", help="project file: plain JSON or a .sue container")
    p.add_argument(
        "-o", "--output", required=True, help="output file (its suffix picks the format)"
    )
    p.add_argument(
        "--media",
        action="append",
        default=[],
        metavar="URL=PATH",
        help="bind a track url, exactly as written in the project, to a local file (repeatable)",
    )
    p.add_argument("--base", help="directory that root-relative and relative urls resolve against")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from -o's suffix)")
    p.add_argument("--resolution", default="1080p", help="2160p, 1080p, 720p, 480p or WxH")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--quality", choices=("draft", "standard", "high"), default="standard")
    p.add_argument("--poster", type=float, metavar="SECONDS", help="also write a JPEG poster")
    p.add_argument(
        "--copy",
        choices=("auto", "never"),
        default="auto",
        help="auto (default): cut, not render, a timeline that only cuts H.264 clips into "
        "MP4/MOV or VP9 clips into WebM (sound copied too where it can be); never: always "
        "render",
    )
    p.add_argument("--volume-clock", choices=("editor", "timeline", "source"), default="editor")
    p.add_argument("--fit-mode", choices=("editor", "css"), default="editor")
    p.add_argument("--effects", action="store_true", help="honour blendMode and style.opacity")
    p.add_argument(
        "--cpus",
        type=_cpus,
        default=0.0,
        metavar="N",
        help="CPUs the render may keep busy; sizes its decoder, scaler and encoder threads, "
        "and with them its memory (default: all this process may use)",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where renders keep what later ones reuse: the tables HDR and wide-gamut "
        "video is mapped through (default: $RENDERMILL_CACHE_DIR, else "
        "$XDG_CACHE_HOME/rendermill or ~/.cache/rendermill)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of CPUs (0: all usable)")
    return value


def _output_spec(args: argparse.Namespace, out: Path) -> schemas.OutputSpec:
    fmt = args.format or out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise errors.InvalidInput(
            f"cannot tell the format from {out.name!r}: use --format ({', '.join(FORMATS)})"
        )
    spec = {
        "format": fmt,
        "resolution": args.resolution,
        "fps": args.fps,
        "quality": args.quality,
        "poster": args.poster,
        "copy": args.copy,
        "volume_clock": args.volume_clock,
        "fit_mode": args.fit_mode,
        "effects": args.effects,
    }
    try:
        output = msgspec.convert(spec, schemas.OutputSpec)
    except msgspec.ValidationError as exc:
        # msgspec says "Expected `int` >= 1 - at `$.fps`": name the option as typed.
        text = str(exc)
        found = re.fullmatch(r"(.*) - at `\$\.(\w+)`", text)
        if found is None:
            raise errors.InvalidInput(f"bad output option: {text}") from exc
        option = "--" + found.group(2).replace("_", "-")
        problem = found.group(1)
        bound = re.fullmatch(r"Expected `\w+` (>=|<=) (.+)", problem)
        if bound is not None:
            problem = "must be at least " if bound.group(1) == ">=" else "must be at most "
            problem += bound.group(2)
        raise errors.InvalidInput(f"{option} {spec[found.group(2)]}: {problem}") from exc
    output.size()  # raises for an unknown resolution
    return output


def _bindings(values: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for value in values:
        url, sep, path = value.rpartition("=")
        if not sep or not url:
            raise errors.InvalidInput(f"--media {value!r}: use URL=PATH")
        local = Path(path).expanduser()
        if not local.is_file():
            raise errors.InvalidInput(f"--media {url}: no file at {local}")
        out[url] = local
    return out


def resolve_sources(
    project: model.Project,
    data: bytes,
    bindings: dict[str, Path],
    base: Path | None,
    scratch: Path,
) -> dict[str, Path]:
    """A local file for every track url the render needs; raises InvalidProject listing
    every url left without one."""
    files = {f.name: f for f in project.files}
    sources: dict[str, Path] = {}
    problems: list[errors.Problem] = []
    for i, track in enumerate(project.tracks):
        if not track.renders or track.url in sources:
            continue
        if track.url in bindings:
            sources[track.url] = bindings[track.url]
        elif track.embedded is not None and track.embedded in files:
            f = files[track.embedded]
            path = scratch / f"{i:03d}-{Path(f.name).name}"
            path.write_bytes(data[f.offset : f.offset + f.size])
            sources[track.url] = path
        elif base is not None and (local := _under(base, track.url)) is not None:
            sources[track.url] = local
        else:
            problems.append(
                errors.Problem(
                    f"tracks[{i}].url",
                    f"track {track.name or track.id!r} plays {track.url!r}: bind it with "
                    f"--media '{track.url}=PATH'" + ("" if base else " or pass --base DIR"),
                )
            )
    if problems:
        raise errors.InvalidProject(problems)
    return sources


def _under(base: Path, url: str) -> Path | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme or parts.netloc:
        return None
    rel = urllib.parse.unquote(parts.path).lstrip("/")
    candidate = (base / rel).resolve()
    if not candidate.is_relative_to(base.resolve()) or not candidate.is_file():
        return None
    return candidate


def run(args: argparse.Namespace) -> int:
    path = Path(args.project)
    out = Path(args.output)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise errors.InvalidInput(f"{path}: cannot read: {exc.strerror}") from exc
    project, _ = parse.load(data)
    output = _output_spec(args, out)
    folder = out.parent
    if not folder.is_dir():
        raise errors.InvalidInput(f"{out}: there is no directory {folder}: create it first")
    if not os.access(folder, os.W_OK):
        raise errors.InvalidInput(f"{out}: {folder} is not writable")
    base = Path(args.base) if args.base else None
    total = project.frame_count(output.fps)
    with tempfile.TemporaryDirectory(prefix="rendermill-render-") as tmp:
        sources = resolve_sources(project, data, _bindings(args.media), base, Path(tmp))
        threads = engine.Threads.of(args.cpus)
        cache = settings.cache_dir(args.cache_dir)

        def render(on_progress: engine.ProgressCallback | None = None) -> engine.RenderResult:
            try:
                return engine.render(
                    project,
                    sources,
                    output,
                    out,
                    on_progress=on_progress,
                    threads=threads,
                    cache_dir=cache,
                )
            except OSError as exc:
                # Sources that cannot be read are MediaErrors; this is the output's side
                # (a full disk, a path the system refuses).
                reason = exc.strerror or str(exc)
                raise errors.InvalidInput(f"{out}: cannot write the render: {reason}") from exc

        started = time.perf_counter()
        cpu_started = time.process_time()
        if args.quiet:
            result = render()
        else:
            # Imported only when a bar is shown: 15 ms of start-up.
            from rendermill.cli import progress as bars

            with bars.bar(total=total, unit="frame") as bar:

                def progress(done: int, _total: int) -> None:
                    bar.update(done - bar.n)

                result = render(progress)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    mode = "compose"
    if result.copied:
        mode = "stream copy, sound " + ("copied" if result.sound_copied else "mixed")
    print(
        f"wrote {out}: {result.width}x{result.height} {output.format}, {result.frames} frames, "
        f"{result.duration:.3f} s, {result.size_bytes / 1e6:.2f} MB in {wall:.2f} s "
        f"({result.duration / wall:.2f}x realtime, {cpu:.1f} CPU s, {mode})"
    )
    return 0
