"""The handler runtime: what turns a job function into a Lambda handler."""

from shared.runtime.context import JobContext
from shared.runtime.errors import JobError, PayloadInvalid, PermanentJobError, RetryAfter
from shared.runtime.handler import JobHandler, Outcome, RunReport, job_handler

__all__ = [
    "JobContext",
    "JobError",
    "JobHandler",
    "Outcome",
    "PayloadInvalid",
    "PermanentJobError",
    "RetryAfter",
    "RunReport",
    "job_handler",
]
