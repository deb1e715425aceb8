"""The notifier against a real Postgres and a real local HTTP receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import pytest_asyncio
from aiohttp import web

from rendermill.cli.stack import free_port
from rendermill.common import endpoints, errors, jobs, schemas, settings, webhooks
from rendermill.common.schemas import JobStatus
from rendermill.common.store import fs
from rendermill.common.testing import finished_job
from rendermill.notifier.service import Notifier, RetryPolicy


class FlakyReceiver:
    """Fails the first ``failures`` deliveries with 503, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def hook(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        if len(self.calls) <= self.failures:
            return web.Response(status=503, text="busy")
        return web.Response(status=200, text="ok")


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[FlakyReceiver]:
    rec = FlakyReceiver(failures=2)
    app = web.Application()
    app.router.add_post("/hook", rec.hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rec.port).start()
    yield rec
    await runner.cleanup()


def _notifier(pool: asyncpg.Pool, session: aiohttp.ClientSession, tmp: Path) -> Notifier:
    cfg = settings.load(
        settings.Notifier,
        env={},
        overrides={"allow_private_webhooks": True, "max_attempts": 4, "retry_base_delay": 0.0},
    )
    store = fs.FsStore(tmp, signing_key="k", public_url="http://127.0.0.1:1")
    return Notifier(cfg, pool, session, store)


async def test_signed_delivery_with_retries_recorded(
    pool: asyncpg.Pool, receiver: FlakyReceiver, tmp_path: Path
) -> None:
    tenant, job = await finished_job(pool, receiver.url)
    async with aiohttp.ClientSession() as session:
        notifier = _notifier(pool, session, tmp_path)
        assert await notifier.dispatch() == 1
        assert await notifier.dispatch() == 0  # each event is dispatched once
        for _ in range(3):
            # A zero base delay makes each retry due at once.
            await pool.execute("UPDATE webhook_messages SET next_attempt_at = now()")
            await notifier.deliver_due()
    assert len(receiver.calls) == 3
    headers, body = receiver.calls[-1]
    webhooks.verify(tenant.webhook_secret, headers, body)
    payload = msgspec.json.decode(body)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["job_id"] == str(job.id)
    assert payload["data"]["download_url"].startswith("http://127.0.0.1:1/v1/files/outputs/")
    # The same message id on every retry, so receivers can deduplicate.
    assert len({h["webhook-id"] for h, _ in receiver.calls}) == 1
    rows = await pool.fetch("SELECT attempt, status_code FROM webhook_attempts ORDER BY attempt")
    assert [(r["attempt"], r["status_code"]) for r in rows] == [(1, 503), (2, 503), (3, 200)]
    msg = await pool.fetchrow("SELECT status, attempts FROM webhook_messages")
    assert msg is not None
    assert (msg["status"], msg["attempts"]) == ("delivered", 3)


async def test_receiver_down_gives_up_after_max_attempts(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await finished_job(pool, f"http://127.0.0.1:{free_port()}/nobody-home")
    async with aiohttp.ClientSession() as session:
        notifier = _notifier(pool, session, tmp_path)
        await notifier.dispatch()
        for _ in range(6):
            await pool.execute("UPDATE webhook_messages SET next_attempt_at = now()")
            await notifier.deliver_due()
    rows = await pool.fetch("SELECT attempt, status_code, error FROM webhook_attempts")
    assert len(rows) == 4 and all(r["status_code"] is None and r["error"] for r in rows)
    assert await pool.fetchval("SELECT status FROM webhook_messages") == "failed"


async def test_registered_endpoint_gets_its_own_signature_and_is_disabled_when_dead(
    pool: asyncpg.Pool, receiver: FlakyReceiver, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/gone"
    tenant, _ = await finished_job(pool, receiver.url)
    async with pool.acquire() as conn:
        live = await endpoints.create(conn, tenant.id, receiver.url)
        down = await endpoints.create(conn, tenant.id, dead)
    cfg = settings.load(
        settings.Notifier,
        env={},
        overrides={
            "allow_private_webhooks": True,
            "max_attempts": 1,
            "retry_base_delay": 0.0,
            "endpoint_disable_after": 2,
        },
    )
    store = fs.FsStore(tmp_path, signing_key="k", public_url="http://127.0.0.1:1")
    async with aiohttp.ClientSession() as session:
        notifier = Notifier(cfg, pool, session, store)
        await notifier.dispatch()
        await notifier.deliver_due()
        # Two more finished jobs of the tenant: the dead endpoint's second given-up
        # message disables it; the third event is not sent to it at all.
        for _ in range(2):
            async with pool.acquire() as conn:
                job, _ = await jobs.create(
                    conn, tenant_id=tenant.id, project={}, output=schemas.OutputSpec(), media={}
                )
                await jobs.start_attempt(conn, job.id, 1)
                await jobs.finish(conn, job.id, JobStatus.FAILED)
            await notifier.dispatch()
            await notifier.deliver_due()
    async with pool.acquire() as conn:
        state = {e.url: e for e in await endpoints.list_for_tenant(conn, tenant.id)}
        sent_to_dead = await conn.fetchval(
            "SELECT count(*) FROM webhook_messages WHERE endpoint_id = $1", down.id
        )
    assert not state[dead].enabled and state[dead].disabled_at is not None
    assert sent_to_dead == 2
    assert state[receiver.url].enabled and state[receiver.url].failure_count == 0
    # The receiver got the job's own webhook (tenant secret) and the endpoint's (its own).
    signed_with = set()
    for headers, body in receiver.calls:
        for name, secret in (("tenant", tenant.webhook_secret), ("endpoint", live.secret)):
            try:
                webhooks.verify(secret, headers, body)
            except errors.Unauthorized:
                continue
            signed_with.add(name)
    assert signed_with == {"tenant", "endpoint"}


def test_retry_policy_backs_off_and_stops() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=2.0, max_delay=10.0)
    delays = [policy.delay(n) for n in range(1, 5)]
    assert delays[3] is None
    d1, d2, d3 = (d for d in delays[:3] if d is not None)
    assert 1.6 <= d1 <= 2.4 and 3.2 <= d2 <= 4.8 and 6.4 <= d3 <= 9.6
