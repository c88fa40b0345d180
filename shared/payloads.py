"""Payload models of the product's jobs. Each is frozen and forbids unknown fields (see ``JobPayload``)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from shared.registry import JobPayload

# Deliberately simple: full RFC 5322 validation belongs to the mail provider, which rejects bad addresses anyway.
EmailAddress = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class EmailTemplate(StrEnum):
    PASSWORD_RESET = "password_reset"          # email-high
    ORDER_CONFIRMATION = "order_confirmation"
    ORDER_STATUS = "order_status"
    WELCOME = "welcome"
    USER_CREATED = "user_created"
    NOTIFICATION = "notification"              # a critical notification's email copy
    DIGEST = "digest"                          # orders.digest
    RECEIPT = "receipt"


class EmailSend(JobPayload):
    """A transactional email rendered from ``template`` (subject, text and HTML) with ``variables``. Password resets
    are latency-sensitive and go to the ``email-high`` queue. ``subject``, when given, replaces the template's."""

    to: EmailAddress
    template: EmailTemplate
    subject: Annotated[str, StringConstraints(min_length=1, max_length=998)] | None = None
    # Sensitive: a password reset's variables carry its token. Masked wherever operations show a payload.
    variables: dict[str, str] = Field(default_factory=dict, json_schema_extra={"sensitive": True})


class ReservationsCleanup(JobPayload):
    """Cancel orders pending for more than ``older_than_minutes`` and release the stock they held, one transaction
    per order, at most ``limit`` orders per run."""

    older_than_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    limit: int = Field(default=1000, ge=1, le=100_000)


# -- messages from domain code ------------------------------------------------------------------------------------


class NotificationType(StrEnum):
    ORDER_UPDATE = "order_update"          # critical: also emailed
    PAYMENT_ISSUE = "payment_issue"        # critical: also emailed
    SUBSCRIPTION_EXPIRING = "subscription_expiring"  # critical: also emailed
    PROMOTION = "promotion"
    REMINDER = "reminder"


class NotificationDispatch(JobPayload):
    """Push ``notification_id`` (a row of demo.notifications) to every device of its user; critical types are
    emailed too."""

    notification_id: int = Field(ge=1)


PhoneNumber = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+[1-9][0-9]{6,14}$")]


class SmsSend(JobPayload):
    """One SMS, to an E.164 number."""

    to: PhoneNumber
    text: Annotated[str, StringConstraints(min_length=1, max_length=1600)]


class ReceiptPush(JobPayload):
    """Post sale ``sale_id``'s tax receipt to the receipt service; enqueued in the sale's own transaction."""

    sale_id: int = Field(ge=1)


# -- scheduled maintenance ----------------------------------------------------------------------------------------


class Batched(JobPayload):
    """A scheduled clean-up: rows are handled in batches of ``batch_size``, at most ``max_batches`` per run (the
    next period continues)."""

    batch_size: int = Field(default=1000, ge=1, le=10_000)
    max_batches: int = Field(default=100, ge=1, le=10_000)


class VouchersExpire(Batched):
    pass


class VouchersAuditArchive(Batched):
    """Delete voucher audit rows older than ``retention_days`` (default: ``VOUCHER_AUDIT_RETENTION_DAYS``, 730)."""

    retention_days: int | None = Field(default=None, ge=1, le=36_500)


class AuditRetention(Batched):
    """Archive audit logs older than ``archive_after_days``; purge archived ones older than ``purge_after_days``."""

    archive_after_days: int = Field(default=365, ge=1, le=36_500)
    purge_after_days: int = Field(default=2555, ge=1, le=36_500)

    @model_validator(mode="after")
    def _purge_after_archiving(self) -> AuditRetention:
        # Purging before archiving would delete logs as soon as they were archived: a typo, not a policy.
        if self.purge_after_days < self.archive_after_days:
            raise ValueError(
                f"purge_after_days ({self.purge_after_days}) must not be less than archive_after_days "
                f"({self.archive_after_days})"
            )
        return self


class NotificationsCleanup(Batched):
    older_than_days: int = Field(default=90, ge=1, le=36_500)


class OrdersDigest(JobPayload):
    """The morning digest: one email per store owner with unprocessed items, and one for operations."""

    max_items_per_store: int = Field(default=50, ge=1, le=1000)


class StoreSync(JobPayload):
    """Pull one store's inventory from its POS API; without ``store_id`` (the hourly schedule), enqueue one such
    job per store with an inventory integration (dedup key ``store-sync:{store_id}``)."""

    store_id: int | None = Field(default=None, ge=1)


class PushTokensCleanup(Batched):
    unseen_days: int = Field(default=60, ge=1, le=3650)


class IdempotencyKeysPrune(Batched):
    pass


# -- property billing ---------------------------------------------------------------------------------------------


class BillsMonthly(JobPayload):
    """Bill every active contract for ``period`` (a month's first day); default: the month of the scheduled run, in
    Asia/Ulaanbaatar."""

    period: date | None = None


class ContractsExpiryNotice(JobPayload):
    """SMS tenants whose contract ends within each of ``thresholds_days`` days, once per contract and threshold."""

    thresholds_days: tuple[int, ...] = (30, 7)


class StatementsPoll(JobPayload):
    account: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "main"


class StatementsReconcile(JobPayload):
    """Match new statement lines (all, or those of one import) to open bills by reference and amount."""

    line_ids: tuple[int, ...] = ()


class DocumentKind(StrEnum):
    INVOICE = "invoice"
    STATEMENT = "statement"


class PdfRender(JobPayload):
    """Render one document (an invoice for bill ``subject_id``, or a statement for contract ``subject_id``) to PDF in
    S3 and record its key in demo.documents."""

    kind: DocumentKind
    subject_id: int = Field(ge=1)


class PdfPackage(JobPayload):
    """A flow's parent: zip the PDFs its ``pdf.render`` children made into one object in S3."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
