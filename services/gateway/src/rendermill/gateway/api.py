"""Request and response bodies of the public API (msgspec Structs, also the OpenAPI source)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from rendermill.common import schemas

# Times as RFC 3339 strings; the OpenAPI document says so (msgspec's schema does not).
Timestamp = Annotated[dt.datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})]
# An editor project: a JSON object, validated by the project parser, which names every
# problem by its path.
Project = Annotated[
    Any,
    msgspec.Meta(
        extra_json_schema={
            "type": "object",
            "description": "The project as the Stoked UI Editor exports it.",
        }
    ),
]
WebhookUrl = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uri"})]


class JobRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/jobs``: an editor project and how to render it."""

    project: Project
    output: schemas.OutputSpec = schemas.OutputSpec()
    # Track url exactly as written in the project -> uploaded asset id.
    media: dict[str, str] = {}
    webhook_url: WebhookUrl | None = None
    idempotency_key: str | None = None
    # A tier, or an integer (the form from before tiers) counted by its sign.
    priority: Annotated[
        Annotated[int, msgspec.Meta(ge=-schemas.PRIORITY_LIMIT, le=schemas.PRIORITY_LIMIT)]
        | schemas.Tier,
        msgspec.Meta(description=f"Priority tier: {schemas.PRIORITY_HELP}."),
    ] = schemas.Tier.NORMAL


class SeedProcessRequest(msgspec.Struct, kw_only=True):
    """``POST /api/video/process``, the seed document's contract."""

    editorState: Project  # the seed document spells it so
    outputFormat: schemas.OutputFormat = "mp4"
    resolution: str = "1080p"
    fps: int = 30
    media: dict[str, str] = {}
    webhook_url: WebhookUrl | None = None


class SeedProcessResponse(msgspec.Struct, kw_only=True):
    jobId: str
    status: Literal["processing"] = "processing"


class SeedStatus(msgspec.Struct, kw_only=True, omit_defaults=True):
    stage: Literal["uploading", "processing", "storing", "downloading", "complete", "error"]
    progress: int
    message: str
    downloadUrl: str | None = None
    error: str | None = None


class ResultView(msgspec.Struct, kw_only=True):
    object_key: str
    size_bytes: int
    duration: float
    width: int
    height: int
    frames: int
    sha256: str
    content_type: str
    # Whether the video was stream-copied from the sources (no re-encode).
    copied: bool = False
    poster_key: str | None = None
    download_url: str | None = None
    poster_url: str | None = None
    download_expires_at: Timestamp | None = None
    # When the output was deleted, kept RENDERMILL_RETENTION_DAYS after the job finished.
    expired_at: Timestamp | None = None


class ErrorInfo(msgspec.Struct, kw_only=True):
    code: str
    message: str
    detail: Any = None


class JobView(msgspec.Struct, kw_only=True):
    id: str
    status: schemas.JobStatus
    stage: schemas.Stage
    progress: float
    frames_done: int
    frames_total: int
    message: str
    attempt: int
    priority: schemas.Tier
    output: schemas.OutputSpec
    webhook_url: str | None
    result: ResultView | None
    error: ErrorInfo | None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    events_url: str


class JobList(msgspec.Struct, kw_only=True):
    jobs: list[JobView]


class AssetView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    size: int
    sha256: str
    content_type: str
    created_at: Timestamp


class AssetList(msgspec.Struct, kw_only=True):
    """``GET /v1/uploads``: the tenant's uploaded files, newest first."""

    uploads: list[AssetView]


class DirectUploadRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/uploads/direct``: a file the client will PUT straight to the store."""

    name: str
    # The file's exact length in bytes.
    size: Annotated[int, msgspec.Meta(ge=1)]
    content_type: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] = (
        "application/octet-stream"
    )
    # The file's SHA-256 in hex, recorded on the asset as given (the bytes never pass
    # through the gateway, so it is not checked).
    sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-fA-F]{64}$")] | None = None


class UploadPartTarget(msgspec.Struct, kw_only=True):
    """Where one part goes: PUT the file's bytes ``[offset, offset + size)`` to ``url``."""

    number: int
    offset: int
    size: int
    url: str


class DirectUploadView(msgspec.Struct, kw_only=True):
    """An upload plan. PUT each part's bytes to its URL (each answers with the part's
    ``ETag``), then ``POST complete_url``; ``url`` is set when the whole file goes in
    one PUT (then it is also the one part's). Everything expires at ``expires_at``."""

    id: str
    name: str
    size: int
    content_type: str
    part_size: int
    parts: list[UploadPartTarget]
    url: str | None
    expires_at: Timestamp
    complete_url: str
    abort_url: str


class StoredPartView(msgspec.Struct, kw_only=True):
    """A part the store holds: its number, size and ETag."""

    number: int
    size: int
    etag: str


class DirectUploadStatusView(msgspec.Struct, kw_only=True):
    """``GET /v1/uploads/{id}``: where a direct upload stands. While it is ``pending`` it
    comes with fresh part URLs (expiring with the upload) and the parts the store already
    holds, so that an interrupted client PUTs only the ``missing`` ones and completes;
    a ``completed`` upload names its asset (the same id)."""

    id: str
    name: str
    size: int
    status: str
    expires_at: Timestamp
    part_size: int
    parts: list[UploadPartTarget]
    uploaded: list[StoredPartView]
    missing: list[int]
    asset_id: str | None
    complete_url: str
    abort_url: str


class UploadedPart(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    number: int
    etag: str


class CompleteUploadRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/uploads/{id}/complete``. ``parts``: the ETag each part's PUT answered
    with, to make sure the store holds those very bytes; without it (or with no body) the
    parts the store holds are used, once each is checked to have its planned size."""

    parts: list[UploadedPart] | None = None


class EventView(msgspec.Struct, kw_only=True):
    seq: int
    type: str
    data: dict[str, Any]
    created_at: Timestamp


class WebhookAttemptView(msgspec.Struct, kw_only=True):
    """One try at a delivery: the receiver's HTTP status (null when unreachable), the
    error, and the first 2 KiB of its answer."""

    attempt: int
    started_at: Timestamp
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None


class WebhookMessageView(msgspec.Struct, kw_only=True):
    """One event sent to one target, with every attempt at it."""

    id: str
    job_id: str
    event_type: str
    url: str
    endpoint_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: Timestamp
    created_at: Timestamp
    delivered_at: Timestamp | None
    log: list[WebhookAttemptView]


class EndpointRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/webhooks/endpoints``: a URL to send every terminal job event to."""

    url: WebhookUrl


class EndpointView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A registered webhook endpoint. ``secret`` (its own ``whsec_`` signing secret) is
    shown once, when it is created."""

    id: str
    url: str
    enabled: bool
    failure_count: int
    created_at: Timestamp
    disabled_at: Timestamp | None = None
    secret: str | None = None


class EndpointList(msgspec.Struct, kw_only=True):
    endpoints: list[EndpointView]


class RecoverRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/webhooks/endpoints/{id}/recover``: resend what failed since ``since``
    (default: the last 24 hours)."""

    since: Timestamp | None = None


class RecoverResponse(msgspec.Struct, kw_only=True):
    endpoint: EndpointView
    resent: int


class WebhookLog(msgspec.Struct, kw_only=True):
    """``GET /v1/jobs/{id}/webhooks``: the job's delivery log."""

    messages: list[WebhookMessageView]


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str
    detail: Any = None
    request_id: str = ""


class ErrorResponse(msgspec.Struct, kw_only=True):
    error: ErrorBody
