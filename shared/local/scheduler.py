"""Fires the registry's schedules locally, in their timezones (moto stores EventBridge schedules but never fires
them). Each fire enqueues through the outbox, once per (job, fire time), like every other run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from shared.registry import JobSpec, Registry

log = logging.getLogger("conveyor.local.scheduler")


class LocalScheduler(threading.Thread):
    def __init__(
        self,
        registry: Registry,
        fire: Callable[[JobSpec, datetime], None],
        stop: threading.Event,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.jobs = registry.scheduled()
        self.fire = fire
        self.stop_event = stop
        self.now = now
        self.next_fire: dict[str, datetime | None] = {}

    def prime(self) -> None:
        """Plan each job's first fire after now. Periods missed while nothing ran are not caught up, as with
        EventBridge Scheduler, which never fires for times before a schedule existed."""
        start = self.now()
        for job in self.jobs:
            self.next_fire[job.name] = job.parsed_schedule.next_after(start)

    def run(self) -> None:
        self.prime()
        while not self.stop_event.is_set():
            pending = [t for t in self.next_fire.values() if t is not None]
            if not pending:
                return
            wait = (min(pending) - self.now()).total_seconds()
            if wait > 0:
                self.stop_event.wait(min(wait, 1.0))
                continue
            self.fire_due(self.now())

    def fire_due(self, now: datetime) -> None:
        for job in self.jobs:
            due = self.next_fire.get(job.name)
            if due is None or due > now:
                continue
            following = job.parsed_schedule.next_after(due)
            if following is not None and following <= now:
                # The machine slept (or the database was down) through more than one period, however short:
                # the missed-run rule runs the latest missed period once, not every one back to back.
                latest = following
                while (after := job.parsed_schedule.next_after(latest)) is not None and after <= now:
                    latest = after
                log.warning("%s missed its runs from %s; running the one for %s", job.name, due.isoformat(), latest.isoformat())
                due = self.next_fire[job.name] = latest
            try:
                self.fire(job, due)
            except Exception:  # noqa: BLE001 - a failed fire is retried on the next loop, the period is not skipped
                log.exception("could not enqueue scheduled run of %s for %s; retrying", job.name, due.isoformat())
                self.stop_event.wait(1.0)
                continue
            self.next_fire[job.name] = job.parsed_schedule.next_after(due)
