"""SSRF guard for URLs we will call (webhooks, remote sources)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse

from rendermill.common import errors


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


async def check_url(url: str, *, allow_private: bool, what: str = "url") -> None:
    """Raise errors.InvalidInput unless ``url`` is http(s) and (unless allowed) public.

    The host is resolved; every address it resolves to must be public, so a name that
    points at 127.0.0.1 or the cloud metadata address is refused.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InvalidInput(f"{what} must be an absolute http(s) URL, got {url!r}")
    if allow_private:
        return
    host = parts.hostname
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise errors.InvalidInput(f"{what}: cannot resolve host {host!r}") from exc
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if not _public(ip):
            raise errors.InvalidInput(
                f"{what} {url!r} points at a non-public address ({ip}); "
                "only public targets are allowed"
            )
