"""The S3 store (aioboto3): objects in one bucket, uploads in parts, downloads by
presigned GET URLs straight from S3 (the gateway serves nothing).

Uploads of any size go through multipart upload in 8 MiB parts (S3's parts are at least
5 MiB but the last), so memory stays bounded; a failed upload is aborted. Clients upload
directly by presigned UploadPart URLs. Presigning is local computation: a plain botocore
client signs, with the same credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aioboto3
import botocore.config
import botocore.exceptions
import botocore.session

from rendermill.common import errors
from rendermill.common.store import Part

PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
_READ_SIZE = 1024 * 1024


class S3Store:
    min_part_size = MIN_PART_SIZE

    def __init__(self, client: Any, signer: Any, bucket: str) -> None:
        """``client``: an open aioboto3 S3 client; ``signer``: a botocore S3 client for
        presigning (see :meth:`open`)."""
        self._client = client
        self._signer = signer
        self._bucket = bucket

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, bucket: str, *, region: str, endpoint_url: str | None = None
    ) -> AsyncIterator[S3Store]:
        """The store on ``bucket`` with a client that lives as long as the context.
        Credentials come from the usual AWS sources (environment, profile, role)."""
        signer = botocore.session.get_session().create_client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            config=botocore.config.Config(signature_version="s3v4"),
        )
        async with aioboto3.Session().client(
            "s3", region_name=region, endpoint_url=endpoint_url
        ) as client:
            yield cls(client, signer, bucket)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int:
        upload = await self._client.create_multipart_upload(Bucket=self._bucket, Key=key)
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        buffer = bytearray()
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise errors.PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                buffer += chunk
                while len(buffer) >= PART_SIZE:
                    await self._part(key, upload_id, parts, bytes(buffer[:PART_SIZE]))
                    del buffer[:PART_SIZE]
            if buffer or not parts:
                await self._part(key, upload_id, parts, bytes(buffer))
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(
                botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError
            ):
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id
                )
            raise
        return size

    async def _part(
        self, key: str, upload_id: str, parts: list[dict[str, Any]], data: bytes
    ) -> None:
        number = len(parts) + 1
        resp = await self._client.upload_part(
            Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    async def put_file(self, key: str, path: Path) -> int:
        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as fh:
                while chunk := await asyncio.to_thread(fh.read, PART_SIZE):
                    yield chunk

        return await self.put_stream(key, chunks(), max_bytes=path.stat().st_size)

    async def get_file(self, key: str, dest: Path) -> int:
        try:
            resp = await self._client.get_object(Bucket=self._bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise _not_found(exc, key) from exc
        size = 0
        dest.parent.mkdir(parents=True, exist_ok=True)
        body = resp["Body"]
        try:
            with dest.open("wb") as fh:
                while chunk := await body.read(_READ_SIZE):
                    await asyncio.to_thread(fh.write, chunk)
                    size += len(chunk)
        finally:
            body.close()
        return size

    async def size(self, key: str) -> int:
        try:
            resp = await self._client.head_object(Bucket=self._bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise _not_found(exc, key) from exc
        return int(resp["ContentLength"])

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self._bucket, Key=key)

    def download_url(self, key: str, *, ttl: int, filename: str | None = None) -> str:
        params: dict[str, str] = {"Bucket": self._bucket, "Key": key}
        if filename:
            quoted = urllib.parse.quote(filename)
            params["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{quoted}"
        url: str = self._signer.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl)
        return url

    async def start_multipart(self, key: str) -> str:
        upload = await self._client.create_multipart_upload(Bucket=self._bucket, Key=key)
        upload_id: str = upload["UploadId"]
        return upload_id

    def presign_part(
        self, key: str, upload_id: str, number: int, *, ttl: int, max_bytes: int
    ) -> str:
        # S3 cannot bound a presigned PUT's body without the client sending a signed
        # Content-Length; completion checks every part's size instead.
        params = {"Bucket": self._bucket, "Key": key, "UploadId": upload_id, "PartNumber": number}
        url: str = self._signer.generate_presigned_url("upload_part", Params=params, ExpiresIn=ttl)
        return url

    async def list_parts(self, key: str, upload_id: str) -> list[Part]:
        parts: list[Part] = []
        marker = 0
        while True:
            try:
                resp = await self._client.list_parts(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                )
            except botocore.exceptions.ClientError as exc:
                raise _upload_error(exc, upload_id) from exc
            parts += [Part(p["PartNumber"], p["Size"], p["ETag"]) for p in resp.get("Parts", [])]
            if not resp.get("IsTruncated"):
                return parts
            marker = int(resp["NextPartNumberMarker"])

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[Part]) -> int:
        try:
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]
                },
            )
        except botocore.exceptions.ClientError as exc:
            raise _upload_error(exc, upload_id) from exc
        return await self.size(key)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id
            )
        except botocore.exceptions.ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                raise


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _upload_error(exc: botocore.exceptions.ClientError, upload_id: str) -> Exception:
    """S3's answer about a multipart upload in the error taxonomy, when it has a place."""
    code = _code(exc)
    if code == "NoSuchUpload":
        return errors.NotFound(
            f"upload {upload_id} is not in progress (completed, aborted or expired)"
        )
    if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall"):
        message = str(exc.response.get("Error", {}).get("Message", code))
        return errors.InvalidInput(f"the store refused the parts ({code}): {message}")
    error: Exception = exc
    return error


def _not_found(exc: botocore.exceptions.ClientError, key: str) -> Exception:
    if _code(exc) in ("NoSuchKey", "404", "NotFound"):
        return errors.NotFound(f"object {key} not found")
    error: Exception = exc
    return error
