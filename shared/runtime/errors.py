"""Exceptions a job raises to say what should happen next. Any other exception means "retry with backoff"."""

from __future__ import annotations

import math


class JobError(Exception):
    """Base of the errors that carry a retry decision."""

    retryable: bool = True


class PermanentJobError(JobError):
    """The job can never succeed (unknown customer, malformed input the model let through, a 4xx from an API):
    it goes to its dead-letter queue now, with ``reason`` attached, instead of burning its remaining attempts."""

    retryable = False

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RetryAfter(JobError):
    """Retry after ``seconds`` instead of the policy's backoff (a rate limit's Retry-After, a lock held elsewhere).
    It still counts as an attempt; the job goes to the DLQ when attempts run out.

    Fractions round up to whole seconds (SQS's unit): the job never comes back before it asked. The delay is never
    shortened: one longer than SQS can still hide this message (12 h from its receive) reschedules the job through
    the outbox as a new job (see the README, "Retry delays").
    """

    def __init__(self, seconds: float, reason: str = "") -> None:
        number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
        if not number or not 0 <= seconds <= 43_200:  # NaN fails the comparison too
            raise ValueError(
                f"RetryAfter seconds must be a number between 0 and 43200 (SQS's 12-hour limit), got {seconds!r}"
            )
        self.seconds = math.ceil(seconds)
        self.reason = reason
        super().__init__(reason or f"retry after {self.seconds}s")


class PayloadInvalid(PermanentJobError):
    """The message body does not fit the job's payload model: no retry can fix that."""
