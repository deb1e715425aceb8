"""The local launcher: one ``python -m rendermill.renderer`` subprocess per attempt.

Processes are followed by their handle in this scheduler's memory: one started by an
earlier scheduler cannot be waited for (the scheduler then watches its heartbeat). There
are no size classes on one machine: every attempt gets what the machine has.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from rendermill.common import errors


class LocalLauncher:
    name = "local"

    def __init__(
        self, command: Sequence[str] = (sys.executable, "-m", "rendermill.renderer")
    ) -> None:
        self._command = tuple(command)
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    async def launch(
        self, job_id: str, attempt: int, env: Mapping[str, str], *, size: int = 0
    ) -> str:
        full_env = {**os.environ, **env}
        proc = await asyncio.create_subprocess_exec(
            *self._command,
            "--job",
            job_id,
            "--attempt",
            str(attempt),
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            # Its own process group, so a Ctrl-C on the terminal goes to the scheduler,
            # which then stops renders in order.
            start_new_session=True,
        )
        task_id = f"pid-{proc.pid}"
        self._procs[task_id] = proc
        return task_id

    async def wait(self, task_id: str) -> int:
        proc = self._procs.get(task_id)
        if proc is None:
            raise errors.NotFound(f"no renderer process {task_id} started by this scheduler")
        try:
            rc = await proc.wait()
        finally:
            self._procs.pop(task_id, None)
        # A signal death is reported as -N by asyncio; use the shell's 128+N convention.
        return 128 - rc if rc < 0 else rc

    async def stop(self, task_id: str, *, grace: float = 10.0, reason: str = "") -> None:
        proc = self._procs.get(task_id)
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
