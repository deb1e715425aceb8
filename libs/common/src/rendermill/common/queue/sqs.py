"""The SQS queue adapter (aioboto3): the same contract as the Postgres queue.

Dead-lettering is SQS's own: give the queue a redrive policy (``maxReceiveCount`` and a
dead-letter queue) and a message received that many times moves there. A message whose
body is not a queue message is left alone for that policy to take. SQS counts time in
whole seconds: delays and visibility timeouts are rounded up, delays capped at 15
minutes. The age of the oldest message is a CloudWatch metric
(``ApproximateAgeOfOldestMessage``), not an API answer: ``depth`` reports it as 0.

Priority tiers: SQS cannot sort a queue, so each tier may have a queue of its own (a tier
without one shares the normal tier's). A receive polls them in turn order, as the
Postgres queue sorts messages: by the enqueue time of the oldest message each holds,
moved one aging period earlier per tier above normal (later per tier below). That time is
not an API answer either, so it is estimated from what the last poll of the queue saw:
when it came back short, the queue was drained and whatever waits there now is newer;
when it came back full, what is left was sent after the newest message it held (SQS
hands out roughly the oldest first). A lower tier's queue is therefore polled first once
it has waited one aging period per tier step longer than the head of a higher one: it is
never starved, whatever arrives above it. The order is as good as SQS's own, which is
best-effort: a short poll samples SQS's servers and may miss messages.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
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


class _Lane(msgspec.Struct):
    """One SQS queue of the tiers, and what the last poll of it saw."""

    url: str
    # The highest tier whose messages are sent here.
    rank: int
    # Estimated enqueue time (Unix seconds) of the oldest message waiting here.
    head: float


class SqsQueue:
    def __init__(
        self,
        client: Any,
        queue_url: str,
        *,
        high_url: str = "",
        low_url: str = "",
        aging: float = 300.0,
    ) -> None:
        """``client``: an open aioboto3 SQS client (see :meth:`open`). ``queue_url`` takes
        normal-tier messages, and high- and low-tier ones unless ``high_url`` or
        ``low_url`` is given; ``aging``: seconds of waiting that count as one tier."""
        self._client = client
        self._aging = aging
        self._urls = {
            schemas.Tier.HIGH: high_url or queue_url,
            schemas.Tier.NORMAL: queue_url,
            schemas.Tier.LOW: low_url or queue_url,
        }
        now = time.time()
        self._lanes: list[_Lane] = []
        for tier in schemas.Tier:  # highest first: a shared queue ranks as its top tier
            if all(lane.url != self._urls[tier] for lane in self._lanes):
                self._lanes.append(_Lane(self._urls[tier], tier.rank, now))

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        queue_url: str,
        *,
        high_url: str = "",
        low_url: str = "",
        aging: float = 300.0,
        region: str,
        endpoint_url: str | None = None,
    ) -> AsyncIterator[SqsQueue]:
        """The queue at ``queue_url`` (with the tier queues given) and a client that lives
        as long as the context. Credentials come from the usual AWS sources (environment,
        profile, role)."""
        session = aioboto3.Session()
        async with session.client("sqs", region_name=region, endpoint_url=endpoint_url) as client:
            yield cls(client, queue_url, high_url=high_url, low_url=low_url, aging=aging)

    async def send(self, message: schemas.QueueMessage, *, delay: float = 0.0) -> None:
        await self._client.send_message(
            QueueUrl=self._urls[message.tier],
            MessageBody=msgspec.json.encode(message).decode(),
            DelaySeconds=min(_MAX_DELAY, max(0, math.ceil(delay))),
        )

    async def receive(self, *, max_messages: int, visibility_timeout: float) -> list[Received]:
        want = max(1, min(_MAX_BATCH, max_messages))
        got: list[tuple[float, Received]] = []
        lanes = sorted(enumerate(self._lanes), key=lambda il: self._turn(il[1].head, il[1].rank))
        for index, lane in lanes:
            if len(got) >= want:
                break
            got.extend(await self._poll(index, lane, want - len(got), visibility_timeout))
        got.sort(key=lambda turn_received: turn_received[0])
        return [received for _, received in got]

    def _turn(self, queued: float, rank: int) -> float:
        """A place in line: ``queued`` moved one aging period earlier per tier."""
        return queued - rank * self._aging

    async def _poll(
        self, index: int, lane: _Lane, n: int, visibility_timeout: float
    ) -> list[tuple[float, Received]]:
        """Up to ``n`` messages from one tier queue, each with its turn."""
        resp = await self._client.receive_message(
            QueueUrl=lane.url,
            MaxNumberOfMessages=n,
            VisibilityTimeout=max(0, math.ceil(visibility_timeout)),
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        messages = resp.get("Messages", [])
        out: list[tuple[float, Received]] = []
        newest = 0.0
        for m in messages:
            attrs = m.get("Attributes", {})
            sent = int(attrs.get("SentTimestamp", "0")) / 1000 or time.time()
            newest = max(newest, sent)
            try:
                message = msgspec.json.decode(m["Body"], type=schemas.QueueMessage)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                # Left to the redrive policy, which moves it to the dead-letter queue.
                log.error("queue_message_malformed", message_id=m["MessageId"], error=str(exc))
                continue
            if message.queued_at is None:
                queued_at = dt.datetime.fromtimestamp(sent, dt.UTC)
                message = msgspec.structs.replace(message, queued_at=queued_at)
            assert message.queued_at is not None
            count = int(attrs.get("ApproximateReceiveCount", "1"))
            turn = self._turn(message.queued_at.timestamp(), message.tier.rank)
            out.append((turn, Received(message, f"{index}:{m['ReceiptHandle']}", count)))
        # Full: what is left was sent after these. Short: drained, anything there is newer.
        lane.head = newest if len(messages) == n else time.time()
        return out

    def _lane_of(self, receipt: str) -> tuple[str, str]:
        """(queue url, SQS receipt handle) of a receipt handed out by :meth:`receive`."""
        index, _, handle = receipt.partition(":")
        return self._lanes[int(index)].url, handle

    async def delete(self, receipt: str) -> None:
        url, handle = self._lane_of(receipt)
        await self._client.delete_message(QueueUrl=url, ReceiptHandle=handle)

    async def change_visibility(self, receipt: str, timeout: float) -> None:
        url, handle = self._lane_of(receipt)
        await self._client.change_message_visibility(
            QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=math.ceil(timeout)
        )

    async def depth(self) -> tuple[int, float]:
        total = 0
        for lane in self._lanes:
            resp = await self._client.get_queue_attributes(
                QueueUrl=lane.url, AttributeNames=_DEPTH_ATTRIBUTES
            )
            attrs = resp.get("Attributes", {})
            total += sum(int(attrs.get(name, "0")) for name in _DEPTH_ATTRIBUTES)
        return total, 0.0
