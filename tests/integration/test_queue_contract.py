"""The queue contract, run against both adapters: the Postgres queue on a real Postgres,
and the SQS queue through the real aioboto3 client against moto in server mode on
127.0.0.1. Times are whole seconds, as SQS counts them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
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
from rendermill.common.queue import Queue, Received, open_queue
from rendermill.common.queue.postgres import PostgresQueue
from rendermill.common.queue.sqs import SqsQueue
from rendermill.gateway.app import create_app
from rendermill.scheduler.service import Scheduler

REGION = "us-east-1"


async def _sqs_queues(endpoint: str, max_receives: int) -> tuple[dict[schemas.Tier, str], str]:
    """A fresh queue per tier, each with a redrive policy to one fresh dead-letter queue:
    ({tier: url}, dlq url)."""
    name = f"render-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("sqs", region_name=REGION, endpoint_url=endpoint) as c:
        dlq = (await c.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
        arn = (await c.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receives)})
        urls = {
            tier: (
                await c.create_queue(
                    QueueName=f"{name}-{tier.value}", Attributes={"RedrivePolicy": policy}
                )
            )["QueueUrl"]
            for tier in schemas.Tier
        }
    return urls, dlq


def _tiered(client: Any, urls: dict[schemas.Tier, str], aging: float = 300.0) -> SqsQueue:
    return SqsQueue(
        client,
        urls[schemas.Tier.NORMAL],
        high_url=urls[schemas.Tier.HIGH],
        low_url=urls[schemas.Tier.LOW],
        aging=aging,
    )


class Adapter:
    """One adapter under test (high, normal and low tiers), how to look into its
    dead-letter store, how to send a body as written before tiers existed, and how to
    make a fresh, empty queue of the same kind with another aging period. ``exclusive``:
    concurrent receivers never get the same message (Postgres's SKIP LOCKED). SQS
    delivers at least once, and moto serves concurrent ReceiveMessage calls without a
    lock, so two of them can take one message; the scheduler copes with a redelivery."""

    def __init__(
        self,
        queue: Queue,
        dead_letters: Callable[[], Awaitable[int]],
        send_raw: Callable[[dict[str, Any]], Awaitable[None]],
        fresh: Callable[[float], Awaitable[Queue]],
        *,
        exclusive: bool,
    ) -> None:
        self.queue = queue
        self.dead_letters = dead_letters
        self.send_raw = send_raw
        self.fresh = fresh
        self.exclusive = exclusive


@pytest_asyncio.fixture(params=["postgres", "sqs"])
async def adapter(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[Adapter]:
    if request.param == "postgres":

        async def pg_dead() -> int:
            return int(await pool.fetchval("SELECT count(*) FROM queue_dead_letters"))

        async def pg_raw(body: dict[str, Any]) -> None:
            await pool.execute(
                "INSERT INTO queue_messages (queue, body) VALUES ('render', $1)", body
            )

        async def pg_fresh(aging: float) -> Queue:
            return PostgresQueue(pool, f"render-{uuid.uuid4().hex[:8]}", aging=aging)

        queue = PostgresQueue(pool, max_receives=2)
        yield Adapter(queue, pg_dead, pg_raw, pg_fresh, exclusive=True)
        return
    endpoint = request.getfixturevalue("moto_url")
    urls, dlq = await _sqs_queues(endpoint, max_receives=2)
    session = aioboto3.Session()
    async with session.client("sqs", region_name=REGION, endpoint_url=endpoint) as client:

        async def sqs_dead() -> int:
            return (await SqsQueue(client, dlq).depth())[0]

        async def sqs_raw(body: dict[str, Any]) -> None:
            url = urls[schemas.Tier.NORMAL]
            await client.send_message(QueueUrl=url, MessageBody=json.dumps(body))

        async def sqs_fresh(aging: float) -> Queue:
            return _tiered(client, (await _sqs_queues(endpoint, max_receives=5))[0], aging)

        yield Adapter(_tiered(client, urls), sqs_dead, sqs_raw, sqs_fresh, exclusive=False)


def _msg(tier: schemas.Tier = schemas.Tier.NORMAL) -> schemas.QueueMessage:
    return schemas.QueueMessage(
        job_id=uuid.uuid4(), attempt=1, traceparent="00-ab-cd-01", tier=tier
    )


def _ids(got: list[Received]) -> list[uuid.UUID]:
    return [r.message.job_id for r in got]


async def test_send_receive_delete(adapter: Adapter) -> None:
    q = adapter.queue
    sent = _msg()
    await q.send(sent)
    got = await q.receive(max_messages=5, visibility_timeout=30)
    assert _ids(got) == [sent.job_id] and got[0].receive_count == 1
    # As sent, plus when it joined the queue.
    assert got[0].message.queued_at is not None
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
    receives = [q.receive(max_messages=5, visibility_timeout=30) for _ in range(6)]
    if adapter.exclusive:
        batches = await asyncio.gather(*receives)
    else:
        batches = [await receive for receive in receives]
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


async def test_higher_tiers_first_and_fifo_within_a_tier(adapter: Adapter) -> None:
    q = adapter.queue
    high, normal, low = schemas.Tier.HIGH, schemas.Tier.NORMAL, schemas.Tier.LOW
    sent = [_msg(t) for t in (low, normal, high, low, normal, high)]
    for m in sent:
        await q.send(m)
    expected = [sent[i].job_id for i in (2, 5, 1, 4, 0, 3)]
    # One at a time, as a scheduler with one free slot takes them...
    one_by_one = [await q.receive(max_messages=1, visibility_timeout=30) for _ in sent]
    assert [len(got) for got in one_by_one] == [1] * len(sent)
    assert [got[0].message.job_id for got in one_by_one] == expected
    assert [got[0].message.tier for got in one_by_one] == [high, high, normal, normal, low, low]
    for got in one_by_one:
        await q.delete(got[0].receipt)
    # ...and in one batch.
    for m in sent:
        await q.send(m)
    assert _ids(await q.receive(max_messages=10, visibility_timeout=30)) == expected


async def test_a_message_from_before_tiers_is_normal(adapter: Adapter) -> None:
    job_id = uuid.uuid4()
    await adapter.send_raw({"job_id": str(job_id), "attempt": 2, "traceparent": None})
    await adapter.queue.send(_msg(schemas.Tier.LOW))
    got = await adapter.queue.receive(max_messages=5, visibility_timeout=30)
    assert got[0].message.job_id == job_id and got[0].message.attempt == 2
    assert got[0].message.tier == schemas.Tier.NORMAL and got[0].message.queued_at is not None
    assert [r.message.tier for r in got] == [schemas.Tier.NORMAL, schemas.Tier.LOW]


@pytest.mark.parametrize("above", [schemas.Tier.NORMAL, schemas.Tier.HIGH])
async def test_a_lower_tier_is_overtaken_for_one_aging_period_per_tier_step(
    adapter: Adapter, above: schemas.Tier
) -> None:
    """A steady stream of higher-tier work, taken one message at a time as it arrives,
    goes first until the low message has waited one aging period per tier step."""
    q = await adapter.fresh(1.0)
    steps = above.rank - schemas.Tier.LOW.rank
    low = _msg(schemas.Tier.LOW)
    await q.send(low)
    sent = time.monotonic()
    overtaken = 0
    async with asyncio.timeout(10):
        while True:
            await q.send(_msg(above))
            got = await q.receive(max_messages=1, visibility_timeout=30)
            if got[0].message.job_id == low.job_id:
                break
            assert got[0].message.tier == above
            await q.delete(got[0].receipt)
            overtaken += 1
            await asyncio.sleep(0.1)
    waited = time.monotonic() - sent
    assert overtaken >= 3  # the higher tier went first while the low message was fresh
    assert steps - 0.3 <= waited <= steps + 1.0, waited


async def test_sqs_without_tier_queues_shares_one_queue(moto_url: str) -> None:
    """Only the normal tier's queue: every tier goes there, keeps its tier, and a batch
    comes back in turn order."""
    urls, _ = await _sqs_queues(moto_url, max_receives=5)
    url = urls[schemas.Tier.NORMAL]
    sent = [_msg(t) for t in (schemas.Tier.LOW, schemas.Tier.NORMAL, schemas.Tier.HIGH)]
    async with SqsQueue.open(url, region=REGION, endpoint_url=moto_url) as q:
        for m in sent:
            await q.send(m)
        got = await q.receive(max_messages=10, visibility_timeout=30)
        assert _ids(got) == [sent[2].job_id, sent[1].job_id, sent[0].job_id]
        assert (await q.depth())[0] == 3
    for tier in (schemas.Tier.HIGH, schemas.Tier.LOW):
        async with SqsQueue.open(urls[tier], region=REGION, endpoint_url=moto_url) as other:
            assert (await other.depth())[0] == 0


async def test_services_use_sqs_when_configured(
    pool: asyncpg.Pool, db_url: str, moto_url: str, tmp_path: Path
) -> None:
    urls, _ = await _sqs_queues(moto_url, max_receives=5)
    sqs = {
        "queue": "sqs",
        "sqs_queue_url": urls[schemas.Tier.NORMAL],
        "sqs_queue_url_high": urls[schemas.Tier.HIGH],
        "sqs_queue_url_low": urls[schemas.Tier.LOW],
        "aws_endpoint_url": moto_url,
        "aws_region": REGION,
    }
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
        job_ids: dict[schemas.Tier, uuid.UUID] = {}
        for tier in (schemas.Tier.NORMAL, schemas.Tier.HIGH):
            resp = await client.post(
                "/v1/jobs",
                json={**body, "priority": tier.value},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert resp.status == 202, await resp.text()
            job_ids[tier] = uuid.UUID((await resp.json())["id"])
    finally:
        await client.close()
    # Each job's message went to its tier's queue.
    for tier, job_id in job_ids.items():
        async with SqsQueue.open(urls[tier], region=REGION, endpoint_url=moto_url) as sent_to:
            got = await sent_to.receive(max_messages=10, visibility_timeout=0)
        assert [(r.message.job_id, r.message.tier) for r in got] == [(job_id, tier)]
        assert await pool.fetchval("SELECT enqueued_at FROM jobs WHERE id = $1", job_id)

    # A job whose first message was never sent (the gateway died in between) is found by
    # the scheduler's sweep, sent to SQS, and rendered.
    async with pool.acquire() as conn:
        orphan, _ = await jobs.create(
            conn,
            tenant_id=tenant.id,
            project={},
            output=schemas.OutputSpec(),
            media={},
            tier=schemas.Tier.LOW,
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
