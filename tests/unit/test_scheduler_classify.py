"""Exit codes of the renderer launch contract, the size class they lead to, and when a
render's heartbeat counts as lost."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from rendermill.common import jobs
from rendermill.scheduler.service import HeartbeatJudge, classify, size_step


@pytest.mark.parametrize(
    ("code", "reason", "retry"),
    [
        (2, "invalid_project", False),
        (3, "media_error", False),
        (75, "transient", True),
        (137, "killed", True),
        (143, "terminated", True),
        (125, "infrastructure", True),
        (1, "infrastructure", True),
        (255, "infrastructure", True),
    ],
)
def test_classify(code: int, reason: str, retry: bool) -> None:
    outcome = classify(code)
    assert (outcome.reason, outcome.retry) == (reason, retry)


@pytest.mark.parametrize(
    ("earlier", "step"),
    [
        ([], 0),
        ([75], 0),
        ([137], 1),
        ([137, 75], 1),  # a transient failure keeps the size reached
        ([137, 143, 137], 2),
        ([None, 1, 2], 0),
    ],
)
def test_each_out_of_memory_exit_asks_for_the_next_size(
    earlier: list[int | None], step: int
) -> None:
    assert size_step(earlier) == step


def _attempt_beaten(seconds_ago: float) -> jobs.Attempt:
    now = dt.datetime.now(dt.UTC)
    return jobs.Attempt(
        job_id=uuid.uuid4(),
        attempt=1,
        launcher="local",
        task_id=None,
        started_at=now - dt.timedelta(seconds=600),
        heartbeat_at=now - dt.timedelta(seconds=seconds_ago),
        finished_at=None,
        exit_code=None,
        reason=None,
    )


def test_a_heartbeat_is_not_judged_through_a_database_outage() -> None:
    clock = [1000.0]
    judge = HeartbeatJudge(120.0, clock=lambda: clock[0])
    old, fresh = _attempt_beaten(300.0), _attempt_beaten(3.0)
    assert judge.lost(old) and not judge.lost(fresh)
    # During an outage no renderer can write one: nothing is lost.
    judge.unreachable()
    assert not judge.lost(old)
    # Back: the renderers get the timeout to write again before an old one counts.
    clock[0] += 300.0
    judge.reached()
    assert not judge.lost(old)
    clock[0] += 119.0
    assert not judge.lost(old)
    clock[0] += 2.0
    assert judge.lost(old) and not judge.lost(fresh)
    # Reaching it again without an outage in between grants nothing more.
    judge.reached()
    assert judge.lost(old)
