"""Direct uploads through the gateway, on both stores: the filesystem store (part URLs
served by the gateway itself) and S3 (presigned UploadPart URLs, moto in server mode).
The client side is the same code for both: PUT each part to its URL, then complete."""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rendermill.cli import synth
from rendermill.common import errors, jobs, settings, tenants
from rendermill.common.schemas import JobStatus
from rendermill.common.store import Store
from rendermill.common.store.fs import FsStore
from rendermill.common.store.s3 import S3Store
from rendermill.common.testing import free_port
from rendermill.gateway import direct
from rendermill.gateway.app import create_app
from rendermill.renderer import service

REGION = "us-east-1"


class Gateway:
    def __init__(
        self,
        client: TestClient[web.Request, web.Application],
        key: str,
        pool: asyncpg.Pool,
        cfg: settings.Gateway,
        store: Store,
    ) -> None:
        self.client = client
        self.key = key
        self.pool = pool
        self.cfg = cfg
        self.store = store

    @property
    def part_size(self) -> int:
        return max(self.cfg.upload_part_bytes, self.store.min_part_size)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def start(self, body: dict[str, Any], key: str | None = None) -> aiohttp.ClientResponse:
        return await self.client.post("/v1/uploads/direct", json=body, headers=self.auth(key))

    async def plan(self, data: bytes, name: str = "clip.mp4", **fields: Any) -> dict[str, Any]:
        resp = await self.start({"name": name, "size": len(data), **fields})
        assert resp.status == 201, await resp.text()
        plan: dict[str, Any] = await resp.json()
        return plan

    async def complete(
        self, upload_id: str, body: dict[str, Any] | None = None, key: str | None = None
    ) -> aiohttp.ClientResponse:
        return await self.client.post(
            f"/v1/uploads/{upload_id}/complete", json=body, headers=self.auth(key)
        )

    async def abort(self, upload_id: str, key: str | None = None) -> aiohttp.ClientResponse:
        return await self.client.post(f"/v1/uploads/{upload_id}/abort", headers=self.auth(key))

    async def row(self, upload_id: str) -> asyncpg.Record:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM direct_uploads WHERE id = $1", uuid.UUID(upload_id)
            )
        assert row is not None
        return row


async def put(url: str, data: bytes) -> aiohttp.ClientResponse:
    """A part PUT as any HTTP client sends it: no credentials, no extra headers."""
    async with aiohttp.ClientSession() as session, session.put(url, data=data) as resp:
        await resp.read()
        return resp


async def put_parts(plan: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """PUT every part of ``data`` as the plan cuts it (last first: order does not matter);
    returns the parts with their ETags, for completion."""
    done = []
    for part in reversed(plan["parts"]):
        resp = await put(part["url"], data[part["offset"] : part["offset"] + part["size"]])
        assert resp.status == 200, resp.status
        done.append({"number": part["number"], "etag": resp.headers["ETag"]})
    return sorted(done, key=lambda p: p["number"])


@contextlib.asynccontextmanager
async def _gateway(
    db_url: str, pool: asyncpg.Pool, tmp_path: Path, moto_url: str | None
) -> AsyncIterator[Gateway]:
    """A running gateway on the filesystem store, or on S3 at ``moto_url``."""
    port = free_port()
    overrides: dict[str, object] = {
        "database_url": db_url,
        "store_path": str(tmp_path / "store"),
        "url_signing_key": "test-key",
        "public_url": f"http://127.0.0.1:{port}",
        # As small as the store allows: 1000 bytes on fs, 5 MiB on S3.
        "upload_part_bytes": 1000,
        "max_upload_bytes": 20 * 1024**2,
    }
    if moto_url is not None:
        bucket = f"rendermill-{uuid.uuid4().hex[:12]}"
        async with aioboto3.Session().client("s3", region_name=REGION, endpoint_url=moto_url) as c:
            await c.create_bucket(Bucket=bucket)
        overrides |= {
            "store": "s3",
            "s3_bucket": bucket,
            "aws_endpoint_url": moto_url,
            "aws_region": REGION,
        }
    cfg = settings.load(settings.Gateway, env={}, overrides=overrides)
    async with pool.acquire() as conn:
        _, key = await tenants.create(conn, "tenant-a")
    client = TestClient(TestServer(create_app(cfg), host="127.0.0.1", port=port))
    await client.start_server()
    try:
        if moto_url is not None:
            async with S3Store.open(cfg.s3_bucket, region=REGION, endpoint_url=moto_url) as s3:
                yield Gateway(client, key, pool, cfg, s3)
        else:
            fs = FsStore(cfg.store_root, signing_key="test-key", public_url=cfg.public_url)
            yield Gateway(client, key, pool, cfg, fs)
    finally:
        await client.close()


@pytest_asyncio.fixture(params=["fs", "s3"])
async def gw(
    request: pytest.FixtureRequest, db_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[Gateway]:
    moto_url = request.getfixturevalue("moto_url") if request.param == "s3" else None
    async with _gateway(db_url, pool, tmp_path, moto_url) as gateway:
        yield gateway


@pytest_asyncio.fixture
async def fs_gw(db_url: str, pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with _gateway(db_url, pool, tmp_path, None) as gateway:
        yield gateway


async def _stored(gw: Gateway, object_key: str, tmp_path: Path) -> bytes:
    dest = tmp_path / f"got-{uuid.uuid4().hex}"
    await gw.store.get_file(object_key, dest)
    return dest.read_bytes()


async def test_small_file_goes_in_one_put_and_becomes_an_asset(gw: Gateway, tmp_path: Path) -> None:
    data = b"a small clip" * 10
    digest = hashlib.sha256(data).hexdigest()
    plan = await gw.plan(data, name="../my clip.mp4", content_type="video/mp4", sha256=digest)
    assert plan["name"] == "my clip.mp4" and plan["size"] == len(data)
    assert len(plan["parts"]) == 1 and plan["url"] == plan["parts"][0]["url"]
    assert plan["parts"][0] | {"url": None} == {
        "number": 1,
        "offset": 0,
        "size": len(data),
        "url": None,
    }
    assert plan["complete_url"] == f"/v1/uploads/{plan['id']}/complete"

    assert (await put(plan["url"], data)).status == 200
    resp = await gw.complete(plan["id"])  # no ETags needed: the store's parts are checked
    assert resp.status == 201, await resp.text()
    asset = await resp.json()
    assert asset["id"] == plan["id"]
    assert (asset["name"], asset["size"], asset["content_type"], asset["sha256"]) == (
        "my clip.mp4",
        len(data),
        "video/mp4",
        digest,
    )
    async with gw.pool.acquire() as conn:
        tenant = await tenants.authenticate(conn, gw.key)
        stored = await tenants.get_asset(conn, uuid.UUID(asset["id"]), tenant.id)
    assert stored.object_key == f"sources/{tenant.id}/{plan['id']}/my clip.mp4"
    assert await _stored(gw, stored.object_key, tmp_path) == data
    assert (await gw.row(plan["id"]))["status"] == "completed"


async def test_large_file_goes_in_parts_and_plays_in_a_project(gw: Gateway, tmp_path: Path) -> None:
    # Three parts where the store allows small ones; on S3 (5 MiB at least) two.
    whole = 2 if isinstance(gw.store, FsStore) else 1
    data = os.urandom(whole * gw.part_size + 234)
    plan = await gw.plan(data)
    assert plan["url"] is None and plan["part_size"] == gw.part_size
    assert [(p["number"], p["offset"], p["size"]) for p in plan["parts"]] == [
        *((n + 1, n * gw.part_size, gw.part_size) for n in range(whole)),
        (whole + 1, whole * gw.part_size, 234),
    ]
    parts = await put_parts(plan, data)
    resp = await gw.complete(plan["id"], {"parts": parts})
    assert resp.status == 201, await resp.text()
    asset = await resp.json()
    assert asset["size"] == len(data) and asset["sha256"] == ""  # none declared
    async with gw.pool.acquire() as conn:
        tenant = await tenants.authenticate(conn, gw.key)
        stored = await tenants.get_asset(conn, uuid.UUID(asset["id"]), tenant.id)
    assert await _stored(gw, stored.object_key, tmp_path) == data

    project = {
        "tracks": [
            {
                "controllerName": "video",
                "url": "blob:https://editor/big",
                "actions": [{"start": 0, "end": 1}],
            }
        ]
    }
    job = await gw.client.post(
        "/v1/jobs",
        json={"project": project, "media": {"blob:https://editor/big": asset["id"]}},
        headers=gw.auth(),
    )
    assert job.status == 202, await job.text()


async def test_a_directly_uploaded_clip_renders(gw: Gateway, db_url: str, tmp_path: Path) -> None:
    clip = synth.make_video(tmp_path / "clip.mp4", color=(200, 0, 0), duration=1.0)
    data = clip.read_bytes()
    plan = await gw.plan(data, content_type="video/mp4")
    await put_parts(plan, data)
    asset = await (await gw.complete(plan["id"])).json()
    project = {
        "width": 320,
        "height": 180,
        "tracks": [
            {
                "controllerName": "video",
                "url": "/media/clip.mp4",
                "actions": [{"start": 0, "end": 1, "fit": "fill"}],
            }
        ],
    }
    resp = await gw.client.post(
        "/v1/jobs",
        json={
            "project": project,
            "media": {"/media/clip.mp4": asset["id"]},
            "output": {"resolution": "320x180", "fps": 30},
        },
        headers=gw.auth(),
    )
    assert resp.status == 202, await resp.text()
    job_id = uuid.UUID((await resp.json())["id"])
    async with gw.pool.acquire() as conn:
        await jobs.start_attempt(conn, job_id, 1)
        await jobs.insert_attempt(conn, job_id, 1, "local")
    cfg = settings.load(
        settings.Renderer,
        env={},
        overrides={"database_url": db_url, "scratch_dir": str(tmp_path / "scratch")},
    )
    scratch = tmp_path / "scratch" / "one"
    scratch.mkdir(parents=True)
    attempt = service.Attempt(cfg, gw.pool, gw.store, job_id, 1)
    assert await attempt.run(scratch) == JobStatus.SUCCEEDED
    async with gw.pool.acquire() as conn:
        done = await jobs.get(conn, job_id)
    assert done.result is not None and done.result["frames"] == 30


async def test_completion_checks_every_part_and_the_upload_can_be_fixed(gw: Gateway) -> None:
    data = os.urandom(gw.part_size + 500)
    plan = await gw.plan(data)
    first, last = plan["parts"]
    assert (await put(first["url"], data[: gw.part_size])).status == 200

    resp = await gw.complete(plan["id"])
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["message"].startswith("part 2 of 2 not uploaded yet")
    assert error["detail"] == {"missing_parts": [2]}

    # A short part: named with its size and the planned one.
    assert (await put(last["url"], data[gw.part_size : -1])).status == 200
    resp = await gw.complete(plan["id"])
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert "part 2 is 499 bytes, but the plan gives it 500" in error["message"]
    assert error["detail"] == {"wrong_sizes": [{"part": 2, "size": 499, "planned": 500}]}

    # A long one: the gateway refuses it at once; S3 takes it and completion refuses it.
    long = await put(last["url"], data[gw.part_size :] + b"!")
    if isinstance(gw.store, FsStore):
        assert long.status == 413
    else:
        assert long.status == 200
        assert (await gw.complete(plan["id"])).status == 400

    ok = await put(last["url"], data[gw.part_size :])
    stale = {"number": 2, "etag": '"0123456789abcdef0123456789abcdef"'}
    resp = await gw.complete(plan["id"], {"parts": [{"number": 1, "etag": "x"}, stale]})
    assert resp.status == 400
    assert "ETag" in (await resp.json())["error"]["message"]
    resp = await gw.complete(plan["id"], {"parts": [stale]})
    assert resp.status == 400
    assert "each of the upload's 2 parts" in (await resp.json())["error"]["message"]

    first_etag = (await gw.store.list_parts(*await _store_ids(gw, plan["id"])))[0].etag
    body = {"parts": [{"number": 1, "etag": first_etag}, {"number": 2, "etag": ok.headers["ETag"]}]}
    resp = await gw.complete(plan["id"], body)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["size"] == len(data)


async def _store_ids(gw: Gateway, upload_id: str) -> tuple[str, str]:
    row = await gw.row(upload_id)
    return row["object_key"], row["store_upload_id"]


async def test_a_wrongly_declared_size_is_refused_until_aborted(gw: Gateway) -> None:
    data = b"ninety bytes" * 7 + b"......"
    plan = await gw.plan(data + b"0123456789")  # declares 10 bytes more than it sends
    assert (await put(plan["url"], data)).status == 200
    resp = await gw.complete(plan["id"])
    assert resp.status == 400
    message = (await resp.json())["error"]["message"]
    assert f"part 1 is {len(data)} bytes, but the plan gives it {len(data) + 10}" in message
    assert "start a new one with the file's exact size" in message
    assert (await gw.abort(plan["id"])).status == 204
    with pytest.raises(errors.NotFound):
        await gw.store.list_parts(*await _store_ids(gw, plan["id"]))


async def test_completing_twice_answers_the_same_asset(gw: Gateway) -> None:
    data = b"twice" * 50
    plan = await gw.plan(data)
    await put_parts(plan, data)
    first = await gw.complete(plan["id"])
    assert first.status == 201
    again = await gw.complete(plan["id"])
    assert again.status == 200
    assert await again.json() == await first.json()
    async with gw.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM assets") == 1
    # Its URLs take nothing more: the store's upload is over.
    assert (await put(plan["url"], b"replaced")).status >= 400
    resp = await gw.abort(plan["id"])
    assert resp.status == 409 and "completed" in (await resp.json())["error"]["message"]


async def test_abort_removes_the_parts_and_ends_the_upload(gw: Gateway) -> None:
    data = os.urandom(gw.part_size + 10)
    plan = await gw.plan(data)
    assert (await put(plan["parts"][0]["url"], data[: gw.part_size])).status == 200
    assert (await gw.abort(plan["id"])).status == 204
    with pytest.raises(errors.NotFound):
        await gw.store.list_parts(*await _store_ids(gw, plan["id"]))
    assert (await put(plan["parts"][1]["url"], data[gw.part_size :])).status >= 400
    resp = await gw.complete(plan["id"])
    assert resp.status == 409
    assert (await resp.json())["error"]["message"].endswith("was aborted: start a new upload")
    assert (await gw.abort(plan["id"])).status == 204  # again: nothing to do
    row = await gw.row(plan["id"])
    # Cleaned; once more after the URLs expire, for a part PUT that was still on its way.
    assert row["status"] == "aborted"
    assert row["cleanup_at"] > row["expires_at"]


async def test_expired_uploads_are_refused_and_swept(gw: Gateway) -> None:
    data = os.urandom(gw.part_size + 10)
    lazy, swept = await gw.plan(data), await gw.plan(data)
    for plan in (lazy, swept):
        assert (await put(plan["parts"][0]["url"], data[: gw.part_size])).status == 200
    async with gw.pool.acquire() as conn:
        await conn.execute("UPDATE direct_uploads SET expires_at = now() - interval '1 second'")

    # Completing an expired upload refuses it and removes its parts at once.
    resp = await gw.complete(lazy["id"])
    assert resp.status == 409
    message = (await resp.json())["error"]["message"]
    assert "expired at" in message and "start a new upload" in message
    with pytest.raises(errors.NotFound):
        await gw.store.list_parts(*await _store_ids(gw, lazy["id"]))

    # The other is left to the sweep, which every gateway runs; it reads as expired (with
    # no part URLs) already.
    assert (await gw.row(swept["id"]))["status"] == "pending"
    now = await (await gw.client.get(f"/v1/uploads/{swept['id']}", headers=gw.auth())).json()
    assert now["status"] == "expired" and now["parts"] == [] and now["missing"] == []
    assert await direct.sweep(gw.pool, gw.store) == 1
    row = await gw.row(swept["id"])
    assert row["status"] == "expired" and row["cleanup_at"] > row["expires_at"]
    with pytest.raises(errors.NotFound):
        await gw.store.list_parts(*await _store_ids(gw, swept["id"]))
    assert await direct.sweep(gw.pool, gw.store) == 0  # nothing due until the last pass
    async with gw.pool.acquire() as conn:  # the last pass, once late PUTs cannot come
        await conn.execute(
            "UPDATE direct_uploads SET cleanup_at = now(), expires_at = now() - interval '2h'"
        )
    assert await direct.sweep(gw.pool, gw.store) == 2
    async with gw.pool.acquire() as conn:
        due = await conn.fetchval(
            "SELECT count(*) FROM direct_uploads WHERE cleanup_at IS NOT NULL"
        )
    assert due == 0
    if isinstance(gw.store, FsStore):
        assert list((gw.cfg.store_root / ".multipart").iterdir()) == []


async def test_a_completion_that_died_is_given_up_and_its_object_removed(gw: Gateway) -> None:
    data = b"orphan" * 20
    plan = await gw.plan(data)
    await put_parts(plan, data)
    key, store_upload_id = await _store_ids(gw, plan["id"])
    # As a gateway that died after joining the parts, before recording the asset.
    parts = await gw.store.list_parts(key, store_upload_id)
    await gw.store.complete_multipart(key, store_upload_id, parts)
    async with gw.pool.acquire() as conn:
        await conn.execute(
            "UPDATE direct_uploads SET status = 'completing', "
            "updated_at = now() - interval '2 hours'"
        )
    assert await direct.sweep(gw.pool, gw.store) == 1
    assert (await gw.row(plan["id"]))["status"] == "failed"
    with pytest.raises(errors.NotFound):
        await gw.store.size(key)


async def test_a_completion_retried_after_the_parts_were_joined_succeeds(gw: Gateway) -> None:
    data = b"joined" * 20
    plan = await gw.plan(data)
    await put_parts(plan, data)
    key, store_upload_id = await _store_ids(gw, plan["id"])
    # The first completion joined the parts and failed before recording the asset.
    parts = await gw.store.list_parts(key, store_upload_id)
    await gw.store.complete_multipart(key, store_upload_id, parts)
    resp = await gw.complete(plan["id"])
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["size"] == len(data)


async def test_a_joined_object_of_the_wrong_size_is_refused_and_deleted(gw: Gateway) -> None:
    data = b"short" * 20
    plan = await gw.plan(data + b"missing")
    assert (await put(plan["url"], data)).status == 200
    key, store_upload_id = await _store_ids(gw, plan["id"])
    # Joined unchecked (as by a completion that died before recording the asset).
    parts = await gw.store.list_parts(key, store_upload_id)
    await gw.store.complete_multipart(key, store_upload_id, parts)
    resp = await gw.complete(plan["id"])
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["message"] == (
        f"the uploaded file is {len(data)} bytes, but {len(data) + 7} were declared; it was "
        "deleted: start a new upload with the file's exact size"
    )
    with pytest.raises(errors.NotFound):
        await gw.store.size(key)
    assert (await gw.row(plan["id"]))["status"] == "failed"
    assert (await gw.complete(plan["id"])).status == 409
    async with gw.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM assets") == 0


async def test_an_interrupted_upload_resumes_from_its_status(gw: Gateway, tmp_path: Path) -> None:
    whole = 2 if isinstance(gw.store, FsStore) else 1
    data = os.urandom(whole * gw.part_size + 99)
    plan = await gw.plan(data)
    first = plan["parts"][0]
    assert (await put(first["url"], data[: first["size"]])).status == 200
    # The client lost its plan (or its URLs are about to expire): it asks where it stands.
    resp = await gw.client.get(f"/v1/uploads/{plan['id']}", headers=gw.auth())
    assert resp.status == 200, await resp.text()
    now = await resp.json()
    assert now["status"] == "pending" and now["asset_id"] is None
    assert [(p["number"], p["size"]) for p in now["uploaded"]] == [(1, first["size"])]
    assert now["missing"] == list(range(2, whole + 2))
    assert [p["number"] for p in now["parts"]] == list(range(1, whole + 2))
    for part in now["parts"]:
        if part["number"] in now["missing"]:
            chunk = data[part["offset"] : part["offset"] + part["size"]]
            assert (await put(part["url"], chunk)).status == 200
    resp = await gw.complete(plan["id"])
    assert resp.status == 201, await resp.text()
    done = await (await gw.client.get(f"/v1/uploads/{plan['id']}", headers=gw.auth())).json()
    assert done["status"] == "completed" and done["asset_id"] == plan["id"]
    assert done["parts"] == [] and done["missing"] == []
    async with gw.pool.acquire() as conn:
        tenant = await tenants.authenticate(conn, gw.key)
        stored = await tenants.get_asset(conn, uuid.UUID(plan["id"]), tenant.id)
    assert await _stored(gw, stored.object_key, tmp_path) == data

    other = await gw.plan(b"gone" * 4)
    assert (await gw.abort(other["id"])).status == 204
    gone = await (await gw.client.get(f"/v1/uploads/{other['id']}", headers=gw.auth())).json()
    assert gone["status"] == "aborted" and gone["parts"] == []
    async with gw.pool.acquire() as conn:
        _, stranger = await tenants.create(conn, "tenant-c")
    resp = await gw.client.get(f"/v1/uploads/{plan['id']}", headers=gw.auth(stranger))
    assert resp.status == 404


async def test_another_tenants_upload_is_not_found(gw: Gateway) -> None:
    data = b"mine" * 10
    plan = await gw.plan(data)
    await put_parts(plan, data)
    async with gw.pool.acquire() as conn:
        _, other = await tenants.create(conn, "tenant-b")
    for resp in (await gw.complete(plan["id"], key=other), await gw.abort(plan["id"], key=other)):
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    assert (await gw.complete(plan["id"])).status == 201  # untouched for its owner
    assert (await gw.complete(str(uuid.uuid4()))).status == 404
    assert (await gw.complete("not-an-id")).status == 404


async def test_bad_requests_say_what_is_wrong(gw: Gateway) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"name": "a.mp4", "size": 0}, 400, "size: Expected `int` >= 1"),
        ({"name": "a.mp4", "size": 21 * 1024**2}, 413, "limited to 20971520 bytes"),
        ({"name": "a.mp4", "size": 10, "sha256": "abc"}, 400, "sha256: "),
        ({"size": 10}, 400, "name"),
        ({"name": "a.mp4", "size": 10, "parts": 3}, 400, "parts"),
    ]
    for body, status, words in cases:
        resp = await gw.start(body)
        assert resp.status == status, body
        assert words in (await resp.json())["error"]["message"], body
    resp = await gw.client.post("/v1/uploads/direct", json={"name": "a", "size": 1})
    assert resp.status == 401
    plan = await gw.plan(b"abc")
    resp = await gw.complete(plan["id"], {"parts": "all of them"})
    assert resp.status == 400 and "parts: " in (await resp.json())["error"]["message"]
    async with gw.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM direct_uploads") == 1


async def test_the_gateways_part_urls_are_signed_and_expire(fs_gw: Gateway) -> None:
    """The filesystem store's part URLs, which the gateway checks. (S3 checks its own
    presigned URLs; moto does not, so there is nothing of ours to test there.)"""
    gw = fs_gw
    assert isinstance(gw.store, FsStore)
    data = b"signed" * 10
    plan = await gw.plan(data)
    url: str = plan["url"]
    parsed = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parsed.query))

    def with_query(**changes: str) -> str:
        return parsed._replace(query=urllib.parse.urlencode(query | changes)).geturl()

    for tampered in (
        with_query(max_bytes="100000"),
        with_query(part="2"),
        with_query(sig="0" * 64),
        url.replace("clip.mp4", "other.mp4"),
    ):
        resp = await gw.client.put(tampered.removeprefix(gw.cfg.public_url), data=data)
        assert resp.status == 401, tampered
        assert "invalid upload signature" in (await resp.json())["error"]["message"]
    malformed = parsed._replace(query="").geturl()
    assert (await put(malformed, data)).status == 401

    key, store_upload_id = await _store_ids(gw, plan["id"])
    expired = gw.store.presign_part(key, store_upload_id, 1, ttl=-1, max_bytes=len(data))
    resp = await gw.client.put(expired.removeprefix(gw.cfg.public_url), data=data)
    assert resp.status == 401
    assert "expired" in (await resp.json())["error"]["message"]

    too_long = await gw.client.put(url.removeprefix(gw.cfg.public_url), data=data + b"!")
    assert too_long.status == 413
    assert (await gw.client.put(url.removeprefix(gw.cfg.public_url), data=data)).status == 200
    # A download signature is no upload signature (and the other way round).
    download = gw.store.download_url(key, ttl=60)
    assert (await put(download, data)).status == 401
    assert (await gw.client.get(url.removeprefix(gw.cfg.public_url))).status == 401
