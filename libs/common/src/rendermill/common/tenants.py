"""Tenants, their API keys (stored as SHA-256 digests) and uploaded assets."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import uuid

import msgspec

from rendermill.common import db, errors, schemas, sql

Q = sql.queries("tenants")
KEY_PREFIX = "rmk_"


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    webhook_secret: str
    created_at: dt.datetime
    # The highest tier its jobs may ask for, as stored (schemas.Tier.rank).
    max_priority: int = 1

    @property
    def max_tier(self) -> schemas.Tier:
        return schemas.Tier.from_rank(self.max_priority)


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    object_key: str
    name: str
    content_type: str
    size: int
    sha256: str
    created_at: dt.datetime


class TenantSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    created_at: dt.datetime
    active_keys: int
    max_priority: int


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """An API key as stored: its id and first characters, never the key itself."""

    id: uuid.UUID
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def _hash(key: str) -> bytes:
    # Keys carry 256 bits of randomness, so a plain digest is enough (no slow KDF needed).
    return hashlib.sha256(key.encode()).digest()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def create(conn: db.Conn, name: str) -> tuple[Tenant, str]:
    """Create a tenant with one API key; returns (tenant, the key in clear, shown once)."""
    async with conn.transaction():
        row = await conn.fetchrow(Q.insert_tenant, uuid.uuid4(), name, new_webhook_secret())
        assert row is not None
        tenant = msgspec.convert(dict(row), Tenant, strict=False)
        key = await add_key(conn, tenant.id)
    return tenant, key


async def add_key(conn: db.Conn, tenant_id: uuid.UUID) -> str:
    """A new API key of ``tenant_id``, in clear (shown once; only its digest is kept)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(Q.insert_api_key, uuid.uuid4(), tenant_id, key[:10], _hash(key))
    return key


async def authenticate(conn: db.Conn, key: str) -> Tenant:
    """The tenant owning ``key``; raises errors.Unauthorized for unknown or revoked keys."""
    row = await conn.fetchrow(Q.tenant_for_key, _hash(key))
    if row is None:
        raise errors.Unauthorized("unknown or revoked API key")
    return msgspec.convert(dict(row), Tenant, strict=False)


async def get(conn: db.Conn, tenant_id: uuid.UUID) -> Tenant:
    row = await conn.fetchrow(Q.get_tenant, tenant_id)
    if row is None:
        raise errors.NotFound(f"tenant {tenant_id} not found")
    return msgspec.convert(dict(row), Tenant, strict=False)


async def set_max_tier(conn: db.Conn, tenant_id: uuid.UUID, tier: schemas.Tier) -> Tenant:
    """Cap the tiers ``tenant_id``'s new jobs may ask for (jobs already queued keep theirs);
    raises errors.NotFound."""
    row = await conn.fetchrow(Q.set_max_priority, tenant_id, tier.rank)
    if row is None:
        raise errors.NotFound(f"tenant {tenant_id} not found")
    return msgspec.convert(dict(row), Tenant, strict=False)


async def list_all(conn: db.Conn) -> list[TenantSummary]:
    """Every tenant, oldest first, with its number of usable keys."""
    rows = await conn.fetch(Q.list_tenants)
    return [msgspec.convert(dict(r), TenantSummary, strict=False) for r in rows]


async def list_keys(conn: db.Conn, tenant_id: uuid.UUID) -> list[ApiKey]:
    """The keys of ``tenant_id`` (revoked ones too); raises errors.NotFound."""
    await get(conn, tenant_id)
    rows = await conn.fetch(Q.list_keys, tenant_id)
    return [msgspec.convert(dict(r), ApiKey, strict=False) for r in rows]


async def revoke_key(conn: db.Conn, key_id: uuid.UUID) -> ApiKey:
    """Revoke the key ``key_id`` (at once: the next request with it is refused); revoking
    a revoked key changes nothing. Raises errors.NotFound."""
    await conn.execute(Q.revoke_key, key_id)
    row = await conn.fetchrow(Q.get_key, key_id)
    if row is None:
        raise errors.NotFound(f"API key {key_id} not found: `keys list TENANT_ID` shows the ids")
    return msgspec.convert(dict(row), ApiKey, strict=False)


async def insert_asset(
    conn: db.Conn,
    *,
    asset_id: uuid.UUID,
    tenant_id: uuid.UUID,
    object_key: str,
    name: str,
    content_type: str,
    size: int,
    sha256: str,
) -> Asset:
    row = await conn.fetchrow(
        Q.insert_asset, asset_id, tenant_id, object_key, name, content_type, size, sha256
    )
    assert row is not None
    return msgspec.convert(dict(row), Asset, strict=False)


async def list_assets(conn: db.Conn, tenant_id: uuid.UUID, *, limit: int = 50) -> list[Asset]:
    """The tenant's uploads, newest first."""
    rows = await conn.fetch(Q.list_assets, tenant_id, limit)
    return [msgspec.convert(dict(r), Asset, strict=False) for r in rows]


async def get_asset(conn: db.Conn, asset_id: uuid.UUID, tenant_id: uuid.UUID) -> Asset:
    row = await conn.fetchrow(Q.get_asset, asset_id, tenant_id)
    if row is None:
        raise errors.NotFound(f"asset {asset_id} not found")
    return msgspec.convert(dict(row), Asset, strict=False)
