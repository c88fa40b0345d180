"""The local scheduler: fires registry schedules in their timezones, once per period, through the outbox, and
applies the missed-run rule after a sleep and at start-up."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shared.local.scheduler import LocalScheduler
from shared.registry import JobPayload, Registry
from shared.runtime import JobContext, job_handler
from shared.scheduled.fire import fire_schedule, latest_fire


class Nothing(JobPayload):
    pass


def scheduled_registry(settings: dict | None = None, **jobs: tuple[str, str]) -> Registry:
    registry = Registry()
    for name, (schedule, timezone) in jobs.items():
        registry.job(name.replace("_", "."), payload=Nothing, queue="tick", schedule=schedule, timezone=timezone, **(settings or {}))
    return registry


def database_fire(conn):
    """The fire the local runtime makes, on the test's connection."""
    return lambda job, t, now: fire_schedule(conn, job, t, now=now, environ={})


def periods(conn) -> list[tuple[str, datetime]]:
    """Every period a fire settled: ('run', t) for an enqueued run, ('skipped', t) for a skip record."""
    return conn.execute(
        "SELECT 'run', scheduled_for FROM conveyor.outbox UNION ALL "
        "SELECT status, scheduled_for FROM conveyor.runs WHERE status = 'skipped' ORDER BY 2"
    ).fetchall()


class SteppedClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def run_stepped(scheduler: LocalScheduler, clock: SteppedClock, until: datetime, step: timedelta) -> None:
    scheduler.prime()
    while clock.now < until:
        clock.now += step
        scheduler.fire_due(clock.now)


def test_fires_in_the_jobs_timezone_skipping_a_dst_gap():
    # 02:30 New York does not exist on Sun 8 Mar 2026 (02:00 EST -> 03:00 EDT): that day has no run.
    registry = scheduled_registry(a_ny=("cron(30 2 * * ? *)", "America/New_York"), b_ub=("cron(0 9 * * ? *)", "Asia/Ulaanbaatar"))
    fired: list[tuple[str, datetime]] = []
    clock = SteppedClock(datetime(2026, 3, 7, 0, 0, tzinfo=UTC))
    scheduler = LocalScheduler(registry, lambda job, t, now: fired.append((job.name, t)), threading.Event(), now=clock)
    run_stepped(scheduler, clock, until=datetime(2026, 3, 10, 0, 0, tzinfo=UTC), step=timedelta(minutes=5))
    assert [t for name, t in fired if name == "a.ny"] == [
        datetime(2026, 3, 7, 7, 30, tzinfo=UTC),  # 02:30 EST
        datetime(2026, 3, 9, 6, 30, tzinfo=UTC),  # 02:30 EDT
    ]
    # Ulaanbaatar is UTC+8 all year: 09:00 there is 01:00 UTC every day.
    assert [t for name, t in fired if name == "b.ub"] == [datetime(2026, 3, d, 1, 0, tzinfo=UTC) for d in (7, 8, 9)]


def test_ambiguous_local_time_fires_once():
    # 01:30 New York happens twice on Sun 1 Nov 2026 (01:59 EDT -> 01:00 EST): one run, at the first occurrence.
    registry = scheduled_registry(a_ny=("cron(30 1 * * ? *)", "America/New_York"))
    fired: list[datetime] = []
    clock = SteppedClock(datetime(2026, 10, 31, 12, 0, tzinfo=UTC))
    scheduler = LocalScheduler(registry, lambda job, t, now: fired.append(t), threading.Event(), now=clock)
    run_stepped(scheduler, clock, until=datetime(2026, 11, 2, 12, 0, tzinfo=UTC), step=timedelta(minutes=5))
    assert fired == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 2, 6, 30, tzinfo=UTC)]


def test_a_failed_fire_is_retried_for_the_same_period():
    registry = scheduled_registry(a_job=("rate(15 minutes)", "UTC"))
    attempts: list[datetime] = []

    def fire(job, t, now):
        attempts.append(t)
        if len(attempts) == 1:
            raise psycopg.OperationalError("database restarting")

    stop = threading.Event()
    stop.set()  # the scheduler pauses on stop after a failure; set, the pause returns at once
    clock = SteppedClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    scheduler = LocalScheduler(registry, fire, stop, now=clock)
    run_stepped(scheduler, clock, until=datetime(2026, 1, 1, 0, 20, tzinfo=UTC), step=timedelta(minutes=1))
    assert attempts[:2] == [datetime(2026, 1, 1, 0, 15, tzinfo=UTC)] * 2
    assert len(attempts) == 2


class FastClock:
    """Real time, sped up: a minute of schedule time passes in ``1/speed`` of a real minute."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start, self.speed, self.t0 = start, speed, time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.t0) * self.speed)


def test_runtime_fires_schedules_through_the_outbox_to_the_handler(runtime_factory, db_url):
    # overlap=allow: this test is about firing, and a run a test runtime finished may not be marked so in the ledger.
    registry = scheduled_registry({"overlap": "allow"}, test_tick=("rate(1 minute)", "UTC"))
    seen: list[tuple[str, int]] = []
    handler = job_handler(registry["test.tick"], lambda payload, ctx: seen.append((ctx.job_id, ctx.attempt)))
    clock = FastClock(datetime(2026, 1, 1, 0, 0, 50, tzinfo=UTC), speed=60)  # first fire ~10 s of schedule time away
    runtime = runtime_factory(registry=registry, handlers={"test.tick": handler}, scheduler=True, clock=clock)
    assert runtime.wait_for(lambda: len(seen) >= 2, timeout=20), runtime.lines
    with psycopg.connect(db_url) as conn:
        fires = conn.execute(
            "SELECT f.fire_time, r.id::text FROM conveyor.schedule_fires f JOIN conveyor.runs r ON r.id = f.job_id"
            " WHERE f.job_name = 'test.tick' ORDER BY f.fire_time"
        ).fetchall()
    first, second = (t for t, _ in fires[:2])
    # Start-up takes a moment of (fast) schedule time, so which minute comes first varies. A stall of a real second
    # is a missed minute here, which the missed-run rule skips, so the runs are whole minutes apart, not always one.
    assert first.second == 0 and second > first and (second - first) % timedelta(minutes=1) == timedelta(0)
    assert {job_id for _, job_id in fires[:2]} <= {job_id for job_id, _ in seen}
    assert any(f"schedule   test.tick fired for {first.astimezone(UTC).isoformat()}" in line for line in runtime.lines)


def fire_until_idle(scheduler: LocalScheduler, now: datetime, limit: int = 1000) -> None:
    """What the run loop does when the clock jumps: call ``fire_due`` until nothing is due at ``now``."""
    for _ in range(limit):
        pending = [t for t in scheduler.next_fire.values() if t is not None]
        if not pending or min(pending) > now:
            return
        scheduler.fire_due(now)
    raise AssertionError(f"still firing after {limit} rounds")


@pytest.mark.parametrize(
    "schedule, woke_at, latest",
    [
        # Shorter than an hour: these once replayed every missed minute (50 runs after 50 minutes).
        ("rate(1 minute)", datetime(2026, 1, 1, 0, 50, 30, tzinfo=UTC), datetime(2026, 1, 1, 0, 50, tzinfo=UTC)),
        ("rate(15 minutes)", datetime(2026, 1, 1, 0, 40, tzinfo=UTC), datetime(2026, 1, 1, 0, 30, tzinfo=UTC)),
        ("rate(15 minutes)", datetime(2026, 1, 1, 8, 5, tzinfo=UTC), datetime(2026, 1, 1, 8, 0, tzinfo=UTC)),
        ("cron(0 9 * * ? *)", datetime(2026, 1, 4, 12, 0, tzinfo=UTC), datetime(2026, 1, 4, 9, 0, tzinfo=UTC)),
    ],
)
def test_after_any_sleep_only_the_latest_missed_period_runs(conn, schedule, woke_at, latest):
    registry = scheduled_registry(a_job=(schedule, "UTC"))
    clock = SteppedClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    scheduler = LocalScheduler(registry, database_fire(conn), threading.Event(), now=clock)
    scheduler.prime()
    clock.now = woke_at
    fire_until_idle(scheduler, clock.now)
    assert periods(conn) == [("run", latest)]
    assert scheduler.next_fire["a.job"] == registry["a.job"].parsed_schedule.next_after(latest)


def test_after_a_sleep_missed_skip_records_the_first_missed_period_and_waits_for_the_next(conn):
    registry = scheduled_registry({"missed": "skip"}, a_job=("rate(15 minutes)", "UTC"))
    clock = SteppedClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    scheduler = LocalScheduler(registry, database_fire(conn), threading.Event(), now=clock)
    scheduler.prime()
    clock.now = datetime(2026, 1, 1, 8, 5, tzinfo=UTC)
    fire_until_idle(scheduler, clock.now)
    assert periods(conn) == [("skipped", datetime(2026, 1, 1, 0, 15, tzinfo=UTC))]
    assert scheduler.next_fire["a.job"] == datetime(2026, 1, 1, 8, 15, tzinfo=UTC)


def test_a_late_fire_within_its_own_period_still_runs():
    # Two hours late but the next period is not due yet: that is the latest missed period, and it runs.
    registry = scheduled_registry(a_job=("cron(0 9 * * ? *)", "UTC"))
    fired: list[datetime] = []
    clock = SteppedClock(datetime(2026, 1, 1, 8, 0, tzinfo=UTC))
    scheduler = LocalScheduler(registry, lambda job, t, now: fired.append(t), threading.Event(), now=clock)
    scheduler.prime()
    clock.now = datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    fire_until_idle(scheduler, clock.now)
    assert fired == [datetime(2026, 1, 1, 9, 0, tzinfo=UTC)]


def test_after_a_long_sleep_the_schedule_resumes_at_the_next_period(conn):
    registry = scheduled_registry({"overlap": "allow"}, a_job=("rate(15 minutes)", "UTC"))
    clock = SteppedClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    scheduler = LocalScheduler(registry, database_fire(conn), threading.Event(), now=clock)
    scheduler.prime()
    clock.now = datetime(2026, 1, 1, 8, 5, tzinfo=UTC)  # the laptop slept for eight hours
    scheduler.fire_due(clock.now)
    scheduler.fire_due(clock.now)
    assert periods(conn) == [("run", datetime(2026, 1, 1, 8, 0, tzinfo=UTC))]
    clock.now = datetime(2026, 1, 1, 8, 15, tzinfo=UTC)
    scheduler.fire_due(clock.now)
    assert periods(conn)[-1] == ("run", datetime(2026, 1, 1, 8, 15, tzinfo=UTC))


# -- start-up ----------------------------------------------------------------------------------------------------

STOPPED_AT = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)  # the job's latest claimed period when the runtime stopped


def started_scheduler(conn, policy: str, start: datetime, last: datetime | None = STOPPED_AT):
    registry = scheduled_registry({"missed": policy}, a_job=("rate(15 minutes)", "UTC"))
    if last is not None:
        conn.execute("INSERT INTO conveyor.schedule_fires (job_name, fire_time) VALUES ('a.job', %s)", (last,))
    clock = SteppedClock(start)
    scheduler = LocalScheduler(
        registry, database_fire(conn), threading.Event(), now=clock, last_fire=lambda job: latest_fire(conn, job.name)
    )
    scheduler.prime()
    fire_until_idle(scheduler, clock.now)
    return scheduler


def test_start_up_after_missed_periods_runs_the_latest_once_under_missed_once(conn):
    scheduler = started_scheduler(conn, "once", datetime(2026, 1, 1, 8, 5, tzinfo=UTC))
    assert periods(conn) == [("run", datetime(2026, 1, 1, 8, 0, tzinfo=UTC))]
    assert scheduler.next_fire["a.job"] == datetime(2026, 1, 1, 8, 15, tzinfo=UTC)


def test_start_up_after_missed_periods_records_the_skip_under_missed_skip(conn):
    scheduler = started_scheduler(conn, "skip", datetime(2026, 1, 1, 8, 5, tzinfo=UTC))
    [(status, period)] = periods(conn)
    assert (status, period) == ("skipped", datetime(2026, 1, 1, 0, 15, tzinfo=UTC))
    reason = conn.execute("SELECT reason FROM conveyor.runs WHERE status = 'skipped'").fetchone()[0]
    assert reason.startswith("missed: the period of 2026-01-01T00:15:00Z ended at 2026-01-01T00:30:00Z")
    assert "later periods up to 2026-01-01T08:00:00Z" in reason
    assert scheduler.next_fire["a.job"] == datetime(2026, 1, 1, 8, 15, tzinfo=UTC)


@pytest.mark.parametrize("policy", ["once", "skip"])
def test_start_up_within_the_first_missed_period_runs_it_under_either_policy(conn, policy):
    # Stopped after 00:00; back at 00:20: only 00:15 began meanwhile and its period is not over, so it is not late.
    started_scheduler(conn, policy, datetime(2026, 1, 1, 0, 20, tzinfo=UTC))
    assert periods(conn) == [("run", datetime(2026, 1, 1, 0, 15, tzinfo=UTC))]


@pytest.mark.parametrize("policy", ["once", "skip"])
def test_start_up_of_a_job_that_never_fired_waits_for_its_first_period(conn, policy):
    scheduler = started_scheduler(conn, policy, datetime(2026, 1, 1, 8, 5, tzinfo=UTC), last=None)
    assert periods(conn) == []
    assert scheduler.next_fire["a.job"] == datetime(2026, 1, 1, 8, 15, tzinfo=UTC)


def test_runtime_start_up_catches_up_what_was_missed_while_it_was_stopped(runtime_factory, db_url):
    registry = scheduled_registry({"overlap": "allow"}, test_tick=("rate(15 minutes)", "UTC"))
    start = datetime(2026, 1, 1, 8, 5, tzinfo=UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO conveyor.schedule_fires (job_name, fire_time) VALUES ('test.tick', %s)", (STOPPED_AT,))
    seen: list[str] = []
    handler = job_handler(registry["test.tick"], lambda payload, ctx: seen.append(ctx.job_id))
    runtime = runtime_factory(registry=registry, handlers={"test.tick": handler}, scheduler=True, clock=FastClock(start, speed=1))
    assert runtime.wait_for(lambda: len(seen) >= 1, timeout=20), runtime.lines
    assert any("next run 2026-01-01 00:15:00Z (missed while stopped; missed=once applies now)" in line for line in runtime.lines)
    assert any(
        "schedule   test.tick fired for 2026-01-01T08:00:00+00:00 -> job" in line and "(late fire for 2026-01-01T00:15:00+00:00)" in line
        for line in runtime.lines
    ), runtime.lines
    with psycopg.connect(db_url) as conn:
        fires = conn.execute("SELECT fire_time, job_id::text FROM conveyor.schedule_fires ORDER BY fire_time").fetchall()
    assert fires == [(STOPPED_AT, None), (datetime(2026, 1, 1, 8, 0, tzinfo=UTC), seen[0])]
