"""The queue port: at-least-once delivery of small messages with a visibility timeout,
higher priority tiers first.

Both adapters hand out a higher tier before a lower one and keep each tier FIFO, and
both age: every ``priority_aging_seconds`` a message has waited counts as one tier up, so
later work of a higher tier overtakes it for a bounded time, never forever. The Postgres
queue does this exactly, per message; SQS, which cannot sort a queue, keeps one queue
per tier and polls them in the same order by the age of what each holds (see ``sqs``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import asyncpg
import msgspec

from rendermill.common import errors, schemas, settings


class Received(msgspec.Struct, frozen=True):
    message: schemas.QueueMessage
    receipt: str
    receive_count: int


class Queue(Protocol):
    async def send(self, message: schemas.QueueMessage, *, delay: float = 0.0) -> None: ...

    async def receive(self, *, max_messages: int, visibility_timeout: float) -> list[Received]:
        """Claim up to ``max_messages``, the next in line first (higher tiers, then
        older); each message's ``queued_at`` is set. Poison messages go to the
        dead-letter store."""
        ...

    async def delete(self, receipt: str) -> None: ...

    async def change_visibility(self, receipt: str, timeout: float) -> None: ...

    async def depth(self) -> tuple[int, float]:
        """(messages waiting or in flight, age in seconds of the oldest)."""
        ...


@contextlib.asynccontextmanager
async def open_queue(cfg: settings.Common, pool: asyncpg.Pool) -> AsyncIterator[Queue]:
    """The queue ``cfg.queue`` names: the Postgres queue on ``pool``, or SQS at
    ``cfg.sqs_queue_url`` (and the tier queues beside it). Raises InvalidInput when SQS is
    chosen without a URL."""
    if cfg.queue == "sqs":
        from rendermill.common.queue.sqs import SqsQueue  # only SQS setups load aioboto3

        if not cfg.sqs_queue_url:
            raise errors.InvalidInput(
                "RENDERMILL_QUEUE=sqs needs RENDERMILL_SQS_QUEUE_URL (the normal tier's "
                "queue; RENDERMILL_SQS_QUEUE_URL_HIGH and _LOW are optional)"
            )
        async with SqsQueue.open(
            cfg.sqs_queue_url,
            high_url=cfg.sqs_queue_url_high,
            low_url=cfg.sqs_queue_url_low,
            aging=cfg.priority_aging_seconds,
            region=cfg.aws_region,
            endpoint_url=cfg.aws_endpoint_url,
        ) as queue:
            yield queue
        return
    from rendermill.common.queue.postgres import PostgresQueue

    yield PostgresQueue(pool, aging=cfg.priority_aging_seconds)
