"""The ECS launcher through the real aioboto3 client against moto in server mode on
127.0.0.1: RunTask as ECS records it, waiting, stopping, lost tasks and refused requests;
then the scheduler on it, with a real Postgres: a larger task after an out-of-memory
exit, a cancel that stops the task, and a restarted scheduler following a task by ARN.

moto's Fargate tasks never run a container: DescribeTasks moves a task one state on per
call until STOPPED with no exit code, unless the tests hold it in RUNNING (moto's state
manager, over its HTTP API) so that only a StopTask ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
import asyncpg
import botocore.config
import msgspec
import pytest
import pytest_asyncio

from rendermill.cli.stack import free_port
from rendermill.common import errors, jobs, lifecycle, schemas, settings, tenants
from rendermill.common.launch import EXIT_NOT_RUN, EXIT_STOPPED, Launcher, open_launcher
from rendermill.common.launch.ecs import STOP_REASON_PREFIX, EcsConfig, EcsLauncher
from rendermill.common.queue.postgres import PostgresQueue
from rendermill.common.schemas import JobStatus
from rendermill.scheduler.service import Scheduler

REGION = "us-east-1"
POLL = 0.05
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "ecs"


class Network(msgspec.Struct, frozen=True):
    vpc: str
    subnet: str
    security_group: str


@pytest_asyncio.fixture(scope="module")
async def network(moto_url: str) -> Network:
    """A VPC with DNS hostnames (moto's Fargate RunTask needs them), a subnet and a
    security group."""
    async with aioboto3.Session().client("ec2", region_name=REGION, endpoint_url=moto_url) as ec2:
        vpc = (await ec2.create_vpc(CidrBlock="10.20.0.0/16"))["Vpc"]["VpcId"]
        await ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = (await ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24"))["Subnet"][
            "SubnetId"
        ]
        group = (
            await ec2.create_security_group(
                GroupName="renderers", Description="rendermill renderers", VpcId=vpc
            )
        )["GroupId"]
    return Network(vpc, subnet, group)


async def task_transitions(endpoint: str, transition: dict[str, Any] | None) -> None:
    """Set (or with None, restore) how moto moves ECS tasks through their states."""
    body: dict[str, Any] = {"model_name": "ecs::task"}
    path = "unset-transition"
    if transition is not None:
        path, body["transition"] = "set-transition", transition
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{endpoint}/moto-api/state-manager/{path}", json=body) as resp,
    ):
        assert resp.status < 300, await resp.text()


@pytest_asyncio.fixture
async def config(moto_url: str, network: Network) -> AsyncIterator[EcsConfig]:
    """A fresh cluster with the renderer's task definition, tasks held in RUNNING until
    stopped, and the launcher's settings for them."""
    cluster = f"render-{uuid.uuid4().hex[:8]}"
    async with aioboto3.Session().client("ecs", region_name=REGION, endpoint_url=moto_url) as c:
        await c.create_cluster(clusterName=cluster)
        await c.register_task_definition(
            family="rendermill-renderer",
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="1024",
            memory="2048",
            containerDefinitions=[
                {
                    "name": "renderer",
                    "image": "rendermill-renderer:test",
                    "command": ["python", "-m", "rendermill.renderer"],
                    "essential": True,
                    "cpu": 1024,
                    "memory": 2048,
                }
            ],
        )
    await task_transitions(moto_url, {"progression": "manual", "times": 1_000_000})
    try:
        yield EcsConfig(
            cluster=cluster,
            task_definition="rendermill-renderer",
            subnets=(network.subnet,),
            security_groups=(network.security_group,),
            poll_interval=POLL,
        )
    finally:
        await task_transitions(moto_url, None)


@pytest_asyncio.fixture
async def launcher(moto_url: str, config: EcsConfig) -> AsyncIterator[EcsLauncher]:
    async with EcsLauncher.open(config, region=REGION, endpoint_url=moto_url) as opened:
        yield opened


async def describe(endpoint: str, cluster: str, arn: str) -> dict[str, Any]:
    async with aioboto3.Session().client("ecs", region_name=REGION, endpoint_url=endpoint) as c:
        answer = await c.describe_tasks(cluster=cluster, tasks=[arn], include=["TAGS"])
    (task,) = answer["tasks"]
    return dict(task)


def _env(job_id: str, attempt: int) -> dict[str, str]:
    """What the scheduler passes: its own settings too, which must stay behind."""
    return {
        "RENDERMILL_DATABASE_URL": "postgresql://rendermill:secret@db.internal/rendermill",
        "RENDERMILL_HOME": ".rendermill",
        "RENDERMILL_LAUNCHER": "ecs",
        "RENDERMILL_JOB_ID": job_id,
        "RENDERMILL_ATTEMPT": str(attempt),
        "TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }


async def test_run_task_as_ecs_records_it(
    launcher: EcsLauncher, config: EcsConfig, network: Network, moto_url: str
) -> None:
    job_id = str(uuid.uuid4())
    arn = await launcher.launch(job_id, 2, _env(job_id, 2), size=1)
    task = await describe(moto_url, config.cluster, arn)

    assert task["launchType"] == "FARGATE" and task["startedBy"] == "rendermill"
    assert task["taskDefinitionArn"].endswith(":task-definition/rendermill-renderer:1")
    overrides = task["overrides"]
    assert (overrides["cpu"], overrides["memory"]) == ("2048", "4096")  # medium
    (container,) = overrides["containerOverrides"]
    assert (container["name"], container["cpu"], container["memory"]) == ("renderer", 2048, 4096)
    assert {e["name"]: e["value"] for e in container["environment"]} == {
        "RENDERMILL_JOB_ID": job_id,
        "RENDERMILL_ATTEMPT": "2",
        "RENDERMILL_CPUS": "2",  # the medium class's 2048 CPU units
        "TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    assert {t["key"]: t["value"] for t in task["tags"]} == {
        "rendermill:job-id": job_id,
        "rendermill:attempt": "2",
        "rendermill:size-class": "medium",
    }
    # The task's network interface is in the subnet and security group of the settings.
    (attachment,) = task["attachments"]
    details = {d["name"]: d["value"] for d in attachment["details"]}
    assert details["subnetId"] == network.subnet
    async with aioboto3.Session().client("ec2", region_name=REGION, endpoint_url=moto_url) as ec2:
        (eni,) = (
            await ec2.describe_network_interfaces(
                NetworkInterfaceIds=[details["networkInterfaceId"]]
            )
        )["NetworkInterfaces"]
    assert [g["GroupId"] for g in eni["Groups"]] == [network.security_group]

    # Past the largest class, attempts stay at the largest.
    arn = await launcher.launch(job_id, 5, _env(job_id, 5), size=7)
    overrides = (await describe(moto_url, config.cluster, arn))["overrides"]
    assert (overrides["cpu"], overrides["memory"]) == ("4096", "8192")


async def test_stop_ends_the_wait_with_the_stopped_code(
    launcher: EcsLauncher, config: EcsConfig, moto_url: str
) -> None:
    job_id = str(uuid.uuid4())
    arns = [await launcher.launch(job_id, n, _env(job_id, n)) for n in (1, 2, 3)]
    # Several waits at once, one of them twice: one poller describes them all.
    waits = [asyncio.create_task(launcher.wait(arn)) for arn in [*arns, arns[0]]]
    await asyncio.sleep(POLL * 6)
    assert not any(w.done() for w in waits)  # still running

    for arn in arns:
        await launcher.stop(arn, reason="the job was canceled")
    async with asyncio.timeout(5):
        assert await asyncio.gather(*waits) == [EXIT_STOPPED] * 4
    task = await describe(moto_url, config.cluster, arns[0])
    assert task["lastStatus"] == "STOPPED"
    assert task["stoppedReason"] == STOP_REASON_PREFIX + "the job was canceled"


async def test_a_restarted_scheduler_waits_by_the_arn_alone(
    config: EcsConfig, moto_url: str
) -> None:
    job_id = str(uuid.uuid4())
    async with EcsLauncher.open(config, region=REGION, endpoint_url=moto_url) as first:
        arn = await first.launch(job_id, 1, _env(job_id, 1))
    async with EcsLauncher.open(config, region=REGION, endpoint_url=moto_url) as second:
        waiting = asyncio.create_task(second.wait(arn))
        await asyncio.sleep(POLL * 3)
        await second.stop(arn, reason="the renderer's heartbeat was lost")
        async with asyncio.timeout(5):
            assert await waiting == EXIT_STOPPED


async def test_a_task_that_stops_without_an_exit_code_is_an_infrastructure_failure(
    launcher: EcsLauncher, moto_url: str
) -> None:
    # moto's own progression: the task reaches STOPPED by itself, its container never ran.
    await task_transitions(moto_url, {"progression": "manual", "times": 1})
    job_id = str(uuid.uuid4())
    arn = await launcher.launch(job_id, 1, _env(job_id, 1))
    async with asyncio.timeout(5):
        assert await launcher.wait(arn) == EXIT_NOT_RUN


async def test_a_task_ecs_does_not_know_is_lost(launcher: EcsLauncher, config: EcsConfig) -> None:
    gone = f"arn:aws:ecs:{REGION}:123456789012:task/{config.cluster}/{uuid.uuid4().hex}"
    async with asyncio.timeout(5):
        assert await launcher.wait(gone) == EXIT_NOT_RUN
    # A task id of another launcher cannot be followed at all.
    with pytest.raises(errors.NotFound):
        await launcher.wait("pid-4242")


async def test_refused_requests_say_what_to_check(
    moto_url: str, config: EcsConfig, launcher: EcsLauncher
) -> None:
    job_id = str(uuid.uuid4())
    wrong_cluster = msgspec.structs.replace(config, cluster="no-such-cluster")
    async with EcsLauncher.open(wrong_cluster, region=REGION, endpoint_url=moto_url) as lost:
        with pytest.raises(errors.InvalidInput, match="RENDERMILL_ECS_CLUSTER") as caught:
            await lost.launch(job_id, 1, _env(job_id, 1))
    assert "'no-such-cluster' not found in us-east-1" in caught.value.message

    wrong_definition = msgspec.structs.replace(config, task_definition="no-such-renderer")
    async with EcsLauncher.open(wrong_definition, region=REGION, endpoint_url=moto_url) as bad:
        with pytest.raises(errors.InvalidInput, match="RENDERMILL_ECS_TASK_DEFINITION"):
            await bad.launch(job_id, 1, _env(job_id, 1))


async def test_unreachable_ecs_is_transient(config: EcsConfig) -> None:
    # Nothing listens there; one try, so that the test does not wait out botocore's retries.
    no_retries = botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=2)
    async with aioboto3.Session().client(
        "ecs",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=no_retries,
    ) as client:
        launcher = EcsLauncher(client, config)
        with pytest.raises(errors.RetryLater, match="ECS RunTask failed for now"):
            await launcher.launch(str(uuid.uuid4()), 1, {})
        with pytest.raises(errors.RetryLater, match="ECS StopTask failed for now"):
            await launcher.stop(f"arn:aws:ecs:{REGION}:123456789012:task/render/0f3b")


async def test_open_launcher_builds_it_from_the_settings(moto_url: str, config: EcsConfig) -> None:
    env = {
        "RENDERMILL_LAUNCHER": "ecs",
        "RENDERMILL_AWS_ENDPOINT_URL": moto_url,
        "RENDERMILL_ECS_CLUSTER": config.cluster,
        "RENDERMILL_ECS_TASK_DEFINITION": config.task_definition,
        "RENDERMILL_ECS_SUBNETS": ",".join(config.subnets),
        # Optional on AWS (the VPC's default group), required by moto.
        "RENDERMILL_ECS_SECURITY_GROUPS": ",".join(config.security_groups),
        "RENDERMILL_ECS_SIZE_CLASSES": "only=512/1024",
    }
    cfg = settings.load(settings.Scheduler, env=env)
    async with open_launcher(cfg) as launcher:
        assert launcher.name == "ecs"
        job_id = str(uuid.uuid4())
        arn = await launcher.launch(job_id, 1, _env(job_id, 1), size=3)
    overrides = (await describe(moto_url, config.cluster, arn))["overrides"]
    assert (overrides["cpu"], overrides["memory"]) == ("512", "1024")

    del env["RENDERMILL_ECS_SUBNETS"]
    with pytest.raises(errors.InvalidInput, match="needs RENDERMILL_ECS_SUBNETS"):
        async with open_launcher(settings.load(settings.Scheduler, env=env)):
            pass


def _scheduler_settings(moto_url: str, config: EcsConfig) -> settings.Scheduler:
    return settings.load(
        settings.Scheduler,
        env={
            "RENDERMILL_LAUNCHER": "ecs",
            "RENDERMILL_POLL_INTERVAL": "0.1",
            "RENDERMILL_AWS_ENDPOINT_URL": moto_url,
            "RENDERMILL_ECS_CLUSTER": config.cluster,
            "RENDERMILL_ECS_TASK_DEFINITION": config.task_definition,
            "RENDERMILL_ECS_SUBNETS": ",".join(config.subnets),
            "RENDERMILL_ECS_SECURITY_GROUPS": ",".join(config.security_groups),
            "RENDERMILL_ECS_POLL_INTERVAL": str(POLL),
        },
    )


async def _job(pool: asyncpg.Pool) -> jobs.Job:
    async with pool.acquire() as conn:
        tenant, _ = await tenants.create(conn, "t")
        job, _ = await jobs.create(
            conn, tenant_id=tenant.id, project={}, output=schemas.OutputSpec(), media={}
        )
    return job


async def _attempt_where(
    pool: asyncpg.Pool, job_id: uuid.UUID, attempt: int, *, finished: bool
) -> jobs.Attempt:
    """The attempt once it has a task id (and, with ``finished``, once it has ended)."""
    async with asyncio.timeout(20):
        while True:
            async with pool.acquire() as conn:
                att = await jobs.get_attempt(conn, job_id, attempt)
            if att is not None and att.task_id and (att.finished_at is not None or not finished):
                return att
            await asyncio.sleep(0.05)


async def _cancel(pool: asyncpg.Pool, job_id: uuid.UUID) -> None:
    async with pool.acquire() as conn:
        await jobs.finish(
            conn, job_id, JobStatus.CANCELED, expect=(JobStatus.RUNNING,), message="canceled"
        )


@contextlib.asynccontextmanager
async def _running(
    cfg: settings.Scheduler, pool: asyncpg.Pool, launcher: Launcher, db_url: str
) -> AsyncIterator[PostgresQueue]:
    """A scheduler on the Postgres queue and ``launcher`` while the context lasts."""
    queue = PostgresQueue(pool)
    stop = asyncio.Event()
    async with lifecycle.supervised(stop, grace=5) as sup:
        runner = asyncio.create_task(Scheduler(cfg, pool, queue, launcher, db_url).run(stop, sup))
        try:
            yield queue
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    assert sup.failed is None


async def test_scheduler_runs_a_larger_task_after_an_oom_and_stops_it_on_cancel(
    pool: asyncpg.Pool, db_url: str, moto_url: str, config: EcsConfig
) -> None:
    cfg = _scheduler_settings(moto_url, config)
    job = await _job(pool)
    # Its first attempt was killed for its memory: the second is due.
    async with pool.acquire() as conn:
        await jobs.insert_attempt(conn, job.id, 1, "ecs")
        await jobs.start_attempt(conn, job.id, 1)
        await jobs.finish_attempt(conn, job.id, 1, 137, "killed")
        await jobs.requeue(conn, job.id, 1, message="retrying", error={"code": "killed"})
    async with open_launcher(cfg) as launcher, _running(cfg, pool, launcher, db_url) as queue:
        await queue.send(schemas.QueueMessage(job_id=job.id, attempt=2))
        running = await _attempt_where(pool, job.id, 2, finished=False)
        assert running.task_id is not None
        task = await describe(moto_url, config.cluster, running.task_id)
        assert (task["overrides"]["cpu"], task["overrides"]["memory"]) == ("2048", "4096")
        (container,) = task["overrides"]["containerOverrides"]
        env = {e["name"]: e["value"] for e in container["environment"]}
        assert (env["RENDERMILL_JOB_ID"], env["RENDERMILL_ATTEMPT"]) == (str(job.id), "2")
        assert "RENDERMILL_DATABASE_URL" not in env

        await _cancel(pool, job.id)
        ended = await _attempt_where(pool, job.id, 2, finished=True)
    assert (ended.launcher, ended.task_id) == ("ecs", running.task_id)
    assert (ended.exit_code, ended.reason) == (EXIT_STOPPED, "terminated")
    async with pool.acquire() as conn:
        final = await jobs.get(conn, job.id)
    assert final.status == JobStatus.CANCELED and final.attempt == 2
    task = await describe(moto_url, config.cluster, running.task_id)
    assert task["lastStatus"] == "STOPPED"
    assert task["stoppedReason"] == STOP_REASON_PREFIX + "the job was canceled"


async def test_restarted_scheduler_follows_the_running_task_by_its_arn(
    pool: asyncpg.Pool, db_url: str, moto_url: str, config: EcsConfig
) -> None:
    cfg = _scheduler_settings(moto_url, config)
    job = await _job(pool)
    # An earlier scheduler started attempt 1 on ECS and died; its message comes back.
    async with EcsLauncher.open(config, region=REGION, endpoint_url=moto_url) as earlier:
        arn = await earlier.launch(str(job.id), 1, _env(str(job.id), 1))
    async with pool.acquire() as conn:
        await jobs.insert_attempt(conn, job.id, 1, "ecs")
        await jobs.start_attempt(conn, job.id, 1)
        await jobs.set_attempt_task(conn, job.id, 1, arn)
    async with open_launcher(cfg) as launcher, _running(cfg, pool, launcher, db_url) as queue:
        await queue.send(schemas.QueueMessage(job_id=job.id, attempt=1))
        await asyncio.sleep(0.5)  # adopted: followed, not launched again
        await _cancel(pool, job.id)
        ended = await _attempt_where(pool, job.id, 1, finished=True)
    assert (ended.task_id, ended.exit_code) == (arn, EXIT_STOPPED)
    async with pool.acquire() as conn:
        assert [a.attempt for a in await jobs.list_attempts(conn, job.id)] == [1]
    async with aioboto3.Session().client("ecs", region_name=REGION, endpoint_url=moto_url) as c:
        listed = await c.list_tasks(cluster=config.cluster, startedBy="rendermill")
    assert listed["taskArns"] == [arn]
    task = await describe(moto_url, config.cluster, arn)
    assert task["stoppedReason"] == STOP_REASON_PREFIX + "the job was canceled"


async def test_the_shipped_task_definition_registers_and_runs(
    moto_url: str, config: EcsConfig
) -> None:
    definition = json.loads((DEPLOY / "renderer-task-definition.json").read_text())
    async with aioboto3.Session().client("ecs", region_name=REGION, endpoint_url=moto_url) as c:
        # The client checks every field against the ECS API before sending.
        registered = (await c.register_task_definition(**definition))["taskDefinition"]
    shipped = msgspec.structs.replace(config, task_definition=registered["taskDefinitionArn"])
    async with EcsLauncher.open(shipped, region=REGION, endpoint_url=moto_url) as launcher:
        job_id = str(uuid.uuid4())
        arn = await launcher.launch(job_id, 1, _env(job_id, 1))
    task = await describe(moto_url, config.cluster, arn)
    assert task["taskDefinitionArn"] == registered["taskDefinitionArn"]
    assert task["overrides"]["containerOverrides"][0]["name"] == "renderer"
