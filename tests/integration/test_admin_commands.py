"""Operator commands of the gateway's image: tenants and API keys, run as an operator
would (``python -m rendermill.gateway …`` against the database)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid

import asyncpg
import pytest

from rendermill.common import errors, tenants


async def _gateway(db_url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": db_url, "RENDERMILL_LOG_LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rendermill.gateway",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _field(out: str, name: str) -> str:
    m = re.search(rf"^{name}:\s+(\S+)", out, re.MULTILINE)
    assert m, out
    return m.group(1)


async def test_tenants_and_keys_from_creation_to_revocation(
    pool: asyncpg.Pool, db_url: str
) -> None:
    rc, out, err = await _gateway(db_url, "tenants", "create", "Acme Video")
    assert rc == 0, err
    tenant_id, first = _field(out, "tenant"), _field(out, "API key")
    assert _field(out, "webhook secret").startswith("whsec_")
    async with pool.acquire() as conn:
        assert (await tenants.authenticate(conn, first)).name == "Acme Video"

    rc, out, err = await _gateway(db_url, "keys", "create", tenant_id)
    assert rc == 0, err
    second = _field(out, "API key")
    assert second != first

    rc, out, _ = await _gateway(db_url, "tenants", "list")
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith(tenant_id))
    assert row.split()[3:5] == ["2", "high"] and row.endswith("Acme Video")

    rc, out, _ = await _gateway(db_url, "keys", "list", tenant_id)
    assert rc == 0
    listed = [line.split() for line in out.splitlines()[1:]]
    assert [line[1] for line in listed] == [first[:10] + "…", second[:10] + "…"]
    assert all(line[-1] == "active" for line in listed)
    # The database keeps digests: no listing ever shows a whole key.
    assert first not in out and second not in out

    rc, out, err = await _gateway(db_url, "keys", "revoke", listed[0][0])
    assert rc == 0 and out.startswith(f"revoked {listed[0][0]}"), err
    async with pool.acquire() as conn:
        with pytest.raises(errors.Unauthorized):
            await tenants.authenticate(conn, first)
        assert (await tenants.authenticate(conn, second)).id == uuid.UUID(tenant_id)
    rc, out, _ = await _gateway(db_url, "keys", "list", tenant_id)
    assert "revoked" in out.splitlines()[1] and out.splitlines()[2].endswith("active")


async def test_mistakes_name_what_is_wrong(db_url: str) -> None:
    rc, _, err = await _gateway(db_url, "keys", "create", "acme")
    assert rc == 1 and "'acme' is not a tenant id (a UUID)" in err
    missing = str(uuid.uuid4())
    rc, _, err = await _gateway(db_url, "keys", "list", missing)
    assert rc == 1 and f"tenant {missing} not found" in err
    rc, _, err = await _gateway(db_url, "keys", "revoke", missing)
    assert rc == 1 and "`keys list TENANT_ID` shows the ids" in err
    rc, _, err = await _gateway(db_url, "tenants", "create", "  ")
    assert rc == 1 and "name is empty" in err


async def test_migrate_in_the_gateway_image_applies_nothing_twice(db_url: str) -> None:
    rc, out, err = await _gateway(db_url, "migrate")
    assert rc == 0 and out.strip() == "applied 0 migration(s)", err


async def test_a_tenants_highest_tier_is_set_at_creation_and_changed_later(
    pool: asyncpg.Pool, db_url: str
) -> None:
    rc, out, err = await _gateway(db_url, "tenants", "create", "batch", "--max-tier", "low")
    assert rc == 0 and _field(out, "max tier") == "low", err
    tenant_id = _field(out, "tenant")
    async with pool.acquire() as conn:
        assert (await tenants.get(conn, uuid.UUID(tenant_id))).max_tier.value == "low"
    rc, out, err = await _gateway(db_url, "tenants", "set-max-tier", tenant_id, "normal")
    assert rc == 0 and out.strip().endswith("new jobs up to normal"), err
    async with pool.acquire() as conn:
        assert (await tenants.get(conn, uuid.UUID(tenant_id))).max_priority == 0
    rc, _, err = await _gateway(db_url, "tenants", "set-max-tier", tenant_id, "urgent")
    assert rc == 2 and "invalid choice: 'urgent'" in err
