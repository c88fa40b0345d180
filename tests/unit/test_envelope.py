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


def with_producer_attributes(body: str = "{}", **extra: dict) -> dict:
    """A record whose producer set its own attributes next to Conveyor's (as Lambda delivers them)."""
    raw = record(body, **{ATTR_ATTEMPT: "2"})
    raw["messageAttributes"].update(extra)
    return raw


def string(value: str, data_type: str = "String") -> dict:
    return {"stringValue": value, "dataType": data_type, "stringListValues": [], "binaryListValues": []}


def test_dead_letter_copy_keeps_the_producers_own_attributes_with_conveyors_taking_precedence():
    import base64

    delivery = Delivery.from_record(with_producer_attributes(
        trace_id=string("Root=1-abc"),
        tenant=string("42", "Number.int"),
        signature={"binaryValue": base64.b64encode(b"\x00\xffsig").decode(), "dataType": "Binary"},
        **{ATTR_ERROR: string("a forged reason")},
    ))  # fmt: skip
    attributes = delivery.dead_letter_attributes(job_name="test.work", error_type="RuntimeError", error="why")
    assert attributes["trace_id"] == {"DataType": "String", "StringValue": "Root=1-abc"}
    assert attributes["tenant"] == {"DataType": "Number.int", "StringValue": "42"}
    assert attributes["signature"] == {"DataType": "Binary", "BinaryValue": b"\x00\xffsig"}
    assert attributes[ATTR_ERROR]["StringValue"] == "why"
    assert attributes[ATTR_ATTEMPT]["StringValue"] == "1"


def test_dead_letter_copy_stays_within_ten_attributes_and_the_message_size():
    import base64

    six = {f"p{i}": string(f"v{i}") for i in range(6)}  # 4 of Conveyor's + 6 = SQS's 10 on the original
    attributes = Delivery.from_record(with_producer_attributes(**six)).dead_letter_attributes(
        job_name="test.work", error_type="RuntimeError", error="why"
    )
    assert len(attributes) == 10
    assert [name for name in attributes if name.startswith("p")] == ["p0", "p1", "p2"]  # by name, as many as fit
    # A body at the limit leaves no room for a large binary attribute, but the reason keeps its bytes.
    body = "x" * (SQS_MAX_MESSAGE_BYTES - 2_000)
    big = {"blob": {"binaryValue": base64.b64encode(b"\x01" * 1_600).decode(), "dataType": "Binary"}}
    attributes = Delivery.from_record(with_producer_attributes(body, **big)).dead_letter_attributes(
        job_name="test.work", error_type="RuntimeError", error="e" * 300
    )
    assert "blob" not in attributes
    assert attributes[ATTR_ERROR]["StringValue"] == "e" * 300
    assert len(body) + attributes_size(attributes) <= SQS_MAX_MESSAGE_BYTES


def test_binary_attributes_count_their_bytes():
    assert attributes_size({"b": {"DataType": "Binary", "BinaryValue": b"\x00" * 10}}) == 1 + 6 + 10
