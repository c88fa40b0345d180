"""A small registry of test jobs whose handler does what its payload says: succeed, fail N times, fail for good."""

from __future__ import annotations

import threading

from shared.registry import JobPayload, Registry, RetryPolicy
from shared.runtime import JobContext, PermanentJobError, job_handler


class Work(JobPayload):
    n: int
    fail_times: int = 0
    permanent: bool = False


registry = Registry()
WORK = registry.job(
    "test.work",
    payload=Work,
    queue="work",
    retry=RetryPolicy(max_attempts=3, base_delay=1, max_delay=4, jitter=False),
    timeout=5,
    batch_size=10,
    concurrency=2,
)


class Calls:
    """What the handler saw, in order: (job_id, n, attempt)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, int, int]] = []

    def record(self, job_id: str, n: int, attempt: int) -> None:
        with self.lock:
            self.items.append((job_id, n, attempt))

    def ns(self) -> list[int]:
        with self.lock:
            return [n for _, n, _ in self.items]


def make_work_handler(calls: Calls):
    def work(payload: Work, ctx: JobContext) -> None:
        calls.record(ctx.job_id, payload.n, ctx.attempt)
        if payload.permanent:
            raise PermanentJobError(f"job {payload.n} can never work")
        if ctx.attempt <= payload.fail_times:
            raise RuntimeError(f"failure {ctx.attempt} of {payload.fail_times}")

    return job_handler(WORK, work)
