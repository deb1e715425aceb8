"""The SQS queue adapter (aioboto3): the same contract as the Postgres queue.

Dead-lettering is SQS's own: give the queue a redrive policy (``maxReceiveCount`` and a
dead-letter queue) and a message received that many times moves there. A message whose
body is not a queue message is left alone for that policy to take. SQS counts time in
whole seconds: delays and visibility timeouts are rounded up, delays capped at 15
minutes. The age of the oldest message is a CloudWatch metric
(``ApproximateAgeOfOldestMessage``), not an API answer: ``depth`` reports it as 0.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import msgspec

from rendermill.common import logging, schemas
from rendermill.common.queue import Received

log = logging.get(__name__)

# SQS's limits: at most 10 messages per receive, delays of at most 900 s.
_MAX_BATCH = 10
_MAX_DELAY = 900
_DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class SqsQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        """``client``: an open aioboto3 SQS client (see :meth:`open`)."""
        self._client = client
        self._url = queue_url

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, queue_url: str, *, region: str, endpoint_url: str | None = None
    ) -> AsyncIterator[SqsQueue]:
        """The queue at ``queue_url`` with a client that lives as long as the context.
        Credentials come from the usual AWS sources (environment, profile, role)."""
        session = aioboto3.Session()
        async with session.client("sqs", region_name=region, endpoint_url=endpoint_url) as client:
            yield cls(client, queue_url)

    async def send(self, message: schemas.QueueMessage, *, delay: float = 0.0) -> None:
        await self._client.send_message(
            QueueUrl=self._url,
            MessageBody=msgspec.json.encode(message).decode(),
            DelaySeconds=min(_MAX_DELAY, max(0, math.ceil(delay))),
        )

    async def receive(self, *, max_messages: int, visibility_timeout: float) -> list[Received]:
        resp = await self._client.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=max(1, min(_MAX_BATCH, max_messages)),
            VisibilityTimeout=max(0, math.ceil(visibility_timeout)),
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        out: list[Received] = []
        for m in resp.get("Messages", []):
            try:
                message = msgspec.json.decode(m["Body"], type=schemas.QueueMessage)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                # Left to the redrive policy, which moves it to the dead-letter queue.
                log.error("queue_message_malformed", message_id=m["MessageId"], error=str(exc))
                continue
            count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            out.append(Received(message, m["ReceiptHandle"], count))
        return out

    async def delete(self, receipt: str) -> None:
        await self._client.delete_message(QueueUrl=self._url, ReceiptHandle=receipt)

    async def change_visibility(self, receipt: str, timeout: float) -> None:
        await self._client.change_message_visibility(
            QueueUrl=self._url, ReceiptHandle=receipt, VisibilityTimeout=math.ceil(timeout)
        )

    async def depth(self) -> tuple[int, float]:
        resp = await self._client.get_queue_attributes(
            QueueUrl=self._url, AttributeNames=_DEPTH_ATTRIBUTES
        )
        attrs = resp.get("Attributes", {})
        return sum(int(attrs.get(name, "0")) for name in _DEPTH_ATTRIBUTES), 0.0
