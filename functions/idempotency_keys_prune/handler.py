"""idempotency_keys.prune: delete expired idempotency keys, in batches.

Idempotent by nature (see functions.maintenance): each batch deletes keys expired now, in its own transaction, and
skips keys a concurrent run holds; a retry after a crash finds the committed batches gone.
"""

from __future__ import annotations

from typing import Any

from functions.maintenance import run_batches
from shared.jobs import IDEMPOTENCY_KEYS_PRUNE
from shared.payloads import IdempotencyKeysPrune
from shared.runtime import JobContext, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.idempotency_keys_prune")


def prune(payload: IdempotencyKeysPrune, ctx: JobContext) -> dict[str, Any]:
    done = run_batches(
        ctx, QUERIES["idempotency_keys_delete_expired"], {},
        batch_size=payload.batch_size, max_batches=payload.max_batches,
    )  # fmt: skip
    summary = done.summary()
    ctx.logger.info("deleted expired idempotency keys", extra=summary)
    return summary


handler = job_handler(IDEMPOTENCY_KEYS_PRUNE, prune)
