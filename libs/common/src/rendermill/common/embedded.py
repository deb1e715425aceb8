"""The embedded PostgreSQL (the ``pgserver`` package) used when no DATABASE_URL is given.

It is a real server on a data directory under ``home``; stopping and starting it keeps
every row. Several processes may share it: pgserver reference-counts its users.
"""

from __future__ import annotations

import contextlib
import fcntl
import warnings
from pathlib import Path
from typing import Any

from rendermill.common import logging as rlog

log = rlog.get(__name__)
_servers: dict[Path, Any] = {}


def start(home: Path, *, cleanup: str | None = "stop") -> str:
    """Start (or join) the embedded server for ``home``; returns its DSN.

    ``cleanup`` is pgserver's cleanup_mode: "stop" (the default) stops the server when
    the last process using it exits, so `rendermill up` or `demo` leave nothing running;
    None leaves it running; "delete" also removes the data directory.
    """
    # pgserver asks platformdirs for a runtime dir it never uses; its warning is noise.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import pgserver

    pgdata = (home / "pg").resolve()
    if pgdata in _servers:
        return str(_servers[pgdata].get_uri())
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # Serialise first-time initdb between processes that start at the same moment.
    with (home / "pg.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            server = pgserver.get_server(  # type: ignore[attr-defined]
                pgdata, cleanup_mode=cleanup
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _servers[pgdata] = server
    uri = str(server.get_uri())
    log.info("embedded_postgres_started", pgdata=str(pgdata))
    return uri


def stop_all() -> None:
    for server in _servers.values():
        with contextlib.suppress(Exception):
            server.cleanup()
    _servers.clear()
