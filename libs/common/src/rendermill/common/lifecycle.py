"""Process lifecycle: signals set one stop event; background tasks that die stop the service."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from rendermill.common import logging as rlog

log = rlog.get(__name__)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (the first time); a second SIGINT is left to default."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, _on_signal, stop, sig)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("stop_requested", signal=sig.name)
    stop.set()


class Supervisor:
    """Runs background tasks; if one fails, records it and sets the stop event.

    A service whose loop has died must not limp on: ``failed`` tells ``__main__`` to exit
    non-zero so the orchestrator restarts it.
    """

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.failed: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background_task_failed", task=task.get_name(), error=repr(exc))
            self.failed = self.failed or exc
            self.stop.set()

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for tasks to finish, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


@contextlib.asynccontextmanager
async def supervised(stop: asyncio.Event, grace: float = 10.0) -> AsyncIterator[Supervisor]:
    sup = Supervisor(stop)
    try:
        yield sup
    finally:
        await sup.drain(grace)


async def wait_or_stop(stop: asyncio.Event, aw: asyncio.Event, timeout: float) -> None:
    """Wait for ``aw`` or ``stop``, at most ``timeout`` seconds."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(aw.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
