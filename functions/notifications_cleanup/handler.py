"""notifications.cleanup: delete notifications older than ``older_than_days`` (90), in batches.

Idempotent by nature (see functions.maintenance): each batch deletes what is old now, in its own transaction, and
skips rows a concurrent run holds; a retry after a crash finds the committed batches gone.
"""

from __future__ import annotations

from typing import Any

from functions.maintenance import run_batches
from shared.jobs import NOTIFICATIONS_CLEANUP
from shared.payloads import NotificationsCleanup
from shared.runtime import JobContext, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.notifications_cleanup")


def cleanup(payload: NotificationsCleanup, ctx: JobContext) -> dict[str, Any]:
    done = run_batches(
        ctx, QUERIES["notifications_delete_old"], {"older_than_days": payload.older_than_days},
        batch_size=payload.batch_size, max_batches=payload.max_batches,
    )  # fmt: skip
    summary = done.summary()
    ctx.logger.info("deleted old notifications", extra=summary)
    return summary


handler = job_handler(NOTIFICATIONS_CLEANUP, cleanup)
