"""The missed-run rule (shared.scheduled.policy.plan_fire): one annotated table, times worked out by hand.

2026-01-01 is a Thursday. New York's DST starts Sun 8 Mar 2026 (EST, UTC-5 -> EDT, UTC-4).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.schedule import parse_schedule
from shared.scheduled.policy import MissedPolicy, latest_due, plan_fire


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


ONCE, SKIP = MissedPolicy.ONCE, MissedPolicy.SKIP

# (expression, timezone, fire time, now, period claimed under once, latest due period) — None: not late.
TABLE = [
    # In its own period, however late within it: not late.
    ("rate(15 minutes)", "UTC", "2026-01-01 12:00", "2026-01-01 12:00:30", None),
    ("rate(15 minutes)", "UTC", "2026-01-01 12:00", "2026-01-01 12:14:59", None),
    # The next period began at the very moment: late, and that period is the latest.
    ("rate(15 minutes)", "UTC", "2026-01-01 12:00", "2026-01-01 12:15", "2026-01-01 12:15"),
    # An hour's outage: 12:15, 12:30, 12:45, 13:00 began since; 13:00 is the latest.
    ("rate(15 minutes)", "UTC", "2026-01-01 12:00", "2026-01-01 13:07", "2026-01-01 13:00"),
    # AWS anchors rates at the schedule's start: a delivery for 12:07 steps by 15 minutes from 12:07 (12:22 next),
    # never onto our epoch-aligned 12:15.
    ("rate(15 minutes)", "UTC", "2026-01-01 12:07", "2026-01-01 12:20", None),
    ("rate(15 minutes)", "UTC", "2026-01-01 12:07", "2026-01-01 12:50", "2026-01-01 12:37"),
    ("rate(1 day)", "UTC", "2026-01-01 00:00", "2026-01-05 03:00", "2026-01-05 00:00"),
    # A daily job handled at 23:00 the same day: still its own period.
    ("cron(0 9 * * ? *)", "UTC", "2026-01-01 09:00", "2026-01-01 23:00", None),
    ("cron(0 9 * * ? *)", "UTC", "2026-01-01 09:00", "2026-01-03 10:00", "2026-01-03 09:00"),
    # Weekdays only: Friday's period lasts until Monday 09:00, so Sunday is not late; Tuesday 08:00 is.
    ("cron(0 9 ? * MON-FRI *)", "UTC", "2026-01-02 09:00", "2026-01-04 12:00", None),
    ("cron(0 9 ? * MON-FRI *)", "UTC", "2026-01-02 09:00", "2026-01-06 08:00", "2026-01-05 09:00"),
    # Every minute, a week away: the latest is the minute now is in.
    ("cron(* * * * ? *)", "UTC", "2026-01-01 00:00", "2026-01-08 00:00:30", "2026-01-08 00:00"),
    # 09:00 New York: 14:00Z in EST, 13:00Z in EDT (from Sun 8 Mar).
    ("cron(0 9 * * ? *)", "America/New_York", "2026-03-07 14:00", "2026-03-09 13:30", "2026-03-09 13:00"),
    # Monthly on the 1st, handled on 3 Apr: 1 Feb, 1 Mar and 1 Apr began since; 1 Apr is the latest.
    ("cron(0 0 1 * ? *)", "UTC", "2026-01-01 00:00", "2026-04-03 00:00", "2026-04-01 00:00"),
    # A one-time schedule has no next period: never late.
    ("at(2026-01-01T09:00:00)", "UTC", "2026-01-01 09:00", "2027-01-01 00:00", None),
]


@pytest.mark.parametrize("expression, tz, fire, now, latest", TABLE)
def test_plan_fire(expression, tz, fire, now, latest):
    schedule = parse_schedule(expression, tz)
    once = plan_fire(schedule, utc(fire), utc(now), ONCE)
    skip = plan_fire(schedule, utc(fire), utc(now), SKIP)
    if latest is None:
        for plan in (once, skip):
            assert (plan.period, plan.latest, plan.late, plan.missed_reason) == (utc(fire), utc(fire), False, None)
        return
    # once: the late fire claims the latest due period and runs it.
    assert (once.period, once.latest, once.late, once.missed_reason) == (utc(latest), utc(latest), True, None)
    # skip: the late fire records its own period as missed, and knows the latest due one.
    assert (skip.period, skip.latest, skip.late) == (utc(fire), utc(latest), True)
    assert skip.missed_reason.startswith("missed: the period of ")


def test_the_missed_reason_says_which_period_ended_when():
    plan = plan_fire(parse_schedule("rate(15 minutes)"), utc("2026-01-01 12:00"), utc("2026-01-01 13:07"), SKIP)
    assert plan.missed_reason == (
        "missed: the period of 2026-01-01T12:00:00Z ended at 2026-01-01T12:15:00Z, before this fire at "
        "2026-01-01T13:07:00Z; later periods up to 2026-01-01T13:00:00Z had begun too (missed=skip)"
    )
    one = plan_fire(parse_schedule("rate(15 minutes)"), utc("2026-01-01 12:00"), utc("2026-01-01 12:20"), SKIP)
    assert "later periods" not in one.missed_reason


@pytest.mark.parametrize(
    "expression",
    ["cron(*/7 9-17 ? * MON-FRI *)", "cron(0 0 L * ? *)", "cron(30 2 * * ? *)", "cron(0 12 ? * 2#1 *)"],
)
def test_latest_due_matches_stepping_through_every_fire(expression):
    # Cross-check of the window search against the obvious loop, for irregular crons and nows around them.
    schedule = parse_schedule(expression, "Europe/Berlin")
    due = schedule.next_after(utc("2026-01-01 00:00"))
    for now in (utc("2026-01-01 10:00"), utc("2026-01-31 23:59"), utc("2026-03-29 03:00"), utc("2026-07-04 12:00")):
        if now < due:
            continue
        expected = due
        while (after := schedule.next_after(expected)) is not None and after <= now:
            expected = after
        assert latest_due(schedule, due, now) == expected, now
