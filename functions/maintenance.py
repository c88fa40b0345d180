"""Batched clean-up, shared by the scheduled maintenance jobs (``vouchers.expire``, ``vouchers.audit_archive``,
``audit.retention``, ``notifications.cleanup``, ``push_tokens.cleanup``, ``idempotency_keys.prune``).

A run repeats one statement, each time in its own short transaction, until a batch comes back smaller than
``batch_size`` (nothing is left, or what is left is locked by a concurrent run), ``max_batches`` batches ran, or the
Lambda is about to run out of time. What a run leaves, the next period continues.

Why plain transactions and not ``ctx.transaction()``: these jobs are idempotent by nature. Each statement works on
what is old *now* and skips rows another run holds (``FOR UPDATE SKIP LOCKED``), so a batch that committed before a
crash is simply not there for the retry, and two overlapping runs share the rows instead of waiting for each other.
Nothing is gained by fencing the last batch with the run's success mark; the run is marked succeeded after it
returns, as for any job without ``ctx.transaction()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.runtime import JobContext

# Stop starting batches when the invocation has less than this left: a batch is short, but its commit must land
# before Lambda stops the function, or the run is retried for work that was done.
TIME_MARGIN_SECONDS = 15.0


@dataclass(frozen=True)
class Batches:
    """What one batched step did: ``rows`` affected over ``batches`` transactions; ``stopped_early`` when it hit
    ``max_batches`` (or the time margin) with its last batch full, so rows may be left for the next run."""

    rows: int
    batches: int
    stopped_early: bool

    def summary(self, verb: str = "deleted", **extra: Any) -> dict[str, Any]:
        """The run's result and log fields: ``{verb: rows, batches, stopped_early, **extra}``."""
        return {verb: self.rows, "batches": self.batches, "stopped_early": self.stopped_early, **extra}


def run_batches(ctx: JobContext, query: str, params: dict[str, Any], *, batch_size: int, max_batches: int) -> Batches:
    """Run ``query`` (which takes ``%(batch_size)s`` and affects at most that many rows) in batches, each its own
    transaction on the job's connection."""
    conn = ctx.connection()
    rows = batches = 0
    while batches < max_batches and _time_left(ctx):
        with conn.transaction():
            affected = conn.execute(query, {**params, "batch_size": batch_size}).rowcount
        batches += 1
        rows += affected
        if affected < batch_size:
            return Batches(rows, batches, stopped_early=False)
    return Batches(rows, batches, stopped_early=True)


def _time_left(ctx: JobContext) -> bool:
    remaining = getattr(ctx.lambda_context, "get_remaining_time_in_millis", None)
    return remaining is None or remaining() / 1000 > TIME_MARGIN_SECONDS
