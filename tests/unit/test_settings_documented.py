"""Every setting a service reads is in the README's configuration (or its AWS part)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from rendermill.common import settings

README = Path(__file__).resolve().parents[2] / "README.md"
# Set by the scheduler for each render it launches, not by whoever deploys.
LAUNCH_CONTRACT = {"job_id", "attempt"}


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    kinds = [
        value
        for value in vars(settings).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value is not msgspec.Struct
    ]
    assert len(kinds) >= 5
    missing = sorted(
        {
            settings.PREFIX + field.name.upper()
            for kind in kinds
            for field in msgspec.structs.fields(kind)
            if field.name not in LAUNCH_CONTRACT
        }
        - set(re.findall(r"RENDERMILL_[A-Z0-9_]+", text))
    )
    assert missing == []
