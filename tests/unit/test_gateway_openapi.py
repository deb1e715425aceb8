"""The OpenAPI document is whole: every reference resolves, and types say their format."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rendermill.gateway import openapi


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def test_every_reference_resolves() -> None:
    doc = openapi.document()
    schemas = doc["components"]["schemas"]
    prefix = "#/components/schemas/"
    refs = {(where, node["$ref"]) for where, node in _walk(doc) if "$ref" in node}
    assert refs
    unresolved = [
        (where, ref)
        for where, ref in refs
        if not ref.startswith(prefix) or ref[len(prefix) :] not in schemas
    ]
    assert unresolved == []


def test_times_urls_and_projects_say_what_they_are() -> None:
    schemas = openapi.document()["components"]["schemas"]
    assert schemas["JobView"]["properties"]["created_at"] == {
        "format": "date-time",
        "type": "string",
    }
    since = schemas["RecoverRequest"]["properties"]["since"]["anyOf"]
    assert {"format": "date-time", "type": "string"} in since
    assert schemas["EndpointRequest"]["properties"]["url"] == {"format": "uri", "type": "string"}
    assert schemas["JobRequest"]["properties"]["project"]["type"] == "object"
