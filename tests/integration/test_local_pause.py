"""Locally, a paused queue (conveyor.paused_queues) is obeyed: its pollers receive nothing, its schedules do not fire;
on resume the job waiting in SQS runs and the schedule fires again."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg

from shared.ledger.read import get_job
from shared.local.pausewatch import PauseWatch
from shared.outbox import enqueue
from shared.pauses import set_paused
from shared.registry import JobPayload, Registry
from shared.runtime import job_handler
from shared.settings import Settings
from tests.support import WORK, Calls, make_work_handler
from tests.support import registry as test_registry


def status(conn, job_id) -> str | None:
    record = get_job(conn, job_id)
    return None if record is None else str(record.status)


def test_a_paused_queues_job_waits_in_sqs_until_resumed(runtime_factory, db_url):
    calls = Calls()
    with psycopg.connect(db_url, autocommit=True) as conn:
        set_paused(conn, "work", True, actor="test")
        runtime = runtime_factory(handlers={"test.work": make_work_handler(calls)})
        job_id = enqueue(conn, WORK, {"n": 1}, registry=test_registry)
        # Published (the relay is not paused: the message waits in SQS, as on AWS)...
        assert runtime.wait_for(lambda: status(conn, job_id) == "queued", timeout=20), runtime.lines
        # ...and after the pollers looked at the pause several more times, still not received.
        reads = runtime.pauses.reads
        assert runtime.wait_for(lambda: runtime.pauses.reads >= reads + 3, timeout=20)
        assert status(conn, job_id) == "queued"
        assert calls.ns() == []

        set_paused(conn, "work", False, actor="test")
        assert runtime.wait_for(lambda: status(conn, job_id) == "succeeded", timeout=20), runtime.lines
        assert calls.ns() == [1]


class Nothing(JobPayload):
    pass


class FastClock:
    """Schedule time running ``speed`` times faster than real time."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start, self.speed, self.t0 = start, speed, time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.t0) * self.speed)


def test_a_paused_queues_schedule_does_not_fire_until_resumed(runtime_factory, db_url):
    registry = Registry()
    tick = registry.job("test.tick", payload=Nothing, queue="tick", schedule="rate(1 minute)", timezone="UTC", overlap="allow")
    seen: list[str] = []
    handler = job_handler(tick, lambda payload, ctx: seen.append(ctx.job_id))
    start = datetime(2026, 1, 1, 0, 0, 50, tzinfo=UTC)
    clock = FastClock(start, speed=60)  # a schedule minute a real second
    with psycopg.connect(db_url, autocommit=True) as conn:
        set_paused(conn, "tick", True, actor="test")
        runtime = runtime_factory(registry=registry, handlers={"test.tick": handler}, scheduler=True, clock=clock)
        # Several periods pass, and the scheduler looks at the pause again, without a fire.
        reads = runtime.pauses.reads
        assert runtime.wait_for(lambda: clock() > start + timedelta(minutes=4) and runtime.pauses.reads >= reads + 3, timeout=20)
        fires = "SELECT count(*) FROM conveyor.schedule_fires WHERE job_name = 'test.tick'"
        assert conn.execute(fires).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM conveyor.runs").fetchone()[0] == 0
        assert seen == []

        set_paused(conn, "tick", False, actor="test")
        assert runtime.wait_for(lambda: len(seen) >= 1, timeout=20), runtime.lines
        assert conn.execute(fires).fetchone()[0] >= 1


def test_a_locked_paused_queues_table_stalls_no_caller_and_the_change_after_it_is_seen(db_url):
    """The pause is read by every poller and the scheduler: a database that cannot answer (here the table locked by
    another transaction) must leave them with the last state read, not waiting for it."""
    watch = PauseWatch(Settings(database_url=db_url), interval=0)  # every call due for a read
    with psycopg.connect(db_url, autocommit=True) as conn, psycopg.connect(db_url) as locker:
        set_paused(conn, "work", True, actor="test")
        try:
            assert watch.paused("work")
            locker.execute("LOCK TABLE conveyor.paused_queues IN ACCESS EXCLUSIVE MODE")  # held: its transaction stays open

            answers: list[bool] = []
            callers = [threading.Thread(target=lambda: answers.append(watch.paused("work"))) for _ in range(4)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(timeout=3)  # a guard against a hang, not a measure of speed
            assert not any(caller.is_alive() for caller in callers)
            assert answers == [True] * 4
        finally:
            locker.rollback()
        reads = watch.reads
        set_paused(conn, "work", False, actor="test")
        deadline = time.monotonic() + 20
        while watch.paused("work") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not watch.paused("work")
        assert watch.reads > reads
    watch.close()
