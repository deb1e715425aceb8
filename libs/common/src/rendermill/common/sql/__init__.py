"""Named SQL blocks loaded once from the ``.sql`` files beside this module.

A file holds blocks introduced by ``-- name: block_name``; ``queries("jobs").create_job``
returns the text. Python passes parameters; it never builds SQL from strings.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


class Queries:
    def __init__(self, blocks: dict[str, str]) -> None:
        self._blocks = blocks

    def __getattr__(self, name: str) -> str:
        try:
            return self._blocks[name]
        except KeyError:
            raise AttributeError(f"no SQL block named {name!r}") from None

    def names(self) -> list[str]:
        return list(self._blocks)


def parse_blocks(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    blocks: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in blocks:
            raise ValueError(f"duplicate SQL block {name!r}")
        blocks[name] = body.strip().rstrip(";")
    return blocks


@functools.cache
def queries(module: str) -> Queries:
    """The blocks of ``sql/{module}.sql``."""
    text = resources.files(__name__).joinpath(f"{module}.sql").read_text("utf-8")
    return Queries(parse_blocks(text))
