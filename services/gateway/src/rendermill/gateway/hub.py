"""Fan-out of job-event wake-ups from one LISTEN connection to many streams."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Iterator

import msgspec

from rendermill.common import schemas


class EventHub:
    """Streams register interest in a job and get woken when its outbox grows."""

    def __init__(self) -> None:
        self._waiters: defaultdict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)

    def on_notify(self, payload: str | None) -> None:
        if payload is None:  # the listener reconnected: wake everyone to re-read
            for waiters in self._waiters.values():
                for ev in waiters:
                    ev.set()
            return
        try:
            hint = msgspec.json.decode(payload, type=schemas.JobEventHint)
        except msgspec.DecodeError:
            return
        for ev in self._waiters.get(hint.job_id, ()):
            ev.set()

    @contextlib.contextmanager
    def watch(self, job_id: uuid.UUID) -> Iterator[asyncio.Event]:
        ev = asyncio.Event()
        self._waiters[job_id].add(ev)
        try:
            yield ev
        finally:
            self._waiters[job_id].discard(ev)
            if not self._waiters[job_id]:
                del self._waiters[job_id]

    @property
    def watchers(self) -> int:
        return sum(len(v) for v in self._waiters.values())
