"""Removing what jobs leave in the store: once it has been kept long enough, or when its
tenant asks.

With ``RENDERMILL_RETENTION_DAYS`` set, every gateway sweeps once an hour: the output
(and poster) of each job that finished that long ago is deleted and its result marked
``expired_at`` (the API then gives no download link), and each uploaded source that old
is deleted unless a queued or running job still plays it. Rows are claimed with
``SKIP LOCKED``, so gateways sweeping at once share the work; deleting an object twice
is harmless, so a sweep killed half way is finished by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from rendermill.common import db, errors, sql, uploads
from rendermill.common import logging as rlog
from rendermill.common.store import Store

log = rlog.get(__name__)
Q = sql.queries("retention")
BATCH = 100
INTERVAL_SECONDS = 3600.0


async def sweep(pool: asyncpg.Pool, store: Store, days: float) -> tuple[int, int]:
    """Remove outputs and sources kept more than ``days``; returns how many of each."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)

    async def expire(conn: db.Conn, row: asyncpg.Record) -> None:
        await _expire(conn, store, row["id"], row["result"])

    async def remove(conn: db.Conn, row: asyncpg.Record) -> None:
        await _remove_asset(conn, store, row["id"], row["object_key"])

    outputs = await _in_batches(pool, Q.claim_expiring_outputs, cutoff, expire)
    assets = await _in_batches(pool, Q.claim_old_assets, cutoff, remove)
    if outputs or assets:
        log.info("retention_swept", outputs=outputs, sources=assets, days=days)
    return outputs, assets


async def _in_batches(
    pool: asyncpg.Pool,
    claim: str,
    cutoff: dt.datetime,
    act: Callable[[db.Conn, asyncpg.Record], Awaitable[None]],
) -> int:
    """``act`` on every row ``claim`` finds, a locked batch per transaction."""
    done = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(claim, cutoff, BATCH)
            for row in rows:
                await act(conn, row)
        done += len(rows)
        if len(rows) < BATCH:
            return done


async def sweep_forever(pool: asyncpg.Pool, store: Store, days: float) -> None:
    """:func:`sweep` now and every hour, until cancelled; a failed round is logged and
    tried again next time."""
    while True:
        try:
            await sweep(pool, store, days)
        except Exception:
            log.exception("retention_sweep_failed")
        await asyncio.sleep(INTERVAL_SECONDS)


async def delete_output(
    pool: asyncpg.Pool, store: Store, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> None:
    """Delete a finished job's output and poster now, as the retention sweep would.
    Raises NotFound (no such job of the tenant) or Conflict (it has not finished)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(Q.lock_finished_job, job_id, tenant_id)
        if row is None:
            raise errors.NotFound(f"job {job_id} not found")
        if row["status"] in ("queued", "running"):
            raise errors.Conflict(
                f"job {job_id} is {row['status']}: cancel it, or wait for it to finish"
            )
        if row["result"] is not None and "expired_at" not in row["result"]:
            await _expire(conn, store, job_id, row["result"])


async def delete_upload(
    pool: asyncpg.Pool, store: Store, tenant_id: uuid.UUID, asset_id: uuid.UUID
) -> None:
    """Delete an uploaded file now. Raises NotFound (no such upload of the tenant) or
    Conflict (a queued or running job plays it)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(Q.lock_asset, asset_id, tenant_id)
        if row is None:
            with contextlib.suppress(errors.NotFound):
                upload = await uploads.get(conn, asset_id, tenant_id)
                if upload.status in (uploads.Status.PENDING, uploads.Status.COMPLETING):
                    raise errors.Conflict(
                        f"upload {asset_id} is a direct upload still in progress: abort "
                        f"it with POST /v1/uploads/{asset_id}/abort"
                    )
            raise errors.NotFound(f"upload {asset_id} not found")
        if row["played_by"] is not None:
            raise errors.Conflict(
                f"upload {asset_id} is played by job {row['played_by']}, which has not "
                "finished: cancel it, or wait"
            )
        await _remove_asset(conn, store, asset_id, row["object_key"])


async def _expire(conn: db.Conn, store: Store, job_id: uuid.UUID, result: dict[str, Any]) -> None:
    for key in (result.get("object_key"), result.get("poster_key")):
        if key:
            await store.delete(key)
    await conn.execute(Q.mark_output_expired, job_id)


async def _remove_asset(conn: db.Conn, store: Store, asset_id: uuid.UUID, key: str) -> None:
    await store.delete(key)
    await conn.execute(Q.delete_asset, asset_id)
