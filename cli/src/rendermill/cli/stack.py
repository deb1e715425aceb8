"""Run the whole stack on one machine: migrate, then gateway, scheduler and notifier as
child processes (renderers are launched by the scheduler)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import msgspec

from rendermill.common import db, migrate, settings, tenants
from rendermill.common import logging as rlog

log = rlog.get(__name__)
SERVICES = ("gateway", "scheduler", "notifier")


class Credentials(msgspec.Struct, frozen=True):
    api_url: str
    api_key: str
    webhook_secret: str
    tenant_id: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


# Looked up before any child starts: the child may not import (another thread of the
# parent could hold the import lock when it forked).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _start_child(parent: int) -> None:
    """Run in each child before it starts: on Linux the kernel sends it SIGTERM when the
    stack's process dies, however it dies (a SIGTERM or SIGKILL to the stack would
    otherwise leave the services running, holding the port and the database)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        # The stack died before the child could ask to follow it.
        os._exit(1)


def _signing_key(home: Path) -> str:
    """The URL-signing key, kept in ``home`` so links stay valid across restarts."""
    path = home / "secrets.json"
    if path.exists():
        return str(json.loads(path.read_text())["url_signing_key"])
    home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.write_text(json.dumps({"url_signing_key": key}))
    path.chmod(0o600)
    return key


class Stack:
    """An async context manager: on enter every service is up and ready."""

    def __init__(
        self,
        home: Path,
        *,
        port: int = 8080,
        database_url: str | None = None,
        log_level: str = "info",
        log_format: str = "json",
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
        metrics: bool = False,
    ) -> None:
        self.home = home.resolve()
        self.port = port
        self.database_url = database_url
        self.log_level = log_level
        self.log_format = log_format
        self.log_path = log_path
        self.extra_env = extra_env or {}
        # Prometheus endpoints of the scheduler and notifier (the gateway serves /metrics).
        self.metrics_ports = {"scheduler": free_port(), "notifier": free_port()} if metrics else {}
        self.api_url = f"http://127.0.0.1:{port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_file: object = None
        self.dsn = ""

    def env(self, dsn: str) -> dict[str, str]:
        return {
            **os.environ,
            "RENDERMILL_HOME": str(self.home),
            "RENDERMILL_DATABASE_URL": dsn,
            "RENDERMILL_URL_SIGNING_KEY": _signing_key(self.home),
            "RENDERMILL_PUBLIC_URL": self.api_url,
            "RENDERMILL_PORT": str(self.port),
            "RENDERMILL_LOG_LEVEL": self.log_level,
            "RENDERMILL_LOG_FORMAT": self.log_format,
            # A local stack delivers webhooks to local receivers; production refuses them.
            "RENDERMILL_ALLOW_PRIVATE_WEBHOOKS": "true",
            **self.extra_env,
        }

    async def __aenter__(self) -> Stack:
        cfg = settings.load(settings.Common, overrides={"home": str(self.home)})
        if self.database_url:
            self.dsn = self.database_url
        else:
            self.dsn = await asyncio.to_thread(db.dsn, cfg)
        conn = await db.connect(self.dsn)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        if _port_taken(self.port):
            # The new gateway could not listen, and the one already there would answer
            # the readiness check in its place.
            raise RuntimeError(
                f"port {self.port} is in use (another stack still running?): "
                "stop it or choose another port"
            )
        env = self.env(self.dsn)
        parent = os.getpid()
        out = self.log_path.open("ab") if self.log_path else None
        self._log_file = out
        for name in SERVICES:
            child_env = dict(env)
            if name in self.metrics_ports:
                child_env["RENDERMILL_METRICS_PORT"] = str(self.metrics_ports[name])
            # Popen, not asyncio's subprocess: the stack outlives no event loop of its own
            # and `stop` may run from a signal handler's loop.
            self.procs[name] = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", f"rendermill.{name}"],
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=functools.partial(_start_child, parent),
            )
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                for name, proc in self.procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"{name} exited with code {proc.returncode} on start")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.api_url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"the gateway was not ready at {self.api_url} after {timeout:.0f} s")

    async def create_tenant(self, name: str = "local") -> Credentials:
        conn = await db.connect(self.dsn)
        try:
            tenant, key = await tenants.create(conn, name)
        finally:
            await conn.close()
        return Credentials(self.api_url, key, tenant.webhook_secret, str(tenant.id))

    def check(self) -> None:
        """Raise if a service died."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}")

    async def stop(self, grace: float = 60.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
