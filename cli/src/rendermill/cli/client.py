"""A small async client of the public API (used by the demo and the end-to-end tests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import websockets

TERMINAL = ("job.succeeded", "job.failed", "job.canceled")
# Drops of the event stream in a row before events() gives up.
RECONNECTS = 5


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Client:
    def __init__(self, api_url: str, api_key: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.api_key = api_key
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=aiohttp.ClientTimeout(total=300),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use the client as an async context manager"
        return self._session

    async def _json(self, resp: aiohttp.ClientResponse) -> Any:
        body = await resp.json(content_type=None)
        if resp.status >= 400:
            raise ApiError(resp.status, body)
        return body

    async def upload(self, path: Path, content_type: str = "application/octet-stream") -> str:
        """Upload a file; returns its asset id."""

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    yield chunk

        async with self.session.post(
            f"{self.api_url}/v1/uploads",
            params={"name": path.name},
            data=chunks(),
            headers={"Content-Type": content_type},
        ) as resp:
            return str((await self._json(resp))["id"])

    async def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        async with self.session.post(f"{self.api_url}/v1/jobs", json=body, headers=headers) as r:
            return await self._json(r)

    async def job(self, job_id: str) -> Any:
        async with self.session.get(f"{self.api_url}/v1/jobs/{job_id}") as resp:
            return await self._json(resp)

    async def webhooks(self, job_id: str) -> Any:
        """The job's webhook delivery log."""
        async with self.session.get(f"{self.api_url}/v1/jobs/{job_id}/webhooks") as resp:
            return await self._json(resp)

    async def cancel(self, job_id: str) -> Any:
        async with self.session.post(f"{self.api_url}/v1/jobs/{job_id}/cancel") as resp:
            return await self._json(resp)

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Every event of the job over the WebSocket, ending after the terminal one.

        A connection that drops first (a gateway restarting, a network blip) is made
        again from the last event seen, up to ``RECONNECTS`` times in a row, a second
        apart, then twice that, and so on up to 8 s.
        """
        base = self.api_url.replace("http", "ws", 1) + f"/v1/jobs/{job_id}/events"
        headers = {"Authorization": f"Bearer {self.api_key}"}
        drops = 0
        while True:
            try:
                async with websockets.connect(
                    f"{base}?after={after}", additional_headers=headers
                ) as ws:
                    async for raw in ws:
                        event = json.loads(raw)
                        after, drops = int(event["seq"]), 0
                        yield event
                        if event["type"] in TERMINAL:
                            return
            except websockets.exceptions.InvalidStatus:
                raise  # refused (a bad key, no such job): asking again changes nothing
            except (OSError, websockets.exceptions.WebSocketException):
                pass
            drops += 1
            if drops > RECONNECTS:
                raise ApiError(0, f"the event stream of job {job_id} kept dropping")
            await asyncio.sleep(min(8.0, 2.0 ** (drops - 1)))

    async def download(self, url: str, dest: Path) -> int:
        size = 0
        async with self.session.get(url) as resp:
            if resp.status != 200:
                raise ApiError(resp.status, await resp.text())
            with dest.open("wb") as fh:
                async for chunk in resp.content.iter_chunked(1 << 20):
                    fh.write(chunk)
                    size += len(chunk)
        return size
