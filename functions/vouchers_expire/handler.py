"""vouchers.expire: one EXPIRED audit row for each voucher past its expiry, never two for the same voucher.

"Never twice" rests on the database, not on the job running once: the partial unique index
voucher_audit_expired_once allows one EXPIRED row per voucher, the insert skips vouchers that have one, and a second
run (or an overlapping one) adds nothing. The look-back is the voucher audit retention (shared.demo.vouchers): a
voucher that expired longer ago than that has had its EXPIRED row deleted by vouchers.audit_archive, and must not get
a second one.

Idempotent by nature (see functions.maintenance), so batches commit on their own: a retry after a crash finds the
committed batches' rows and skips those vouchers. A batch that met EXPIRED rows another writer committed meanwhile
inserts fewer rows than it picked and ends the run early; the next night picks up whatever is left.
"""

from __future__ import annotations

from typing import Any

from functions.maintenance import run_batches
from shared.demo.vouchers import RetentionConfigError, audit_retention_days
from shared.jobs import VOUCHERS_EXPIRE
from shared.payloads import VouchersExpire
from shared.runtime import JobContext, PermanentJobError, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.vouchers_expire")


def expire(payload: VouchersExpire, ctx: JobContext) -> dict[str, Any]:
    try:
        retention_days = audit_retention_days()
    except RetentionConfigError as exc:
        raise PermanentJobError(str(exc)) from exc
    done = run_batches(
        ctx, QUERIES["voucher_audit_insert_expired"], {"retention_days": retention_days},
        batch_size=payload.batch_size, max_batches=payload.max_batches,
    )  # fmt: skip
    summary = {"expired": done.rows, "batches": done.batches, "stopped_early": done.stopped_early}
    ctx.logger.info("recorded expired vouchers", extra=summary)
    return summary


handler = job_handler(VOUCHERS_EXPIRE, expire)
