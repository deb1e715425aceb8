"""The object-store port: sources/ and outputs/ objects, expiring download URLs, and
multipart uploads whose parts clients PUT straight to the store by expiring URLs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from rendermill.common import errors, settings

# S3's limit, kept by every adapter so that one upload plan fits them all.
MAX_PARTS = 10_000


class Part(NamedTuple):
    """One part of a multipart upload as the store holds it."""

    number: int
    size: int
    # Opaque to callers, quoted as in HTTP (S3: the part's MD5).
    etag: str


class Store(Protocol):
    # The smallest size a part may have, except the last one of an upload.
    min_part_size: int

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

    async def start_multipart(self, key: str) -> str:
        """Begin a multipart upload of ``key``; returns its id (for the calls below)."""
        ...

    def presign_part(
        self, key: str, upload_id: str, number: int, *, ttl: int, max_bytes: int
    ) -> str:
        """A URL that takes one ``PUT`` of part ``number`` (1-based) for ``ttl`` seconds and
        answers with the part's ``ETag``. ``max_bytes`` bounds the body where the store
        can enforce it at PUT time (the filesystem store; S3 is checked on completion)."""
        ...

    async def list_parts(self, key: str, upload_id: str) -> list[Part]:
        """The parts uploaded so far, by number (the latest PUT of each). Raises NotFound
        when the upload was completed or aborted, or never existed."""
        ...

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[Part]) -> int:
        """Join ``parts`` (ascending numbers, ETags as :meth:`list_parts` gives them) into
        ``key``; returns the object's size. Raises NotFound (no such upload) or
        InvalidInput (a part missing or changed, or a part but the last too small)."""
        ...

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop the upload and its parts; nothing happens if it is already gone."""
        ...


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
