"""Operator commands, the same in ``rendermill`` and in the gateway's image
(``python -m rendermill.gateway``): apply migrations, create and list tenants, issue,
list and revoke API keys. They talk to the configured database (``DATABASE_URL``, else
the embedded one) and print what an operator needs, keys and secrets once only.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TextIO

from rendermill.common import errors, schemas, settings

if TYPE_CHECKING:  # the database modules load only when a command runs (CLI start-up)
    import asyncpg

Command = Callable[["asyncpg.Connection", argparse.Namespace, TextIO], Awaitable[None]]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``migrate``, ``tenants`` and ``keys`` to a command line's subcommands; a parsed
    command is run by :func:`run`."""
    m = sub.add_parser("migrate", help="apply database migrations (safe to run concurrently)")
    m.set_defaults(admin=_migrate)

    t = sub.add_parser("tenants", help="create and list tenants")
    tsub = t.add_subparsers(
        dest="tenants_command", required=True, metavar="{create,list,set-max-tier}"
    )
    tiers = [t.value for t in schemas.Tier]
    c = tsub.add_parser("create", help="create a tenant with its first API key")
    c.add_argument("name", help="a name to recognise the tenant by (not unique)")
    c.add_argument(
        "--max-tier",
        choices=tiers,
        default=schemas.Tier.HIGH.value,
        help="the highest priority its jobs may ask for (default: %(default)s)",
    )
    c.set_defaults(admin=_create_tenant)
    tsub.add_parser("list", help="every tenant with its number of usable keys").set_defaults(
        admin=_list_tenants
    )
    m = tsub.add_parser("set-max-tier", help="cap the priority a tenant's new jobs may ask for")
    m.add_argument("tenant_id")
    m.add_argument("tier", choices=tiers)
    m.set_defaults(admin=_set_max_tier)

    k = sub.add_parser("keys", help="issue, list and revoke a tenant's API keys")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="{create,list,revoke}")
    kc = ksub.add_parser("create", help="issue another API key (e.g. to rotate keys)")
    kc.add_argument("tenant_id")
    kc.set_defaults(admin=_create_key)
    kl = ksub.add_parser("list", help="a tenant's keys: id, first characters, state")
    kl.add_argument("tenant_id")
    kl.set_defaults(admin=_list_keys)
    kr = ksub.add_parser("revoke", help="revoke a key by its id (from `keys list`)")
    kr.add_argument("key_id")
    kr.set_defaults(admin=_revoke_key)


def is_admin(args: argparse.Namespace) -> bool:
    return getattr(args, "admin", None) is not None


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the parsed admin command; returns the exit code. Raises RendermillError (the
    caller prints its message) for bad ids and unknown tenants or keys."""
    import asyncio

    from rendermill.common import db

    command: Command = args.admin
    cfg = settings.load(settings.Common)

    async def main() -> None:
        conn = await db.connect(db.dsn(cfg))
        try:
            await command(conn, args, out)
        finally:
            await conn.close()

    asyncio.run(main())
    return 0


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise errors.InvalidInput(f"{value!r} is not a {what} (a UUID)") from None


async def _migrate(conn: asyncpg.Connection, _args: argparse.Namespace, out: TextIO) -> None:
    from rendermill.common import migrate

    applied = await migrate.migrate(conn)
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else ""), file=out)


async def _create_tenant(conn: asyncpg.Connection, args: argparse.Namespace, out: TextIO) -> None:
    from rendermill.common import tenants

    name = args.name.strip()
    if not name:
        raise errors.InvalidInput("the tenant's name is empty")
    tier = schemas.Tier(args.max_tier)
    async with conn.transaction():
        tenant, key = await tenants.create(conn, name)
        if tier != tenant.max_tier:
            tenant = await tenants.set_max_tier(conn, tenant.id, tier)
    print(f"tenant:         {tenant.id} ({tenant.name})", file=out)
    print(f"API key:        {key}", file=out)
    print(f"webhook secret: {tenant.webhook_secret}", file=out)
    print(f"max tier:       {tenant.max_tier.value}", file=out)
    print("The key is shown only now: store it (the database keeps a digest).", file=out)


async def _set_max_tier(conn: asyncpg.Connection, args: argparse.Namespace, out: TextIO) -> None:
    from rendermill.common import tenants

    tenant = await tenants.set_max_tier(
        conn, _uuid(args.tenant_id, "tenant id"), schemas.Tier(args.tier)
    )
    print(f"tenant {tenant.id} ({tenant.name}): new jobs up to {tenant.max_tier.value}", file=out)


async def _list_tenants(conn: asyncpg.Connection, _args: argparse.Namespace, out: TextIO) -> None:
    from rendermill.common import tenants

    rows = await tenants.list_all(conn)
    if not rows:
        print("no tenants: `tenants create NAME` makes one", file=out)
        return
    print(f"{'id':36}  {'created':19}  {'keys':>4}  {'max tier':8}  name", file=out)
    for t in rows:
        created = t.created_at.strftime("%Y-%m-%d %H:%M:%S")
        top = schemas.Tier.from_rank(t.max_priority).value
        print(f"{t.id}  {created}  {t.active_keys:>4}  {top:8}  {t.name}", file=out)


async def _create_key(conn: asyncpg.Connection, args: argparse.Namespace, out: TextIO) -> None:
    from rendermill.common import tenants

    tenant = await tenants.get(conn, _uuid(args.tenant_id, "tenant id"))
    key = await tenants.add_key(conn, tenant.id)
    print(f"API key:        {key}", file=out)
    print(f"tenant:         {tenant.id} ({tenant.name})", file=out)
    print("The key is shown only now: store it (the database keeps a digest).", file=out)


async def _list_keys(conn: asyncpg.Connection, args: argparse.Namespace, out: TextIO) -> None:
    from rendermill.common import tenants

    keys = await tenants.list_keys(conn, _uuid(args.tenant_id, "tenant id"))
    print(f"{'id':36}  {'starts with':11}  {'created':19}  state", file=out)
    for k in keys:
        created = k.created_at.strftime("%Y-%m-%d %H:%M:%S")
        state = "active" if k.revoked_at is None else f"revoked {k.revoked_at:%Y-%m-%d %H:%M:%S}"
        print(f"{k.id}  {k.prefix + '…':11}  {created}  {state}", file=out)


async def _revoke_key(conn: asyncpg.Connection, args: argparse.Namespace, out: TextIO) -> None:
    from rendermill.common import tenants

    key = await tenants.revoke_key(conn, _uuid(args.key_id, "key id"))
    assert key.revoked_at is not None
    print(f"revoked {key.id} ({key.prefix}…) at {key.revoked_at:%Y-%m-%d %H:%M:%S}", file=out)
