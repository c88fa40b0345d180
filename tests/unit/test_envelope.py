"""The message envelope: read leniently (foreign producers, redrives), written to fit SQS's limits."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.envelope import (
    ATTR_ATTEMPT,
    ATTR_ENQUEUED_AT,
    ATTR_ERROR,
    SQS_MAX_MESSAGE_BYTES,
    Delivery,
    attributes_size,
)


def record(body: str = "{}", **attributes: str) -> dict:
    return {
        "messageId": "m-1",
        "receiptHandle": "r-1",
        "body": body,
        "attributes": {"ApproximateReceiveCount": attributes.pop("receive_count", "2")},
        "messageAttributes": {name: {"stringValue": value, "dataType": "String"} for name, value in attributes.items()},
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:conveyor-dev-work",
    }


def test_attempt_and_time_are_read_leniently():
    delivery = Delivery.from_record(record(**{ATTR_ATTEMPT: "1.0", ATTR_ENQUEUED_AT: "2026-11-25T10:00:00"}))
    assert delivery.attempt == 2  # first attempt 1, second receive
    assert delivery.enqueued_at == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # naive is taken as UTC
    odd = Delivery.from_record(record(receive_count="x", **{ATTR_ATTEMPT: "many", ATTR_ENQUEUED_AT: "yesterday"}))
    assert (odd.attempt, odd.enqueued_at) == (1, None)


def test_dead_letter_copy_fits_in_one_message_next_to_a_large_body():
    body = "x" * 260_000
    delivery = Delivery.from_record(record(body=body))
    attributes = delivery.dead_letter_attributes(job_name="test.work", error_type="RuntimeError", error="é" * 2_000)
    assert len(body.encode()) + attributes_size(attributes) <= SQS_MAX_MESSAGE_BYTES
    assert attributes[ATTR_ERROR]["StringValue"].startswith("é")
    small = Delivery.from_record(record(body="{}"))
    assert small.dead_letter_attributes(job_name="j", error_type="E", error="why")[ATTR_ERROR]["StringValue"] == "why"
