"""Progress bars that suit where they are written.

On a terminal, tqdm redraws one line in place. Into a log or a pipe (CI, cron, `2>file`),
those redraws would pile up as one endless line of carriage returns, ten a second; there
the bar is written as whole lines instead, at most one every ``LOG_INTERVAL`` seconds.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL = 10.0


class _Lines:
    """A file for tqdm that turns each redraw into a line of its own."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:
            self._out.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self._out.flush()


def bar(**options: Any) -> tqdm[Any]:
    """A tqdm bar on stderr: drawn in place on a terminal, as lines elsewhere."""
    out = sys.stderr
    if out.isatty():
        return tqdm(file=out, dynamic_ncols=True, **options)
    return tqdm(file=_Lines(out), mininterval=LOG_INTERVAL, ncols=80, ascii=True, **options)
