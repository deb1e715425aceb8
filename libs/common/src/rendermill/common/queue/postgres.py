"""The Postgres queue adapter: SKIP LOCKED claims, visibility timeout, dead-letter table.

Messages are handed out by turn: the time the attempt joined the queue, moved one aging
period earlier for a high-tier message and one later for a low-tier one (fixed when it
is sent). So a higher tier goes first, FIFO within a tier, and a message is overtaken
only by messages that joined less than one aging period per tier step after it.
"""

from __future__ import annotations

import asyncpg
import msgspec

from rendermill.common import db, logging, schemas, sql
from rendermill.common.queue import Received

Q = sql.queries("queue")
log = logging.get(__name__)


class PostgresQueue:
    def __init__(
        self,
        pool: asyncpg.Pool,
        name: str = "render",
        *,
        max_receives: int = 10,
        aging: float = 300.0,
    ) -> None:
        """``aging``: seconds of waiting that count as one tier (settings'
        ``priority_aging_seconds``)."""
        self._pool = pool
        self._name = name
        self._max_receives = max_receives
        self._aging = aging

    async def send(self, message: schemas.QueueMessage, *, delay: float = 0.0) -> None:
        body = msgspec.to_builtins(message)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                Q.send,
                self._name,
                body,
                float(delay),
                message.tier.rank,
                self._aging,
                message.queued_at,
            )
            # A wake-up for idle consumers; they poll anyway.
            await conn.execute("SELECT pg_notify($1, $2)", db.QUEUE_CHANNEL, self._name)

    async def receive(self, *, max_messages: int, visibility_timeout: float) -> list[Received]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(Q.receive, self._name, max_messages, float(visibility_timeout))
            out: list[Received] = []
            for row in rows:
                if row["receive_count"] > self._max_receives:
                    await conn.execute(Q.dead_letter, row["id"])
                    log.warning("queue_dead_lettered", message_id=row["id"], queue=self._name)
                    continue
                try:
                    msg = msgspec.convert(row["body"], schemas.QueueMessage)
                except msgspec.ValidationError as exc:
                    await conn.execute(Q.dead_letter, row["id"])
                    log.error("queue_message_malformed", message_id=row["id"], error=str(exc))
                    continue
                msg = msgspec.structs.replace(msg, queued_at=row["queued_at"])
                out.append(Received(msg, str(row["id"]), row["receive_count"]))
            return out

    async def delete(self, receipt: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(Q.delete, int(receipt))

    async def change_visibility(self, receipt: str, timeout: float) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(Q.change_visibility, int(receipt), float(timeout))

    async def depth(self) -> tuple[int, float]:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(Q.depth, self._name)
        assert row is not None
        return int(row["depth"]), float(row["oldest_age"])
