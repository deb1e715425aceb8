"""The Postgres queue adapter's contract: at-least-once, visibility timeout, dead letters,
and its exact order of priority tiers with aging."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg

from rendermill.common import schemas
from rendermill.common.queue import postgres
from rendermill.common.queue.postgres import PostgresQueue


def _msg(
    attempt: int = 1, tier: schemas.Tier = schemas.Tier.NORMAL, at: dt.datetime | None = None
) -> schemas.QueueMessage:
    return schemas.QueueMessage(
        job_id=uuid.uuid4(), attempt=attempt, traceparent=None, tier=tier, queued_at=at
    )


async def test_send_receive_delete(pool: asyncpg.Pool) -> None:
    q = PostgresQueue(pool)
    sent = _msg()
    await q.send(sent)
    got = await q.receive(max_messages=5, visibility_timeout=30)
    assert [r.message.job_id for r in got] == [sent.job_id] and got[0].receive_count == 1
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


async def test_turn_order_moves_one_aging_period_per_tier(pool: asyncpg.Pool) -> None:
    """Each message's turn is when it joined the queue, one aging period earlier for
    high and later for low: the exact order, not only its bounds. The join times are
    given, so no stall of the test machine can reorder them."""
    q = PostgresQueue(pool, aging=1.0)
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
    low, early = _msg(tier=schemas.Tier.LOW, at=at), _msg(at=at)  # turns 1.0 and 0.0
    later = at + dt.timedelta(seconds=1.5)
    # Turn 1.5: the low message waited over an aging period longer. Turn 0.5: the high
    # one did not wait two aging periods longer.
    late, high = _msg(at=later), _msg(tier=schemas.Tier.HIGH, at=later)
    for message in (low, early, late, high):
        await q.send(message)
    got = await q.receive(max_messages=10, visibility_timeout=30)
    assert [r.message.job_id for r in got] == [m.job_id for m in (early, high, low, late)]
    assert [r.message.queued_at for r in got] == [at, later, at, later]


async def test_a_message_sent_again_keeps_its_place(pool: asyncpg.Pool) -> None:
    """A tenant-cap deferral sends the received message again: it keeps the time it
    joined the queue, so later messages of its tier stay behind it."""
    q = PostgresQueue(pool)
    first = _msg(tier=schemas.Tier.LOW)
    await q.send(first)
    [received] = await q.receive(max_messages=1, visibility_timeout=30)
    later = _msg(tier=schemas.Tier.LOW)
    await q.send(later)
    await q.send(received.message)
    await q.delete(received.receipt)
    got = await q.receive(max_messages=10, visibility_timeout=30)
    assert [r.message.job_id for r in got] == [first.job_id, later.job_id]
    assert got[0].message.queued_at == received.message.queued_at
    rows = await pool.fetch("SELECT priority, body->>'tier' AS tier FROM queue_messages")
    assert {(r["priority"], r["tier"]) for r in rows} == {(-1, "low")}


async def test_receive_walks_the_turn_index(pool: asyncpg.Pool) -> None:
    """With a backlog, the next in line is found through (queue, turn_at, id), not by
    sorting every waiting message."""
    q = PostgresQueue(pool)
    await pool.execute(
        "INSERT INTO queue_messages (queue, body, priority, turn_at)"
        " SELECT 'render', jsonb_build_object('job_id', gen_random_uuid(), 'attempt', 1),"
        "  (i % 3) - 1, now() - make_interval(secs => i)"
        " FROM generate_series(1, 5000) i"
    )
    await pool.execute("ANALYZE queue_messages")
    async with pool.acquire() as conn:
        rows = await conn.fetch("EXPLAIN " + postgres.Q.receive, "render", 2, 30.0)
    plan = "\n".join(r[0] for r in rows)
    assert "Index Scan using queue_messages_turn" in plan, plan
    got = await q.receive(max_messages=2, visibility_timeout=30)
    assert len(got) == 2
