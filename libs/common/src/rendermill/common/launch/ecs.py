"""The ECS launcher (aioboto3): one AWS Fargate task per attempt, through RunTask,
DescribeTasks and StopTask.

The task definition names the renderer image and carries what every attempt shares: the
database and store settings (the DSN best as a ``secrets`` entry). Each RunTask adds only
the attempt's own variables as container overrides (``RENDERMILL_JOB_ID``,
``RENDERMILL_ATTEMPT``, ``TRACEPARENT``): never the project, and never the scheduler's
own settings or credentials, which would show in every DescribeTasks answer. The
overrides also set the task's and the container's cpu and memory to the attempt's size
class; the scheduler asks for a larger one after each out-of-memory exit.

A task is followed by its ARN alone, so a restarted scheduler can wait for, and stop, a
task an earlier one started. One poller describes every waited-for task, up to 100 per
DescribeTasks call, so the request rate does not grow with the number of renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aioboto3
import botocore.exceptions
import msgspec

from rendermill.common import errors, logging, settings
from rendermill.common.launch import EXIT_KILLED, EXIT_NOT_RUN, EXIT_STOPPED, EXIT_TRANSIENT

log = logging.get(__name__)

# ECS puts this in a container's reason when the kernel killed it for its memory limit:
# "OutOfMemoryError: Container killed due to memory usage".
OOM_MARK = "OutOfMemoryError"
# Every StopTask reason this launcher gives starts so; a stopped task's stoppedReason then
# says the scheduler stopped it, even to a scheduler that restarted since.
STOP_REASON_PREFIX = "rendermill scheduler: "
STARTED_BY = "rendermill"
# The variables of the launch contract that differ per attempt; the rest (database and
# store settings) belong in the task definition.
ATTEMPT_ENV = ("RENDERMILL_JOB_ID", "RENDERMILL_ATTEMPT", "TRACEPARENT")
# DescribeTasks takes at most 100 tasks per call, and is eventually consistent: a task
# just started may be reported MISSING for a moment, so it takes this many answers in a
# row without it before a task counts as gone.
_DESCRIBE_BATCH = 100
_MISSING_ANSWERS = 3
_TASK_ARN = re.compile(r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task/\S+$")
_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# Fargate's task sizes: memory (MiB) allowed for each cpu (CPU units, 1024 per vCPU).
_FARGATE_MEMORY: dict[int, range] = {
    256: range(512, 2049, 512),
    512: range(1024, 4097, 1024),
    1024: range(2048, 8193, 1024),
    2048: range(4096, 16385, 1024),
    4096: range(8192, 30721, 1024),
    8192: range(16384, 61441, 4096),
    16384: range(32768, 122881, 8192),
}
_SIZES_VAR = "RENDERMILL_ECS_SIZE_CLASSES"


class SizeClass(msgspec.Struct, frozen=True):
    """A Fargate task size: ``cpu`` in CPU units (1024 per vCPU), ``memory`` in MiB."""

    name: str
    cpu: int
    memory: int


class EcsConfig(msgspec.Struct, frozen=True, kw_only=True):
    cluster: str
    task_definition: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...] = ()
    assign_public_ip: bool = False
    container: str = "renderer"
    size_classes: tuple[SizeClass, ...] = (
        SizeClass("small", 1024, 2048),
        SizeClass("medium", 2048, 4096),
        SizeClass("large", 4096, 8192),
    )
    poll_interval: float = 5.0

    @classmethod
    def from_settings(cls, cfg: settings.Scheduler) -> EcsConfig:
        """The ``RENDERMILL_ECS_*`` settings, checked. Raises errors.InvalidInput naming
        every required variable that is unset, or the variable whose value is wrong."""
        required = {
            "RENDERMILL_ECS_CLUSTER": cfg.ecs_cluster,
            "RENDERMILL_ECS_TASK_DEFINITION": cfg.ecs_task_definition,
            "RENDERMILL_ECS_SUBNETS": cfg.ecs_subnets,
        }
        if missing := [name for name, value in required.items() if not value.strip()]:
            raise errors.InvalidInput(
                f"RENDERMILL_LAUNCHER=ecs needs {', '.join(missing)}: the ECS cluster, the"
                " renderer's task definition, and the subnets its tasks run in"
            )
        if not cfg.ecs_container.strip():
            raise errors.InvalidInput(
                "RENDERMILL_ECS_CONTAINER is empty: set it to the name of the renderer's"
                " container in the task definition"
            )
        if not cfg.ecs_poll_interval > 0:
            raise errors.InvalidInput(
                f"RENDERMILL_ECS_POLL_INTERVAL must be a positive number of seconds,"
                f" got {cfg.ecs_poll_interval}"
            )
        return cls(
            cluster=cfg.ecs_cluster.strip(),
            task_definition=cfg.ecs_task_definition.strip(),
            subnets=_ids(cfg.ecs_subnets, "RENDERMILL_ECS_SUBNETS", "subnet-"),
            security_groups=_ids(cfg.ecs_security_groups, "RENDERMILL_ECS_SECURITY_GROUPS", "sg-"),
            assign_public_ip=cfg.ecs_assign_public_ip,
            container=cfg.ecs_container.strip(),
            size_classes=parse_size_classes(cfg.ecs_size_classes),
            poll_interval=cfg.ecs_poll_interval,
        )


def _ids(text: str, var: str, prefix: str) -> tuple[str, ...]:
    ids = tuple(part.strip() for part in text.split(",") if part.strip())
    if wrong := [i for i in ids if not i.startswith(prefix)]:
        raise errors.InvalidInput(
            f"{var}: {', '.join(map(repr, wrong))} is not a {prefix}… id;"
            f" give comma-separated ids such as {prefix}0123456789abcdef0"
        )
    return ids


def parse_size_classes(text: str) -> tuple[SizeClass, ...]:
    """``small=1024/2048,medium=2048/4096,…`` (NAME=CPU/MEMORY, smallest first) as size
    classes. Raises errors.InvalidInput naming RENDERMILL_ECS_SIZE_CLASSES when an entry
    is malformed, is not a Fargate task size, or is not larger than the one before."""
    usage = "give NAME=CPU/MEMORY entries, smallest first, e.g. small=1024/2048,medium=2048/4096"
    classes: list[SizeClass] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, eq, size = entry.partition("=")
        cpu_text, slash, memory_text = size.partition("/")
        if not (eq and slash and name.strip()):
            raise errors.InvalidInput(f"{_SIZES_VAR}: {entry!r} is not NAME=CPU/MEMORY; {usage}")
        try:
            cpu, memory = int(cpu_text), int(memory_text)
        except ValueError:
            raise errors.InvalidInput(
                f"{_SIZES_VAR}: {entry!r}: CPU (CPU units, 1024 per vCPU) and MEMORY (MiB)"
                " are whole numbers"
            ) from None
        allowed = _FARGATE_MEMORY.get(cpu)
        if allowed is None:
            raise errors.InvalidInput(
                f"{_SIZES_VAR}: {entry!r}: Fargate has no {cpu} CPU size;"
                f" CPU is one of {', '.join(map(str, _FARGATE_MEMORY))} (1024 per vCPU)"
            )
        if memory not in allowed:
            raise errors.InvalidInput(
                f"{_SIZES_VAR}: {entry!r}: with {cpu} CPU units Fargate takes"
                f" {allowed.start}-{allowed.stop - 1} MiB of memory in steps of {allowed.step}"
            )
        if classes and memory <= classes[-1].memory:
            raise errors.InvalidInput(
                f"{_SIZES_VAR}: {entry!r} has no more memory than {classes[-1].name!r}"
                " before it: list the classes smallest first, each larger than the last"
            )
        if any(c.name == name.strip() for c in classes):
            raise errors.InvalidInput(f"{_SIZES_VAR}: the name {name.strip()!r} appears twice")
        classes.append(SizeClass(name.strip(), cpu, memory))
    if not classes:
        raise errors.InvalidInput(f"{_SIZES_VAR} is empty; {usage}")
    return tuple(classes)


def pick_size(classes: Sequence[SizeClass], size: int) -> SizeClass:
    """The size class for step ``size``: 0 the smallest, clamped to the largest."""
    return classes[min(max(size, 0), len(classes) - 1)]


def run_task_request(
    config: EcsConfig, job_id: str, attempt: int, env: Mapping[str, str], size: SizeClass
) -> dict[str, Any]:
    """The RunTask parameters of one attempt. Of ``env`` only the per-attempt variables
    travel (``ATTEMPT_ENV``); the job id and attempt come from the arguments, and the
    render's CPUs (``RENDERMILL_CPUS``, which size its threads) from the size class."""
    own = {
        "RENDERMILL_JOB_ID": job_id,
        "RENDERMILL_ATTEMPT": str(attempt),
        # A task's share of its host is a quota the renderer might not see.
        "RENDERMILL_CPUS": f"{size.cpu / 1024:g}",
    }
    environment = {**{k: env[k] for k in ATTEMPT_ENV if k in env}, **own}
    vpc: dict[str, Any] = {
        "subnets": list(config.subnets),
        "assignPublicIp": "ENABLED" if config.assign_public_ip else "DISABLED",
    }
    if config.security_groups:
        vpc["securityGroups"] = list(config.security_groups)
    return {
        "cluster": config.cluster,
        "taskDefinition": config.task_definition,
        "launchType": "FARGATE",
        "count": 1,
        "startedBy": STARTED_BY,
        # RunTask is idempotent on this token: a call retried after a timeout does not
        # start a second task for the same attempt.
        "clientToken": f"{job_id}/{attempt}"[:64],
        "networkConfiguration": {"awsvpcConfiguration": vpc},
        "overrides": {
            "cpu": str(size.cpu),
            "memory": str(size.memory),
            "containerOverrides": [
                {
                    "name": config.container,
                    "environment": [{"name": k, "value": v} for k, v in environment.items()],
                    # The container's memory is a hard limit of its own: it grows with
                    # the task's, or a larger task would be killed at the same size.
                    "cpu": size.cpu,
                    "memory": size.memory,
                }
            ],
        },
        "tags": [
            {"key": "rendermill:job-id", "value": job_id},
            {"key": "rendermill:attempt", "value": str(attempt)},
            {"key": "rendermill:size-class", "value": size.name},
        ],
    }


def started_task(response: Mapping[str, Any]) -> str:
    """The ARN of the task a RunTask answer started. Raises errors.RetryLater with ECS's
    reasons when it started none (no capacity, or another placement failure)."""
    tasks = response.get("tasks") or []
    if tasks:
        return str(tasks[0]["taskArn"])
    failures = response.get("failures") or []
    reasons = "; ".join(
        str(f.get("reason") or "unknown") + (f" ({f['detail']})" if f.get("detail") else "")
        for f in failures
    )
    raise errors.RetryLater(
        f"ECS started no task: {reasons or 'no task and no failure in the answer'}",
        delay=30.0,
        detail=list(failures),
    )


def exit_code(task: Mapping[str, Any], container: str) -> int | None:
    """The attempt's exit code from one task of a DescribeTasks answer; None while the
    task has not stopped. In order:

    - a container killed for its memory (``OutOfMemoryError`` in its reason): 137, so
      the next attempt gets a larger size class;
    - the renderer container exited 0: 0;
    - a stop on request (stopCode ``UserInitiated``, or a stoppedReason this launcher
      gave): 143, even if the container was then killed after its stop timeout;
    - a task the platform took back (Fargate Spot interruption, task retirement): 75;
    - a task that failed to start (an image that cannot be pulled, no network), or whose
      renderer container has no exit code: 125, an infrastructure failure;
    - otherwise the renderer container's exit code.
    """
    if task.get("lastStatus") != "STOPPED":
        return None
    containers: list[Mapping[str, Any]] = task.get("containers") or []
    if any(OOM_MARK in str(c.get("reason") or "") for c in containers):
        return EXIT_KILLED
    renderer = next((c for c in containers if c.get("name") == container), None)
    # Only a container that ran and stopped has an exit code worth reading.
    code = (
        renderer.get("exitCode") if renderer and renderer.get("lastStatus") == "STOPPED" else None
    )
    if code == 0:
        return 0
    stop_code = task.get("stopCode")
    reason = str(task.get("stoppedReason") or "")
    if stop_code == "UserInitiated" or reason.startswith(STOP_REASON_PREFIX):
        return EXIT_STOPPED
    if stop_code in ("SpotInterruption", "TerminationNotice"):
        return EXIT_TRANSIENT
    if stop_code == "TaskFailedToStart" or code is None:
        return EXIT_NOT_RUN
    return int(code)


class EcsLauncher:
    name = "ecs"

    def __init__(self, client: Any, config: EcsConfig) -> None:
        """``client``: an open aioboto3 ECS client (see :meth:`open`)."""
        self._client = client
        self._config = config
        # wait() callers by task ARN, and how many answers in a row lacked each task.
        self._waiters: dict[str, list[asyncio.Future[int]]] = {}
        self._unseen: dict[str, int] = {}
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, config: EcsConfig, *, region: str, endpoint_url: str | None = None
    ) -> AsyncIterator[EcsLauncher]:
        """A launcher with a client that lives as long as the context. Credentials come
        from the usual AWS sources (environment, profile, role)."""
        async with aioboto3.Session().client(
            "ecs", region_name=region, endpoint_url=endpoint_url
        ) as client:
            launcher = cls(client, config)
            try:
                yield launcher
            finally:
                await launcher._close()

    async def launch(
        self, job_id: str, attempt: int, env: Mapping[str, str], *, size: int = 0
    ) -> str:
        """RunTask for the attempt; returns the task's ARN. Raises errors.RetryLater when
        ECS cannot start it now, errors.InvalidInput when ECS refuses the request (a
        setting or a permission is wrong: the message says which)."""
        size_class = pick_size(self._config.size_classes, size)
        request = run_task_request(self._config, job_id, attempt, env, size_class)
        try:
            response = await self._client.run_task(**request)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, "RunTask") from exc
        arn = started_task(response)
        log.info(
            "ecs_task_started",
            job_id=job_id,
            attempt=attempt,
            task_arn=arn,
            size_class=size_class.name,
            cpu=size_class.cpu,
            memory=size_class.memory,
        )
        return arn

    async def wait(self, task_id: str) -> int:
        """Wait until the task has stopped; returns its exit code (see :func:`exit_code`),
        125 when ECS no longer knows the task. Works for any task of the cluster, started
        by this launcher or not. Raises errors.NotFound when ``task_id`` is not an ECS
        task ARN, errors.InvalidInput when ECS refuses to describe it."""
        if not _TASK_ARN.match(task_id):
            raise errors.NotFound(f"{task_id!r} is not an ECS task ARN")
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="ecs_poller")
        try:
            return await waiter
        finally:
            others = [w for w in self._waiters.get(task_id, []) if w is not waiter]
            if others:
                self._waiters[task_id] = others
            else:
                self._waiters.pop(task_id, None)
                self._unseen.pop(task_id, None)

    async def stop(self, task_id: str, *, grace: float = 10.0, reason: str = "") -> None:
        """StopTask with ``reason``: ECS sends SIGTERM and, after the container's
        ``stopTimeout`` (task definition; 30 s unless set), SIGKILL, so ``grace`` is the
        task definition's to give. Returns once ECS accepted the request; a task ECS no
        longer knows is left alone. Raises errors.RetryLater when the request failed for
        now, errors.InvalidInput when ECS refuses it."""
        text = (STOP_REASON_PREFIX + (reason or "stop requested"))[:255]
        try:
            await self._client.stop_task(cluster=self._config.cluster, task=task_id, reason=text)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            if _task_not_found(exc):
                log.info("ecs_stop_task_gone", task_arn=task_id)
                return
            raise self._error(exc, "StopTask") from exc
        log.info("ecs_task_stop_requested", task_arn=task_id, reason=reason)

    async def _poll(self) -> None:
        """Describe every waited-for task each poll interval until nobody waits."""
        try:
            while self._waiters:
                await asyncio.sleep(self._config.poll_interval)
                arns = list(self._waiters)
                for start in range(0, len(arns), _DESCRIBE_BATCH):
                    await self._describe(arns[start : start + _DESCRIBE_BATCH])
        except Exception as exc:
            # A fault here must not leave renders waiting for an answer that never comes.
            log.exception("ecs_poller_failed")
            for arn in list(self._waiters):
                self._settle(arn, exc)

    async def _describe(self, arns: list[str]) -> None:
        try:
            response = await self._client.describe_tasks(cluster=self._config.cluster, tasks=arns)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            error = self._error(exc, "DescribeTasks")
            if isinstance(error, errors.RetryLater):
                log.warning("ecs_describe_failed", error=error.message, tasks=len(arns))
                return
            for arn in arns:
                self._settle(arn, error)
            return
        found = {str(t.get("taskArn")): t for t in response.get("tasks") or []}
        failures = {str(f.get("arn")): f for f in response.get("failures") or []}
        for arn in arns:
            task = found.get(arn)
            if task is None:
                self._unseen[arn] = self._unseen.get(arn, 0) + 1
                if self._unseen[arn] >= _MISSING_ANSWERS:
                    failure = failures.get(arn, {})
                    log.error("ecs_task_missing", task_arn=arn, reason=failure.get("reason"))
                    self._settle(arn, EXIT_NOT_RUN)
                continue
            self._unseen.pop(arn, None)
            code = exit_code(task, self._config.container)
            if code is None:
                continue
            log.info(
                "ecs_task_stopped",
                task_arn=arn,
                exit_code=code,
                stop_code=task.get("stopCode"),
                stopped_reason=task.get("stoppedReason"),
                container_reasons=[c.get("reason") for c in task.get("containers") or []],
            )
            self._settle(arn, code)

    def _settle(self, arn: str, outcome: int | BaseException) -> None:
        for waiter in self._waiters.pop(arn, []):
            if waiter.done():
                continue
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        self._unseen.pop(arn, None)

    async def _close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for arn in list(self._waiters):
            for waiter in self._waiters.pop(arn):
                waiter.cancel()

    def _error(self, exc: Exception, action: str) -> errors.RendermillError:
        """An AWS error as the taxonomy has it: RetryLater when the same call may work
        later (throttling, ECS's own faults, the network), InvalidInput saying what to
        check otherwise."""
        if isinstance(exc, botocore.exceptions.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            message = str(err.get("Message", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                return errors.RetryLater(f"ECS {action} failed for now: {code}: {message}")
            if code == "ClusterNotFoundException":
                return errors.InvalidInput(
                    f"ECS {action}: cluster {self._config.cluster!r} not found in"
                    f" {self._client.meta.region_name}: check RENDERMILL_ECS_CLUSTER and"
                    " RENDERMILL_AWS_REGION"
                )
            if code in ("UnrecognizedClientException", "InvalidSignatureException"):
                return errors.InvalidInput(
                    f"ECS {action}: AWS did not accept the scheduler's credentials ({code}:"
                    f" {message}): check its AWS credentials, profile or role"
                )
            if code in ("AccessDeniedException", "AccessDenied"):
                return errors.InvalidInput(
                    f"ECS {action} was refused ({code}: {message}): the scheduler's IAM"
                    " identity needs ecs:RunTask, ecs:DescribeTasks, ecs:StopTask and"
                    " ecs:TagResource on the cluster's tasks, and iam:PassRole on the task"
                    " definition's task and execution roles"
                )
            return errors.InvalidInput(
                f"ECS {action} was refused ({code}: {message}): check"
                " RENDERMILL_ECS_TASK_DEFINITION, RENDERMILL_ECS_CONTAINER,"
                " RENDERMILL_ECS_SUBNETS, RENDERMILL_ECS_SECURITY_GROUPS and"
                " RENDERMILL_ECS_SIZE_CLASSES against the cluster"
            )
        if isinstance(
            exc,
            botocore.exceptions.NoCredentialsError
            | botocore.exceptions.PartialCredentialsError
            | botocore.exceptions.NoRegionError,
        ):
            return errors.InvalidInput(
                f"ECS {action}: {exc}: give the scheduler AWS credentials (environment,"
                " profile or role) and RENDERMILL_AWS_REGION"
            )
        if isinstance(exc, botocore.exceptions.ParamValidationError):
            return errors.InvalidInput(f"ECS {action}: {exc}: check the RENDERMILL_ECS_* settings")
        # Connection failures and timeouts.
        return errors.RetryLater(f"ECS {action} failed for now: {exc}")


def _task_not_found(exc: Exception) -> bool:
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    err = exc.response.get("Error", {})
    return err.get("Code") == "InvalidParameterException" and "not found" in str(
        err.get("Message", "")
    )
