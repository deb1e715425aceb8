"""The launcher port: run one renderer attempt somewhere and report its exit code."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from rendermill.common import settings

# Exit codes of the renderer launch contract (DESIGN.md), the same whatever the launcher.
EXIT_OK = 0
# Infrastructure: anything unforeseen (retried, then dead-lettered).
EXIT_INFRA = 1
# Permanent: the project cannot be rendered as written / a source is unreadable.
EXIT_INVALID_PROJECT = 2
EXIT_BAD_MEDIA = 3
# Transient (EX_TEMPFAIL): retried with backoff.
EXIT_TRANSIENT = 75
# Killed, mostly for memory (SIGKILL's 128 + 9): retried with a larger size class.
EXIT_KILLED = 137
# The exit code a launcher reports for an attempt whose renderer never ran or whose end
# went unrecorded: the task failed to start (an image that cannot be pulled, no network),
# or disappeared. An infrastructure failure (retried, then dead-lettered); 125 as `docker
# run` reports a container it could not run.
EXIT_NOT_RUN = 125
# The exit code of a render stopped on request (SIGTERM's 128 + 15), whatever the process
# did on its way out.
EXIT_STOPPED = 143


class Launcher(Protocol):
    name: str

    async def launch(
        self, job_id: str, attempt: int, env: Mapping[str, str], *, size: int = 0
    ) -> str:
        """Start the attempt with the launch-contract environment ``env``; returns a task id.

        ``size`` picks the attempt's size class: 0 is the launcher's smallest, each step
        one larger (the scheduler adds one after every out-of-memory exit); a launcher
        clamps it to its largest, and one without size classes ignores it. Raises
        errors.RetryLater when the platform cannot start a task now (capacity), and
        errors.InvalidInput when the launcher's settings are wrong.
        """
        ...

    async def wait(self, task_id: str) -> int:
        """Wait for the task to end; returns its exit code.

        Raises errors.NotFound when this launcher cannot follow ``task_id`` (a local
        process started by an earlier scheduler, or a task of another launcher).
        """
        ...

    async def stop(self, task_id: str, *, grace: float = 10.0, reason: str = "") -> None:
        """Ask the task to stop (SIGTERM), killing it after ``grace`` seconds; ``reason``
        says why, where the platform records it. Raises errors.RetryLater when the
        request could not be made now, errors.InvalidInput when the platform refuses it
        (a setting or a permission is wrong)."""
        ...


@contextlib.asynccontextmanager
async def open_launcher(cfg: settings.Scheduler) -> AsyncIterator[Launcher]:
    """The launcher ``cfg.launcher`` names: renderer subprocesses on this machine, or
    Fargate tasks on the ECS cluster the ``ecs_*`` settings describe. Raises InvalidInput,
    naming the variable, when an ECS setting is missing or wrong."""
    if cfg.launcher == "ecs":
        from rendermill.common.launch.ecs import EcsConfig, EcsLauncher  # loads aioboto3

        config = EcsConfig.from_settings(cfg)
        async with EcsLauncher.open(
            config, region=cfg.aws_region, endpoint_url=cfg.aws_endpoint_url
        ) as launcher:
            yield launcher
        return
    from rendermill.common.launch.local import LocalLauncher

    yield LocalLauncher()
