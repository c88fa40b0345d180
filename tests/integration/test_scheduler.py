"""The local scheduler: fires registry schedules in their timezones, once per period, through the outbox."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shared.local.scheduler import LocalScheduler
from shared.registry import JobPayload, Registry
from shared.runtime import JobContext, job_handler


class Nothing(JobPayload):
    pass


def scheduled_registry(**jobs: tuple[str, str]) -> Registry:
    registry = Registry()
    for name, (schedule, timezone) in jobs.items():
        registry.job(name.replace("_", "."), payload=Nothing, queue="tick", schedule=schedule, timezone=timezone)
    return registry


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
    scheduler = LocalScheduler(registry, lambda job, t: fired.append((job.name, t)), threading.Event(), now=clock)
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
    scheduler = LocalScheduler(registry, lambda job, t: fired.append(t), threading.Event(), now=clock)
    run_stepped(scheduler, clock, until=datetime(2026, 11, 2, 12, 0, tzinfo=UTC), step=timedelta(minutes=5))
    assert fired == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 2, 6, 30, tzinfo=UTC)]


def test_a_failed_fire_is_retried_for_the_same_period():
    registry = scheduled_registry(a_job=("rate(15 minutes)", "UTC"))
    attempts: list[datetime] = []

    def fire(job, t):
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
    registry = scheduled_registry(test_tick=("rate(1 minute)", "UTC"))
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
def test_after_any_sleep_only_the_latest_missed_period_runs(schedule, woke_at, latest):
    registry = scheduled_registry(a_job=(schedule, "UTC"))
    fired: list[datetime] = []
    clock = SteppedClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    scheduler = LocalScheduler(registry, lambda job, t: fired.append(t), threading.Event(), now=clock)
    scheduler.prime()
    clock.now = woke_at
    fire_until_idle(scheduler, clock.now)
    assert fired == [latest]


def test_a_late_fire_within_its_own_period_still_runs():
    # Two hours late but the next period is not due yet: that is the latest missed period, and it runs.
    registry = scheduled_registry(a_job=("cron(0 9 * * ? *)", "UTC"))
    fired: list[datetime] = []
    clock = SteppedClock(datetime(2026, 1, 1, 8, 0, tzinfo=UTC))
    scheduler = LocalScheduler(registry, lambda job, t: fired.append(t), threading.Event(), now=clock)
    scheduler.prime()
    clock.now = datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    fire_until_idle(scheduler, clock.now)
    assert fired == [datetime(2026, 1, 1, 9, 0, tzinfo=UTC)]


def test_after_a_long_sleep_only_the_latest_missed_period_runs():
    registry = scheduled_registry(a_job=("rate(15 minutes)", "UTC"))
    fired: list[datetime] = []
    clock = SteppedClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    scheduler = LocalScheduler(registry, lambda job, t: fired.append(t), threading.Event(), now=clock)
    scheduler.prime()
    clock.now = datetime(2026, 1, 1, 8, 5, tzinfo=UTC)  # the laptop slept for eight hours
    scheduler.fire_due(clock.now)
    scheduler.fire_due(clock.now)
    assert fired == [datetime(2026, 1, 1, 8, 0, tzinfo=UTC)]
    clock.now = datetime(2026, 1, 1, 8, 15, tzinfo=UTC)
    scheduler.fire_due(clock.now)
    assert fired[-1] == datetime(2026, 1, 1, 8, 15, tzinfo=UTC)
