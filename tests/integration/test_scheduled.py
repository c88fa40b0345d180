"""Firing a schedule (shared.scheduled.fire) on the real database: once per period under concurrency, overlap,
pre-checks, the enable flag and missed periods, each with the record it leaves."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shared.registry import JobPayload, JobSpec
from shared.scheduled.fire import FireOutcome, PreCheckContext, PreCheckError, fire_schedule, latest_fire
from shared.settings import SettingsError


class Tick(JobPayload):
    region: str = "all"


P = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # a period of rate(15 minutes)
QUARTER = timedelta(minutes=15)
SOON = P + timedelta(minutes=1)  # handled a minute into its period: on time
ENV: dict[str, str] = {}  # no enable flag set


def job(**settings) -> JobSpec:
    return JobSpec(
        name="test.tick", payload=Tick, queue="tick", schedule="rate(15 minutes)", schedule_payload={"region": "eu"},
        **settings,
    )  # fmt: skip


def fire(conn, spec, fire_time=P, now=SOON, environ=ENV):
    return fire_schedule(conn, spec, fire_time, now=now, environ=environ)


def pending(conn) -> list[tuple[str, datetime]]:
    return conn.execute("SELECT id::text, scheduled_for FROM conveyor.outbox ORDER BY scheduled_for").fetchall()


def skips(conn) -> list[tuple[datetime, str]]:
    return conn.execute(
        "SELECT scheduled_for, reason FROM conveyor.runs WHERE status = 'skipped' ORDER BY scheduled_for, created_at"
    ).fetchall()


def add_run(conn, status: str, *, stale_in: timedelta | None = None, job_name: str = "test.tick") -> str:
    """A ledger row as the handler runtime leaves it (status, and stale_at while running)."""
    return conn.execute(
        "INSERT INTO conveyor.runs (id, job_name, queue, payload, status, created_at, run_at, stale_at) "
        "VALUES (gen_random_uuid(), %s, 'tick', '{}', %s, now(), now(), now() + %s) RETURNING id::text",
        (job_name, status, stale_in),
    ).fetchone()[0]


# -- one run per period ------------------------------------------------------------------------------------------


def test_a_run_carries_its_period_and_its_claim_points_at_it(conn):
    result = fire(conn, job())
    assert (result.outcome, result.period) == (FireOutcome.ENQUEUED, P)
    row = conn.execute("SELECT id, scheduled_for, payload, queue FROM conveyor.outbox").fetchone()
    assert row == (result.job_id, P, {"region": "eu"}, "tick")
    assert conn.execute("SELECT fire_time, job_id FROM conveyor.schedule_fires").fetchall() == [(P, result.job_id)]
    view = conn.execute("SELECT status, scheduled_for FROM conveyor.jobs WHERE id = %s", (result.job_id,)).fetchone()
    assert view == ("pending", P)
    assert latest_fire(conn, "test.tick") == P and latest_fire(conn, "other.job") is None


def test_a_second_delivery_of_a_period_does_nothing(conn):
    first = fire(conn, job(overlap="allow"))
    again = fire(conn, job(overlap="allow"))
    assert again.outcome is FireOutcome.DUPLICATE and again.duplicate_of == first.job_id and again.job_id is None
    assert [job_id for job_id, _ in pending(conn)] == [str(first.job_id)]


def concurrently(db_url, *calls):
    """Run each call(conn) in its own thread on its own connection, released together; results in call order."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index, call):
        with psycopg.connect(db_url, autocommit=True) as own:
            barrier.wait()
            try:
                results[index] = call(own)
            except Exception as exc:  # noqa: BLE001 - returned for the test to look at
                results[index] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def slow_check(seen: list[datetime]):
    """A pre_check that holds the fire open a while, so overlapping fires really overlap."""

    def check(ctx: PreCheckContext) -> None:
        seen.append(ctx.scheduled_for)
        time.sleep(0.3)

    return check


def test_concurrent_fires_for_the_same_period_enqueue_once(db_url, conn):
    seen: list[datetime] = []
    spec = job(pre_check=slow_check(seen))
    results = concurrently(db_url, *[lambda c: fire(c, spec)] * 4)
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["duplicate", "duplicate", "duplicate", "enqueued"], results
    assert len(pending(conn)) == 1 and seen == [P]


def test_concurrent_fires_for_different_periods_see_each_others_run(db_url, conn):
    # Without the job's lock both would find nothing live (the other's outbox row not yet committed) and both run.
    seen: list[datetime] = []
    spec = job(pre_check=slow_check(seen))
    results = concurrently(db_url, lambda c: fire(c, spec, P), lambda c: fire(c, spec, P + QUARTER))
    assert sorted(r.outcome.value for r in results) == ["enqueued", "skipped"], results
    enqueued = next(r for r in results if r.outcome is FireOutcome.ENQUEUED)
    skipped = next(r for r in results if r.outcome is FireOutcome.SKIPPED)
    assert skipped.reason.startswith(f"overlap: run {enqueued.job_id} of this job is still pending")
    assert len(pending(conn)) == 1


# -- overlap -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, stale_in",
    [
        ("queued", None),
        ("retrying", None),
        ("pending", None),  # a flow's released parent
        ("running", timedelta(minutes=5)),
    ],
)
def test_overlap_skip_holds_while_an_earlier_run_is_live_and_records_why(conn, status, stale_in):
    live = add_run(conn, status, stale_in=stale_in)
    result = fire(conn, job())
    assert result.outcome is FireOutcome.SKIPPED and pending(conn) == []
    assert result.reason.startswith(f"overlap: run {live} of this job is still {status} (since ")
    record = conn.execute(
        "SELECT status, reason, scheduled_for, queue, payload, finished_at IS NOT NULL, created_at = run_at, "
        "published_at FROM conveyor.runs WHERE id = %s",
        (result.job_id,),
    ).fetchone()
    assert record == ("skipped", result.reason, P, "tick", {"region": "eu"}, True, True, None)
    assert conn.execute("SELECT job_id FROM conveyor.schedule_fires").fetchall() == [(result.job_id,)]
    # The period is settled: a second delivery neither runs it nor records it again.
    assert fire(conn, job()).outcome is FireOutcome.DUPLICATE
    assert len(skips(conn)) == 1


def test_overlap_skip_holds_while_the_earlier_run_is_still_in_the_outbox(conn):
    first = fire(conn, job())
    second = fire(conn, job(), P + QUARTER, now=P + QUARTER)
    assert second.outcome is FireOutcome.SKIPPED
    assert second.reason.startswith(f"overlap: run {first.job_id} of this job is still pending")


def test_overlap_skip_releases_once_the_running_run_is_stale_or_finished(conn):
    live = add_run(conn, "running", stale_in=timedelta(minutes=5))
    assert fire(conn, job(), P).outcome is FireOutcome.SKIPPED
    # Its worker died: past stale_at the run no longer holds the schedule back.
    conn.execute("UPDATE conveyor.runs SET stale_at = now() - interval '1 second' WHERE id = %s", (live,))
    assert fire(conn, job(), P + QUARTER, now=P + QUARTER).outcome is FireOutcome.ENQUEUED


@pytest.mark.parametrize("status", ["succeeded", "dead", "failed", "cancelled", "skipped"])
def test_finished_runs_do_not_hold_the_schedule_back(conn, status):
    add_run(conn, status)
    assert fire(conn, job()).outcome is FireOutcome.ENQUEUED


def test_only_runs_of_the_same_job_count(conn):
    add_run(conn, "running", stale_in=timedelta(minutes=5), job_name="other.job")
    conn.execute("INSERT INTO conveyor.outbox (id, job_name, queue, payload) VALUES (gen_random_uuid(), 'other.job', 'q', '{}')")
    assert fire(conn, job()).outcome is FireOutcome.ENQUEUED


def test_overlap_allow_enqueues_while_a_run_is_live(conn):
    add_run(conn, "running", stale_in=timedelta(minutes=5))
    first = fire(conn, job(overlap="allow"))
    second = fire(conn, job(overlap="allow"), P + QUARTER, now=P + QUARTER)
    assert (first.outcome, second.outcome) == (FireOutcome.ENQUEUED, FireOutcome.ENQUEUED)
    assert [t for _, t in pending(conn)] == [P, P + QUARTER]


# -- pre_check ---------------------------------------------------------------------------------------------------


def test_a_pre_check_reason_skips_the_period_and_is_recorded(conn):
    seen = []

    def already_done(ctx: PreCheckContext) -> str | None:
        # Runs in the fire's transaction: it reads with the fire's connection and sees the period it decides.
        seen.append((ctx.job.name, ctx.scheduled_for, ctx.conn.execute("SELECT 1").fetchone()[0]))
        ctx.logger.info("checked")
        return "report for this period already sent" if ctx.scheduled_for == P else None

    result = fire(conn, job(pre_check=already_done))
    assert result.outcome is FireOutcome.SKIPPED and result.reason == "pre_check: report for this period already sent"
    assert skips(conn) == [(P, "pre_check: report for this period already sent")]
    assert fire(conn, job(pre_check=already_done), P + QUARTER, now=P + QUARTER).outcome is FireOutcome.ENQUEUED
    assert seen == [("test.tick", P, 1), ("test.tick", P + QUARTER, 1)]


def test_a_pre_check_that_raises_fails_the_fire_and_records_nothing(conn):
    calls = []

    def flaky(ctx: PreCheckContext) -> None:
        calls.append(ctx.scheduled_for)
        if len(calls) == 1:
            ctx.conn.execute("SELECT * FROM no_such_table")  # aborts the fire's transaction

    with pytest.raises(PreCheckError, match=r"pre_check of job 'test.tick' for 2026-01-01T12:00:00\+00:00 raised"):
        fire(conn, job(pre_check=flaky))
    assert conn.execute("SELECT count(*) FROM conveyor.schedule_fires").fetchone() == (0,)
    assert skips(conn) == [] and pending(conn) == []
    # The scheduler retries the same period, which is still unclaimed.
    assert fire(conn, job(pre_check=flaky)).outcome is FireOutcome.ENQUEUED


@pytest.mark.parametrize("answer", [True, "", "   ", 42])
def test_a_pre_check_must_answer_a_reason_or_none(conn, answer):
    with pytest.raises(PreCheckError, match="return a reason \\(a non-empty str\\) to skip the period, or None"):
        fire(conn, job(pre_check=lambda ctx: answer))
    assert conn.execute("SELECT count(*) FROM conveyor.schedule_fires").fetchone() == (0,)


def test_a_long_pre_check_reason_is_cut_to_what_the_ledger_holds(conn):
    result = fire(conn, job(pre_check=lambda ctx: "x" * 5000))
    assert len(result.reason) == 4000 and skips(conn)[0][1] == result.reason


# -- enable flag -------------------------------------------------------------------------------------------------


def test_a_disabled_job_records_a_skip_per_period(conn, monkeypatch, caplog):
    monkeypatch.setenv("CONVEYOR_JOB_TEST_TICK_ENABLED", "False")
    result = fire_schedule(conn, job(), P, now=SOON)
    assert result.outcome is FireOutcome.SKIPPED
    assert skips(conn) == [(P, "disabled: CONVEYOR_JOB_TEST_TICK_ENABLED is false")]
    assert "scheduled period skipped" in caplog.text
    assert fire_schedule(conn, job(), P, now=SOON).outcome is FireOutcome.DUPLICATE
    monkeypatch.setenv("CONVEYOR_JOB_TEST_TICK_ENABLED", "yes")
    assert fire_schedule(conn, job(), P + QUARTER, now=P + QUARTER).outcome is FireOutcome.ENQUEUED


def test_a_bad_enable_flag_fails_the_fire_and_records_nothing(conn):
    with pytest.raises(SettingsError, match="CONVEYOR_JOB_TEST_TICK_ENABLED='nope' is not a boolean"):
        fire(conn, job(), environ={"CONVEYOR_JOB_TEST_TICK_ENABLED": "nope"})
    assert conn.execute("SELECT count(*) FROM conveyor.schedule_fires").fetchone() == (0,)
    assert skips(conn) == [] and pending(conn) == []


# -- missed periods ----------------------------------------------------------------------------------------------

BACK = P + timedelta(hours=1, minutes=7)  # the database came back at 13:07: 12:15 … 13:00 began while it was down


def test_missed_once_turns_many_late_fires_into_one_run_for_the_latest_period(conn):
    # Scheduler's retries after the outage deliver 12:00, 12:15, 12:30 and 12:45, then 13:00 on its own.
    results = [fire(conn, job(), P + k * QUARTER, now=BACK) for k in range(5)]
    assert [r.outcome.value for r in results] == ["enqueued", "duplicate", "duplicate", "duplicate", "duplicate"]
    assert {r.period for r in results} == {P + 4 * QUARTER}
    assert [t for _, t in pending(conn)] == [P + 4 * QUARTER]
    assert skips(conn) == []


def test_missed_skip_records_each_late_period_and_runs_only_the_current_one(conn):
    results = [fire(conn, job(missed="skip"), P + k * QUARTER, now=BACK) for k in range(5)]
    assert [r.outcome.value for r in results] == ["skipped"] * 4 + ["enqueued"]
    assert [t for t, _ in skips(conn)] == [P + k * QUARTER for k in range(4)]
    assert skips(conn)[0][1] == (
        "missed: the period of 2026-01-01T12:00:00Z ended at 2026-01-01T12:15:00Z, before this fire at "
        "2026-01-01T13:07:00Z; later periods up to 2026-01-01T13:00:00Z had begun too (missed=skip)"
    )
    assert [t for _, t in pending(conn)] == [P + 4 * QUARTER]
    # A late retry of a period already recorded does nothing more.
    assert fire(conn, job(missed="skip"), P, now=BACK).outcome is FireOutcome.DUPLICATE


def test_a_job_without_a_schedule_cannot_fire(conn):
    plain = JobSpec(name="test.plain", payload=Tick, queue="tick")
    with pytest.raises(ValueError, match="job 'test.plain' has no schedule"):
        fire(conn, plain)
