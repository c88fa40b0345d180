"""Fires the registry's schedules locally, in their timezones (moto stores EventBridge schedules but never fires
them). Each fire goes through the same path as on AWS (``shared.scheduled.fire.fire_schedule``: once per period,
overlap, enable flag, pre-check), and the same missed-run rule decides what a late fire stands for
(``shared.scheduled.policy.plan_fire``).

Late fires happen here in two ways, and both go through that rule: at start-up, when the job's latest claimed
period in ``conveyor.schedule_fires`` is followed by periods that began while nothing ran, the first of them is
fired at once; and while running, when a wake-up (a laptop's sleep, a stalled database) finds a period due after
the next one began. With ``missed=once`` that fire runs the latest due period, once; with ``missed=skip`` it records
the missed period as skipped. Either way the scheduler then waits for the period after the latest due one: missed
periods are never replayed one by one.

A paused queue's schedules do not fire (as on AWS, where pausing disables them): nothing is enqueued or recorded, and
the job's next fire stays where it was. On resume that period is late, so the missed-run rule decides what it stands
for (``missed=once``: the latest period due runs once, at once; ``missed=skip``: it is recorded skipped and the
schedule waits for the next period).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from shared.registry import JobSpec, Registry
from shared.scheduled.policy import plan_fire

log = logging.getLogger("conveyor.local.scheduler")

# fire(job, fire_time, now): handle one fire at the scheduler's ``now``; raises if the fire must be retried.
Fire = Callable[[JobSpec, datetime, datetime], object]


class LocalScheduler(threading.Thread):
    def __init__(
        self,
        registry: Registry,
        fire: Fire,
        stop: threading.Event,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        last_fire: Callable[[JobSpec], datetime | None] = lambda job: None,
        paused: Callable[[str], bool] = lambda queue: False,
    ) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.jobs = registry.scheduled()
        self.fire = fire
        self.stop_event = stop
        self.now = now
        self.last_fire = last_fire
        self.paused = paused
        self.next_fire: dict[str, datetime | None] = {}
        self.primed = False

    def prime(self) -> None:
        """Plan each job's next fire: the period after its latest claimed one (``last_fire``), due at once if it
        began while nothing ran; or, for a job that never fired here, the first period after now (as EventBridge
        Scheduler never fires for times before a schedule existed)."""
        start = self.now()
        for job in self.jobs:
            last = self.last_fire(job)
            self.next_fire[job.name] = job.parsed_schedule.next_after(last if last is not None else start)
        self.primed = True

    def run(self) -> None:
        if not self.primed:
            self.prime()
        while not self.stop_event.is_set():
            planned = {job.name: self.next_fire.get(job.name) for job in self.jobs}
            if all(t is None for t in planned.values()):
                return
            # A paused queue's jobs are left out of the wait, so the loop looks again within a second.
            pending = [t for job in self.jobs if (t := planned[job.name]) is not None and not self.paused(job.queue)]
            if not pending:
                self.stop_event.wait(1.0)
                continue
            wait = (min(pending) - self.now()).total_seconds()
            if wait > 0:
                self.stop_event.wait(min(wait, 1.0))
                continue
            self.fire_due(self.now())

    def fire_due(self, now: datetime) -> None:
        for job in self.jobs:
            due = self.next_fire.get(job.name)
            if due is None or due > now or self.paused(job.queue):
                continue
            plan = plan_fire(job.parsed_schedule, due, now, job.missed)
            if plan.late:
                log.warning("%s missed its period %s; missed=%s applies", job.name, due.isoformat(), job.missed.value)
            try:
                self.fire(job, due, now)
            except Exception:  # noqa: BLE001 - a failed fire is retried on the next loop, the period is not skipped
                log.exception("could not fire the schedule of %s for %s; retrying", job.name, due.isoformat())
                self.stop_event.wait(1.0)
                continue
            self.next_fire[job.name] = job.parsed_schedule.next_after(plan.latest)
