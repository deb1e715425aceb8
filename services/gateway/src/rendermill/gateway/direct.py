"""Direct uploads: a client PUTs a file's parts straight to the store, so large files never
pass through the gateway; completing the upload turns it into an asset.

Every direct upload is a multipart upload of the store, of one part or more, so that the
protocol is the same whatever the size and whatever the store: S3 gets presigned
UploadPart URLs, the filesystem store part URLs that the gateway itself signs and serves.
A multipart upload also stops taking bytes once completed or aborted, which a presigned
PUT of the whole object would not.

Uploads that end without an asset (aborted, expired, refused) leave parts or an object
in the store; :func:`sweep`, run by every gateway every ``upload_sweep_seconds``, expires
overdue uploads and removes those leftovers. Abort and a refused completion remove them
at once as well; the sweep retries whatever failed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg

from rendermill.common import errors, settings, tenants, uploads
from rendermill.common import logging as rlog
from rendermill.common.store import MAX_PARTS, Part, Store, source_key
from rendermill.gateway import api

log = rlog.get(__name__)

# A completion still running after this long died with its gateway.
STALE_COMPLETION_SECONDS = 3600.0
# A part PUT may still be streaming this long after its URL expired.
LATE_PUT_GRACE_SECONDS = 3600.0
_CLEANUP_LEASE_SECONDS = 300.0
_SWEEP_BATCH = 100


def part_size_for(size: int, *, preferred: int, minimum: int) -> int:
    """Parts of ``preferred`` bytes, but at least the store's ``minimum`` and large enough
    that no file needs more than MAX_PARTS."""
    return max(preferred, minimum, -(-size // MAX_PARTS))


async def start(
    pool: asyncpg.Pool,
    store: Store,
    cfg: settings.Gateway,
    tenant_id: uuid.UUID,
    req: api.DirectUploadRequest,
) -> api.DirectUploadView:
    """Record a pending upload of ``req`` (whose name is already made safe) and plan it:
    one URL per part. Raises PayloadTooLarge over ``cfg.max_upload_bytes``."""
    if req.size > cfg.max_upload_bytes:
        raise errors.PayloadTooLarge(
            f"the file is {req.size} bytes; uploads are limited to {cfg.max_upload_bytes} bytes"
        )
    part_size = part_size_for(
        req.size, preferred=cfg.upload_part_bytes, minimum=store.min_part_size
    )
    upload_id = uuid.uuid4()
    key = source_key(str(tenant_id), str(upload_id), req.name)
    ttl = cfg.direct_upload_ttl_seconds
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl)
    store_upload_id = await store.start_multipart(key)
    try:
        async with pool.acquire() as conn:
            upload = await uploads.create(
                conn,
                upload_id=upload_id,
                tenant_id=tenant_id,
                object_key=key,
                name=req.name,
                content_type=req.content_type,
                size=req.size,
                sha256=req.sha256.lower() if req.sha256 else None,
                part_size=part_size,
                store_upload_id=store_upload_id,
                expires_at=expires_at,
            )
    except BaseException:
        await store.abort_multipart(key, store_upload_id)
        raise
    parts = _targets(store, upload, ttl)
    log.info(
        "direct_upload_started",
        upload_id=str(upload_id),
        tenant_id=str(tenant_id),
        size=req.size,
        parts=len(parts),
    )
    return api.DirectUploadView(
        id=str(upload_id),
        name=upload.name,
        size=upload.size,
        content_type=upload.content_type,
        part_size=part_size,
        parts=parts,
        url=parts[0].url if len(parts) == 1 else None,
        expires_at=upload.expires_at,
        complete_url=f"/v1/uploads/{upload_id}/complete",
        abort_url=f"/v1/uploads/{upload_id}/abort",
    )


def _targets(store: Store, upload: uploads.Upload, ttl: int) -> list[api.UploadPartTarget]:
    """A URL for each part of ``upload``, valid for ``ttl`` seconds."""
    return [
        api.UploadPartTarget(
            number=n,
            offset=(n - 1) * upload.part_size,
            size=size,
            url=store.presign_part(
                upload.object_key, upload.store_upload_id, n, ttl=ttl, max_bytes=size
            ),
        )
        for n, size in enumerate(upload.part_sizes(), 1)
    ]


async def status(
    pool: asyncpg.Pool, store: Store, tenant_id: uuid.UUID, upload_id: uuid.UUID
) -> api.DirectUploadStatusView:
    """Where the tenant's upload stands; while pending, with fresh part URLs and the parts
    the store holds. Raises NotFound (no such upload of this tenant)."""
    async with pool.acquire() as conn:
        upload = await uploads.get(conn, upload_id, tenant_id)
    state = upload.status
    left = int((upload.expires_at - dt.datetime.now(dt.UTC)).total_seconds())
    if state == uploads.Status.PENDING and left < 1:
        state = uploads.Status.EXPIRED  # the sweep records it shortly
    targets: list[api.UploadPartTarget] = []
    stored: list[Part] = []
    missing: list[int] = []
    if state == uploads.Status.PENDING:
        targets = _targets(store, upload, left)
        held = await _stored_parts(store, upload)
        stored = [held[n] for n in sorted(held)]
        missing = [n for n in range(1, upload.part_count + 1) if n not in held]
    return api.DirectUploadStatusView(
        id=str(upload.id),
        name=upload.name,
        size=upload.size,
        status=state.value,
        expires_at=upload.expires_at,
        part_size=upload.part_size,
        parts=targets,
        uploaded=[api.StoredPartView(number=p.number, size=p.size, etag=p.etag) for p in stored],
        missing=missing,
        asset_id=str(upload.id) if state == uploads.Status.COMPLETED else None,
        complete_url=f"/v1/uploads/{upload.id}/complete",
        abort_url=f"/v1/uploads/{upload.id}/abort",
    )


async def complete(
    pool: asyncpg.Pool,
    store: Store,
    tenant_id: uuid.UUID,
    upload_id: uuid.UUID,
    etags: list[api.UploadedPart] | None,
) -> tuple[tenants.Asset, bool]:
    """Join the upload's parts into its object and record the asset; returns (asset,
    created). Completing a completed upload returns its asset again (created False).

    Raises NotFound (no such upload of this tenant), InvalidInput (a part missing, of the
    wrong size or with another ETag: the upload stays pending, to be fixed and completed
    again; or the joined object is not of the declared size: it is deleted and the
    upload fails) and Conflict (aborted, expired, failed, or being completed).
    """
    async with pool.acquire() as conn:
        upload, claimed = await uploads.claim_completion(conn, upload_id, tenant_id)
    if not claimed:
        return await _not_completable(pool, store, upload), False
    try:
        try:
            parts = _checked_parts(upload, await _stored_parts(store, upload), etags)
            size = await store.complete_multipart(upload.object_key, upload.store_upload_id, parts)
        except errors.NotFound:
            # An earlier completion may have joined the parts and died before recording
            # the asset: then the object is there.
            size = await store.size(upload.object_key)
    except errors.NotFound:
        await _fail(pool, store, upload)
        raise errors.Conflict(
            f"the store no longer holds the parts of upload {upload_id}: start a new upload"
        ) from None
    except BaseException:
        async with pool.acquire() as conn:
            await uploads.release_completion(conn, upload_id)
        raise
    if size != upload.size:
        await _fail(pool, store, upload)
        log.warning(
            "direct_upload_refused", upload_id=str(upload_id), size=size, declared=upload.size
        )
        raise errors.InvalidInput(
            f"the uploaded file is {size} bytes, but {upload.size} were declared; it was "
            "deleted: start a new upload with the file's exact size",
            detail={"size": size, "declared": upload.size},
        )
    async with pool.acquire() as conn, conn.transaction():
        asset = await tenants.insert_asset(
            conn,
            asset_id=upload.id,
            tenant_id=tenant_id,
            object_key=upload.object_key,
            name=upload.name,
            content_type=upload.content_type,
            size=size,
            sha256=upload.sha256 or "",
        )
        await uploads.mark_completed(conn, upload_id)
    log.info("asset_uploaded", asset_id=str(asset.id), size=size, tenant_id=str(tenant_id))
    return asset, True


async def _stored_parts(store: Store, upload: uploads.Upload) -> dict[int, Part]:
    return {p.number: p for p in await store.list_parts(upload.object_key, upload.store_upload_id)}


def _numbers(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def _bare(etag: str) -> str:
    return etag.strip().strip('"')


def _checked_parts(
    upload: uploads.Upload, stored: dict[int, Part], etags: list[api.UploadedPart] | None
) -> list[Part]:
    """The parts to join, in order, once each is there with its planned size (and the
    ETag the client names, if it does); raises InvalidInput naming what is wrong."""
    planned = upload.part_sizes()
    missing = [n for n in range(1, len(planned) + 1) if n not in stored]
    if missing:
        raise errors.InvalidInput(
            f"{'part' if len(missing) == 1 else 'parts'} {_numbers(missing)} of "
            f"{len(planned)} not uploaded yet: PUT each to its URL in the upload plan, then "
            "complete again",
            detail={"missing_parts": missing},
        )
    wrong = [
        {"part": n, "size": stored[n].size, "planned": size}
        for n, size in enumerate(planned, 1)
        if stored[n].size != size
    ]
    if wrong:
        first = wrong[0]
        raise errors.InvalidInput(
            f"part {first['part']} is {first['size']} bytes, but the plan gives it "
            f"{first['planned']} (the file's bytes from offset "
            f"{(first['part'] - 1) * upload.part_size}): PUT them again and complete again, "
            "or abort the upload and start a new one with the file's exact size",
            detail={"wrong_sizes": wrong},
        )
    if etags is not None:
        named = {p.number: p.etag for p in etags}
        if sorted(named) != list(range(1, len(planned) + 1)) or len(named) != len(etags):
            raise errors.InvalidInput(
                f"parts must name each of the upload's {len(planned)} parts once (1 to "
                f"{len(planned)}), or be left out"
            )
        for n, etag in named.items():
            if _bare(etag) != _bare(stored[n].etag):
                raise errors.InvalidInput(
                    f"part {n} has ETag {etag} here, but the store holds {stored[n].etag}: "
                    "it was sent again since; complete with the ETag of its last PUT",
                    detail={"part": n, "etag": stored[n].etag},
                )
    return [stored[n] for n in range(1, len(planned) + 1)]


async def _not_completable(
    pool: asyncpg.Pool, store: Store, upload: uploads.Upload
) -> tenants.Asset:
    """The asset of a completed upload; otherwise raises Conflict saying why not."""
    status = upload.status
    if status == uploads.Status.PENDING:
        # Past its time and not swept yet (or released just now by a failed completion).
        async with pool.acquire() as conn:
            expired = await uploads.mark_expired(conn, upload.id)
            if expired is None:
                status = (await uploads.get(conn, upload.id, upload.tenant_id)).status
        if expired is not None:
            await clean_now(pool, store, expired)
            status = uploads.Status.EXPIRED
    if status == uploads.Status.COMPLETED:
        async with pool.acquire() as conn:
            return await tenants.get_asset(conn, upload.id, upload.tenant_id)
    reason = {
        uploads.Status.PENDING: "changed while this request looked at it: try again",
        uploads.Status.COMPLETING: "is being completed by another request: try again in a moment",
        uploads.Status.ABORTED: "was aborted: start a new upload",
        uploads.Status.EXPIRED: f"expired at {upload.expires_at.isoformat()}: start a new upload",
        uploads.Status.FAILED: "failed: start a new upload",
    }[status]
    raise errors.Conflict(f"upload {upload.id} {reason}")


async def _fail(pool: asyncpg.Pool, store: Store, upload: uploads.Upload) -> None:
    async with pool.acquire() as conn:
        failed = await uploads.mark_failed(conn, upload.id)
    if failed is not None:
        await clean_now(pool, store, failed)


async def abort(
    pool: asyncpg.Pool, store: Store, tenant_id: uuid.UUID, upload_id: uuid.UUID
) -> None:
    """Abort a pending upload and remove its parts. Aborting one that already ended
    without an asset does nothing; raises NotFound, or Conflict once it is completed
    (or being completed)."""
    async with pool.acquire() as conn:
        aborted = await uploads.mark_aborted(conn, upload_id, tenant_id)
        if aborted is None:
            upload = await uploads.get(conn, upload_id, tenant_id)
            if upload.status == uploads.Status.COMPLETED:
                raise errors.Conflict(
                    f"upload {upload_id} is completed: it is asset {upload_id} now"
                )
            if upload.status == uploads.Status.COMPLETING:
                raise errors.Conflict(f"upload {upload_id} is being completed")
            return
    log.info("direct_upload_aborted", upload_id=str(upload_id), tenant_id=str(tenant_id))
    await clean_now(pool, store, aborted)


async def _clean(store: Store, upload: uploads.Upload) -> None:
    # Both are harmless when there is nothing to remove; the object exists only when a
    # completion joined the parts and the upload then failed.
    await store.abort_multipart(upload.object_key, upload.store_upload_id)
    await store.delete(upload.object_key)


async def clean_now(pool: asyncpg.Pool, store: Store, upload: uploads.Upload) -> None:
    """Remove an ended upload's leftovers now; if the store fails, the sweep retries."""
    try:
        await _clean(store, upload)
    except Exception as exc:
        log.warning("direct_upload_cleanup_failed", upload_id=str(upload.id), error=repr(exc))
        return
    async with pool.acquire() as conn:
        await uploads.mark_cleaned(conn, upload.id, late_put_grace=LATE_PUT_GRACE_SECONDS)


async def sweep(pool: asyncpg.Pool, store: Store) -> int:
    """Expire overdue uploads, give up dead completions, and remove the store's leftovers
    of every upload due for it; returns how many were cleaned. Safe to run in several
    gateways at once (each claims its own)."""
    async with pool.acquire() as conn:
        await uploads.end_overdue(conn, stale_after=STALE_COMPLETION_SECONDS)
    cleaned = 0
    while True:
        async with pool.acquire() as conn:
            due = await uploads.claim_cleanup(
                conn, limit=_SWEEP_BATCH, lease=_CLEANUP_LEASE_SECONDS
            )
        for upload in due:
            try:
                await _clean(store, upload)
            except Exception as exc:
                # Its lease runs out and a later sweep tries again.
                log.warning(
                    "direct_upload_cleanup_failed", upload_id=str(upload.id), error=repr(exc)
                )
                continue
            async with pool.acquire() as conn:
                await uploads.mark_cleaned(conn, upload.id, late_put_grace=LATE_PUT_GRACE_SECONDS)
            cleaned += 1
        if len(due) < _SWEEP_BATCH:
            break
    if cleaned:
        log.info("direct_uploads_swept", cleaned=cleaned)
    return cleaned


async def sweep_forever(pool: asyncpg.Pool, store: Store, interval: float) -> None:
    """:func:`sweep` now and every ``interval`` seconds, until cancelled. A failed round
    is logged and tried again next time: housekeeping must not take the API down."""
    while True:
        try:
            await sweep(pool, store)
        except Exception:
            log.exception("upload_sweep_failed")
        await asyncio.sleep(interval)
