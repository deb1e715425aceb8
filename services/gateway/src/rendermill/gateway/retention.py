"""Removing what jobs leave in the store once it has been kept long enough.

With ``RENDERMILL_RETENTION_DAYS`` set, every gateway sweeps once an hour: the output
(and poster) of each job that finished that long ago is deleted and its result marked
``expired_at`` (the API then gives no download link), and each uploaded source that old
is deleted unless a queued or running job still plays it. Rows are claimed with
``SKIP LOCKED``, so gateways sweeping at once share the work; deleting an object twice
is harmless, so a sweep killed half way is finished by the next one.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from rendermill.common import logging as rlog
from rendermill.common import sql
from rendermill.common.store import Store

log = rlog.get(__name__)
Q = sql.queries("retention")
BATCH = 100
INTERVAL_SECONDS = 3600.0


async def sweep(
    pool: asyncpg.Pool, store: Store, days: float, *, now: dt.datetime | None = None
) -> tuple[int, int]:
    """Remove outputs and sources kept more than ``days``; returns how many of each."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=days)
    outputs = assets = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(Q.claim_expiring_outputs, cutoff, BATCH)
            for row in rows:
                result = row["result"]
                for key in (result.get("object_key"), result.get("poster_key")):
                    if key:
                        await store.delete(key)
                await conn.execute(Q.mark_output_expired, row["id"])
        outputs += len(rows)
        if len(rows) < BATCH:
            break
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(Q.claim_old_assets, cutoff, BATCH)
            for row in rows:
                await store.delete(row["object_key"])
                await conn.execute(Q.delete_asset, row["id"])
        assets += len(rows)
        if len(rows) < BATCH:
            break
    if outputs or assets:
        log.info("retention_swept", outputs=outputs, sources=assets, days=days)
    return outputs, assets


async def sweep_forever(pool: asyncpg.Pool, store: Store, days: float) -> None:
    """:func:`sweep` now and every hour, until cancelled; a failed round is logged and
    tried again next time."""
    while True:
        try:
            await sweep(pool, store, days)
        except Exception:
            log.exception("retention_sweep_failed")
        await asyncio.sleep(INTERVAL_SECONDS)
