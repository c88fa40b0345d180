"""A cycle's claimed rows become the messages message_attributes describes, with the size SQS counts."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

from shared.envelope import attributes_size, message_attributes
from shared.outbox.relay import ClaimedJobs

T0 = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
LOCAL = timezone(timedelta(hours=2))


def expected(row):
    row_id, job_name, _queue, payload, created_at, attempt, job_id, parent_id, scheduled_for = row
    attributes = message_attributes(
        job_id=str(job_id or row_id), job_name=job_name, attempt=attempt, enqueued_at=created_at,
        parent_id=None if parent_id is None else str(parent_id), scheduled_for=scheduled_for,
    )
    return attributes, len(payload.encode("utf-8")) + attributes_size(attributes)


def test_every_row_gets_the_attributes_and_size_of_message_attributes():
    parent = uuid.uuid4()
    rows = [
        (uuid.uuid4(), "email.send", "q", '{"a":1}', T0, 1, None, None, None),
        (uuid.uuid4(), "email.send", "q", '{"a":2}', T0, 1, None, None, None),  # shares name, attempt, time
        (uuid.uuid4(), "email.send", "q", '{"text":"héllo ☃"}', T0.astimezone(LOCAL), 3, uuid.uuid4(), None, None),
        (uuid.uuid4(), "report.build", "r", "{}", T0 + timedelta(microseconds=1), 1, None, None, None),
        (uuid.uuid4(), "report.build", "r", "{}", T0, 2, None, parent, None),
        (uuid.uuid4(), "report.build", "r", "{}", T0, 1, None, None, T0 - timedelta(hours=1)),
    ]
    make = ClaimedJobs().job
    for row in rows:
        job = make(row)
        assert (job.attributes, job.message_bytes) == expected(row), row
        assert (job.id, job.job_name, job.queue, job.payload) == row[:4]


def test_jobs_do_not_share_their_own_job_id():
    make = ClaimedJobs().job
    first, second = (make((uuid.uuid4(), "email.send", "q", "{}", T0, 1, None, None, None)) for _ in range(2))
    assert first.attributes["conveyor.job_id"] != second.attributes["conveyor.job_id"]
