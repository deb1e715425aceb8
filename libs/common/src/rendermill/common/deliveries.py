"""Webhook deliveries as a tenant sees them: each message sent for a job, every attempt
at it (the delivery log), and sending one again."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from rendermill.common import db, errors, sql

Q = sql.queries("webhooks")


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try at delivering a message: the receiver's status (None when it could not be
    reached), the error if any, and the first 2 KiB of its answer."""

    attempt: int
    started_at: dt.datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One event for one target (the job's webhook_url, or a registered endpoint)."""

    id: uuid.UUID
    job_id: uuid.UUID
    event_type: str
    url: str
    endpoint_id: uuid.UUID | None
    status: str  # pending | delivered | failed
    attempts: int
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    log: list[Attempt] = []


async def for_job(conn: db.Conn, job_id: uuid.UUID, tenant_id: uuid.UUID) -> list[Message]:
    """Every message sent for the job, oldest first, each with its attempts."""
    rows = await conn.fetch(Q.messages_for_tenant_job, job_id, tenant_id)
    return await _with_log(conn, rows)


async def resend(conn: db.Conn, message_id: uuid.UUID, tenant_id: uuid.UUID) -> Message:
    """Make the message due again now (the notifier delivers it within its poll
    interval); raises NotFound when the tenant has no such message."""
    row = await conn.fetchrow(Q.resend_message, message_id, tenant_id)
    if row is None:
        raise errors.NotFound(f"webhook message {message_id} not found")
    return (await _with_log(conn, [row]))[0]


async def _with_log(conn: db.Conn, rows: list[asyncpg.Record]) -> list[Message]:
    attempts = await conn.fetch(Q.attempts_for_messages, [r["id"] for r in rows])
    by_message: dict[uuid.UUID, list[Attempt]] = {}
    for a in attempts:
        by_message.setdefault(a["message_id"], []).append(
            msgspec.convert(dict(a), Attempt, strict=False)
        )
    return [
        msgspec.convert({**dict(r), "log": by_message.get(r["id"], [])}, Message, strict=False)
        for r in rows
    ]
