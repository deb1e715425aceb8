"""pytest plugin with rendermill's shared fixtures (loaded by ``-p rendermill.common.testing``).

Logging is reset after every test (see ``rendermill.common.logging.reset``), and the
run keeps its caches in a temporary directory of its own, never the user's.

Postgres: the server named by ``DATABASE_URL`` if set, else an embedded one for the run.
One template database is migrated per run; each test gets ``CREATE DATABASE … TEMPLATE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
import pytest_asyncio

from rendermill.common import db, embedded, jobs, migrate, schemas, settings, tenants
from rendermill.common import logging as rlog
from rendermill.common.project import model


@pytest.fixture(autouse=True, scope="session")
def _cache_of_its_own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Renders in tests keep what they cache (see settings.user_cache_dir) in the run's
    temporary directory, whatever the environment names."""
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "RENDERMILL_CACHE_DIR")}
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("RENDERMILL_CACHE_DIR", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _logging_as_new() -> Iterator[None]:
    """Every test starts with logging as a new process has it: a command or service set
    up by one test does not decide where the next one's lines go."""
    yield
    rlog.reset()


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name``."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of a maintenance database on the test server."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="rendermill-pg-") as home:
        yield embedded.start(Path(home), cleanup="stop")
        embedded.stop_all()


@pytest_asyncio.fixture(scope="session")
async def template_db(pg_server_dsn: str) -> AsyncIterator[str]:
    """Name of a freshly migrated template database, dropped at the end of the run."""
    name = f"rm_tpl_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await db.connect(with_database(pg_server_dsn, name))
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def db_url(pg_server_dsn: str, template_db: str) -> AsyncIterator[str]:
    """DSN of a new, migrated database for one test."""
    name = f"rm_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        yield with_database(pg_server_dsn, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with db.pool(db_url, max_size=5) as p:
        yield p


def gateway_settings(db_url: str, store: Path, **overrides: object) -> settings.Gateway:
    """A gateway's settings for a test: its database, a filesystem store at ``store``, a
    fixed signing key ("k"), and ``overrides``; nothing from the environment."""
    base = {"database_url": db_url, "store_path": str(store), "url_signing_key": "k"}
    return settings.load(settings.Gateway, env={}, overrides={**base, **overrides})


async def finished_job(pool: asyncpg.Pool, webhook_url: str) -> tuple[tenants.Tenant, jobs.Job]:
    """A new tenant's job that succeeded, with ``webhook_url``: its job.succeeded event
    waits in the outbox for the notifier."""
    async with pool.acquire() as conn:
        tenant, _ = await tenants.create(conn, "t")
        job, _ = await jobs.create(
            conn,
            tenant_id=tenant.id,
            project={},
            output=schemas.OutputSpec(),
            media={},
            webhook_url=webhook_url,
        )
        await jobs.start_attempt(conn, job.id, 1)
        result = {"object_key": f"outputs/{tenant.id}/{job.id}/output.mp4"}
        job = await jobs.finish(conn, job.id, schemas.JobStatus.SUCCEEDED, result=result)
    return tenant, job


# --- a database outage ------------------------------------------------------------------

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class Outage:
    """A TCP proxy in front of PostgreSQL that can be cut and opened again: connect with
    ``dsn``; ``cut()`` aborts every connection and refuses new ones, as a restart or a
    failover does; ``restore()`` listens again on the same port."""

    def __init__(self, dsn: str) -> None:
        parts = urllib.parse.urlsplit(dsn)
        query = urllib.parse.parse_qs(parts.query)
        port = parts.port or 5432
        if "host" in query:  # a Unix socket directory (the embedded server)
            path = f"{query['host'][0]}/.s.PGSQL.{port}"
            self._upstream: Connect = lambda: asyncio.open_unix_connection(path)
        else:
            host = parts.hostname or "127.0.0.1"
            self._upstream = lambda: asyncio.open_connection(host, port)
        self.port = free_port()
        user = urllib.parse.quote(parts.username or "postgres")
        password = f":{urllib.parse.quote(parts.password)}" if parts.password else ""
        self.dsn = f"postgresql://{user}{password}@127.0.0.1:{self.port}{parts.path}"
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._upstream()
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest_asyncio.fixture
async def outage(db_url: str) -> AsyncIterator[Outage]:
    """A proxy to this test's database, for cutting (see ``Outage``)."""
    proxy = Outage(db_url)
    await proxy.restore()
    yield proxy
    if proxy.is_open:
        await proxy.cut()


# --- project builders for renderer tests ------------------------------------------------


def clip(start: float, end: float, **fields: object) -> model.Action:
    """An action from ``start`` to ``end`` with any other model fields."""
    return msgspec.convert(
        {"id": f"a{start}-{end}", "start": start, "end": end, **fields},
        model.Action,
        from_attributes=True,
    )


def track(
    url: str,
    *actions: model.Action,
    controller: model.Controller = model.Controller.VIDEO,
    **fields: object,
) -> model.Track:
    """A track named after ``url`` (id ``t-{url}``) playing ``actions``."""
    return msgspec.structs.replace(
        model.Track(id=f"t-{url}", name=f"track {url}", controller=controller, url=url),
        actions=actions,
        **fields,
    )


def project(*tracks: model.Track, **fields: object) -> model.Project:
    """A 320x180 project of ``tracks`` (bottom first)."""
    return msgspec.structs.replace(model.Project(width=320, height=180, tracks=tracks), **fields)
