"""Logging set-up: structlog is imported only when there is something to write."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import sys
from rendermill.common import logging as rlog

rlog.setup("warning", "json", "test")
log = rlog.get("probe")
log.debug("below_level", n=1)
log.info("below_level_too")
print("imported before:", "structlog" in sys.modules or "asyncio" in sys.modules)
log.warning("written", n=2)
print("imported after:", "structlog" in sys.modules)
"""


def test_calls_below_the_level_neither_write_nor_import_structlog() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines() == ["imported before: False", "imported after: True"]
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert len(lines) == 1
    assert lines[0]["event"] == "written" and lines[0]["n"] == 2
    assert lines[0]["level"] == "warning" and lines[0]["service"] == "test"


TASKS = """
import asyncio
from rendermill.common import logging as rlog

rlog.setup("info", "json", "test")
log = rlog.get("probe")


async def main() -> None:
    async def one(n: int) -> None:
        log.info("from_task", n=n)

    await asyncio.gather(one(1), one(2))
    log.info("after")


asyncio.run(main())
"""


def test_every_task_names_the_service() -> None:
    # The first message configures structlog from inside a task; the others, from other
    # tasks and from outside them, still carry the service.
    done = subprocess.run(
        [sys.executable, "-c", TASKS], capture_output=True, text=True, check=True, timeout=60
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["from_task", "from_task", "after"]
    assert all(line["service"] == "test" for line in lines)


RESET = """
from rendermill.common import logging as rlog

log = rlog.get("probe")
rlog.setup("warning", "json", "test")
log.warning("set_up")
log.info("dropped")
rlog.reset()
log.info("after_reset")
"""


def test_reset_forgets_the_set_up_even_for_loggers_already_used() -> None:
    done = subprocess.run(
        [sys.executable, "-c", RESET], capture_output=True, text=True, check=True, timeout=60
    )
    # Set up: JSON on stderr at warning and above. Reset: structlog's defaults, every
    # level, on stdout.
    assert [json.loads(line)["event"] for line in done.stderr.splitlines()] == ["set_up"]
    assert "dropped" not in done.stdout
    assert "after_reset" in done.stdout
