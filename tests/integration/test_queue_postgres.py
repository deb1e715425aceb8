"""The Postgres queue adapter's contract: at-least-once, visibility timeout, dead letters."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from rendermill.common import schemas
from rendermill.common.queue.postgres import PostgresQueue


def _msg(attempt: int = 1) -> schemas.QueueMessage:
    return schemas.QueueMessage(job_id=uuid.uuid4(), attempt=attempt, traceparent=None)


async def test_send_receive_delete(pool: asyncpg.Pool) -> None:
    q = PostgresQueue(pool)
    sent = _msg()
    await q.send(sent)
    got = await q.receive(max_messages=5, visibility_timeout=30)
    assert [r.message for r in got] == [sent] and got[0].receive_count == 1
    # Invisible while claimed.
    assert await q.receive(max_messages=5, visibility_timeout=30) == []
    await q.delete(got[0].receipt)
    assert await q.depth() == (0, 0.0)


async def test_unacked_message_comes_back_after_visibility_timeout(pool: asyncpg.Pool) -> None:
    q = PostgresQueue(pool)
    await q.send(_msg())
    first = await q.receive(max_messages=1, visibility_timeout=0.2)
    await asyncio.sleep(0.3)
    again = await q.receive(max_messages=1, visibility_timeout=30)
    assert again[0].message == first[0].message and again[0].receive_count == 2


async def test_delay_and_concurrent_consumers_never_share(pool: asyncpg.Pool) -> None:
    q = PostgresQueue(pool)
    await q.send(_msg(), delay=60)
    assert await q.receive(max_messages=1, visibility_timeout=30) == []
    for _ in range(20):
        await q.send(_msg())
    batches = await asyncio.gather(
        *(q.receive(max_messages=5, visibility_timeout=30) for _ in range(6))
    )
    ids = [r.receipt for b in batches for r in b]
    assert len(ids) == 20 and len(set(ids)) == 20


async def test_poison_message_is_dead_lettered(pool: asyncpg.Pool) -> None:
    q = PostgresQueue(pool, max_receives=2)
    await q.send(_msg())
    for _ in range(2):
        assert len(await q.receive(max_messages=1, visibility_timeout=0)) == 1
    assert await q.receive(max_messages=1, visibility_timeout=0) == []
    assert await pool.fetchval("SELECT count(*) FROM queue_dead_letters") == 1
    await pool.execute(
        "INSERT INTO queue_messages (queue, body) VALUES ('render', '{\"nonsense\": true}')"
    )
    assert await q.receive(max_messages=1, visibility_timeout=0) == []
    assert await pool.fetchval("SELECT count(*) FROM queue_dead_letters") == 2
