"""The queue port: at-least-once delivery of small messages with a visibility timeout."""

from __future__ import annotations

from typing import Protocol

import msgspec

from rendermill.common import schemas


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
