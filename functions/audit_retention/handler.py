"""audit.retention: move audit logs older than ``archive_after_days`` (365) to the archive, then purge archived logs
older than ``purge_after_days`` (2,555: seven years), both in batches.

Each step runs at most ``max_batches`` batches, so a backlog of old logs never starves the purge for the run.
Idempotent by nature (see functions.maintenance): each batch is one statement in its own transaction, which moves
(or deletes) rows that are old now and skips rows a concurrent run holds; a retry after a crash finds the committed
batches done. A payload whose purge comes before its archiving is refused when it is parsed (see
``shared.payloads.AuditRetention``).
"""

from __future__ import annotations

from typing import Any

from functions.maintenance import run_batches
from shared.jobs import AUDIT_RETENTION
from shared.payloads import AuditRetention
from shared.runtime import JobContext, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.audit_retention")


def retain(payload: AuditRetention, ctx: JobContext) -> dict[str, Any]:
    archived = run_batches(
        ctx, QUERIES["audit_logs_archive_old"], {"archive_after_days": payload.archive_after_days},
        batch_size=payload.batch_size, max_batches=payload.max_batches,
    )  # fmt: skip
    purged = run_batches(
        ctx, QUERIES["audit_logs_archive_purge"], {"purge_after_days": payload.purge_after_days},
        batch_size=payload.batch_size, max_batches=payload.max_batches,
    )  # fmt: skip
    summary = {
        "archived": archived.rows, "purged": purged.rows, "batches": archived.batches + purged.batches,
        "stopped_early": archived.stopped_early or purged.stopped_early,
    }  # fmt: skip
    ctx.logger.info("archived and purged audit logs", extra=summary)
    return summary


handler = job_handler(AUDIT_RETENTION, retain)
