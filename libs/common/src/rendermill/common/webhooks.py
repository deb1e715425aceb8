"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature header
is a space-separated list of ``v1,<base64 HMAC-SHA256>`` (several during secret rotation).
The secret is ``whsec_`` + base64 of the key bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from rendermill.common import errors

SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise errors.InvalidInput("webhook secret must be 'whsec_' + base64") from exc


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>`` for one secret."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign(
    secrets: Sequence[str], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers for ``body``, signed with every secret in ``secrets``."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signature(s, msg_id, ts, body) for s in secrets),
    }


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> None:
    """Raise errors.Unauthorized unless ``headers`` carry a valid, fresh signature."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        ts = int(lower["webhook-timestamp"])
        sigs = lower["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise errors.Unauthorized("missing or malformed webhook headers") from exc
    current = time.time() if now is None else now
    if abs(current - ts) > TOLERANCE_SECONDS:
        raise errors.Unauthorized("webhook timestamp outside the tolerance window")
    expected = signature(secret, msg_id, ts, body)
    if not any(hmac.compare_digest(expected, s) for s in sigs):
        raise errors.Unauthorized("no webhook signature matches")
