"""The filesystem store: objects are files under a root; downloads are HMAC-signed URLs
served by the gateway (``GET /v1/files/{key}?expires=…&sig=…``, with Range support)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import shutil
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterable
from pathlib import Path, PurePosixPath

from rendermill.common import errors

FILES_PREFIX = "/v1/files/"


def _check_key(key: str) -> PurePosixPath:
    p = PurePosixPath(key)
    if p.is_absolute() or ".." in p.parts or not p.parts or key != str(p):
        raise errors.InvalidInput(f"invalid object key {key!r}")
    return p


class FsStore:
    def __init__(self, root: Path, *, signing_key: str, public_url: str) -> None:
        self.root = root
        self._signing_key = signing_key.encode()
        self._public_url = public_url.rstrip("/")

    def path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).parts)

    def _tmp(self, final: Path) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int:
        final = self.path(key)
        tmp = self._tmp(final)
        size = 0
        try:
            with tmp.open("wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise errors.PayloadTooLarge(
                            f"upload exceeds the limit of {max_bytes} bytes"
                        )
                    fh.write(chunk)
            # Rename last, so a reader never sees a half-written object.
            tmp.replace(final)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    async def put_file(self, key: str, path: Path) -> int:
        final = self.path(key)
        tmp = self._tmp(final)

        def _copy() -> int:
            try:
                shutil.copyfile(path, tmp)
                tmp.replace(final)
            finally:
                tmp.unlink(missing_ok=True)
            return final.stat().st_size

        return await asyncio.to_thread(_copy)

    async def get_file(self, key: str, dest: Path) -> int:
        src = self.path(key)
        if not src.is_file():
            raise errors.NotFound(f"object {key} not found")

        def _copy() -> int:
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Same filesystem: a hard link costs nothing and the source is immutable.
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
            return dest.stat().st_size

        return await asyncio.to_thread(_copy)

    async def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise errors.NotFound(f"object {key} not found") from None

    async def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def _sign(self, key: str, expires: int) -> str:
        msg = f"{key}\n{expires}".encode()
        return hmac.new(self._signing_key, msg, hashlib.sha256).hexdigest()

    def download_url(self, key: str, *, ttl: int, filename: str | None = None) -> str:
        _check_key(key)
        expires = int(time.time()) + ttl
        query = {"expires": str(expires), "sig": self._sign(key, expires)}
        return (
            f"{self._public_url}{FILES_PREFIX}{urllib.parse.quote(key)}?"
            + urllib.parse.urlencode(query)
        )

    def verify(self, key: str, expires: str, sig: str) -> Path:
        """The file behind a signed URL; raises Unauthorized (bad/expired) or NotFound."""
        try:
            exp = int(expires)
        except ValueError:
            raise errors.Unauthorized("malformed download link") from None
        if not hmac.compare_digest(self._sign(key, exp), sig):
            raise errors.Unauthorized("invalid download signature")
        if exp < time.time():
            raise errors.Unauthorized("this download link has expired; fetch the job for a new one")
        path = self.path(key)
        if not path.is_file():
            raise errors.NotFound(f"object {key} not found")
        return path
