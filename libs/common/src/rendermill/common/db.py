"""Postgres access: the pool, JSON codecs, and a LISTEN helper that reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from rendermill.common import embedded, settings
from rendermill.common import logging as rlog

log = rlog.get(__name__)

# A connection, pooled or not: what repository functions take.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

EVENTS_CHANNEL = "rendermill_events"
QUEUE_CHANNEL = "rendermill_queue"

# What a database that is down, restarting or out of reach raises: the connection was
# refused or broke (a restart ends every session), or the server is shutting down or
# not yet accepting sessions. Worth a retry, not a bug.
UNAVAILABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def dsn(cfg: settings.Common) -> str:
    """The DSN to use: the configured one, else the embedded server under ``cfg.home``."""
    if cfg.database_url:
        return cfg.database_url
    return embedded.start(cfg.home_path)


def describe(dsn: str) -> str:
    """``dsn`` without its credentials (host, port, database), for messages and logs."""
    parts = urllib.parse.urlsplit(dsn)
    if not parts.scheme:
        return "a key=value DSN"
    host = parts.hostname or "local socket"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: _json_encode(v).decode(),
            decoder=_json_decode,
            schema="pg_catalog",
        )


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, timeout=10)
    await _init_connection(conn)
    return conn


@contextlib.asynccontextmanager
async def pool(url: str, *, min_size: int = 1, max_size: int = 10) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose connections encode/decode json and jsonb as Python values."""
    p = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        timeout=10,
        # No query may hang a service: a stuck statement fails and is retried.
        command_timeout=60,
    )
    try:
        yield p
    finally:
        await p.close()


Callback = Callable[[str | None], None]


class Listener:
    """LISTEN on one channel over a dedicated connection that reconnects with backoff.

    Callbacks get each payload; after a reconnect they get ``None``, meaning "you may have
    missed notifications: re-read". NOTIFY is only a hint, so this is enough.
    """

    def __init__(self, url: str, channel: str, *, max_backoff: float = 5.0) -> None:
        self._url = url
        self._channel = channel
        self._callbacks: list[Callback] = []
        self._task: asyncio.Task[None] | None = None
        self._max_backoff = max_backoff
        self.connected = asyncio.Event()

    def add(self, callback: Callback) -> None:
        self._callbacks.append(callback)

    def remove(self, callback: Callback) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def _dispatch(self, payload: str | None) -> None:
        for cb in list(self._callbacks):
            try:
                cb(payload)
            except Exception as exc:  # a bad subscriber must not kill the listener
                log.error("listener_callback_failed", error=repr(exc))

    def _on_notify(self, _c: Any, _pid: int, _channel: str, payload: object) -> None:
        self._dispatch(str(payload))

    async def _run(self) -> None:
        delay = 0.1
        first = True
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._url, timeout=10)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("listen_connect_failed", channel=self._channel, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self._channel, self._on_notify)
                delay = 0.1
                self.connected.set()
                if not first:
                    log.info("listen_reconnected", channel=self._channel)
                    self._dispatch(None)
                first = False
                # asyncpg notices a dropped socket only on I/O: ping now and then.
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=5.0)
                    if not lost.is_set():
                        try:
                            await conn.execute("SELECT 1", timeout=5)
                        except (OSError, asyncpg.PostgresError, TimeoutError):
                            lost.set()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("listen_lost", channel=self._channel, error=repr(exc))
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
            await asyncio.sleep(delay)

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run(), name=f"listen:{self._channel}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
