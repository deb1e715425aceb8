"""The gateway's HTTP API against a real Postgres and a real fs store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rendermill.cli.stack import free_port
from rendermill.common import errors, jobs, schemas, settings, sql, tenants
from rendermill.common.queue.postgres import PostgresQueue
from rendermill.common.schemas import JobStatus, Stage
from rendermill.common.store import fs
from rendermill.gateway.app import create_app

PROJECT: dict[str, Any] = {
    "width": 320,
    "height": 180,
    "tracks": [
        {
            "id": "t0",
            "name": "clip",
            "controllerName": "video",
            "url": "/media/a.mp4",
            "actions": [{"id": "a0", "start": 0, "end": 2}],
        }
    ],
}


class Api:
    def __init__(
        self,
        client: TestClient[web.Request, web.Application],
        key: str,
        pool: asyncpg.Pool,
        cfg: settings.Gateway,
    ):
        self.client = client
        self.key = key
        self.pool = pool
        self.cfg = cfg

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def upload(self, data: bytes = b"\x00" * 100, name: str = "a.mp4") -> str:
        resp = await self.client.post(
            "/v1/uploads", params={"name": name}, data=data, headers=self.auth()
        )
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])

    async def submit(self, body: dict[str, Any], **headers: str) -> aiohttp.ClientResponse:
        return await self.client.post("/v1/jobs", json=body, headers={**self.auth(), **headers})


@pytest_asyncio.fixture
async def api(db_url: str, pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[Api]:
    cfg = settings.load(
        settings.Gateway,
        env={},
        overrides={
            "database_url": db_url,
            "store_path": str(tmp_path / "store"),
            "url_signing_key": "test-key",
            "allow_private_webhooks": True,
        },
    )
    async with pool.acquire() as conn:
        _, key = await tenants.create(conn, "tenant-a")
    client = TestClient(TestServer(create_app(cfg)))
    await client.start_server()
    try:
        yield Api(client, key, pool, cfg)
    finally:
        await client.close()


async def test_requests_without_a_key_are_refused_with_a_json_error(api: Api) -> None:
    resp = await api.client.get("/v1/jobs")
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["code"] == "unauthorized" and body["error"]["request_id"]
    resp = await api.client.get("/v1/jobs", headers=api.auth("rmk_wrong"))
    assert resp.status == 401


async def test_invalid_project_reports_every_problem_with_its_path(api: Api) -> None:
    project = {
        "tracks": [
            {"controllerName": "hologram", "url": "/x.mp4", "actions": []},
            {
                "controllerName": "video",
                "url": "blob:https://editor/abc",
                "actions": [{"start": "soon", "end": 3}],
            },
        ]
    }
    resp = await api.submit({"project": project})
    assert resp.status == 422
    err = (await resp.json())["error"]
    paths = {p["path"] for p in err["detail"]}
    assert {"tracks[0].controllerName", "tracks[1].actions[0].start"} <= paths
    # Nothing was accepted.
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0


async def test_blob_url_without_media_is_rejected_by_name(api: Api) -> None:
    project = {
        "tracks": [
            {
                "controllerName": "video",
                "url": "blob:https://editor/abc",
                "actions": [{"start": 0, "end": 1}],
            }
        ]
    }
    resp = await api.submit({"project": project})
    err = (await resp.json())["error"]
    assert resp.status == 422
    assert err["detail"][0]["path"] == "tracks[0].url"
    assert "blob" in err["detail"][0]["message"]


async def test_unknown_asset_and_bad_output_are_rejected(api: Api) -> None:
    resp = await api.submit({"project": PROJECT, "media": {"/media/a.mp4": str(uuid.uuid4())}})
    assert resp.status == 422
    assert (await resp.json())["error"]["detail"][0]["path"] == "media['/media/a.mp4']"
    asset = await api.upload()
    resp = await api.submit(
        {"project": PROJECT, "media": {"/media/a.mp4": asset}, "output": {"resolution": "999p"}}
    )
    assert resp.status == 400
    assert "resolution" in (await resp.json())["error"]["message"]
    resp = await api.submit({"project": PROJECT, "media": {}, "output": {"fps": 0}})
    assert resp.status == 400


async def test_submit_get_idempotency_and_tenant_isolation(api: Api) -> None:
    asset = await api.upload()
    body = {"project": PROJECT, "media": {"/media/a.mp4": asset}}
    resp = await api.submit(body, **{"Idempotency-Key": "order-1"})
    assert resp.status == 202
    job = await resp.json()
    assert job["status"] == "queued" and job["stage"] == "queued"
    again = await api.submit(body, **{"Idempotency-Key": "order-1"})
    assert again.status == 200 and (await again.json())["id"] == job["id"]

    got = await api.client.get(f"/v1/jobs/{job['id']}", headers=api.auth())
    assert got.status == 200 and (await got.json())["id"] == job["id"]
    listed = await (await api.client.get("/v1/jobs", headers=api.auth())).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]

    async with api.pool.acquire() as conn:
        _, other_key = await tenants.create(conn, "tenant-b")
    other = await api.client.get(f"/v1/jobs/{job['id']}", headers=api.auth(other_key))
    assert other.status == 404

    received = await PostgresQueue(api.pool).receive(max_messages=10, visibility_timeout=30)
    assert [(str(r.message.job_id), r.message.attempt) for r in received] == [(job["id"], 1)]


async def test_priority_is_a_tier_or_an_integer_and_its_errors_say_what_to_send(
    api: Api,
) -> None:
    asset = await api.upload()
    body = {"project": PROJECT, "media": {"/media/a.mp4": asset}}
    # Tier names, and integers (the form from before tiers) counted by their sign.
    given: list[Any] = [None, "high", "normal", "low", 0, 7, -1, 100, -100]
    expected = ["normal", "high", "normal", "low", "normal", "high", "low", "high", "low"]
    ids = []
    for value in given:
        resp = await api.submit(body if value is None else {**body, "priority": value})
        assert resp.status == 202, await resp.text()
        view = await resp.json()
        assert view["priority"] == expected[given.index(value)]
        ids.append(view["id"])
    got = await api.client.get(f"/v1/jobs/{ids[1]}", headers=api.auth())
    assert (await got.json())["priority"] == "high"
    async with api.pool.acquire() as conn:
        stored = [(await jobs.get(conn, uuid.UUID(i))).priority for i in ids]
    assert stored == [0, 1, 0, -1, 0, 1, -1, 1, -1]
    # Each message carries its job's tier, and the queue hands out the high ones first.
    received = await PostgresQueue(api.pool).receive(max_messages=20, visibility_timeout=30)
    assert [r.message.tier.value for r in received] == sorted(
        expected, key=["high", "normal", "low"].index
    )
    assert [str(r.message.job_id) for r in received][:3] == [ids[1], ids[5], ids[7]]

    for bad in ("urgent", "HIGH", 101, -1000, True, 1.5, None, ["high"]):
        resp = await api.submit({**body, "priority": bad})
        assert resp.status == 400, bad
        err = (await resp.json())["error"]
        assert err["code"] == "invalid_request" and err["detail"] == {"path": "priority"}
        assert "priority: " in err["message"], err["message"]
        assert '"high", "normal" or "low", or an integer from -100 to 100' in err["message"]
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM jobs") == len(given)


async def test_upload_is_stored_with_its_digest(api: Api) -> None:
    data = bytes(range(256)) * 1000
    asset_id = await api.upload(data, name="../../evil name.mp4")
    async with api.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM assets WHERE id = $1", uuid.UUID(asset_id))
    assert row is not None
    assert row["size"] == len(data)
    assert ".." not in row["object_key"]
    stored = api.cfg.store_root / row["object_key"]
    assert stored.read_bytes() == data


async def test_download_url_is_signed_expiring_and_supports_range(api: Api) -> None:
    store = fs.FsStore(api.cfg.store_root, signing_key="test-key", public_url="http://x")
    payload = bytes(range(256)) * 10
    path = store.path("outputs/t/j/output.mp4")
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    url = store.download_url("outputs/t/j/output.mp4", ttl=60).removeprefix("http://x")
    resp = await api.client.get(url, headers={"Range": "bytes=100-199"})
    assert resp.status == 206
    assert await resp.read() == payload[100:200]
    assert (await api.client.get(url)).status == 200
    tampered = url.replace("outputs/t/j", "outputs/t/k")
    assert (await api.client.get(tampered)).status == 401
    expired = store.download_url("outputs/t/j/output.mp4", ttl=-1).removeprefix("http://x")
    resp = await api.client.get(expired)
    assert resp.status == 401 and "expired" in (await resp.json())["error"]["message"]


async def test_seed_contract(api: Api) -> None:
    asset = await api.upload()
    resp = await api.client.post(
        "/api/video/process",
        json={
            "editorState": PROJECT,
            "outputFormat": "mp4",
            "resolution": "720p",
            "media": {"/media/a.mp4": asset},
        },
        headers=api.auth(),
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "processing"
    job_id = uuid.UUID(body["jobId"])
    status = await (await api.client.get(f"/api/video/status/{job_id}")).json()
    assert status == {"stage": "processing", "progress": 0, "message": "queued"}
    async with api.pool.acquire() as conn:
        await jobs.start_attempt(conn, job_id, 1)
        await jobs.report_progress(conn, job_id, 1, stage=Stage.UPLOADING, progress=0.97)
    status = await (await api.client.get(f"/api/video/status/{job_id}")).json()
    assert status["stage"] == "storing" and status["progress"] == 97
    async with api.pool.acquire() as conn:
        await jobs.finish(
            conn,
            job_id,
            JobStatus.FAILED,
            error=jobs.error_info("media_error", "clip.mp4 is corrupt"),
            message="failed",
        )
    status = await (await api.client.get(f"/api/video/status/{job_id}")).json()
    assert status["stage"] == "error" and status["error"] == "clip.mp4 is corrupt"


async def test_websocket_pushes_every_change_until_terminal(api: Api) -> None:
    asset = await api.upload()
    job = await (await api.submit({"project": PROJECT, "media": {"/media/a.mp4": asset}})).json()
    job_id = uuid.UUID(job["id"])
    ws = await api.client.ws_connect(f"/v1/jobs/{job_id}/events", headers=api.auth())
    first = await ws.receive_json(timeout=5)
    assert (first["seq"], first["type"]) == (1, "job.queued")

    async def drive() -> None:
        async with api.pool.acquire() as conn:
            await jobs.start_attempt(conn, job_id, 1)
            for i in range(1, 4):
                await jobs.report_progress(
                    conn, job_id, 1, stage=Stage.RENDERING, progress=i / 4, frames_done=i
                )
                await asyncio.sleep(0.05)
            await jobs.finish(conn, job_id, JobStatus.SUCCEEDED, result=None)

    started = time.monotonic()
    driver = asyncio.create_task(drive())
    seen = []
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.BINARY and msg.type != aiohttp.WSMsgType.TEXT:
            break
        seen.append(msg.json()["type"])
    await driver
    assert seen == ["job.started", *["job.progress"] * 3, "job.succeeded"]
    # Pushed by NOTIFY, not found by the 5 s fallback poll.
    assert time.monotonic() - started < 4

    sse = await api.client.get(
        f"/v1/jobs/{job_id}/events", headers={**api.auth(), "Accept": "text/event-stream"}
    )
    text = await sse.text()
    assert text.count("event: ") == 6 and "event: job.succeeded" in text


async def test_cancel_ends_a_queued_or_running_job_once(api: Api) -> None:
    asset = await api.upload()
    body = {"project": PROJECT, "media": {"/media/a.mp4": asset}}
    queued = await (await api.submit(body)).json()
    running = await (await api.submit(body)).json()
    done = await (await api.submit(body)).json()
    async with api.pool.acquire() as conn:
        await jobs.start_attempt(conn, uuid.UUID(running["id"]), 1)
        await jobs.start_attempt(conn, uuid.UUID(done["id"]), 1)
        await jobs.finish(conn, uuid.UUID(done["id"]), JobStatus.SUCCEEDED, result=None)

    for job in (queued, running):
        resp = await api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.auth())
        assert resp.status == 200, await resp.text()
        view = await resp.json()
        assert view["status"] == "canceled" and view["error"]["code"] == "canceled"
        # Again: the same answer, nothing changes.
        again = await api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.auth())
        assert again.status == 200 and (await again.json())["status"] == "canceled"
        async with api.pool.acquire() as conn:
            events = await jobs.events_after(conn, uuid.UUID(job["id"]), 0)
        assert [e.type for e in events].count("job.canceled") == 1

    finished = await api.client.post(f"/v1/jobs/{done['id']}/cancel", headers=api.auth())
    assert finished.status == 409
    error = (await finished.json())["error"]
    assert error["code"] == "conflict" and "already succeeded" in error["message"]

    async with api.pool.acquire() as conn:
        _, other_key = await tenants.create(conn, "tenant-b")
    other = await api.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=api.auth(other_key))
    assert other.status == 404
    doc = await (await api.client.get("/openapi.json")).json()
    assert "post" in doc["paths"]["/v1/jobs/{job_id}/cancel"]


async def test_webhook_delivery_log_and_resend(api: Api) -> None:
    asset = await api.upload()
    job = await (await api.submit({"project": PROJECT, "media": {"/media/a.mp4": asset}})).json()
    job_id = uuid.UUID(job["id"])
    q = sql.queries("webhooks")
    message_id = uuid.uuid4()
    async with api.pool.acquire() as conn:
        tenant_id = (await jobs.get(conn, job_id)).tenant_id
        # As the notifier records them: a message, two failed attempts, given up.
        await conn.execute(
            q.insert_message,
            message_id,
            tenant_id,
            job_id,
            3,
            "job.succeeded",
            None,
            "https://hooks.example/rendermill",
            {"type": "job.succeeded"},
        )
        await conn.execute(q.insert_attempt, message_id, 1, 120, 503, None, "busy")
        await conn.execute(q.insert_attempt, message_id, 2, 5000, None, "TimeoutError: ", None)
        await conn.execute(q.mark_failed, message_id, 2)

    resp = await api.client.get(f"/v1/jobs/{job_id}/webhooks", headers=api.auth())
    assert resp.status == 200, await resp.text()
    (message,) = (await resp.json())["messages"]
    assert message["id"] == str(message_id) and message["status"] == "failed"
    assert message["url"] == "https://hooks.example/rendermill" and message["attempts"] == 2
    assert [(a["attempt"], a["status_code"], a["error"]) for a in message["log"]] == [
        (1, 503, None),
        (2, None, "TimeoutError: "),
    ]
    assert message["log"][0]["response_body"] == "busy"

    resent = await api.client.post(f"/v1/webhooks/messages/{message_id}/resend", headers=api.auth())
    assert resent.status == 202
    assert (await resent.json())["status"] == "pending"
    async with api.pool.acquire() as conn:
        due = await conn.fetch(q.claim_due, 10, 30)
    assert [r["id"] for r in due] == [message_id]  # due now, for the notifier

    async with api.pool.acquire() as conn:
        _, other_key = await tenants.create(conn, "tenant-b")
    for method, url in (
        ("GET", f"/v1/jobs/{job_id}/webhooks"),
        ("POST", f"/v1/webhooks/messages/{message_id}/resend"),
        ("POST", f"/v1/webhooks/messages/{uuid.uuid4()}/resend"),
    ):
        key = other_key if str(message_id) in url or str(job_id) in url else None
        other = await api.client.request(method, url, headers=api.auth(key))
        assert other.status == 404, (method, url)


async def test_webhook_endpoints_register_list_recover_and_delete(api: Api) -> None:
    created = await api.client.post(
        "/v1/webhooks/endpoints", json={"url": "https://hooks.example/all"}, headers=api.auth()
    )
    assert created.status == 201, await created.text()
    endpoint = await created.json()
    assert endpoint["enabled"] and endpoint["secret"].startswith("whsec_")
    listed = await (await api.client.get("/v1/webhooks/endpoints", headers=api.auth())).json()
    assert [e["id"] for e in listed["endpoints"]] == [endpoint["id"]]
    assert "secret" not in listed["endpoints"][0]  # shown once, at creation

    # The notifier gave up on two of its messages and disabled it; one is older.
    endpoint_id = uuid.UUID(endpoint["id"])
    asset = await api.upload()
    job = await (await api.submit({"project": PROJECT, "media": {"/media/a.mp4": asset}})).json()
    q = sql.queries("webhooks")
    async with api.pool.acquire() as conn:
        tenant_id = (await jobs.get(conn, uuid.UUID(job["id"]))).tenant_id
        for seq, age in ((2, "1 hour"), (3, "3 days")):
            await conn.execute(
                q.insert_message,
                uuid.uuid4(),
                tenant_id,
                uuid.UUID(job["id"]),
                seq,
                "job.failed",
                endpoint_id,
                "https://hooks.example/all",
                {},
            )
            await conn.execute(
                "UPDATE webhook_messages SET status = 'failed', "
                f"created_at = now() - interval '{age}' WHERE event_seq = $1",
                seq,
            )
        await conn.execute(
            "UPDATE webhook_endpoints SET enabled = false, failure_count = 5, "
            "disabled_at = now() WHERE id = $1",
            endpoint_id,
        )
    recovered = await api.client.post(
        f"/v1/webhooks/endpoints/{endpoint_id}/recover", headers=api.auth()
    )
    assert recovered.status == 200, await recovered.text()
    body = await recovered.json()
    assert body["resent"] == 1  # the last 24 hours by default
    assert body["endpoint"]["enabled"] and body["endpoint"]["failure_count"] == 0
    older = await api.client.post(
        f"/v1/webhooks/endpoints/{endpoint_id}/recover",
        json={"since": "2000-01-01T00:00:00Z"},
        headers=api.auth(),
    )
    assert (await older.json())["resent"] == 1  # the 3-day-old one; the other is pending

    async with api.pool.acquire() as conn:
        _, other_key = await tenants.create(conn, "tenant-b")
    for method, url in (
        ("DELETE", f"/v1/webhooks/endpoints/{endpoint_id}"),
        ("POST", f"/v1/webhooks/endpoints/{endpoint_id}/recover"),
    ):
        assert (await api.client.request(method, url, headers=api.auth(other_key))).status == 404
    deleted = await api.client.delete(f"/v1/webhooks/endpoints/{endpoint_id}", headers=api.auth())
    assert deleted.status == 204
    async with api.pool.acquire() as conn:
        statuses = await conn.fetch("SELECT status FROM webhook_messages")
    assert {r["status"] for r in statuses} == {"failed"}  # pending ones given up
    again = await api.client.delete(f"/v1/webhooks/endpoints/{endpoint_id}", headers=api.auth())
    assert again.status == 404
    bad = await api.client.post(
        "/v1/webhooks/endpoints", json={"url": "ftp://x"}, headers=api.auth()
    )
    assert bad.status == 400


async def test_unknown_routes_and_methods_answer_in_the_error_envelope(api: Api) -> None:
    missing = await api.client.get("/v1/nothing", headers={"X-Request-Id": "req-1"})
    assert missing.status == 404
    assert missing.content_type == "application/json"
    assert (await missing.json())["error"] == {
        "code": "not_found",
        "message": "no such endpoint: GET /v1/nothing (see /openapi.json)",
        "detail": None,
        "request_id": "req-1",
    }
    wrong = await api.client.delete("/v1/jobs")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "GET,HEAD,POST"
    error = (await wrong.json())["error"]
    assert error["code"] == "method_not_allowed"
    assert error["message"] == "DELETE is not allowed on /v1/jobs: use GET, HEAD, POST"


async def test_openapi_and_health(api: Api) -> None:
    doc = await (await api.client.get("/openapi.json")).json()
    assert "/v1/jobs" in doc["paths"] and "JobRequest" in doc["components"]["schemas"]
    for path in ("/v1/uploads/direct", "/v1/uploads/{upload_id}/complete"):
        assert "post" in doc["paths"][path]
    assert "put" in doc["paths"]["/v1/files/{key}"]
    # Every route the gateway serves is in the document, with its method.
    served = {
        (route.method.lower(), route.resource.canonical.replace("{key:.+}", "{key}"))
        for route in api.client.app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "OPTIONS", "*")
    }
    documented = {(m, path) for path, ops in doc["paths"].items() for m in ops}
    hidden = {"/openapi.json", "/healthz", "/readyz", "/metrics"}
    assert {(m, path) for m, path in served if path not in hidden} <= documented
    assert {"DirectUploadRequest", "DirectUploadView", "UploadPartTarget"} <= set(
        doc["components"]["schemas"]
    )
    assert (await api.client.get("/healthz")).status == 200
    assert (await api.client.get("/readyz")).status == 200
    metrics = await (await api.client.get("/metrics")).text()
    assert "rendermill_http_requests_total" in metrics


async def test_sue_container_job_stores_embedded_media(api: Api) -> None:
    from rendermill.common.project import container

    project = {
        "width": 320,
        "height": 180,
        "tracks": [
            {
                "controllerName": "video",
                "url": "blob:https://editor/9f1c-intro",
                "actions": [{"start": 0, "end": 1}],
            },
            {
                "controllerName": "audio",
                "url": "/static/editor/music.mp3",
                "actions": [{"start": 0, "end": 1}],
            },
        ],
    }
    clip, music = b"\x01" * 3000, b"\x02" * 2000
    data = container.build(
        msgspec.json.encode(project),
        [("intro.mp4", "video/mp4", clip), ("music.mp3", "audio/mpeg", music)],
    )
    resp = await api.client.post(
        "/v1/jobs",
        data=data,
        params={"resolution": "320x180", "fps": "25"},
        headers={**api.auth(), "Content-Type": "application/octet-stream"},
    )
    assert resp.status == 202, await resp.text()
    view = await resp.json()
    assert view["output"]["fps"] == 25
    async with api.pool.acquire() as conn:
        job = await jobs.get(conn, uuid.UUID(view["id"]))
        assets = {
            r["name"]: r
            for r in await conn.fetch("SELECT * FROM assets WHERE tenant_id = $1", job.tenant_id)
        }
    assert set(assets) == {"intro.mp4", "music.mp3"}
    assert job.media == {
        "blob:https://editor/9f1c-intro": str(assets["intro.mp4"]["id"]),
        "/static/editor/music.mp3": str(assets["music.mp3"]["id"]),
    }
    assert (api.cfg.store_root / assets["intro.mp4"]["object_key"]).read_bytes() == clip

    truncated = await api.client.post(
        "/v1/jobs",
        data=data[:-500],
        headers={**api.auth(), "Content-Type": "application/octet-stream"},
    )
    assert truncated.status == 422
    assert "music.mp3" in (await truncated.json())["error"]["message"]

    # A container's priority is a query parameter too, checked before anything is stored.
    for value, tier in (("low", "low"), ("5", "high"), ("-2", "low")):
        resp = await api.client.post(
            "/v1/jobs",
            data=data,
            params={"resolution": "320x180", "priority": value},
            headers={**api.auth(), "Content-Type": "application/octet-stream"},
        )
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["priority"] == tier
    async with api.pool.acquire() as conn:
        assets_before = await conn.fetchval("SELECT count(*) FROM assets")
    for value in ("urgent", "1000", "1.5"):
        resp = await api.client.post(
            "/v1/jobs",
            data=data,
            params={"priority": value},
            headers={**api.auth(), "Content-Type": "application/octet-stream"},
        )
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert err["message"].startswith("priority ") and value in err["message"]
        assert '"high", "normal" or "low", or an integer from -100 to 100' in err["message"]
        assert err["detail"] == {"path": "priority", "allowed": ["high", "normal", "low"]}
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM assets") == assets_before


async def test_pages_of_allowed_origins_may_call_the_api_from_the_browser(api: Api) -> None:
    # Without RENDERMILL_CORS_ORIGINS a browser gets no CORS grant at all.
    resp = await api.client.get("/v1/jobs", headers={**api.auth(), "Origin": "http://x.test"})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers

    app_origin = "http://localhost:3000"
    cfg = msgspec.structs.replace(api.cfg, cors_origins=f"{app_origin}, https://app.example.com/")
    async with TestClient(TestServer(create_app(cfg))) as client:
        # The preflight a browser sends before a JSON POST with the API key.
        resp = await client.options(
            "/v1/jobs",
            headers={
                "Origin": app_origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
        assert resp.status == 200, await resp.text()
        assert resp.headers["Access-Control-Allow-Origin"] == app_origin
        allowed = resp.headers["Access-Control-Allow-Headers"].lower()
        assert {"authorization", "content-type", "idempotency-key"} <= {
            h.strip() for h in allowed.split(",")
        }
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]

        resp = await client.get("/v1/jobs", headers={**api.auth(), "Origin": app_origin})
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == app_origin
        assert "X-Request-Id" in resp.headers["Access-Control-Expose-Headers"]
        # The other listed origin (written with a trailing slash) is allowed too.
        resp = await client.get(
            "/v1/jobs", headers={**api.auth(), "Origin": "https://app.example.com"}
        )
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"

        # Another site's page gets no grant: the browser withholds the answer.
        resp = await client.options(
            "/v1/jobs",
            headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"},
        )
        assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers

    bad = msgspec.structs.replace(api.cfg, cors_origins="localhost:3000")
    with pytest.raises(errors.InvalidInput, match="is not an origin"):
        create_app(bad)


async def test_a_tenant_capped_below_high_cannot_jump_the_queue(api: Api) -> None:
    async with api.pool.acquire() as conn:
        tenant = await tenants.authenticate(conn, api.key)
        await tenants.set_max_tier(conn, tenant.id, schemas.Tier.NORMAL)
    project = {
        "tracks": [
            {
                "controllerName": "video",
                "url": "https://media.test/a.mp4",
                "actions": [{"start": 0, "end": 1}],
            }
        ]
    }
    resp = await api.submit({"project": project, "priority": "high"})
    assert resp.status == 403, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "forbidden" and "highest tier, 'normal'" in error["message"]
    assert error["detail"] == {"path": "priority", "max": "normal"}
    resp = await api.submit({"project": project, "priority": 5})  # an old integer: high
    assert resp.status == 403
    resp = await api.submit({"project": project, "priority": "normal"})
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["priority"] == "normal"


async def test_the_client_follows_on_across_a_gateway_restart(api: Api) -> None:
    from rendermill.cli.client import Client

    asset = await api.upload()
    job = await (await api.submit({"project": PROJECT, "media": {"/media/a.mp4": asset}})).json()
    job_id = uuid.UUID(job["id"])
    # A gateway of its own on a fixed port, restarted while the client follows the job.
    port = free_port()
    first = TestServer(create_app(api.cfg), port=port)
    await first.start_server()
    seen: list[tuple[int, str]] = []
    got_started = asyncio.Event()

    async def follow() -> None:
        async with Client(f"http://127.0.0.1:{port}", api.key) as client:
            async for event in client.events(str(job_id)):
                seen.append((event["seq"], event["type"]))
                if event["type"] == "job.started":
                    got_started.set()

    follower = asyncio.create_task(follow())
    async with api.pool.acquire() as conn:
        await jobs.start_attempt(conn, job_id, 1)
    await asyncio.wait_for(got_started.wait(), 10)
    stopping = time.monotonic()
    # The stream ends with the gateway ("going away"), without holding its shutdown.
    await first.close()
    assert time.monotonic() - stopping < 5.0
    async with api.pool.acquire() as conn:
        await jobs.finish(conn, job_id, JobStatus.SUCCEEDED, result=None)
    second = TestServer(create_app(api.cfg), port=port)
    await second.start_server()
    try:
        await asyncio.wait_for(follower, 30)
    finally:
        await second.close()
    # Each event once, in order, through the terminal one.
    assert seen == [(1, "job.queued"), (2, "job.started"), (3, "job.succeeded")]


async def test_a_tenant_past_its_rate_is_told_to_slow_down(
    api: Api, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    cfg = msgspec.structs.replace(api.cfg, rate_limit=5.0)  # bursts of 10 pass
    async with pool.acquire() as conn:
        _, other = await tenants.create(conn, "tenant-b")
    async with TestClient(TestServer(create_app(cfg))) as client:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(client.get("/v1/jobs", headers=api.auth()) for _ in range(25))
        )
        took = time.monotonic() - started
        statuses = [r.status for r in answers]
        # Ten at once, and five a second more for the time the requests took.
        assert 10 <= statuses.count(200) <= 11 + 5 * took
        assert set(statuses) == {200, 429}
        refused = next(r for r in answers if r.status == 429)
        assert refused.headers["Retry-After"] == "1"
        error = (await refused.json())["error"]
        assert error["code"] == "rate_limited"
        assert error["message"] == (
            "more than 5 requests a second from this tenant: slow down and retry"
        )
        # Another tenant is not held back by the first one's haste.
        assert (await client.get("/v1/jobs", headers=api.auth(other))).status == 200
        # A second later the bucket has room for about five more.
        await asyncio.sleep(1.0)
        started = time.monotonic()
        later = await asyncio.gather(
            *(client.get("/v1/jobs", headers=api.auth()) for _ in range(12))
        )
        took = time.monotonic() - started
        assert 4 <= [r.status for r in later].count(200) <= 6 + 5 * took


async def test_the_client_waits_as_told_when_rate_limited(api: Api) -> None:
    from rendermill.cli.client import ApiError, Client

    asset = await api.upload()
    cfg = msgspec.structs.replace(api.cfg, rate_limit=2.0)  # bursts of 4 pass
    async with (
        TestServer(create_app(cfg)) as server,
        Client(str(server.make_url("")), api.key) as client,
    ):
        job = await client.submit({"project": PROJECT, "media": {"/media/a.mp4": asset}})
        started = time.monotonic()
        # Eight calls for a budget of four: the rest wait out a Retry-After each.
        views = [await client.job(job["id"]) for _ in range(8)]
        assert {v["id"] for v in views} == {job["id"]}
        assert time.monotonic() - started >= 1.0
        # What asking again cannot mend is not asked again.
        with pytest.raises(ApiError) as refused:
            await client.job(str(uuid.uuid4()))
        assert refused.value.status == 404
