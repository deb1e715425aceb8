"""The scheduler's attempt handling with real subprocesses and a real Postgres queue."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import aioboto3
import asyncpg
import pytest

from rendermill.common import errors, jobs, lifecycle, schemas, settings, tenants
from rendermill.common.launch.local import LocalLauncher
from rendermill.common.queue import Queue, open_queue
from rendermill.common.queue.postgres import PostgresQueue
from rendermill.common.schemas import JobStatus
from rendermill.scheduler.service import Scheduler


def _exits(*codes: int) -> LocalLauncher:
    """A launcher whose n-th process exits with codes[n-1] (by its --attempt argument)."""
    script = (
        f"import sys; sys.exit({list(codes)}[int(sys.argv[sys.argv.index('--attempt') + 1]) - 1])"
    )
    return LocalLauncher((sys.executable, "-c", script))


async def _queued_job(
    pool: asyncpg.Pool,
    queue: Queue,
    max_attempts: int,
    tier: schemas.Tier = schemas.Tier.NORMAL,
    tenant_id: uuid.UUID | None = None,
) -> jobs.Job:
    """A new job (of a new tenant unless given), with its first attempt's message on the
    queue."""
    async with pool.acquire() as conn:
        if tenant_id is None:
            tenant_id = (await tenants.create(conn, "t"))[0].id
        job, _ = await jobs.create(
            conn,
            tenant_id=tenant_id,
            project={},
            output=schemas.OutputSpec(),
            media={},
            max_attempts=max_attempts,
            tier=tier,
        )
    await queue.send(schemas.QueueMessage(job_id=job.id, attempt=1, tier=tier))
    return job


@contextlib.asynccontextmanager
async def _running(scheduler: Scheduler) -> AsyncIterator[lifecycle.Supervisor]:
    """``scheduler`` running under a supervisor for the block, then stopped in order."""
    stop = asyncio.Event()
    async with lifecycle.supervised(stop, grace=5) as sup:
        runner = asyncio.create_task(scheduler.run(stop, sup))
        try:
            yield sup
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def _final(pool: asyncpg.Pool, job_id: uuid.UUID, seconds: float = 30.0) -> jobs.Job:
    """The job once it reached a terminal state (polled)."""
    async with asyncio.timeout(seconds):
        while True:
            async with pool.acquire() as conn:
                job = await jobs.get(conn, job_id)
            if job.status.terminal:
                return job
            await asyncio.sleep(0.1)


async def _run_until_final(
    pool: asyncpg.Pool,
    launcher: LocalLauncher,
    db_url: str,
    overrides: dict[str, object] | None = None,
) -> jobs.Job:
    """One job run by a scheduler (quick retries and polls; ``overrides`` on top) until
    it reaches a terminal state."""
    cfg = settings.load(
        settings.Scheduler,
        env={},
        overrides={"retry_base_delay": 0.05, "poll_interval": 0.1, "max_attempts": 3}
        | (overrides or {}),
    )
    queue = PostgresQueue(pool)
    job = await _queued_job(pool, queue, cfg.max_attempts)
    scheduler = Scheduler(cfg, pool, queue, launcher, db_url)
    async with _running(scheduler):
        current = await _final(pool, job.id)
    return current


async def _attempts(
    pool: asyncpg.Pool, job_id: uuid.UUID
) -> list[tuple[int, int | None, str | None]]:
    async with pool.acquire() as conn:
        return [(a.attempt, a.exit_code, a.reason) for a in await jobs.list_attempts(conn, job_id)]


async def test_crash_is_retried_then_fails_with_the_reason(pool: asyncpg.Pool, db_url: str) -> None:
    job = await _run_until_final(pool, _exits(1, 75, 137), db_url)
    assert job.status == JobStatus.FAILED and job.attempt == 3
    assert job.error is not None and job.error["code"] == "killed"
    assert "gave up after 3 attempts" in job.message
    assert await _attempts(pool, job.id) == [
        (1, 1, "infrastructure"),
        (2, 75, "transient"),
        (3, 137, "killed"),
    ]
    async with pool.acquire() as conn:
        types = [e.type for e in await jobs.events_after(conn, job.id, 0)]
    assert types == [
        "job.queued",
        "job.started",
        "job.retrying",
        "job.started",
        "job.retrying",
        "job.started",
        "job.failed",
    ]


async def test_permanent_exit_is_not_retried(pool: asyncpg.Pool, db_url: str) -> None:
    job = await _run_until_final(pool, _exits(2, 0, 0), db_url)
    assert job.status == JobStatus.FAILED and job.attempt == 1
    assert job.error is not None and job.error["code"] == "invalid_project"
    assert await _attempts(pool, job.id) == [(1, 2, "invalid_project")]


async def test_exit_zero_without_a_result_is_not_a_success(pool: asyncpg.Pool, db_url: str) -> None:
    job = await _run_until_final(pool, _exits(0), db_url)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and job.error["code"] == "no_result"


async def test_retry_then_success(pool: asyncpg.Pool, db_url: str) -> None:
    # The second attempt marks the job succeeded itself, as a real renderer does.
    script = (
        "import asyncio, sys, asyncpg, uuid\n"
        "from rendermill.common import db, jobs\n"
        "from rendermill.common.schemas import JobStatus\n"
        "a = int(sys.argv[sys.argv.index('--attempt') + 1])\n"
        "j = uuid.UUID(sys.argv[sys.argv.index('--job') + 1])\n"
        "async def main():\n"
        "    conn = await db.connect(sys.argv[1])\n"
        "    await jobs.finish(conn, j, JobStatus.SUCCEEDED, result={'ok': True})\n"
        "if a == 1: sys.exit(75)\n"
        "asyncio.run(main())\n"
    )
    job = await _run_until_final(
        pool, LocalLauncher((sys.executable, "-c", script, db_url)), db_url
    )
    assert job.status == JobStatus.SUCCEEDED and job.attempt == 2
    assert await _attempts(pool, job.id) == [(1, 75, "transient"), (2, 0, "ok")]


async def test_cancel_stops_the_running_render_and_is_not_retried(
    pool: asyncpg.Pool, db_url: str
) -> None:
    cfg = settings.load(settings.Scheduler, env={}, overrides={"poll_interval": 0.1})
    queue = PostgresQueue(pool)
    job = await _queued_job(pool, queue, cfg.max_attempts)
    # A render that would take a minute.
    launcher = LocalLauncher((sys.executable, "-c", "import time; time.sleep(60)"))
    scheduler = Scheduler(cfg, pool, queue, launcher, db_url)
    async with _running(scheduler):
        async with asyncio.timeout(30):
            while True:
                async with pool.acquire() as conn:
                    attempt = await jobs.get_attempt(conn, job.id, 1)
                if attempt is not None and attempt.task_id:
                    break
                await asyncio.sleep(0.1)
            async with pool.acquire() as conn:
                await jobs.finish(
                    conn,
                    job.id,
                    JobStatus.CANCELED,
                    expect=(JobStatus.RUNNING,),
                    message="canceled by the client",
                )
            canceled_at = asyncio.get_running_loop().time()
            while True:
                async with pool.acquire() as conn:
                    attempt = await jobs.get_attempt(conn, job.id, 1)
                if attempt is not None and attempt.finished_at is not None:
                    break
                await asyncio.sleep(0.1)
        took = asyncio.get_running_loop().time() - canceled_at
    # Within the cancel poll and the stop's grace, not after the minute.
    assert took < 10
    async with pool.acquire() as conn:
        final = await jobs.get(conn, job.id)
        remaining = await queue.depth()
    assert final.status == JobStatus.CANCELED and final.attempt == 1
    assert [a for a, _, _ in await _attempts(pool, job.id)] == [1]
    assert remaining[0] == 0


async def test_tenant_cap_holds_a_tenants_second_job_while_another_tenant_runs(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    cfg = settings.load(
        settings.Scheduler,
        env={},
        overrides={"poll_interval": 0.1, "concurrency": 2, "tenant_concurrency": 1},
    )
    queue = PostgresQueue(pool)
    a1 = await _queued_job(pool, queue, 1)
    async with pool.acquire() as conn:
        a2, _ = await jobs.create(
            conn, tenant_id=a1.tenant_id, project={}, output=schemas.OutputSpec(), media={}
        )
    await queue.send(schemas.QueueMessage(job_id=a2.id, attempt=1))
    b1 = await _queued_job(pool, queue, 1)
    # Each render records when it ran, then takes a second.
    script = (
        "import sys, time, pathlib\n"
        "job = sys.argv[sys.argv.index('--job') + 1]\n"
        "start = time.time(); time.sleep(1.0)\n"
        f"pathlib.Path({str(tmp_path)!r}, job).write_text(f'{{start}} {{time.time()}}')\n"
    )
    scheduler = Scheduler(cfg, pool, queue, LocalLauncher((sys.executable, "-c", script)), db_url)
    async with _running(scheduler):
        async with asyncio.timeout(40):
            while True:
                if len(list(tmp_path.iterdir())) == 3:
                    break
                await asyncio.sleep(0.1)
    ran = {
        job: tuple(map(float, (tmp_path / str(job)).read_text().split()))
        for job in (a1.id, a2.id, b1.id)
    }

    def overlap(x: uuid.UUID, y: uuid.UUID) -> bool:
        return ran[x][0] < ran[y][1] and ran[y][0] < ran[x][1]

    assert not overlap(a1.id, a2.id)  # never two of tenant A at once
    assert overlap(b1.id, a1.id) or overlap(b1.id, a2.id)  # B did not wait for A


async def _sqs_settings(endpoint: str) -> dict[str, str]:
    """Settings of a fresh SQS queue per tier on ``endpoint``."""
    name = f"sched-{uuid.uuid4().hex[:12]}"
    urls = {}
    async with aioboto3.Session().client(
        "sqs", region_name="us-east-1", endpoint_url=endpoint
    ) as c:
        for tier in schemas.Tier:
            urls[tier] = (await c.create_queue(QueueName=f"{name}-{tier.value}"))["QueueUrl"]
    return {
        "queue": "sqs",
        "sqs_queue_url": urls[schemas.Tier.NORMAL],
        "sqs_queue_url_high": urls[schemas.Tier.HIGH],
        "sqs_queue_url_low": urls[schemas.Tier.LOW],
        "aws_endpoint_url": endpoint,
        "aws_region": "us-east-1",
    }


@pytest.mark.parametrize("kind", ["postgres", "sqs"])
async def test_one_slot_launches_a_mixed_backlog_higher_tiers_first(
    pool: asyncpg.Pool, db_url: str, request: pytest.FixtureRequest, kind: str
) -> None:
    overrides: dict[str, object] = {"poll_interval": 0.1, "concurrency": 1}
    if kind == "sqs":
        overrides.update(await _sqs_settings(request.getfixturevalue("moto_url")))
    cfg = settings.load(settings.Scheduler, env={}, overrides=overrides)
    high, normal, low = schemas.Tier.HIGH, schemas.Tier.NORMAL, schemas.Tier.LOW
    async with contextlib.AsyncExitStack() as stack:
        queue = await stack.enter_async_context(open_queue(cfg, pool))
        backlog = [
            await _queued_job(pool, queue, 1, tier)
            for tier in (low, normal, high, low, normal, high, normal)
        ]
        scheduler = Scheduler(cfg, pool, queue, _exits(0), db_url)
        stop = asyncio.Event()
        sup = await stack.enter_async_context(lifecycle.supervised(stop, grace=5))
        runner = asyncio.create_task(scheduler.run(stop, sup))
        try:
            async with asyncio.timeout(60):
                while True:
                    async with pool.acquire() as conn:
                        done = [(await jobs.get(conn, j.id)).status.terminal for j in backlog]
                    if all(done):
                        break
                    await asyncio.sleep(0.2)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    async with pool.acquire() as conn:
        started = {j.id: (await jobs.list_attempts(conn, j.id))[0].started_at for j in backlog}
    launched = sorted(backlog, key=lambda j: started[j.id])
    assert [j.id for j in launched] == [backlog[i].id for i in (2, 5, 1, 4, 6, 0, 3)]
    assert [j.tier for j in launched] == [high, high, normal, normal, normal, low, low]


async def test_retry_and_tenant_deferral_keep_the_tier(pool: asyncpg.Pool, db_url: str) -> None:
    """A retried attempt goes back in the job's tier; a job held back by its tenant's cap
    goes back in its tier and keeps the time it joined the queue."""
    cfg = settings.load(
        settings.Scheduler,
        env={},
        overrides={
            "poll_interval": 0.1,
            "concurrency": 2,
            "tenant_concurrency": 1,
            "retry_base_delay": 60.0,  # the retry waits on the queue for the test to see
            "drain_seconds": 0.5,
        },
    )
    queue = PostgresQueue(pool)
    failing = await _queued_job(pool, queue, 2, schemas.Tier.LOW)
    # Two high-tier jobs of one tenant: one renders at length, the other is held back.
    one = await _queued_job(pool, queue, 1, schemas.Tier.HIGH)
    two = await _queued_job(pool, queue, 1, schemas.Tier.HIGH, tenant_id=one.tenant_id)
    first_queued_at = {
        r["job_id"]: r["queued_at"]
        for r in await pool.fetch("SELECT body->>'job_id' AS job_id, queued_at FROM queue_messages")
    }
    script = (
        "import sys, time\n"
        "job = sys.argv[sys.argv.index('--job') + 1]\n"
        f"if job == {str(failing.id)!r}: sys.exit(75)\n"
        "time.sleep(30)\n"
    )
    scheduler = Scheduler(cfg, pool, queue, LocalLauncher((sys.executable, "-c", script)), db_url)

    async def messages(*job_ids: uuid.UUID) -> list[asyncpg.Record]:
        return list(
            await pool.fetch(
                "SELECT body, priority, queued_at, created_at FROM queue_messages"
                " WHERE body->>'job_id' = ANY($1::text[])",
                [str(j) for j in job_ids],
            )
        )

    async with _running(scheduler):
        async with asyncio.timeout(30):
            while True:
                retry = [m for m in await messages(failing.id) if m["body"]["attempt"] == 2]
                deferred = [
                    m
                    for m in await messages(one.id, two.id)
                    if m["created_at"] > first_queued_at[m["body"]["job_id"]]
                ]
                if retry and deferred:
                    break
                await asyncio.sleep(0.1)
    assert retry[0]["body"]["tier"] == "low" and retry[0]["priority"] == -1
    assert deferred[0]["body"]["tier"] == "high" and deferred[0]["priority"] == 1
    assert deferred[0]["queued_at"] == first_queued_at[deferred[0]["body"]["job_id"]]


async def test_restarted_scheduler_watches_the_heartbeat_of_a_process_it_cannot_follow(
    pool: asyncpg.Pool, db_url: str
) -> None:
    cfg = settings.load(
        settings.Scheduler,
        env={},
        overrides={"retry_base_delay": 0.05, "poll_interval": 0.1, "max_attempts": 2},
    )
    queue = PostgresQueue(pool)
    job = await _queued_job(pool, queue, cfg.max_attempts)
    # An earlier scheduler started attempt 1 as a local process, and both died long ago:
    # no launcher can wait for that process, and its heartbeat has stopped.
    async with pool.acquire() as conn:
        await jobs.insert_attempt(conn, job.id, 1, "local")
        await jobs.start_attempt(conn, job.id, 1)
        await jobs.set_attempt_task(conn, job.id, 1, "pid-999999")
        await conn.execute(
            "UPDATE job_attempts SET heartbeat_at = now() - interval '1 hour' WHERE job_id = $1",
            job.id,
        )
    scheduler = Scheduler(cfg, pool, queue, _exits(0, 0), db_url)
    async with _running(scheduler) as sup:
        current = await _final(pool, job.id)
    assert sup.failed is None
    # The lost attempt counts as transient; the next one ran (and, as exit 0 with no
    # result, failed the job).
    assert await _attempts(pool, job.id) == [(1, 75, "transient"), (2, 0, "ok")]
    assert current.error is not None and current.error["code"] == "no_result"


class _NoRoomAtFirst(LocalLauncher):
    """A platform that has no capacity for the first ``refusals`` launches, as a Fargate
    cluster answering RunTask with RESOURCE:FARGATE failures."""

    def __init__(self, refusals: int, command: Sequence[str]) -> None:
        super().__init__(command)
        self.refusals = refusals

    async def launch(
        self, job_id: str, attempt: int, env: Mapping[str, str], *, size: int = 0
    ) -> str:
        if self.refusals > 0:
            self.refusals -= 1
            raise errors.RetryLater("RESOURCE:FARGATE (no capacity)")
        return await super().launch(job_id, attempt, env, size=size)


async def test_launches_refused_for_capacity_wait_without_using_up_attempts(
    pool: asyncpg.Pool, db_url: str
) -> None:
    launcher = _NoRoomAtFirst(3, (sys.executable, "-c", "import sys; sys.exit(75)"))
    final = await _run_until_final(pool, launcher, db_url, {"max_attempts": 1})
    # Three refusals, then the one attempt the job has: it ran (and failed transiently,
    # with no attempt left).
    assert await _attempts(pool, final.id) == [
        (1, 75, "no_capacity"),
        (2, 75, "no_capacity"),
        (3, 75, "no_capacity"),
        (4, 75, "transient"),
    ]
    assert final.error is not None and final.error["code"] == "transient"
    assert "gave up after 1 attempts" in final.error["message"]


async def test_a_job_that_never_finds_capacity_fails_saying_so(
    pool: asyncpg.Pool, db_url: str
) -> None:
    launcher = _NoRoomAtFirst(10_000, (sys.executable, "-c", "pass"))
    final = await _run_until_final(pool, launcher, db_url, {"launch_wait_seconds": 0.5})
    assert final.status == JobStatus.FAILED and final.error is not None
    assert final.error["code"] == "no_capacity"
    assert final.error["message"].startswith("no capacity to start the render in ")
    attempts = await _attempts(pool, final.id)
    assert len(attempts) >= 2 and {a[2] for a in attempts} == {"no_capacity"}
