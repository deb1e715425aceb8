"""The notifier: terminal job events -> signed webhook messages -> delivered with retries.

Two loops share the database: ``dispatch`` turns undispatched outbox events into one
``webhook_messages`` row per target (the job's ``webhook_url`` and the tenant's enabled
endpoints); ``deliver`` leases due messages, POSTs them, and records every attempt.
Retries are rows with a due time, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import msgspec
from prometheus_client import Counter, Histogram, start_http_server

from rendermill.common import db, errors, lifecycle, netguard, settings, sql, telemetry, webhooks
from rendermill.common import logging as rlog
from rendermill.common.store import Store, open_store

Q = sql.queries("webhooks")
log = rlog.get(__name__)
tracer = telemetry.tracer("rendermill.notifier")
_json = msgspec.json.Encoder()

ATTEMPTS = Counter("rendermill_webhook_attempts_total", "Webhook attempts", ["outcome"])
LATENCY = Histogram("rendermill_webhook_latency_seconds", "Webhook response time")


class RetryPolicy(msgspec.Struct, frozen=True):
    """Exponential backoff with jitter; ``max_attempts`` deliveries in all."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 3600.0

    def delay(self, attempts_made: int) -> float | None:
        """Seconds until the next try, or None when the message should be given up."""
        if attempts_made >= self.max_attempts:
            return None
        raw = min(self.max_delay, self.base_delay * 2 ** (attempts_made - 1))
        return float(raw * random.uniform(0.8, 1.2))


class Notifier:
    def __init__(
        self,
        cfg: settings.Notifier,
        pool: asyncpg.Pool,
        session: aiohttp.ClientSession,
        store: Store,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.session = session
        self.store = store
        self.policy = RetryPolicy(cfg.max_attempts, cfg.retry_base_delay)
        self.wake = asyncio.Event()

    def on_notify(self, _payload: str | None) -> None:
        self.wake.set()

    def payload(self, event: asyncpg.Record) -> dict[str, Any]:
        data = dict(event["data"])
        result = data.get("result")
        if event["type"] == "job.succeeded" and result and result.get("object_key"):
            data["download_url"] = self.store.download_url(result["object_key"], ttl=24 * 3600)
        return {
            "type": event["type"],
            "timestamp": event["created_at"].astimezone(dt.UTC).isoformat(),
            "data": data,
        }

    async def dispatch(self) -> int:
        """Turn undispatched terminal events into messages; returns how many events."""
        async with self.pool.acquire() as conn, conn.transaction():
            events = await conn.fetch(Q.undispatched_events, 100)
            for ev in events:
                targets: list[tuple[uuid.UUID | None, str]] = []
                if ev["webhook_url"]:
                    targets.append((None, ev["webhook_url"]))
                for ep in await conn.fetch(Q.enabled_endpoints, ev["tenant_id"]):
                    targets.append((ep["id"], ep["url"]))
                body = self.payload(ev)
                for endpoint_id, url in targets:
                    await conn.execute(
                        Q.insert_message,
                        uuid.uuid4(),
                        ev["tenant_id"],
                        ev["job_id"],
                        ev["seq"],
                        ev["type"],
                        endpoint_id,
                        url,
                        body,
                    )
                await conn.execute(Q.mark_dispatched, ev["job_id"], ev["seq"])
        return len(events)

    async def deliver_due(self) -> int:
        lease = self.cfg.timeout * 3
        async with self.pool.acquire() as conn:
            due = await conn.fetch(Q.claim_due, 20, lease)
        await asyncio.gather(*(self.deliver(m) for m in due))
        return len(due)

    async def deliver(self, msg: asyncpg.Record) -> None:
        attempt = msg["attempts"] + 1
        body = _json.encode(msg["payload"])
        msg_id = "msg_" + msg["id"].hex
        bound = log.bind(job_id=str(msg["job_id"]), message_id=msg_id, attempt=attempt)
        status: int | None = None
        error: str | None = None
        text: str | None = None
        started = time.perf_counter()
        with tracer.start_as_current_span(
            "webhook_delivery", attributes={"job_id": str(msg["job_id"]), "attempt": attempt}
        ):
            try:
                # Re-checked at delivery: DNS may now point somewhere else.
                await netguard.check_url(
                    msg["url"], allow_private=self.cfg.allow_private_webhooks, what="webhook url"
                )
                async with self.pool.acquire() as conn:
                    # A registered endpoint has a secret of its own; a job's webhook_url
                    # is signed with the tenant's.
                    if msg["endpoint_id"] is not None:
                        secret = await conn.fetchval(Q.endpoint_secret, msg["endpoint_id"])
                    else:
                        secret = await conn.fetchval(Q.tenant_secret, msg["tenant_id"])
                    if secret is None:
                        raise errors.InvalidInput("the webhook endpoint was deleted")
                headers = {
                    "content-type": "application/json",
                    "user-agent": "rendermill-webhooks/1",
                    **webhooks.sign([secret], msg_id, body),
                }
                timeout = aiohttp.ClientTimeout(total=self.cfg.timeout)
                async with self.session.post(
                    msg["url"], data=body, headers=headers, timeout=timeout, allow_redirects=False
                ) as resp:
                    status = resp.status
                    text = (await resp.content.read(2048)).decode("utf-8", "replace")
            except errors.InvalidInput as exc:
                error = exc.message
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        LATENCY.observe(elapsed)
        ok = status is not None and 200 <= status < 300
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                Q.insert_attempt, msg["id"], attempt, int(elapsed * 1000), status, error, text
            )
            endpoint_id = msg["endpoint_id"]
            if ok:
                await conn.execute(Q.mark_delivered, msg["id"], attempt)
                if endpoint_id is not None:
                    await conn.execute(Q.endpoint_delivered, endpoint_id)
                ATTEMPTS.labels("delivered").inc()
                bound.info("webhook_delivered", status=status, duration_ms=int(elapsed * 1000))
                return
            delay = self.policy.delay(attempt)
            if delay is None:
                await conn.execute(Q.mark_failed, msg["id"], attempt)
                ATTEMPTS.labels("gave_up").inc()
                bound.warning("webhook_failed", status=status, error=error)
                if endpoint_id is not None:
                    row = await conn.fetchrow(
                        Q.endpoint_gave_up, endpoint_id, self.cfg.endpoint_disable_after
                    )
                    threshold = self.cfg.endpoint_disable_after
                    if row is not None and row["failure_count"] == threshold:
                        bound.warning(
                            "webhook_endpoint_disabled",
                            endpoint_id=str(endpoint_id),
                            given_up=row["failure_count"],
                        )
            else:
                await conn.execute(Q.mark_retry, msg["id"], attempt, delay)
                ATTEMPTS.labels("retry").inc()
                bound.info("webhook_retry", status=status, error=error, delay=round(delay, 2))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wake.clear()
            busy = await lifecycle.through_outages(stop, "notifier", self._round)
            if not busy:
                await lifecycle.wait_or_stop(stop, self.wake, self.cfg.poll_interval)

    async def _round(self) -> int:
        return await self.dispatch() + await self.deliver_due()


async def main(cfg: settings.Notifier) -> int:
    stop = asyncio.Event()
    lifecycle.install_signal_handlers(stop)
    if cfg.metrics_port is not None:
        start_http_server(cfg.metrics_port, addr=cfg.metrics_host)
    url = db.dsn(cfg)
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(db.pool(url, max_size=5))
        store = await stack.enter_async_context(open_store(cfg))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        listener = await stack.enter_async_context(db.Listener(url, db.EVENTS_CHANNEL))
        notifier = Notifier(cfg, pool, session, store)
        listener.add(notifier.on_notify)
        sup = await stack.enter_async_context(lifecycle.supervised(stop, grace=15))
        sup.spawn(notifier.run(stop), "notifier")
        log.info("notifier_started")
        await stop.wait()
    return 1 if sup.failed else 0
