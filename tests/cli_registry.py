"""A registry for tests that start `conveyor dev` as a subprocess: the test job of tests.support, with a handler the
subprocess can import (``conveyor dev`` loads each job's handler module, and cannot take a test's function)."""

from __future__ import annotations

from shared.registry import Registry
from shared.runtime import JobContext, PermanentJobError, job_handler
from tests.support import WORK, Work

registry = Registry()
JOB = registry.job(
    WORK.name, payload=Work, queue=WORK.queue, retry=WORK.retry, timeout=WORK.timeout, batch_size=WORK.batch_size,
    concurrency=WORK.concurrency, handler=__name__,
)


def work(payload: Work, ctx: JobContext) -> None:
    if payload.permanent:
        raise PermanentJobError(f"job {payload.n} fails for good")
    if ctx.attempt <= payload.fail_times:
        raise RuntimeError(f"attempt {ctx.attempt} of job {payload.n} fails")


handler = job_handler(JOB, work)
