"""deploy/ecs agrees with the ECS launcher: the task definition's container and command,
what its environment carries (and what it leaves to the overrides), and the actions the
scheduler's policy grants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rendermill.common import settings
from rendermill.common.launch import ecs

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "ecs"


def _task_definition() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "renderer-task-definition.json").read_text())
    return loaded


def test_task_definition_runs_the_renderer_with_the_shared_settings() -> None:
    definition = _task_definition()
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert definition["networkMode"] == "awsvpc"
    (container,) = definition["containerDefinitions"]
    assert container["name"] == settings.Scheduler().ecs_container
    assert container["essential"] is True
    assert container["command"] == ["python", "-m", "rendermill.renderer"]
    names = {e["name"] for e in container["environment"]} | {
        s["name"] for s in container["secrets"]
    }
    assert {"RENDERMILL_DATABASE_URL", "RENDERMILL_STORE", "RENDERMILL_S3_BUCKET"} <= names
    assert not names & set(ecs.ATTEMPT_ENV)  # those come with each RunTask
    # The task's own size is the smallest class; attempts are sized by their overrides.
    smallest = ecs.parse_size_classes(settings.Scheduler().ecs_size_classes)[0]
    assert (definition["cpu"], definition["memory"]) == (str(smallest.cpu), str(smallest.memory))


def test_scheduler_policy_grants_what_the_launcher_calls() -> None:
    policy = json.loads((DEPLOY / "scheduler-iam-policy.json").read_text())
    granted: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        granted.update([actions] if isinstance(actions, str) else actions)
    assert granted == {
        "ecs:RunTask",
        "ecs:DescribeTasks",
        "ecs:StopTask",
        "ecs:TagResource",
        "iam:PassRole",
    }
    definition = _task_definition()
    (passing,) = [s for s in policy["Statement"] if s["Action"] == "iam:PassRole"]
    assert set(passing["Resource"]) == {
        definition["taskRoleArn"],
        definition["executionRoleArn"],
    }
