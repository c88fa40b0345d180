"""push_tokens.cleanup: delete device tokens not seen for ``unseen_days`` (60), in batches.

The threshold is configured in the payload only (the registry's ``schedule_payload`` for the weekly run, or a
``conveyor trigger push_tokens.cleanup --json '{"unseen_days": 30}'``), not in the environment: the value every run
used is then in its ledger row, and changing it needs no redeploy of the function.

Idempotent by nature (see functions.maintenance): each batch deletes what is stale now, in its own transaction, and
skips rows another transaction holds; a retry after a crash finds the committed batches gone.
"""

from __future__ import annotations

from typing import Any

from functions.maintenance import run_batches
from shared.jobs import PUSH_TOKENS_CLEANUP
from shared.payloads import PushTokensCleanup
from shared.runtime import JobContext, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.push_tokens_cleanup")


def cleanup(payload: PushTokensCleanup, ctx: JobContext) -> dict[str, Any]:
    done = run_batches(
        ctx, QUERIES["device_tokens_delete_unseen"], {"unseen_days": payload.unseen_days},
        batch_size=payload.batch_size, max_batches=payload.max_batches,
    )  # fmt: skip
    summary = done.summary()
    ctx.logger.info("deleted unseen device tokens", extra={**summary, "unseen_days": payload.unseen_days})
    return summary


handler = job_handler(PUSH_TOKENS_CLEANUP, cleanup)
