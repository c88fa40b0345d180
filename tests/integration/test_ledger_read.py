"""Reading the ledger: one job wherever it is, and pages of jobs newest first through the conveyor.jobs view."""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest
from psycopg import sql

from shared.jobs import EMAIL_SEND
from shared.ledger.read import JobRecord, count_children, get_job, list_jobs
from shared.ledger.status import RunStatus
from shared.outbox import enqueue
from tests.support import insert_run

WELCOME = {"to": "ada@example.com", "template": "welcome", "subject": "Hi", "variables": {"name": "Ada"}}


def test_the_record_has_every_column_of_the_view_in_its_order(conn):
    columns = [row[0] for row in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'conveyor' AND table_name = 'jobs' "
        "ORDER BY ordinal_position"
    )]  # fmt: skip
    assert [f.name for f in fields(JobRecord)] == columns


def test_the_status_enum_is_the_tables_check_plus_the_views_abandoned(conn):
    check = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'runs_status'"
    ).fetchone()[0]
    stored = {s for s in RunStatus if f"'{s.value}'" in check}
    assert stored == set(RunStatus) - {RunStatus.ABANDONED}
    assert check.count("'::text") == len(stored), check


def test_get_job_finds_a_job_wherever_it_is(conn):
    with conn.transaction():
        pending = enqueue(conn, EMAIL_SEND, WELCOME)
    published = insert_run(
        conn, "email.send", "dead", age_days=1, attempt=3, last_error_type="PermanentJobError", last_error="no such user",
        result=sql.SQL("'{\"sent\": false}'::json"),
    )  # fmt: skip
    unpublishable = uuid.uuid4()
    conn.execute(
        "INSERT INTO conveyor.outbox_dead (id, job_name, queue, payload, run_at, created_at, publish_attempts, last_error) "
        "VALUES (%s, 'email.send', 'gone', '{}', now(), now(), 20, 'QueueDoesNotExist')",
        (unpublishable,),
    )

    record = get_job(conn, pending)
    assert (record.status, record.job_name, record.queue, record.payload) == (RunStatus.PENDING, "email.send", "email-default", WELCOME)
    record = get_job(conn, str(published))
    assert (record.status, record.attempt, record.last_error_type, record.result) == (RunStatus.DEAD, 3, "PermanentJobError", {"sent": False})
    assert record.finished_at is not None and record.to_json()["finished_at"] == record.finished_at.isoformat()
    record = get_job(conn, unpublishable)
    assert (record.status, record.last_error_type, record.last_error) == (RunStatus.FAILED, "PublishFailed", "QueueDoesNotExist")
    assert get_job(conn, uuid.uuid4()) is None


def test_a_running_job_past_its_stale_time_reads_as_abandoned(conn):
    job_id = insert_run(conn, "email.send", "running", age_days=0, stale_at=sql.SQL("now() - interval '1 second'"))
    assert get_job(conn, job_id).status is RunStatus.ABANDONED
    assert [r.id for r in list_jobs(conn, status="abandoned")] == [job_id]
    assert list_jobs(conn, status=RunStatus.RUNNING) == []


def test_pages_are_newest_first_and_continue_after_the_last_record_even_among_equal_times(conn):
    # Seven jobs enqueued at the very same instant and five at other times: ties are broken by id.
    same = datetime.now(UTC) - timedelta(hours=1)
    ids = [insert_run(conn, "email.send", "succeeded", created_at=same) for _ in range(7)]
    ids += [insert_run(conn, "email.send", "succeeded", created_days=d) for d in (0.01, 0.5, 2, 3, 4)]
    expected = [r for r, in conn.execute("SELECT id FROM conveyor.runs ORDER BY created_at DESC, id DESC")]
    assert sorted(expected) == sorted(ids)

    seen, before = [], None
    while True:
        page = list_jobs(conn, limit=3, before=before)
        seen += [r.id for r in page]
        if len(page) < 3:
            break
        before = page[-1].cursor
    assert seen == expected


def test_filters_by_job_status_time_and_parent(conn):
    parent = insert_run(conn, "email.send", "waiting", age_days=0)
    child = insert_run(conn, "reservations.cleanup", "succeeded", created_days=0.5, parent_id=parent)
    old = insert_run(conn, "email.send", "dead", created_days=3)
    with conn.transaction():
        pending = enqueue(conn, EMAIL_SEND, WELCOME)
    now = datetime.now(UTC)

    def ids(**filters):
        return [r.id for r in list_jobs(conn, **filters)]

    assert ids() == [pending, parent, child, old]
    assert ids(job="email.send") == [pending, parent, old]
    assert ids(status="dead") == [old]
    assert ids(since=now - timedelta(days=1)) == [pending, parent, child]
    assert ids(until=now - timedelta(days=1)) == [old]
    assert ids(since=now - timedelta(days=1), until=now - timedelta(hours=2)) == [child]
    assert ids(parent=parent) == [child] and count_children(conn, parent) == 1
    assert ids(job="nope.job") == []


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"limit": 0}, "limit must be a whole number from 1 to 1000"),
        ({"limit": 1001}, "limit must be a whole number from 1 to 1000"),
        ({"status": "done"}, "unknown status 'done'; statuses: waiting"),
        ({"since": datetime(2026, 1, 1)}, "since must be a timezone-aware datetime"),
        ({"before": (datetime.now(UTC), "x")}, "not a job id"),
        ({"before": "x"}, "before must be a \\(created_at, id\\) cursor"),
        ({"parent": "42"}, "parent '42' is not a job id"),
    ],
)
def test_bad_arguments_are_refused_before_any_query(arguments, message):
    with pytest.raises(ValueError, match=message):
        list_jobs(None, **arguments)
