"""The object-store port: sources/ and outputs/ objects, and expiring download URLs."""

from __future__ import annotations

from collections.abc import AsyncIterable
from pathlib import Path
from typing import Protocol


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
