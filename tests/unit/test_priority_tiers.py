"""Priority tiers: the API's values, the stored ranks, the queue message's old form."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from rendermill.common import errors, schemas, settings
from rendermill.common.schemas import Tier


def test_ranks_round_trip_and_old_integers_count_by_their_sign() -> None:
    assert [t.rank for t in Tier] == [1, 0, -1]
    assert all(Tier.from_rank(t.rank) is t for t in Tier)
    assert [Tier.from_rank(n) for n in (42, 1, 0, -1, -7)] == [
        Tier.HIGH,
        Tier.HIGH,
        Tier.NORMAL,
        Tier.LOW,
        Tier.LOW,
    ]


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        ("high", Tier.HIGH),
        ("normal", Tier.NORMAL),
        ("low", Tier.LOW),
        (Tier.LOW, Tier.LOW),
        (0, Tier.NORMAL),
        (1, Tier.HIGH),
        (100, Tier.HIGH),
        (-1, Tier.LOW),
        (-100, Tier.LOW),
    ],
)
def test_priority_is_a_tier_name_or_an_integer_in_range(value: object, tier: Tier) -> None:
    assert schemas.parse_priority(value) is tier


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("urgent", 'priority "urgent" is not a priority tier'),
        ("High", 'priority "High" is not a priority tier'),
        (101, "priority 101 is out of range"),
        (-101, "priority -101 is out of range"),
        (True, "priority true is not a priority tier"),
        (2.5, "priority 2.5 is not a priority tier"),
        (None, "priority null is not a priority tier"),
    ],
)
def test_a_bad_priority_names_the_field_and_what_it_takes(value: object, problem: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        schemas.parse_priority(value)
    assert str(caught.value) == (
        f'{problem}: use "high", "normal" or "low", or an integer from -100 to 100 '
        "(above 0: high, 0: normal, below 0: low)"
    )
    assert caught.value.detail == {"path": "priority", "allowed": ["high", "normal", "low"]}


def test_a_queue_message_from_before_tiers_decodes_as_normal() -> None:
    job_id = uuid.uuid4()
    old = msgspec.json.encode({"job_id": str(job_id), "attempt": 1, "traceparent": None})
    message = msgspec.json.decode(old, type=schemas.QueueMessage)
    assert message == schemas.QueueMessage(job_id=job_id, attempt=1)
    assert message.tier is Tier.NORMAL and message.queued_at is None
    # And a new one carries its tier through a round trip.
    new = msgspec.structs.replace(message, tier=Tier.LOW)
    assert msgspec.json.decode(msgspec.json.encode(new), type=schemas.QueueMessage) == new


def test_tier_settings_and_a_bad_value_named_by_its_variable() -> None:
    cfg = settings.load(
        settings.Scheduler,
        env={
            "RENDERMILL_PRIORITY_AGING_SECONDS": "60",
            "RENDERMILL_SQS_QUEUE_URL_HIGH": "https://sqs.example/high",
        },
    )
    assert cfg.priority_aging_seconds == 60.0 and cfg.sqs_queue_url_low == ""
    assert cfg.sqs_queue_url_high == "https://sqs.example/high"
    with pytest.raises(errors.InvalidInput, match=r"RENDERMILL_PRIORITY_AGING_SECONDS: .* > 0"):
        settings.load(settings.Scheduler, env={"RENDERMILL_PRIORITY_AGING_SECONDS": "0"})
