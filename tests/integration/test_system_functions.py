"""Conveyor's own functions: the relay's two modes, the schedule target, and the dispatcher for shared queues."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from functions.relay import handler as relay_function
from functions.schedule import handler as schedule_function
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.outbox import enqueue
from shared.registry import JobPayload, Registry
from shared.runtime import PermanentJobError, job_handler
from shared.runtime.dispatch import QueueDispatcher
from shared.testing import sqs_event

WELCOME = {"to": "a@b.co", "template": "welcome", "subject": "Hi", "variables": {"name": "A"}}


@pytest.fixture
def relay_env(conn, db_url, sqs, stage, monkeypatch):
    ensure_queues(sqs, product, stage=stage)
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", db_url)
    monkeypatch.setattr(relay_function, "_relay", None)
    yield
    if relay_function._relay is not None:
        relay_function._relay.close()


def test_resident_relay_keeps_publishing_until_its_budget_ends(relay_env, db_url, monkeypatch):
    monkeypatch.setenv("CONVEYOR_RELAY_MODE", "resident")
    monkeypatch.setenv("CONVEYOR_RELAY_DRAIN_SECONDS", "2")

    def late_enqueue():
        time.sleep(0.7)
        with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
            enqueue(conn, "email.send", WELCOME)

    producer = threading.Thread(target=late_enqueue)
    producer.start()
    started = time.monotonic()
    result = relay_function.handler({}, None)
    producer.join()
    assert result["published"] == 1, "a job committed during the run must go out in the same run"
    assert time.monotonic() - started >= 1.5
    assert result["lag_seconds"] == 0


def test_on_demand_relay_returns_when_the_outbox_is_empty(relay_env, db_url, conn, monkeypatch):
    monkeypatch.setenv("CONVEYOR_RELAY_MODE", "on-demand")
    monkeypatch.setenv("CONVEYOR_RELAY_DRAIN_SECONDS", "30")
    with conn.transaction():
        enqueue(conn, "email.send", WELCOME)
    started = time.monotonic()
    assert relay_function.handler({}, None)["published"] == 1
    assert time.monotonic() - started < 10


def test_relay_reports_lag_of_due_jobs_it_could_not_publish(relay_env, conn, monkeypatch):
    monkeypatch.setenv("CONVEYOR_RELAY_MODE", "on-demand")
    # A job for a queue that does not exist: SQS refuses it, it stays due, and the lag shows it.
    conn.execute(
        "INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at) "
        "VALUES (gen_random_uuid(), 'email.send', 'email-gone', '{}', now() - interval '90 seconds')"
    )
    result = relay_function.handler({}, None)
    assert result["published"] == 0
    assert result["lag_seconds"] >= 90


def test_relay_mode_is_checked(relay_env, monkeypatch):
    monkeypatch.setenv("CONVEYOR_RELAY_MODE", "sometimes")
    with pytest.raises(ValueError, match="CONVEYOR_RELAY_MODE='sometimes' is not one of resident, on-demand"):
        relay_function.handler({}, None)


# -- schedule target ---------------------------------------------------------------------------------------------


@pytest.fixture
def schedule_env(db_url, monkeypatch):
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", db_url)
    database = schedule_function.Database()
    monkeypatch.setattr(schedule_function, "_database", database)
    yield
    database.close()


def next_quarter() -> datetime:
    """The next period of reservations.cleanup (rate(15 minutes)): a delivery for it cannot turn late mid-test."""
    now = datetime.now(UTC)
    return now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0) + timedelta(minutes=15)


def test_schedule_target_enqueues_one_run_per_period(schedule_env, conn):
    period = next_quarter()
    event = {"job": "reservations.cleanup", "scheduled_time": period.isoformat().replace("+00:00", "Z")}
    first = schedule_function.handler(event, None)
    again = schedule_function.handler(event, None)  # Scheduler delivers at least once
    assert (first["outcome"], first["duplicate"], first["scheduled_for"]) == ("enqueued", False, period.isoformat())
    assert (again["outcome"], again["duplicate"], again["job_id"], again["duplicate_of"]) == (
        "duplicate", True, None, first["job_id"]
    )
    rows = conn.execute("SELECT id::text, job_name, scheduled_for FROM conveyor.outbox").fetchall()
    assert rows == [(first["job_id"], "reservations.cleanup", period)]
    fire = conn.execute("SELECT fire_time FROM conveyor.schedule_fires").fetchone()[0]
    assert fire == period


def test_schedule_target_reports_a_skipped_period_with_its_reason(schedule_env, conn, monkeypatch):
    monkeypatch.setenv("CONVEYOR_JOB_RESERVATIONS_CLEANUP_ENABLED", "off")
    event = {"job": "reservations.cleanup", "scheduled_time": next_quarter().isoformat()}
    result = schedule_function.handler(event, None)
    assert (result["outcome"], result["duplicate"]) == ("skipped", False)
    assert result["reason"] == "disabled: CONVEYOR_JOB_RESERVATIONS_CLEANUP_ENABLED is false"
    status = conn.execute("SELECT status, reason FROM conveyor.runs WHERE id = %s", (result["job_id"],)).fetchone()
    assert status == ("skipped", result["reason"])


def test_schedule_target_turns_a_late_delivery_into_the_latest_period(schedule_env, conn):
    # Scheduler retrying a delivery from an hour ago (missed=once, the default): the run is for the latest period.
    late = next_quarter() - timedelta(hours=1)
    result = schedule_function.handler({"job": "reservations.cleanup", "scheduled_time": late.isoformat()}, None)
    assert result["outcome"] == "enqueued" and result["scheduled_time"] == late.isoformat()
    period = datetime.fromisoformat(result["scheduled_for"])
    assert late + timedelta(minutes=45) <= period <= datetime.now(UTC)
    assert conn.execute("SELECT scheduled_for FROM conveyor.outbox").fetchall() == [(period,)]


@pytest.mark.parametrize(
    "event, message",
    [
        ([], "expected an object"),
        ({"job": "reservations.cleanup"}, "expected string fields"),
        ({"job": "nope.job", "scheduled_time": "2026-11-24T12:15:00Z"}, "unknown job 'nope.job'"),
        ({"job": "email.send", "scheduled_time": "2026-11-24T12:15:00Z"}, "has no schedule in the registry"),
        ({"job": "reservations.cleanup", "scheduled_time": "tomorrow"}, "not an ISO 8601 time"),
        ({"job": "reservations.cleanup", "scheduled_time": "2026-11-24T12:15:00"}, "has no UTC offset"),
    ],
)
def test_schedule_target_rejects_bad_events_clearly(schedule_env, conn, event, message):
    with pytest.raises(schedule_function.ScheduleEventError, match=message):
        schedule_function.handler(event, None)
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone() == (0,)


# -- shared queues -------------------------------------------------------------------------------------------------


class Ping(JobPayload):
    n: int


def test_dispatcher_routes_each_record_to_its_job_and_merges_failures():
    registry = Registry()
    a = registry.job("shared.a", payload=Ping, queue="shared")
    b = registry.job("shared.b", payload=Ping, queue="shared")
    seen: list[tuple[str, int]] = []

    def run_a(payload, ctx):
        seen.append(("a", payload.n))

    def run_b(payload, ctx):
        seen.append(("b", payload.n))
        if payload.n == 3:
            raise RuntimeError("b fails on 3")

    dispatcher = QueueDispatcher({"shared.a": job_handler(a, run_a), "shared.b": job_handler(b, run_b)})
    records = (
        sqs_event(a, {"n": 1})["Records"]
        + sqs_event(b, {"n": 2})["Records"]
        + sqs_event(b, {"n": 3})["Records"]
    )
    failing_id = records[2]["messageId"]
    for handler in dispatcher.handlers.values():
        handler._delay_retry = lambda delivery, seconds: None  # no SQS here: the retry delay is not under test
    response = dispatcher({"Records": records}, None)
    assert sorted(seen) == [("a", 1), ("b", 2), ("b", 3)]
    assert response == {"batchItemFailures": [{"itemIdentifier": failing_id}]}
    assert dispatcher.job_of({"messageAttributes": {}}) == "shared.a"


def test_shared_queue_runs_both_jobs_in_the_local_runtime(runtime_factory, db_url):
    registry = Registry()
    a = registry.job("shared.a", payload=Ping, queue="shared")
    b = registry.job("shared.b", payload=Ping, queue="shared")
    seen: list[str] = []
    handlers = {
        "shared.a": job_handler(a, lambda p, ctx: seen.append(f"a{p.n}")),
        "shared.b": job_handler(b, lambda p, ctx: seen.append(f"b{p.n}")),
    }
    runtime = runtime_factory(registry=registry, handlers=handlers)
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        enqueue(conn, a, {"n": 1}, registry=registry)
        enqueue(conn, b, {"n": 2}, registry=registry)
    # Runs are reported once the ledger recorded them, a moment after the handlers ran.
    assert runtime.wait_for(lambda: len(seen) == 2 and len(runtime.reports) == 2, timeout=15), runtime.lines
    assert sorted(seen) == ["a1", "b2"]
    assert json.dumps(sorted(r.outcome.value for r in runtime.reports)) == '["succeeded", "succeeded"]'
