"""A database that is down or restarting answers 503 with Retry-After, not a 500."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rendermill.gateway.app import error_middleware


@pytest.mark.parametrize(
    "raised",
    [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        asyncpg.exceptions.AdminShutdownError(
            "terminating connection due to administrator command"
        ),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        ),
    ],
    ids=["refused", "shutting-down", "starting-up", "closed"],
)
async def test_database_outage_answers_503_with_retry_after(raised: Exception) -> None:
    async def handler(_request: web.Request) -> web.Response:
        raise raised

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/v1/jobs", handler)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/jobs", headers={"X-Request-Id": "r-1"})
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "2"
        assert (await resp.json())["error"] == {
            "code": "retry_later",
            "message": "the database is unavailable for a moment: retry shortly",
            "detail": None,
            "request_id": "r-1",
        }


async def test_other_failures_stay_internal_errors() -> None:
    async def handler(_request: web.Request) -> web.Response:
        raise asyncpg.exceptions.UndefinedTableError('relation "jobs" does not exist')

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/v1/jobs", handler)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/jobs")
        assert resp.status == 500
        assert "Retry-After" not in resp.headers
        assert (await resp.json())["error"]["code"] == "internal_error"
