"""Webhook endpoints a tenant registers: every terminal job event of the tenant is sent to
each enabled one (besides the job's own ``webhook_url``), signed with the endpoint's own
secret. An endpoint whose messages keep being given up on is disabled; recovering it
enables it again and resends what failed."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from rendermill.common import db, errors, sql, tenants

Q = sql.queries("webhooks")


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    url: str
    secret: str
    enabled: bool
    # Messages given up on in a row (reset by a delivery).
    failure_count: int
    created_at: dt.datetime
    disabled_at: dt.datetime | None


def _endpoint(row: asyncpg.Record | None) -> Endpoint:
    assert row is not None
    return msgspec.convert(dict(row), Endpoint, strict=False)


async def create(conn: db.Conn, tenant_id: uuid.UUID, url: str) -> Endpoint:
    """Register ``url`` (already checked by the caller) with a fresh ``whsec_`` secret."""
    row = await conn.fetchrow(
        Q.insert_endpoint, uuid.uuid4(), tenant_id, url, tenants.new_webhook_secret()
    )
    return _endpoint(row)


async def list_for_tenant(conn: db.Conn, tenant_id: uuid.UUID) -> list[Endpoint]:
    return [_endpoint(r) for r in await conn.fetch(Q.list_endpoints, tenant_id)]


async def delete(conn: db.Conn, endpoint_id: uuid.UUID, tenant_id: uuid.UUID) -> None:
    """Remove the endpoint; its messages still pending are given up (they were signed for
    it). Raises NotFound."""
    async with conn.transaction():
        if await conn.fetchrow(Q.get_endpoint, endpoint_id, tenant_id) is None:
            raise errors.NotFound(f"webhook endpoint {endpoint_id} not found")
        await conn.execute(Q.fail_pending_for_endpoint, endpoint_id, tenant_id)
        await conn.execute(Q.delete_endpoint, endpoint_id, tenant_id)


async def recover(
    conn: db.Conn, endpoint_id: uuid.UUID, tenant_id: uuid.UUID, since: dt.datetime
) -> tuple[Endpoint, int]:
    """Enable the endpoint again and make its messages that failed since ``since`` due
    now; returns it and how many messages are resent. Raises NotFound."""
    async with conn.transaction():
        row = await conn.fetchrow(Q.enable_endpoint, endpoint_id, tenant_id)
        if row is None:
            raise errors.NotFound(f"webhook endpoint {endpoint_id} not found")
        status = await conn.execute(Q.resend_failed_for_endpoint, endpoint_id, tenant_id, since)
    return _endpoint(row), int(status.split()[-1])
