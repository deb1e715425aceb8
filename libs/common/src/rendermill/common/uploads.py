"""Direct uploads: files a client PUTs in parts straight to the store by expiring URLs,
then completes into an asset (same id, same object key).

``pending → completing → completed``; a pending upload may instead be ``aborted`` or
``expired``, and a completion the gateway refuses (or that died with it) ends ``failed``.
Each change is one conditional UPDATE. An upload that ended without an asset has store
leftovers to remove; ``cleanup_at`` says when (see :func:`claim_cleanup`).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import asyncpg
import msgspec

from rendermill.common import db, errors, sql

Q = sql.queries("uploads")


class Status(enum.StrEnum):
    PENDING = "pending"
    COMPLETING = "completing"
    COMPLETED = "completed"
    ABORTED = "aborted"
    EXPIRED = "expired"
    FAILED = "failed"


class Upload(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    object_key: str
    name: str
    content_type: str
    size: int
    sha256: str | None
    part_size: int
    part_count: int
    store_upload_id: str
    status: Status
    expires_at: dt.datetime
    cleanup_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def part_sizes(self) -> list[int]:
        """The size of each part by the plan: ``part_size`` bytes, the last one the rest."""
        return [min(self.part_size, self.size - i * self.part_size) for i in range(self.part_count)]


def _upload(row: asyncpg.Record | None) -> Upload:
    assert row is not None
    return msgspec.convert(dict(row), Upload, strict=False)


async def create(
    conn: db.Conn,
    *,
    upload_id: uuid.UUID,
    tenant_id: uuid.UUID,
    object_key: str,
    name: str,
    content_type: str,
    size: int,
    sha256: str | None,
    part_size: int,
    store_upload_id: str,
    expires_at: dt.datetime,
) -> Upload:
    part_count = -(-size // part_size)
    row = await conn.fetchrow(
        Q.insert_upload,
        upload_id,
        tenant_id,
        object_key,
        name,
        content_type,
        size,
        sha256,
        part_size,
        part_count,
        store_upload_id,
        expires_at,
    )
    return _upload(row)


async def get(conn: db.Conn, upload_id: uuid.UUID, tenant_id: uuid.UUID) -> Upload:
    """The tenant's upload; raises NotFound (also for another tenant's)."""
    row = await conn.fetchrow(Q.get_upload, upload_id, tenant_id)
    if row is None:
        raise errors.NotFound(f"upload {upload_id} not found")
    return _upload(row)


async def claim_completion(
    conn: db.Conn, upload_id: uuid.UUID, tenant_id: uuid.UUID
) -> tuple[Upload, bool]:
    """Move a pending, unexpired upload to ``completing``. Returns (upload, True) when this
    call did, else (the upload as it is, False). Raises NotFound."""
    row = await conn.fetchrow(Q.claim_completion, upload_id, tenant_id)
    if row is not None:
        return _upload(row), True
    return await get(conn, upload_id, tenant_id), False


async def release_completion(conn: db.Conn, upload_id: uuid.UUID) -> None:
    """Back to ``pending`` after a completion that can be tried again."""
    await conn.execute(Q.release_completion, upload_id)


async def mark_completed(conn: db.Conn, upload_id: uuid.UUID) -> None:
    """``completing → completed``; raises Conflict if the completion was given up on
    meanwhile (run it in the transaction that records the asset)."""
    if await conn.fetchval(Q.mark_completed, upload_id) is None:
        raise errors.Conflict(
            f"upload {upload_id} was given up on while being completed: start a new upload"
        )


async def mark_failed(conn: db.Conn, upload_id: uuid.UUID) -> Upload | None:
    """``completing → failed``; None if it was not completing."""
    row = await conn.fetchrow(Q.mark_failed, upload_id)
    return _upload(row) if row else None


async def mark_aborted(conn: db.Conn, upload_id: uuid.UUID, tenant_id: uuid.UUID) -> Upload | None:
    """``pending → aborted``; None if it was not pending."""
    row = await conn.fetchrow(Q.mark_aborted, upload_id, tenant_id)
    return _upload(row) if row else None


async def mark_expired(conn: db.Conn, upload_id: uuid.UUID) -> Upload | None:
    """``pending → expired`` once past ``expires_at``; None otherwise."""
    row = await conn.fetchrow(Q.mark_expired, upload_id)
    return _upload(row) if row else None


async def end_overdue(conn: db.Conn, *, stale_after: float) -> None:
    """Expire pending uploads past their time, and fail completions older than
    ``stale_after`` seconds (their gateway died): both become due for cleanup."""
    await conn.execute(Q.expire_due)
    await conn.execute(Q.fail_stale_completions, stale_after)


async def claim_cleanup(conn: db.Conn, *, limit: int, lease: float) -> list[Upload]:
    """Up to ``limit`` uploads whose leftovers are due for removal, hidden from other
    callers for ``lease`` seconds."""
    return [_upload(r) for r in await conn.fetch(Q.claim_cleanup, limit, lease)]


async def mark_cleaned(conn: db.Conn, upload_id: uuid.UUID, *, late_put_grace: float) -> None:
    """The store's leftovers were removed. One more pass is due ``late_put_grace`` seconds
    after the URLs expire, for a part PUT that was still on its way (S3 may keep such a
    part after an abort); after that, none."""
    await conn.execute(Q.mark_cleaned, upload_id, late_put_grace)
