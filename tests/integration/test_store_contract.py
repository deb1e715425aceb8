"""The object-store contract, run against both adapters: the filesystem store, and S3
through the real aioboto3 client against moto in server mode on 127.0.0.1. Multipart
uploads are driven through their part URLs over HTTP, as clients do: the filesystem
store's are served by a running gateway."""

from __future__ import annotations

import contextlib
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
from rendermill.common.store import Part, Store
from rendermill.common.store.fs import FsStore
from rendermill.common.store.s3 import PART_SIZE, S3Store
from rendermill.common.testing import free_port, gateway_settings
from rendermill.gateway.app import create_app

REGION = "us-east-1"


@contextlib.asynccontextmanager
async def _s3_store(endpoint: str) -> AsyncIterator[S3Store]:
    """An S3 store on a new bucket of the moto server at ``endpoint``."""
    bucket = f"rendermill-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("s3", region_name=REGION, endpoint_url=endpoint) as c:
        await c.create_bucket(Bucket=bucket)
    async with S3Store.open(bucket, region=REGION, endpoint_url=endpoint) as s3:
        yield s3


@pytest_asyncio.fixture(params=["fs", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "fs":
        yield FsStore(tmp_path / "store", signing_key="k", public_url="http://127.0.0.1:1")
        return
    async with _s3_store(request.getfixturevalue("moto_url")) as s3:
        yield s3


@pytest_asyncio.fixture(params=["fs", "s3"])
async def served_store(
    request: pytest.FixtureRequest, tmp_path: Path, db_url: str
) -> AsyncIterator[Store]:
    """A store whose part URLs work: S3's go to moto, the filesystem store's to a gateway
    on the same directory and signing key."""
    if request.param == "s3":
        async with _s3_store(request.getfixturevalue("moto_url")) as s3:
            yield s3
        return
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    cfg = gateway_settings(db_url, tmp_path / "store", public_url=public_url)
    server = TestServer(create_app(cfg), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield FsStore(cfg.store_root, signing_key="k", public_url=public_url)
    finally:
        await server.close()


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


async def _put(url: str, data: bytes) -> str:
    """PUT ``data`` to a part URL as a client does; returns the ETag it answers with."""
    async with aiohttp.ClientSession() as session, session.put(url, data=data) as resp:
        assert resp.status == 200, await resp.text()
        return resp.headers["ETag"]


async def test_multipart_upload_by_part_urls(served_store: Store, tmp_path: Path) -> None:
    store = served_store
    # A first part of the store's minimum size and a short last one.
    first, last = os.urandom(max(store.min_part_size, 1000)), os.urandom(777)
    key = "sources/t/u/clip one.mp4"
    upload_id = await store.start_multipart(key)
    urls = [
        store.presign_part(key, upload_id, n, ttl=60, max_bytes=len(data))
        for n, data in ((1, first), (2, last))
    ]
    etag_last = await _put(urls[1], last)  # in any order
    etag_first = await _put(urls[0], first)
    parts = await store.list_parts(key, upload_id)
    assert parts == [Part(1, len(first), etag_first), Part(2, len(last), etag_last)]
    with pytest.raises(errors.NotFound):
        await store.size(key)  # nothing to see before completion

    assert await store.complete_multipart(key, upload_id, parts) == len(first) + len(last)
    dest = tmp_path / "back.mp4"
    await store.get_file(key, dest)
    assert dest.read_bytes() == first + last
    with pytest.raises(errors.NotFound):
        await store.list_parts(key, upload_id)
    await store.abort_multipart(key, upload_id)  # over already: nothing happens
    assert await store.size(key) == len(first) + len(last)


async def test_a_part_sent_again_replaces_the_earlier_one(
    served_store: Store, tmp_path: Path
) -> None:
    key = "sources/t/u/again.mp4"
    upload_id = await served_store.start_multipart(key)
    url = served_store.presign_part(key, upload_id, 1, ttl=60, max_bytes=100)
    first = await _put(url, b"first try")
    second = await _put(url, b"second, right")
    assert first != second
    parts = await served_store.list_parts(key, upload_id)
    assert parts == [Part(1, 13, second)]
    assert await served_store.complete_multipart(key, upload_id, parts) == 13
    await served_store.get_file(key, tmp_path / "x")
    assert (tmp_path / "x").read_bytes() == b"second, right"


async def test_completion_refuses_a_part_the_store_does_not_hold(served_store: Store) -> None:
    key = "sources/t/u/etag.mp4"
    upload_id = await served_store.start_multipart(key)
    url = served_store.presign_part(key, upload_id, 1, ttl=60, max_bytes=100)
    etag = await _put(url, b"abc")
    with pytest.raises(errors.InvalidInput):
        await served_store.complete_multipart(
            key, upload_id, [Part(1, 3, '"0123456789abcdef0123456789abcdef"')]
        )
    # Still in progress: it completes with the part it holds.
    assert await served_store.complete_multipart(key, upload_id, [Part(1, 3, etag)]) == 3


async def test_abort_drops_the_upload_and_its_parts(served_store: Store) -> None:
    key = "sources/t/u/aborted.mp4"
    upload_id = await served_store.start_multipart(key)
    url = served_store.presign_part(key, upload_id, 1, ttl=60, max_bytes=100)
    await _put(url, b"abc")
    await served_store.abort_multipart(key, upload_id)
    with pytest.raises(errors.NotFound):
        await served_store.list_parts(key, upload_id)
    with pytest.raises(errors.NotFound):
        await served_store.size(key)
    await served_store.abort_multipart(key, upload_id)  # again: nothing happens
    async with aiohttp.ClientSession() as session, session.put(url, data=b"late") as resp:
        assert resp.status >= 400  # the upload takes no more parts
    with pytest.raises(errors.NotFound):
        await served_store.list_parts(key, "no-such-upload")


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
