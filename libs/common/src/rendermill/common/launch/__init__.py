"""The launcher port: run one renderer attempt somewhere and report its exit code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Launcher(Protocol):
    name: str

    async def launch(self, job_id: str, attempt: int, env: Mapping[str, str]) -> str:
        """Start the attempt; returns a task id."""
        ...

    async def wait(self, task_id: str) -> int:
        """Wait for the task to end; returns its exit code."""
        ...

    async def stop(self, task_id: str, *, grace: float = 10.0) -> None:
        """Ask the task to stop (SIGTERM), killing it after ``grace`` seconds."""
        ...
