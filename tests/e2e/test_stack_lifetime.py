"""The local stack's services live no longer than the stack's own process, and a stack
refuses a port another one still holds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rendermill.cli.stack import Stack, free_port

_RUN_STACK = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from rendermill.cli.stack import Stack

    async def main() -> None:
        home, port, dsn, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        async with Stack(Path(home), port=port, database_url=dsn, log_path=Path(log)) as stack:
            print(" ".join(str(p.pid) for p in stack.procs.values()), flush=True)
            await asyncio.sleep(600)

    asyncio.run(main())
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child that exited but was not yet reaped by its (dead) parent's successor.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_services_stop_when_the_stack_is_killed(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    stack = subprocess.Popen(
        [sys.executable, "-c", _RUN_STACK, str(tmp_path / "home"), str(port), db_url,
         str(tmp_path / "stack.log")],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert stack.stdout is not None
        line = stack.stdout.readline()
        children = [int(pid) for pid in line.split()]
        assert len(children) == 3 and all(_alive(pid) for pid in children)
        # SIGKILL: the stack runs no clean-up at all.
        stack.send_signal(signal.SIGKILL)
        stack.wait()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in children)
    finally:
        stack.kill()
        stack.wait()


async def test_a_port_still_held_is_refused_before_anything_starts(
    db_url: str, tmp_path: Path
) -> None:
    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stack = Stack(tmp_path / "home", port=port, database_url=db_url)
        with pytest.raises(RuntimeError, match=f"port {port} is in use"):
            await stack.__aenter__()
        assert stack.procs == {}
    finally:
        server.close()
        await server.wait_closed()
