"""The scheduler: queue -> one renderer attempt per message, with a concurrency limit.

It is idempotent on (job_id, attempt): a redelivered message whose attempt is already
running is watched through its heartbeat rather than launched twice.

It takes only as many messages as it has free slots, and the queue hands them out next in
line first (higher priority tiers, aged so that lower ones never starve): when slots are
scarce, higher-tier work is launched first. A retry or a tenant-cap deferral goes back
on the queue in the job's tier; a deferral keeps its place in line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
import msgspec
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from rendermill.common import db, errors, jobs, lifecycle, schemas, settings, telemetry
from rendermill.common import logging as rlog
from rendermill.common.launch import (
    EXIT_BAD_MEDIA,
    EXIT_INVALID_PROJECT,
    EXIT_KILLED,
    EXIT_NOT_RUN,
    EXIT_OK,
    EXIT_TRANSIENT,
    Launcher,
    open_launcher,
)
from rendermill.common.queue import Queue, Received, open_queue
from rendermill.common.schemas import JobStatus

log = rlog.get(__name__)
tracer = telemetry.tracer("rendermill.scheduler")

LAUNCHES = Counter("rendermill_launches_total", "Renderer attempts launched", ["launcher", "tier"])
QUEUE_WAIT = Histogram(
    "rendermill_queue_wait_seconds",
    "Time from joining the queue to launch, by priority tier",
    ["tier"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
FAILURES = Counter("rendermill_attempt_failures_total", "Failed attempts by reason", ["reason"])
RUNNING = Gauge("rendermill_attempts_running", "Attempts running now")
QUEUE_DEPTH = Gauge("rendermill_queue_depth", "Messages waiting or in flight")
QUEUE_AGE = Gauge("rendermill_queue_oldest_seconds", "Age of the oldest message")
JOBS = Gauge("rendermill_jobs", "Jobs queued or running now", ["status"])
DEFERRED = Counter(
    "rendermill_tenant_deferrals_total", "Attempts held back by a tenant's concurrency cap"
)
FINISHED = Counter(
    "rendermill_jobs_finished_total", "Jobs whose attempt ended in a final state", ["status"]
)
RENDER_SECONDS = Histogram(
    "rendermill_render_seconds",
    "Wall time of render attempts, launch to exit, by outcome",
    ["outcome"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
REALTIME = Histogram(
    "rendermill_render_realtime_factor",
    "Timeline seconds rendered per wall second, successful attempts",
    buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
PEAK_RSS = Histogram(
    "rendermill_render_peak_rss_bytes",
    "Peak resident memory of successful renders (the renderer process's), by the CPUs "
    "each was given",
    ["cpus"],
    buckets=tuple(mb * 2**20 for mb in (128, 256, 384, 512, 768, 1024, 1536, 2048, 4096)),
)

# How often a running attempt's job is looked at for a cancel.
CANCEL_POLL_SECONDS = 2.0
# How soon (times 1 to 5) a job held back by its tenant's cap is looked at again.
TENANT_RETRY_SECONDS = 2.0
# The attempt reason of a launch the platform refused for want of capacity: no render ran,
# so it does not count towards max_attempts. Such launches are tried again, backing off
# up to CAPACITY_RETRY_MAX_SECONDS, for launch_wait_seconds.
NO_CAPACITY = "no_capacity"
CAPACITY_RETRY_MAX_SECONDS = 60.0


class Outcome(msgspec.Struct, frozen=True):
    reason: str
    retry: bool
    message: str


def classify(exit_code: int) -> Outcome:
    """What an exit code means for the job."""
    if exit_code == EXIT_INVALID_PROJECT:
        return Outcome("invalid_project", False, "the project cannot be rendered")
    if exit_code == EXIT_BAD_MEDIA:
        return Outcome("media_error", False, "a source file is unreadable or corrupt")
    if exit_code == EXIT_TRANSIENT:
        return Outcome("transient", True, "a transient failure interrupted the render")
    if exit_code == EXIT_KILLED:
        return Outcome("killed", True, "the renderer was killed (out of memory?)")
    if exit_code in (143, 130):
        return Outcome("terminated", True, "the renderer was stopped")
    if exit_code == EXIT_NOT_RUN:
        return Outcome("infrastructure", True, "the render task failed to start or was lost")
    return Outcome("infrastructure", True, f"the renderer exited with code {exit_code}")


class HeartbeatJudge:
    """Whether a render's heartbeat has gone silent, fair to a database outage.

    While PostgreSQL is out of reach no renderer can write a heartbeat, so none is
    judged; once it is back, renderers get ``timeout`` seconds to write one again before
    an old heartbeat counts as lost. Otherwise every render running through an outage
    longer than the timeout would be stopped the moment the scheduler could look again.
    """

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._out = False
        self._judge_after = 0.0

    def unreachable(self) -> None:
        """The database could not be reached just now."""
        self._out = True

    def reached(self) -> None:
        """The database answered just now."""
        if self._out:
            self._out = False
            self._judge_after = self._clock() + self.timeout

    def lost(self, att: jobs.Attempt) -> bool:
        if self._out or self._clock() < self._judge_after:
            return False
        age = (dt.datetime.now(dt.UTC) - att.heartbeat_at).total_seconds()
        return age > self.timeout


def size_step(exit_codes: Iterable[int | None]) -> int:
    """The size class of a job's next attempt, given its earlier attempts' exit codes: one
    step larger for each that was killed for its memory (0 is the launcher's smallest)."""
    return sum(1 for code in exit_codes if code == EXIT_KILLED)


class Scheduler:
    def __init__(
        self,
        cfg: settings.Scheduler,
        pool: asyncpg.Pool,
        queue: Queue,
        launcher: Launcher,
        database_url: str,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.queue = queue
        self.launcher = launcher
        self.database_url = database_url
        self.wake = asyncio.Event()
        self._slots = asyncio.Semaphore(cfg.concurrency)
        self._running = 0

    def on_notify(self, _payload: str | None) -> None:
        self.wake.set()

    async def run(self, stop: asyncio.Event, sup: lifecycle.Supervisor) -> None:
        """Claim messages while there are free slots, until ``stop``."""
        sup.spawn(self._sweep(stop), "sweep")
        while not stop.is_set():
            free = self.cfg.concurrency - self._running
            got: list[Received] = []
            if free > 0:
                receive = functools.partial(
                    self.queue.receive,
                    max_messages=free,
                    visibility_timeout=self.cfg.visibility_timeout,
                )
                got = await lifecycle.through_outages(stop, "receive", receive) or []
            for received in got:
                self._running += 1
                sup.spawn(self._handle_guarded(received, stop), f"job:{received.message.job_id}")
            if not got:
                self.wake.clear()
                await lifecycle.wait_or_stop(stop, self.wake, self.cfg.poll_interval)

    async def _handle_guarded(self, received: Received, stop: asyncio.Event) -> None:
        RUNNING.inc()
        try:
            await self.handle(received, stop)
        except (OSError, asyncpg.PostgresError, errors.RetryLater) as exc:
            # Leave the message: it becomes visible again and is retried.
            log.warning(
                "handle_failed_transient", job_id=str(received.message.job_id), error=repr(exc)
            )
        finally:
            RUNNING.dec()
            self._running -= 1
            self.wake.set()

    async def handle(self, received: Received, stop: asyncio.Event) -> None:
        msg = received.message
        bound = log.bind(job_id=str(msg.job_id), attempt=msg.attempt, tier=msg.tier.value)
        async with self.pool.acquire() as conn:
            try:
                job = await jobs.get(conn, msg.job_id)
            except errors.NotFound:
                bound.warning("message_for_unknown_job")
                await self.queue.delete(received.receipt)
                return
        if job.status.terminal or msg.attempt < job.attempt:
            if job.status == JobStatus.CANCELED and job.attempt < msg.attempt:
                FINISHED.labels(job.status.value).inc()  # canceled before this attempt ran
            await self.queue.delete(received.receipt)
            return
        if job.status == JobStatus.RUNNING and job.attempt == msg.attempt:
            # Redelivery after a scheduler restart: the attempt may still be alive.
            await self._adopt(job, received, stop)
            return
        if job.status != JobStatus.QUEUED:
            await self.queue.delete(received.receipt)
            return
        ctx = telemetry.context_from(msg.traceparent or job.traceparent)
        with tracer.start_as_current_span(
            "schedule_attempt",
            context=ctx,
            attributes={"job_id": str(job.id), "attempt": msg.attempt},
        ):
            async with self.pool.acquire() as conn, conn.transaction():
                cap = self.cfg.tenant_concurrency
                if cap and await jobs.running_for_tenant(conn, job.tenant_id) >= cap:
                    await self._defer(received, job.tier, bound)
                    return
                if await jobs.insert_attempt(conn, job.id, msg.attempt, self.launcher.name) is None:
                    bound.info("attempt_exists")
                try:
                    await jobs.start_attempt(conn, job.id, msg.attempt)
                except errors.Conflict:
                    await self.queue.delete(received.receipt)
                    return
                earlier = await jobs.list_attempts(conn, job.id)
            size = size_step(a.exit_code for a in earlier if a.attempt < msg.attempt)
            env = {
                **settings.to_env(self.cfg),
                "RENDERMILL_DATABASE_URL": self.database_url,
                "RENDERMILL_JOB_ID": str(job.id),
                "RENDERMILL_ATTEMPT": str(msg.attempt),
            }
            if tp := telemetry.current_traceparent():
                env["TRACEPARENT"] = tp
            try:
                task_id = await self.launcher.launch(str(job.id), msg.attempt, env, size=size)
            except errors.RetryLater as exc:
                bound.warning("launch_refused_no_capacity", error=str(exc))
                await self._not_launched(job, msg.attempt, received, str(exc))
                return
            except (OSError, errors.RendermillError) as exc:
                # A missing command, a setting or permission the platform refuses: the
                # infrastructure's failure.
                bound.error("launch_failed", error=str(exc) or repr(exc), exit_code=EXIT_NOT_RUN)
                await self._attempt_ended(
                    job.id, msg.attempt, EXIT_NOT_RUN, job.max_attempts, received
                )
                return
            LAUNCHES.labels(self.launcher.name, job.tier.value).inc()
            launched = time.monotonic()
            waited = None
            if msg.queued_at is not None:
                waited = (dt.datetime.now(dt.UTC) - msg.queued_at).total_seconds()
                QUEUE_WAIT.labels(job.tier.value).observe(max(0.0, waited))
            bound.info(
                "attempt_launched",
                task_id=task_id,
                size=size,
                queue_wait_ms=None if waited is None else round(waited * 1000),
            )
            async with self.pool.acquire() as conn:
                await jobs.set_attempt_task(conn, job.id, msg.attempt, task_id)
            rc = await self._watch(job.id, msg.attempt, received, task_id, stop)
            await self._attempt_ended(
                job.id, msg.attempt, rc, job.max_attempts, received, launched=launched
            )

    async def _watch(
        self,
        job_id: uuid.UUID,
        attempt: int,
        received: Received,
        task_id: str,
        stop: asyncio.Event,
    ) -> int:
        """Wait for the task to end while keeping its message invisible; returns its exit
        code. Raises errors.NotFound when the launcher cannot follow the task."""
        keep = asyncio.create_task(self._keepalive(job_id, attempt, received, task_id))
        waiter = asyncio.create_task(self.launcher.wait(task_id))
        try:
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([waiter, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not waiter.done():
                # Shutting down: let the render finish within the drain period, then
                # stop it; its message comes back for a retry.
                done, _ = await asyncio.wait([waiter], timeout=self.cfg.drain_seconds)
                if not done:
                    await self.launcher.stop(task_id, grace=10, reason="the scheduler stopped")
            return await waiter
        finally:
            keep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep

    async def _defer(self, received: Received, tier: schemas.Tier, bound: Any) -> None:
        """The tenant has its share running: the message goes back, due again shortly,
        as a new message (a redelivery would count towards dead-lettering) in the job's
        ``tier`` and with the time it joined the queue, so that it keeps its place in
        line."""
        # Spread out: a burst of one tenant's jobs is not looked at all at once.
        delay = TENANT_RETRY_SECONDS * random.uniform(1.0, 5.0)
        await self.queue.send(msgspec.structs.replace(received.message, tier=tier), delay=delay)
        await self.queue.delete(received.receipt)
        DEFERRED.inc()
        bound.info("tenant_at_capacity", cap=self.cfg.tenant_concurrency)

    async def _keepalive(
        self, job_id: uuid.UUID, attempt: int, received: Received, task_id: str
    ) -> None:
        """Keep the message invisible while the render runs; stop a render that went silent
        or whose job was canceled."""
        interval = max(1.0, self.cfg.visibility_timeout / 3)
        last_visibility = time.monotonic()
        judge = HeartbeatJudge(self.cfg.heartbeat_timeout)
        while True:
            # Polled often enough that a cancel stops the render within seconds.
            await asyncio.sleep(min(interval, CANCEL_POLL_SECONDS))
            try:
                if time.monotonic() - last_visibility >= interval:
                    await self.queue.change_visibility(
                        received.receipt, self.cfg.visibility_timeout
                    )
                    last_visibility = time.monotonic()
                async with self.pool.acquire() as conn:
                    att = await jobs.get_attempt(conn, job_id, attempt)
                    job = await jobs.get(conn, job_id)
            except db.UNAVAILABLE as exc:
                # The render goes on; so does watching it, once the database is back.
                judge.unreachable()
                log.warning("watch_unavailable", job_id=str(job_id), error=repr(exc))
                continue
            judge.reached()
            if job.status == JobStatus.CANCELED:
                log.info("render_canceled", job_id=str(job_id), attempt=attempt)
                reason = "the job was canceled"
            elif att and judge.lost(att):
                log.warning("heartbeat_lost", job_id=str(job_id), attempt=attempt)
                reason = "the renderer's heartbeat was lost"
            else:
                continue
            try:
                await self.launcher.stop(task_id, grace=5, reason=reason)
            except errors.RetryLater as exc:
                # Asked again on the next round.
                log.warning("stop_failed", job_id=str(job_id), attempt=attempt, error=exc.message)
                continue
            return

    async def _adopt(self, job: jobs.Job, received: Received, stop: asyncio.Event) -> None:
        """Watch an attempt started by an earlier scheduler until it ends: through the
        launcher by its task id where the launcher can follow it (an ECS task), else by
        its heartbeat until it goes silent."""
        async with self.pool.acquire() as conn:
            att = await jobs.get_attempt(conn, job.id, job.attempt)
        if (
            att is not None
            and att.task_id
            and att.finished_at is None
            and att.launcher == self.launcher.name
        ):
            try:
                rc = await self._watch(job.id, job.attempt, received, att.task_id, stop)
            except errors.NotFound:
                pass  # e.g. a local process: only its heartbeat can be watched
            else:
                log.info("attempt_adopted", job_id=str(job.id), attempt=job.attempt, exit_code=rc)
                await self._attempt_ended(job.id, job.attempt, rc, job.max_attempts, received)
                return
        judge = HeartbeatJudge(self.cfg.heartbeat_timeout)
        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    att = await jobs.get_attempt(conn, job.id, job.attempt)
                    current = await jobs.get(conn, job.id)
            except db.UNAVAILABLE as exc:
                judge.unreachable()
                log.warning("watch_unavailable", job_id=str(job.id), error=repr(exc))
                await lifecycle.wait_or_stop(stop, asyncio.Event(), 5.0)
                continue
            judge.reached()
            if current.status.terminal or current.attempt != job.attempt:
                await self.queue.delete(received.receipt)
                return
            if att is None or att.finished_at is not None or judge.lost(att):
                log.warning("attempt_lost", job_id=str(job.id), attempt=job.attempt)
                await self._attempt_ended(
                    job.id, job.attempt, EXIT_TRANSIENT, job.max_attempts, received
                )
                return
            with contextlib.suppress(*db.UNAVAILABLE):
                # The Postgres queue may have gone since the read above: watched again
                # next round, or, past the visibility timeout, by whoever gets it.
                await self.queue.change_visibility(received.receipt, self.cfg.visibility_timeout)
            await lifecycle.wait_or_stop(
                stop, asyncio.Event(), min(5.0, self.cfg.visibility_timeout / 3)
            )

    async def _attempt_ended(
        self,
        job_id: uuid.UUID,
        attempt: int,
        rc: int,
        max_attempts: int,
        received: Received,
        *,
        launched: float | None = None,
    ) -> None:
        outcome = classify(rc)
        bound = log.bind(job_id=str(job_id), attempt=attempt, exit_code=rc)
        async with self.pool.acquire() as conn:
            await jobs.finish_attempt(
                conn, job_id, attempt, rc, "ok" if rc == 0 else outcome.reason
            )
            job = await jobs.get(conn, job_id)
            # Launches refused for capacity ran nothing: they do not use up attempts.
            ran = sum(1 for a in await jobs.list_attempts(conn, job_id) if a.reason != NO_CAPACITY)
            if job.status == JobStatus.CANCELED:
                bound.info("attempt_canceled")
            elif rc == EXIT_OK:
                if not job.status.terminal:
                    # Exit 0 without a recorded result is a renderer bug, not a success.
                    await self._fail(
                        conn, job_id, "no_result", "the renderer exited without a result"
                    )
                bound.info("attempt_succeeded")
            elif job.status.terminal:
                bound.info("attempt_failed_job_final", status=job.status.value)
            elif outcome.retry and ran < max_attempts:
                delay = self.cfg.retry_base_delay * 2 ** (ran - 1) * random.uniform(0.8, 1.2)
                err = jobs.error_info(outcome.reason, outcome.message, {"exit_code": rc})
                try:
                    await jobs.requeue(
                        conn, job_id, attempt, message=f"retrying: {outcome.message}", error=err
                    )
                except errors.Conflict:
                    pass
                else:
                    await self.queue.send(
                        schemas.QueueMessage(
                            job_id=job_id,
                            attempt=attempt + 1,
                            traceparent=job.traceparent,
                            tier=job.tier,
                        ),
                        delay=delay,
                    )
                    bound.warning("attempt_retrying", reason=outcome.reason, delay=round(delay, 2))
            else:
                msg = outcome.message
                if outcome.retry:
                    msg = f"{msg}; gave up after {ran} attempts"
                await self._fail(conn, job_id, outcome.reason, msg, {"exit_code": rc})
            if rc != EXIT_OK and job.status != JobStatus.CANCELED:
                FAILURES.labels(outcome.reason).inc()
            job = await jobs.get(conn, job_id)
        self._observe(job, rc, outcome, launched)
        await self.queue.delete(received.receipt)

    async def _not_launched(
        self, job: jobs.Job, attempt: int, received: Received, why: str
    ) -> None:
        """The launcher had no room for the attempt (RetryLater): it is recorded as
        ``no_capacity`` and tried again, backing off up to CAPACITY_RETRY_MAX_SECONDS,
        until ``launch_wait_seconds`` have passed since the first refusal in a row; then
        the job fails, saying so."""
        bound = log.bind(job_id=str(job.id), attempt=attempt)
        async with self.pool.acquire() as conn:
            await jobs.finish_attempt(conn, job.id, attempt, EXIT_TRANSIENT, NO_CAPACITY)
            attempts = await jobs.list_attempts(conn, job.id)
            current = await jobs.get(conn, job.id)
            refused = 0
            for a in reversed(attempts):
                if a.reason != NO_CAPACITY:
                    break
                refused += 1
            since = attempts[len(attempts) - refused].started_at
            waited = (dt.datetime.now(dt.UTC) - since).total_seconds()
            FAILURES.labels(NO_CAPACITY).inc()
            if current.status.terminal:
                bound.info("attempt_not_launched_job_final", status=current.status.value)
            elif waited < self.cfg.launch_wait_seconds:
                delay = min(
                    CAPACITY_RETRY_MAX_SECONDS, self.cfg.retry_base_delay * 2 ** (refused - 1)
                ) * random.uniform(0.8, 1.2)
                err = jobs.error_info(NO_CAPACITY, why, {"waited_seconds": round(waited)})
                try:
                    await jobs.requeue(
                        conn, job.id, attempt, message=f"waiting for capacity: {why}", error=err
                    )
                except errors.Conflict:
                    pass
                else:
                    await self.queue.send(
                        schemas.QueueMessage(
                            job_id=job.id,
                            attempt=attempt + 1,
                            traceparent=current.traceparent,
                            tier=current.tier,
                        ),
                        delay=delay,
                    )
                    bound.warning("attempt_waiting_for_capacity", delay=round(delay, 2))
            else:
                await self._fail(
                    conn,
                    job.id,
                    NO_CAPACITY,
                    f"no capacity to start the render in {round(waited)} s: {why}",
                    {"waited_seconds": round(waited), "refusals": refused},
                )
        await self.queue.delete(received.receipt)

    @staticmethod
    def _observe(job: jobs.Job, rc: int, outcome: Outcome, launched: float | None) -> None:
        """Metrics of an ended attempt: its wall time, the job's final state, and for a
        success how fast the render ran and its peak memory."""
        if job.status.terminal:
            FINISHED.labels(job.status.value).inc()
        if launched is None:
            return
        took = time.monotonic() - launched
        label = (
            "canceled"
            if job.status == JobStatus.CANCELED
            else ("ok" if rc == 0 else outcome.reason)
        )
        RENDER_SECONDS.labels(label).observe(took)
        result = job.result or {}
        if job.status != JobStatus.SUCCEEDED:
            return
        duration = result.get("duration")
        if isinstance(duration, int | float) and took > 0:
            REALTIME.observe(duration / took)
        peak, cpus = result.get("peak_rss_bytes"), result.get("cpus")
        if isinstance(peak, int) and isinstance(cpus, int):
            PEAK_RSS.labels(str(cpus)).observe(peak)

    async def _fail(
        self,
        conn: db.Conn,
        job_id: uuid.UUID,
        code: str,
        message: str,
        detail: object = None,
    ) -> None:
        with contextlib.suppress(errors.Conflict):
            await jobs.finish(
                conn,
                job_id,
                JobStatus.FAILED,
                expect=(JobStatus.RUNNING, JobStatus.QUEUED),
                error=jobs.error_info(code, message, detail),
                message=message,
            )
        log.error("job_failed", job_id=str(job_id), code=code)

    async def _sweep(self, stop: asyncio.Event) -> None:
        """Every 30 s: queue and job gauges, and re-enqueue queued jobs that have no message
        (the gateway died between commit and enqueue): nothing accepted is ever lost."""
        while not stop.is_set():
            await lifecycle.through_outages(stop, "sweep", self._sweep_once)
            await lifecycle.wait_or_stop(stop, asyncio.Event(), 30.0)

    async def _sweep_once(self) -> None:
        depth, age = await self.queue.depth()
        QUEUE_DEPTH.set(depth)
        QUEUE_AGE.set(age)
        async with self.pool.acquire() as conn:
            for status, n in (await jobs.count_active(conn)).items():
                JOBS.labels(status.value).set(n)
            if self.cfg.queue == "postgres":
                # The Postgres queue can be searched: any queued job without a
                # message (never sent, or lost) gets one.
                rows = await conn.fetch(
                    "SELECT j.id, j.attempt, j.traceparent, j.priority FROM jobs j"
                    " WHERE j.status = 'queued'"
                    " AND j.updated_at < now() - interval '60 seconds' AND NOT EXISTS ("
                    "  SELECT 1 FROM queue_messages m WHERE m.body->>'job_id' = j.id::text)"
                )
            else:
                # SQS cannot: a job whose first message was never sent says so.
                rows = await jobs.never_enqueued(conn)
        for row in rows:
            log.warning("orphan_job_requeued", job_id=str(row["id"]))
            await self.queue.send(
                schemas.QueueMessage(
                    job_id=row["id"],
                    attempt=row["attempt"] + 1,
                    traceparent=row["traceparent"],
                    tier=schemas.Tier.from_rank(row["priority"]),
                )
            )
            async with self.pool.acquire() as conn:
                await jobs.mark_enqueued(conn, row["id"])


async def main(cfg: settings.Scheduler) -> int:
    stop = asyncio.Event()
    lifecycle.install_signal_handlers(stop)
    if cfg.metrics_port is not None:
        start_http_server(cfg.metrics_port, addr=cfg.metrics_host)
    url = db.dsn(cfg)
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(db.pool(url, max_size=5))
        queue = await stack.enter_async_context(open_queue(cfg, pool))
        # Closed after the supervisor below has drained: renders still wait on it.
        launcher = await stack.enter_async_context(open_launcher(cfg))
        # The Postgres queue NOTIFYs on send (SQS is polled).
        listener = await stack.enter_async_context(db.Listener(url, db.QUEUE_CHANNEL))
        scheduler = Scheduler(cfg, pool, queue, launcher, url)
        listener.add(scheduler.on_notify)
        # Drain before closing the pool: attempts record their end in Postgres.
        sup = await stack.enter_async_context(
            lifecycle.supervised(stop, grace=cfg.drain_seconds + 20)
        )
        log.info("scheduler_started", concurrency=cfg.concurrency, launcher=launcher.name)
        await scheduler.run(stop, sup)
        log.info("scheduler_stopping")
    return 1 if sup.failed else 0
