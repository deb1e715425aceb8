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
