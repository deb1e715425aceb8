"""A small async client of the public API (used by the demo and the end-to-end tests)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import tenacity
import websockets

TERMINAL = ("job.succeeded", "job.failed", "job.canceled")
# Drops of the event stream in a row before events() gives up.
RECONNECTS = 5
# Tries of one API call while the gateway answers 429 or 503 or cannot be reached.
RETRIES = 6


class ApiError(Exception):
    def __init__(self, status: int, body: Any, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.retry_after = retry_after


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status in (429, 503)
    return isinstance(exc, aiohttp.ClientConnectionError)


def _retry_after(state: tenacity.RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    if isinstance(exc, ApiError) and exc.retry_after and exc.retry_after.isdigit():
        return min(30.0, float(exc.retry_after))
    return min(8.0, 0.5 * 2.0 ** (int(state.attempt_number) - 1))


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

    async def _call(
        self, method: str, path: str, make_body: Callable[[], Any] | None = None, **kw: Any
    ) -> Any:
        """One API call, tried again while the gateway answers 429 or 503 (as long as its
        Retry-After says, else 0.5 s doubling) or cannot be reached, up to RETRIES times.
        ``make_body`` makes the request body afresh for each try (a stream is used up)."""
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(_worth_retrying),
            wait=_retry_after,
            stop=tenacity.stop_after_attempt(RETRIES),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                data = make_body() if make_body is not None else None
                async with self.session.request(
                    method, f"{self.api_url}{path}", data=data, **kw
                ) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status >= 400:
                        raise ApiError(resp.status, body, resp.headers.get("Retry-After"))
                    return body
        raise AssertionError("unreachable: tenacity reraises")

    async def upload(self, path: Path, content_type: str = "application/octet-stream") -> str:
        """Upload a file; returns its asset id."""

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    yield chunk

        body = await self._call(
            "POST",
            "/v1/uploads",
            chunks,
            params={"name": path.name},
            headers={"Content-Type": content_type},
        )
        return str(body["id"])

    async def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> Any:
        """Submit a job. Tries again are safe: each carries the same Idempotency-Key (a
        fresh one unless given), so a job the gateway accepted is not made twice."""
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return await self._call("POST", "/v1/jobs", json=body, headers=headers)

    async def job(self, job_id: str) -> Any:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def webhooks(self, job_id: str) -> Any:
        """The job's webhook delivery log."""
        return await self._call("GET", f"/v1/jobs/{job_id}/webhooks")

    async def cancel(self, job_id: str) -> Any:
        return await self._call("POST", f"/v1/jobs/{job_id}/cancel")

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
