"""Payload models of the product's jobs. Each is frozen and forbids unknown fields (see ``JobPayload``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from shared.registry import JobPayload

# Deliberately simple: full RFC 5322 validation belongs to the mail provider, which rejects bad addresses anyway.
EmailAddress = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class EmailTemplate(StrEnum):
    PASSWORD_RESET = "password_reset"
    WELCOME = "welcome"
    RECEIPT = "receipt"
    NOTIFICATION = "notification"


class EmailSend(JobPayload):
    """A transactional email. Password resets are latency-sensitive and go to the ``email-high`` queue."""

    to: EmailAddress
    template: EmailTemplate
    subject: Annotated[str, StringConstraints(min_length=1, max_length=998)]
    # Sensitive: a password reset's variables carry its token. Masked wherever operations show a payload.
    variables: dict[str, str] = Field(default_factory=dict, json_schema_extra={"sensitive": True})


class ReservationsCleanup(JobPayload):
    """Release reservations that expired more than ``grace_minutes`` ago, at most ``limit`` per run."""

    grace_minutes: int = Field(default=0, ge=0, le=24 * 60)
    limit: int = Field(default=1000, ge=1, le=100_000)
