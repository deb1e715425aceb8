"""Services ride out a PostgreSQL outage: the connection cut, new ones refused, for
a few seconds, as a restart or a failover does it. They back off, go on when the
database is back, and lose nothing.

The outage is real from the client's side: the services reach PostgreSQL through a TCP
proxy that the test closes (every connection aborted, the port refusing) and opens again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from rendermill.cli.stack import free_port
from rendermill.common import db, jobs, lifecycle, schemas, settings, tenants
from rendermill.common.schemas import JobStatus
from rendermill.common.store import fs
from rendermill.common.testing import Outage, finished_job, gateway_settings
from rendermill.gateway.app import create_app
from rendermill.notifier.service import Notifier


async def test_through_outages_backs_off_and_goes_on(outage: Outage) -> None:
    stop = asyncio.Event()
    conn = await asyncpg.connect(outage.dsn)
    await outage.cut()
    calls = 0

    async def step() -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            await outage.restore()
        c = await asyncpg.connect(outage.dsn, timeout=5)
        try:
            return int(await c.fetchval("SELECT 41 + 1"))
        finally:
            await c.close()

    # The connection the cut broke: a db.UNAVAILABLE error, not a bug.
    with pytest.raises(db.UNAVAILABLE):
        await conn.fetchval("SELECT 1")
    started = time.monotonic()
    before = REGISTRY.get_sample_value("rendermill_database_unavailable_total", {"task": "t"})
    assert await lifecycle.through_outages(stop, "t", step) == 42
    # Two refusals, each followed by a wait: 0.5 s, then 1 s (each with up to 1 s of jitter).
    assert calls == 3
    assert 1.5 <= time.monotonic() - started < 6.0
    # Counted for the dashboard and the alert.
    after = REGISTRY.get_sample_value("rendermill_database_unavailable_total", {"task": "t"})
    assert (after or 0.0) - (before or 0.0) == 2


async def test_through_outages_stops_when_asked_and_lets_bugs_through(outage: Outage) -> None:
    stop = asyncio.Event()
    await outage.cut()

    async def refused() -> int:
        await asyncpg.connect(outage.dsn, timeout=5)
        return 1

    asyncio.get_running_loop().call_later(0.2, stop.set)
    started = time.monotonic()
    assert await lifecycle.through_outages(stop, "test", refused) is None
    assert time.monotonic() - started < 2.0

    async def broken() -> None:
        raise asyncpg.exceptions.UndefinedTableError('relation "jobs" does not exist')

    with pytest.raises(asyncpg.exceptions.UndefinedTableError):
        await lifecycle.through_outages(asyncio.Event(), "test", broken)


async def test_the_notifier_delivers_after_an_outage(
    outage: Outage, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    got = asyncio.Event()

    async def hook(_request: web.Request) -> web.Response:
        got.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    cfg = settings.load(
        settings.Notifier, env={}, overrides={"allow_private_webhooks": True, "poll_interval": 0.2}
    )
    store = fs.FsStore(tmp_path, signing_key="k", public_url="http://127.0.0.1:1")
    stop = asyncio.Event()
    try:
        async with (
            db.pool(outage.dsn, max_size=2) as notifier_pool,
            aiohttp.ClientSession() as session,
        ):
            notifier = Notifier(cfg, notifier_pool, session, store)
            task = asyncio.create_task(notifier.run(stop))
            await asyncio.sleep(0.5)
            await outage.cut()
            # A job finishes while the notifier cannot reach the database.
            await finished_job(pool, f"http://127.0.0.1:{port}/hook")
            await asyncio.sleep(2.0)
            assert not task.done(), task  # before, the loop died with the connection
            assert not got.is_set()
            await outage.restore()
            await asyncio.wait_for(got.wait(), timeout=30)
            stop.set()
            await asyncio.wait_for(task, timeout=10)
    finally:
        stop.set()
        await runner.cleanup()
    status = await pool.fetchval("SELECT status FROM webhook_messages")
    assert status == "delivered"


async def test_an_event_stream_pauses_through_an_outage_and_goes_on(
    outage: Outage, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    cfg = gateway_settings(outage.dsn, tmp_path / "store")
    async with pool.acquire() as conn:
        tenant, key = await tenants.create(conn, "t")
        job, _ = await jobs.create(
            conn, tenant_id=tenant.id, project={}, output=schemas.OutputSpec(), media={}
        )
    async with TestClient(TestServer(create_app(cfg))) as client:
        ws = await client.ws_connect(
            f"/v1/jobs/{job.id}/events", headers={"Authorization": f"Bearer {key}"}
        )
        assert (await ws.receive_json(timeout=5))["type"] == "job.queued"
        await outage.cut()
        # The job runs on while the gateway cannot read its events.
        async with pool.acquire() as conn:
            await jobs.start_attempt(conn, job.id, 1)
            await jobs.finish(conn, job.id, JobStatus.SUCCEEDED, result=None)
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=2.0)  # nothing yet, and not closed either
        await outage.restore()
        seen = [(await ws.receive_json(timeout=30))["type"] for _ in range(2)]
        assert seen == ["job.started", "job.succeeded"]
        await ws.close()
