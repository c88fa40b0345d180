"""The message envelope: how a job travels through SQS.

The body is the payload JSON and nothing else, so any producer can send a job straight to a queue. Conveyor's
metadata travels in message attributes: the job id, the job name (needed where a queue carries several jobs),
the attempt the message starts at, and when the job was enqueued. A message without them (a foreign producer) gets
its SQS message id as job id and the queue's only job as job name.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")

ATTR_JOB_ID = "conveyor.job_id"
ATTR_JOB_NAME = "conveyor.job"
ATTR_ATTEMPT = "conveyor.attempt"
ATTR_ENQUEUED_AT = "conveyor.enqueued_at"
# Sent only when set: the flow a job belongs to, and the period a scheduled run is for. They travel with the message so
# that a run whose ledger row does not exist yet (its message outran the relay's mark) still knows them.
ATTR_PARENT_ID = "conveyor.parent_id"
ATTR_SCHEDULED_FOR = "conveyor.scheduled_for"
# Set on messages that the runtime moves to a dead-letter queue itself.
ATTR_ERROR_TYPE = "conveyor.error_type"
ATTR_ERROR = "conveyor.error"
ATTR_FAILED_AT = "conveyor.failed_at"

# SQS's limit for body plus attributes is 256 KiB; keep 1 KiB for the attributes. Mirrored in SQL by
# conveyor.max_payload_bytes() (a test checks that they agree).
MAX_PAYLOAD_BYTES = 261_120
# SQS's limits for one message (body + attributes) and one SendMessageBatch request (all entries together).
SQS_MAX_MESSAGE_BYTES = 262_144
SQS_MAX_BATCH_BYTES = 262_144
# SQS message attribute values are limited only by the message size, but a DLQ reason must stay readable.
MAX_ERROR_CHARS = 2_000
# SQS's limit on message attributes per message.
SQS_MAX_ATTRIBUTES = 10
# SQS's limit on entries per SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch request.
SQS_BATCH_ENTRIES = 10
# Bytes of the DLQ reason that a producer's attributes may never crowd out.
MIN_ERROR_BYTES = 256


class PayloadTooLarge(ValueError):
    def __init__(self, job_name: str, size: int) -> None:
        super().__init__(
            f"payload of job {job_name!r} is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} (SQS's message size). "
            "Store large data elsewhere (S3, a table) and pass a reference."
        )


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8, as SQS and PostgreSQL's octet_length count them; an ASCII text is not encoded."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def check_payload_size(job_name: str, body: str) -> None:
    """Refuse a payload that would not fit in an SQS message. ``body`` is the exact text the outbox stores and the
    relay sends (the outbox keeps JSON as text, so nothing re-renders it on the way)."""
    size = utf8_length(body)
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(job_name, size)


def attributes_size(attributes: dict[str, dict[str, Any]]) -> int:
    """Bytes SQS counts for message attributes: each name, data type and value (text as UTF-8, binary as is)."""
    return sum(
        utf8_length(name)
        + utf8_length(value["DataType"])
        + utf8_length(value.get("StringValue", ""))
        + len(value.get("BinaryValue", b""))
        for name, value in attributes.items()
    )


def _sendable(value: dict[str, Any]) -> dict[str, Any] | None:
    """A message attribute as a Lambda record carries it (``stringValue``, base64 ``binaryValue``), in the shape
    SendMessage takes; None if it cannot be read back."""
    data_type = value.get("dataType")
    if not isinstance(data_type, str) or not data_type:
        return None
    if data_type.startswith("Binary"):
        try:
            return {"DataType": data_type, "BinaryValue": base64.b64decode(value.get("binaryValue") or "", validate=True)}
        except (binascii.Error, TypeError, ValueError):
            return None
    text = value.get("stringValue")
    return {"DataType": data_type, "StringValue": text} if isinstance(text, str) else None


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def message_attributes(
    *,
    job_id: str,
    job_name: str,
    attempt: int,
    enqueued_at: datetime,
    parent_id: str | None = None,
    scheduled_for: datetime | None = None,
) -> dict[str, dict[str, str]]:
    attributes = {
        ATTR_JOB_ID: _string(job_id),
        ATTR_JOB_NAME: _string(job_name),
        ATTR_ATTEMPT: {"DataType": "Number", "StringValue": str(attempt)},
        ATTR_ENQUEUED_AT: _string(enqueued_at.astimezone(UTC).isoformat()),
    }
    if parent_id is not None:
        attributes[ATTR_PARENT_ID] = _string(str(parent_id))
    if scheduled_for is not None:
        attributes[ATTR_SCHEDULED_FOR] = _string(scheduled_for.astimezone(UTC).isoformat())
    return attributes


@dataclass(frozen=True)
class Delivery:
    """One SQS record as the handler sees it, with the envelope read and the attempt number worked out."""

    job_id: str
    job_name: str | None
    attempt: int
    enqueued_at: datetime | None
    body: str
    message_id: str
    receipt_handle: str
    queue_arn: str
    attributes: dict[str, Any]
    receive_count: int = 1
    # When SQS first delivered the message (epoch seconds): the time of this receive when receive_count is 1.
    first_received_at: float | None = None
    # When the message was sent to SQS (epoch seconds).
    sent_at: float | None = None
    parent_id: str | None = None
    scheduled_for: datetime | None = None
    # A copy the runtime moved to a dead-letter queue, brought back by a redrive: an operator's deliberate retry.
    redriven: bool = False

    @property
    def has_job_id(self) -> bool:
        """Whether the producer named the job (Conveyor's envelope); a foreign message's id is its SQS message id."""
        return ATTR_JOB_ID in self.attributes

    @property
    def queue_resource_name(self) -> str:
        return self.queue_arn.rsplit(":", 1)[-1]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Delivery:
        """Read a Lambda SQS event record. The attempt is the first attempt the message carried plus the receives
        so far, so a job redriven from a DLQ with its attempt attribute keeps counting where it left off."""
        attrs = record.get("messageAttributes") or {}

        def attr(name: str) -> str | None:
            value = attrs.get(name)
            return None if value is None else value.get("stringValue")

        system = record.get("attributes") or {}
        receive_count = _whole_number(system.get("ApproximateReceiveCount"))
        first_attempt = _whole_number(attr(ATTR_ATTEMPT))
        return cls(
            job_id=attr(ATTR_JOB_ID) or record["messageId"],
            job_name=attr(ATTR_JOB_NAME),
            attempt=first_attempt + receive_count - 1,
            enqueued_at=_timestamp(attr(ATTR_ENQUEUED_AT)),
            body=record["body"],
            message_id=record["messageId"],
            receipt_handle=record["receiptHandle"],
            queue_arn=record.get("eventSourceARN", ""),
            attributes=attrs,
            receive_count=receive_count,
            first_received_at=_epoch_ms(system.get("ApproximateFirstReceiveTimestamp")),
            sent_at=_epoch_ms(system.get("SentTimestamp")),
            parent_id=attr(ATTR_PARENT_ID),
            scheduled_for=_timestamp(attr(ATTR_SCHEDULED_FOR)),
            redriven=attr(ATTR_FAILED_AT) is not None,
        )

    def dead_letter_attributes(self, *, job_name: str, error_type: str, error: str) -> dict[str, dict[str, Any]]:
        """Attributes for the copy sent to the DLQ: the envelope, so a redrive keeps the job's identity, why, and
        the producer's own attributes (trace ids, tenant), so a redriven job carries them as the original did.

        The attempt restarts at 1: a job redriven from the DLQ is an operator's deliberate retry and gets the whole
        retry policy again (as BullMQ's and pg-boss's retry do). The failed attempt's number is in the error text.

        Conveyor's attributes come first: any ``conveyor.*`` attribute of the original is replaced, and the
        producer's are kept in name order while they fit in SQS's 10 attributes and the message size, never taking
        the reason below its first bytes.
        """
        attributes = {
            ATTR_JOB_ID: _string(self.job_id),
            ATTR_JOB_NAME: _string(job_name),
            ATTR_ATTEMPT: {"DataType": "Number", "StringValue": "1"},
            ATTR_ENQUEUED_AT: _string((self.enqueued_at or datetime.now(UTC)).isoformat()),
            ATTR_ERROR_TYPE: _string(error_type[:256]),
            ATTR_FAILED_AT: _string(datetime.now(UTC).isoformat()),
        }
        if self.parent_id is not None:
            attributes[ATTR_PARENT_ID] = _string(self.parent_id)
        if self.scheduled_for is not None:
            attributes[ATTR_SCHEDULED_FOR] = _string(self.scheduled_for.astimezone(UTC).isoformat())
        # The copy must fit in one SQS message with the body, or it cannot be sent at all: trim the reason to the
        # bytes that are left (a payload near the limit keeps a short reason rather than none).
        empty_error = attributes_size({ATTR_ERROR: _string("")})
        room = SQS_MAX_MESSAGE_BYTES - len(self.body.encode("utf-8")) - attributes_size(attributes) - empty_error
        text = (error or "(no message)")[:MAX_ERROR_CHARS]
        encoded = text.encode("utf-8")
        keep_for_error = min(len(encoded), MIN_ERROR_BYTES)
        slots = SQS_MAX_ATTRIBUTES - len(attributes) - 1
        for name in sorted(self.attributes):
            if slots == 0:
                break
            value = None if name.startswith("conveyor.") else _sendable(self.attributes[name] or {})
            if value is None:
                continue
            size = attributes_size({name: value})
            if size <= room - keep_for_error:
                attributes[name] = value
                room -= size
                slots -= 1
        if len(encoded) > room:
            text = encoded[: max(room, 0)].decode("utf-8", errors="ignore") or "(reason too long to keep)"
        attributes[ATTR_ERROR] = _string(text)
        return attributes


def _whole_number(value: str | None) -> int:
    """A receive count or attempt number as SQS may spell it ("2", "2.0"); anything unreadable counts as 1, so a
    malformed attribute from a foreign producer never stops the job from running."""
    try:
        number = int(float(value)) if value else 1
    except (TypeError, ValueError):
        return 1
    return max(number, 1)


def _epoch_ms(value: Any) -> float | None:
    """An SQS timestamp (milliseconds since the epoch, as text) in seconds; None if missing or unreadable."""
    try:
        return float(value) / 1000 if value else None
    except (TypeError, ValueError):
        return None


def _timestamp(value: str | None) -> datetime | None:
    """An ISO 8601 time; a naive one is taken as UTC, an unreadable one as unknown."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def payload_json(payload: Any) -> str:
    """Compact JSON for a dict payload (models serialize themselves)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def sqs_batches(items: Iterable[T], size_of: Callable[[T], int]) -> list[list[T]]:
    """``items`` in order, grouped into SendMessageBatch requests SQS accepts: at most ten entries and
    ``SQS_MAX_BATCH_BYTES`` (bodies plus attributes, ``size_of`` each) per request. An item alone over the byte
    limit still gets a request of its own (SQS refuses that entry, with its reason)."""
    batches: list[list[T]] = []
    current: list[T] = []
    size = 0
    for item in items:
        item_size = size_of(item)
        if current and (len(current) == SQS_BATCH_ENTRIES or size + item_size > SQS_MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        batches.append(current)
    return batches
