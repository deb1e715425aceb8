"""The filesystem store: objects are files under a root; downloads are HMAC-signed URLs
served by the gateway (``GET /v1/files/{key}?expires=…&sig=…``, with Range support).

Multipart uploads live in ``.multipart/{upload_id}/`` beside the objects until they are
completed or aborted: the gateway takes each part's signed ``PUT /v1/files/{key}?…``
into a file of its own, named by part number and MD5 (the part's ETag, as on S3), and
completion joins them into the object.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import shutil
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from rendermill.common import errors
from rendermill.common.store import Part

FILES_PREFIX = "/v1/files/"
MULTIPART_DIR = ".multipart"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_MD5 = re.compile(r"[0-9a-f]{32}")
_PART_FILE = re.compile(r"(\d{5})-([0-9a-f]{32})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_key(key: str) -> PurePosixPath:
    p = PurePosixPath(key)
    # No control characters: a newline would blur the fields of a signed message.
    if p.is_absolute() or ".." in p.parts or not p.parts or key != str(p) or _CONTROL.search(key):
        raise errors.InvalidInput(f"invalid object key {key!r}")
    return p


class PartTarget(NamedTuple):
    """What a verified part URL lets its holder write."""

    upload_id: str
    number: int
    max_bytes: int


def _gone(upload_id: str) -> errors.NotFound:
    return errors.NotFound(f"upload {upload_id} is not in progress (completed, aborted or expired)")


class FsStore:
    # Parts may be of any size: the gateway checks each against the upload's plan.
    min_part_size = 1

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
        try:
            size = await _write(
                tmp, chunks, max_bytes, f"upload exceeds the limit of {max_bytes} bytes"
            )
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

    # --- multipart uploads ------------------------------------------------------------

    def _uploads(self) -> Path:
        return self.root / MULTIPART_DIR

    def _upload_dir(self, key: str, upload_id: str) -> Path:
        """The folder of an upload in progress of ``key``; raises NotFound."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise _gone(upload_id)
        folder = self._uploads() / upload_id
        try:
            recorded = (folder / "key").read_text("utf-8")
        except (FileNotFoundError, NotADirectoryError):
            raise _gone(upload_id) from None
        if recorded != key:
            raise _gone(upload_id)
        return folder

    async def start_multipart(self, key: str) -> str:
        _check_key(key)
        upload_id = uuid.uuid4().hex
        folder = self._uploads() / upload_id
        folder.mkdir(parents=True)
        (folder / "key").write_text(key, "utf-8")
        return upload_id

    def _sign_part(
        self, key: str, upload_id: str, number: int, max_bytes: int, expires: int
    ) -> str:
        # A field a download signature never has first, so neither passes for the other.
        msg = f"put\n{key}\n{upload_id}\n{number}\n{max_bytes}\n{expires}".encode()
        return hmac.new(self._signing_key, msg, hashlib.sha256).hexdigest()

    def presign_part(
        self, key: str, upload_id: str, number: int, *, ttl: int, max_bytes: int
    ) -> str:
        _check_key(key)
        expires = int(time.time()) + ttl
        query = {
            "upload_id": upload_id,
            "part": str(number),
            "max_bytes": str(max_bytes),
            "expires": str(expires),
            "sig": self._sign_part(key, upload_id, number, max_bytes, expires),
        }
        return (
            f"{self._public_url}{FILES_PREFIX}{urllib.parse.quote(key)}?"
            + urllib.parse.urlencode(query)
        )

    def verify_part(self, key: str, query: Mapping[str, str]) -> PartTarget:
        """What a signed part URL allows; raises Unauthorized (malformed, tampered with or
        expired)."""
        try:
            target = PartTarget(query["upload_id"], int(query["part"]), int(query["max_bytes"]))
            expires = int(query["expires"])
            sig = query["sig"]
        except (KeyError, ValueError):
            raise errors.Unauthorized(
                "malformed upload link: PUT each part to its URL exactly as the upload plan gave it"
            ) from None
        expected = self._sign_part(key, *target, expires)
        if not hmac.compare_digest(expected, sig):
            raise errors.Unauthorized(
                "invalid upload signature: PUT each part to its URL exactly as the upload plan "
                "gave it"
            )
        if expires < time.time():
            raise errors.Unauthorized(
                "this upload link has expired; start a new upload (POST /v1/uploads/direct)"
            )
        return target

    async def put_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int,
    ) -> str:
        """Write part ``number`` from ``chunks``; returns its ETag. Raises NotFound (the
        upload is no longer in progress) or PayloadTooLarge (over ``max_bytes``)."""
        folder = self._upload_dir(key, upload_id)
        tmp = folder / f".{number:05d}.{uuid.uuid4().hex}.tmp"
        digest = hashlib.md5(usedforsecurity=False)
        try:
            await _write(
                tmp,
                chunks,
                max_bytes,
                f"part {number} exceeds its {max_bytes} bytes: send exactly the bytes the "
                "upload plan gives for it",
                digest,
            )
            final = folder / f"{number:05d}-{digest.hexdigest()}"
            tmp.replace(final)
        except FileNotFoundError:
            # The upload was completed or aborted while this part was on its way.
            raise _gone(upload_id) from None
        finally:
            tmp.unlink(missing_ok=True)
        # A part sent again replaces the earlier one (a newer PUT of it wins a race).
        written = final.stat().st_mtime_ns
        for other in folder.glob(f"{number:05d}-*"):
            try:
                if other != final and other.stat().st_mtime_ns < written:
                    other.unlink()
            except FileNotFoundError:
                pass
        return f'"{digest.hexdigest()}"'

    async def list_parts(self, key: str, upload_id: str) -> list[Part]:
        folder = self._upload_dir(key, upload_id)

        def _scan() -> list[Part]:
            latest: dict[int, tuple[int, Part]] = {}
            with os.scandir(folder) as entries:
                for entry in entries:
                    m = _PART_FILE.fullmatch(entry.name)
                    if m is None:
                        continue
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    part = Part(int(m[1]), st.st_size, f'"{m[2]}"')
                    if part.number not in latest or st.st_mtime_ns > latest[part.number][0]:
                        latest[part.number] = (st.st_mtime_ns, part)
            return sorted(part for _, part in latest.values())

        try:
            return await asyncio.to_thread(_scan)
        except FileNotFoundError:
            raise _gone(upload_id) from None

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[Part]) -> int:
        folder = self._upload_dir(key, upload_id)
        numbers = [p.number for p in parts]
        if not parts or numbers != sorted(set(numbers)):
            raise errors.InvalidInput("list each part once, in ascending order of number")
        files = []
        for part in parts:
            md5 = part.etag.strip('"')
            path = folder / f"{part.number:05d}-{md5}"
            if not _MD5.fullmatch(md5) or not path.is_file():
                raise errors.InvalidInput(
                    f"part {part.number} with ETag {part.etag} is not in the upload: PUT it, "
                    "then complete again"
                )
            files.append(path)
        final = self.path(key)

        def _join() -> int:
            final.parent.mkdir(parents=True, exist_ok=True)
            if len(files) == 1:
                files[0].replace(final)  # one part is the object already
            else:
                tmp = self._tmp(final)
                try:
                    with tmp.open("wb") as out:
                        for path in files:
                            with path.open("rb") as src:
                                shutil.copyfileobj(src, out, 1 << 20)
                    tmp.replace(final)
                finally:
                    tmp.unlink(missing_ok=True)
            self._discard(upload_id)
            return final.stat().st_size

        try:
            return await asyncio.to_thread(_join)
        except FileNotFoundError:
            raise errors.InvalidInput(
                "a part was sent again while the upload was being completed: complete it again"
            ) from None

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        if not _UPLOAD_ID.fullmatch(upload_id):
            return
        try:
            self._upload_dir(key, upload_id)
            in_progress = True
        except errors.NotFound:
            # Gone already; an earlier abort may have left its discarded folder behind.
            in_progress = False
        await asyncio.to_thread(self._discard, upload_id, in_progress)

    def _discard(self, upload_id: str, in_progress: bool = True) -> None:
        """Remove an upload's folder. It is renamed first, atomically: a part arriving
        meanwhile then fails instead of landing in a folder nobody will remove."""
        trash = self._uploads() / f".{upload_id}.discarded"
        if in_progress:
            (self._uploads() / upload_id).rename(trash)
        if trash.exists():
            shutil.rmtree(trash)


async def _write(
    path: Path,
    chunks: AsyncIterable[bytes],
    max_bytes: int,
    too_large: str,
    digest: hashlib._Hash | None = None,
) -> int:
    """Write ``chunks`` to ``path`` (and into ``digest``); returns the size. Raises
    PayloadTooLarge with the message ``too_large`` past ``max_bytes``."""
    size = 0
    with path.open("wb") as fh:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise errors.PayloadTooLarge(too_large)
            if digest is not None:
                digest.update(chunk)
            fh.write(chunk)
    return size
