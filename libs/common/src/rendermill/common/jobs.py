"""The job state machine on Postgres.

Every change is one conditional UPDATE plus one ``job_events`` (outbox) row in one
transaction, followed by ``pg_notify`` (delivered by Postgres on commit, never on
rollback). A change that lost a race or targets a terminal job raises errors.Conflict.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from typing import Any

import asyncpg
import msgspec

from rendermill.common import db, errors, schemas, sql
from rendermill.common.schemas import JobStatus, Stage

Q = sql.queries("jobs")
_encode = msgspec.json.Encoder().encode


class Job(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    status: JobStatus
    stage: Stage
    progress: float
    frames_done: int
    frames_total: int
    message: str
    attempt: int
    max_attempts: int
    priority: int
    project: dict[str, Any]
    output: dict[str, Any]
    media: dict[str, str]
    webhook_url: str | None
    idempotency_key: str | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    trace_id: str | None
    traceparent: str | None
    version: int
    event_seq: int
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @property
    def tier(self) -> schemas.Tier:
        """The job's priority tier (``priority`` holds its rank)."""
        return schemas.Tier.from_rank(self.priority)

    def snapshot(self) -> dict[str, Any]:
        """The public state carried by every event of this job."""
        return {
            "job_id": str(self.id),
            "status": self.status.value,
            "stage": self.stage.value,
            "progress": round(self.progress, 4),
            "frames_done": self.frames_done,
            "frames_total": self.frames_total,
            "message": self.message,
            "attempt": self.attempt,
            "result": self.result,
            "error": self.error,
        }


class Event(msgspec.Struct, frozen=True, kw_only=True):
    job_id: uuid.UUID
    seq: int
    type: str
    data: dict[str, Any]
    created_at: dt.datetime


def _job(row: asyncpg.Record) -> Job:
    return msgspec.convert(dict(row), Job, from_attributes=False, strict=False)


async def _emit(conn: db.Conn, job: Job, event_type: str) -> None:
    await conn.execute(Q.insert_event, job.id, job.event_seq, event_type, job.snapshot())
    hint = schemas.JobEventHint(job_id=job.id, seq=job.event_seq)
    await conn.execute(Q.notify, db.EVENTS_CHANNEL, _encode(hint).decode())


async def _apply(
    conn: db.Conn, query: str, args: tuple[Any, ...], event_type: str, what: str
) -> Job:
    async with conn.transaction():
        row = await conn.fetchrow(query, *args)
        if row is None:
            current = await conn.fetchrow(Q.get_job, args[0])
            if current is None:
                raise errors.NotFound(f"job {args[0]} does not exist")
            state = current["status"]
            raise errors.Conflict(
                f"cannot {what}: job {args[0]} is {state} (version {current['version']})",
                detail={"status": state, "version": current["version"]},
            )
        job = _job(row)
        await _emit(conn, job, event_type)
        return job


async def create(
    conn: db.Conn,
    *,
    tenant_id: uuid.UUID,
    project: dict[str, Any],
    output: schemas.OutputSpec,
    media: dict[str, str],
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int = 3,
    tier: schemas.Tier = schemas.Tier.NORMAL,
    trace_id: str | None = None,
    traceparent: str | None = None,
) -> tuple[Job, bool]:
    """Insert a queued job with its first event; returns (job, created).

    With an idempotency key already used by this tenant, returns the existing job and False.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            Q.insert_job,
            uuid.uuid4(),
            tenant_id,
            project,
            msgspec.to_builtins(output),
            media,
            webhook_url,
            idempotency_key,
            max_attempts,
            tier.rank,
            trace_id,
            traceparent,
        )
        if row is None:
            existing = await conn.fetchrow(Q.get_by_idempotency_key, tenant_id, idempotency_key)
            assert existing is not None
            return _job(existing), False
        job = _job(row)
        await _emit(conn, job, "job.queued")
        return job, True


async def get(conn: db.Conn, job_id: uuid.UUID, tenant_id: uuid.UUID | None = None) -> Job:
    """The job (scoped to ``tenant_id`` when given); raises errors.NotFound."""
    if tenant_id is None:
        row = await conn.fetchrow(Q.get_job, job_id)
    else:
        row = await conn.fetchrow(Q.get_job_for_tenant, job_id, tenant_id)
    if row is None:
        raise errors.NotFound(f"job {job_id} not found")
    return _job(row)


async def list_for_tenant(
    conn: db.Conn, tenant_id: uuid.UUID, *, status: str | None = None, limit: int = 50
) -> list[Job]:
    return [_job(r) for r in await conn.fetch(Q.list_jobs, tenant_id, status, limit)]


async def start_attempt(conn: db.Conn, job_id: uuid.UUID, attempt: int) -> Job:
    """queued -> running for ``attempt``."""
    return await _apply(conn, Q.start_attempt, (job_id, attempt), "job.started", "start")


async def report_progress(
    conn: db.Conn,
    job_id: uuid.UUID,
    attempt: int,
    *,
    stage: Stage,
    progress: float,
    frames_done: int = 0,
    frames_total: int = 0,
    message: str = "",
) -> Job:
    """Record progress of the running ``attempt``; Conflict if the job moved on."""
    args = (job_id, attempt, stage.value, min(1.0, max(0.0, progress)), frames_done, frames_total)
    return await _apply(
        conn, Q.report_progress, (*args, message), "job.progress", "report progress"
    )


async def finish(
    conn: db.Conn,
    job_id: uuid.UUID,
    status: JobStatus,
    *,
    expect: Collection[JobStatus] = (JobStatus.RUNNING,),
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    message: str = "",
) -> Job:
    """Move to a terminal ``status`` from one of ``expect``; terminal states never change."""
    if not status.terminal:
        raise ValueError(f"{status} is not terminal")
    expected = [s.value for s in expect if not s.terminal]
    args = (job_id, expected, status.value, result, error, message)
    return await _apply(conn, Q.finish, args, f"job.{status.value}", f"mark {status.value}")


async def finish_if_version(
    conn: db.Conn,
    job_id: uuid.UUID,
    version: int,
    status: JobStatus,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    message: str = "",
) -> Job:
    """Optimistic variant: only if the job is still at ``version`` and not terminal."""
    args = (job_id, version, status.value, result, error, message)
    return await _apply(
        conn, Q.finish_if_version, args, f"job.{status.value}", f"mark {status.value}"
    )


async def requeue(
    conn: db.Conn,
    job_id: uuid.UUID,
    attempt: int,
    *,
    message: str,
    error: dict[str, Any],
) -> Job:
    """running -> queued after a failed attempt that will be retried."""
    return await _apply(conn, Q.requeue, (job_id, attempt, message, error), "job.retrying", "retry")


async def events_after(conn: db.Conn, job_id: uuid.UUID, seq: int, limit: int = 500) -> list[Event]:
    rows = await conn.fetch(Q.events_after, job_id, seq, limit)
    return [msgspec.convert(dict(r), Event, strict=False) for r in rows]


async def mark_enqueued(conn: db.Conn, job_id: uuid.UUID) -> None:
    """Record that the job's first queue message was sent (not a state change)."""
    await conn.execute(Q.mark_enqueued, job_id)


async def never_enqueued(conn: db.Conn) -> list[asyncpg.Record]:
    """Queued jobs over a minute old whose first message was never sent:
    (id, attempt, traceparent, priority)."""
    return list(await conn.fetch(Q.never_enqueued))


async def running_for_tenant(conn: db.Conn, tenant_id: uuid.UUID) -> int:
    """How many of the tenant's jobs run now, after taking the tenant's start lock (held
    until the caller's transaction ends, so that two schedulers cannot both start the
    job that fills the tenant's share)."""
    await conn.execute(Q.lock_tenant, str(tenant_id))
    return int(await conn.fetchval(Q.count_running_for_tenant, tenant_id))


async def count_active(conn: db.Conn) -> dict[JobStatus, int]:
    """How many jobs are queued and running now (both keys always present)."""
    counts = {JobStatus.QUEUED: 0, JobStatus.RUNNING: 0}
    for row in await conn.fetch(Q.count_active):
        counts[JobStatus(row["status"])] = row["n"]
    return counts


def error_info(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"code": code, "message": message, "detail": detail}


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    job_id: uuid.UUID
    attempt: int
    launcher: str
    task_id: str | None
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    finished_at: dt.datetime | None
    exit_code: int | None
    reason: str | None


def _attempt(row: asyncpg.Record) -> Attempt:
    return msgspec.convert(dict(row), Attempt, strict=False)


async def insert_attempt(
    conn: db.Conn, job_id: uuid.UUID, attempt: int, launcher: str
) -> Attempt | None:
    """Record a new attempt; None when (job_id, attempt) exists already (a redelivery)."""
    row = await conn.fetchrow(Q.insert_attempt, job_id, attempt, launcher)
    return _attempt(row) if row else None


async def get_attempt(conn: db.Conn, job_id: uuid.UUID, attempt: int) -> Attempt | None:
    row = await conn.fetchrow(Q.get_attempt, job_id, attempt)
    return _attempt(row) if row else None


async def list_attempts(conn: db.Conn, job_id: uuid.UUID) -> list[Attempt]:
    return [_attempt(r) for r in await conn.fetch(Q.list_attempts, job_id)]


async def set_attempt_task(conn: db.Conn, job_id: uuid.UUID, attempt: int, task_id: str) -> None:
    await conn.execute(Q.set_attempt_task, job_id, attempt, task_id)


async def heartbeat(conn: db.Conn, job_id: uuid.UUID, attempt: int) -> None:
    await conn.execute(Q.heartbeat, job_id, attempt)


async def finish_attempt(
    conn: db.Conn, job_id: uuid.UUID, attempt: int, exit_code: int, reason: str
) -> Attempt | None:
    row = await conn.fetchrow(Q.finish_attempt, job_id, attempt, exit_code, reason)
    return _attempt(row) if row else None
