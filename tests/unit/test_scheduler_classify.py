"""Exit codes of the renderer launch contract."""

from __future__ import annotations

import pytest

from rendermill.scheduler.service import classify


@pytest.mark.parametrize(
    ("code", "reason", "retry"),
    [
        (2, "invalid_project", False),
        (3, "media_error", False),
        (75, "transient", True),
        (137, "killed", True),
        (143, "terminated", True),
        (1, "infrastructure", True),
        (255, "infrastructure", True),
    ],
)
def test_classify(code: int, reason: str, retry: bool) -> None:
    outcome = classify(code)
    assert (outcome.reason, outcome.retry) == (reason, retry)
