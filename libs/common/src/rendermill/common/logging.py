"""structlog set-up: one JSON object per line, one stable snake_case event name each.

structlog (with the asyncio it imports) costs about 60 ms of a command's start, a
sixth of a stream copy's whole command, so it is imported when there is something to
write: ``setup`` records the configuration, and the loggers ``get`` returns drop calls
below the configured level without importing it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

# The level set by ``setup`` (0 before: everything goes to structlog's defaults), and the
# configuration waiting to be applied when the first message is written.
_level = 0
_pending: tuple[int, str, str] | None = None
# Counts set-ups and resets: a logger made under an earlier one is made again.
_generation = 0
# Logger methods that write at a level, by name (the filtering bound logger's).
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def setup(level: str = "info", fmt: str = "json", service: str = "rendermill") -> None:
    """Configure structlog and the stdlib root logger (both write to stderr); structlog's
    part is applied when the first message at ``level`` or above is written."""
    global _level, _pending, _generation
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    _level = lvl
    _pending = (lvl, fmt, service)
    _generation += 1
    logging.basicConfig(level=max(lvl, logging.WARNING), stream=sys.stderr, format="%(message)s")


def reset() -> None:
    """Forget ``setup``: every level written, with structlog's defaults (to stdout), as
    in a process that never set logging up. For tests, which run commands and services
    one after another in one process."""
    global _level, _pending, _generation
    _level, _pending = 0, None
    _generation += 1
    structlog = sys.modules.get("structlog")
    if structlog is not None:
        structlog.reset_defaults()


def _configure() -> None:
    global _pending
    if _pending is None:
        return
    import structlog

    lvl, fmt, service = _pending
    _pending = None
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _Service(service),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


class _Service:
    """Names the service in every event, whichever task or thread logs it (a context
    variable bound here, at the first message, would reach only that task)."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", self._service)
        return event


def get(name: str | None = None) -> Any:
    """A structlog logger named ``name``, made when it first has something to write."""
    return _Logger(name)


def _drop(*args: Any, **kwargs: Any) -> None:
    return None


class _Logger:
    __slots__ = ("_made", "_name", "_real")

    def __init__(self, name: str | None) -> None:
        self._name = name
        self._real: Any = None
        self._made = -1

    def __getattr__(self, attr: str) -> Any:
        level = _METHOD_LEVELS.get(attr)
        if level is not None and level < _level:
            return _drop
        real = self._real
        if real is None or _pending is not None or self._made != _generation:
            _configure()
            import structlog

            real = self._real = structlog.get_logger(self._name)
            self._made = _generation
        return getattr(real, attr)
