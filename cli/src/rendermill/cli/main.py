"""The ``rendermill`` command."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

from rendermill.common import admin, errors, settings
from rendermill.common import logging as rlog
from rendermill.common.project import parse


def _validate(args: argparse.Namespace) -> int:
    path = Path(args.project)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        project, files = parse.load(data)
    except errors.InvalidProject as exc:
        print(f"{path}: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            print(f"  {problem.path or '(file)'}: {problem.message}")
        return 1
    kinds = ", ".join(f"{t.controller.value}" for t in project.tracks)
    print(
        f"{path}: valid: {len(project.tracks)} track(s) ({kinds}), "
        f"{project.width}x{project.height}, duration {project.duration:.3f} s, "
        f"{len(files)} embedded file(s)"
    )
    for problem in parse.unresolved(project, {}):
        print(f"  note: {problem.path}: {problem.message}")
    return 0


def _up(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal

    from rendermill.cli.stack import Stack

    async def run() -> None:
        fmt = "console" if sys.stderr.isatty() else "json"
        async with Stack(
            Path(args.home), port=args.port, log_level=args.log_level, log_format=fmt
        ) as stack:
            creds = await stack.create_tenant(args.tenant)
            print(f"API:            {creds.api_url}")
            print(f"API key:        {creds.api_key}")
            print(f"webhook secret: {creds.webhook_secret}")
            print("Ctrl-C stops the stack.", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            while not stop.is_set():
                stack.check()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    asyncio.run(run())
    return 0


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from rendermill.cli import demo
    from rendermill.cli.stack import free_port

    port = args.port or free_port()
    return asyncio.run(
        demo.run(
            Path(args.home).resolve(),
            Path(args.output).resolve(),
            port=port,
            resolution=args.resolution,
            fps=args.fps,
        )
    )


def _render(args: argparse.Namespace) -> int:
    from rendermill.cli import render

    try:
        return render.run(args)
    except errors.InvalidProject as exc:
        print(f"{args.project}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.path or '(file)'}: {problem.message}", file=sys.stderr)
        return 2
    except errors.MediaError as exc:
        print(f"rendermill: {exc.message}", file=sys.stderr)
        return 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rendermill", description="Render Stoked UI projects.")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a project file (plain JSON or .sue container)")
    v.add_argument("project")
    v.set_defaults(func=_validate)

    from rendermill.cli import render

    r = sub.add_parser("render", help="render a project file on this machine (no server)")
    render.add_arguments(r)
    r.set_defaults(func=_render)

    admin.add_commands(sub)

    home = settings.load(settings.Common).home
    u = sub.add_parser("up", help="run the whole stack on this machine")
    u.add_argument("--home", default=home, help="state directory (default: %(default)s)")
    u.add_argument("--port", type=int, default=8080)
    u.add_argument("--tenant", default="local", help="name of the tenant to create")
    u.add_argument("--log-level", default="info")
    u.set_defaults(func=_up)

    d = sub.add_parser("demo", help="render the bundled demo project through the stack")
    d.add_argument("--home", default=home)
    d.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    d.add_argument("-o", "--output", default="demo-output.mp4")
    d.add_argument("--resolution", default="720p")
    d.add_argument("--fps", type=int, default=30)
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> None:
    # Building the parser imports the engine (numpy, PyAV): some 30,000 objects that live
    # as long as the process. Collecting while they are made finds nothing; frozen, they
    # are not walked again by any later full collection (16 ms each) nor at exit.
    gc.disable()
    try:
        args = build_parser().parse_args(argv)
    finally:
        gc.freeze()
        gc.enable()
    # The CLI talks to people: only warnings, unless a level is asked for.
    level = os.environ.get("RENDERMILL_LOG_LEVEL", "warning")
    rlog.setup(level, "console", "cli")
    try:
        if admin.is_admin(args):
            sys.exit(admin.run(args, sys.stdout))
        sys.exit(args.func(args))
    except errors.InvalidInput as exc:
        print(f"rendermill: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except errors.RendermillError as exc:
        print(f"rendermill: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
