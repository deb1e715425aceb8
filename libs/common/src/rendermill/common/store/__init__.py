"""The object-store port: sources/ and outputs/ objects, and expiring download URLs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Protocol

from rendermill.common import errors, settings


class Store(Protocol):
    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int:
        """Write ``chunks`` to ``key``; returns the size. Raises errors.PayloadTooLarge."""
        ...

    async def put_file(self, key: str, path: Path) -> int: ...

    async def get_file(self, key: str, dest: Path) -> int:
        """Copy ``key`` to ``dest``; returns the size. Raises errors.NotFound."""
        ...

    async def size(self, key: str) -> int: ...

    async def delete(self, key: str) -> None: ...

    def download_url(self, key: str, *, ttl: int, filename: str | None = None) -> str: ...


def source_key(tenant: str, upload_id: str, name: str) -> str:
    return f"sources/{tenant}/{upload_id}/{name}"


def output_key(tenant: str, job_id: str, name: str) -> str:
    return f"outputs/{tenant}/{job_id}/{name}"


@contextlib.asynccontextmanager
async def open_store(cfg: settings.Common) -> AsyncIterator[Store]:
    """The store ``cfg.store`` names: files under ``cfg.store_root`` (downloads signed by
    ``cfg.url_signing_key`` and served by the gateway), or the S3 bucket
    ``cfg.s3_bucket`` (presigned downloads). Raises InvalidInput when S3 is chosen
    without a bucket."""
    if cfg.store == "s3":
        from rendermill.common.store.s3 import S3Store  # only S3 setups load aioboto3

        if not cfg.s3_bucket:
            raise errors.InvalidInput("RENDERMILL_STORE=s3 needs RENDERMILL_S3_BUCKET")
        async with S3Store.open(
            cfg.s3_bucket, region=cfg.aws_region, endpoint_url=cfg.aws_endpoint_url
        ) as store:
            yield store
        return
    from rendermill.common.store.fs import FsStore

    yield FsStore(cfg.store_root, signing_key=cfg.url_signing_key, public_url=cfg.public_url)
