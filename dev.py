#!/usr/bin/env python3
"""Set up the toolchain from nothing but Python, then run a project task.

    python3 dev.py demo        render the bundled demo project through the whole stack
    python3 dev.py test        ruff, mypy, import contracts, then the test suite
    python3 dev.py bench NAME  a benchmark from bench/ (compose, cut, memory, phone, slideshow)
    python3 dev.py run ARGS    any command inside the project environment (e.g. rendermill up)

uv is installed into .tools/ with pip the first time; uv then builds .venv from uv.lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools"
UV_VERSION = "0.9.30"


def _uv() -> Path:
    bindir = TOOLS / ("Scripts" if os.name == "nt" else "bin")
    uv = bindir / "uv"
    if not uv.exists():
        print(f"dev: installing uv {UV_VERSION} into {TOOLS}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
        subprocess.run(
            [str(bindir / "python"), "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"],
            check=True,
        )
    return uv


def _run(*argv: str, env: dict[str, str] | None = None) -> int:
    print("dev: $", " ".join(argv), file=sys.stderr, flush=True)
    return subprocess.run(argv, cwd=ROOT, env=env).returncode


def main(args: list[str]) -> int:
    if not args or args[0] not in {"demo", "test", "bench", "run", "sync"}:
        print(__doc__, file=sys.stderr)
        return 2
    uv = str(_uv())
    task, rest = args[0], args[1:]
    if task == "bench":
        return _bench(uv, rest)
    sync = [uv, "sync", "--frozen", "--all-packages", "--inexact", "--quiet"]
    if rc := _run(*sync):
        return rc
    urun = [uv, "run", "--frozen", "--no-sync"]
    if task == "sync":
        return 0
    if task == "demo":
        return _run(*urun, "rendermill", "demo", *rest)
    if task == "run":
        return _run(*urun, *rest)
    steps = [
        ["ruff", "format", "--check", "."],
        ["ruff", "check", "."],
        ["mypy", "libs", "services", "cli", "tests", "bench"],
        ["lint-imports"],
        ["pytest", *rest],
    ]
    for step in steps:
        if rc := _run(*urun, *step):
            return rc
    return 0


def _bench(uv: str, rest: list[str]) -> int:
    """Benchmarks run in an environment of their own, .venv-bench: the project as it is
    deployed (no development tools, which would add to every start-up) plus the bench
    group (the ffmpeg command line, MoviePy)."""
    if not rest:
        print("dev: bench needs a name: compose, cut, memory, phone or slideshow", file=sys.stderr)
        return 2
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(ROOT / ".venv-bench")}
    sync = [uv, "sync", "--frozen", "--all-packages", "--no-default-groups", "--group", "bench"]
    # Bytecode compiled ahead, as in the images: where PYTHONDONTWRITEBYTECODE is set (or
    # site-packages is read-only) every start would otherwise compile ~0.2 s of modules.
    if rc := _run(*sync, "--quiet", "--compile-bytecode", env=env):
        return rc
    python = ROOT / ".venv-bench" / ("Scripts" if os.name == "nt" else "bin") / "python"
    sources = [str(p) for p in (*sorted(ROOT.glob("*/*/src")), ROOT / "cli" / "src")]
    if rc := _run(str(python), "-m", "compileall", "-q", *sources, env=env):
        return rc
    return _run(
        uv, "run", "--frozen", "--no-sync", "python", f"bench/{rest[0]}.py", *rest[1:], env=env
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
