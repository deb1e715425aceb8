"""The gateway: the public HTTP API (aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import math
import mmap
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiohttp_cors
import asyncpg
import msgspec
from aiohttp import WSCloseCode, WSMsgType, web
from aiolimiter import AsyncLimiter
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from rendermill.common import (
    db,
    deliveries,
    endpoints,
    errors,
    jobs,
    lifecycle,
    netguard,
    schemas,
    settings,
    telemetry,
    tenants,
)
from rendermill.common import logging as rlog
from rendermill.common.project import model, parse
from rendermill.common.queue import Queue, open_queue
from rendermill.common.store import Store, fs, open_store, source_key
from rendermill.gateway import api, direct, openapi, retention
from rendermill.gateway.hub import EventHub

log = rlog.get(__name__)
tracer = telemetry.tracer("rendermill.gateway")

CFG = web.AppKey("settings", settings.Gateway)
POOL = web.AppKey("pool", asyncpg.Pool)
STORE = web.AppKey("store", Store)
QUEUE = web.AppKey("queue", Queue)
HUB = web.AppKey("hub", EventHub)
# The ``closed`` events of the event streams open now: set on shutdown, so that each ends
# at once (its client reconnects, to another gateway) instead of holding the shutdown.
STREAMS = web.AppKey("streams", set[asyncio.Event])
LIMITERS = web.AppKey("limiters", dict[uuid.UUID, AsyncLimiter])
TERMINAL_EVENTS = ("job.succeeded", "job.failed", "job.canceled")
TENANT = "tenant"

REQUESTS = Counter("rendermill_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("rendermill_http_request_seconds", "HTTP request latency", ["route"])
JOBS_CREATED = Counter("rendermill_jobs_created_total", "Jobs accepted", ["tier"])

_json = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(obj), status=status, content_type="application/json")


def _error(exc: errors.RendermillError, request_id: str) -> web.Response:
    body = api.ErrorResponse(
        error=api.ErrorBody(
            code=exc.code, message=exc.message, detail=exc.detail, request_id=request_id
        )
    )
    resp = json_response(body, exc.http_status)
    if isinstance(exc, errors.RetryLater):
        resp.headers["Retry-After"] = str(max(1, math.ceil(exc.delay)))
    return resp


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _http_error(request: web.Request, exc: web.HTTPException, request_id: str) -> web.Response:
    """aiohttp's own refusals (no such route, wrong method, body too large) in the same
    JSON envelope as every other error, rather than as plain text."""
    message = exc.reason
    if isinstance(exc, web.HTTPNotFound):
        message = f"no such endpoint: {request.method} {request.path} (see /openapi.json)"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed on {request.path}: use {allowed}"
    code = _HTTP_CODES.get(exc.status) or exc.reason.lower().replace(" ", "_").replace("-", "_")
    body = api.ErrorResponse(
        error=api.ErrorBody(code=code, message=message, detail=None, request_id=request_id)
    )
    resp = json_response(body, exc.status)
    if "Allow" in exc.headers:
        resp.headers["Allow"] = exc.headers["Allow"]
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Error taxonomy -> JSON; anything else -> a generic 500 whose id is in the logs."""
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    route = (
        request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
    )
    started = time.perf_counter()
    status = 500
    try:
        with tracer.start_as_current_span(f"{request.method} {route}"):
            resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        if status < 400:
            raise
        return _http_error(request, exc, request_id)
    except errors.RendermillError as exc:
        status = exc.http_status
        log.info("request_rejected", code=exc.code, status=status, request_id=request_id)
        return _error(exc, request_id)
    except db.UNAVAILABLE as exc:
        # Postgres restarting or out of reach: the client should retry, not report a bug.
        unavailable = errors.RetryLater(
            "the database is unavailable for a moment: retry shortly", delay=2.0
        )
        status = unavailable.http_status
        log.warning("request_unavailable", error=repr(exc), request_id=request_id)
        return _error(unavailable, request_id)
    except Exception:
        log.exception("request_failed", request_id=request_id, path=request.path)
        return _error(errors.RendermillError("internal error"), request_id)
    finally:
        REQUESTS.labels(request.method, route, str(status)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - started)


def _token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    # Browsers cannot set headers on WebSocket/EventSource requests.
    return request.query.get("access_token")


async def authenticate(request: web.Request) -> tenants.Tenant:
    """The tenant whose API key the request carries, within its rate limit."""
    token = _token(request)
    if not token:
        raise errors.Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    async with request.app[POOL].acquire() as conn:
        tenant = await tenants.authenticate(conn, token)
    await _within_rate(request.app, tenant.id)
    return tenant


async def _within_rate(app: web.Application, tenant_id: uuid.UUID) -> None:
    """Count one request of the tenant; raise RateLimited past its rate (a leaky bucket
    per tenant, per gateway process, holding two seconds' worth)."""
    rate = app[CFG].rate_limit
    if rate <= 0:
        return
    limiter = app[LIMITERS].get(tenant_id)
    if limiter is None:
        limiter = app[LIMITERS][tenant_id] = AsyncLimiter(2 * rate, 2.0)
    if not limiter.has_capacity():
        raise errors.RateLimited(
            f"more than {rate:g} requests a second from this tenant: slow down and retry",
            delay=1.0,
        )
    await limiter.acquire()


# Request fields whose type alone does not say what to send: the hint their errors carry.
_HINTS = {"priority": schemas.PRIORITY_HELP}


def _parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise errors.NotFound(f"{what} {value!r} not found") from None


async def _decode(request: web.Request, typ: type[Any]) -> Any:
    cfg = request.app[CFG]
    if request.content_length and request.content_length > cfg.max_project_bytes:
        raise errors.PayloadTooLarge(f"request body exceeds {cfg.max_project_bytes} bytes")
    body = await request.read()
    try:
        return msgspec.json.decode(body, type=typ)
    except msgspec.ValidationError as exc:
        # msgspec says "<problem> - at `$.path`": name the field, and what it takes when
        # its type alone does not say.
        problem, _, at = str(exc).rpartition(" - at `$.")
        if not problem:
            raise errors.InvalidInput(f"invalid request body: {exc}") from exc
        path = at.removesuffix("`")
        hint = f": {_HINTS[path]}" if path in _HINTS else ""
        raise errors.InvalidInput(
            f"invalid request body: {path}: {problem}{hint}", detail={"path": path}
        ) from exc
    except msgspec.DecodeError as exc:
        raise errors.InvalidInput(f"request body is not valid JSON: {exc}") from exc


def _result_view(app: web.Application, job: jobs.Job) -> api.ResultView | None:
    if job.result is None:
        return None
    view = msgspec.convert(job.result, api.ResultView)
    if view.expired_at is not None:
        return view  # deleted after RENDERMILL_RETENTION_DAYS: no link to give
    ttl = app[CFG].download_ttl_seconds
    filename = f"{job.id}.{job.output.get('format', 'mp4')}"
    view.download_url = app[STORE].download_url(view.object_key, ttl=ttl, filename=filename)
    if view.poster_key:
        view.poster_url = app[STORE].download_url(view.poster_key, ttl=ttl)
    view.download_expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl)
    return view


def job_view(app: web.Application, job: jobs.Job) -> api.JobView:
    return api.JobView(
        id=str(job.id),
        status=job.status,
        stage=job.stage,
        progress=job.progress,
        frames_done=job.frames_done,
        frames_total=job.frames_total,
        message=job.message,
        attempt=job.attempt,
        priority=job.tier,
        output=msgspec.convert(job.output, schemas.OutputSpec),
        webhook_url=job.webhook_url,
        result=_result_view(app, job),
        error=msgspec.convert(job.error, api.ErrorInfo) if job.error else None,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        events_url=f"/v1/jobs/{job.id}/events",
    )


async def submit(
    request: web.Request,
    tenant: tenants.Tenant,
    req: api.JobRequest,
    idempotency_key: str | None,
    project: model.Project | None = None,
) -> tuple[jobs.Job, bool]:
    """Validate a job request fully, then insert it and enqueue it.

    ``project`` is the already-parsed project when it came in a container; otherwise
    ``req.project`` is parsed here.
    """
    app = request.app
    cfg = app[CFG]
    if project is None:
        project = parse.from_json(req.project)
    problems = list(parse.unresolved(project, req.media))
    req.output.size()  # raises InvalidInput naming output.resolution
    tier = schemas.parse_priority(req.priority)
    if tier.rank > tenant.max_priority:
        top = tenant.max_tier.value
        raise errors.Forbidden(
            f"priority: {tier.value!r} is above this tenant's highest tier, {top!r}: submit "
            f"at {top!r} or lower (an operator raises it with `tenants set-max-tier`)",
            detail={"path": "priority", "max": top},
        )
    frames = project.frame_count(req.output.fps)
    if frames == 0:
        problems.append(
            errors.Problem(
                "tracks", "the project has no action with an end time: nothing to render"
            )
        )
    if project.duration > cfg.max_output_seconds:
        problems.append(
            errors.Problem(
                "tracks",
                f"the project lasts {project.duration:.1f} s; the limit is "
                f"{cfg.max_output_seconds:.0f} s",
            )
        )
    async with app[POOL].acquire() as conn:
        for url, asset_id in req.media.items():
            try:
                await tenants.get_asset(conn, _parse_uuid(asset_id, "asset"), tenant.id)
            except errors.NotFound:
                problems.append(
                    errors.Problem(
                        f"media[{url!r}]",
                        f"no uploaded asset {asset_id!r}: upload the file with POST /v1/uploads "
                        "(or complete its direct upload) and use the id it returns",
                    )
                )
    if problems:
        raise errors.InvalidProject(problems)
    if req.webhook_url:
        await netguard.check_url(
            req.webhook_url, allow_private=cfg.allow_private_webhooks, what="webhook_url"
        )
    span = trace.get_current_span().get_span_context()
    async with app[POOL].acquire() as conn:
        job, created = await jobs.create(
            conn,
            tenant_id=tenant.id,
            project=msgspec.to_builtins(project),
            output=req.output,
            media=req.media,
            webhook_url=req.webhook_url,
            idempotency_key=idempotency_key or req.idempotency_key,
            tier=tier,
            trace_id=format(span.trace_id, "032x") if span.is_valid else None,
            traceparent=telemetry.current_traceparent(),
        )
    if created:
        # Enqueued after commit: a crash in between leaves a queued job that the
        # scheduler's sweep picks up, so nothing accepted is lost.
        await app[QUEUE].send(
            schemas.QueueMessage(
                job_id=job.id,
                attempt=1,
                traceparent=telemetry.current_traceparent(),
                tier=job.tier,
            )
        )
        async with app[POOL].acquire() as conn:
            await jobs.mark_enqueued(conn, job.id)
        JOBS_CREATED.labels(job.tier.value).inc()
        log.info(
            "job_created",
            job_id=str(job.id),
            tenant_id=str(tenant.id),
            frames=frames,
            tier=job.tier.value,
        )
    return job, created


CONTAINER_TYPES = frozenset(
    {"application/octet-stream", "application/x-stoked-sue", "application/vnd.stoked-ui.sue"}
)


async def create_job(request: web.Request) -> web.Response:
    """A JSON job request, or a whole ``.sue`` container (its embedded media included)
    with the output options as query parameters."""
    tenant = await authenticate(request)
    key = request.headers.get("Idempotency-Key")
    if request.content_type in CONTAINER_TYPES:
        req, project = await _container_request(request, tenant)
        job, created = await submit(request, tenant, req, key, project)
    else:
        req = await _decode(request, api.JobRequest)
        job, created = await submit(request, tenant, req, key)
    return json_response(job_view(request.app, job), 202 if created else 200)


async def _container_request(
    request: web.Request, tenant: tenants.Tenant
) -> tuple[api.JobRequest, model.Project]:
    """Spool the container to disk, store each embedded file as an asset, and map every
    track that plays one to it."""
    cfg = request.app[CFG]
    q = request.query
    try:
        output = msgspec.convert(
            {k: q[k] for k in ("format", "resolution", "fps", "quality", "poster") if k in q},
            schemas.OutputSpec,
            strict=False,
        )
    except msgspec.ValidationError as exc:
        raise errors.InvalidInput(f"invalid output option: {exc}") from exc
    # Checked before the container is spooled and its media stored.
    priority = _query_priority(q.get("priority", schemas.Tier.NORMAL.value))
    with tempfile.TemporaryFile() as spool:
        size = 0
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > cfg.max_upload_bytes:
                raise errors.PayloadTooLarge(
                    f"container exceeds the limit of {cfg.max_upload_bytes} bytes"
                )
            spool.write(chunk)
        if size == 0:
            raise errors.InvalidInput("empty body: send the .sue container as the request body")
        spool.flush()
        with mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ) as data:
            project, files = parse.load(cast(bytes, data))
            media: dict[str, str] = {}
            stored: dict[str, str] = {}
            for f in files:
                asset_id = uuid.uuid4()
                name = _safe_name(f.name)
                object_key = source_key(str(tenant.id), str(asset_id), name)
                view = memoryview(cast(bytes, data))[f.offset : f.offset + f.size]
                digest = hashlib.sha256(view).hexdigest()

                async def chunks(view: memoryview = view) -> AsyncIterator[bytes]:
                    for start in range(0, len(view), 1 << 20):
                        yield bytes(view[start : start + (1 << 20)])

                await request.app[STORE].put_stream(object_key, chunks(), max_bytes=f.size)
                view.release()
                async with request.app[POOL].acquire() as conn:
                    await tenants.insert_asset(
                        conn,
                        asset_id=asset_id,
                        tenant_id=tenant.id,
                        object_key=object_key,
                        name=name,
                        content_type=f.type or "application/octet-stream",
                        size=f.size,
                        sha256=digest,
                    )
                stored[f.name] = str(asset_id)
            for track in project.tracks:
                if track.embedded in stored:
                    media[track.url] = stored[track.embedded]
    req = api.JobRequest(
        project=None,
        output=output,
        media=media,
        webhook_url=q.get("webhook_url"),
        idempotency_key=q.get("idempotency_key"),
        priority=priority,
    )
    return req, project


def _query_priority(value: str) -> schemas.Tier:
    """The tier a ``priority`` query parameter names (a tier name or an integer); raises
    InvalidInput naming it."""
    number = re.fullmatch(r"[+-]?\d{1,9}", value)
    return schemas.parse_priority(int(value) if number else value)


async def get_job(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    job_id = _parse_uuid(request.match_info["job_id"], "job")
    async with request.app[POOL].acquire() as conn:
        job = await jobs.get(conn, job_id, tenant.id)
    return json_response(job_view(request.app, job))


async def delete_job_output(request: web.Request) -> web.Response:
    """Delete a finished job's output and poster from the store now (its record stays,
    result marked ``expired_at``): a 409 while the job is queued or running."""
    tenant = await authenticate(request)
    job_id = _parse_uuid(request.match_info["job_id"], "job")
    await retention.delete_output(request.app[POOL], request.app[STORE], tenant.id, job_id)
    return web.Response(status=204)


async def delete_upload(request: web.Request) -> web.Response:
    """Delete an uploaded file: a 409 while a queued or running job plays it."""
    tenant = await authenticate(request)
    asset_id = _parse_uuid(request.match_info["upload_id"], "upload")
    await retention.delete_upload(request.app[POOL], request.app[STORE], tenant.id, asset_id)
    return web.Response(status=204)


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a queued or running job: it ends as ``canceled`` (a ``job.canceled`` event
    and webhook), a running render stops within seconds and is not retried. Canceling a
    canceled job again answers the same; a job that already succeeded or failed is a
    409."""
    tenant = await authenticate(request)
    job_id = _parse_uuid(request.match_info["job_id"], "job")
    async with request.app[POOL].acquire() as conn:
        job = await jobs.get(conn, job_id, tenant.id)
        if job.status != schemas.JobStatus.CANCELED:
            try:
                job = await jobs.finish(
                    conn,
                    job_id,
                    schemas.JobStatus.CANCELED,
                    expect=(schemas.JobStatus.QUEUED, schemas.JobStatus.RUNNING),
                    error=jobs.error_info("canceled", "canceled by the client"),
                    message="canceled by the client",
                )
            except errors.Conflict:
                job = await jobs.get(conn, job_id, tenant.id)
                if job.status != schemas.JobStatus.CANCELED:
                    raise errors.Conflict(
                        f"job {job_id} already {job.status.value}: only a queued or running "
                        "job can be canceled"
                    ) from None
    log.info("job_canceled", job_id=str(job_id))
    return json_response(job_view(request.app, job))


def _message_view(message: deliveries.Message) -> api.WebhookMessageView:
    return msgspec.convert(msgspec.to_builtins(message), api.WebhookMessageView, strict=False)


async def job_webhooks(request: web.Request) -> web.Response:
    """The job's webhook delivery log: each message (per event and target) with every
    attempt, its status code, error and the start of the receiver's answer."""
    tenant = await authenticate(request)
    job_id = _parse_uuid(request.match_info["job_id"], "job")
    async with request.app[POOL].acquire() as conn:
        await jobs.get(conn, job_id, tenant.id)  # 404 for another tenant's job
        messages = await deliveries.for_job(conn, job_id, tenant.id)
    return json_response(api.WebhookLog(messages=[_message_view(m) for m in messages]))


async def resend_webhook(request: web.Request) -> web.Response:
    """Send a webhook message again (delivered, given up or still retrying): it is due
    at once and the notifier delivers it within its poll interval."""
    tenant = await authenticate(request)
    message_id = _parse_uuid(request.match_info["message_id"], "webhook message")
    async with request.app[POOL].acquire() as conn:
        message = await deliveries.resend(conn, message_id, tenant.id)
    log.info("webhook_resend", message_id=str(message_id), job_id=str(message.job_id))
    return json_response(_message_view(message), status=202)


def _endpoint_view(ep: endpoints.Endpoint, *, secret: bool = False) -> api.EndpointView:
    return api.EndpointView(
        id=str(ep.id),
        url=ep.url,
        enabled=ep.enabled,
        failure_count=ep.failure_count,
        created_at=ep.created_at,
        disabled_at=ep.disabled_at,
        secret=ep.secret if secret else None,
    )


async def create_endpoint(request: web.Request) -> web.Response:
    """Register a webhook endpoint: every terminal job event of the tenant goes to it,
    signed with the secret this answer carries (once)."""
    tenant = await authenticate(request)
    req: api.EndpointRequest = await _decode(request, api.EndpointRequest)
    cfg = request.app[CFG]
    await netguard.check_url(req.url, allow_private=cfg.allow_private_webhooks, what="url")
    async with request.app[POOL].acquire() as conn:
        ep = await endpoints.create(conn, tenant.id, req.url)
    log.info("webhook_endpoint_created", endpoint_id=str(ep.id))
    return json_response(_endpoint_view(ep, secret=True), status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    async with request.app[POOL].acquire() as conn:
        found = await endpoints.list_for_tenant(conn, tenant.id)
    return json_response(api.EndpointList(endpoints=[_endpoint_view(e) for e in found]))


async def delete_endpoint(request: web.Request) -> web.Response:
    """Remove an endpoint; messages still pending for it are given up."""
    tenant = await authenticate(request)
    endpoint_id = _parse_uuid(request.match_info["endpoint_id"], "webhook endpoint")
    async with request.app[POOL].acquire() as conn:
        await endpoints.delete(conn, endpoint_id, tenant.id)
    return web.Response(status=204)


async def recover_endpoint(request: web.Request) -> web.Response:
    """Enable an endpoint again (after it was disabled for failing) and resend its
    messages that failed since ``since`` (default: 24 hours ago)."""
    tenant = await authenticate(request)
    endpoint_id = _parse_uuid(request.match_info["endpoint_id"], "webhook endpoint")
    req = api.RecoverRequest()
    if request.can_read_body:
        req = await _decode(request, api.RecoverRequest)
    since = req.since or dt.datetime.now(dt.UTC) - dt.timedelta(hours=24)
    if since.tzinfo is None:
        raise errors.InvalidInput("since must carry a time zone (e.g. ...Z)")
    async with request.app[POOL].acquire() as conn:
        ep, resent = await endpoints.recover(conn, endpoint_id, tenant.id, since)
    log.info("webhook_endpoint_recovered", endpoint_id=str(endpoint_id), resent=resent)
    return json_response(api.RecoverResponse(endpoint=_endpoint_view(ep), resent=resent))


async def list_jobs(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    status = request.query.get("status")
    limit = _limit(request)
    async with request.app[POOL].acquire() as conn:
        rows = await jobs.list_for_tenant(conn, tenant.id, status=status, limit=limit)
    return json_response(api.JobList(jobs=[job_view(request.app, j) for j in rows]))


_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def _safe_name(raw: str) -> str:
    """The file name part of ``raw`` with only harmless characters (it becomes a key part)."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    return _UNSAFE.sub("_", base).strip(". ")[:200] or "upload.bin"


async def upload(request: web.Request) -> web.Response:
    """Stream a raw body into the store as a source asset."""
    tenant = await authenticate(request)
    cfg = request.app[CFG]
    name = _safe_name(request.query.get("name") or request.headers.get("X-Filename") or "")
    content_type = request.headers.get("Content-Type", "application/octet-stream")
    if request.content_length is not None and request.content_length > cfg.max_upload_bytes:
        raise errors.PayloadTooLarge(f"upload exceeds the limit of {cfg.max_upload_bytes} bytes")
    asset_id = uuid.uuid4()
    key = source_key(str(tenant.id), str(asset_id), name)
    digest = hashlib.sha256()

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(1 << 20):
            digest.update(chunk)
            yield chunk

    size = await request.app[STORE].put_stream(key, chunks(), max_bytes=cfg.max_upload_bytes)
    if size == 0:
        await request.app[STORE].delete(key)
        raise errors.InvalidInput("the upload is empty: send the file as the request body")
    async with request.app[POOL].acquire() as conn:
        asset = await tenants.insert_asset(
            conn,
            asset_id=asset_id,
            tenant_id=tenant.id,
            object_key=key,
            name=name,
            content_type=content_type,
            size=size,
            sha256=digest.hexdigest(),
        )
    log.info("asset_uploaded", asset_id=str(asset.id), size=size, tenant_id=str(tenant.id))
    return json_response(_asset_view(asset), 201)


async def list_uploads(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    limit = _limit(request)
    async with request.app[POOL].acquire() as conn:
        rows = await tenants.list_assets(conn, tenant.id, limit=limit)
    return json_response(api.AssetList(uploads=[_asset_view(a) for a in rows]))


def _limit(request: web.Request) -> int:
    """The ``limit`` query parameter of a list: 1-200, 50 when absent."""
    try:
        return max(1, min(200, int(request.query.get("limit", "50"))))
    except ValueError:
        raise errors.InvalidInput("limit must be an integer") from None


def _asset_view(asset: tenants.Asset) -> api.AssetView:
    return api.AssetView(
        id=str(asset.id),
        name=asset.name,
        size=asset.size,
        sha256=asset.sha256,
        content_type=asset.content_type,
        created_at=asset.created_at,
    )


async def start_direct_upload(request: web.Request) -> web.Response:
    """Plan an upload that the client PUTs straight to the store, part by part."""
    tenant = await authenticate(request)
    req: api.DirectUploadRequest = await _decode(request, api.DirectUploadRequest)
    req = msgspec.structs.replace(req, name=_safe_name(req.name))
    app = request.app
    view = await direct.start(app[POOL], app[STORE], app[CFG], tenant.id, req)
    return json_response(view, 201)


async def complete_direct_upload(request: web.Request) -> web.Response:
    """Turn an upload whose parts are all in the store into an asset: 201 the first time,
    200 with the same asset when completed again."""
    tenant = await authenticate(request)
    upload_id = _parse_uuid(request.match_info["upload_id"], "upload")
    req = api.CompleteUploadRequest()
    if request.can_read_body:
        req = await _decode(request, api.CompleteUploadRequest)
    app = request.app
    asset, created = await direct.complete(app[POOL], app[STORE], tenant.id, upload_id, req.parts)
    return json_response(_asset_view(asset), 201 if created else 200)


async def direct_upload_status(request: web.Request) -> web.Response:
    """Where a direct upload stands; a pending one with fresh part URLs, to resume."""
    tenant = await authenticate(request)
    upload_id = _parse_uuid(request.match_info["upload_id"], "upload")
    view = await direct.status(request.app[POOL], request.app[STORE], tenant.id, upload_id)
    return json_response(view)


async def abort_direct_upload(request: web.Request) -> web.Response:
    """Give up a pending upload; its parts are removed from the store."""
    tenant = await authenticate(request)
    upload_id = _parse_uuid(request.match_info["upload_id"], "upload")
    await direct.abort(request.app[POOL], request.app[STORE], tenant.id, upload_id)
    return web.Response(status=204)


async def upload_part(request: web.Request) -> web.Response:
    """A part URL of the filesystem store: the body becomes the part, its MD5 the ETag (an
    S3 store's part URLs go to S3 itself)."""
    key = request.match_info["key"]
    store = request.app[STORE]
    if not isinstance(store, fs.FsStore):
        raise errors.NotFound(f"object {key} not found")
    target = store.verify_part(key, request.query)
    if request.content_length is not None and request.content_length > target.max_bytes:
        raise errors.PayloadTooLarge(
            f"part {target.number} is {target.max_bytes} bytes, not {request.content_length}: "
            "send exactly the bytes the upload plan gives for it"
        )
    etag = await store.put_part(
        key,
        target.upload_id,
        target.number,
        request.content.iter_chunked(1 << 20),
        max_bytes=target.max_bytes,
    )
    return web.Response(status=200, headers={"ETag": etag})


async def _event_stream(
    request: web.Request, job_id: uuid.UUID, after: int, closed: asyncio.Event
) -> AsyncIterator[jobs.Event]:
    """Every event of the job after ``after``, until a terminal one or ``closed``. While
    the database is out of reach the stream pauses (the WebSocket's pings keep it open)
    and goes on where it was when the database is back."""
    hub = request.app[HUB]
    pool = request.app[POOL]

    async def read(after: int) -> list[jobs.Event]:
        async with pool.acquire() as conn:
            return await jobs.events_after(conn, job_id, after)

    with hub.watch(job_id) as wake:
        while not closed.is_set():
            wake.clear()
            batch = await lifecycle.through_outages(
                closed, "event_stream", functools.partial(read, after)
            )
            for event in batch or ():
                after = event.seq
                yield event
                if event.type in TERMINAL_EVENTS:
                    return
            if not batch:
                # NOTIFY is a hint: poll now and then in case one was missed.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await _first(wake.wait(), closed.wait())


async def _first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def _event_view(event: jobs.Event) -> api.EventView:
    return api.EventView(
        seq=event.seq, type=event.type, data=event.data, created_at=event.created_at
    )


async def _end_streams(app: web.Application) -> None:
    for closed in app[STREAMS]:
        closed.set()


async def job_events(request: web.Request) -> web.StreamResponse:
    """WebSocket (or SSE when not an upgrade): every state/progress change of the job."""
    tenant = await authenticate(request)
    job_id = _parse_uuid(request.match_info["job_id"], "job")
    async with request.app[POOL].acquire() as conn:
        await jobs.get(conn, job_id, tenant.id)
    after_raw = request.query.get("after") or request.headers.get("Last-Event-ID") or "0"
    after = int(after_raw) if after_raw.isdigit() else 0
    closed = asyncio.Event()
    streams = request.app[STREAMS]
    streams.add(closed)
    try:
        return await _stream_events(request, job_id, after, closed)
    finally:
        streams.discard(closed)


async def _stream_events(
    request: web.Request, job_id: uuid.UUID, after: int, closed: asyncio.Event
) -> web.StreamResponse:
    # timeout: how long closing waits for the client's answer. A client answers at once;
    # while the gateway shuts down its answer is never read, and aiohttp's 10 s would
    # hold the shutdown that long.
    ws = web.WebSocketResponse(heartbeat=20, timeout=2.0)
    if ws.can_prepare(request).ok:
        await ws.prepare(request)

        async def reader() -> None:
            async for msg in ws:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
            closed.set()

        read_task = asyncio.create_task(reader())
        # Ended before the job did (the gateway shutting down): "going away", so that
        # the client connects again, from its last event.
        code = WSCloseCode.GOING_AWAY
        try:
            async for event in _event_stream(request, job_id, after, closed):
                await ws.send_str(_json.encode(_event_view(event)).decode())
                if event.type in TERMINAL_EVENTS:
                    code = WSCloseCode.OK
        except ConnectionResetError:
            pass
        finally:
            read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await read_task
            await ws.close(code=code)
        return ws
    # An EventSource reconnects by itself when the stream ends, sending Last-Event-ID.
    sse = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await sse.prepare(request)
    try:
        async for event in _event_stream(request, job_id, after, closed):
            payload = _json.encode(_event_view(event)).decode()
            await sse.write(f"id: {event.seq}\nevent: {event.type}\ndata: {payload}\n\n".encode())
    except ConnectionResetError:
        pass
    return sse


async def download(request: web.Request) -> web.StreamResponse:
    """A signed link of the filesystem store (an S3 store's links go to S3 itself)."""
    key = request.match_info["key"]
    store = request.app[STORE]
    if not isinstance(store, fs.FsStore):
        raise errors.NotFound(f"object {key} not found")
    path = store.verify(key, request.query.get("expires", ""), request.query.get("sig", ""))
    resp = web.FileResponse(path, chunk_size=1 << 18)
    resp.headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
    resp.headers["Cache-Control"] = "private, max-age=300"
    return resp


# --- the seed document's contract -------------------------------------------------------

_SEED_STAGE: dict[str, str] = {
    "queued": "processing",
    "fetching": "processing",
    "rendering": "processing",
    "uploading": "storing",
    "done": "complete",
}


async def seed_process(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    body = await _decode(request, api.SeedProcessRequest)
    req = api.JobRequest(
        project=body.editorState,
        output=schemas.OutputSpec(
            format=body.outputFormat, resolution=body.resolution, fps=body.fps
        ),
        media=body.media,
        webhook_url=body.webhook_url,
    )
    job, _ = await submit(request, tenant, req, request.headers.get("Idempotency-Key"))
    return json_response(api.SeedProcessResponse(jobId=str(job.id)))


async def seed_status(request: web.Request) -> web.Response:
    job_id = _parse_uuid(request.match_info["job_id"], "job")
    tenant_id = None
    if not request.app[CFG].seed_status_public or _token(request):
        tenant_id = (await authenticate(request)).id
    async with request.app[POOL].acquire() as conn:
        job = await jobs.get(conn, job_id, tenant_id)
    if job.status == schemas.JobStatus.SUCCEEDED:
        result = _result_view(request.app, job)
        status = api.SeedStatus(
            stage="complete",
            progress=100,
            message=job.message or "complete",
            downloadUrl=result.download_url if result else None,
        )
    elif job.status.terminal:
        err = job.error or {}
        status = api.SeedStatus(
            stage="error",
            progress=round(job.progress * 100),
            message=job.message or job.status.value,
            error=str(err.get("message") or job.status.value),
        )
    else:
        stage = _SEED_STAGE.get(job.stage.value, "processing")
        status = api.SeedStatus(
            stage=stage,  # type: ignore[arg-type]
            progress=min(99, round(job.progress * 100)),
            message=job.message or job.stage.value,
        )
    return json_response(status)


# --- operations ---------------------------------------------------------------------------


async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with request.app[POOL].acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise errors.RetryLater(f"database unavailable: {exc}") from exc
    return json_response({"status": "ready"})


async def metrics(_request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def openapi_doc(_request: web.Request) -> web.Response:
    return json_response(openapi.document())


async def _resources(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CFG]
    url = db.dsn(cfg)
    async with contextlib.AsyncExitStack() as stack:
        app[POOL] = await stack.enter_async_context(db.pool(url, max_size=10))
        hub = EventHub()
        app[HUB] = hub
        # One LISTEN connection per process feeds every WebSocket/SSE stream.
        listener = await stack.enter_async_context(db.Listener(url, db.EVENTS_CHANNEL))
        listener.add(hub.on_notify)
        app[QUEUE] = await stack.enter_async_context(open_queue(cfg, app[POOL]))
        app[STORE] = await stack.enter_async_context(open_store(cfg))
        # Registered after the pool and store, so it stops before they close.
        sweeper = asyncio.create_task(
            direct.sweep_forever(app[POOL], app[STORE], cfg.upload_sweep_seconds),
            name="upload-sweep",
        )
        stack.push_async_callback(_cancel, sweeper)
        if cfg.retention_days > 0:
            expiry = asyncio.create_task(
                retention.sweep_forever(app[POOL], app[STORE], cfg.retention_days),
                name="retention-sweep",
            )
            stack.push_async_callback(_cancel, expiry)
        yield


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(cfg: settings.Gateway) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=cfg.max_project_bytes)
    app[CFG] = cfg
    app[STREAMS] = set()
    app[LIMITERS] = {}
    app.on_shutdown.append(_end_streams)
    app.cleanup_ctx.append(_resources)
    r = app.router
    r.add_post("/v1/jobs", create_job)
    r.add_get("/v1/jobs", list_jobs)
    r.add_get("/v1/jobs/{job_id}", get_job)
    r.add_get("/v1/jobs/{job_id}/events", job_events)
    r.add_post("/v1/jobs/{job_id}/cancel", cancel_job)
    r.add_delete("/v1/jobs/{job_id}/output", delete_job_output)
    r.add_get("/v1/jobs/{job_id}/webhooks", job_webhooks)
    r.add_post("/v1/webhooks/messages/{message_id}/resend", resend_webhook)
    r.add_post("/v1/webhooks/endpoints", create_endpoint)
    r.add_get("/v1/webhooks/endpoints", list_endpoints)
    r.add_delete("/v1/webhooks/endpoints/{endpoint_id}", delete_endpoint)
    r.add_post("/v1/webhooks/endpoints/{endpoint_id}/recover", recover_endpoint)
    r.add_post("/v1/uploads", upload)
    r.add_get("/v1/uploads", list_uploads)
    r.add_post("/v1/uploads/direct", start_direct_upload)
    r.add_get("/v1/uploads/{upload_id}", direct_upload_status)
    r.add_delete("/v1/uploads/{upload_id}", delete_upload)
    r.add_post("/v1/uploads/{upload_id}/complete", complete_direct_upload)
    r.add_post("/v1/uploads/{upload_id}/abort", abort_direct_upload)
    r.add_get(fs.FILES_PREFIX + "{key:.+}", download)
    r.add_put(fs.FILES_PREFIX + "{key:.+}", upload_part)
    r.add_post("/api/video/process", seed_process)
    r.add_get("/api/video/status/{job_id}", seed_status)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", openapi_doc)
    _allow_origins(app, cfg.cors_origin_list())
    return app


# What a page of an allowed origin may send and read: the API key, JSON and upload
# headers; the request id, part ETags (direct uploads) and download ranges.
_CORS = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]  # its __new__ is unannotated
    allow_credentials=False,
    allow_headers=(
        "Authorization",
        "Content-Type",
        "Idempotency-Key",
        "Last-Event-ID",
        "X-Filename",
        "X-Request-Id",
        "Range",
    ),
    expose_headers=("ETag", "X-Request-Id", "Content-Range", "Content-Disposition"),
    max_age=600,
)


def _allow_origins(app: web.Application, origins: list[str]) -> None:
    """Let pages of ``origins`` call every route from the browser (preflight included):
    the editor's own web app calling the API, or PUTting parts to the gateway's URLs."""
    if not origins:
        return
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins, _CORS))
    for route in list(app.router.routes()):
        cors.add(route)
