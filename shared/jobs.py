"""The product's job registry: the one list of jobs. Add a job here and it gets a queue, a DLQ, a function,
a trigger and (if scheduled) a schedule, in the local runtime and in the CDK app alike.

One function per job: every job has a queue of its own (so its own function, role, alarms and concurrency), except
``email.send``, which has two (password resets on ``email-high`` never wait behind receipts). No queue is shared, so
no function holds another job's permissions. Schedules of the property-billing jobs run in Asia/Ulaanbaatar, where
the tenants are; the commerce maintenance runs in UTC.
"""

from __future__ import annotations

from shared.ledger.retention import retention_job
from shared.payloads import (
    AuditRetention,
    BillsMonthly,
    ContractsExpiryNotice,
    EmailSend,
    EmailTemplate,
    IdempotencyKeysPrune,
    NotificationDispatch,
    NotificationsCleanup,
    OrdersDigest,
    PdfPackage,
    PdfRender,
    PushTokensCleanup,
    ReceiptPush,
    ReservationsCleanup,
    SmsSend,
    StatementsPoll,
    StatementsReconcile,
    StoreSync,
    VouchersAuditArchive,
    VouchersExpire,
)
from shared.registry import AwsPermission, Registry, RetryPolicy
from shared.settings import OPS_EMAIL

registry = Registry()

BILLING_TZ = "Asia/Ulaanbaatar"


# -- messages from domain code ------------------------------------------------------------------------------------

SES_SEND = AwsPermission(
    actions=("ses:SendEmail",),
    # Sender identities and configuration sets differ per account; SES checks the From address itself.
    resources=("arn:{partition}:ses:{region}:{account}:identity/*", "arn:{partition}:ses:{region}:{account}:configuration-set/*"),
    reason="sends the email through SES v2",
    # Only as the configured sender, whatever other identities the account has verified.
    conditions=(("StringEquals", "ses:FromAddress", "{email_from}"),),
)

SNS_SMS = AwsPermission(
    # The handler asks first whether the number opted out: SNS would accept the publish and drop it silently.
    actions=("sns:CheckIfPhoneNumberIsOptedOut", "sns:Publish"),
    resources=("*",),
    reason="sends the SMS through SNS, after checking the number has not opted out",
    any_resource_reason="SNS publishes an SMS to a phone number, which has no ARN: IAM accepts only Resource '*' for "
    "it (nor for CheckIfPhoneNumberIsOptedOut), and SNS has no condition key for Publish that names the number or "
    "the protocol (sns:Protocol and sns:Endpoint apply to Subscribe only)",
    # What '*' would also allow: publishing to the account's topics and mobile endpoints, which all have ARNs.
    denied_resources=("arn:{partition}:sns:*:*:*",),
)

EMAIL_SEND = registry.job(
    "email.send",
    description="Render a transactional email (subject, text, HTML) and send it through SES v2.",
    payload=EmailSend,
    queue="email-default",
    queues=("email-high",),
    route=lambda p: "email-high" if p.template is EmailTemplate.PASSWORD_RESET else "email-default",
    retry=RetryPolicy(max_attempts=3, base_delay=2, max_delay=60),
    timeout=30,
    batch_size=10,
    concurrency=10,
    permissions=(SES_SEND,),
)

NOTIFICATION_DISPATCH = registry.job(
    "notification.dispatch",
    description="Push a notification to every device of its user (deleting tokens the push service calls invalid); "
    "critical types are emailed too (through email.send).",
    payload=NotificationDispatch,
    queue="notification-dispatch",
    retry=RetryPolicy(max_attempts=3, base_delay=2, max_delay=60),
    timeout=30,
    batch_size=10,
    concurrency=5,
    integrations=("push",),
)

SMS_SEND = registry.job(
    "sms.send",
    description="Send one SMS through Amazon SNS (or the configured HTTP gateway).",
    payload=SmsSend,
    queue="sms-send",
    retry=RetryPolicy(max_attempts=5, base_delay=5, max_delay=300),
    timeout=30,
    batch_size=10,
    concurrency=5,
    permissions=(SNS_SMS,),
    # SNS by default; the HTTP gateway only when conveyor:integrations configures an sms URL.
    optional_integrations=("sms",),
)

RECEIPT_PUSH = registry.job(
    "receipt.push",
    description="Post a sale's tax receipt to the receipt service and store the receipt id on the sale; an "
    "idempotency key (the sale, not the job) makes a repeated post harmless.",
    payload=ReceiptPush,
    # Its own high-priority queue: receipts are due by law soon after the sale, whatever else is queued.
    queue="receipt-push",
    retry=RetryPolicy(max_attempts=5, base_delay=5, max_delay=600),
    timeout=30,
    batch_size=5,
    concurrency=20,
    integrations=("receipts",),
)

# -- scheduled maintenance ----------------------------------------------------------------------------------------

VOUCHERS_EXPIRE = registry.job(
    "vouchers.expire",
    description="Write one EXPIRED audit row for each voucher past its expiry (never twice for a voucher).",
    payload=VouchersExpire,
    queue="vouchers-expire",
    retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=600),
    timeout=300,
    batch_size=1,
    concurrency=2,
    schedule="cron(0 2 * * ? *)",
)

VOUCHERS_AUDIT_ARCHIVE = registry.job(
    "vouchers.audit_archive",
    description="Delete voucher audit rows older than VOUCHER_AUDIT_RETENTION_DAYS (730), 1,000 at a time.",
    payload=VouchersAuditArchive,
    queue="vouchers-audit-archive",
    retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=600),
    timeout=300,
    batch_size=1,
    concurrency=2,
    schedule="cron(30 2 * * ? *)",
)

AUDIT_RETENTION = registry.job(
    "audit.retention",
    description="Archive audit logs older than a year; purge archived ones older than seven years.",
    payload=AuditRetention,
    queue="audit-retention",
    retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=600),
    timeout=600,
    batch_size=1,
    concurrency=2,
    schedule="cron(0 3 * * ? *)",
)

NOTIFICATIONS_CLEANUP = registry.job(
    "notifications.cleanup",
    description="Delete notifications older than 90 days.",
    payload=NotificationsCleanup,
    queue="notifications-cleanup",
    retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=600),
    timeout=300,
    batch_size=1,
    concurrency=2,
    schedule="rate(1 hour)",
)

RESERVATIONS_CLEANUP = registry.job(
    "reservations.cleanup",
    description="Cancel orders pending for over 30 minutes and release the stock they held, one transaction each.",
    payload=ReservationsCleanup,
    queue="reservations-cleanup",
    retry=RetryPolicy(max_attempts=3, base_delay=30, max_delay=300),
    timeout=120,
    batch_size=1,
    concurrency=2,
    schedule="rate(15 minutes)",
)

ORDERS_DIGEST = registry.job(
    "orders.digest",
    description="Email each store owner the store's unprocessed digest items, mark them processed, and send an "
    "operations digest.",
    payload=OrdersDigest,
    queue="orders-digest",
    retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=600),
    timeout=300,
    batch_size=1,
    concurrency=2,
    schedule="cron(0 6 * * ? *)",
    environment=(OPS_EMAIL,),
)

STORE_SYNC = registry.job(
    "store.sync",
    description="Pull a store's inventory from its POS API and upsert it; the hourly run enqueues one job per store "
    "with an inventory integration.",
    payload=StoreSync,
    queue="store-sync",
    retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=900),
    timeout=120,
    batch_size=1,
    concurrency=4,
    schedule="rate(1 hour)",
    integrations=("pos",),
)

PUSH_TOKENS_CLEANUP = registry.job(
    "push_tokens.cleanup",
    description="Delete device tokens not seen for 60 days (configurable).",
    payload=PushTokensCleanup,
    queue="push-tokens-cleanup",
    retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=600),
    timeout=300,
    batch_size=1,
    concurrency=2,
    schedule="cron(0 4 ? * MON *)",
)

IDEMPOTENCY_KEYS_PRUNE = registry.job(
    "idempotency_keys.prune",
    description="Delete expired idempotency keys.",
    payload=IdempotencyKeysPrune,
    queue="idempotency-keys-prune",
    retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=600),
    timeout=300,
    batch_size=1,
    concurrency=2,
    schedule="rate(1 hour)",
)

# -- property billing ---------------------------------------------------------------------------------------------

BILLS_MONTHLY = registry.job(
    "bills.monthly",
    description="Create one bill per active contract for the month; re-running a period creates nothing new.",
    payload=BillsMonthly,
    queue="bills-monthly",
    retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=900),
    timeout=600,
    batch_size=1,
    concurrency=2,
    schedule="cron(0 9 10 * ? *)",
    timezone=BILLING_TZ,
)

CONTRACTS_EXPIRY_NOTICE = registry.job(
    "contracts.expiry_notice",
    description="SMS tenants whose contract ends within 30 or 7 days, once per contract and threshold.",
    payload=ContractsExpiryNotice,
    queue="contracts-expiry-notice",
    retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=600),
    timeout=300,
    batch_size=1,
    concurrency=2,
    schedule="cron(0 10 * * ? *)",
    timezone=BILLING_TZ,
)

STATEMENTS_POLL = registry.job(
    "statements.poll",
    description="Fetch new bank statement lines, store them, and start statements.reconcile once they committed.",
    payload=StatementsPoll,
    queue="statements-poll",
    retry=RetryPolicy(max_attempts=5, base_delay=60, max_delay=900),
    timeout=300,
    batch_size=1,
    concurrency=2,
    schedule="rate(1 hour)",
    timezone=BILLING_TZ,
    integrations=("bank",),
)

STATEMENTS_RECONCILE = registry.job(
    "statements.reconcile",
    description="Match new statement lines to open bills by reference and amount; mark those bills paid.",
    payload=StatementsReconcile,
    queue="statements-reconcile",
    retry=RetryPolicy(max_attempts=5, base_delay=30, max_delay=600),
    timeout=300,
    batch_size=1,
    concurrency=2,
)

PDF_RENDER = registry.job(
    "pdf.render",
    description="Render an invoice or statement to PDF, store it in S3 and record its key.",
    payload=PdfRender,
    queue="pdf-render",
    retry=RetryPolicy(max_attempts=3, base_delay=10, max_delay=300),
    timeout=60,
    memory=512,
    batch_size=1,
    concurrency=6,
    permissions=(
        AwsPermission(
            actions=("s3:PutObject",),
            resources=("arn:{partition}:s3:::{documents_bucket}/documents/*",),
            reason="stores the rendered PDF",
        ),
    ),
)

PDF_PACKAGE = registry.job(
    "pdf.package",
    description="After every pdf.render child of its flow succeeded, zip their PDFs into one object in S3.",
    payload=PdfPackage,
    queue="pdf-package",
    retry=RetryPolicy(max_attempts=3, base_delay=10, max_delay=300),
    timeout=300,
    memory=1024,
    batch_size=1,
    concurrency=2,
    permissions=(
        # Read where the PDFs are, write only where packages go: it cannot overwrite an invoice.
        AwsPermission(
            actions=("s3:GetObject",),
            resources=("arn:{partition}:s3:::{documents_bucket}/documents/*",),
            reason="reads the rendered PDFs",
        ),
        AwsPermission(
            actions=("s3:PutObject",),
            resources=("arn:{partition}:s3:::{documents_bucket}/packages/*",),
            reason="stores the zip",
        ),
    ),
)

# Conveyor's own upkeep: deletes finished run-ledger rows and old schedule claims (README, "Retention").
RETENTION = registry.add(retention_job())
