"""Standard Webhooks signatures."""

from __future__ import annotations

import base64

import pytest

from rendermill.common import errors, tenants, webhooks

# The example from the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_matches_the_specification_example() -> None:
    assert webhooks.signature(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG
    headers = webhooks.sign([SPEC_SECRET], SPEC_ID, SPEC_BODY, timestamp=SPEC_TS)
    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TS),
        "webhook-signature": SPEC_SIG,
    }
    webhooks.verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TS + 10)


def test_rejects_tampering_staleness_and_wrong_secret() -> None:
    secret = tenants.new_webhook_secret()
    headers = webhooks.sign([secret], "msg_1", b"{}")
    webhooks.verify(secret, headers, b"{}")
    with pytest.raises(errors.Unauthorized):
        webhooks.verify(secret, headers, b'{"x":1}')
    with pytest.raises(errors.Unauthorized):
        webhooks.verify(tenants.new_webhook_secret(), headers, b"{}")
    with pytest.raises(errors.Unauthorized, match="tolerance"):
        webhooks.verify(secret, headers, b"{}", now=int(headers["webhook-timestamp"]) + 3600)
    with pytest.raises(errors.Unauthorized):
        webhooks.verify(secret, {}, b"{}")


def test_several_secrets_during_rotation() -> None:
    old, new = tenants.new_webhook_secret(), tenants.new_webhook_secret()
    headers = webhooks.sign([old, new], "msg_2", b"{}")
    assert len(headers["webhook-signature"].split()) == 2
    webhooks.verify(old, headers, b"{}")
    webhooks.verify(new, headers, b"{}")


def test_secret_format() -> None:
    secret = tenants.new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
