"""conveyor.retention: what it deletes, what it keeps, in batches, and its job under the handler runtime."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest
from psycopg import sql

from functions.conveyor_retention.handler import handler as retention_handler
from shared.database import Database
from shared.jobs import registry as product
from shared.ledger.retention import (
    JOB_NAME,
    MAX_BATCH,
    QUEUE,
    RetentionPayload,
    prune,
    retention_job,
)
from shared.local.aws import ensure_queues
from shared.outbox import enqueue
from shared.queues import QueueDirectory
from shared.registry import QUEUE_RETENTION_DAYS, JobPayload, Registry
from shared.runtime import Outcome
from shared.settings import Settings
from shared.testing import invoke, sqs_event
from tests.support import insert_run


class Nothing(JobPayload):
    pass


jobs = Registry()
jobs.job("short.lived", payload=Nothing, queue="q", keep_succeeded=2, keep_failed=3)
jobs.job("long.lived", payload=Nothing, queue="q", keep_succeeded=60, keep_failed=90)
jobs.job("plain.job", payload=Nothing, queue="q")  # the defaults: 14 and 30 days


def remaining(conn) -> set[uuid.UUID]:
    """The runs left, apart from the retention job's own (the handler runtime records its run like any other)."""
    return {row[0] for row in conn.execute("SELECT id FROM conveyor.runs WHERE job_name <> 'conveyor.retention'")}


@pytest.fixture
def delete_log(conn):
    """Every DELETE statement on conveyor.runs and conveyor.schedule_fires, as (transaction, table, rows): a
    statement-level trigger sees each statement's deleted rows, whatever the code that issued it says."""
    conn.execute("""
        CREATE TABLE public.delete_log (seq serial, xid xid8, tbl text, n integer);
        CREATE FUNCTION public.log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.delete_log (xid, tbl, n) SELECT pg_current_xact_id(), TG_TABLE_NAME, count(*) FROM gone;
            RETURN NULL;
        END $$;
        CREATE TRIGGER log_runs AFTER DELETE ON conveyor.runs REFERENCING OLD TABLE AS gone
            FOR EACH STATEMENT EXECUTE FUNCTION public.log_delete();
        CREATE TRIGGER log_fires AFTER DELETE ON conveyor.schedule_fires REFERENCING OLD TABLE AS gone
            FOR EACH STATEMENT EXECUTE FUNCTION public.log_delete();
    """)

    def read(table: str) -> list[tuple[str, int]]:
        return [(str(x), n) for x, n in conn.execute("SELECT xid, n FROM public.delete_log WHERE tbl = %s ORDER BY seq", (table,))]

    return read


def test_a_large_backlog_is_deleted_in_batches_of_at_most_1000_each_in_its_own_transaction(conn, delete_log):
    conn.execute("""
        INSERT INTO conveyor.runs (id, job_name, queue, payload, status, created_at, run_at, finished_at, updated_at)
        SELECT gen_random_uuid(), 'plain.job', 'q', '{}', 'succeeded', now() - interval '20 days',
               now() - interval '20 days', now() - interval '20 days', now() - interval '20 days'
        FROM generate_series(1, 2500)
    """)
    report = prune(conn, jobs)
    statements = [n for _, n in delete_log("runs") if n]
    assert sum(statements) == 2500 and remaining(conn) == set()
    assert len(statements) >= 3 and max(statements) <= MAX_BATCH, statements
    transactions = [xid for xid, n in delete_log("runs") if n]
    assert len(set(transactions)) == len(transactions), "each batch commits on its own"
    assert [n for n in report.batches if n] == statements
    assert report.summary()["runs_deleted"] == 2500 and report.complete


def test_finished_rows_go_after_their_age_and_recent_ones_stay(conn):
    keep = {
        insert_run(conn, "plain.job", "succeeded", age_days=13),
        insert_run(conn, "plain.job", "skipped", age_days=13),
        insert_run(conn, "plain.job", "cancelled", age_days=13),
        insert_run(conn, "plain.job", "failed", age_days=29),
        insert_run(conn, "plain.job", "dead", age_days=29),
    }
    gone = {
        insert_run(conn, "plain.job", "succeeded", age_days=15),
        insert_run(conn, "plain.job", "skipped", age_days=15),
        insert_run(conn, "plain.job", "cancelled", age_days=15),
        insert_run(conn, "plain.job", "failed", age_days=31),
        insert_run(conn, "plain.job", "dead", age_days=31),
    }
    report = prune(conn, jobs)
    assert remaining(conn) == keep
    assert report.by_status() == {"cancelled": 1, "dead": 1, "failed": 1, "skipped": 1, "succeeded": 1}
    assert report.deleted == {"plain.job": {"cancelled": 1, "dead": 1, "failed": 1, "skipped": 1, "succeeded": 1}}
    assert gone.isdisjoint(remaining(conn))


def test_live_rows_are_never_deleted_however_old(conn):
    live = {
        insert_run(conn, "short.lived", status, age_days=400)
        for status in ("waiting", "pending", "queued", "running", "retrying")
    }
    live.add(insert_run(conn, "short.lived", "running", age_days=400, stale_at=None))
    # A running row whose worker died an hour ago (the view shows it abandoned): its redelivery will take it over.
    recently = insert_run(conn, "short.lived", "running", age_days=400)
    conn.execute("UPDATE conveyor.runs SET stale_at = now() - interval '1 hour' WHERE id = %s", (recently,))
    live.add(recently)
    assert prune(conn, jobs).runs == 0
    assert remaining(conn) == live
    assert conn.execute("SELECT status FROM conveyor.runs WHERE id = %s", (recently,)).fetchone()[0] == "running"


def test_a_run_abandoned_for_a_day_is_ended_dead_and_its_flow_moves_on(conn):
    """Its message never came back to be taken over (the redrive policy moved it to the DLQ): without retention
    ending it, the row would read 'abandoned' forever, never be deleted, and hold its flow's parent."""
    parent = insert_run(conn, "short.lived", "waiting", children_pending=1, flow_policy="fail")
    child = insert_run(conn, "short.lived", "running", age_days=3, parent_id=parent, attempt=2)
    conn.execute("UPDATE conveyor.runs SET stale_at = now() - interval '2 days' WHERE id = %s", (child,))
    report = prune(conn, jobs)
    assert report.abandoned_closed == 1 and report.summary()["abandoned_closed"] == 1
    status, error_type, error, finished = conn.execute(
        "SELECT status, last_error_type, last_error, finished_at IS NOT NULL FROM conveyor.runs WHERE id = %s", (child,)
    ).fetchone()
    assert (status, error_type, finished) == ("dead", "Abandoned", True)
    assert "attempt 2 reported no outcome" in error
    assert conn.execute("SELECT status FROM conveyor.runs WHERE id = %s", (parent,)).fetchone()[0] == "failed"


def test_a_published_run_not_heard_of_for_longer_than_its_queue_keeps_messages_is_ended(conn):
    lost = insert_run(conn, "short.lived", "queued", age_days=16)
    waiting = insert_run(conn, "short.lived", "queued", age_days=10)
    assert prune(conn, jobs).abandoned_closed == 1
    statuses = dict(conn.execute("SELECT id, status FROM conveyor.runs WHERE id = ANY(%s)", ([lost, waiting],)).fetchall())
    assert statuses == {lost: "dead", waiting: "queued"}


def test_dead_and_cancelled_rows_outlive_the_queue_retention_of_their_message(conn):
    """short.lived keeps failures 3 days and successes 2, but a dead job's message may sit in its DLQ for
    QUEUE_RETENTION_DAYS (and a cancelled one's on its queue), so their rows stay that long."""
    assert QUEUE_RETENTION_DAYS == 14
    failed = insert_run(conn, "short.lived", "failed", age_days=5)
    succeeded = insert_run(conn, "short.lived", "succeeded", age_days=5)
    dead_in_dlq = insert_run(conn, "short.lived", "dead", age_days=5)
    cancelled_in_queue = insert_run(conn, "short.lived", "cancelled", age_days=5)
    dead_expired = insert_run(conn, "short.lived", "dead", age_days=QUEUE_RETENTION_DAYS + 1)
    cancelled_expired = insert_run(conn, "short.lived", "cancelled", age_days=QUEUE_RETENTION_DAYS + 1)
    prune(conn, jobs)
    assert remaining(conn) == {dead_in_dlq, cancelled_in_queue}
    assert {failed, succeeded, dead_expired, cancelled_expired}.isdisjoint(remaining(conn))


def test_each_job_keeps_its_rows_for_its_own_days_and_the_payload_changes_only_the_defaults(conn):
    short = insert_run(conn, "short.lived", "succeeded", age_days=3)
    plain = insert_run(conn, "plain.job", "succeeded", age_days=3)
    long_ = insert_run(conn, "long.lived", "succeeded", age_days=30)
    long_failed = insert_run(conn, "long.lived", "failed", age_days=60)
    unknown = insert_run(conn, "removed.job", "succeeded", age_days=10)  # no longer in the registry: defaults
    prune(conn, jobs)
    assert remaining(conn) == {plain, long_, long_failed, unknown}
    assert short not in remaining(conn)

    prune(conn, jobs, RetentionPayload(keep_succeeded=2, keep_failed=2))
    assert remaining(conn) == {long_, long_failed}, "a job's own setting wins over the payload's defaults"


def test_age_counts_from_finished_at_then_updated_at(conn):
    # Created and last touched long ago but finished yesterday: finished_at decides.
    finished_recent = insert_run(conn, "plain.job", "succeeded", age_days=40, finished_at=sql.SQL("now() - interval '1 day'"))
    # No end recorded: updated_at decides.
    no_end_old = insert_run(conn, "plain.job", "succeeded", age_days=20, finished_at=None)
    no_end_recent = insert_run(conn, "plain.job", "succeeded", age_days=1, created_days=40, finished_at=None)
    prune(conn, jobs)
    assert remaining(conn) == {finished_recent, no_end_recent}
    assert no_end_old not in remaining(conn)


def test_a_flows_children_stay_while_their_parent_is_live(conn):
    waiting_parent = insert_run(conn, "plain.job", "waiting", age_days=40)
    finished_parent = insert_run(conn, "plain.job", "succeeded", age_days=1)
    kept = {
        insert_run(conn, "plain.job", "succeeded", age_days=20, parent_id=waiting_parent),
        insert_run(conn, "plain.job", "dead", age_days=40, parent_id=waiting_parent),
    }
    gone = {
        insert_run(conn, "plain.job", "succeeded", age_days=20, parent_id=finished_parent),
        insert_run(conn, "plain.job", "succeeded", age_days=20, parent_id=uuid.uuid4()),  # parent already deleted
    }
    # A parent released to the outbox (its row there carries its id in job_id) is live too.
    released = uuid.uuid4()
    conn.execute(
        "INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload) VALUES (%s, %s, 'plain.job', 'q', '{}')",
        (uuid.uuid4(), released),
    )
    kept.add(insert_run(conn, "plain.job", "succeeded", age_days=20, parent_id=released))
    prune(conn, jobs)
    assert remaining(conn) == kept | {waiting_parent, finished_parent}
    assert gone.isdisjoint(remaining(conn))


def fires(conn) -> list[tuple[str, int]]:
    return conn.execute(
        "SELECT job_name, round(extract(epoch FROM now() - fire_time) / 86400)::int FROM conveyor.schedule_fires "
        "ORDER BY job_name, fire_time"
    ).fetchall()


def test_old_schedule_fires_go_but_each_jobs_latest_stays(conn, delete_log):
    for job, days in [("a.job", 50), ("a.job", 45), ("a.job", 40), ("a.job", 35), ("a.job", 31),
                      ("b.job", 40), ("b.job", 1), ("c.job", 10)]:  # fmt: skip
        conn.execute(
            "INSERT INTO conveyor.schedule_fires (job_name, fire_time) VALUES (%s, now() - make_interval(days => %s))",
            (job, days),
        )
    report = prune(conn, jobs, RetentionPayload(batch_size=2))
    assert fires(conn) == [("a.job", 31), ("b.job", 1), ("c.job", 10)]
    assert report.schedule_fires == 5
    statements = [n for _, n in delete_log("schedule_fires") if n]
    assert max(statements) <= 2 and sum(statements) == 5

    prune(conn, jobs, RetentionPayload(keep_schedule_fires=5))
    assert fires(conn) == [("a.job", 31), ("b.job", 1), ("c.job", 10)], "the latest stays however old"


def test_it_stops_when_time_runs_low_and_the_next_run_continues(conn, delete_log):
    conn.execute("""
        INSERT INTO conveyor.runs (id, job_name, queue, payload, status, created_at, run_at, finished_at, updated_at)
        SELECT gen_random_uuid(), 'plain.job', 'q', '{}', 'succeeded', now() - interval '20 days',
               now() - interval '20 days', now() - interval '20 days', now() - interval '20 days'
        FROM generate_series(1, 25)
    """)
    left = iter([60.0, 60.0, 9.0])
    report = prune(conn, jobs, RetentionPayload(batch_size=10), time_left=lambda: next(left))
    assert not report.complete and report.batches == [10, 10]
    assert len(remaining(conn)) == 5
    assert prune(conn, jobs, RetentionPayload(batch_size=10)).complete
    assert remaining(conn) == set()


def test_it_refuses_a_connection_inside_a_transaction(db_url):
    import psycopg

    with psycopg.connect(db_url) as conn, pytest.raises(ValueError, match="autocommit"):
        prune(conn, jobs)


# -- the job -------------------------------------------------------------------------------------------------------


def test_the_job_is_in_the_registry_with_a_schedule_and_a_queue_of_its_own():
    job = product[JOB_NAME]
    assert job is retention_job()
    assert job.schedule == "rate(1 hour)" and job.parsed_schedule is not None
    assert job in product.scheduled()
    assert job.queue == QUEUE and product.queues()[QUEUE] == [job]
    assert job.handler_module == "functions.conveyor_retention.handler"
    assert retention_handler.job is job
    # Users add it to their own registry the same way.
    mine = Registry([retention_job()])
    assert mine[JOB_NAME] is job


@pytest.fixture
def bound(conn, db_url, sqs, stage):
    ensure_queues(sqs, product, stage=stage)
    settings = Settings(stage=stage, database_url=db_url)
    database = Database(settings)
    retention_handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
    yield
    database.close()


def test_the_handler_runs_under_the_runtime_and_reports_what_it_deleted(bound, conn, stage):
    old = insert_run(conn, "email.send", "succeeded", age_days=20)
    recent = insert_run(conn, "email.send", "succeeded", age_days=3)
    result = invoke(retention_handler, {"keep_succeeded": 2}, stage=stage)
    assert result.succeeded, result.reports
    assert {old, recent}.isdisjoint(remaining(conn))


def test_the_handler_uses_the_deployments_registry_settings(bound, conn, stage):
    recent = insert_run(conn, "email.send", "succeeded", age_days=3)
    assert invoke(retention_handler, {}, stage=stage).succeeded
    assert remaining(conn) == {recent}


@dataclass
class LambdaContext:
    """What Lambda passes: the runtime asks how long is left before starting the record, then retention asks again
    before each batch."""

    answers: list[int]

    def get_remaining_time_in_millis(self) -> int:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_the_handler_stops_before_the_invocation_ends(bound, conn, stage):
    old = insert_run(conn, "email.send", "succeeded", age_days=20)
    reports = []
    retention_handler.observers.append(reports.append)
    try:
        # Enough for the runtime to start the record (timeout + margin), then too little for a batch.
        response = retention_handler(sqs_event(retention_handler.job, {}, stage=stage), LambdaContext([400_000, 5_000]))
    finally:
        retention_handler.observers.remove(reports.append)
    assert response == {"batchItemFailures": []}
    assert [r.outcome for r in reports] == [Outcome.SUCCEEDED]
    assert remaining(conn) == {old}, "no batch started with less than the reserve left"


def test_the_local_runtime_runs_it_like_any_other_job(runtime_factory, conn):
    old = insert_run(conn, "email.send", "dead", age_days=40)
    runtime = runtime_factory(registry=product)
    enqueue(conn, JOB_NAME, {}, registry=product)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(r.job_name == JOB_NAME for r in runtime.reports):
        time.sleep(0.2)
    assert [r.outcome for r in runtime.reports if r.job_name == JOB_NAME] == [Outcome.SUCCEEDED], runtime.lines
    assert old not in remaining(conn)
