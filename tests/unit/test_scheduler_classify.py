"""Exit codes of the renderer launch contract, and the size class they lead to."""

from __future__ import annotations

import pytest

from rendermill.scheduler.service import classify, size_step


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
