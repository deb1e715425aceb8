"""The OpenAPI document, generated from the same msgspec Structs the handlers use."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from rendermill.gateway import api

_MODELS: tuple[Any, ...] = (
    api.JobRequest,
    api.JobView,
    api.JobList,
    api.AssetView,
    api.AssetList,
    api.DirectUploadRequest,
    api.DirectUploadView,
    api.DirectUploadStatusView,
    api.CompleteUploadRequest,
    api.EventView,
    api.ErrorResponse,
    api.WebhookLog,
    api.WebhookMessageView,
    api.EndpointRequest,
    api.EndpointView,
    api.EndpointList,
    api.RecoverRequest,
    api.RecoverResponse,
    api.SeedProcessRequest,
    api.SeedProcessResponse,
    api.SeedStatus,
)


def _params(where: str, *names: str, required: bool = True) -> list[dict[str, Any]]:
    """String parameters ``names`` in the path, query or header."""
    return [
        {"name": n, "in": where, "required": required, "schema": {"type": "string"}} for n in names
    ]


def _ref(model: Any) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: Any) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(model)}}}


def _op(
    summary: str,
    ok: tuple[int, Any],
    body: Any = None,
    *,
    body_required: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            str(ok[0]): {"description": "OK", **(_json(ok[1]) if ok[1] else {})},
            "default": {"description": "error", **_json(api.ErrorResponse)},
        },
        "security": [{"bearer": []}],
    }
    if body is not None:
        op["requestBody"] = {"required": body_required, **_json(body)}
    op.update(extra)
    return op


@functools.cache
def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        _MODELS, ref_template="#/components/schemas/{name}"
    )
    job_id = _params("path", "job_id")
    upload_id = _params("path", "upload_id")
    return {
        "openapi": "3.1.0",
        "info": {"title": "rendermill", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/jobs": {
                "post": _op("Submit a render job", (202, api.JobView), api.JobRequest),
                "get": _op("List jobs", (200, api.JobList)),
            },
            "/v1/jobs/{job_id}": {"get": _op("Get a job", (200, api.JobView), parameters=job_id)},
            "/v1/jobs/{job_id}/cancel": {
                "post": _op(
                    "Cancel a queued or running job (409 once it succeeded or failed)",
                    (200, api.JobView),
                    parameters=job_id,
                )
            },
            "/v1/jobs/{job_id}/output": {
                "delete": _op(
                    "Delete a finished job's output and poster from the store now; the job "
                    "keeps its result, marked expired_at, without a link (409 while it is "
                    "queued or running)",
                    (204, None),
                    parameters=job_id,
                )
            },
            "/v1/jobs/{job_id}/webhooks": {
                "get": _op(
                    "The job's webhook delivery log: messages and every attempt",
                    (200, api.WebhookLog),
                    parameters=job_id,
                )
            },
            "/v1/webhooks/endpoints": {
                "post": _op(
                    "Register a webhook endpoint (its secret is in this answer only)",
                    (201, api.EndpointView),
                    api.EndpointRequest,
                ),
                "get": _op("List webhook endpoints", (200, api.EndpointList)),
            },
            "/v1/webhooks/endpoints/{endpoint_id}": {
                "delete": _op(
                    "Remove a webhook endpoint",
                    (204, None),
                    parameters=_params("path", "endpoint_id"),
                )
            },
            "/v1/webhooks/endpoints/{endpoint_id}/recover": {
                "post": _op(
                    "Enable an endpoint again and resend what failed since a time",
                    (200, api.RecoverResponse),
                    api.RecoverRequest,
                    body_required=False,
                    parameters=_params("path", "endpoint_id"),
                )
            },
            "/v1/webhooks/messages/{message_id}/resend": {
                "post": _op(
                    "Send a webhook message again",
                    (202, api.WebhookMessageView),
                    parameters=_params("path", "message_id"),
                )
            },
            "/v1/jobs/{job_id}/events": {
                "get": _op(
                    "Job events over WebSocket (or SSE): one EventView per message",
                    (200, api.EventView),
                    parameters=job_id,
                )
            },
            "/v1/uploads": {
                "post": {
                    **_op("Upload a source file (raw body)", (201, api.AssetView)),
                    "requestBody": {
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}}
                    },
                },
                "get": _op(
                    "The tenant's uploaded files, newest first (limit: 1-200, 50)",
                    (200, api.AssetList),
                    parameters=_params("query", "limit", required=False),
                ),
            },
            "/v1/uploads/direct": {
                "post": _op(
                    "Start a direct upload: the file's parts go straight to the store, one PUT "
                    "to each part URL (each answers with the part's ETag header)",
                    (201, api.DirectUploadView),
                    api.DirectUploadRequest,
                )
            },
            "/v1/uploads/{upload_id}": {
                "get": _op(
                    "Where a direct upload stands: while pending, fresh part URLs and the "
                    "parts the store holds (resume by PUTting the missing ones); when "
                    "completed, its asset id",
                    (200, api.DirectUploadStatusView),
                    parameters=upload_id,
                ),
                "delete": _op(
                    "Delete an uploaded file (its asset) from the store now (409 while a "
                    "queued or running job plays it)",
                    (204, None),
                    parameters=upload_id,
                ),
            },
            "/v1/uploads/{upload_id}/complete": {
                "post": {
                    **_op(
                        "Complete a direct upload into an asset (201; 200 with the same asset "
                        "when completed before). Parts missing or of the wrong size are a 400 "
                        "and the upload stays open to be fixed; aborted or expired ones a 409",
                        (201, api.AssetView),
                        parameters=upload_id,
                    ),
                    "requestBody": {"required": False, **_json(api.CompleteUploadRequest)},
                }
            },
            "/v1/uploads/{upload_id}/abort": {
                "post": _op(
                    "Abort a direct upload; its parts are removed from the store",
                    (204, None),
                    parameters=upload_id,
                )
            },
            "/v1/files/{key}": {
                "get": {
                    "summary": "A download link of the filesystem store, served by the "
                    "gateway: use it as the job's result gives it (signed and expiring; no API "
                    "key; HTTP Range supported)",
                    "parameters": [
                        *_params("path", "key"),
                        *_params("query", "expires", "sig"),
                        *_params("header", "Range", required=False),
                    ],
                    "responses": {
                        "200": {
                            "description": "the file",
                            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                        },
                        "206": {
                            "description": "the range asked for",
                            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                        },
                        "default": {"description": "error", **_json(api.ErrorResponse)},
                    },
                    "security": [],
                },
                "put": {
                    "summary": "A part URL of the filesystem store, served by the gateway: "
                    "use it as the upload plan gives it (signed and expiring; no API key)",
                    "parameters": [
                        *_params("path", "key"),
                        *_params("query", "upload_id", "part", "max_bytes", "expires", "sig"),
                    ],
                    "requestBody": {
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}}
                    },
                    "responses": {
                        "200": {
                            "description": "part stored",
                            "headers": {"ETag": {"schema": {"type": "string"}}},
                        },
                        "default": {"description": "error", **_json(api.ErrorResponse)},
                    },
                    "security": [],
                },
            },
            "/api/video/process": {
                "post": _op(
                    "Seed contract: submit", (200, api.SeedProcessResponse), api.SeedProcessRequest
                )
            },
            "/api/video/status/{job_id}": {
                "get": _op("Seed contract: status", (200, api.SeedStatus), parameters=job_id)
            },
        },
    }
