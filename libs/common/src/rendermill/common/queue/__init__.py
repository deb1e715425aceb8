"""The queue port: at-least-once delivery of small messages with a visibility timeout."""

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
        """Claim up to ``max_messages``; poison messages go to the dead-letter store."""
        ...

    async def delete(self, receipt: str) -> None: ...

    async def change_visibility(self, receipt: str, timeout: float) -> None: ...

    async def depth(self) -> tuple[int, float]:
        """(messages waiting or in flight, age in seconds of the oldest)."""
        ...


@contextlib.asynccontextmanager
async def open_queue(cfg: settings.Common, pool: asyncpg.Pool) -> AsyncIterator[Queue]:
    """The queue ``cfg.queue`` names: the Postgres queue on ``pool``, or SQS at
    ``cfg.sqs_queue_url``. Raises InvalidInput when SQS is chosen without a URL."""
    if cfg.queue == "sqs":
        from rendermill.common.queue.sqs import SqsQueue  # only SQS setups load aioboto3

        if not cfg.sqs_queue_url:
            raise errors.InvalidInput("RENDERMILL_QUEUE=sqs needs RENDERMILL_SQS_QUEUE_URL")
        async with SqsQueue.open(
            cfg.sqs_queue_url, region=cfg.aws_region, endpoint_url=cfg.aws_endpoint_url
        ) as queue:
            yield queue
        return
    from rendermill.common.queue.postgres import PostgresQueue

    yield PostgresQueue(pool)
