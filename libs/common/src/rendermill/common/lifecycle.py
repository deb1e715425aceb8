"""Process lifecycle: signals set one stop event; background tasks that die stop the service."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from prometheus_client import Counter

from rendermill.common import db
from rendermill.common import logging as rlog

log = rlog.get(__name__)
T = TypeVar("T")
OUTAGE_RETRIES = Counter(
    "rendermill_database_unavailable_total",
    "Tries of a service's work that found PostgreSQL out of reach, by what was tried",
    ["task"],
)


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


async def through_outages(
    stop: asyncio.Event, what: str, step: Callable[[], Awaitable[T]]
) -> T | None:
    """``step()``, tried again while the database is unavailable (``db.UNAVAILABLE``:
    PostgreSQL restarting, failing over, out of reach), backing off, until it succeeds
    or ``stop`` is set (then None). A service loop rides out an outage this way instead
    of dying with it. Any other error propagates at once."""
    # Imported here: 40 ms that a renderer process, started for every job, never needs.
    import tenacity

    async def nap(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def waiting(state: Any) -> None:
        assert state.outcome is not None and state.next_action is not None
        OUTAGE_RETRIES.labels(what).inc()
        log.warning(
            "database_unavailable",
            task=what,
            tries=state.attempt_number,
            error=repr(state.outcome.exception()),
            retry_in=round(state.next_action.sleep, 2),
        )

    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(db.UNAVAILABLE),
        # 0.5 s, doubling, at most 15 s between tries.
        wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=15.0),
        stop=tenacity.stop_when_event_set(stop),  # type: ignore[arg-type]
        sleep=nap,
        before_sleep=waiting,
        reraise=True,
    )
    try:
        result: T = await retrying(step)
    except db.UNAVAILABLE:
        if stop.is_set():
            return None
        raise
    tries = retrying.statistics.get("attempt_number", 1)
    if tries > 1:
        log.info("database_available", task=what, tries=tries)
    return result
