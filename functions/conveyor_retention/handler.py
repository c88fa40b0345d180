"""conveyor.retention: delete finished run-ledger rows and old schedule claims (see shared.ledger.retention)."""

from __future__ import annotations

import functools
from typing import Any

from shared.ledger.retention import RetentionPayload, prune, retention_job
from shared.registry import Registry, default_registry
from shared.runtime import JobContext, job_handler


@functools.cache
def _deployed_registry() -> Registry:
    """The deployment's registry (CONVEYOR_REGISTRY), whose jobs' keep_* settings apply; loaded once per container."""
    return default_registry()


def retain(payload: RetentionPayload, ctx: JobContext) -> dict[str, Any]:
    remaining = getattr(ctx.lambda_context, "get_remaining_time_in_millis", None)
    report = prune(
        ctx.connection(), ctx.registry or _deployed_registry(), payload,
        time_left=(lambda: remaining() / 1000) if remaining else None,
    )  # fmt: skip
    summary = report.summary()
    ctx.logger.info("retention: deleted expired ledger rows", extra=summary)
    return summary


handler = job_handler(retention_job(), retain)
