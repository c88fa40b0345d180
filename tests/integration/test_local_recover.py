"""`conveyor dev` starts its own in-memory moto on every start: what was on the local queues is gone after a restart,
while the ledger (PostgreSQL) still says the jobs are queued, retrying or running. The runtime puts those jobs back
in the outbox; with an SQS that survives the restart (AWS_ENDPOINT_URL) it leaves them alone."""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from shared.ledger.read import get_job
from shared.outbox import enqueue
from shared.pauses import set_paused
from tests.support import WORK, Calls, insert_run, make_work_handler
from tests.support import registry as test_registry


def record(conn, job_id):
    return get_job(conn, job_id)


def status(conn, job_id) -> str | None:
    found = record(conn, job_id)
    return None if found is None else str(found.status)


def outbox_rows(conn, job_id) -> int:
    query = "SELECT count(*) FROM conveyor.outbox WHERE id = %(id)s OR job_id = %(id)s"
    return conn.execute(query, {"id": job_id}).fetchone()[0]


def running_row(conn, n: int, attempt: int, **columns):
    """A run its worker was running when the runtime stopped (killed): its message went with the old moto."""
    return insert_run(
        conn, "test.work", "running", queue="work", payload=json.dumps({"n": n}), attempt=attempt,
        first_started_at=sql.SQL("now() - interval '1 minute'"),
        last_started_at=sql.SQL("now() - interval '1 minute'"),
        stale_at=sql.SQL("now() + interval '1 hour'"), message_id="lost", **columns,
    )  # fmt: skip


def test_jobs_the_restarted_local_sqs_lost_run_again(runtime_factory, db_url, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the runtime starts its own moto, as `conveyor dev` does
    calls = Calls()
    handlers = {"test.work": make_work_handler(calls)}
    with psycopg.connect(db_url, autocommit=True) as conn:
        set_paused(conn, "work", True, actor="test")
        first = runtime_factory(handlers=handlers)
        queued = enqueue(conn, WORK, {"n": 1}, registry=test_registry)
        assert first.wait_for(lambda: status(conn, queued) == "queued", timeout=20), first.lines
        first.stop()

        # Not due for an hour: still in the outbox, must not get a second row.
        pending = enqueue(conn, WORK, {"n": 2}, delay=3600, registry=test_registry)
        done = insert_run(conn, "test.work", "succeeded", queue="work", attempt=1)
        before = record(conn, done)
        retrying = insert_run(conn, "test.work", "retrying", queue="work", payload=json.dumps({"n": 3}), attempt=1,
                              last_error_type="RuntimeError", last_error="failure 1 of 1")  # fmt: skip
        interrupted = running_row(conn, 4, attempt=1, batch_position=0)
        never_started = running_row(conn, 5, attempt=1, batch_position=2)  # behind the one that killed the worker
        exhausted = running_row(conn, 6, attempt=3, batch_position=0)  # its last allowed attempt

        set_paused(conn, "work", False, actor="test")
        second = runtime_factory(handlers=handlers)
        assert "recovered  5 job(s) the restarted local SQS had lost: back in the outbox" in second.lines, second.lines
        finished = [queued, retrying, interrupted, never_started, exhausted]
        assert second.wait_for(lambda: all(status(conn, j) in ("succeeded", "dead") for j in finished), timeout=30), (
            second.lines
        )

        assert {job_id: status(conn, job_id) for job_id in finished} == {
            queued: "succeeded", retrying: "succeeded", interrupted: "succeeded", never_started: "succeeded",
            exhausted: "dead",
        }  # fmt: skip
        ran = {n: attempt for _, n, attempt in calls.items}
        # The queued job's first run; the retry's second; the lost run counts as an attempt, except for a batch-mate
        # that never started; a job whose attempts are all used ends dead without running again.
        assert ran == {1: 1, 3: 2, 4: 2, 5: 1}
        assert sorted(n for _, n, _ in calls.items) == [1, 3, 4, 5]
        assert record(conn, exhausted).attempt == 4
        history = conn.execute("SELECT attempts FROM conveyor.runs WHERE id = %s", (interrupted,)).fetchone()[0]
        assert [(a["attempt"], a["outcome"]) for a in history] == [(1, "abandoned")]

        assert outbox_rows(conn, pending) == 1
        assert status(conn, pending) == "pending"
        assert record(conn, done) == before


def test_an_external_sqs_keeps_its_messages_so_nothing_is_republished(runtime_factory, db_url):
    calls = Calls()
    handlers = {"test.work": make_work_handler(calls)}
    with psycopg.connect(db_url, autocommit=True) as conn:
        set_paused(conn, "work", True, actor="test")
        first = runtime_factory(handlers=handlers)
        queued = enqueue(conn, WORK, {"n": 1}, registry=test_registry)
        assert first.wait_for(lambda: status(conn, queued) == "queued", timeout=20), first.lines
        first.stop()

        second = runtime_factory(handlers=handlers)
        assert not [line for line in second.lines if line.startswith("recovered")], second.lines
        assert outbox_rows(conn, queued) == 0
        assert status(conn, queued) == "queued"

        set_paused(conn, "work", False, actor="test")
        assert second.wait_for(lambda: status(conn, queued) == "succeeded", timeout=20), second.lines
        assert calls.ns() == [1]
