"""The ECS launcher's rules without AWS: exit codes read off DescribeTasks answers (shaped
as AWS documents them), RunTask answers and requests, size classes and settings."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from rendermill.common import errors, settings
from rendermill.common.launch import ecs

ACCOUNT = "arn:aws:ecs:us-east-1:123456789012"
ARN = f"{ACCOUNT}:task/render/0f3b0a5c1e5f4b2c9a7d1e2f3a4b5c6d"
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def _container(name: str = "renderer", **fields: Any) -> dict[str, Any]:
    return {
        "containerArn": f"arn:aws:ecs:us-east-1:123456789012:container/render/{name}",
        "taskArn": ARN,
        "name": name,
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/rendermill-renderer:1.4",
        "lastStatus": "STOPPED",
        "networkInterfaces": [{"attachmentId": "a1", "privateIpv4Address": "10.0.1.17"}],
        "healthStatus": "UNKNOWN",
        "cpu": "1024",
        "memory": "2048",
        **fields,
    }


def _task(*containers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """One task of a DescribeTasks answer, stopped unless ``lastStatus`` says otherwise."""
    return {
        "attachments": [{"id": "a1", "type": "ElasticNetworkInterface", "status": "DELETED"}],
        "availabilityZone": "us-east-1a",
        "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/render",
        "containers": list(containers),
        "cpu": "1024",
        "memory": "2048",
        "createdAt": NOW,
        "desiredStatus": "STOPPED",
        "group": "family:rendermill-renderer",
        "lastStatus": "STOPPED",
        "launchType": "FARGATE",
        "platformVersion": "1.4.0",
        "startedBy": "rendermill",
        "stoppingAt": NOW,
        "stoppedAt": NOW,
        "taskArn": ARN,
        "taskDefinitionArn": f"{ACCOUNT}:task-definition/rendermill-renderer:3",
        **fields,
    }


EXITED = {
    "stopCode": "EssentialContainerExited",
    "stoppedReason": "Essential container in task exited",
}


@pytest.mark.parametrize(
    ("task", "code"),
    [
        pytest.param(_task(_container(exitCode=0), **EXITED), 0, id="done"),
        pytest.param(_task(_container(exitCode=2), **EXITED), 2, id="invalid-project"),
        pytest.param(_task(_container(exitCode=3), **EXITED), 3, id="bad-media"),
        pytest.param(_task(_container(exitCode=75), **EXITED), 75, id="transient"),
        pytest.param(_task(_container(exitCode=1), **EXITED), 1, id="crash"),
        pytest.param(
            _task(
                _container(
                    exitCode=137, reason="OutOfMemoryError: Container killed due to memory usage"
                ),
                **EXITED,
            ),
            137,
            id="out-of-memory",
        ),
        pytest.param(
            # Killed for memory with no exit code recorded: still out of memory.
            _task(
                _container(reason="OutOfMemoryError: Container killed due to memory usage"),
                **EXITED,
            ),
            137,
            id="out-of-memory-no-code",
        ),
        pytest.param(
            # A sidecar's memory counts against the same task size.
            _task(
                _container(exitCode=143),
                _container(
                    "log-router",
                    exitCode=137,
                    reason="OutOfMemoryError: Container killed due to memory usage",
                ),
                **EXITED,
            ),
            137,
            id="sidecar-out-of-memory",
        ),
        pytest.param(
            _task(
                _container(exitCode=143),
                stopCode="UserInitiated",
                stoppedReason="Task stopped by user",
            ),
            143,
            id="stopped-by-user",
        ),
        pytest.param(
            # Killed after the stop timeout: a stop, not an out-of-memory kill.
            _task(
                _container(exitCode=137),
                stopCode="UserInitiated",
                stoppedReason="rendermill scheduler: the job was canceled",
            ),
            143,
            id="stopped-then-killed",
        ),
        pytest.param(
            _task(
                _container(exitCode=0),
                stopCode="UserInitiated",
                stoppedReason="rendermill scheduler: the scheduler stopped",
            ),
            0,
            id="stopped-after-finishing",
        ),
        pytest.param(
            # Stopped by this launcher, the container never reported (no stopCode either).
            _task(
                _container(lastStatus="PENDING", exitCode=0),
                stoppedReason="rendermill scheduler: the job was canceled",
            ),
            143,
            id="stopped-by-the-scheduler",
        ),
        pytest.param(
            _task(
                _container(exitCode=137),
                stopCode="SpotInterruption",
                stoppedReason="Your Spot Task was interrupted.",
            ),
            75,
            id="spot-interruption",
        ),
        pytest.param(
            _task(
                _container(exitCode=143),
                stopCode="TerminationNotice",
                stoppedReason="Task retired: underlying infrastructure maintenance",
            ),
            75,
            id="task-retirement",
        ),
        pytest.param(
            _task(
                _container(
                    reason="CannotPullContainerError: pull image manifest has been retried"
                    " 5 time(s): failed to resolve ref"
                ),
                stopCode="TaskFailedToStart",
                stoppedReason="CannotPullContainerError: pull image manifest has been retried"
                " 5 time(s)",
            ),
            125,
            id="image-pull-failure",
        ),
        pytest.param(
            _task(
                _container(lastStatus="PENDING"),
                stopCode="TaskFailedToStart",
                stoppedReason="ResourceInitializationError: unable to pull secrets or registry"
                " auth",
            ),
            125,
            id="secrets-failure",
        ),
        pytest.param(
            _task(_container("something-else", exitCode=0), **EXITED),
            125,
            id="no-renderer-container",
        ),
    ],
)
def test_exit_code_of_a_stopped_task(task: dict[str, Any], code: int) -> None:
    assert ecs.exit_code(task, "renderer") == code


@pytest.mark.parametrize("status", ["PROVISIONING", "PENDING", "RUNNING", "DEPROVISIONING"])
def test_a_task_that_has_not_stopped_has_no_exit_code(status: str) -> None:
    task = _task(_container(lastStatus="RUNNING"), lastStatus=status, desiredStatus="RUNNING")
    assert ecs.exit_code(task, "renderer") is None


def test_run_task_answer_gives_the_arn_or_a_transient_error() -> None:
    assert ecs.started_task({"tasks": [_task(lastStatus="PROVISIONING")], "failures": []}) == ARN
    answer = {
        "tasks": [],
        "failures": [
            {
                "arn": "arn:aws:ecs:us-east-1:123456789012:cluster/render",
                "reason": "Capacity is unavailable at this time. Please try again later or in"
                " a different availability zone",
            }
        ],
    }
    with pytest.raises(errors.RetryLater, match="Capacity is unavailable") as caught:
        ecs.started_task(answer)
    assert caught.value.detail == answer["failures"]
    with pytest.raises(errors.RetryLater, match=r"RESOURCE:MEMORY \(too big\)"):
        ecs.started_task(
            {"tasks": [], "failures": [{"reason": "RESOURCE:MEMORY", "detail": "too big"}]}
        )


def _config(**fields: Any) -> ecs.EcsConfig:
    base: dict[str, Any] = {
        "cluster": "render",
        "task_definition": "rendermill-renderer",
        "subnets": ("subnet-0a1b2c3d",),
    }
    return ecs.EcsConfig(**{**base, **fields})


def test_run_task_request_carries_only_the_attempts_own_variables() -> None:
    config = _config(security_groups=("sg-0123",), assign_public_ip=True)
    env = {
        "RENDERMILL_DATABASE_URL": "postgresql://rendermill:secret@db/rendermill",
        "RENDERMILL_HOME": ".rendermill",
        "RENDERMILL_JOB_ID": "9aaf0000-0000-0000-0000-000000000000",
        "RENDERMILL_ATTEMPT": "2",
        "TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    size = ecs.SizeClass("medium", 2048, 4096)
    request = ecs.run_task_request(config, env["RENDERMILL_JOB_ID"], 2, env, size)
    (override,) = request["overrides"]["containerOverrides"]
    assert {e["name"]: e["value"] for e in override["environment"]} == {
        **{k: env[k] for k in ("RENDERMILL_JOB_ID", "RENDERMILL_ATTEMPT", "TRACEPARENT")},
        # The render sizes its threads by the task's vCPUs (2048 CPU units).
        "RENDERMILL_CPUS": "2",
    }
    assert (override["name"], override["cpu"], override["memory"]) == ("renderer", 2048, 4096)
    assert (request["overrides"]["cpu"], request["overrides"]["memory"]) == ("2048", "4096")
    assert request["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": ["subnet-0a1b2c3d"],
            "securityGroups": ["sg-0123"],
            "assignPublicIp": "ENABLED",
        }
    }
    assert len(request["clientToken"]) <= 64
    assert "secret" not in repr(request)


def test_size_classes_parse_check_and_clamp() -> None:
    defaults = ecs.parse_size_classes(settings.Scheduler().ecs_size_classes)
    assert defaults == ecs.EcsConfig(cluster="c", task_definition="t", subnets=()).size_classes
    assert [c.name for c in defaults] == ["small", "medium", "large"]
    assert [ecs.pick_size(defaults, step).name for step in (-1, 0, 1, 2, 3, 9)] == [
        "small",
        "small",
        "medium",
        "large",
        "large",
        "large",
    ]
    assert ecs.parse_size_classes(" tiny=256/512 , huge=16384/122880 ") == (
        ecs.SizeClass("tiny", 256, 512),
        ecs.SizeClass("huge", 16384, 122880),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("small=1024", "is not NAME=CPU/MEMORY"),
        ("=1024/2048", "is not NAME=CPU/MEMORY"),
        ("small=1vCPU/2GB", "whole numbers"),
        ("small=1000/2048", "no 1000 CPU size"),
        ("small=1024/1024", "2048-8192 MiB of memory in steps of 1024"),
        ("small=2048/8192,medium=4096/8192", "no more memory than 'small'"),
        ("a=1024/2048,a=2048/4096", "appears twice"),
    ],
)
def test_bad_size_classes_name_the_variable(text: str, message: str) -> None:
    with pytest.raises(errors.InvalidInput, match="RENDERMILL_ECS_SIZE_CLASSES") as caught:
        ecs.parse_size_classes(text)
    assert message in caught.value.message


def _scheduler_settings(**env: str) -> settings.Scheduler:
    return settings.load(settings.Scheduler, env={"RENDERMILL_LAUNCHER": "ecs", **env})


def test_ecs_settings_are_read_and_checked() -> None:
    cfg = _scheduler_settings(
        RENDERMILL_ECS_CLUSTER="render",
        RENDERMILL_ECS_TASK_DEFINITION="rendermill-renderer:3",
        RENDERMILL_ECS_SUBNETS="subnet-0a1b, subnet-0c2d",
        RENDERMILL_ECS_SECURITY_GROUPS="sg-01",
        RENDERMILL_ECS_ASSIGN_PUBLIC_IP="true",
        RENDERMILL_ECS_SIZE_CLASSES="small=512/1024,big=4096/16384",
        RENDERMILL_ECS_POLL_INTERVAL="2.5",
    )
    config = ecs.EcsConfig.from_settings(cfg)
    assert config.subnets == ("subnet-0a1b", "subnet-0c2d")
    assert config.security_groups == ("sg-01",)
    assert config.assign_public_ip and config.poll_interval == 2.5
    assert [c.name for c in config.size_classes] == ["small", "big"]
    # Scheduler-only: none of it travels to the renderer.
    assert not [k for k in settings.to_env(cfg) if k.startswith("RENDERMILL_ECS_")]


def test_missing_ecs_settings_are_all_named() -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        ecs.EcsConfig.from_settings(_scheduler_settings(RENDERMILL_ECS_CLUSTER="render"))
    assert "RENDERMILL_ECS_TASK_DEFINITION, RENDERMILL_ECS_SUBNETS" in caught.value.message
    assert "RENDERMILL_ECS_CLUSTER" not in caught.value.message


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RENDERMILL_ECS_SUBNETS": "sg-01"}, "RENDERMILL_ECS_SUBNETS: 'sg-01' is not a subnet-"),
        (
            {"RENDERMILL_ECS_SECURITY_GROUPS": "subnet-01"},
            "RENDERMILL_ECS_SECURITY_GROUPS: 'subnet-01' is not a sg-",
        ),
        (
            {"RENDERMILL_ECS_POLL_INTERVAL": "0"},
            "RENDERMILL_ECS_POLL_INTERVAL must be a positive number",
        ),
        ({"RENDERMILL_ECS_CONTAINER": " "}, "RENDERMILL_ECS_CONTAINER is empty"),
    ],
)
def test_wrong_ecs_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    base = {
        "RENDERMILL_ECS_CLUSTER": "render",
        "RENDERMILL_ECS_TASK_DEFINITION": "rendermill-renderer",
        "RENDERMILL_ECS_SUBNETS": "subnet-01",
    }
    with pytest.raises(errors.InvalidInput) as caught:
        ecs.EcsConfig.from_settings(_scheduler_settings(**{**base, **env}))
    assert message in caught.value.message
