"""The policies of a scheduled job, and the one rule deciding what a late fire stands for.

A fire is *late* when the period after it has already begun: ``following(fire_time) <= now``. A fire inside its own
period (Scheduler invokes within the minute; a retry minutes later; a laptop that slept an hour through a daily
job's 09:00) is not late and runs as usual. A late fire comes from downtime: Scheduler retrying a delivery that
failed while the database or the function was down, or the local scheduler waking from a sleep or starting after
being stopped. What happens then is the job's :class:`MissedPolicy`.

:func:`plan_fire` is that rule. It is pure (schedule, fire time, now, policy in; the period to claim out), so the
schedule function on AWS and the local scheduler decide identically, and it is tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from shared.schedule import Schedule


class OverlapPolicy(StrEnum):
    """Whether a period may start while an earlier run of the same job is still live.

    ``skip`` (the default): a period whose fire finds a live run of the job (in the outbox, queued, retrying, or
    running and not past its ``stale_at``) is recorded as ``skipped`` with the live run named, and does not run.
    Most scheduled work (a cleanup, a sync, a report) must not run twice at once, and the next period picks up
    what this one would have done. ``allow``: no check; periods run whatever else is running.
    """

    SKIP = "skip"
    ALLOW = "allow"


class MissedPolicy(StrEnum):
    """What a late fire (see the module docstring) does.

    ``once`` (the default): the late fire runs the *latest* period already due instead of its own, so an outage
    of any length gives one catch-up run, and every other late delivery finds that period claimed and does nothing.
    ``skip``: the late fire records its own period as ``skipped`` (reason ``missed: …``) and runs nothing; the
    current period still runs when its own fire arrives.

    Why ``once`` is the default: most scheduled jobs do work that is still owed after an outage (release expired
    reservations, sync, reconcile, prune), and skipping it would leave that work undone until the next period,
    possibly a day or a month later, with only a ledger row to say so. A single coalesced run is what a missed
    period of such a job needs, never a burst of them. It is also what the local scheduler has always done after a
    sleep. Choose ``skip`` for work that is worthless late (a "good morning" digest at 15:00).
    """

    SKIP = "skip"
    ONCE = "once"


@dataclass(frozen=True)
class FirePlan:
    """What one fire stands for.

    ``period`` is the period to claim: the fire's own, or for a late fire under ``once`` the latest due one.
    ``latest`` is the latest period due at ``now`` (the fire's own when it is not late): a scheduler that made
    this fire has nothing more to fire before the period after it. ``missed_reason`` is set when the period is to
    be recorded as skipped because it was missed (a late fire under ``skip``).
    """

    fire_time: datetime
    period: datetime
    latest: datetime
    missed_reason: str | None = None

    @property
    def late(self) -> bool:
        return self.latest != self.fire_time


def following(schedule: Schedule, fire_time: datetime) -> datetime | None:
    """The fire after one at ``fire_time``: one period later for a rate, else the schedule's next fire time.

    Stepping a rate by its period keeps the phase of ``fire_time``: AWS anchors rates at the schedule's start date
    and we at the epoch, and the two must agree on which period a delivery from AWS is for."""
    period = schedule.period
    return fire_time + period if period is not None else schedule.next_after(fire_time)


def latest_due(schedule: Schedule, due: datetime, now: datetime) -> datetime:
    """The last fire time at or before ``now``, given ``due`` (<= now) is a fire time; steps rates from ``due``.

    For cron, a fire time found by widening a window back from ``now`` (doubling from a minute) rather than by
    stepping from ``due``: a minutely cron after a week away takes a few dozen steps, not ten thousand."""
    period = schedule.period
    if period is not None:
        return due + ((now - due) // period) * period
    start = due
    span = timedelta(minutes=1)
    while now - span > due:
        candidate = schedule.next_after(now - span)
        if candidate is not None and candidate <= now:
            start = candidate
            break
        span *= 2
    latest = start
    while (after := schedule.next_after(latest)) is not None and after <= now:
        latest = after
    return latest


def plan_fire(schedule: Schedule, fire_time: datetime, now: datetime, missed: MissedPolicy) -> FirePlan:
    """Decide what a fire of ``schedule`` for ``fire_time``, handled at ``now``, stands for (see the module
    docstring and :class:`MissedPolicy`)."""
    after = following(schedule, fire_time)
    if after is None or after > now:
        return FirePlan(fire_time, fire_time, fire_time)
    latest = latest_due(schedule, after, now)
    if missed is MissedPolicy.ONCE:
        return FirePlan(fire_time, latest, latest)
    reason = (
        f"missed: the period of {_iso(fire_time)} ended at {_iso(after)}, before this fire at {_iso(now)}"
        + (f"; later periods up to {_iso(latest)} had begun too" if latest != after else "")
        + " (missed=skip)"
    )
    return FirePlan(fire_time, fire_time, latest, reason)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
