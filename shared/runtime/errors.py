"""Exceptions a job raises to say what should happen next. Any other exception means "retry with backoff"."""

from __future__ import annotations


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
    It still counts as an attempt; the job goes to the DLQ when attempts run out."""

    def __init__(self, seconds: int, reason: str = "") -> None:
        if not 0 <= seconds <= 43_200:
            raise ValueError(f"RetryAfter seconds must be between 0 and 43200 (SQS's visibility limit), got {seconds}")
        self.seconds = seconds
        self.reason = reason
        super().__init__(reason or f"retry after {seconds}s")


class PayloadInvalid(PermanentJobError):
    """The message body does not fit the job's payload model: no retry can fix that."""
