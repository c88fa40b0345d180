"""vouchers.expire: one EXPIRED audit row for each voucher past its expiry, never two for the same voucher.

"Never twice" rests on the database, not on the job running once: one statement marks the voucher
(``demo.vouchers.expired_at``, migration 0004) and writes its EXPIRED row, for vouchers not marked yet. The mark is
never deleted, so vouchers.audit_archive may delete the audit row at any age (whatever its retention) without the
voucher becoming due again; a second run (or an overlapping one) adds nothing.

Idempotent by nature (see functions.maintenance), so batches commit on their own: a retry after a crash finds the
committed batches' vouchers marked and skips them. A batch that met EXPIRED rows another writer committed meanwhile
inserts fewer rows than it picked and ends the run early; the next night picks up whatever is left.
"""

from __future__ import annotations

from typing import Any

from functions.maintenance import run_batches
from shared.jobs import VOUCHERS_EXPIRE
from shared.payloads import VouchersExpire
from shared.runtime import JobContext, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.vouchers_expire")


def expire(payload: VouchersExpire, ctx: JobContext) -> dict[str, Any]:
    done = run_batches(
        ctx, QUERIES["voucher_audit_insert_expired"], {}, batch_size=payload.batch_size, max_batches=payload.max_batches
    )
    summary = {"expired": done.rows, "batches": done.batches, "stopped_early": done.stopped_early}
    ctx.logger.info("recorded expired vouchers", extra=summary)
    return summary


handler = job_handler(VOUCHERS_EXPIRE, expire)
