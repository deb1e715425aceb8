"""The object-store contract, run against both adapters: the filesystem store, and S3
through the real aioboto3 client against moto in server mode on 127.0.0.1."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aioboto3
import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from rendermill.common import errors, jobs, schemas, settings, tenants
from rendermill.common.schemas import JobStatus
from rendermill.common.store import Store
from rendermill.common.store.fs import FsStore
from rendermill.common.store.s3 import PART_SIZE, S3Store
from rendermill.gateway.app import create_app

REGION = "us-east-1"


@pytest_asyncio.fixture(params=["fs", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "fs":
        yield FsStore(tmp_path / "store", signing_key="k", public_url="http://127.0.0.1:1")
        return
    endpoint = request.getfixturevalue("moto_url")
    bucket = f"rendermill-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("s3", region_name=REGION, endpoint_url=endpoint) as c:
        await c.create_bucket(Bucket=bucket)
    async with S3Store.open(bucket, region=REGION, endpoint_url=endpoint) as s3:
        yield s3


async def _chunks(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_stream_in_parts_and_read_back(store: Store, tmp_path: Path) -> None:
    # Two whole parts and a short last one: a multipart upload on S3.
    data = os.urandom(2 * PART_SIZE + 12345)
    key = "outputs/t/j/output.mp4"
    assert await store.put_stream(key, _chunks(data), max_bytes=len(data)) == len(data)
    assert await store.size(key) == len(data)
    dest = tmp_path / "back" / "out.mp4"
    assert await store.get_file(key, dest) == len(data)
    assert dest.read_bytes() == data


async def test_too_large_upload_stores_nothing(store: Store) -> None:
    with pytest.raises(errors.PayloadTooLarge):
        await store.put_stream("sources/t/u/big.mp4", _chunks(b"x" * 3000, 1000), max_bytes=2500)
    with pytest.raises(errors.NotFound):
        await store.size("sources/t/u/big.mp4")


async def test_small_file_missing_key_and_delete(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "poster.jpg"
    src.write_bytes(b"\xff\xd8jpeg")
    assert await store.put_file("outputs/t/j/poster.jpg", src) == 6
    with pytest.raises(errors.NotFound):
        await store.get_file("outputs/t/j/nothing.mp4", tmp_path / "x")
    await store.delete("outputs/t/j/poster.jpg")
    with pytest.raises(errors.NotFound):
        await store.size("outputs/t/j/poster.jpg")


async def test_s3_download_url_is_a_working_presigned_get(moto_url: str, tmp_path: Path) -> None:
    bucket = f"rendermill-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("s3", region_name=REGION, endpoint_url=moto_url) as c:
        await c.create_bucket(Bucket=bucket)
    async with S3Store.open(bucket, region=REGION, endpoint_url=moto_url) as s3:
        await s3.put_stream("outputs/t/j/out.mp4", _chunks(b"video bytes"), max_bytes=100)
        url = s3.download_url("outputs/t/j/out.mp4", ttl=60, filename="my render.mp4")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == b"video bytes"
        assert "my%20render.mp4" in resp.headers.get("Content-Disposition", "")


async def test_gateway_on_s3_stores_uploads_and_links_results_to_s3(
    moto_url: str, pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    bucket = f"rendermill-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("s3", region_name=REGION, endpoint_url=moto_url) as c:
        await c.create_bucket(Bucket=bucket)
    cfg = settings.load(
        settings.Gateway,
        env={},
        overrides={
            "database_url": db_url,
            "store": "s3",
            "s3_bucket": bucket,
            "aws_endpoint_url": moto_url,
            "aws_region": REGION,
        },
    )
    async with pool.acquire() as conn:
        tenant, key = await tenants.create(conn, "t")
    client = TestClient(TestServer(create_app(cfg)))
    await client.start_server()
    try:
        auth = {"Authorization": f"Bearer {key}"}
        resp = await client.post(
            "/v1/uploads", params={"name": "clip.mp4"}, data=b"\x00" * 1000, headers=auth
        )
        assert resp.status == 201, await resp.text()
        async with S3Store.open(bucket, region=REGION, endpoint_url=moto_url) as s3:
            asset = await resp.json()
            object_key = f"sources/{tenant.id}/{asset['id']}/clip.mp4"
            assert await s3.size(object_key) == 1000
            await s3.put_stream(
                f"outputs/{tenant.id}/x/output.mp4", _chunks(b"rendered"), max_bytes=100
            )
        async with pool.acquire() as conn:
            job, _ = await jobs.create(
                conn, tenant_id=tenant.id, project={}, output=schemas.OutputSpec(), media={}
            )
            await jobs.start_attempt(conn, job.id, 1)
            result = {
                "object_key": f"outputs/{tenant.id}/x/output.mp4",
                "size_bytes": 8,
                "duration": 1.0,
                "width": 2,
                "height": 2,
                "frames": 1,
                "sha256": "-",
                "content_type": "video/mp4",
            }
            await jobs.finish(conn, job.id, JobStatus.SUCCEEDED, result=result)
        view = await (await client.get(f"/v1/jobs/{job.id}", headers=auth)).json()
    finally:
        await client.close()
    url = view["result"]["download_url"]
    assert url.startswith(moto_url) and "X-Amz-Signature=" in url
    async with aiohttp.ClientSession() as session, session.get(url) as got:
        assert got.status == 200 and await got.read() == b"rendered"
