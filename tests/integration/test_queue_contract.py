"""The queue contract, run against both adapters: the Postgres queue on a real Postgres,
and the SQS queue through the real aioboto3 client against moto in server mode on
127.0.0.1. Times are whole seconds, as SQS counts them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from rendermill.common import jobs, lifecycle, schemas, settings, tenants
from rendermill.common.launch.local import LocalLauncher
from rendermill.common.queue import Queue, open_queue
from rendermill.common.queue.postgres import PostgresQueue
from rendermill.common.queue.sqs import SqsQueue
from rendermill.gateway.app import create_app
from rendermill.scheduler.service import Scheduler

REGION = "us-east-1"


async def _sqs_queues(endpoint: str, max_receives: int) -> tuple[str, str]:
    """A fresh queue with a redrive policy to a fresh dead-letter queue: (url, dlq url)."""
    name = f"render-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("sqs", region_name=REGION, endpoint_url=endpoint) as c:
        dlq = (await c.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
        arn = (await c.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receives)})
        url = (await c.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy}))[
            "QueueUrl"
        ]
    return url, dlq


class Adapter:
    """One adapter under test, and how to look into its dead-letter store."""

    def __init__(self, queue: Queue, dead_letters: Any) -> None:
        self.queue = queue
        self.dead_letters = dead_letters


@pytest_asyncio.fixture(params=["postgres", "sqs"])
async def adapter(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[Adapter]:
    if request.param == "postgres":

        async def pg_dead() -> int:
            return int(await pool.fetchval("SELECT count(*) FROM queue_dead_letters"))

        yield Adapter(PostgresQueue(pool, max_receives=2), pg_dead)
        return
    endpoint = request.getfixturevalue("moto_url")
    url, dlq = await _sqs_queues(endpoint, max_receives=2)
    async with contextlib.AsyncExitStack() as stack:
        queue = await stack.enter_async_context(
            SqsQueue.open(url, region=REGION, endpoint_url=endpoint)
        )
        dead = await stack.enter_async_context(
            SqsQueue.open(dlq, region=REGION, endpoint_url=endpoint)
        )

        async def sqs_dead() -> int:
            return (await dead.depth())[0]

        yield Adapter(queue, sqs_dead)


def _msg() -> schemas.QueueMessage:
    return schemas.QueueMessage(job_id=uuid.uuid4(), attempt=1, traceparent="00-ab-cd-01")


async def test_send_receive_delete(adapter: Adapter) -> None:
    q = adapter.queue
    sent = _msg()
    await q.send(sent)
    got = await q.receive(max_messages=5, visibility_timeout=30)
    assert [r.message.job_id for r in got] == [sent.job_id] and got[0].receive_count == 1
    assert got[0].message == msgspec.structs.replace(sent, queued_at=got[0].message.queued_at)
    assert await q.receive(max_messages=5, visibility_timeout=30) == []  # invisible
    assert (await q.depth())[0] == 1  # in flight still counts
    await q.delete(got[0].receipt)
    assert (await q.depth())[0] == 0


async def test_unacked_message_comes_back_and_visibility_can_be_extended(
    adapter: Adapter,
) -> None:
    q = adapter.queue
    await q.send(_msg())
    first = await q.receive(max_messages=1, visibility_timeout=1)
    await asyncio.sleep(1.3)
    again = await q.receive(max_messages=1, visibility_timeout=1)
    assert again[0].message == first[0].message and again[0].receive_count == 2
    await q.change_visibility(again[0].receipt, 30)
    await asyncio.sleep(1.3)
    assert await q.receive(max_messages=1, visibility_timeout=30) == []


async def test_delayed_message_waits_and_consumers_never_share(adapter: Adapter) -> None:
    q = adapter.queue
    await q.send(_msg(), delay=60)
    assert await q.receive(max_messages=1, visibility_timeout=30) == []
    for _ in range(12):
        await q.send(_msg())
    batches = await asyncio.gather(
        *(q.receive(max_messages=5, visibility_timeout=30) for _ in range(6))
    )
    receipts = [r.receipt for b in batches for r in b]
    assert len(set(receipts)) == len(receipts)
    more = await q.receive(max_messages=10, visibility_timeout=30)
    assert len(receipts) + len(more) == 12


async def test_message_received_too_often_is_dead_lettered(adapter: Adapter) -> None:
    q = adapter.queue
    await q.send(_msg())
    for _ in range(2):
        assert len(await q.receive(max_messages=1, visibility_timeout=0)) == 1
    assert await q.receive(max_messages=1, visibility_timeout=0) == []
    assert await adapter.dead_letters() == 1


async def test_services_use_sqs_when_configured(
    pool: asyncpg.Pool, db_url: str, moto_url: str, tmp_path: Path
) -> None:
    url, _ = await _sqs_queues(moto_url, max_receives=5)
    sqs = {"queue": "sqs", "sqs_queue_url": url, "aws_endpoint_url": moto_url, "aws_region": REGION}
    # The gateway sends a job's first message to SQS and says so on the job.
    cfg = settings.load(
        settings.Gateway,
        env={},
        overrides={"database_url": db_url, "store_path": str(tmp_path), **sqs},
    )
    async with pool.acquire() as conn:
        tenant, key = await tenants.create(conn, "t")
    client = TestClient(TestServer(create_app(cfg)))
    await client.start_server()
    try:
        body = {
            "project": {"width": 320, "height": 180, "tracks": []},
        }
        resp = await client.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})
        assert resp.status == 422  # an empty project is refused before anything is sent
        raw = {"id": "t", "controllerName": "video", "url": "https://media.example/a.mp4"}
        body["project"]["tracks"] = [{**raw, "actions": [{"id": "a", "start": 0, "end": 1}]}]
        resp = await client.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})
        assert resp.status == 202, await resp.text()
        job_id = uuid.UUID((await resp.json())["id"])
    finally:
        await client.close()
    async with SqsQueue.open(url, region=REGION, endpoint_url=moto_url) as sent_to:
        got = await sent_to.receive(max_messages=10, visibility_timeout=0)
    assert [r.message.job_id for r in got] == [job_id]
    assert await pool.fetchval("SELECT enqueued_at FROM jobs WHERE id = $1", job_id) is not None

    # A job whose first message was never sent (the gateway died in between) is found by
    # the scheduler's sweep, sent to SQS, and rendered.
    async with pool.acquire() as conn:
        orphan, _ = await jobs.create(
            conn, tenant_id=tenant.id, project={}, output=schemas.OutputSpec(), media={}
        )
        await conn.execute(
            "UPDATE jobs SET created_at = now() - interval '2 minutes' WHERE id = $1", orphan.id
        )
    scfg = settings.load(settings.Scheduler, env={}, overrides={"poll_interval": 0.1, **sqs})
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        queue = await stack.enter_async_context(open_queue(scfg, pool))
        launcher = LocalLauncher((sys.executable, "-c", "pass"))
        scheduler = Scheduler(scfg, pool, queue, launcher, db_url)
        sup = await stack.enter_async_context(lifecycle.supervised(stop, grace=5))
        runner = asyncio.create_task(scheduler.run(stop, sup))
        try:
            async with asyncio.timeout(30):
                while True:
                    async with pool.acquire() as conn:
                        current = await jobs.get(conn, orphan.id)
                    if current.status.terminal:
                        break
                    await asyncio.sleep(0.2)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    # Launched and ended: exit 0 without a result is recorded as such.
    assert current.attempt == 1 and current.error is not None
    assert current.error["code"] == "no_result"
