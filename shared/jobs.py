"""The product's job registry: the one list of jobs. Add a job here and it gets a queue, a DLQ, a function,
a trigger and (if scheduled) a schedule, in the local runtime and in the CDK app alike."""

from __future__ import annotations

from shared.ledger.retention import retention_job
from shared.payloads import EmailSend, EmailTemplate, ReservationsCleanup
from shared.registry import AwsPermission, Registry, RetryPolicy

registry = Registry()

EMAIL_SEND = registry.job(
    "email.send",
    description="Send a transactional email through SES.",
    payload=EmailSend,
    queue="email-default",
    queues=("email-high",),
    route=lambda p: "email-high" if p.template is EmailTemplate.PASSWORD_RESET else "email-default",
    retry=RetryPolicy(max_attempts=5, base_delay=10, max_delay=600),
    timeout=30,
    batch_size=10,
    concurrency=10,
    permissions=(
        AwsPermission(
            actions=("ses:SendEmail",),
            # Sender identities and configuration sets differ per account; SES checks the From address itself.
            resources=("arn:{partition}:ses:{region}:{account}:identity/*", "arn:{partition}:ses:{region}:{account}:configuration-set/*"),
            reason="sends the email through SES v2",
            # Only as the configured sender, whatever other identities the account has verified.
            conditions=(("StringEquals", "ses:FromAddress", "{email_from}"),),
        ),
    ),
)

RESERVATIONS_CLEANUP = registry.job(
    "reservations.cleanup",
    description="Release expired reservations so their stock is sellable again.",
    payload=ReservationsCleanup,
    queue="maintenance",
    retry=RetryPolicy(max_attempts=3, base_delay=30, max_delay=300),
    timeout=120,
    batch_size=1,
    concurrency=2,
    schedule="rate(15 minutes)",
)

# Conveyor's own upkeep: deletes finished run-ledger rows and old schedule claims (README, "Retention").
RETENTION = registry.add(retention_job())
