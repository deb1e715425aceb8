"""With RENDERMILL_RETENTION_DAYS, outputs and uploads kept that long leave the store:
the job keeps its record (without a link), an upload a job still waits for stays."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from rendermill.common import jobs, schemas, tenants
from rendermill.common.schemas import JobStatus
from rendermill.common.store import fs, output_key
from rendermill.common.testing import gateway_settings
from rendermill.gateway import retention
from rendermill.gateway.app import create_app

PROJECT = {
    "width": 320,
    "height": 180,
    "tracks": [{"controllerName": "video", "url": "/a.mp4", "actions": [{"start": 0, "end": 1}]}],
}


def _result(object_key: str) -> dict[str, Any]:
    """A result as the renderer records it."""
    return {
        "object_key": object_key,
        "size_bytes": 5,
        "duration": 1.0,
        "width": 320,
        "height": 180,
        "frames": 30,
        "sha256": "",
        "content_type": "video/mp4",
    }


@pytest_asyncio.fixture
async def gateway(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], str]]:
    cfg = gateway_settings(db_url, tmp_path / "store")
    async with TestClient(TestServer(create_app(cfg))) as client:
        yield client, str(cfg.store_root)


async def test_outputs_and_sources_kept_long_enough_are_removed(
    gateway: tuple[TestClient[Any, Any], str], pool: asyncpg.Pool
) -> None:
    client, root = gateway
    store = fs.FsStore(Path(root), signing_key="k", public_url="http://x")
    async with pool.acquire() as conn:
        tenant, key = await tenants.create(conn, "t")
    auth = {"Authorization": f"Bearer {key}"}

    async def upload(name: str) -> dict[str, Any]:
        resp = await client.post("/v1/uploads", params={"name": name}, data=b"x" * 64, headers=auth)
        assert resp.status == 201
        return dict(await resp.json())

    waiting_for, unused, played = (
        await upload("a.mp4"),
        await upload("b.mp4"),
        await upload("c.mp4"),
    )
    # A job still queued plays the first upload.
    queued = await client.post(
        "/v1/jobs", json={"project": PROJECT, "media": {"/a.mp4": waiting_for["id"]}}, headers=auth
    )
    assert queued.status == 202
    # A job that finished long ago, with its output and poster in the store, played the third.
    async with pool.acquire() as conn:
        done, _ = await jobs.create(
            conn,
            tenant_id=tenant.id,
            project={},
            output=schemas.OutputSpec(),
            media={"/a.mp4": played["id"]},
        )
        out, poster = (
            output_key(str(tenant.id), str(done.id), n) for n in ("output.mp4", "poster.jpg")
        )
        for k in (out, poster):
            (Path(root) / k).parent.mkdir(parents=True, exist_ok=True)
            (Path(root) / k).write_bytes(b"video")
        result = {**_result(out), "poster_key": poster}
        await jobs.start_attempt(conn, done.id, 1)
        await jobs.finish(conn, done.id, JobStatus.SUCCEEDED, result=result)
        await conn.execute("UPDATE jobs SET finished_at = now() - interval '31 days'")
        await conn.execute("UPDATE assets SET created_at = now() - interval '31 days'")
        objects = {str(r["id"]): r["object_key"] for r in await conn.fetch("SELECT * FROM assets")}

    assert await retention.sweep(pool, store, 30) == (1, 2)
    assert not (Path(root) / out).exists() and not (Path(root) / poster).exists()
    view = await (await client.get(f"/v1/jobs/{done.id}", headers=auth)).json()
    assert view["status"] == "succeeded"
    assert view["result"]["expired_at"] and view["result"]["download_url"] is None
    assert view["result"]["poster_url"] is None
    async with pool.acquire() as conn:
        left = {str(r["id"]) for r in await conn.fetch("SELECT id FROM assets")}
    # The upload a queued job waits for stays; the others are gone, with their bytes.
    assert left == {waiting_for["id"]}
    for asset, kept in ((waiting_for, True), (unused, False), (played, False)):
        assert (Path(root) / objects[asset["id"]]).exists() == kept
    # Nothing is swept twice.
    assert await retention.sweep(pool, store, 30) == (0, 0)
    # A week's retention keeps what is a day old.
    async with pool.acquire() as conn:
        await conn.execute("UPDATE assets SET created_at = now() - interval '1 day'")
        await conn.execute("UPDATE jobs SET status = 'canceled' WHERE id <> $1", done.id)
    assert await retention.sweep(pool, store, 7) == (0, 0)


async def test_a_gateway_with_retention_sweeps_when_it_starts(
    db_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        tenant, _ = await tenants.create(conn, "t")
        job, _ = await jobs.create(
            conn, tenant_id=tenant.id, project={}, output=schemas.OutputSpec(), media={}
        )
        await jobs.start_attempt(conn, job.id, 1)
        await jobs.finish(conn, job.id, JobStatus.SUCCEEDED, result={"object_key": "outputs/x"})
        await conn.execute("UPDATE jobs SET finished_at = now() - interval '8 days'")
    cfg = gateway_settings(db_url, tmp_path / "store", retention_days=7)
    async with TestClient(TestServer(create_app(cfg))):
        for _ in range(50):
            async with pool.acquire() as conn:
                result = await conn.fetchval("SELECT result FROM jobs WHERE id = $1", job.id)
            if "expired_at" in result:
                break
            await asyncio.sleep(0.1)
    assert "expired_at" in result


async def test_a_tenant_deletes_an_output_or_an_upload_on_request(
    gateway: tuple[TestClient[Any, Any], str], pool: asyncpg.Pool
) -> None:
    client, root = gateway
    async with pool.acquire() as conn:
        tenant, key = await tenants.create(conn, "t")
        _, stranger = await tenants.create(conn, "someone else")
    auth = {"Authorization": f"Bearer {key}"}
    upload = await (
        await client.post("/v1/uploads", params={"name": "a.mp4"}, data=b"x", headers=auth)
    ).json()
    submitted = await client.post(
        "/v1/jobs", json={"project": PROJECT, "media": {"/a.mp4": upload["id"]}}, headers=auth
    )
    job_id = (await submitted.json())["id"]
    # While the job may still play the upload, neither goes.
    busy = await client.delete(f"/v1/uploads/{upload['id']}", headers=auth)
    assert busy.status == 409
    assert f"played by job {job_id}" in (await busy.json())["error"]["message"]
    assert (await client.delete(f"/v1/jobs/{job_id}/output", headers=auth)).status == 409
    out = output_key(str(tenant.id), job_id, "output.mp4")
    (Path(root) / out).parent.mkdir(parents=True)
    (Path(root) / out).write_bytes(b"video")
    async with pool.acquire() as conn:
        await jobs.start_attempt(conn, uuid.UUID(job_id), 1)
        await jobs.finish(conn, uuid.UUID(job_id), JobStatus.SUCCEEDED, result=_result(out))
        source = await conn.fetchval("SELECT object_key FROM assets")
    # Another tenant's key finds neither.
    other = {"Authorization": f"Bearer {stranger}"}
    assert (await client.delete(f"/v1/jobs/{job_id}/output", headers=other)).status == 404
    assert (await client.delete(f"/v1/uploads/{upload['id']}", headers=other)).status == 404
    # Finished: both go, and asking again answers the same.
    for _ in range(2):
        assert (await client.delete(f"/v1/jobs/{job_id}/output", headers=auth)).status == 204
    assert not (Path(root) / out).exists()
    view = await (await client.get(f"/v1/jobs/{job_id}", headers=auth)).json()
    assert view["result"]["expired_at"] and view["result"]["download_url"] is None
    listed = await (await client.get("/v1/uploads", headers=auth)).json()
    assert [u["id"] for u in listed["uploads"]] == [upload["id"]]
    assert (await client.get("/v1/uploads", headers=other)).status == 200
    assert (await (await client.get("/v1/uploads", headers=other)).json())["uploads"] == []
    assert (await client.delete(f"/v1/uploads/{upload['id']}", headers=auth)).status == 204
    assert not (Path(root) / source).exists()
    assert (await (await client.get("/v1/uploads", headers=auth)).json())["uploads"] == []
    assert (await client.delete(f"/v1/uploads/{upload['id']}", headers=auth)).status == 404
    # A direct upload still under way is not a file yet: it is aborted, not deleted.
    planned = await client.post(
        "/v1/uploads/direct", json={"name": "b.mp4", "size": 100}, headers=auth
    )
    pending = (await planned.json())["id"]
    refused = await client.delete(f"/v1/uploads/{pending}", headers=auth)
    assert refused.status == 409
    assert (
        f"abort it with POST /v1/uploads/{pending}/abort"
        in (await refused.json())["error"]["message"]
    )
