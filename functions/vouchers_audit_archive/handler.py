"""vouchers.audit_archive: delete voucher audit rows older than the retention, 1,000 at a time.

The retention is the payload's ``retention_days`` if set, else ``VOUCHER_AUDIT_RETENTION_DAYS`` (default 730 days;
shared.demo.vouchers). A value there that is not a number of days in range fails the run permanently, with the
variable named: retrying would read the same environment.

Idempotent by nature (see functions.maintenance): each batch deletes what is old now, in its own transaction, and
skips rows a concurrent run holds; a retry after a crash finds the committed batches gone.
"""

from __future__ import annotations

from typing import Any

from functions.maintenance import run_batches
from shared.demo.vouchers import RetentionConfigError, audit_retention_days
from shared.jobs import VOUCHERS_AUDIT_ARCHIVE
from shared.payloads import VouchersAuditArchive
from shared.runtime import JobContext, PermanentJobError, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.vouchers_audit_archive")


def archive(payload: VouchersAuditArchive, ctx: JobContext) -> dict[str, Any]:
    try:
        retention_days = audit_retention_days(payload.retention_days)
    except RetentionConfigError as exc:
        raise PermanentJobError(str(exc)) from exc
    done = run_batches(
        ctx, QUERIES["voucher_audit_delete_old"], {"retention_days": retention_days},
        batch_size=payload.batch_size, max_batches=payload.max_batches,
    )  # fmt: skip
    summary = done.summary(retention_days=retention_days)
    ctx.logger.info("deleted old voucher audit rows", extra=summary)
    return summary


handler = job_handler(VOUCHERS_AUDIT_ARCHIVE, archive)
