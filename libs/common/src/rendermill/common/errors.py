"""The error taxonomy: one root, and subclasses that say what the caller can do.

Every error carries a stable ``code`` (snake_case, part of the public API), a message a
user can act on, and optional structured ``detail``. The gateway turns them into
``{"error": {"code", "message", "detail", "request_id"}}`` with ``http_status``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec


class RendermillError(Exception):
    """Root of every error rendermill raises on purpose."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with an input, at a JSON path such as ``tracks[2].actions[0].end``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidInput(RendermillError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    code = "invalid_request"
    http_status = 400


class InvalidProject(InvalidInput):
    """The project cannot be rendered as written. ``problems`` lists every issue found."""

    code = "invalid_project"
    http_status = 422

    def __init__(self, problems: Sequence[Problem], *, message: str | None = None) -> None:
        self.problems = tuple(problems)
        if message is None:
            n = len(self.problems)
            first = str(self.problems[0]) if self.problems else "unknown problem"
            message = first if n == 1 else f"{n} problems; the first: {first}"
        super().__init__(message, detail=[msgspec.to_builtins(p) for p in self.problems])


class Unauthorized(RendermillError):
    code = "unauthorized"
    http_status = 401


class Forbidden(RendermillError):
    """The caller is known but may not do this."""

    code = "forbidden"
    http_status = 403


class NotFound(RendermillError):
    code = "not_found"
    http_status = 404


class Conflict(RendermillError):
    """The state changed under the caller (a lost race, or a terminal state)."""

    code = "conflict"
    http_status = 409


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    http_status = 413


class RetryLater(RendermillError):
    """Transient: the same call may succeed after ``delay`` seconds."""

    code = "retry_later"
    http_status = 503

    def __init__(self, message: str, *, delay: float = 1.0, detail: Any = None) -> None:
        super().__init__(message, detail=detail)
        self.delay = delay


class RateLimited(RetryLater):
    """Too many requests from one tenant: the same call may succeed after ``delay``."""

    code = "rate_limited"
    http_status = 429


class PermanentFailure(RendermillError):
    """Will never succeed; do not retry."""

    code = "permanent_failure"
    http_status = 500


class MediaError(PermanentFailure):
    """A source file is missing, corrupt, truncated or of an unsupported kind."""

    code = "media_error"
    http_status = 422

    def __init__(self, message: str, *, track: str | None = None, url: str | None = None) -> None:
        super().__init__(message, detail={"track": track, "url": url})
        self.track = track
        self.url = url
