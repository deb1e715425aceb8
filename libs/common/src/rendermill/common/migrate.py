"""Numbered migrations (``migrations/NNNN_name.sql``), applied in order under a lock."""

from __future__ import annotations

import re
from importlib import resources

import asyncpg

from rendermill.common import logging as rlog

log = rlog.get(__name__)
_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
# Arbitrary constant: serialises concurrent `migrate` runs (several replicas starting).
_LOCK_ID = 0x52454E44


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration shipped, in order."""
    out = []
    for entry in resources.files("rendermill.common.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    return sorted(out)


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, sql in available():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("migration_applied", version=version, name=name)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
