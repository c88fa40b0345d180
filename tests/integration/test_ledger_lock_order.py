"""Batch statements on conveyor.runs take their row locks in id order, whatever order the batch came in.

Two workers whose batches hold the same jobs in opposite orders (a message delivered twice while a backlog builds
in the local runtime, a relay's mark of 500 jobs racing the handlers that already received some of them) would
otherwise each lock one row the other wants next: PostgreSQL's deadlock detector then kills one statement, and its
batch runs without the ledger. The interleaving is forced, not timed: a third connection holds one row, and each
step waits until PostgreSQL shows the previous statement blocked on a lock.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from shared.envelope import Delivery
from shared.ids import new_job_id
from shared.ledger import record as ledger
from shared.outbox import QUERIES
from shared.registry import JobPayload, Registry
from shared.testing import sqs_event


class Item(JobPayload):
    n: int


registry = Registry()
ITEM = registry.job("test.locked", payload=Item, queue="locked")


def insert_queued(conn, job_id):
    conn.execute(
        "INSERT INTO conveyor.runs (id, job_name, queue, payload, status, created_at, run_at) "
        "VALUES (%s, %s, 'locked', '{\"n\": 1}', 'queued', now(), now())",
        (job_id, ITEM.name),
    )


def start_of(job_id):
    delivery = Delivery.from_record(sqs_event(ITEM, {"n": 1}, job_id=str(job_id))["Records"][0])
    return ledger.Start(delivery, ITEM.name, "locked", 60, uuid.uuid4())


def blocked(conn, pid) -> bool:
    row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


def wait_blocked(conn, pid, thread):
    deadline = time.monotonic() + 20
    while not blocked(conn, pid):
        assert thread.is_alive(), "the statement ended instead of waiting for the held row"
        assert time.monotonic() < deadline, "the statement never waited for the held row"
        time.sleep(0.01)


def race(db_url, conn, first, second, run):
    """``second``'s statement queues for a row a third connection holds before ``first``'s does; ``first`` locks
    its other row meanwhile. Without one lock order, ``second`` then gets the held row and waits for ``first``'s,
    while ``first`` waits for ``second``'s: a deadlock."""
    a, b = sorted([new_job_id(), new_job_id()])
    for job_id in (a, b):
        insert_queued(conn, job_id)
    errors: list[BaseException] = []
    with psycopg.connect(db_url, autocommit=True) as holder, psycopg.connect(db_url, autocommit=True) as one, \
            psycopg.connect(db_url, autocommit=True) as two:  # fmt: skip
        with holder.transaction():
            holder.execute("SELECT 1 FROM conveyor.runs WHERE id = %s FOR UPDATE", (b,))

            def go(c, order):
                try:
                    run(c, order(a, b))
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    errors.append(exc)

            t2 = threading.Thread(target=go, args=(two, second))
            t2.start()
            wait_blocked(conn, two.info.backend_pid, t2)
            t1 = threading.Thread(target=go, args=(one, first))
            t1.start()
            wait_blocked(conn, one.info.backend_pid, t1)
        t1.join(30)
        t2.join(30)
    assert not [e for e in errors if isinstance(e, psycopg.errors.DeadlockDetected)], errors
    assert not errors, errors
    return a, b


def test_two_batch_starts_with_one_jobs_in_opposite_orders_do_not_deadlock(conn, db_url):
    def start(c, ids):
        ledger.start(c, [start_of(job_id) for job_id in ids])

    race(db_url, conn, first=lambda a, b: [a, b], second=lambda a, b: [b, a], run=start)


def test_a_batch_outcome_and_a_batch_start_do_not_deadlock(conn, db_url):
    def run(c, ids):
        if ids[0] > ids[1]:  # the outcome statement, ids in descending order
            ledger.finish(c, [ledger.Outcome(job_id, None, "succeeded", attempt=1) for job_id in ids])
        else:
            ledger.start(c, [start_of(job_id) for job_id in ids])

    race(db_url, conn, first=lambda a, b: [a, b], second=lambda a, b: [b, a], run=run)


def test_the_relays_mark_and_a_batch_start_do_not_deadlock(conn, db_url):
    """The mark moves published rows to the ledger while a handler that already received some of them starts them."""
    marked: list[uuid.UUID] = []

    def run(c, ids):
        if ids[0] > ids[1]:  # the relay's mark, publishing both (outbox rows by the same ids)
            with c.transaction():
                for job_id in ids:
                    c.execute(
                        "INSERT INTO conveyor.outbox (id, job_name, queue, payload) VALUES (%s, %s, 'locked', '{\"n\": 1}')",
                        (job_id, ITEM.name),
                    )
                c.execute(QUERIES["outbox_mark_published"], {"ids": ids, "message_ids": [f"m-{i}" for i in ids]})
            marked.extend(ids)
        else:
            ledger.start(c, [start_of(job_id) for job_id in ids])

    race(db_url, conn, first=lambda a, b: [a, b], second=lambda a, b: [b, a], run=run)
    assert len(marked) == 2
