"""The job state machine against a real Postgres."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import msgspec
import pytest

from rendermill.common import db, errors, jobs, migrate, schemas, tenants
from rendermill.common.schemas import JobStatus, Stage


async def _job(pool: asyncpg.Pool) -> jobs.Job:
    async with pool.acquire() as conn:
        tenant, _ = await tenants.create(conn, "t")
        job, created = await jobs.create(
            conn,
            tenant_id=tenant.id,
            project={"tracks": []},
            output=schemas.OutputSpec(),
            media={},
        )
    assert created
    return job


async def test_fresh_migrate_gives_expected_schema(db_url: str) -> None:
    conn = await db.connect(db_url)
    try:
        assert await migrate.migrate(conn) == []  # the template is already migrated
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    finally:
        await conn.close()
    assert {
        "tenants",
        "api_keys",
        "assets",
        "jobs",
        "job_attempts",
        "job_events",
        "webhook_endpoints",
        "webhook_messages",
        "webhook_attempts",
        "queue_messages",
        "queue_dead_letters",
        "direct_uploads",
        "schema_migrations",
    } <= tables


async def test_create_writes_first_event_and_is_idempotent(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        tenant, _ = await tenants.create(conn, "t")
        kw = {
            "tenant_id": tenant.id,
            "project": {"tracks": []},
            "output": schemas.OutputSpec(),
            "media": {},
            "idempotency_key": "k1",
        }
        a, created_a = await jobs.create(conn, **kw)  # type: ignore[arg-type]
        b, created_b = await jobs.create(conn, **kw)  # type: ignore[arg-type]
        events = await jobs.events_after(conn, a.id, 0)
    assert created_a and not created_b and a.id == b.id
    assert [(e.seq, e.type) for e in events] == [(1, "job.queued")]


async def test_concurrent_transitions_exactly_one_wins(pool: asyncpg.Pool) -> None:
    job = await _job(pool)
    async with pool.acquire() as conn:
        await jobs.start_attempt(conn, job.id, 1)

    async def finish(status: JobStatus) -> jobs.Job | errors.Conflict:
        async with pool.acquire() as conn:
            try:
                return await jobs.finish(conn, job.id, status, message=status.value)
            except errors.Conflict as exc:
                return exc

    results = await asyncio.gather(finish(JobStatus.SUCCEEDED), finish(JobStatus.FAILED))
    winners = [r for r in results if isinstance(r, jobs.Job)]
    losers = [r for r in results if isinstance(r, errors.Conflict)]
    assert len(winners) == 1 and len(losers) == 1
    async with pool.acquire() as conn:
        final = await jobs.get(conn, job.id)
        events = await jobs.events_after(conn, job.id, 0)
    assert final.status == winners[0].status
    # queued, started, and exactly one terminal event; sequence numbers have no gaps.
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[-1].type == f"job.{final.status.value}"


async def test_optimistic_version_race(pool: asyncpg.Pool) -> None:
    job = await _job(pool)
    async with pool.acquire() as c1, pool.acquire() as c2:
        ok = await jobs.finish_if_version(c1, job.id, job.version, JobStatus.CANCELED)
        with pytest.raises(errors.Conflict):
            await jobs.finish_if_version(c2, job.id, job.version, JobStatus.FAILED)
    assert ok.status == JobStatus.CANCELED


async def test_terminal_states_never_change(pool: asyncpg.Pool) -> None:
    job = await _job(pool)
    async with pool.acquire() as conn:
        await jobs.start_attempt(conn, job.id, 1)
        done = await jobs.finish(conn, job.id, JobStatus.SUCCEEDED, result={"size": 1})
        for attempt in (
            jobs.finish(conn, job.id, JobStatus.FAILED),
            jobs.finish(conn, job.id, JobStatus.CANCELED, expect=list(JobStatus)),
            jobs.start_attempt(conn, job.id, 2),
            jobs.requeue(conn, job.id, 1, message="x", error={}),
            jobs.report_progress(conn, job.id, 1, stage=Stage.RENDERING, progress=0.5),
            jobs.finish_if_version(conn, job.id, done.version, JobStatus.FAILED),
        ):
            with pytest.raises(errors.Conflict):
                await attempt
        final = await jobs.get(conn, job.id)
    assert final.status == JobStatus.SUCCEEDED and final.result == {"size": 1}
    assert final.version == done.version


async def test_progress_of_a_stale_attempt_is_refused(pool: asyncpg.Pool) -> None:
    job = await _job(pool)
    async with pool.acquire() as conn:
        await jobs.start_attempt(conn, job.id, 1)
        await jobs.requeue(conn, job.id, 1, message="retrying", error={"code": "x"})
        await jobs.start_attempt(conn, job.id, 2)
        with pytest.raises(errors.Conflict):
            await jobs.report_progress(conn, job.id, 1, stage=Stage.RENDERING, progress=0.1)
        j = await jobs.report_progress(conn, job.id, 2, stage=Stage.RENDERING, progress=0.25)
    assert j.attempt == 2 and j.progress == 0.25


async def test_listener_wakes_on_commit_not_on_rollback(pool: asyncpg.Pool, db_url: str) -> None:
    job = await _job(pool)
    got: asyncio.Queue[str | None] = asyncio.Queue()
    async with db.Listener(db_url, db.EVENTS_CHANNEL) as listener:
        listener.add(got.put_nowait)
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await jobs.start_attempt(conn, job.id, 1)
            await tx.rollback()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(got.get(), timeout=0.5)
        async with pool.acquire() as conn:
            started = await jobs.start_attempt(conn, job.id, 1)
        payload = await asyncio.wait_for(got.get(), timeout=5)
    assert payload is not None
    hint = msgspec.json.decode(payload, type=schemas.JobEventHint)
    assert hint == schemas.JobEventHint(job_id=job.id, seq=started.event_seq)


async def test_listener_reconnects_after_connection_loss(pool: asyncpg.Pool, db_url: str) -> None:
    job = await _job(pool)
    got: asyncio.Queue[str | None] = asyncio.Queue()
    async with db.Listener(db_url, db.EVENTS_CHANNEL) as listener:
        listener.add(got.put_nowait)
        async with pool.acquire() as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND query LIKE 'LISTEN%'"
            )
        # After reconnecting, subscribers are told to re-read (None) ...
        assert await asyncio.wait_for(got.get(), timeout=15) is None
        async with pool.acquire() as conn:
            await jobs.start_attempt(conn, job.id, 1)
        # ... and notifications flow again.
        assert await asyncio.wait_for(got.get(), timeout=5) is not None


async def test_unknown_job_is_not_found(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(errors.NotFound):
            await jobs.start_attempt(conn, uuid.uuid4(), 1)
